"""Fiat–Shamir transcripts: every public input, labelled and length-prefixed, goes into one SHA-512 state.

A proof's challenge is a hash of its protocol name, the context it is bound to (chain id, job id,
bidder: :class:`Context`) and every statement and commitment, in order, so a proof made for one job,
one chain or one bidder does not verify for another.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from zk import group

PROTOCOL_VERSION = 1


def _frame(label: bytes, data: bytes) -> bytes:
    return len(label).to_bytes(2, "big") + label + len(data).to_bytes(4, "big") + data


class Transcript:
    """An append-only transcript; :meth:`challenge` squeezes a scalar and absorbs it back."""

    def __init__(self, protocol: bytes) -> None:
        self._h = hashlib.sha512()
        self._h.update(_frame(b"aitbc/zk", PROTOCOL_VERSION.to_bytes(2, "big") + protocol))

    def append(self, label: bytes, data: bytes) -> None:
        self._h.update(_frame(label, data))

    def append_int(self, label: bytes, value: int) -> None:
        if value < 0 or value >= 2**64:
            raise ValueError("transcript integers are u64")
        self.append(label, value.to_bytes(8, "big"))

    def challenge(self, label: bytes) -> bytes:
        h = self._h.copy()
        h.update(_frame(b"challenge", label))
        c = group.hash_to_scalar(h.digest())
        self.append(b"challenge/" + label, c)
        return c

    def challenge_mod(self, label: bytes, order: int) -> int:
        """A challenge as an integer modulo ``order`` (a 512-bit digest reduced: negligible bias), for
        groups other than ristretto255 (BN254 G1); it is absorbed back as 32 little-endian bytes."""
        h = self._h.copy()
        h.update(_frame(b"challenge", label))
        c = int.from_bytes(h.digest(), "little") % order
        self.append(b"challenge/" + label, c.to_bytes(32, "little"))
        return c


@dataclass(frozen=True, slots=True)
class Context:
    """What a proof is bound to: the chain, the job (or other scope) and the party that made it."""

    chain_id: str
    scope: bytes  # e.g. the job id
    party: bytes  # e.g. the bidder's address

    def bind(self, t: Transcript) -> None:
        t.append(b"chain_id", self.chain_id.encode())
        t.append(b"scope", self.scope)
        t.append(b"party", self.party)
