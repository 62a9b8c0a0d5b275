"""The node's use of the p2p layer: consensus messages and batched transactions over gossipsub.

- :class:`P2PConsensusTransport` implements :class:`consensus.transport.ConsensusTransport` on the
  ``block`` (proposals), ``vote`` and ``evidence`` topics. Each message travels in an envelope
  ``[message, send-nonce]``: gossipsub drops content it has seen in the last two minutes, and the
  engine's re-broadcasts of the same vote (to reach peers that reconnected) must not be swallowed.
  The gossip validator decodes the message strictly and checks its signature before it is forwarded;
  the decoded object is kept (keyed by the data's hash) so the engine does not decode it twice.
  Broadcasts never block the engine: they go through a bounded queue drained by a sender task.
- :class:`TxGossip` batches transactions accepted from local clients into one ``tx`` message every
  ``flush_interval`` (or when a batch is full), and feeds batches from peers into the mempool through
  the node's normal submission path (decode, signature check in worker threads, mempool rules).
  Transactions received from gossip are not re-published: gossipsub itself forwards the batch.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from consensus.bft import Proposal
from consensus.evidence import DuplicateVote
from consensus.transport import (
    KIND_EVIDENCE_MSG,
    KIND_PROPOSAL_MSG,
    KIND_VOTE_MSG,
    ConsensusMessage,
    Incoming,
    decode_message,
)
from p2p.batch import GossipBatcher, decode_batch
from state import codec
from state.codec import sha256
from state.errors import DecodeError
from state.types import Vote

log = logging.getLogger("aitbc.net")

# consensus message kind -> gossip topic kind (DESIGN §4: proposals travel on the block topic)
TOPIC_OF = {KIND_PROPOSAL_MSG: "block", KIND_VOTE_MSG: "vote", KIND_EVIDENCE_MSG: "evidence"}
MAX_TX_BATCH = 5_000
TX_PENALTY = 5.0


def _open_envelope(data: bytes) -> bytes:
    obj = codec.decode(data, max_bytes=40 << 20)
    if type(obj) is not list or len(obj) != 2 or type(obj[0]) is not bytes or type(obj[1]) is not int:
        raise DecodeError("consensus envelope must be [message, nonce]")
    return obj[0]


class P2PConsensusTransport:
    """ConsensusTransport over a :class:`p2p.service.P2PService` (register before the service runs)."""

    def __init__(self, p2p: Any, chain_id: str) -> None:
        self.p2p = p2p
        self.chain_id = chain_id
        self._send, self._recv = trio.open_memory_channel[Incoming](4096)
        self._out_send, self._out_recv = trio.open_memory_channel[tuple[str, bytes]](1024)
        self._nonce = time.time_ns()
        self._decoded: OrderedDict[bytes, ConsensusMessage] = OrderedDict()
        self._subs = {}
        for kind, topic in TOPIC_OF.items():
            p2p.register_topic(topic, self._make_validator(kind))
            self._subs[kind] = p2p.subscribe(topic)

    def _make_validator(self, kind: str) -> Callable[[str, bytes], bool]:
        def validate(peer_id: str, data: bytes) -> bool:
            try:
                msg = decode_message(kind, _open_envelope(data))
            except DecodeError as exc:
                log.debug("invalid %s from %s: %s", kind, peer_id, exc)
                return False
            if isinstance(msg, Vote | Proposal) and not msg.verify(self.chain_id):
                log.debug("bad %s signature from %s", kind, peer_id)
                return False
            if isinstance(msg, DuplicateVote) and (
                not msg.vote_a.verify(self.chain_id) or not msg.vote_b.verify(self.chain_id)
            ):
                return False
            self._remember(sha256(data), msg)
            return True

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
        try:
            self._out_send.send_nowait((topic, codec.encode([message_bytes, self._nonce])))
        except trio.WouldBlock:
            log.warning("consensus send queue full: dropping a %s message (the engine re-sends)", topic)

    async def _pump(self, kind: str, channel: trio.MemoryReceiveChannel) -> None:
        async for peer_id, data in channel:
            msg = self._decoded.pop(sha256(data), None)
            if msg is None:
                try:
                    msg = decode_message(kind, _open_envelope(data))
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


def _check_tx_batch(peer_id: str, data: bytes) -> bool:
    """Stateless check of a tx batch: a canonical CBOR list of 1..MAX_TX_BATCH byte strings."""
    try:
        return len(decode_batch(data, max_bytes=8 << 20, max_items=MAX_TX_BATCH)) > 0
    except DecodeError:
        return False


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
    ) -> None:
        self.p2p = p2p
        self.submit = submit
        p2p.register_topic("tx", _check_tx_batch)
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
                raws = decode_batch(data, max_bytes=8 << 20, max_items=MAX_TX_BATCH)
            except DecodeError:
                continue
            results = await self.submit(raws)
            bad = sum(1 for r in results if r.error is not None and r.error.reason in ("bad_signature", "malformed"))
            if bad:
                try:
                    self.p2p.penalize(peer_id, TX_PENALTY * min(bad, 10), f"{bad} invalid txs in a batch")
                except ValueError:
                    pass
