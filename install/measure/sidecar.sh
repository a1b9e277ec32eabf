#!/usr/bin/env bash
# The sidecar's memory, for the limits in docs/INSTALL.md ("Resources"). Prints one line per figure.
#
# 1. A pair on loopback (client -> outbound sidecar -> mTLS -> inbound sidecar -> an echo app),
#    N connections held open after each carried PAYLOAD bytes each way (0: a finished handshake
#    only; 1024: a small request and answer; 262144: enough to fill every buffer a connection
#    takes), for each PAYLOAD; VmRSS of both sidecars from /proc, before and after.
# 2. A sidecar with transparent listeners admitting by POLICY (default: a generated 0.97 MB
#    policy, near the 1 MiB a ConfigMap holds): RSS with it loaded, and at the peak of one reload.
#
# Usage: install/measure/sidecar.sh [N] [POLICY]   (N default 2000; needs python3; no root)
# BIN: the palisade binary (default target/release/palisade, what scripts/image puts in the image).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/target/release/palisade}
N=${1:-2000}
POLICY=${2:-}
TMP=$(mktemp -d /tmp/palisade-measure-sidecar.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cd "$TMP"
"$BIN" ca init --ca-dir ca --trust-domain bench.example >/dev/null
for who in server client; do
    "$BIN" cert issue --ca-dir ca --spiffe-id "spiffe://bench.example/ns/seg00000/sa/$who" --svid-dir "$who" >/dev/null
done
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }   # KiB
listening() { python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).readline())["listening"]; print(d[sys.argv[2]][sys.argv[3]])' "$@"; }
start() { # name config -> pid in NAME.pid
    "$BIN" sidecar run --config "$2" >"$1.out" 2>"$1.err" &
    PIDS+=($!); echo $! >"$1.pid"
    for _ in $(seq 100); do [[ -s $1.out ]] && break; sleep 0.05; done
}
cat >app.py <<'PY'
import asyncio, sys
async def main():
    want = int(sys.argv[1])
    async def echo(reader, writer):
        got = 0
        while got < want:
            b = await reader.read(65536)
            if not b: break
            got += len(b); writer.write(b); await writer.drain()
        await reader.read()
        writer.close()
    server = await asyncio.start_server(echo, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
PY
cat >drive.py <<'PY'
import asyncio, resource, sys
host, port = sys.argv[1].rsplit(":", 1); n = int(sys.argv[2]); payload = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 1024, n + 1024))
held = []
async def one(sem):
    async with sem:
        r, w = await asyncio.open_connection(host, int(port))
        if payload:
            w.write(b"x" * payload); await w.drain()
            got = 0
            while got < payload:
                b = await r.read(65536)
                if not b: raise SystemExit("closed early")
                got += len(b)
        held.append((r, w))
async def main():
    sem = asyncio.Semaphore(200)
    await asyncio.gather(*(one(sem) for _ in range(n)))
    if not payload: await asyncio.sleep(2)        # the handshakes finish behind the connects
    print("held", len(held), flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
PY
for payload in 0 1024 262144; do
    python3 app.py "$payload" >app.port & PIDS+=($!)
    for _ in $(seq 50); do [[ -s app.port ]] && break; sleep 0.1; done
    cat >server.yaml <<EOF2
identity: { cert: server/cert.pem, key: server/key.pem, bundle: server/bundle.pem }
inbound:
  - { name: api, listen: 127.0.0.1:0, forward_to: "127.0.0.1:$(cat app.port)", allow: ["spiffe://bench.example/**"] }
admin: { listen: 127.0.0.1:0 }
limits: { max_connections: $((N * 2)), max_handshakes: $((N * 2)) }
workers: 2
EOF2
    start server server.yaml
    cat >client.yaml <<EOF2
identity: { cert: client/cert.pem, key: client/key.pem, bundle: client/bundle.pem }
outbound:
  - { name: to-api, listen: 127.0.0.1:0, connect_to: "$(listening server.out inbound api)", expect: ["spiffe://bench.example/**"] }
admin: { listen: 127.0.0.1:0 }
limits: { max_connections: $((N * 2)) }
workers: 2
EOF2
    start client client.yaml
    sleep 1
    s0=$(rss "$(cat server.pid)") c0=$(rss "$(cat client.pid)")
    python3 drive.py "$(listening client.out outbound to-api)" "$N" "$payload" >drive.out & PIDS+=($!)
    for _ in $(seq 3000); do grep -q held drive.out 2>/dev/null && break; sleep 0.1; done
    sleep 2
    s1=$(rss "$(cat server.pid)") c1=$(rss "$(cat client.pid)")
    python3 -c "
n, s0, c0, s1, c1, p = $N, $s0, $c0, $s1, $c1, $payload
print(f'payload {p:>6} B each way, {n} connections: idle {s0/1024:.1f} / {c0/1024:.1f} MiB (inbound / outbound sidecar), '
      f'held {s1/1024:.1f} / {c1/1024:.1f} MiB, {(s1-s0)/n:.1f} / {(c1-c0)/n:.1f} KiB per connection')"
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=()
    rm -f app.port drive.out server.out client.out
done

if [[ -z $POLICY ]]; then
    command -v "$OLDPWD/target/release/policy_gen" >/dev/null || { echo "no POLICY and no target/release/policy_gen" >&2; exit 0; }
    "$OLDPWD/target/release/policy_gen" gen --segments 800 --rules 8000 >policy.yaml
else
    cp "$POLICY" policy.yaml
fi
cat >transparent.yaml <<'EOF2'
identity: { cert: server/cert.pem, key: server/key.pem, bundle: server/bundle.pem }
transparent: { inbound: "127.0.0.1:0", outbound: "127.0.0.1:0", policy: policy.yaml, mode: strict }
admin: { listen: 127.0.0.1:0 }
workers: 2
EOF2
start transparent transparent.yaml
python3 - "$(cat transparent.pid)" "$(wc -c <policy.yaml)" <<'PY'
import os, sys, time
pid, size = int(sys.argv[1]), int(sys.argv[2])
rss = lambda: next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:"))
time.sleep(3)
loaded = rss()
text = open("policy.yaml").read().replace("segments:\n", "segments:\n  zz-reload:\n    addresses: [192.0.2.0/24]\n", 1)
open("policy.yaml.new", "w").write(text); os.rename("policy.yaml.new", "policy.yaml")
peak, end = loaded, time.time() + 4
while time.time() < end:
    peak = max(peak, rss()); time.sleep(0.002)
print(f"policy of {size / 1e6:.2f} MB: {loaded / 1024:.1f} MiB loaded, {peak / 1024:.1f} MiB at the peak of a reload, {rss() / 1024:.1f} MiB after")
PY
