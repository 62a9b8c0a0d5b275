"""Validator sets: voting power, +2/3 thresholds, hashing, weighted round-robin proposer selection and
commit verification. The set is an input to the engine (PoA from genesis now; PoS sets later)."""

from __future__ import annotations

from dataclasses import dataclass

from state.chain import validators_hash
from state.crypto import KIND_VOTE, verify
from state.errors import AitbcError
from state.types import Commit


class CommitError(AitbcError):
    reason = "invalid_commit"


@dataclass(frozen=True, slots=True)
class Validator:
    public_key: bytes
    power: int
    name: str = ""


class ValidatorSet:
    """An ordered (by public key) validator set with Tendermint-style proposer priorities."""

    def __init__(self, validators: list[Validator], priorities: list[int] | None = None) -> None:
        if not validators:
            raise ValueError("validator set must not be empty")
        self.validators = sorted(validators, key=lambda v: v.public_key)
        self.index = {v.public_key: i for i, v in enumerate(self.validators)}
        if len(self.index) != len(self.validators):
            raise ValueError("duplicate validator")
        self.total_power = sum(v.power for v in self.validators)
        self.priorities = list(priorities) if priorities is not None else [0] * len(self.validators)
        self.hash = validators_hash([(v.public_key, v.power) for v in self.validators])

    def __len__(self) -> int:
        return len(self.validators)

    def __contains__(self, pk: bytes) -> bool:
        return pk in self.index

    def power_of(self, pk: bytes) -> int:
        i = self.index.get(pk)
        return self.validators[i].power if i is not None else 0

    def quorum(self) -> int:
        """Smallest power strictly greater than 2/3 of the total."""
        return self.total_power * 2 // 3 + 1

    def copy(self) -> ValidatorSet:
        return ValidatorSet(list(self.validators), self.priorities)

    def advance(self) -> Validator:
        """One step of weighted round-robin: add each power to its priority, pick the highest
        (ties by lower public key), subtract the total from the winner. Returns the proposer."""
        pri = self.priorities
        for i, v in enumerate(self.validators):
            pri[i] += v.power
        best = max(range(len(pri)), key=lambda i: (pri[i], -i))
        pri[best] -= self.total_power
        return self.validators[best]

    def proposer(self, round_: int = 0) -> Validator:
        """Proposer for ``round_`` of the height these priorities belong to (does not mutate)."""
        tmp = self.copy()
        p = tmp.advance()
        for _ in range(round_):
            p = tmp.advance()
        return p

    def verify_commit(self, chain_id: str, commit: Commit, block_hash: bytes, height: int) -> int:
        """Check ``commit`` finalizes ``block_hash`` at ``height`` with > 2/3 of this set's power.
        Returns the signed power; raises :class:`CommitError` with the reason."""
        if commit.height != height:
            raise CommitError(f"commit is for height {commit.height}, expected {height}")
        if commit.block_hash != block_hash:
            raise CommitError("commit is for another block")
        sb = commit.sign_bytes()
        power = 0
        for s in commit.signatures:
            p = self.power_of(s.validator)
            if p == 0:
                raise CommitError(f"commit signed by unknown validator {s.validator.hex()[:16]}")
            if not verify(KIND_VOTE, chain_id, s.validator, sb, s.sig):
                raise CommitError(f"bad commit signature from validator {s.validator.hex()[:16]}")
            power += p
        if power < self.quorum():
            raise CommitError(f"commit has power {power}, needs more than 2/3 of {self.total_power}")
        return power
