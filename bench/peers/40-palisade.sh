# shellcheck shell=bash
# Palisade's sidecar as a peer of the shared harness (../shared/peers/run.sh), sourced through
# EXTRA_PEERS_DIR by bench/sidecar-peers.sh. Writes a sidecar config into the instance's WORKDIR
# and execs `palisade sidecar run` in the foreground, as the harness requires.
register_peer palisade "Palisade sidecar (rustls + aws-lc-rs, tokio)"

PALISADE_BIN=${PALISADE_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/sidecar/release/palisade}

peer_palisade_available() { [[ -x $PALISADE_BIN ]]; }

peer_palisade_version() { echo "$("$PALISADE_BIN" --version), rustls 0.23 + aws-lc-rs"; }

# peer_palisade_sidecar ROLE LISTEN_PORT TARGET_PORT CA_CRT CRT KEY WORKDIR
peer_palisade_sidecar() {
  local role=$1 lport=$2 tport=$3 ca=$4 crt=$5 key=$6 wd=$7
  local bind=${BENCH_BIND:-127.0.0.1}
  local resumption=false; [[ ${BENCH_TLS_RESUME:-0} == 1 ]] && resumption=true
  local listener
  if [[ $role == client ]]; then
    listener="outbound:
  - name: bench
    listen: $bind:$lport
    connect_to: $bind:$tport
    expect: [\"$BENCH_PEER_ID\"]"
  else
    listener="inbound:
  - name: bench
    listen: $bind:$lport
    forward_to: $bind:$tport
    allow: [\"$BENCH_PEER_ID\"]"
  fi
  cat > "$wd/sidecar.yaml" <<CONF
identity:
  cert: $crt
  key: $key
  bundle: $ca
$listener
admin:
  listen: 127.0.0.1:0
workers: ${BENCH_WORKERS:-1}
tls:
  resumption: $resumption
sandbox:
  seccomp: ${BENCH_SECCOMP:-enforce}
CONF
  PALISADE_LOG=${PALISADE_LOG:-warn} exec "$PALISADE_BIN" sidecar run --config "$wd/sidecar.yaml"
}
