"""Pedersen commitments ``C = v·H + r·B`` on ristretto255: hiding (``r`` uniform) and binding (nobody
knows ``log_B H``)."""

from __future__ import annotations

from dataclasses import dataclass

from zk import group


@dataclass(frozen=True, slots=True)
class Opening:
    """The secret behind a commitment: the value and the blinding scalar."""

    value: int
    blinding: bytes

    def commit(self) -> bytes:
        return commit(self.value, self.blinding)


def commit(value: int, blinding: bytes) -> bytes:
    """``value·H + blinding·B``."""
    return group.add(group.mul(group.from_int(value), group.H), group.mul_base(blinding))


def opens(commitment: bytes, opening: Opening) -> bool:
    """Whether ``opening`` opens ``commitment`` (both checked for canonical form by the caller)."""
    return commit(opening.value, opening.blinding) == commitment
