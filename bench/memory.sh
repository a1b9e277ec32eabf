#!/usr/bin/env bash
# Memory of the sidecar (issue 13, part 6). Prints one JSON object on stdout; progress on stderr.
#
# A pair on loopback, as the peer harness runs it: client -> outbound sidecar -> mTLS -> inbound
# sidecar -> app. Both sidecars are the sidecar-only build (`--no-default-features`, what the
# image runs in a pod) with the default buffers. Measured from /proc/<pid>/status (VmRSS):
# 1. idle RSS of each sidecar once ready, before any connection (goal <= 8 MiB);
# 2. RSS with N idle connections held open through the pair (python3 opens them in batches and
#    waits until the app holds all N, so every one has finished its mTLS handshake), and the
#    growth per connection for each sidecar (goal <= 30 KB).
#
# Usage: bench/memory.sh [N]   (default 10,000 connections; needs python3 and openssl)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${1:-10000}
log() { echo "memory.sh: $*" >&2; }
for tool in python3; do command -v "$tool" >/dev/null || { log "$tool is needed"; exit 1; }; done
TMP=$(mktemp -d /tmp/palisade-memory-bench.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building the sidecar-only binary (release, --no-default-features) and the CLI"
cargo build --release -q --bin palisade
cargo build --release -q --no-default-features --bin palisade --target-dir target/sidecar-only
CLI=$ROOT/target/release/palisade
SIDECAR=$ROOT/target/sidecar-only/release/palisade
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cd "$TMP"
"$CLI" ca init --ca-dir ca --trust-domain bench.example >/dev/null
"$CLI" cert issue --ca-dir ca --spiffe-id spiffe://bench.example/server --svid-dir server >/dev/null
"$CLI" cert issue --ca-dir ca --spiffe-id spiffe://bench.example/client --svid-dir client >/dev/null

# The app: accepts and holds connections, writes how many it holds.
cat >app.py <<'PY'
import asyncio, sys
held = 0
async def main():
    async def hold(reader, writer):
        global held
        held += 1
        open(sys.argv[2], "w").write(str(held))
        await reader.read()          # until the client closes
        writer.close()
    server = await asyncio.start_server(hold, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
PY
python3 app.py x held.txt >app.port &
PIDS+=($!)
for _ in $(seq 50); do [[ -s app.port ]] && break; sleep 0.1; done
APP=127.0.0.1:$(cat app.port)

listening() { # file key -> address from the sidecar's JSON line
    python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).readline())["listening"]; print(d[sys.argv[2]][sys.argv[3]] if len(sys.argv) > 3 else d[sys.argv[2]])' "$@"
}
start() { # name config
    "$SIDECAR" sidecar run --config "$2" >"$1.out" 2>"$1.err" &
    PIDS+=($!)
    echo $! >"$1.pid"
    for _ in $(seq 100); do [[ -s $1.out ]] && break; sleep 0.05; done
}
cat >server.yaml <<EOF2
identity: { cert: server/cert.pem, key: server/key.pem, bundle: server/bundle.pem }
inbound:
  - name: api
    listen: 127.0.0.1:0
    forward_to: $APP
    allow: ["spiffe://bench.example/client"]
admin: { listen: 127.0.0.1:0 }
limits: { max_connections: $((N * 2)), max_handshakes: 4096 }
EOF2
start server server.yaml
API=$(listening server.out inbound api)
cat >client.yaml <<EOF2
identity: { cert: client/cert.pem, key: client/key.pem, bundle: client/bundle.pem }
outbound:
  - name: to-api
    listen: 127.0.0.1:0
    connect_to: $API
    expect: ["spiffe://bench.example/server"]
admin: { listen: 127.0.0.1:0 }
limits: { max_connections: $((N * 2)) }
EOF2
start client client.yaml
OUT=$(listening client.out outbound to-api)
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$(cat "$1.pid")/status"; }   # KiB
sleep 1
IDLE_SERVER=$(rss server) IDLE_CLIENT=$(rss client)
log "idle: server $IDLE_SERVER KiB, client $IDLE_CLIENT KiB; opening $N connections"

cat >hold.py <<'PY'
import resource, socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
n, held_file = int(sys.argv[2]), sys.argv[3]
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 1024, n + 1024))
socks = []
deadline = time.monotonic() + 300
for i in range(n):
    s = socket.create_connection((host, int(port)))
    socks.append(s)
    if i % 500 == 499:            # let the handshakes catch up, batch by batch
        while time.monotonic() < deadline:
            try:
                if int(open(held_file).read() or 0) >= i + 1 - 100:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
while time.monotonic() < deadline:
    try:
        if int(open(held_file).read() or 0) >= n:
            break
    except (OSError, ValueError):
        pass
    time.sleep(0.1)
print("held", flush=True)
sys.stdin.read()                  # hold until told to stop
PY
mkfifo go
python3 hold.py "$OUT" "$N" held.txt <go >hold.out &
HOLDER=$!
PIDS+=($HOLDER)
exec 3>go
for _ in $(seq 3000); do grep -q held hold.out 2>/dev/null && break; sleep 0.1; done
HELD=$(cat held.txt)
sleep 2
FULL_SERVER=$(rss server) FULL_CLIENT=$(rss client)
log "with $HELD connections: server $FULL_SERVER KiB, client $FULL_CLIENT KiB"
exec 3>&-
python3 - "$N" "$HELD" "$IDLE_SERVER" "$IDLE_CLIENT" "$FULL_SERVER" "$FULL_CLIENT" <<'PY'
import json, sys, datetime, platform
n, held, i_s, i_c, f_s, f_c = map(int, sys.argv[1:])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
per = lambda full, idle: round((full - idle) * 1024 / max(1, held) / 1000, 2)   # KB per connection
print(json.dumps({
    "benchmark": "sidecar memory (issue 13, part 6)",
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "cpu": cpu,
    "build": "sidecar-only (--no-default-features), release, default buffers",
    "connections_asked": n, "connections_held": held,
    "idle_rss_mib": {"inbound_sidecar": round(i_s / 1024, 2), "outbound_sidecar": round(i_c / 1024, 2)},
    "rss_with_connections_mib": {"inbound_sidecar": round(f_s / 1024, 1), "outbound_sidecar": round(f_c / 1024, 1)},
    "kb_per_connection": {"inbound_sidecar": per(f_s, i_s), "outbound_sidecar": per(f_c, i_c)},
    "goal_idle_rss_at_most_8_mib": max(i_s, i_c) <= 8 * 1024,
    "goal_at_most_30_kb_per_connection": max(per(f_s, i_s), per(f_c, i_c)) <= 30,
}, indent=2))
PY
