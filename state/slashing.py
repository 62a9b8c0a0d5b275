"""The one slashing path of the chain: validators (double-sign, downtime), miners (wrong result,
missed deadline) and false challengers all lose stake through these two functions, so every slash is
computed the same way (integer basis points, rounding down) and accounted in the same supply record
(the part not paid to a beneficiary is burned)."""

from __future__ import annotations

from .machine import Execution
from .params import BPS


def slash_cut(amount: int, bps: int) -> int:
    """The part of ``amount`` a slash of ``bps`` basis points takes (rounded down)."""
    return amount * bps // BPS


def settle_slash(ex: Execution, amount: int, *, beneficiary: bytes | None = None, reward_bps: int = 0) -> tuple[int, int]:
    """Dispose of ``amount`` already taken out of a bond: ``reward_bps`` of it to ``beneficiary`` (if
    any), the rest burned from the total supply. Returns (rewarded, burned)."""
    reward = slash_cut(amount, reward_bps) if beneficiary is not None else 0
    if reward:
        ex.credit(beneficiary, reward)  # type: ignore[arg-type]
    burned = amount - reward
    ex.burn(burned)
    return reward, burned
