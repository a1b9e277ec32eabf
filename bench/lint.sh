#!/usr/bin/env bash
# `palisade policy check` at large segment counts (review finding 11: the overlap lint compared
# every pair of segments, so 200,000 segments took over a minute). Each point is a policy of N
# segments, each a /28 in 10.0.0.0/8 with one identity pattern of its own; every 100th segment
# is a /22 that covers others, and every 1,000th has a pattern (`ns/*/sa/<k>`) that overlaps
# others, so the lints have overlaps to find; 1,000 rules and one host with every segment.
# Prints one JSON object; progress on stderr. No root needed.
#
# Usage: bench/lint.sh [SEGMENTS...]   (default: 10000 50000 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --bin palisade -p palisade
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sizes=("$@")
(( ${#sizes[@]} )) || sizes=(10000 50000 200000)
points=()
for n in "${sizes[@]}"; do
    python3 - "$n" > "$work/p.yaml" <<'PY'
import sys
n = int(sys.argv[1])
out = ["version: 1", "trust_domain: example.org", "segments:"]
for i in range(n):
    if i % 100 == 0:
        block = i * 16 // 1024 * 1024
        cidr = "10.%d.%d.0/22" % (block >> 16 & 255, block >> 8 & 252)
    else:
        a = i * 16
        cidr = "10.%d.%d.%d/28" % (a >> 16 & 255, a >> 8 & 255, a & 255)
    pattern = "spiffe://example.org/ns/*/sa/s%d" % (i + 1) if i % 1000 == 0 else \
        "spiffe://example.org/ns/n%d/sa/s%d" % (i, i)
    out.append('  s%d: { addresses: ["%s"], identities: ["%s"] }' % (i, cidr, pattern))
out.append("rules:")
for r in range(1000):
    out.append("  - { name: r%d, from: s%d, to: s%d, protocol: tcp, ports: [%d] }"
               % (r, (r * 7) % n, (r * 13 + 1) % n, 1000 + r))
out.append("hosts:")
out.append("  h: { segments: [%s] }" % ", ".join("s%d" % i for i in range(n)))
print("\n".join(out))
PY
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
