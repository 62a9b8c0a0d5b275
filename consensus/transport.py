"""How the BFT engine talks to other nodes.

:class:`ConsensusTransport` is all the engine needs: three broadcasts, one receive channel of
``(peer_id, message)`` and a way to report a misbehaving peer. The libp2p transport implements it over
gossipsub (topics ``/aitbc/<chain_id>/vote/1`` etc., DESIGN §4), sending each message as its canonical
encoding (:func:`encode_message`) and decoding what it receives with :func:`decode_message`, which
bounds the size first. Messages are validated by the engine (signatures, membership, height); a
transport must not deliver a node's own broadcasts back to it (harmless, but wasted work).

:class:`InMemoryNetwork` connects N engines inside one trio process for tests, with controls to drop
messages (per node, per link, partitions, or any predicate) and to delay them. :class:`NullTransport`
is the transport of a single-validator chain (no peers).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Protocol

import trio

from state.errors import DecodeError
from state.types import Vote

from .bft import MAX_PROPOSAL_BYTES, Proposal
from .evidence import DuplicateVote

log = logging.getLogger("aitbc.consensus.transport")

ConsensusMessage = Proposal | Vote | DuplicateVote
Incoming = tuple[str, ConsensusMessage]

KIND_PROPOSAL_MSG = "proposal"
KIND_VOTE_MSG = "vote"
KIND_EVIDENCE_MSG = "evidence"
MESSAGE_KINDS = (KIND_PROPOSAL_MSG, KIND_VOTE_MSG, KIND_EVIDENCE_MSG)


def encode_message(msg: ConsensusMessage) -> tuple[str, bytes]:
    """(kind, canonical encoding) of a consensus message; the kind picks the gossip topic."""
    if isinstance(msg, Proposal):
        return KIND_PROPOSAL_MSG, msg.encode()
    if isinstance(msg, Vote):
        return KIND_VOTE_MSG, msg.encode()
    if isinstance(msg, DuplicateVote):
        return KIND_EVIDENCE_MSG, msg.encode()
    raise TypeError(f"not a consensus message: {type(msg).__name__}")


def decode_message(kind: str, raw: bytes, *, max_proposal_bytes: int = MAX_PROPOSAL_BYTES) -> ConsensusMessage:
    """Strictly decode a message received on the topic for ``kind``. Raises :class:`DecodeError`."""
    if kind == KIND_VOTE_MSG:
        return Vote.decode(raw)
    if kind == KIND_PROPOSAL_MSG:
        return Proposal.decode(raw, max_bytes=max_proposal_bytes)
    if kind == KIND_EVIDENCE_MSG:
        return DuplicateVote.decode(raw)
    raise DecodeError(f"unknown consensus message kind {kind!r}")


class ConsensusTransport(Protocol):
    """What :class:`consensus.bft_engine.BftEngine` needs from the network."""

    @property
    def incoming(self) -> trio.abc.ReceiveChannel[Incoming]:
        """Decoded messages from peers, as ``(peer_id, message)``; never this node's own broadcasts."""
        ...

    async def broadcast_proposal(self, proposal: Proposal) -> None: ...

    async def broadcast_vote(self, vote: Vote) -> None: ...

    async def broadcast_evidence(self, evidence: DuplicateVote) -> None: ...

    def report_peer(self, peer_id: str, reason: str) -> None:
        """The engine rejected a message from ``peer_id`` that only a faulty peer sends (bad signature,
        unknown validator, ...): lower its score."""
        ...


class NullTransport:
    """No peers: for a chain with a single validator (the dev chain), where the engine never needs to
    hear from anyone. Broadcasts go nowhere; nothing is ever received."""

    def __init__(self) -> None:
        self._send, self._recv = trio.open_memory_channel[Incoming](0)

    @property
    def incoming(self) -> trio.MemoryReceiveChannel[Incoming]:
        return self._recv

    async def broadcast_proposal(self, proposal: Proposal) -> None:
        return None

    async def broadcast_vote(self, vote: Vote) -> None:
        return None

    async def broadcast_evidence(self, evidence: DuplicateVote) -> None:
        return None

    def report_peer(self, peer_id: str, reason: str) -> None:
        return None


# Drop predicate: (src, dst, message) -> True to drop.
DropFn = Callable[[str, str, ConsensusMessage], bool]
# Delay function: (src, dst, message) -> delay in seconds (0 = deliver now).
DelayFn = Callable[[str, str, ConsensusMessage], float]


class InMemoryTransport:
    """One node's endpoint on an :class:`InMemoryNetwork` (implements :class:`ConsensusTransport`)."""

    def __init__(self, network: InMemoryNetwork, peer_id: str, inbox_size: float) -> None:
        self.network = network
        self.peer_id = peer_id
        self._send, self._recv = trio.open_memory_channel[Incoming](inbox_size)
        self.reports: list[tuple[str, str]] = []

    @property
    def incoming(self) -> trio.MemoryReceiveChannel[Incoming]:
        return self._recv

    async def broadcast_proposal(self, proposal: Proposal) -> None:
        self.network._broadcast(self.peer_id, proposal)

    async def broadcast_vote(self, vote: Vote) -> None:
        self.network._broadcast(self.peer_id, vote)

    async def broadcast_evidence(self, evidence: DuplicateVote) -> None:
        self.network._broadcast(self.peer_id, evidence)

    async def send_to(self, dst: str, msg: ConsensusMessage) -> None:
        """Deliver one message to one peer (tests inject crafted messages with this)."""
        self.network._deliver(self.peer_id, dst, msg)

    def report_peer(self, peer_id: str, reason: str) -> None:
        self.reports.append((peer_id, reason))
        self.network.reports[(peer_id, reason)] += 1

    def _put(self, src: str, msg: ConsensusMessage) -> bool:
        try:
            self._send.send_nowait((src, msg))
            return True
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            return False


class InMemoryNetwork:
    """A full mesh of :class:`InMemoryTransport` endpoints in one trio process.

    Every broadcast goes to every other joined endpoint unless dropped. ``encode=True`` (default) sends
    each message through its canonical encoding and strict decoding, like a real network. Delivery never
    blocks the sender: a full inbox drops the message (counted in ``stats``), like a congested gossip
    link. Delays need a nursery (``InMemoryNetwork(nursery=...)``)."""

    def __init__(
        self,
        *,
        encode: bool = True,
        inbox_size: float = 10_000,
        nursery: trio.Nursery | None = None,
    ) -> None:
        self.encode = encode
        self.inbox_size = inbox_size
        self.nursery = nursery
        self.endpoints: dict[str, InMemoryTransport] = {}
        self._isolated: set[str] = set()
        self._blocked_links: set[tuple[str, str]] = set()
        self._groups: list[set[str]] | None = None
        self.drop_fn: DropFn | None = None
        self.delay_fn: DelayFn | None = None
        # (src, message) of every broadcast, delivered or not (tests record what a node sent)
        self.on_broadcast: Callable[[str, ConsensusMessage], None] | None = None
        self.stats: Counter[str] = Counter()
        self.reports: Counter[tuple[str, str]] = Counter()

    def join(self, peer_id: str) -> InMemoryTransport:
        """A fresh endpoint for ``peer_id`` (replacing an old one: a restarted node gets a new inbox)."""
        old = self.endpoints.get(peer_id)
        if old is not None:
            old._send.close()
        ep = InMemoryTransport(self, peer_id, self.inbox_size)
        self.endpoints[peer_id] = ep
        return ep

    def leave(self, peer_id: str) -> None:
        ep = self.endpoints.pop(peer_id, None)
        if ep is not None:
            ep._send.close()

    # fault controls -----------------------------------------------------------------------------
    def isolate(self, *peer_ids: str) -> None:
        """Drop everything to and from these peers (as if stopped or cut off)."""
        self._isolated.update(peer_ids)

    def reconnect(self, *peer_ids: str) -> None:
        self._isolated.difference_update(peer_ids)

    def block_link(self, src: str, dst: str) -> None:
        """Drop messages from ``src`` to ``dst`` (one direction)."""
        self._blocked_links.add((src, dst))

    def unblock_link(self, src: str, dst: str) -> None:
        self._blocked_links.discard((src, dst))

    def partition(self, *groups: Iterable[str]) -> None:
        """Only deliver between peers of the same group (peers in no group are cut off)."""
        self._groups = [set(g) for g in groups]

    def heal(self) -> None:
        """Remove partitions, isolation and blocked links (``drop_fn``/``delay_fn`` stay)."""
        self._groups = None
        self._isolated.clear()
        self._blocked_links.clear()

    def _connected(self, src: str, dst: str) -> bool:
        if src in self._isolated or dst in self._isolated or (src, dst) in self._blocked_links:
            return False
        if self._groups is not None:
            return any(src in g and dst in g for g in self._groups)
        return True

    # delivery -----------------------------------------------------------------------------------
    def _broadcast(self, src: str, msg: ConsensusMessage) -> None:
        if self.on_broadcast is not None:
            self.on_broadcast(src, msg)
        kind, raw = encode_message(msg) if self.encode else ("", b"")
        self.stats["broadcasts"] += 1
        for dst in list(self.endpoints):
            if dst != src:
                self._deliver(src, dst, msg, kind, raw)

    def _deliver(self, src: str, dst: str, msg: ConsensusMessage, kind: str = "", raw: bytes = b"") -> None:
        if not self._connected(src, dst) or (self.drop_fn is not None and self.drop_fn(src, dst, msg)):
            self.stats["dropped"] += 1
            return
        if self.encode:
            if not raw:
                kind, raw = encode_message(msg)
            msg = decode_message(kind, raw)
        delay = self.delay_fn(src, dst, msg) if self.delay_fn is not None else 0.0
        if delay > 0:
            if self.nursery is None:
                raise RuntimeError("InMemoryNetwork needs a nursery to delay messages")
            self.nursery.start_soon(self._later, delay, src, dst, msg)
            return
        self._put(src, dst, msg)

    async def _later(self, delay: float, src: str, dst: str, msg: ConsensusMessage) -> None:
        await trio.sleep(delay)
        if self._connected(src, dst):
            self._put(src, dst, msg)
        else:
            self.stats["dropped"] += 1

    def _put(self, src: str, dst: str, msg: ConsensusMessage) -> None:
        ep = self.endpoints.get(dst)
        if ep is not None and ep._put(src, msg):
            self.stats["delivered"] += 1
        else:
            self.stats["overflow"] += 1
