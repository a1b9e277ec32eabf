#!/usr/bin/env bash
# `palisade policy check` at large segment counts (review finding 11: the overlap lint compared
# every pair of segments, so 200,000 segments took over a minute). Segments from `policy_gen`
# are random /24s and /26s in 10.0.0.0/8, so at 200,000 many overlap and are reported.
# Prints one JSON object; progress on stderr. No root needed.
#
# Usage: bench/lint.sh [SEGMENTS...]   (default: 10000 50000 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --bin palisade -p palisade
cargo build --release -q -p palisade-bench --bin policy_gen
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sizes=("${@:-10000 50000 200000}")
read -r -a sizes <<< "${sizes[*]}"
points=()
for n in "${sizes[@]}"; do
    target/release/policy_gen gen --segments "$n" --rules 1000 -o "$work/p.yaml" >&2
    start=$(date +%s.%N)
    target/release/palisade policy check "$work/p.yaml" > "$work/out.txt" 2>&1 || true
    end=$(date +%s.%N)
    warnings=$(grep -c "warning:" "$work/out.txt" || true)
    seconds=$(awk "BEGIN { print $end - $start }")
    echo "segments $n: ${seconds}s, $warnings warnings" >&2
    points+=("{\"segments\": $n, \"seconds\": $(printf '%.3f' "$seconds"), \"warnings\": $warnings}")
done
printf '{"date": "%s", "cpu": "%s", "check": [%s]}\n' "$(date -u +%FT%TZ)" \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(IFS=,; echo "${points[*]}")"
