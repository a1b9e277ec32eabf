#!/usr/bin/env bash
# `ca serve`'s memory, for its limit in docs/INSTALL.md ("Resources"): VmRSS idle, then with N
# TLS connections held open, (a) each after its handshake only, (b) each in the middle of a sign
# request: the head (with an Authorization header, so the body is read) and 15,000 of the 16,000
# body bytes it announces. The CA's own caps are lifted for the one client address this runs
# from (--max-connections-per-client, --rate-limit 0) and its timeouts lengthened so that the
# connections stay; everything else is the default. N default 3,072: the general class
# (--max-connections 4,096 less the 1,024 kept for renewals, which need a client certificate).
#
# Usage: install/measure/ca.sh [N]   (needs python3; no root)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/target/release/palisade}
N=${1:-3072}
TMP=$(mktemp -d /tmp/palisade-measure-ca.XXXXXX)
PID=
HOLDER=
cleanup() { kill $HOLDER $PID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cd "$TMP"
"$BIN" ca init --ca-dir root --trust-domain bench.example >/dev/null
"$BIN" ca init-issuer --root-dir root --ca-dir issuer >/dev/null
cat >hold.py <<'PY'
import asyncio, resource, ssl, sys
host, port = sys.argv[1].rsplit(":", 1); n = int(sys.argv[2]); mode = sys.argv[3]
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 1024, n + 1024))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
held = []
async def one(sem):
    async with sem:
        r, w = await asyncio.open_connection(host, int(port), ssl=ctx, server_hostname="ca")
        if mode == "body":
            w.write(b"POST /v1/sign HTTP/1.1\r\nHost: ca\r\nAuthorization: Bearer x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 16000\r\n\r\n" + b"a" * 15000)
            await w.drain()
        held.append((r, w))
async def main():
    sem = asyncio.Semaphore(64)
    await asyncio.gather(*(one(sem) for _ in range(n)))
    print("held", len(held), flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
PY
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$PID/status"; }   # KiB
for mode in handshake body; do
    "$BIN" ca serve --ca-dir issuer --listen 127.0.0.1:0 --admin 127.0.0.1:0 --rate-limit 0 \
        --max-connections-per-client 8192 --request-timeout 120s --handshake-timeout 60s \
        --audit-log audit.log >serve.out 2>serve.err &
    PID=$!
    for _ in $(seq 100); do [[ -s serve.out ]] && break; sleep 0.1; done
    api=$(python3 -c 'import json; print(json.loads(open("serve.out").readline())["listening"]["api"])')
    sleep 1
    idle=$(rss)
    python3 hold.py "$api" "$N" "$mode" >hold.out 2>hold.err & HOLDER=$!
    for _ in $(seq 1200); do grep -q held hold.out 2>/dev/null && break; sleep 0.1; done
    sleep 3
    full=$(rss)
    python3 -c "print(f'$mode: idle {$idle/1024:.1f} MiB; $(cut -d' ' -f2 hold.out) connections held: {$full/1024:.1f} MiB, {($full-$idle)/$N:.1f} KiB per connection')"
    kill $HOLDER $PID; wait 2>/dev/null || true; HOLDER= PID=
    rm -f serve.out hold.out
done
