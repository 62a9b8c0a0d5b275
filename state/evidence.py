"""Evidence of validator misbehaviour (state-layer type: blocks carry it and the staking rules slash by it).

:class:`DuplicateVote` proves that one validator signed two different votes (different block hashes)
for the same height, round and vote type — the equivocation Tendermint slashes. The pair is stored in
a canonical order (``vote_a.block_hash < vote_b.block_hash``, nil = empty bytes sorts first), so every
node that sees the same two votes produces byte-identical evidence (same ``encode()``, same ``hash()``),
whichever it received first.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from state import codec
from state.codec import sha256
from state.errors import AitbcError, DecodeError
from state.types import Vote

MAX_EVIDENCE_BYTES = 1024  # two votes encode in ~400 bytes


class EvidenceError(AitbcError):
    """Evidence that does not prove misbehaviour (``reason`` says why)."""

    reason = "invalid_evidence"


@dataclass(frozen=True, slots=True)
class DuplicateVote:
    """Two conflicting votes by one validator for the same height/round/type, canonically ordered."""

    vote_a: Vote
    vote_b: Vote

    def __post_init__(self) -> None:
        a, b = self.vote_a, self.vote_b
        if (a.validator, a.height, a.round, a.type) != (b.validator, b.height, b.round, b.type):
            raise EvidenceError("duplicate vote: votes differ in validator, height, round or type", "mismatch")
        if not a.block_hash < b.block_hash:
            raise EvidenceError(
                "duplicate vote: votes must be for different block hashes, ordered vote_a < vote_b",
                "not_conflicting" if a.block_hash == b.block_hash else "order",
            )

    @classmethod
    def from_votes(cls, v1: Vote, v2: Vote) -> DuplicateVote:
        """The evidence for two conflicting votes, in canonical order whatever order they came in."""
        return cls(v1, v2) if v1.block_hash < v2.block_hash else cls(v2, v1)

    @property
    def validator(self) -> bytes:
        return self.vote_a.validator

    @property
    def height(self) -> int:
        return self.vote_a.height

    @property
    def round(self) -> int:
        return self.vote_a.round

    @property
    def type(self) -> int:
        return self.vote_a.type

    def to_obj(self) -> dict:
        return {"vote_a": self.vote_a.to_obj(), "vote_b": self.vote_b.to_obj()}

    def encode(self) -> bytes:
        return codec.encode(self.to_obj())

    def hash(self) -> bytes:
        return sha256(self.encode())

    @classmethod
    def from_obj(cls, obj: Any) -> DuplicateVote:
        if type(obj) is not dict or obj.keys() != {"vote_a", "vote_b"}:
            raise DecodeError("duplicate vote: expected a map with exactly 'vote_a' and 'vote_b'")
        a = Vote.from_obj(obj["vote_a"])
        b = Vote.from_obj(obj["vote_b"])
        try:
            return cls(a, b)
        except EvidenceError as exc:
            raise DecodeError(str(exc)) from None

    @classmethod
    def decode(cls, raw: bytes) -> DuplicateVote:
        """Strict decode: canonical CBOR, bounded size, structurally a conflicting pair in canonical order.
        Signatures and membership are checked by :meth:`verify`."""
        return cls.from_obj(codec.decode(raw, max_bytes=MAX_EVIDENCE_BYTES))

    def verify(self, chain_id: str, validators: Container[bytes]) -> None:
        """Check the evidence against the validator set of its height: the validator is a member and
        both signatures verify. Raises :class:`EvidenceError` with the reason."""
        if self.validator not in validators:
            raise EvidenceError("duplicate vote by a validator not in the set", "unknown_validator")
        for v in (self.vote_a, self.vote_b):
            if not v.verify(chain_id):
                raise EvidenceError("duplicate vote: a signature does not verify", "bad_signature")
