#!/usr/bin/env bash
# Leaf issuance from CSRs per second on one core, next to `openssl speed ecdsap256` on the same
# core in the same run. Issuing from a CSR needs one verify + one sign, so the ceiling is
# 1 / (1/sign + 1/verify); the goal is >= 70% of OpenSSL's ceiling.
#
# Usage: bench/issuance.sh [SECONDS]    (default 3 s per measurement; prints one JSON object)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-3}
CORE=${BENCH_CORE:-0}

command -v openssl >/dev/null || { echo "openssl is needed (apt-get install openssl)" >&2; exit 1; }
pin=(); command -v taskset >/dev/null && pin=(taskset -c "$CORE")

cargo build --release -q -p palisade-bench --bin issuance
ours=$("${pin[@]}" target/release/issuance "$SECONDS_EACH")

# "256 bits ecdsa (nistp256)   0.0000s   0.0001s  55000.0  17000.0" -> sign/s verify/s
speed=$("${pin[@]}" openssl speed -seconds "$SECONDS_EACH" ecdsap256 2>/dev/null | awk '/nistp256/ {print $(NF-1), $NF}' | tail -1)
read -r ossl_sign ossl_verify <<<"$speed"
openssl_version=$(openssl version)

python3 - "$ours" "$ossl_sign" "$ossl_verify" "$openssl_version" "${#pin[@]}" <<'PY'
import json, sys
ours = json.loads(sys.argv[1])
sign, verify = float(sys.argv[2]), float(sys.argv[3])
ceiling = 1 / (1 / sign + 1 / verify)
ours.update({
    "openssl": sys.argv[4],
    "pinned_to_one_core": sys.argv[5] != "0",
    "openssl_p256_sign_per_s": round(sign),
    "openssl_p256_verify_per_s": round(verify),
    "openssl_sign_plus_verify_ceiling_per_s": round(ceiling),
    "ratio_to_openssl_ceiling": round(ours["issuance_from_csr_per_s"] / ceiling, 3),
    "goal_ratio_to_openssl_ceiling": 0.70,
})
ours["goal_met"] = ours["ratio_to_openssl_ceiling"] >= 0.70
print(json.dumps(ours, indent=2))
PY
