"""Groth16 proving through snarkjs, an optional tool: the node itself never needs Node.js.

Proofs are made by whoever wants to prove something (a client attesting a receipt), not by the node
that verifies them; no permissively licensed in-process prover for circom circuits exists (see
docs/zk.md), so this runs ``snarkjs groth16 fullprove`` with the circuit's witness program and proving
key from ``zk/circuits/artifacts/``, then checks the proof with the node's own verifier before
returning it. snarkjs is found as ``$AITBC_SNARKJS`` (a ``snarkjs`` executable or its ``cli.cjs``), then
``zk/circuits/node_modules`` (``npm ci --prefix zk/circuits``), then ``snarkjs`` on ``PATH``; when none
is there, :class:`ProverMissing` says what to install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from state.errors import AitbcError
from zk import groth16

ARTIFACTS = Path(__file__).resolve().parent.parent / "zk" / "circuits" / "artifacts"
_LOCAL_CLI = Path(__file__).resolve().parent.parent / "zk" / "circuits" / "node_modules" / "snarkjs" / "build" / "cli.cjs"
PROVE_TIMEOUT_S = 300.0


class ProverMissing(AitbcError):
    reason = "prover_missing"


class ProverFailed(AitbcError):
    reason = "prover_failed"


def snarkjs_command() -> list[str]:
    """The command line that runs snarkjs, or :class:`ProverMissing` naming what to install."""
    env = os.environ.get("AITBC_SNARKJS")
    node = shutil.which("node")
    if env:
        if env.endswith((".js", ".cjs")):
            if node is None:
                raise ProverMissing(f"AITBC_SNARKJS={env} needs Node.js (node) on PATH")
            return [node, env]
        return [env]
    if _LOCAL_CLI.is_file() and node is not None:
        return [node, str(_LOCAL_CLI)]
    on_path = shutil.which("snarkjs")
    if on_path:
        return [on_path]
    raise ProverMissing(
        "proving needs snarkjs 0.7.6 (an optional tool; the node verifies without it): install Node.js >= 18 "
        "and run `npm ci --prefix zk/circuits` in the aitbc-peer checkout, or set AITBC_SNARKJS to a snarkjs "
        "executable"
    )


def prove(circuit: str, inputs: dict, *, timeout: float = PROVE_TIMEOUT_S) -> tuple[groth16.Proof, list[int]]:
    """Prove ``circuit`` on ``inputs`` (circom signal names → decimal strings). Returns the proof and the
    public signals in the circuit's order."""
    wasm, zkey = ARTIFACTS / f"{circuit}.wasm", ARTIFACTS / f"{circuit}.zkey"
    if not wasm.is_file() or not zkey.is_file():
        raise ProverMissing(f"the {circuit} circuit's proving files are missing from {ARTIFACTS} "
                            "(run zk/circuits/setup.sh)")
    cmd = snarkjs_command()
    with tempfile.TemporaryDirectory(prefix="aitbc-prove-") as d:
        tmp = Path(d)
        (tmp / "input.json").write_text(json.dumps(inputs))
        try:
            run = subprocess.run(
                [*cmd, "groth16", "fullprove", str(tmp / "input.json"), str(wasm), str(zkey),
                 str(tmp / "proof.json"), str(tmp / "public.json")],
                capture_output=True, text=True, timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            raise ProverFailed(f"snarkjs did not finish within {timeout:.0f} s") from None
        except OSError as exc:  # AITBC_SNARKJS names something that cannot run
            raise ProverMissing(f"cannot run snarkjs as {cmd[0]!r} ({exc.strerror}): fix AITBC_SNARKJS, or install "
                                "Node.js >= 18 and run `npm ci --prefix zk/circuits`") from None
        if run.returncode != 0 or not (tmp / "proof.json").is_file():
            detail = (run.stderr or run.stdout).strip().splitlines()
            raise ProverFailed("snarkjs could not prove this statement (the witness does not satisfy the circuit: "
                               f"wrong secret, path or values?): {detail[-1] if detail else run.returncode}")
        proof = groth16.Proof.from_snarkjs(json.loads((tmp / "proof.json").read_text()))
        public = groth16.public_from_snarkjs(json.loads((tmp / "public.json").read_text()))
    return proof, public
