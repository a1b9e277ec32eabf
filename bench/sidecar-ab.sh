#!/usr/bin/env bash
# Two builds of the sidecar, A and B, measured alternately in the shared peer harness (our peer
# only, one mode and connection count per round), so that a change's cost shows through the
# machine's noise: the median of each build's rounds, and B over A. Prints one JSON object.
#
# Usage: bench/sidecar-ab.sh A_BIN B_BIN [ROUNDS]   (default 4 rounds of each, ~30 s per round)
# Knobs: AB_MODE (close: a handshake per request; or keepalive), AB_CONNS (10), DURATION (10),
# A_ENV / B_ENV: variables for one side only, e.g. B_ENV=BENCH_SECCOMP=off to measure the system
# call filter with one binary on both sides (bench/peers/40-palisade.sh reads BENCH_*).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=${PEERS_HARNESS:-$ROOT/../shared/peers}
A=$1 B=$2 ROUNDS=${3:-4}
MODE=${AB_MODE:-close} CONNS=${AB_CONNS:-10}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for ((r = 1; r <= ROUNDS; r++)); do
    for side in A B; do
        bin=$A side_env=${A_ENV:-}
        [[ $side == B ]] && bin=$B side_env=${B_ENV:-}
        # shellcheck disable=SC2086 # side_env is a list of NAME=VALUE words
        env $side_env PALISADE_BIN=$bin EXTRA_PEERS_DIR=$ROOT/bench/peers PEERS=palisade MODES=$MODE \
            CONNS=$CONNS IPERF_TIME=1 SKIP_SPEED=1 DIRECT_AT_END=0 \
            WORK_DIR=$work/run RESULTS_DIR=$work/$side-$r "$HARNESS/run.sh" > "$work/log" 2>&1 \
            || { cat "$work/log" >&2; exit 1; }
        echo "round $r $side done" >&2
    done
done
python3 - "$work" "$ROUNDS" "$MODE" "$CONNS" <<'PY'
import json, statistics, sys
work, rounds, mode, conns = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def point(side, r):
    res = json.load(open(f"{work}/{side}-{r}/results.json"))
    p = next(p for p in res["peers"].values() if p["peer"] == "palisade")
    d = p["http"][mode][conns]
    return d["rps"], d["cpu_us_per_req"]["sidecars"]
out = {}
for side in "AB":
    pts = [point(side, r) for r in range(1, rounds + 1)]
    out[side] = {"rps": [round(x[0]) for x in pts], "cpu_us_per_req": [round(x[1], 1) for x in pts],
                 "median_rps": statistics.median(x[0] for x in pts),
                 "median_cpu_us_per_req": statistics.median(x[1] for x in pts)}
out["mode"], out["conns"] = mode, int(conns)
out["b_over_a_rps"] = out["B"]["median_rps"] / out["A"]["median_rps"]
out["b_over_a_cpu"] = out["B"]["median_cpu_us_per_req"] / out["A"]["median_cpu_us_per_req"]
print(json.dumps(out, indent=2))
PY
