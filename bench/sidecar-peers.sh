#!/usr/bin/env bash
# Our sidecar pair next to stunnel, HAProxy and nginx in ONE run of the shared peer harness
# (../shared/peers/run.sh, our peer file in bench/peers/), then a JSON summary of the issue's goals
# as ratios to the best peer of the same run.
#
# Usage: bench/sidecar-peers.sh [--quick] [--install]   (knobs: see ../shared/peers/README.md)
#   --quick    2-second runs (smoke test, ~3 min); default runs take ~8 min
#   --install  apt-get install the harness's packages first (root)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=${PEERS_HARNESS:-$ROOT/../shared/peers}
[[ -x $HARNESS/run.sh ]] || { echo "the peer harness is not at $HARNESS (set PEERS_HARNESS)" >&2; exit 1; }

# The build a sidecar image ships: `sidecar run` only (no CA, policy or demo commands), in a target
# directory of its own so that it does not replace the full CLI in target/release.
cargo build --release -q --manifest-path "$ROOT/Cargo.toml" --bin palisade \
    --no-default-features --target-dir "$ROOT/target/sidecar"
export PALISADE_BIN=$ROOT/target/sidecar/release/palisade
export EXTRA_PEERS_DIR=$ROOT/bench/peers
export WORK_DIR=${WORK_DIR:-${TMPDIR:-/tmp}/palisade-bench-peers}
results=$WORK_DIR
for a in "$@"; do [[ $a == --quick ]] && results=$WORK_DIR/quick; done
export RESULTS_DIR=${RESULTS_DIR:-$results}

"$HARNESS/run.sh" "$@" >&2
python3 "$ROOT/bench/peers/summary.py" "$RESULTS_DIR/results.json"
echo "full report: $RESULTS_DIR/RESULTS.md" >&2
