"""The chain's rules beyond transfers: importing this registers the market and staking transaction
kinds and block hooks with ``state.machine`` (done by ``state.chain``, so every chain has them)."""

from __future__ import annotations

from . import market, staking

__all__ = ["market", "staking"]
