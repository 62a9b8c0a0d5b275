#!/usr/bin/env bash
# Reproducible local trusted setup for aitbc-peer's Groth16 circuits (BN254), with snarkjs.
#
#   npm ci --prefix zk/circuits          # circom2 0.2.23, circomlib 2.0.5, snarkjs 0.7.6 (package-lock.json)
#   bash zk/circuits/setup.sh [circuit]  # default: every circuit in src/ that has a `component main`
#
# Phase 1 (powers of tau, 2^13, circuit-independent) is made once into work/ and reused: a fresh
# ceremony, one contribution from /dev/urandom, then a public beacon. Phase 2 (per circuit): groth16
# setup, CONTRIBUTIONS contributions (default 2; each from /dev/urandom, or from $ENTROPY_<i> when set,
# so other people can contribute by running this with their own entropy), then the beacon, `zkey
# verify` against the r1cs and the phase-1 file, and the export of the proving key (.zkey), the witness
# program (.wasm) and the verifying key (.vkey.json) into artifacts/. The transcript (every
# contribution hash) goes to artifacts/<circuit>.setup.log. Soundness holds if one contributor of each
# phase destroyed its entropy. A new setup gives a new verifying key, and the verifying key's digest is
# consensus (zk/receipt.py pins it): changing it is a network upgrade.
set -euo pipefail
cd "$(dirname "$0")"
S=node_modules/.bin/snarkjs
C=node_modules/.bin/circom2
[ -x "$S" ] && [ -x "$C" ] || { echo "run: npm ci --prefix zk/circuits" >&2; exit 2; }
BEACON=${BEACON:-0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f}
CONTRIBUTIONS=${CONTRIBUTIONS:-2}
entropy() { local v="ENTROPY_$1"; if [ -n "${!v:-}" ]; then echo "${!v}"; else head -c 64 /dev/urandom | base64 -w0; fi; }
mkdir -p work artifacts

if [ ! -f work/pot13_final.ptau ]; then
  {
  $S powersoftau new bn128 13 work/pot13_0.ptau
  $S powersoftau contribute work/pot13_0.ptau work/pot13_1.ptau --name="aitbc phase1 #1" -e="$(entropy p1)"
  $S powersoftau beacon work/pot13_1.ptau work/pot13_beacon.ptau "$BEACON" 10 -n="aitbc phase1 beacon"
  $S powersoftau prepare phase2 work/pot13_beacon.ptau work/pot13_final.ptau
  $S powersoftau verify work/pot13_final.ptau
  } 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | tee artifacts/pot13.setup.log
fi

circuits=("$@")
[ ${#circuits[@]} -gt 0 ] || circuits=($(grep -l "component main" src/*.circom | xargs -n1 basename | sed 's/\.circom$//'))
for c in "${circuits[@]}"; do
  w=work/$c
  mkdir -p "$w"
  {
    echo "# $c: $(date -u +%FT%TZ), $($C --version 2>/dev/null || echo circom2), snarkjs $(node -p 'require("./node_modules/snarkjs/package.json").version')"
    $C "src/$c.circom" --r1cs --wasm --O2 -o "$w"
    $S groth16 setup "$w/$c.r1cs" work/pot13_final.ptau "$w/${c}_0.zkey"
    for i in $(seq 1 "$CONTRIBUTIONS"); do
      $S zkey contribute "$w/${c}_$((i - 1)).zkey" "$w/${c}_$i.zkey" --name="aitbc phase2 #$i" -e="$(entropy "$i")"
    done
    $S zkey beacon "$w/${c}_$CONTRIBUTIONS.zkey" "$w/$c.zkey" "$BEACON" 10 -n="aitbc phase2 beacon"
    $S zkey verify "$w/$c.r1cs" work/pot13_final.ptau "$w/$c.zkey"
    $S zkey export verificationkey "$w/$c.zkey" "artifacts/$c.vkey.json"
  } 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | tee "artifacts/$c.setup.log"
  cp "$w/$c.zkey" "artifacts/$c.zkey"
  cp "$w/${c}_js/$c.wasm" "artifacts/$c.wasm"
  sha256sum "artifacts/$c.zkey" "artifacts/$c.wasm" "artifacts/$c.vkey.json" | tee -a "artifacts/$c.setup.log"
  ../../.venv/bin/python tools/export_vkey.py "$c" > "../${c}_vkey.py"
done
