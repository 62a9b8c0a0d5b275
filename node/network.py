"""The node's use of the p2p layer: consensus messages and batched transactions over gossipsub.

- :class:`P2PConsensusTransport` implements :class:`consensus.transport.ConsensusTransport` on the
  ``block`` (proposals), ``vote`` and ``evidence`` topics. Each message travels in an envelope
  ``[message, send-nonce]``: gossipsub drops content it has seen in the last two minutes, and the
  engine's re-broadcasts of the same vote (to reach peers that reconnected) must not be swallowed.
  Broadcasts never block the engine: they go through a bounded queue drained by a sender task.
- The gossip validator (:meth:`P2PConsensusTransport.judge`) decides before anything is forwarded:

  1. size: the topics are bounded from genesis (``block``: ``max_block_bytes`` plus room for header,
     commit and evidence; ``vote``/``evidence``: their types' bounds) and registered ``strict``: every
     honest node applies the same bound, so a peer forwarding an oversized message is banned;
  2. envelope: exactly ``[bytes, uint]`` in canonical CBOR, else the forwarder is banned;
  3. duplicates: the inner signed message is forwarded at most once per ``dedupe_s`` (a little less
     than the engine's re-broadcast interval, so honest re-broadcasts still travel), whatever the
     envelope: a re-enveloped copy is ignored (not forwarded, not delivered, no penalty);
  4. strict decode and signature (proposals over ``OFFLOAD_BYTES`` are decoded and verified in a worker
     thread); failure bans the forwarder;
  5. votes and proposals: only for heights ``[H - PAST_HEIGHTS, H + FUTURE_HEIGHTS]`` around the height
     H the engine decides (others are ignored: this node cannot judge them; a validly signed one of a
     member from further ahead starts block sync, as the engine's own check did), and only from a member of the validator set of their height. A non-member of a
     height whose set is final here (H or below, or any height on a PoA chain) gets the forwarder banned
     — unless it was a member of one of the two heights before (it left the set at an epoch change, as
     the engine treats it); for later heights on a staked chain the set may still change: ignored.

  The decoded object is kept (keyed by the data's hash) so the engine does not decode it twice.
- :class:`TxGossip` batches transactions accepted from local clients into one ``tx`` message every
  ``flush_interval`` (or when a batch is full), and feeds batches from peers into the mempool through
  the node's normal submission path (decode, signature check in worker threads, mempool rules).
  Transactions received from gossip are not re-published: gossipsub itself forwards the batch.
- :func:`p2p_config` builds the p2p layer's configuration from the ``[p2p]`` section.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Container, Sequence
from typing import Any, Protocol

import trio

from consensus.bft import Proposal
from consensus.evidence import MAX_EVIDENCE_BYTES, DuplicateVote
from consensus.transport import (
    KIND_EVIDENCE_MSG,
    KIND_PROPOSAL_MSG,
    KIND_VOTE_MSG,
    ConsensusMessage,
    Incoming,
    decode_message,
)
from p2p.batch import GossipBatcher, decode_batch
from p2p.config import P2PConfig
from p2p.gossip_validation import Verdict
from state import codec
from state.codec import sha256
from state.errors import DecodeError
from state.types import MAX_VOTE_BYTES, Vote

log = logging.getLogger("aitbc.net")

# consensus message kind -> gossip topic kind (DESIGN §4: proposals travel on the block topic)
TOPIC_OF = {KIND_PROPOSAL_MSG: "block", KIND_VOTE_MSG: "vote", KIND_EVIDENCE_MSG: "evidence"}
MAX_TX_BATCH = 5_000
TX_BATCH_MAX_BYTES = 8 << 20
TX_PENALTY = 5.0
ENVELOPE_OVERHEAD = 64  # CBOR list + byte-string header + nonce
PAST_HEIGHTS = 1  # votes of H-1 still matter (late precommits, peers one height behind)
FUTURE_HEIGHTS = 2  # H+1 is buffered by the engine, H+2 tells it that it is behind
OFFLOAD_BYTES = 64 << 10  # larger messages are decoded (and verified) in a worker thread
DEDUPE_MAX = 65_536  # inner messages remembered for duplicate suppression
DEFAULT_DEDUPE_S = 2.0  # without an engine to take the re-broadcast interval from
BEHIND_REPEAT_S = 1.0  # behind() at most this often, unless the height moved BEHIND_STEP further
BEHIND_STEP = 16


def consensus_topic_bounds(max_block_bytes: int, max_block_txs: int = 20_000) -> dict[str, int]:
    """Upper bounds (bytes) of one enveloped message per consensus topic, from the genesis params: a
    proposal carries a block of at most ``max_block_bytes`` of transactions plus per-transaction CBOR
    framing, header, last commit and evidence."""
    return {
        "block": max_block_bytes + 8 * max_block_txs + (1 << 20),
        "vote": MAX_VOTE_BYTES + ENVELOPE_OVERHEAD,
        "evidence": MAX_EVIDENCE_BYTES + ENVELOPE_OVERHEAD,
    }


def _open_envelope(data: bytes, max_bytes: int = 40 << 20) -> bytes:
    obj = codec.decode(data, max_bytes=max_bytes)
    if type(obj) is not list or len(obj) != 2 or type(obj[0]) is not bytes or type(obj[1]) is not int:
        raise DecodeError("consensus envelope must be [message, nonce]")
    return obj[0]


class ConsensusView(Protocol):
    """What the gossip validator needs to know about consensus (``BftEngine`` through :class:`EngineView`)."""

    def height(self) -> int | None:
        """The height being decided; None while consensus is not running (everything is ignored)."""
        ...

    def validators(self, height: int) -> Container[bytes]:
        """Public keys of the validator set of ``height`` (the latest installed set for later heights)."""
        ...


class EngineView:
    """:class:`ConsensusView` of ``node.engine`` (created after the transport, so looked up each time)."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def height(self) -> int | None:
        engine = getattr(self.node, "engine", None)
        return None if engine is None else engine.height

    def validators(self, height: int) -> Container[bytes]:
        return self.node.engine.schedule.validators(height)

    def rebroadcast_s(self) -> float | None:
        engine = getattr(self.node, "engine", None)
        return None if engine is None else float(engine.rebroadcast_s)

    def behind(self, height: int) -> None:
        """A validator signed a message for ``height``, beyond the window: catch up by block sync."""
        sync = getattr(self.node, "sync", None)
        if sync is not None:
            sync.behind(height)


def _envelope_digests(data: bytes, max_bytes: int) -> tuple[bytes, bytes, bytes]:
    """(inner message, its sha256, the envelope's sha256); pure, for a worker thread."""
    inner = _open_envelope(data, max_bytes)
    return inner, sha256(inner), sha256(data)


def _signature_ok(msg: ConsensusMessage, chain_id: str) -> bool:
    if isinstance(msg, DuplicateVote):
        return msg.vote_a.verify(chain_id) and msg.vote_b.verify(chain_id)
    return msg.verify(chain_id)


def _decode_and_verify(kind: str, inner: bytes, chain_id: str) -> tuple[ConsensusMessage, bool]:
    """Strict decode (DecodeError) and the signature check; pure, so it may run in a worker thread."""
    msg = decode_message(kind, inner)
    return msg, _signature_ok(msg, chain_id)


class P2PConsensusTransport:
    """ConsensusTransport over a :class:`p2p.service.P2PService` (register before the service runs).

    ``node``: the :class:`node.service.Node` (its genesis gives the topic bounds and whether the set is
    static, its engine the height and validator sets). Without it (``view`` and ``max_block_bytes`` may
    be given directly, e.g. in tests) the membership and height checks need ``view``."""

    def __init__(
        self,
        p2p: Any,
        chain_id: str,
        *,
        node: Any = None,
        view: ConsensusView | None = None,
        max_block_bytes: int | None = None,
        max_block_txs: int = 20_000,
        static_set: bool | None = None,
        dedupe_s: float | None = None,
    ) -> None:
        self.p2p = p2p
        self.chain_id = chain_id
        if node is not None:
            params = node.genesis.params
            view = view if view is not None else EngineView(node)
            max_block_bytes = max_block_bytes if max_block_bytes is not None else params.max_block_bytes
            max_block_txs = params.max_block_txs
            static_set = (node.genesis.consensus == "poa") if static_set is None else static_set
        self.view = view
        self.static_set = bool(static_set)
        self._dedupe_s = dedupe_s
        self._send, self._recv = trio.open_memory_channel[Incoming](4096)
        self._out_send, self._out_recv = trio.open_memory_channel[tuple[str, bytes]](1024)
        self._nonce = time.time_ns()
        self._decoded: OrderedDict[bytes, ConsensusMessage] = OrderedDict()
        self._inner_seen: OrderedDict[bytes, float] = OrderedDict()  # inner message hash -> time
        self.stats: dict[str, int] = {}
        self._behind_reported = (0, 0.0)  # (height, time.monotonic()) of the last behind() signal
        bounds = consensus_topic_bounds(max_block_bytes, max_block_txs) if max_block_bytes else {}
        self._bounds = bounds
        self._subs = {}
        for kind, topic in TOPIC_OF.items():
            p2p.register_topic(
                topic, self._make_validator(kind), bounds.get(topic), require_cbor=False, strict=bool(bounds)
            )
            self._subs[kind] = p2p.subscribe(topic)

    # validation ---------------------------------------------------------------------------------
    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    @property
    def dedupe_s(self) -> float:
        """How long a forwarded inner message is not forwarded again (under any envelope)."""
        if self._dedupe_s is not None:
            return self._dedupe_s
        rb = getattr(self.view, "rebroadcast_s", None)
        interval = rb() if callable(rb) else None
        return 0.9 * interval if interval else DEFAULT_DEDUPE_S

    def _seen_recently(self, h: bytes, now: float) -> bool:
        at = self._inner_seen.get(h)
        return at is not None and now - at < self.dedupe_s

    def _note_inner(self, h: bytes, now: float) -> None:
        self._inner_seen[h] = now
        self._inner_seen.move_to_end(h)
        window = self.dedupe_s
        while self._inner_seen:
            k, t = next(iter(self._inner_seen.items()))
            if len(self._inner_seen) > DEDUPE_MAX or now - t >= window:
                del self._inner_seen[k]
            else:
                break

    def _window_verdict(self, msg: Proposal | Vote) -> tuple[Verdict, str] | None:
        """None if ``msg`` is for a height we judge and signed by a member of its set; else the verdict."""
        view = self.view
        if view is None:
            return None
        current = view.height()
        if current is None:
            return Verdict.IGNORE, "consensus not running"
        h = msg.height
        if not current - PAST_HEIGHTS <= h <= current + FUTURE_HEIGHTS:
            return Verdict.IGNORE, f"height {h} outside the window around {current}"
        signer = msg.validator if isinstance(msg, Vote) else msg.proposer
        if signer in view.validators(h):
            return None
        if h > current and not self.static_set:
            return Verdict.IGNORE, f"not in the set known for height {h} (it may still change)"
        if any(signer in view.validators(x) for x in range(max(1, h - 2), h)):
            return Verdict.IGNORE, f"left the validator set before height {h}"
        return Verdict.BAN, f"signed by a key outside the validator set of height {h}"

    def _maybe_behind(self, msg: Proposal | Vote, sig_ok: bool | None) -> None:
        """A validly signed message of a member for a height beyond the window is not forwarded, but it
        tells this node that it is behind (what the engine's own check did with it before)."""
        behind = getattr(self.view, "behind", None)
        current = self.view.height() if self.view is not None else None
        if behind is None or current is None or msg.height <= current + FUTURE_HEIGHTS:
            return
        signer = msg.validator if isinstance(msg, Vote) else msg.proposer
        now = time.monotonic()
        last_height, last_at = self._behind_reported
        if now - last_at < BEHIND_REPEAT_S and msg.height <= last_height + BEHIND_STEP:
            return
        if signer not in self.view.validators(msg.height):
            return
        if sig_ok is None:
            sig_ok = _signature_ok(msg, self.chain_id)
        if sig_ok:
            self._behind_reported = (max(msg.height, last_height), now)
            log.info("behind: a validator signed for height %d, this node decides %d", msg.height, current)
            behind(msg.height)

    def _settle(self, kind: str, key: bytes, h: bytes, msg: ConsensusMessage, sig_ok: bool | None) -> Any:
        """Verdict on a decoded message (``key``: sha256 of the envelope, ``h``: of the inner message;
        ``sig_ok`` None: not checked yet — checked only when membership and window pass, or when a
        message from far ahead would start block sync)."""
        if isinstance(msg, Proposal | Vote):
            w = self._window_verdict(msg)
            if w is not None:
                self._count(w[0].value)
                if w[0] is Verdict.IGNORE:
                    self._maybe_behind(msg, sig_ok)
                return w
        if sig_ok is None:
            sig_ok = _signature_ok(msg, self.chain_id)
        if not sig_ok:
            self._count("ban")
            return Verdict.BAN, f"{kind}: bad signature"
        now = time.monotonic()
        if self._seen_recently(h, now):  # accepted meanwhile (another envelope validated concurrently)
            self._count("duplicate")
            return Verdict.IGNORE, "duplicate"
        self._note_inner(h, now)
        self._remember(key, msg)
        self._count("accept")
        return Verdict.ACCEPT

    def _bound(self, kind: str) -> int:
        return self._bounds.get(TOPIC_OF[kind], 40 << 20)

    def judge(self, kind: str, origin: str, data: bytes) -> Any:
        """The verdict on one enveloped consensus message, decoded on this thread (small messages)."""
        if origin == getattr(self.p2p, "peer_id", None):
            return Verdict.ACCEPT  # our own broadcast (publish() validates it too)
        try:
            inner = _open_envelope(data, self._bound(kind))
        except DecodeError as exc:
            self._count("ban")
            return Verdict.BAN, f"malformed {kind} envelope: {exc}"
        h = sha256(inner)
        if self._seen_recently(h, time.monotonic()):
            self._count("duplicate")
            return Verdict.IGNORE, "duplicate under a fresh envelope"
        try:
            msg = decode_message(kind, inner)
        except DecodeError as exc:
            self._count("ban")
            return Verdict.BAN, f"undecodable {kind}: {exc}"
        return self._settle(kind, sha256(data), h, msg, None)

    async def judge_async(self, kind: str, origin: str, data: bytes) -> Any:
        """As :meth:`judge`; messages over ``OFFLOAD_BYTES`` are hashed, decoded and verified in worker
        threads (the duplicate check runs in between, on this thread)."""
        if len(data) <= OFFLOAD_BYTES:
            return self.judge(kind, origin, data)
        if origin == getattr(self.p2p, "peer_id", None):
            return Verdict.ACCEPT
        try:
            inner, h, key = await trio.to_thread.run_sync(_envelope_digests, data, self._bound(kind))
        except DecodeError as exc:
            self._count("ban")
            return Verdict.BAN, f"malformed {kind} envelope: {exc}"
        if self._seen_recently(h, time.monotonic()):
            self._count("duplicate")
            return Verdict.IGNORE, "duplicate under a fresh envelope"
        try:
            msg, sig_ok = await trio.to_thread.run_sync(_decode_and_verify, kind, inner, self.chain_id)
        except DecodeError as exc:
            self._count("ban")
            return Verdict.BAN, f"undecodable {kind}: {exc}"
        return self._settle(kind, key, h, msg, sig_ok)

    def _make_validator(self, kind: str) -> Callable[[str, bytes], Any]:
        if kind == KIND_PROPOSAL_MSG:

            async def validate_proposal(peer_id: str, data: bytes) -> Any:
                return await self.judge_async(kind, peer_id, data)

            return validate_proposal

        def validate(peer_id: str, data: bytes) -> Any:
            return self.judge(kind, peer_id, data)

        return validate

    def _remember(self, key: bytes, msg: ConsensusMessage) -> None:
        self._decoded[key] = msg
        if len(self._decoded) > 512:
            self._decoded.popitem(last=False)

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for kind, channel in self._subs.items():
                nursery.start_soon(self._pump, kind, channel)
            nursery.start_soon(self._sender)
            task_status.started()

    async def _sender(self) -> None:
        async for topic, payload in self._out_recv:
            try:
                await self.p2p.publish(topic, payload)
            except Exception as exc:  # not running yet / stopping, or no peers: the engine re-sends
                log.debug("publish on %s failed: %s", topic, exc)

    def _enqueue(self, topic: str, message_bytes: bytes) -> None:
        self._nonce += 1
        # a peer echoing our own message back under a fresh envelope is not forwarded either
        self._note_inner(sha256(message_bytes), time.monotonic())
        try:
            self._out_send.send_nowait((topic, codec.encode([message_bytes, self._nonce])))
        except trio.WouldBlock:
            log.warning("consensus send queue full: dropping a %s message (the engine re-sends)", topic)

    async def _pump(self, kind: str, channel: trio.MemoryReceiveChannel) -> None:
        async for peer_id, data in channel:
            big = len(data) > OFFLOAD_BYTES
            key = await trio.to_thread.run_sync(sha256, data) if big else sha256(data)
            msg = self._decoded.pop(key, None)
            if msg is None:  # (evicted from the cache meanwhile)
                try:
                    raw = _open_envelope(data)
                    msg = await trio.to_thread.run_sync(decode_message, kind, raw) if big else decode_message(kind, raw)
                except DecodeError:
                    continue
            await self._send.send((peer_id, msg))

    # ConsensusTransport -------------------------------------------------------------------------
    @property
    def incoming(self) -> trio.MemoryReceiveChannel[Incoming]:
        return self._recv

    async def broadcast_proposal(self, proposal: Proposal) -> None:
        self._enqueue("block", proposal.encode())

    async def broadcast_vote(self, vote: Vote) -> None:
        self._enqueue("vote", vote.encode())

    async def broadcast_evidence(self, evidence: DuplicateVote) -> None:
        self._enqueue("evidence", evidence.encode())

    def report_peer(self, peer_id: str, reason: str) -> None:
        try:
            self.p2p.penalize(peer_id, 10.0, reason)
        except ValueError:
            pass


# refusals no honest peer could have forwarded: their validity does not depend on the state (a sponsored
# transaction's proof and sender are body checks too: invalid_body with zk_invalid, wrong_sender, … in detail)
_NEVER_FORWARDED = frozenset({"bad_signature", "malformed", "invalid_body"})


def _decode_tx_batch(data: bytes) -> list[bytes]:
    return decode_batch(data, max_bytes=TX_BATCH_MAX_BYTES, max_items=MAX_TX_BATCH)


def _check_tx_batch(peer_id: str, data: bytes) -> bool:
    """Stateless check of a tx batch: a canonical CBOR list of 1..MAX_TX_BATCH byte strings."""
    try:
        return len(_decode_tx_batch(data)) > 0
    except DecodeError:
        return False


async def _check_tx_batch_async(peer_id: str, data: bytes) -> bool:
    """:func:`_check_tx_batch`, in a worker thread for large batches."""
    if len(data) > OFFLOAD_BYTES:
        return await trio.to_thread.run_sync(_check_tx_batch, peer_id, data)
    return _check_tx_batch(peer_id, data)


def p2p_config(section: Any) -> P2PConfig:
    """The p2p layer's configuration from the node's ``[p2p]`` section (``node.config.P2pSection``)."""
    return P2PConfig(
        host=section.host,
        port=section.port,
        bootstrap=list(section.bootstrap),
        persistent_peers=list(section.persistent_peers),
        target_peers=section.target_peers,
        max_peers=section.max_peers,
        outbound_slots=section.outbound_slots if section.outbound_slots >= 0 else None,
        max_requests_per_peer=section.max_requests_per_peer,
        validator_probation_slots=section.validator_probation_slots,
    )


class TxGossip:
    """Batches local transactions onto the ``tx`` topic (``p2p.batch.GossipBatcher``) and feeds
    peers' batches to the mempool."""

    def __init__(
        self,
        p2p: Any,
        submit: Callable[[Sequence[bytes]], Awaitable[list]],
        *,
        flush_interval: float = 0.05,
        max_batch: int = 2_000,
        max_batch_bytes: int = 2 << 20,
        on_batch: Callable[[Sequence[bytes]], None] | None = None,
    ) -> None:
        """``on_batch(raws)``: told of every batch peers gossip, before it is submitted (the stem's embargo)."""
        self.p2p = p2p
        self.submit = submit
        self.on_batch = on_batch
        p2p.register_topic("tx", _check_tx_batch_async, require_cbor=False)  # decode_batch is strict
        self._batcher = GossipBatcher(
            p2p, "tx", max_items=max_batch, max_bytes=max_batch_bytes, max_delay=flush_interval
        )
        self._sub = p2p.subscribe("tx")

    def queue(self, raws: Sequence[bytes]) -> None:
        """Transactions accepted from local clients, to be gossiped."""
        for raw in raws:
            if not self._batcher.add(raw):
                log.warning("tx gossip backlog full: %d accepted txs not gossiped", len(raws))
                return

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self._batcher.run)
            nursery.start_soon(self._receiver)
            task_status.started()

    async def _receiver(self) -> None:
        async for peer_id, data in self._sub:
            try:
                if len(data) > OFFLOAD_BYTES:
                    raws = await trio.to_thread.run_sync(_decode_tx_batch, data)
                else:
                    raws = _decode_tx_batch(data)
            except DecodeError:
                continue
            if self.on_batch is not None:
                self.on_batch(raws)
            results = await self.submit(raws)
            # what an honest forwarder never relays: it checked signatures and bodies (an anonymous bid's
            # proof and sender are part of its checks) before gossiping them. State-dependent refusals
            # (a job closed meanwhile) can be honest races and cost nothing.
            bad = sum(1 for r in results if r.error is not None and r.error.reason in _NEVER_FORWARDED)
            if bad:
                try:
                    self.p2p.penalize(peer_id, TX_PENALTY * min(bad, 10), f"{bad} invalid txs in a batch")
                except ValueError:
                    pass
