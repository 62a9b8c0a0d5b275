"""What the node needs from a consensus engine (:class:`ConsensusEngine`), and the proposal sign-bytes.

The node runs :class:`consensus.bft_engine.BftEngine` in every configuration: a single-validator dev
chain is the same Tendermint engine with one validator and no peers (``NullTransport``).
"""

from __future__ import annotations

from typing import Protocol

import trio

from state import codec


def proposal_sign_bytes(height: int, round_: int, pol_round: int, block_hash: bytes) -> bytes:
    """What a proposer signs (kind ``proposal``): height, round, POL round (-1 = none), block hash."""
    return codec.encode({"height": height, "round": round_, "pol_round": pol_round, "block_hash": block_hash})


class ConsensusEngine(Protocol):
    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None: ...

    def status(self) -> dict: ...

    def notify_tx(self) -> None: ...
