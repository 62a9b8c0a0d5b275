"""The trio driver of the Tendermint core: :class:`BftEngine` runs :class:`BftCore` against a real chain,
mempool, sign state, WAL and network transport.

One task — the receive loop — owns all consensus state (like CometBFT's receiveRoutine): every input
(a message from a peer, an expired timeout, a built or validated block, a synced block, a tick) is an
event on one channel, handled to completion before the next. Slow work runs off the loop through
``offload`` (``trio.to_thread.run_sync`` by default; ChainState serialises it with ``chain.lane``):
validating a proposed block (re-execution, plus the header and last-commit checks that need the
validator set), building our own block, committing. Their results come back as events.

Heights: after a decision the engine commits (``chain.commit``), writes the WAL end marker, calls
``on_commit(pending, commit)``, and starts the next height at ``head.time + block_interval_ms`` on its
clock (``now_ms``), so blocks come at the configured interval; round timeouts run on trio's clock
(``trio.current_time``). Messages for the next height that arrive early are buffered (bounded);
messages from further ahead, and 2/3+ precommits for a block we do not have, call ``on_behind(height)``
— the node's sync fetches the missing blocks and hands them over with :meth:`BftEngine.submit_block`.

Lost messages: when consensus makes no progress for ``rebroadcast_ms``, the engine re-sends its own
votes of the current round, the proposals it holds for the current/valid/locked round, and the
proposal + precommits that decided the previous height (for peers one height behind). Peers drop
what they already have cheaply (duplicate check before signature verification).

Restart: the WAL holds every input the core was fed for the unfinished height, every message this
node signed (synced before sending), the wall-clock deadline of every timeout armed, and the round
changes the engine made on its own. On start the engine re-feeds them, so the core comes back with
the same height, round, step, lock, valid value and votes; the messages it signs again during the
replay are the ones in the WAL (their stored signatures are reused, so the sign state — which only
moves forward — is not asked again and nothing is refused); its own messages are re-broadcast; and
each live timeout is armed for what was left of it at its recorded deadline (none if it expired while
the node was down), so a validator restarted in round 12 is back in round 12 and does not wait round
12's escalated timeouts from the start. If the sign state shows this validator signed in a later round
of the height than the WAL restored (records lost), it moves to that round. SignState guarantees that
nothing it signs after a restart conflicts with what it signed before.

Write failures: a failed write of the sign state, the WAL or the store raises
:class:`FatalWriteError`. It is never caught and logged: the receive loop stops, :meth:`BftEngine.run`
raises it (unwrapped from trio's exception group) and the node exits; nothing is signed or sent on top
of the failed write (the sign state is written before signing, the WAL record of an own message before
sending it, the block in one atomic batch), so a restart on a working disk resumes.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from state.chain import ChainState, PendingBlock
from state.codec import sha256
from state.crypto import KIND_PROPOSAL, KIND_VOTE, SigningKey
from state.errors import AitbcError, BlockError, FatalWriteError, InvariantError
from state.types import PRECOMMIT, PREVOTE, Block, Commit, CommitSig, Vote

from .bft import (
    Action,
    BftCore,
    Broadcast,
    Decide,
    EvidenceFound,
    MessageRejected,
    MissingBlock,
    Proposal,
    ProposalRejected,
    RequestBlock,
    ScheduleTimeout,
    Step,
    Timeouts,
    VoteRejected,
)
from .evidence import DuplicateVote, EvidenceError
from .schedule import ProposerSchedule
from .signstate import STEP_PRECOMMIT, STEP_PREVOTE, STEP_PROPOSE, SignState
from .transport import ConsensusMessage, ConsensusTransport
from .validators import Validator, ValidatorSet
from .wal import WAL, WalEntry

log = logging.getLogger("aitbc.consensus.bft")

OnCommit = Callable[[PendingBlock, Commit], Awaitable[None]]
OnBehind = Callable[[int], None]
Offload = Callable[..., Awaitable[Any]]

# Rejection reasons that only a faulty or malicious sender produces: the transport lowers its score.
PENALISED = frozenset(
    {
        "bad_signature",
        "unknown_validator",
        "not_proposer",
        "bad_pol_round",
        "block_mismatch",
        "invalid",
        "invalid_evidence",
        "mismatch",
        "not_conflicting",
        "order",
    }
)

EVENT_QUEUE = 4096
MAX_EVIDENCE_KEPT = 1000
MAX_EVIDENCE_PER_BLOCK = 32  # offered to build_block per proposal (each is checked against the rules)


def _wall_ms() -> int:
    return int(time.time() * 1000)


def fatal_write_error(exc: BaseException) -> FatalWriteError | None:
    """The :class:`FatalWriteError` in ``exc`` or in a (nested) exception group, if any."""
    if isinstance(exc, FatalWriteError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            found = fatal_write_error(e)
            if found is not None:
                return found
    return None


@dataclass(frozen=True)
class BftParams:
    """Engine settings (not consensus-critical; defaults follow the chain params)."""

    timeouts: Timeouts | None = None  # None: from ChainParams (timeout_propose_ms, ...)
    rebroadcast_ms: int | None = None  # None: timeout_propose_ms + timeout_vote_ms
    future_buffer: int = 2000  # messages kept for the next height
    max_block_time_drift_ms: int = 30_000  # a proposed block may not be further ahead of our clock
    empty_block_heartbeat_ms: int = 30_000  # create_empty_blocks=false: an empty block at least this often
    behind_repeat_s: float = 5.0  # on_behind for the same height at most this often


class BftEngine:
    """Tendermint BFT for N weighted validators (or a follower when ``key`` is None)."""

    def __init__(
        self,
        chain: ChainState,
        mempool: Any,
        schedule: ProposerSchedule,
        key: SigningKey | None,
        sign_state: SignState | None,
        transport: ConsensusTransport,
        on_commit: OnCommit,
        wal: WAL,
        params: BftParams | None = None,
        *,
        on_behind: OnBehind | None = None,
        now_ms: Callable[[], int] | None = None,
        offload: Offload | None = None,
    ) -> None:
        if (key is None) != (sign_state is None):
            raise ValueError("a validator needs both its key and its SignState (a follower neither)")
        if sign_state is not None and key is not None and sign_state.key.public_key != key.public_key:
            raise ValueError("the SignState guards another key")
        self.chain = chain
        self.mempool = mempool
        self.schedule = schedule
        self.key = key
        self.sign_state = sign_state
        self.transport = transport
        self.on_commit = on_commit
        self.wal = wal
        self.params = params or BftParams()
        self.on_behind = on_behind
        self.now_ms = now_ms or _wall_ms
        self.offload: Offload = offload or trio.to_thread.run_sync
        cp = chain.params
        self.timeouts = self.params.timeouts or Timeouts.from_params(cp)
        rb = self.params.rebroadcast_ms
        self.rebroadcast_s = (rb if rb is not None else cp.timeout_propose_ms + cp.timeout_vote_ms) / 1000
        self.chain_id = chain.chain_id
        # (kind, height, round, step) -> (sign bytes, signature) of the messages this validator signed
        # before a restart (from the WAL): re-signing one of them during replay reuses the signature
        self._presigned: dict[tuple[str, int, int, int], tuple[bytes, bytes]] = {}
        signer = None
        if sign_state is not None:
            ss = sign_state
            chain_id = chain.chain_id
            presigned = self._presigned

            def signer(kind: str, h: int, r: int, step: int, sb: bytes) -> bytes:
                pre = presigned.get((kind, h, r, step))
                if pre is not None and pre[0] == sb:
                    return pre[1]  # signed before the restart (Ed25519 would give the same signature)
                return ss.sign(kind, chain_id, h, r, step, sb)

        self.core = BftCore(
            chain.chain_id, self.timeouts, signer=signer, pubkey=key.public_key if key is not None else None
        )
        self.height = chain.head.height + 1  # the height being decided (or about to start)
        self._started = False  # core runs self.height
        self._idle_wait: int | None = None  # waiting for txs before starting this height
        self._send: trio.MemorySendChannel | None = None
        self._nursery: trio.Nursery | None = None
        self._timers: dict[tuple[str, int, int], trio.CancelScope] = {}
        self._deadlines: dict[tuple[str, int, int], int] = {}  # timeout -> wall-clock deadline (ms), this height
        self._served: set[tuple[str, int, int]] = set()  # timeouts of this height that fired
        self._pending: dict[bytes, PendingBlock] = {}  # validated/built blocks of this height
        self._validity: dict[bytes, bool] = {}
        self._validating: dict[bytes, list[Proposal]] = {}
        self._building: tuple[int, int] | None = None
        self._future: OrderedDict[Any, tuple[str, ConsensusMessage]] = OrderedDict()
        self._last_decision: list[Proposal | Vote] = []
        self._replay_own: set[bytes] = set()
        self._behind_reported = (0, -1e9)
        self._last_marker: tuple | None = None
        self._height_waiters: list[trio.Event] = []
        self._changed = trio.Event()  # set (and replaced) after every handled event
        self._evidence_listeners: list[Callable[[DuplicateVote], None]] = []
        self.evidence: OrderedDict[bytes, DuplicateVote] = OrderedDict()
        self.rejected: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.decided_rounds: dict[int, int] = {}  # height -> round it was decided in (recent only)
        # Precommits for the last committed block that arrived after the decision: the next proposal's
        # last_commit carries them too, so slow validators are credited (rewards, downtime).
        self._late_sigs: dict[bytes, bytes] = {}
        self._last_commit: Commit | None = None
        self.install_validator_sets()

    def install_validator_sets(self) -> None:
        """Install the validator sets the staking rules stored in state (boot, or after a sync)."""
        for from_height, vals in self.chain.validator_sets():
            self.schedule.set_validators(from_height, ValidatorSet([Validator(pk, p) for pk, p in vals]))

    # public API -----------------------------------------------------------------------------------
    def notify_tx(self) -> None:
        """Transactions arrived (matters when create_empty_blocks = false)."""
        if self._idle_wait is not None and self._send is not None:
            try:
                self._send.send_nowait(("start", self._idle_wait, True))
            except trio.WouldBlock:
                pass

    def add_evidence_listener(self, fn: Callable[[DuplicateVote], None]) -> None:
        """``fn(evidence)`` for every new, verified DuplicateVote (found here or received)."""
        self._evidence_listeners.append(fn)

    def pending_evidence(self) -> list[DuplicateVote]:
        return list(self.evidence.values())

    def status(self) -> dict:
        core = self.core
        started = self._started and core.height == self.height
        r = core.round if started else 0
        vs = self.schedule.validators(self.height)
        if started:
            step = core.step.label
        else:
            step = "waiting_for_txs" if self._idle_wait is not None else "new_height"
        pv = core.vote_set(r, PREVOTE) if started else None
        pc = core.vote_set(r, PRECOMMIT) if started else None
        return {
            "height": self.height,
            "round": r,
            "step": step,
            "proposer": self.schedule.proposer(self.height, r).public_key,
            "locked_round": core.locked_round if started else -1,
            "valid_round": core.valid_round if started else -1,
            "votes": {"prevote": len(pv) if pv else 0, "precommit": len(pc) if pc else 0},
            "vote_power": {"prevote": pv.total if pv else 0, "precommit": pc.total if pc else 0},
            "validators": len(vs),
            "total_power": vs.total_power,
            "is_validator": self.key is not None and self.key.public_key in vs,
            "evidence": len(self.evidence),
            "mode": "bft",
        }

    async def wait_for_height(self, height: int) -> None:
        """Return once the chain head is at ``height`` or above (wrap it in trio.fail_after)."""
        while self.chain.head.height < height:
            ev = trio.Event()
            self._height_waiters.append(ev)
            await ev.wait()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true, re-checking after every event the engine handles (no
        polling; wrap it in trio.fail_after)."""
        while not predicate():
            await self._changed.wait()

    async def submit_block(self, block: Block, commit: Commit) -> bool:
        """Hand over a block fetched by sync (with the commit that finalized it). It is checked (commit
        against the validator set, full re-execution) and committed in the receive loop. Returns False if
        the engine already has that height; raises for a gap or an invalid block/commit."""
        if self._send is None:
            raise RuntimeError("engine is not running")
        done = trio.Event()
        box: list[Any] = []
        await self._send.send(("sync", block, commit, done, box))
        await done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return bool(box[0])

    # lifecycle ----------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        send, recv = trio.open_memory_channel[tuple](EVENT_QUEUE)
        self._send = send
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._pump)
                nursery.start_soon(self._ticker)
                await self._boot()
                task_status.started()
                async for ev in recv:
                    await self._handle(ev)
                    changed, self._changed = self._changed, trio.Event()
                    changed.set()
        except BaseExceptionGroup as group:
            fatal = fatal_write_error(group)
            if fatal is None:
                raise
            raise fatal from None  # the engine stops on a failed write: the caller sees the typed error
        finally:
            self._send = None
            self._nursery = None
            self._timers.clear()

    async def _pump(self) -> None:
        if self._send is None:
            raise InvariantError("consensus engine not started")
        async for peer, msg in self.transport.incoming:
            await self._send.send(("msg", peer, msg))

    async def _ticker(self) -> None:
        if self._send is None:
            raise InvariantError("consensus engine not started")
        while True:
            await trio.sleep(self.rebroadcast_s)
            await self._send.send(("tick",))

    async def _boot(self) -> None:
        h = self.chain.head.height + 1
        self.height = h
        entries = [e for e in self.wal.replay() if e.height == h and e.kind != "end"]
        if entries:
            await self._replay(h, entries)
        else:
            self._schedule_start(h)

    async def _replay(self, h: int, entries: list[WalEntry]) -> None:
        log.info("height %d: replaying %d WAL records", h, len(entries))
        self._started = True
        for e in entries:
            if e.kind == "timer":
                self._deadlines[(e.timeout, h, e.round)] = e.deadline_ms
            elif e.kind == "timeout":
                self._served.add((e.timeout, h, e.round))
            elif e.own and e.message is not None:
                self._presign(e.message)
        actions: list[Action] = self.core.start_height(h, self.schedule.validators(h), self._proposer_of(h))
        own: list[Proposal | Vote] = []
        for e in entries:
            try:
                if e.kind == "proposal":
                    p = e.message
                    if not isinstance(p, Proposal):
                        raise InvariantError("WAL proposal record without a proposal")
                    self._validity.setdefault(p.block.hash, e.valid)
                    if self.core.wants_proposal(p):
                        actions += self.core.on_proposal(p, e.valid)
                elif e.kind == "vote":
                    v = e.message
                    if not isinstance(v, Vote):
                        raise InvariantError("WAL vote record without a vote")
                    if not self.core.has_vote(v):
                        actions += self.core.on_vote(v)
                elif e.kind == "timeout":
                    actions += self.core.on_timeout(e.timeout, e.height, e.round)
                elif e.kind == "round":
                    actions += self.core.enter_round(e.round)
            except MessageRejected as exc:
                log.debug("WAL replay: record refused (%s)", exc)
            if e.own and e.message is not None:
                own.append(e.message)
                self._replay_own.add(e.message.encode())
        actions += self._align_with_sign_state(h)
        await self._execute(actions, replay=True)
        for m in own:
            await self._broadcast(m)
        self._replay_own.clear()
        summary = self.core.summary()
        log.info(
            "height %d: replay done at round %d step %s (locked round %d)",
            h, summary["round"], summary["step"], summary["locked_round"],
        )
        await self._leave_refused_round()
        await self._drain_future()

    def _presign(self, msg: Proposal | Vote) -> None:
        """Remember one of this validator's messages from the WAL (see ``_presigned``)."""
        if self.key is None:
            return
        if isinstance(msg, Proposal):
            if msg.proposer == self.key.public_key:
                self._presigned[(KIND_PROPOSAL, msg.height, msg.round, STEP_PROPOSE)] = (msg.sign_bytes(), msg.sig)
        elif msg.validator == self.key.public_key:
            step = STEP_PREVOTE if msg.type == PREVOTE else STEP_PRECOMMIT
            self._presigned[(KIND_VOTE, msg.height, msg.round, step)] = (msg.sign_bytes(), msg.sig)

    def _align_with_sign_state(self, h: int) -> list[Action]:
        """A restarted validator whose sign state is at a later round of ``h`` than the core (the WAL lost
        records, or was lost): resume in that round — it cannot sign anything in the rounds before."""
        ss, core = self.sign_state, self.core
        if ss is None or ss.last.height != h or ss.last.round <= core.round or core.decision is not None:
            return []
        log.warning(
            "height %d: the sign state shows round %d was reached before the restart (the WAL restored round"
            " %d): resuming in round %d", h, ss.last.round, core.round, ss.last.round,
        )
        self.wal.append_round(h, ss.last.round)
        return core.enter_round(ss.last.round)

    async def _leave_refused_round(self) -> None:
        """The signer refused in the current round (this validator signed something for it that the WAL
        lost): move to the next round, recorded in the WAL so a replay moves too."""
        core = self.core
        if not self._started or core.refused_round is None or core.refused_round != core.round:
            return
        if core.decision is not None or core.height != self.height:
            return
        self.wal.append_round(self.height, core.round + 1)
        await self._execute(core.leave_refused_round())

    # events -------------------------------------------------------------------------------------
    async def _emit(self, ev: tuple) -> None:
        if self._send is not None:
            await self._send.send(ev)

    async def _handle(self, ev: tuple) -> None:
        kind = ev[0]
        if kind == "msg":
            await self._on_message(ev[1], ev[2])
        elif kind == "timeout":
            await self._on_timeout(ev[1], ev[2], ev[3])
        elif kind == "validated":
            await self._on_validated(ev[1], ev[2], ev[3])
        elif kind == "built":
            await self._on_built(ev[1], ev[2], ev[3])
        elif kind == "start":
            await self._on_start(ev[1], force=ev[2])
        elif kind == "tick":
            await self._on_tick()
        elif kind == "sync":
            await self._on_sync(ev[1], ev[2], ev[3], ev[4])
        await self._leave_refused_round()

    def _proposer_of(self, h: int) -> Callable[[int], bytes]:
        schedule = self.schedule

        def proposer(r: int) -> bytes:
            return schedule.proposer(h, r).public_key

        return proposer

    def _reject(self, peer: str, exc: AitbcError) -> None:
        self.rejected[exc.reason] += 1
        log.debug("rejected message from %s: %s (%s)", peer, exc, exc.reason)
        if exc.reason in PENALISED:
            try:
                self.transport.report_peer(peer, exc.reason)
            except FatalWriteError:
                raise
            except Exception:  # a transport bug must not stop consensus
                log.exception("report_peer failed")

    # messages -----------------------------------------------------------------------------------
    async def _on_message(self, peer: str, msg: ConsensusMessage) -> None:
        if isinstance(msg, DuplicateVote):
            await self._on_remote_evidence(peer, msg)
            return
        if not isinstance(msg, Proposal | Vote):
            return
        if msg.height < self.height:
            if isinstance(msg, Vote) and msg.height == self.height - 1:
                self._on_late_precommit(msg)
            self.stats["old"] += 1
            return
        if msg.height > self.height or not self._started:
            self._buffer_future(peer, msg)
            return
        if isinstance(msg, Vote):
            await self._on_vote(peer, msg)
        else:
            await self._on_proposal(peer, msg)

    def _on_late_precommit(self, vote: Vote) -> None:
        lc = self._last_commit
        if (
            lc is None
            or vote.type != PRECOMMIT
            or vote.height != lc.height
            or vote.round != lc.round
            or vote.block_hash != lc.block_hash
            or vote.validator in self._late_sigs
            or any(s.validator == vote.validator for s in lc.signatures)
            or vote.validator not in self.schedule.validators(lc.height)
            or not vote.verify(self.chain_id)
        ):
            return
        self._late_sigs[vote.validator] = vote.sig

    def _commit_for_proposal(self, h: int) -> Commit | None:
        """The previous height's commit, topped up with late precommits for the same block and round."""
        stored = self.chain.commit_at(h - 1) if h > 1 else None
        if stored is None or not self._late_sigs:
            return stored
        lc = self._last_commit
        if lc is None or lc.height != stored.height or lc.block_hash != stored.block_hash or lc.round != stored.round:
            return stored
        have = {s.validator for s in stored.signatures}
        extra = [CommitSig(v, sig) for v, sig in self._late_sigs.items() if v not in have]
        return Commit(stored.height, stored.round, stored.block_hash, stored.signatures + tuple(extra))

    def _buffer_future(self, peer: str, msg: Proposal | Vote) -> None:
        if msg.height > self.height + 1:
            self._maybe_behind(msg)
            return
        key: Any = msg if isinstance(msg, Vote) else ("p", msg.height, msg.round, msg.block.hash, msg.sig)
        if key in self._future:
            return
        if len(self._future) >= self.params.future_buffer:
            self.stats["future_dropped"] += 1
            return
        self._future[key] = (peer, msg)
        if msg.height == self.height and self._idle_wait == self.height and self._send is not None:
            try:  # peers started this height: start it too
                self._send.send_nowait(("start", self.height, True))
            except trio.WouldBlock:
                pass

    async def _drain_future(self) -> None:
        items = [(k, v) for k, v in self._future.items() if v[1].height <= self.height]
        for k, _ in items:
            del self._future[k]
        for _, (peer, msg) in items:
            await self._on_message(peer, msg)

    def _maybe_behind(self, msg: Proposal | Vote) -> None:
        """A signed message from a member of the set, for a height beyond the next: we are behind."""
        target = msg.height
        last_target, last_at = self._behind_reported
        now = trio.current_time()
        if target <= last_target and now - last_at < self.params.behind_repeat_s:
            return
        signer = msg.validator if isinstance(msg, Vote) else msg.proposer
        if signer not in self.schedule.validators(target) or not msg.verify(self.chain_id):
            return
        self._signal_behind(target)

    def _signal_behind(self, target: int) -> None:
        last_target, last_at = self._behind_reported
        now = trio.current_time()
        if target <= last_target and now - last_at < self.params.behind_repeat_s:
            return
        self._behind_reported = (max(target, last_target), now)
        self.stats["behind"] += 1
        log.info("behind: peers are at height %d, this node at %d", target, self.height)
        if self.on_behind is not None:
            try:
                self.on_behind(target)
            except FatalWriteError:
                raise
            except Exception:
                log.exception("on_behind callback failed")

    async def _on_vote(self, peer: str, vote: Vote) -> None:
        core = self.core
        if core.has_vote(vote):
            return
        try:
            actions = core.on_vote(vote)
        except VoteRejected as exc:
            if exc.reason == "unknown_validator" and vote.height > 1 and vote.validator in self.schedule.validators(
                vote.height - 1
            ):
                self.rejected["removed_validator"] += 1  # left the set at an epoch change: not an offence
                return
            self._reject(peer, exc)
            return
        if core.has_vote(vote):
            self.wal.append_vote(vote)
        await self._execute(actions)

    async def _on_proposal(self, peer: str, p: Proposal) -> None:
        core = self.core
        if not core.wants_proposal(p):
            return
        try:
            core.check_proposal(p)
        except ProposalRejected as exc:
            self._reject(peer, exc)
            return
        bh = p.block.hash
        if bh in self._validity:
            await self._feed_proposal(p, self._validity[bh])
            return
        waiting = self._validating.get(bh)
        if waiting is not None:
            if len(waiting) < 8:
                waiting.append(p)
            return
        self._validating[bh] = [p]
        if self._nursery is None:
            raise InvariantError("consensus engine not started")
        self._nursery.start_soon(self._validate_task, self.height, p.block)

    async def _feed_proposal(self, p: Proposal, valid: bool) -> None:
        core = self.core
        if not core.wants_proposal(p):
            return
        try:
            actions = core.on_proposal(p, valid)
        except ProposalRejected as exc:
            log.debug("proposal for round %d refused: %s", p.round, exc)
            return
        if core.proposal(p.round) is p or core.proposal_for_block(p.block.hash) is p:
            self.wal.append_proposal(p, valid=valid)
        await self._execute(actions)

    # block validation and building ----------------------------------------------------------------
    def _sets(self, h: int) -> tuple[ValidatorSet, ValidatorSet, ValidatorSet | None]:
        s = self.schedule
        return s.validators(h), s.validators(h + 1), (s.validators(h - 1) if h > 1 else None)

    def _mempool_has(self, block: Block) -> frozenset[bytes]:
        mp = self.mempool
        if mp is None:
            return frozenset()
        return frozenset(t.hash for t in block.txs if t.hash in mp)

    def _check_block(
        self,
        block: Block,
        sets: tuple[ValidatorSet, ValidatorSet, ValidatorSet | None],
        verified: frozenset[bytes],
        now_ms: int | None,
    ) -> PendingBlock:
        """Everything about a proposed block that the chain does not check (it needs the validator set),
        then the chain's own validation (re-execution). Runs in a worker thread."""
        vs, vs_next, vs_prev = sets
        hdr = block.header
        if hdr.validators_hash != vs.hash:
            raise BlockError("validators_hash is not the hash of this height's validator set")
        if hdr.next_validators_hash != vs_next.hash:
            raise BlockError("next_validators_hash is not the hash of the next height's validator set")
        if hdr.proposer not in vs:
            raise BlockError("block proposer is not a validator")
        if now_ms is not None and hdr.time > now_ms + self.params.max_block_time_drift_ms:
            raise BlockError("block time is too far in the future")
        if hdr.height > 1:
            if block.last_commit is None or vs_prev is None:
                raise BlockError("block above height 1 must carry the previous height's commit")
            vs_prev.verify_commit(self.chain_id, block.last_commit, hdr.prev_hash, hdr.height - 1)
        return self.chain.validate_block(block, is_verified=lambda tx: tx.hash in verified)

    async def _validate_task(self, height: int, block: Block) -> None:
        sets = self._sets(height)
        verified = self._mempool_has(block)
        now = self.now_ms()
        pending: PendingBlock | None = None
        try:
            pending = await self.offload(self._check_block, block, sets, verified, now)
        except FatalWriteError:
            raise
        except AitbcError as exc:
            log.info("height %d: proposed block %s is invalid: %s", height, block.hash.hex()[:16], exc)
        except Exception:
            log.exception("height %d: validating block %s failed", height, block.hash.hex()[:16])
        await self._emit(("validated", height, block.hash, pending))

    async def _on_validated(self, height: int, bh: bytes, pending: PendingBlock | None) -> None:
        if height != self.height:
            return
        waiting = self._validating.pop(bh, [])
        valid = pending is not None
        self._validity[bh] = valid
        if pending is not None:
            self._pending[bh] = pending
        for p in waiting:
            await self._feed_proposal(p, valid)

    def _request_block(self, h: int, r: int) -> None:
        if self.core.awaiting_block != (h, r) or self._building == (h, r) or self.key is None:
            return
        self._building = (h, r)
        cp = self.chain.params
        txs = self.mempool.reap(cp.max_block_txs, cp.max_block_bytes) if self.mempool is not None else []
        if self._nursery is None:
            raise InvariantError("consensus engine not started")
        self._nursery.start_soon(self._build_task, h, r, txs)

    def _build_sync(self, h: int, txs: list, verified: frozenset[bytes], now: int, vh: bytes, nvh: bytes) -> PendingBlock:
        if self.key is None:
            raise InvariantError("building a block without a validator key")
        last_commit = self._commit_for_proposal(h)
        evidence = [ev.encode() for ev in list(self.evidence.values())[:MAX_EVIDENCE_PER_BLOCK]]
        t0 = time.perf_counter()
        pending = self.chain.build_block(
            txs,
            proposer=self.key.public_key,
            time_ms=now,
            last_commit=last_commit,
            validators_hash=vh,
            next_validators_hash=nvh,
            is_verified=lambda tx: tx.hash in verified,
            evidence=evidence,
        )
        pending.build_seconds = time.perf_counter() - t0
        return pending

    async def _build_task(self, h: int, r: int, txs: list) -> None:
        verified = frozenset(t.hash for t in txs)  # the mempool admits only signature-checked txs
        vs, vs_next, _ = self._sets(h)
        pending: PendingBlock | None = None
        try:
            pending = await self.offload(self._build_sync, h, txs, verified, self.now_ms(), vs.hash, vs_next.hash)
        except FatalWriteError:
            raise
        except Exception:
            log.exception("height %d round %d: building a block failed", h, r)
        await self._emit(("built", h, r, pending))

    async def _on_built(self, h: int, r: int, pending: PendingBlock | None) -> None:
        if self._building == (h, r):
            self._building = None
        if pending is None or h != self.height or self.core.awaiting_block != (h, r):
            return
        if pending.block.header.prev_hash != self.chain.head.hash:
            return
        self._drop_refused_evidence(pending, h)
        bh = pending.block.hash
        self._pending[bh] = pending
        self._validity[bh] = True
        await self._execute(self.core.on_own_block(pending.block))

    def _drop_refused_evidence(self, pending: PendingBlock, h: int) -> None:
        """Evidence the rules left out of our block although it is from an earlier height was refused for
        good (already punished, not a member, too old): stop offering it."""
        included = {sha256(raw) for raw in pending.block.evidence}
        for key, ev in list(self.evidence.items())[:MAX_EVIDENCE_PER_BLOCK]:
            if key not in included and ev.height < h - 1:
                del self.evidence[key]

    # timeouts -----------------------------------------------------------------------------------
    def _schedule_timeout(self, a: ScheduleTimeout) -> None:
        """Arm a timeout of the current round. Its wall-clock deadline goes to the WAL when first armed;
        armed again after a restart, it waits only for what is left until that deadline (bounded by
        its full length if the clock jumped) — a timeout that fired before the restart is not armed."""
        core = self.core
        if (a.height, a.round) != (core.height, core.round) or core.decision is not None:
            return
        key = (a.kind, a.height, a.round)
        if key in self._timers or key in self._served or self._nursery is None:
            return
        now = self.now_ms()
        deadline = self._deadlines.get(key)
        if deadline is None:
            deadline = self._deadlines[key] = now + a.ms
            self.wal.append_timer(a.kind, a.height, a.round, deadline)
        delay_ms = min(max(deadline - now, 0), a.ms)
        scope = trio.CancelScope()
        self._timers[key] = scope
        self._nursery.start_soon(self._timer, scope, key, delay_ms / 1000)

    async def _timer(self, scope: trio.CancelScope, key: tuple[str, int, int], seconds: float) -> None:
        with scope:
            await trio.sleep(seconds)
            await self._emit(("timeout", *key))

    def _cancel_stale_timers(self) -> None:
        core = self.core
        live = (core.height, core.round) if core.decision is None and self._started else None
        for key in [k for k in self._timers if (k[1], k[2]) != live]:
            self._timers.pop(key).cancel()

    async def _on_timeout(self, kind: str, h: int, r: int) -> None:
        self._timers.pop((kind, h, r), None)
        core = self.core
        if not self._started or (h, r) != (core.height, core.round) or core.decision is not None:
            return
        self._served.add((kind, h, r))
        before = (core.round, core.step)
        actions = core.on_timeout(kind, h, r)
        if (core.round, core.step) != before:
            self.wal.append_timeout(kind, h, r)
        await self._execute(actions)

    # actions ------------------------------------------------------------------------------------
    async def _execute(self, actions: list[Action], *, replay: bool = False) -> None:
        for a in actions:
            if isinstance(a, Broadcast):
                await self._send_own(a.msg, replay=replay)
            elif isinstance(a, ScheduleTimeout):
                self._schedule_timeout(a)
            elif isinstance(a, RequestBlock):
                self._request_block(a.height, a.round)
            elif isinstance(a, Decide):
                await self._decide(a.block, a.commit)
            elif isinstance(a, EvidenceFound):
                await self._add_evidence(a.evidence, broadcast=True)
            elif isinstance(a, MissingBlock):
                log.warning(
                    "height %d: 2/3+ precommitted block %s in round %d, which this node does not have",
                    a.height, a.block_hash.hex()[:16], a.round,
                )
                self._signal_behind(a.height + 1)
        self._cancel_stale_timers()

    async def _broadcast(self, msg: ConsensusMessage) -> None:
        try:
            if isinstance(msg, Vote):
                await self.transport.broadcast_vote(msg)
            elif isinstance(msg, Proposal):
                await self.transport.broadcast_proposal(msg)
            else:
                await self.transport.broadcast_evidence(msg)
        except FatalWriteError:
            raise
        except Exception:  # the network failing must not stop consensus; rebroadcast retries
            log.exception("broadcast failed")

    async def _send_own(self, msg: Proposal | Vote, *, replay: bool = False) -> None:
        if not (replay and msg.encode() in self._replay_own):
            self.wal.append_message(msg, own=True)  # synced before it leaves this node
        await self.publish_own(msg)

    async def publish_own(self, msg: Proposal | Vote) -> None:
        """Send one of this validator's own signed proposals or votes (already in the WAL) to the network.

        The single path by which the engine's own messages leave it (re-broadcasts of messages sent
        before go through ``_broadcast`` directly). A subclass may wrap it to observe or alter what this
        validator sends — test tooling does (``testnet/faults.py``: a validator that double-signs)."""
        await self._broadcast(msg)

    async def _add_evidence(self, ev: DuplicateVote, *, broadcast: bool) -> None:
        key = ev.hash()
        if key in self.evidence:
            return
        self.evidence[key] = ev
        while len(self.evidence) > MAX_EVIDENCE_KEPT:
            self.evidence.popitem(last=False)
        log.warning(
            "evidence: validator %s double-signed at height %d round %d",
            ev.validator.hex()[:16], ev.height, ev.round,
        )
        for fn in list(self._evidence_listeners):
            try:
                fn(ev)
            except FatalWriteError:
                raise
            except Exception:
                log.exception("evidence listener failed")
        if broadcast:
            await self._broadcast(ev)

    async def _on_remote_evidence(self, peer: str, ev: DuplicateVote) -> None:
        if ev.hash() in self.evidence:
            return
        try:
            ev.verify(self.chain_id, self.schedule.validators(ev.height))
        except EvidenceError as exc:
            self._reject(peer, exc)
            return
        await self._add_evidence(ev, broadcast=False)

    # commit -------------------------------------------------------------------------------------
    async def _decide(self, block: Block, commit: Commit) -> None:
        h = block.height
        if h != self.height or h != self.chain.head.height + 1:
            log.error("decision for height %d while at %d (head %d): ignored", h, self.height, self.chain.head.height)
            return
        self.schedule.validators(h).verify_commit(self.chain_id, commit, block.hash, h)
        pending = self._pending.get(block.hash)
        if pending is None or pending.block.header.prev_hash != self.chain.head.hash:
            try:
                pending = await self.offload(self._check_block, block, self._sets(h), self._mempool_has(block), None)
            except AitbcError as exc:
                log.critical("height %d: 2/3+ of the validators decided a block this node finds invalid: %s", h, exc)
                self._signal_behind(h + 1)
                return
        self._last_decision = self.core.decision_messages()
        await self._finalize(pending, commit)

    async def _finalize(self, pending: PendingBlock, commit: Commit) -> None:
        h = pending.block.height
        t0 = time.perf_counter()
        await self.offload(self.chain.commit, pending, commit)
        pending.commit_seconds = time.perf_counter() - t0
        upd = pending.outcome.valset_update
        if upd is not None:
            from_height, vals = upd
            self.schedule.set_validators(from_height, ValidatorSet([Validator(pk, p) for pk, p in vals]))
            log.info("validator set changes at height %d: %d validators", from_height, len(vals))
        for raw in pending.block.evidence:  # included: no need to propose it again
            self.evidence.pop(sha256(raw), None)
        max_age = self.chain.params.staking.max_evidence_age
        for key, ev in list(self.evidence.items()):  # too old to be admitted any more
            if ev.height + max_age < h:
                del self.evidence[key]
        self._last_commit = commit
        self._late_sigs = {}
        self.wal.end_height(h)
        self.decided_rounds[h] = commit.round
        if len(self.decided_rounds) > 1000:
            self.decided_rounds.pop(next(iter(self.decided_rounds)))
        self.stats["committed"] += 1
        log.debug("height %d committed in round %d (%s)", h, commit.round, pending.block.hash.hex()[:16])
        await self.on_commit(pending, commit)
        waiters, self._height_waiters = self._height_waiters, []
        for ev in waiters:
            ev.set()
        self._enter_height(h + 1)

    def _enter_height(self, h: int) -> None:
        self.height = h
        self._started = False
        self._deadlines.clear()
        self._served.clear()
        self._presigned.clear()
        self._pending.clear()
        self._validity.clear()
        self._validating.clear()
        self._building = None
        for scope in self._timers.values():
            scope.cancel()
        self._timers.clear()
        self._schedule_start(h)

    def _schedule_start(self, h: int) -> None:
        interval = self.chain.params.block_interval_ms
        wait_ms = self.chain.head.time + interval - self.now_ms()
        delay = min(max(wait_ms, 0), interval) / 1000  # bounded: a clock jump never stalls the chain
        if self._nursery is None:
            raise InvariantError("consensus engine not started")
        self._nursery.start_soon(self._start_later, h, delay)

    async def _start_later(self, h: int, delay: float) -> None:
        if delay > 0:
            await trio.sleep(delay)
        await self._emit(("start", h, False))

    async def _on_start(self, h: int, *, force: bool) -> None:
        if h != self.height or self._started:
            return
        cp = self.chain.params
        if (
            not cp.create_empty_blocks
            and not force
            and (self.mempool is None or len(self.mempool) == 0)
            and not any(m.height == h for _, m in self._future.values())
        ):
            if self._idle_wait != h:
                self._idle_wait = h
                if self._nursery is None:
                    raise InvariantError("consensus engine not started")
                self._nursery.start_soon(self._heartbeat, h)
            return
        await self._start_core(h)

    async def _heartbeat(self, h: int) -> None:
        await trio.sleep(self.params.empty_block_heartbeat_ms / 1000)
        await self._emit(("start", h, True))

    async def _start_core(self, h: int) -> None:
        self._idle_wait = None
        self._started = True
        actions = self.core.start_height(h, self.schedule.validators(h), self._proposer_of(h))
        actions += self._align_with_sign_state(h)
        await self._execute(actions)
        await self._drain_future()

    async def _on_sync(self, block: Block, commit: Commit, done: trio.Event, box: list) -> None:
        try:
            h = block.height
            if h < self.height:
                box.append(False)
                return
            if h > self.height:
                raise ValueError(f"submit blocks in order: expected height {self.height}, got {h}")
            self.schedule.validators(h).verify_commit(self.chain_id, commit, block.hash, h)
            pending = await self.offload(self._check_block, block, self._sets(h), self._mempool_has(block), None)
            if h != self.height:  # decided meanwhile by consensus
                box.append(False)
                return
            self._last_decision = [
                Vote(h, commit.round, PRECOMMIT, commit.block_hash, s.validator, s.sig) for s in commit.signatures
            ]
            await self._finalize(pending, commit)
            box.append(True)
        except FatalWriteError as exc:  # the caller learns it, and the engine stops
            box.append(exc)
            raise
        except Exception as exc:
            box.append(exc)
        finally:
            done.set()

    # progress watchdog ----------------------------------------------------------------------------
    async def _on_tick(self) -> None:
        core = self.core
        marker = (self.height, self._started, core.height, core.round, core.step)
        if marker != self._last_marker:
            self._last_marker = marker
            return
        msgs: list[Proposal | Vote] = []
        if self._started and core.height == self.height and core.step != Step.DECIDED:
            msgs.extend(core.gossip_messages())
        msgs.extend(self._last_decision)
        if msgs:
            self.stats["rebroadcasts"] += 1
            for m in msgs:
                await self._broadcast(m)


__all__ = ["BftEngine", "BftParams", "OnCommit", "OnBehind", "PENALISED", "fatal_write_error"]
