"""Proposer schedule: who proposes round ``r`` of height ``h``, identically on every node.

Tendermint's weighted round robin (:meth:`ValidatorSet.advance`), applied as CometBFT does:

* the priorities *of* height ``h`` are the genesis priorities advanced once per height — ``h``
  advances in all; the winner of the ``h``-th advance proposes round 0 of height ``h``;
* round ``r > 0`` of height ``h`` is proposed by the winner after a COPY of the height-``h`` priorities
  is advanced ``r`` more times (rounds never change the priorities later heights start from).

Validator-set changes (PoS epochs): :meth:`ProposerSchedule.set_validators` installs a set from a height
on. At that height the new set's own priorities (as given, usually all zero or carried over by the
staking module) play the role genesis plays for height 1: ``proposer(from_height, 0)`` is the winner of
advancing them once. Every node must install the same sets at the same heights (the staking state
decides both), so the schedule stays identical everywhere.

Complexity (``n`` validators): the schedule caches the priorities after the latest height asked for,
so asking for consecutive heights costs one ``advance`` (O(n)) per new height — O(n) amortised, O(1)
advances; ``proposer(h, r)`` adds O(n·r) for the round copy and is memoised for the heights in use.
Asking for an EARLIER height than the cache recomputes from the start of that height's epoch:
O(n·(h - epoch start)).
"""

from __future__ import annotations

import bisect

from .validators import Validator, ValidatorSet

_MEMO_MAX = 4096


class ProposerSchedule:
    """Deterministic proposer selection over heights and rounds, with epoch hooks for set changes."""

    def __init__(self, genesis: ValidatorSet) -> None:
        # (from_height, set whose priorities are those "after height from_height - 1")
        self._epochs: list[tuple[int, ValidatorSet]] = [(1, genesis.copy())]
        self._cache_epoch = -1  # index into _epochs the cache belongs to
        self._cache_height = 0  # the cached set holds the priorities after advancing for this height
        self._cache_set: ValidatorSet | None = None
        self._memo: dict[tuple[int, int], Validator] = {}

    # sets --------------------------------------------------------------------------------------
    def set_validators(self, from_height: int, validators: ValidatorSet) -> None:
        """Use ``validators`` (with its priorities) from ``from_height`` on; replaces any set installed at
        or after that height. Call it on every node at the same point (e.g. when the block that ends an
        epoch commits), before asking for heights >= ``from_height``."""
        if from_height < 1:
            raise ValueError("from_height must be >= 1")
        keep = [e for e in self._epochs if e[0] < from_height]
        self._epochs = keep + [(from_height, validators.copy())]
        self._cache_epoch = -1
        self._cache_set = None
        self._memo = {k: v for k, v in self._memo.items() if k[0] < from_height}

    def _epoch_index(self, height: int) -> int:
        starts = [e[0] for e in self._epochs]
        return max(0, bisect.bisect_right(starts, height) - 1)

    def validators(self, height: int) -> ValidatorSet:
        """The validator set that votes on ``height`` (do not mutate it)."""
        return self._epochs[self._epoch_index(height)][1]

    def epochs(self) -> list[tuple[int, bytes]]:
        """(from_height, validators hash) of every installed set, for diagnostics."""
        return [(h, vs.hash) for h, vs in self._epochs]

    # priorities --------------------------------------------------------------------------------
    def _set_before(self, height: int) -> ValidatorSet:
        """The priorities after the advance for ``height - 1`` (i.e. what height ``height`` starts from),
        from the cache when possible. Mutating the result is not allowed (it is the cache)."""
        ei = self._epoch_index(height)
        start, base = self._epochs[ei]
        target = height - 1
        cs = self._cache_set
        if cs is None or self._cache_epoch != ei or self._cache_height > target:
            cs = base.copy()
            self._cache_height = start - 1
            self._cache_epoch = ei
        while self._cache_height < target:
            cs.advance()
            self._cache_height += 1
        self._cache_set = cs
        return cs

    def proposer(self, height: int, round_: int = 0) -> Validator:
        """The proposer of ``round_`` of ``height`` (height >= 1, round >= 0)."""
        if height < 1 or round_ < 0:
            raise ValueError("height must be >= 1 and round >= 0")
        key = (height, round_)
        p = self._memo.get(key)
        if p is None:
            p = self._set_before(height).proposer(round_)
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[key] = p
        return p
