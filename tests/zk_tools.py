"""Whether the optional prover (snarkjs, `make test` installs it) is here: tests that make Groth16 proofs
skip with what to install when it is not; the node and the verifier never need it."""

from __future__ import annotations

import pytest

from node.zk_prover import ProverMissing, snarkjs_command


def _missing() -> str | None:
    try:
        snarkjs_command()
    except ProverMissing as exc:
        return str(exc)
    return None


MISSING = _missing()
requires_snarkjs = pytest.mark.skipif(MISSING is not None, reason=f"no snarkjs: {MISSING}")
