"""Pedersen commitments ``C = v·V + r·B`` on BN254 G1 (:mod:`zk.g1`): hiding (``r`` uniform mod ``R``)
and binding (nobody knows ``log_B V``). A commitment is a 64-byte G1 encoding; a blinding, a canonical
32-byte scalar below ``R``."""

from __future__ import annotations

from dataclasses import dataclass

from zk import g1
from zk.errors import ProofError


@dataclass(frozen=True, slots=True)
class Opening:
    """The secret behind a commitment: the value and the blinding scalar."""

    value: int
    blinding: bytes

    def commit(self) -> bytes:
        return commit(self.value, self.blinding)


def commit(value: int, blinding: bytes) -> bytes:
    """``value·V + blinding·B`` (``blinding`` must be canonical)."""
    return g1.encode(g1.msm((g1.V, g1.B), (value, g1.scalar(blinding, "blinding"))))


def random_blinding() -> bytes:
    return g1.scalar_bytes(g1.random_scalar())


def blinding_from(seed: bytes) -> bytes:
    """A blinding derived from 32 random bytes (a ristretto255 nonce source, e.g. golden vectors'
    counter scalars), hashed so it is uniform modulo ``R``."""
    return g1.scalar_bytes(g1.hash_to_scalar(b"aitbc/zk/v2/blinding" + seed))


def opens(commitment: bytes, opening: Opening) -> bool:
    """Whether ``opening`` opens ``commitment`` (a non-canonical blinding opens nothing)."""
    try:
        return commit(opening.value, opening.blinding) == commitment
    except ProofError:
        return False
