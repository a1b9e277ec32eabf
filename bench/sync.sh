#!/usr/bin/env bash
# Host sync benchmark (issue #5): apply time and no-change sync-cycle time for the 1,000-segment,
# 10,000-rule generated policy, and proof that a cycle with no change writes nothing.
# Everything runs in a network namespace this script creates and removes (trap on EXIT).
# Usage: bench/sync.sh [REPS]   (root; prints one JSON object)
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-5}
NS=pal-bench-sync-$$
WORK=$(mktemp -d)
cleanup() { ip netns pids "$NS" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; ip netns del "$NS" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

cargo build --release -q --bin palisade
cargo build --release -q -p palisade-bench --bin policy_gen
PAL=$PWD/target/release/palisade
target/release/policy_gen gen --segments 1000 --rules 10000 > "$WORK/policy.yaml"
HOST=host-00000
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up

ms() { python3 -c 'import sys,time; t=time.perf_counter(); import subprocess; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); print(round((time.perf_counter()-t)*1000,1))' "$@"; }
median() { python3 -c 'import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

applies=(); dry=(); 
for _ in $(seq "$REPS"); do
  applies+=("$(ms ip netns exec "$NS" "$PAL" policy apply "$WORK/policy.yaml" --host "$HOST")")
  dry+=("$(ms ip netns exec "$NS" "$PAL" policy apply "$WORK/policy.yaml" --host "$HOST" --dry-run)")
done
elements=$(ip netns exec "$NS" nft -j list table inet palisade | python3 -c 'import json,sys; d=json.load(sys.stdin)["nftables"]; print(sum(len(o["set"].get("elem",[])) for o in d if "set" in o))')

# A running sync with a steady policy: cycles go on, writes do not.
ip netns exec "$NS" "$PAL" policy sync "$WORK/policy.yaml" --host "$HOST" --interval 1s --admin 127.0.0.1:15100 2>"$WORK/sync.log" &
metric() { ip netns exec "$NS" python3 -c 'import sys,urllib.request; t=urllib.request.urlopen("http://127.0.0.1:15100/metrics",timeout=2).read().decode(); print(sum(float(l.split()[-1]) for l in t.splitlines() if l.startswith(sys.argv[1])))' "$1"; }
for _ in $(seq 50); do metric palisade_sync_cycles_total >/dev/null 2>&1 && break; sleep 0.2; done
sleep 1.5
c0=$(metric palisade_sync_cycles_total); w0=$(metric palisade_sync_nft_writes_total)
sleep 6
c1=$(metric palisade_sync_cycles_total); w1=$(metric palisade_sync_nft_writes_total)

python3 - "$(median "${applies[@]}")" "$(median "${dry[@]}")" "$elements" "$c0" "$c1" "$w0" "$w1" <<'PY'
import json, sys
a, d, e, c0, c1, w0, w1 = sys.argv[1:]
print(json.dumps({
  "policy": "policy_gen 1,000 segments x 10,000 rules (seed 1), host host-00000",
  "table_elements": int(e),
  "apply_ms_median": float(a),
  "no_change_cycle_ms_median (apply --dry-run: fetch+compile+read back+diff)": float(d),
  "sync_cycles_in_6s": float(c1) - float(c0),
  "sync_nft_writes_in_6s": float(w1) - float(w0),
}, indent=2))
PY
