#!/usr/bin/env bash
# `policy sync`'s memory, for its limit in docs/INSTALL.md ("Resources"): the agent runs in a
# network namespace of its own with a policy directory as its source (as from the ConfigMap) and
# --interval 2s; the memory (PSS) of the agent plus the nft processes it runs is sampled every 5 ms for
# SECONDS. Run for a node holding a few segments of the policy and for a node holding all of them.
#
# Usage: install/measure/sync.sh [POLICY] [SECONDS]   (root: ip netns; nft)
#   POLICY default: target/release/policy_gen's 800 segments x 8,000 rules (0.97 MB: under the
#   1 MiB a ConfigMap holds), with a host `every-segment` added that holds all of them.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/target/release/palisade}
SECS=${2:-12}
TMP=$(mktemp -d /tmp/palisade-measure-sync.XXXXXX)
NS=pal-measure-sync-$$
cleanup() { ip netns pids "$NS" 2>/dev/null | xargs -r kill 2>/dev/null || true; ip netns del "$NS" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
mkdir "$TMP/source"
if [[ -n ${1:-} ]]; then
    cp "$1" "$TMP/source/policy.yaml"
else
    target/release/policy_gen gen --segments 800 --rules 8000 >"$TMP/policy.yaml"
    python3 - "$TMP/policy.yaml" >"$TMP/source/policy.yaml" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
segments = sorted(set(re.findall(r"^  (seg\d+):", text, re.M)))
print(text.rstrip("\n") + "\n  every-segment: { segments: [" + ", ".join(segments) + "] }")
PY
fi
echo "policy: $(wc -c <"$TMP/source/policy.yaml") bytes" >&2
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
hosts=$(python3 -c 'import re,sys; h=re.findall(r"^  ([\w.-]+): \{ segments: \[(.*)\] \}", open(sys.argv[1]).read(), re.M); h.sort(key=lambda x: x[1].count(",")); print(h[0][0], h[-1][0])' "$TMP/source/policy.yaml")
for host in $hosts; do
    ip netns exec "$NS" "$BIN" policy sync "$TMP/source" --host "$host" --interval 2s --admin 127.0.0.1:0 \
        >"$TMP/sync.out" 2>"$TMP/sync.err" &
    pid=$!
    python3 - "$pid" "$SECS" "$host" <<'PY'
import os, sys, time
pid, end, host = int(sys.argv[1]), time.time() + float(sys.argv[2]), sys.argv[3]
def rss(p):  # PSS: a child forked before it runs nft shares the agent's pages; RSS would count them twice
    try: return next(int(l.split()[1]) for l in open(f"/proc/{p}/smaps_rollup") if l.startswith("Pss:"))
    except (OSError, StopIteration): return 0
def tree(p):
    out = [p]
    try:
        for t in os.listdir(f"/proc/{p}/task"):
            for c in open(f"/proc/{p}/task/{t}/children").read().split(): out += tree(int(c))
    except OSError: pass
    return out
peak = own = 0
while time.time() < end:
    peak = max(peak, sum(rss(p) for p in tree(pid))); own = max(own, rss(pid)); time.sleep(0.005)
print(f"host {host}: peak {peak / 1024:.1f} MiB (the agent and nft together), the agent alone {own / 1024:.1f} MiB")
PY
    kill "$pid"; wait "$pid" 2>/dev/null || true
    ip netns exec "$NS" nft list table inet palisade 2>/dev/null | grep -c ',' | sed 's/^/  element lines in its table: /' >&2 || true
done
