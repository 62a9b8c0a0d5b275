"""Consensus engines. The node talks to an engine only through :class:`ConsensusEngine`:
``run`` (a long-lived task), ``status`` and the ``on_commit`` callback it was given.

:class:`SoloEngine` runs a chain with exactly one validator: every block interval it reaps the mempool,
builds a block, signs proposal, prevote and precommit through the persisted :class:`SignState`, and
commits with a one-signature :class:`Commit` that any node can verify against the validator set.
The multi-validator Tendermint engine implements the same interface.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from state import codec
from state.chain import ChainState, PendingBlock
from state.crypto import KIND_PROPOSAL, KIND_VOTE, SigningKey
from state.mempool import Mempool
from state.types import PRECOMMIT, PREVOTE, Commit, CommitSig, vote_sign_bytes

from .signstate import STEP_PRECOMMIT, STEP_PREVOTE, STEP_PROPOSE, SignState
from .validators import ValidatorSet

log = logging.getLogger("aitbc.consensus")

OnCommit = Callable[[PendingBlock, Commit], Awaitable[None]]


def proposal_sign_bytes(height: int, round_: int, pol_round: int, block_hash: bytes) -> bytes:
    return codec.encode({"height": height, "round": round_, "pol_round": pol_round, "block_hash": block_hash})


class ConsensusEngine(Protocol):
    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None: ...

    def status(self) -> dict: ...


@dataclass
class EngineState:
    height: int = 0
    round: int = 0
    step: str = "new_height"
    last_block_seconds: float = 0.0


class SoloEngine:
    """Single-validator BFT: the validator alone holds > 2/3 of the power, so its own precommit
    finalizes each block."""

    def __init__(
        self,
        chain: ChainState,
        mempool: Mempool,
        validators: ValidatorSet,
        key: SigningKey,
        sign_state: SignState,
        on_commit: OnCommit,
    ) -> None:
        if key.public_key not in validators or validators.quorum() > validators.power_of(key.public_key):
            raise ValueError("SoloEngine needs a validator key holding more than 2/3 of the power")
        self.chain = chain
        self.mempool = mempool
        self.validators = validators
        self.key = key
        self.sign_state = sign_state
        self.on_commit = on_commit
        self.state = EngineState(height=chain.head.height + 1)
        self.mempool_wakeup = trio.Event()

    def notify_tx(self) -> None:
        """Wake the engine when it waits for transactions (create_empty_blocks = false)."""
        self.mempool_wakeup.set()

    def status(self) -> dict:
        return {
            "height": self.state.height,
            "round": self.state.round,
            "step": self.state.step,
            "proposer": self.key.public_key,
            "validators": len(self.validators),
            "mode": "solo",
        }

    def _first_round(self, height: int) -> int:
        """Round to propose ``height`` in: 0, unless the sign state shows this validator already signed
        something for ``height`` that never got committed (it was stopped, e.g. killed, between signing
        and persisting the block). The block it builds now differs (time, txs), and signing it in the
        same round would be a double sign, so it moves on to the next round, as Tendermint would."""
        last = self.sign_state.last
        return last.round + 1 if last.height == height else 0

    async def _wait_for_slot(self) -> None:
        params = self.chain.params
        target_ms = self.chain.head.time + params.block_interval_ms
        delay = target_ms / 1000 - time.time()
        if delay > 0:
            await trio.sleep(min(delay, params.block_interval_ms / 1000))
        if not params.create_empty_blocks:
            while len(self.mempool) == 0:
                self.mempool_wakeup = trio.Event()
                with trio.move_on_after(params.block_interval_ms / 1000 * 30):
                    await self.mempool_wakeup.wait()
                if len(self.mempool) == 0 and time.time() * 1000 - self.chain.head.time > 30_000:
                    break  # heartbeat block so the chain shows liveness

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        params = self.chain.params
        chain_id = self.chain.chain_id
        while True:
            await self._wait_for_slot()
            height = self.chain.head.height + 1
            round_ = self._first_round(height)
            self.state = EngineState(height=height, round=round_, step="propose")
            t0 = time.perf_counter()
            txs = self.mempool.reap(params.max_block_txs, params.max_block_bytes)
            verified = {t.hash for t in txs}  # the mempool admits only signature-checked txs
            last_commit = self.chain.commit_at(height - 1) if height > 1 else None
            build = functools.partial(
                self.chain.build_block,
                txs,
                proposer=self.key.public_key,
                time_ms=int(time.time() * 1000),
                last_commit=last_commit,
                validators_hash=self.validators.hash,
                next_validators_hash=self.validators.hash,
                is_verified=lambda tx, v=verified: tx.hash in v,
            )
            t_build = time.perf_counter()
            pending = await trio.to_thread.run_sync(build)
            pending.build_seconds = time.perf_counter() - t_build
            block_hash = pending.block.hash
            ss = self.sign_state
            r = round_
            ss.sign(KIND_PROPOSAL, chain_id, height, r, STEP_PROPOSE, proposal_sign_bytes(height, r, -1, block_hash))
            self.state.step = "prevote"
            ss.sign(KIND_VOTE, chain_id, height, r, STEP_PREVOTE, vote_sign_bytes(height, r, PREVOTE, block_hash))
            self.state.step = "precommit"
            sig = ss.sign(KIND_VOTE, chain_id, height, r, STEP_PRECOMMIT, vote_sign_bytes(height, r, PRECOMMIT, block_hash))
            commit = Commit(height, r, block_hash, (CommitSig(self.key.public_key, sig),))
            self.state.step = "commit"
            t_commit = time.perf_counter()
            await trio.to_thread.run_sync(self.chain.commit, pending, commit)
            pending.commit_seconds = time.perf_counter() - t_commit
            self.state.last_block_seconds = time.perf_counter() - t0
            if pending.outcome.skipped:
                log.debug("height %d: left out %d invalid txs", height, len(pending.outcome.skipped))
            await self.on_commit(pending, commit)
