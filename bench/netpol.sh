#!/usr/bin/env bash
# NetworkPolicy at cluster scale (issue 12). Prints one JSON object on stdout; progress on stderr.
#
# 1. Compile time: netpol_gen makes 5,000 pods on 50 nodes in 100 namespaces with 1,000
#    NetworkPolicies (default deny, same-namespace app rules on a named port, team namespaces on
#    a port range, egress to DNS and prod peers, ipBlocks with holes), loads the manifests and
#    compiles and prints every node's table; three runs. Goal: every node's table under 1 s.
# 2. Per-packet cost: three client -- router -- server topologies in namespaces this script makes:
#    a router with no table, one with the table of no NetworkPolicy (`policy compile
#    --kubernetes` of an empty directory), and one with node-0's table of the cluster above; the
#    client and server have the addresses of two pods of node-0 that the policies isolate and
#    that may talk on TCP 8080 (so the SYN walks the egress and ingress chains and their largest
#    sets). New-connection rate (bench/policy/crr.c) through each, alternating, pinned to one
#    core. Goal: the cluster's table within 5% of the empty one.
#
# 3. Scale of the policy language itself: policy_gen makes 10,000 segments x 100,000 rules (and
#    1,000 x 10,000 to see the growth); `palisade policy compile --host` (load, compile, print one
#    host's table) and `palisade policy check` (load and lint) are timed, three runs each.
#    Goals: < 2 s and < 5 s (before issue 12: 6.7 s and 29 s).
#
# Usage: bench/netpol.sh [--quick] [--scale-only]   (root for parts 1-2; about 3 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=0
SCALE_ONLY=0
for arg in "$@"; do
    [[ $arg == --quick ]] && QUICK=1
    [[ $arg == --scale-only ]] && SCALE_ONLY=1
done
CORE=${BENCH_CORE:-1}
OTHER_CORE=$(( CORE == 0 ? 1 : 0 ))
if (( QUICK )); then COMPILE_RUNS=1; PP_REPS=6; PP_SECONDS=1; else COMPILE_RUNS=3; PP_REPS=12; PP_SECONDS=2; fi
MAXCONN=200000
log() { echo "netpol.sh: $*" >&2; }
(( EUID == 0 )) || { log "run as root (network namespaces, nft)"; exit 1; }
for tool in ip nft gcc python3 taskset; do
    command -v "$tool" >/dev/null || { log "$tool is needed"; exit 1; }
done
pin=(taskset -c "$CORE")
TMP=$(mktemp -d /tmp/palisade-netpol-bench.XXXXXX)
NS_PREFIX="nb$$"
NAMESPACES=()
PIDS=()
cleanup() {
    local pid ns
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building netpol_gen, policy_gen, palisade (release) and crr.c"
cargo build --release -q -p palisade-bench --bin netpol_gen --bin policy_gen
cargo build --release -q --bin palisade
taskset -pc "$OTHER_CORE" $$ >/dev/null 2>&1 || true
GEN=$ROOT/target/release/netpol_gen
BIN=$ROOT/target/release/palisade

# 3 first (no root needed, no namespaces): the policy language's scale.
SCALE=$TMP/scale.jsonl
: >"$SCALE"
for size in "1000 10000" "10000 100000"; do
    read -r segments rules <<<"$size"
    log "scale: $segments segments x $rules rules"
    "$ROOT/target/release/policy_gen" gen --segments "$segments" --rules "$rules" -o "$TMP/scale.yaml"
    for ((i = 0; i < 3; i++)); do
        for what in compile check; do
            if [[ $what == compile ]]; then cmd=("$BIN" policy compile "$TMP/scale.yaml" --host host-00000)
            else cmd=("$BIN" policy check "$TMP/scale.yaml"); fi
            start=$(date +%s.%N)
            "${cmd[@]}" >/dev/null
            end=$(date +%s.%N)
            python3 -c 'import json,sys; print(json.dumps({"segments":int(sys.argv[1]),"rules":int(sys.argv[2]),"what":sys.argv[3],"s":round(float(sys.argv[5])-float(sys.argv[4]),3)}))' \
                "$segments" "$rules" "$what" "$start" "$end" >>"$SCALE"
        done
    done
done
if (( SCALE_ONLY )); then
    python3 - "$SCALE" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
out = {}
for r in rows:
    out.setdefault(f'{r["segments"]}x{r["rules"]}', {}).setdefault(r["what"], []).append(r["s"])
print(json.dumps({"policy_language_scale": out}, indent=2))
PY
    exit 0
fi
CRR=$TMP/crr
gcc -O2 -Wall -o "$CRR" "$ROOT/bench/policy/crr.c"

COMPILE=$TMP/compile.jsonl
: >"$COMPILE"
for ((i = 0; i < COMPILE_RUNS; i++)); do
    log "compile: run $((i + 1))/$COMPILE_RUNS"
    mkdir -p "$TMP/nft"
    "$GEN" --nft-out "$TMP/nft" --nft-nodes 1 >>"$COMPILE"
done
PROBE=$(tail -1 "$COMPILE" | python3 -c 'import json,sys; p=json.load(sys.stdin)["probe"]; print(p["client"], p["server"], p["port"])')
read -r CLIENT_IP SERVER_IP PORT <<<"$PROBE"
log "probe: $CLIENT_IP -> $SERVER_IP:$PORT"
mkdir -p "$TMP/empty"
"$BIN" policy compile --kubernetes "$TMP/empty" --host node-0 >"$TMP/empty.nft"
cp "$TMP/nft/node-0.nft" "$TMP/cluster.nft"

ns_add() { ip netns add "$1"; NAMESPACES+=("$1"); ip -n "$1" link set lo up; }
topology() { # client -- router -- server, pod-style /32 addresses behind 169.254.1.1
    local c=$NS_PREFIX-$1-c r=$NS_PREFIX-$1-r s=$NS_PREFIX-$1-s
    ns_add "$c"; ns_add "$r"; ns_add "$s"
    ip -n "$c" link add eth0 type veth peer name vc netns "$r"
    ip -n "$s" link add eth0 type veth peer name vs netns "$r"
    for end in c:$CLIENT_IP s:$SERVER_IP; do
        local ns=$NS_PREFIX-$1-${end%%:*} ip=${end#*:} veth=v${end%%:*}
        ip -n "$ns" addr add "$ip/32" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" route add 169.254.1.1 dev eth0 scope link
        ip -n "$ns" route add default via 169.254.1.1 dev eth0
        ip -n "$r" addr add 169.254.1.1/32 dev "$veth"
        ip -n "$r" link set "$veth" up
        ip -n "$r" route add "$ip/32" dev "$veth"
    done
    ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1
    ip netns exec "$c" sysctl -qw net.ipv4.ip_local_port_range="10000 65000" net.ipv4.tcp_tw_reuse=1
}
TOPOS=(none empty cluster)
PP_TOTAL_SECONDS=$(( (PP_REPS * ${#TOPOS[@]} + 6) * PP_SECONDS + 60 ))
LOADS=$TMP/loads.jsonl
: >"$LOADS"
for t in "${TOPOS[@]}"; do
    topology "$t"
    if [[ $t != none ]]; then
        start=$(date +%s.%N)
        ip netns exec "$NS_PREFIX-$t-r" nft -f "$TMP/$t.nft"
        end=$(date +%s.%N)
        python3 -c 'import json,sys; print(json.dumps({"topo":sys.argv[1],"load_s":round(float(sys.argv[3])-float(sys.argv[2]),3)}))' "$t" "$start" "$end" >>"$LOADS"
    fi
    ip netns exec "$NS_PREFIX-$t-s" "${pin[@]}" "$CRR" server "$PORT" "$PP_TOTAL_SECONDS" &
    PIDS+=($!)
done
sleep 0.3
CHECKS=$TMP/checks.jsonl
: >"$CHECKS"
for t in "${TOPOS[@]}"; do
    ok=0; other=0
    ip netns exec "$NS_PREFIX-$t-c" "$CRR" probe "$SERVER_IP" "$PORT" 1000 || ok=$?
    # The server pod is isolated: a port no policy opens is dropped by the cluster's table.
    ip netns exec "$NS_PREFIX-$t-c" "$CRR" probe "$SERVER_IP" 7 500 || other=$?
    echo "{\"topo\":\"$t\",\"allowed_port_rc\":$ok,\"other_port_rc\":$other}" >>"$CHECKS"
done
SAMPLES=$TMP/samples.jsonl
: >"$SAMPLES"
crr_sample() { ip netns exec "$NS_PREFIX-$1-c" "${pin[@]}" "$CRR" crr "$SERVER_IP" "$PORT" "$2" $MAXCONN; }
for t in "${TOPOS[@]}"; do crr_sample "$t" 0.3 >/dev/null || true; done
for ((rep = 0; rep < PP_REPS; rep++)); do
    log "per-packet: rep $((rep + 1))/$PP_REPS"
    for ((i = 0; i < ${#TOPOS[@]}; i++)); do
        t=${TOPOS[(i + rep) % ${#TOPOS[@]}]}
        s=$(crr_sample "$t" "$PP_SECONDS" || true)
        [[ -n $s ]] || s='{"conns":0,"errors":-1}'
        python3 -c 'import json,sys; d=json.loads(sys.argv[3]); d.update(topo=sys.argv[1], rep=int(sys.argv[2])); print(json.dumps(d))' "$t" "$rep" "$s" >>"$SAMPLES"
    done
done

python3 - "$COMPILE" "$LOADS" "$CHECKS" "$SAMPLES" "$PP_SECONDS" "$SCALE" <<'PY'
import json, statistics, sys, datetime, platform
compile_runs = [json.loads(l) for l in open(sys.argv[1])]
loads = [json.loads(l) for l in open(sys.argv[2])]
checks = [json.loads(l) for l in open(sys.argv[3])]
samples = [json.loads(l) for l in open(sys.argv[4])]
seconds = float(sys.argv[5])
scale = {}
for r in (json.loads(l) for l in open(sys.argv[6])):
    scale.setdefault(f'{r["segments"]}x{r["rules"]}', {}).setdefault(r["what"], []).append(r["s"])
big = scale.get("10000x100000", {})
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
rate = {}
for t in ("none", "empty", "cluster"):
    r = [s["conns"] / seconds for s in samples if s["topo"] == t and s.get("errors", 0) >= 0]
    rate[t] = {"median_conn_per_s": round(statistics.median(r)) if r else 0, "samples": [round(x) for x in r]}
ratio = rate["cluster"]["median_conn_per_s"] / max(1, rate["empty"]["median_conn_per_s"])
last = compile_runs[-1]
print(json.dumps({
    "benchmark": "NetworkPolicy at cluster scale (issue 12)",
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "cpu": cpu,
    "cluster": {k: last[k] for k in ("pods", "nodes", "namespaces", "policies", "manifest_bytes", "set_elements")},
    "compile": {
        "load_s": [r["load_s"] for r in compile_runs],
        "per_node_max_s": [r["compile_and_print_per_node_s"]["max"] for r in compile_runs],
        "per_node_mean_s": [r["compile_and_print_per_node_s"]["mean"] for r in compile_runs],
        "goal_every_node_under_1_s": all(r["goal_met"] for r in compile_runs),
    },
    "probe": last["probe"],
    "nft_load_s": loads,
    "checks": checks,
    "per_packet": rate,
    "ratio_cluster_to_empty": round(ratio, 3),
    "goal_within_5_percent": ratio >= 0.95,
    "policy_language_scale": scale,
    "goal_scale_compile_under_2_s": bool(big) and max(big["compile"]) < 2,
    "goal_scale_check_under_5_s": bool(big) and max(big["check"]) < 5,
}, indent=2))
PY
