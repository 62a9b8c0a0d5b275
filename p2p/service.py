"""The node's libp2p layer as one service with a clear start (``run``) and stop (cancel ``run``).

* Identity: the libp2p Ed25519 key pair is derived from the node key's seed, so the peer id is
  ``p2p.identity.peer_id_from_ed25519(node_key.public_key)``.
* Stack: TCP, noise (only), yamux (mplex as fallback), gossipsub v1.1 (v1.0 accepted) with message
  signing, content-addressed message ids (sha256 of the data), peer scoring.
* Gossip topics ``/aitbc/<chain_id>/<kind>/1``; every message is bounded per topic, must be
  canonical CBOR and pass the topic's validator before it is delivered or forwarded.
* Request/response protocols ``/aitbc/<chain_id>/{status,blocks,blob,peers}/1``: one stream per request,
  varint-framed canonical CBOR, every frame bounded, every read and write under a timeout.
* Status handshake on every new connection (both directions); a peer on another genesis is
  disconnected and banned; gossip with a peer starts only once its handshake has concluded.
* Discovery: bootstrap list plus peer exchange, redialed with exponential backoff, up to target_peers.

See p2p/NOTES.md for the py-libp2p 0.8.1 behaviours this works around.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import libp2p
import trio
from libp2p.abc import INetConn, INotifee
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.host.exceptions import StreamFailure
from libp2p.io.exceptions import MessageTooLarge
from libp2p.io.msgio import VarIntLengthMsgReadWriter
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo as Libp2pPeerInfo
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.score import ScoreParams, TopicScoreParams
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr

from state import codec
from state.crypto import SigningKey
from state.errors import DecodeError, InvariantError

from .config import P2PConfig, check_chain_id, check_kind, protocol_name, topic_name
from .gossip import AitbcGossipSub, AitbcPubsub, queue_is_high
from .identity import b58decode, b58encode, peer_id_from_ed25519
from .metrics import P2PMetrics
from .wire import (
    MAX_PEERS_RESPONSE_BYTES,
    MAX_PEX_ENTRIES,
    MAX_REQUEST_BYTES,
    MAX_STATUS_BYTES,
    BadRequest,
    BadResponse,
    ChainStatus,
    P2PError,
    PeerNotConnected,
    ProtocolUnsupported,
    RemoteError,
    RequestTimeout,
    check_addr_list,
    error,
    ok,
    open_envelope,
    req_map,
    req_uint,
)

log = logging.getLogger("aitbc.p2p")

BLOB_MAX_CHUNK = 4 << 20  # largest blob chunk frame accepted from a peer
RPC_OVERHEAD = 64 << 10  # pubsub RPC framing, signature, key, topic and sender record
MISMATCH_PREFIXES = ("genesis mismatch", "chain id mismatch")
GOODBYE_GRACE = 1.0  # seconds a refused peer stays connected to learn our status (no gossip)
MAX_GOODBYES = 8  # more refused peers at once are dropped without a grace period
SHORT_CONNECTION = 30.0  # seconds; a connection lost sooner counts as a failed dial (backoff grows)

StatusProvider = Callable[[], ChainStatus]
BlocksProvider = Callable[[int, int], "list[bytes] | Awaitable[list[bytes]]"]
BlobProvider = Callable[[bytes], "bytes | None | Awaitable[bytes | None]"]
Validator = Callable[[str, bytes], "bool | Awaitable[bool]"]


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A connected peer as :meth:`P2PService.peers` reports it."""

    peer_id: str
    addrs: list[str]  # dialable multiaddrs we know for it, with /p2p/<id>
    status: ChainStatus | None  # last status it told us (None until the handshake succeeded)
    score: float  # gossipsub score incl. application penalties; below graylist_threshold -> dropped
    connected_since: float  # unix time
    direction: str  # "inbound" | "outbound" | "unknown"
    handshake: str  # "pending" | "ok" | "observer" (no status protocol) | "failed" (retried)


@dataclass
class _PeerState:
    pid: ID
    direction: str
    connected_since: float = field(default_factory=time.time)
    connected_mono: float = field(default_factory=time.monotonic)
    status: ChainStatus | None = None
    handshake: str = "pending"
    handshake_done: trio.Event = field(default_factory=trio.Event)
    last_status_at: float = 0.0
    pubsub_retry_at: float = 0.0  # time.monotonic() of the last repair of a missing gossip stream


@dataclass
class _KnownPeer:
    addrs: list[str]  # transport multiaddrs without /p2p
    bootstrap: bool = False
    failures: int = 0
    next_dial: float = 0.0  # time.monotonic()
    learned_at: float = field(default_factory=time.monotonic)


@dataclass
class _Topic:
    kind: str
    name: str
    validator: Validator | None
    is_async: bool
    max_bytes: int
    require_cbor: bool
    subscribers: list[trio.MemorySendChannel[tuple[str, bytes]]] = field(default_factory=list)
    publish_times: deque[float] = field(default_factory=deque)
    last_drop_warning: float = 0.0


def _content_id(msg: rpc_pb2.Message) -> bytes:
    return hashlib.sha256(msg.data).digest()


def parse_peer_id(peer_id: str) -> ID:
    """A libp2p peer id from its base58 text; ValueError if it is not one."""
    if not isinstance(peer_id, str) or not 10 <= len(peer_id) <= 128:
        raise ValueError(f"invalid peer id {peer_id!r}")
    try:
        raw = b58decode(peer_id)
    except Exception:
        raise ValueError(f"invalid peer id {peer_id!r}") from None
    # identity (0x00) or sha2-256 (0x12) multihash with a matching length byte
    if len(raw) < 3 or raw[0] not in (0x00, 0x12) or raw[1] != len(raw) - 2 or b58encode(raw) != peer_id:
        raise ValueError(f"invalid peer id {peer_id!r}")
    return ID(raw)


def _split_p2p(addr: str) -> tuple[str, str]:
    """``/ip4/…/tcp/…/p2p/<id>`` -> (peer id, transport multiaddr); ValueError otherwise."""
    try:
        info = info_from_p2p_addr(Multiaddr(addr))
    except Exception as exc:
        raise ValueError(f"invalid peer multiaddr {addr!r} (need …/p2p/<peer id>): {exc}") from None
    transport = [str(a) for a in info.addrs if str(a)]
    if not transport:
        raise ValueError(f"peer multiaddr {addr!r} has no transport part")
    return info.peer_id.to_base58(), transport[0]


class _DemoteBenignErrors(logging.Filter):
    """py-libp2p logs routine network events at ERROR: every failed stream negotiation (a peer that
    lacks a protocol, a connection closing under a request) and every connection the remote side
    resets. We handle and report those ourselves; they are shown only when aitbc.p2p logs at DEBUG."""

    RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("Failed to open stream to peer", ()),
        ("MultiselectClient handshake:", ()),
        ("MultiselectClient: invalid", ()),
        ("Error in handle_incoming for peer", ("ConnectionClosedError", "ClosedResourceError")),
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            text = str(record.msg)
            for prefix, needles in self.RULES:
                if text.startswith(prefix) and (not needles or any(n in text for n in needles)):
                    record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                    return log.isEnabledFor(logging.DEBUG)
        return True


def _configure_libp2p_logging() -> None:
    """Importing libp2p turns propagation of its logger off; we want its warnings in our logs."""
    lg = logging.getLogger("libp2p")
    lg.propagate = True
    lg.setLevel(logging.WARNING)
    # This one sets its own level to INFO and logs every 30 s; we disable the auto-connector anyway.
    logging.getLogger("libp2p.network.auto_connector").setLevel(logging.WARNING)
    for name in (
        "libp2p.host.basic_host",
        "libp2p.protocol_muxer.multiselect_client",
        "libp2p.stream_muxer.yamux.yamux",
    ):
        target = logging.getLogger(name)
        if not any(isinstance(f, _DemoteBenignErrors) for f in target.filters):
            target.addFilter(_DemoteBenignErrors())


class _Frames:
    """Varint-framed canonical-CBOR frames on one stream; every read and write under a timeout."""

    def __init__(self, stream: Any, timeout: float) -> None:
        self.stream = stream
        self.timeout = timeout

    async def send(self, obj: Any, max_bytes: int) -> None:
        data = codec.encode(obj)
        with trio.fail_after(self.timeout):
            await VarIntLengthMsgReadWriter(self.stream, max_msg_size=max_bytes).write_msg(data)

    async def recv(self, max_bytes: int) -> Any:
        with trio.fail_after(self.timeout):
            raw = await VarIntLengthMsgReadWriter(self.stream, max_msg_size=max_bytes).read_msg()
        return codec.decode(raw, max_bytes=max_bytes)


class _Notifee(INotifee):
    def __init__(self, svc: P2PService) -> None:
        self._svc = svc

    async def connected(self, network: Any, conn: INetConn) -> None:
        self._svc._on_connected(conn)

    async def disconnected(self, network: Any, conn: INetConn) -> None:
        self._svc._on_disconnected(conn)

    async def opened_stream(self, network: Any, stream: Any) -> None:
        return None

    async def closed_stream(self, network: Any, stream: Any) -> None:
        return None

    async def listen(self, network: Any, multiaddr: Any) -> None:
        return None

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        return None


class P2PService:
    """The node's libp2p host, gossip and request/response protocols. Run it with ``nursery.start(svc.run)``;
    cancel the scope to stop it (peers are disconnected first)."""

    def __init__(
        self,
        cfg: P2PConfig,
        node_key: SigningKey,
        chain_id: str,
        genesis_hash: bytes,
        *,
        status_provider: StatusProvider,
        blocks_provider: BlocksProvider,
        blob_provider: BlobProvider | None = None,
        metrics_registry: Any = None,
    ) -> None:
        cfg.validate()
        self.cfg = cfg
        self.chain_id = check_chain_id(chain_id)
        if not isinstance(genesis_hash, bytes | bytearray) or not 0 < len(genesis_hash) <= 64:
            raise ValueError("genesis_hash must be 1..64 bytes")
        self.genesis_hash = bytes(genesis_hash)
        self._status_provider = status_provider
        self._blocks_provider = blocks_provider
        self._blob_provider = blob_provider
        self.metrics = P2PMetrics(metrics_registry)

        self._key_pair = create_new_key_pair(node_key.seed)
        self._id = ID.from_pubkey(self._key_pair.public_key)
        self.peer_id: str = self._id.to_base58()
        if self.peer_id != peer_id_from_ed25519(node_key.public_key):  # pragma: no cover - invariant
            raise RuntimeError("libp2p peer id does not match p2p.identity.peer_id_from_ed25519")

        self._protos = {
            n: TProtocol(protocol_name(self.chain_id, n)) for n in ("status", "blocks", "blob", "peers")
        }
        self._topics: dict[str, _Topic] = {}
        self._by_name: dict[str, _Topic] = {}
        self._known: dict[str, _KnownPeer] = {}
        for entry in cfg.bootstrap:
            pid, addr = _split_p2p(entry)
            if pid != self.peer_id:
                k = self._known.setdefault(pid, _KnownPeer(addrs=[], bootstrap=True))
                if addr not in k.addrs:
                    k.addrs.append(addr)
        self._peers: dict[str, _PeerState] = {}
        self._bans: dict[str, tuple[float, str]] = {}
        self._penalties: dict[str, tuple[float, float]] = {}  # peer -> (points, time.monotonic())
        self._dialing: set[str] = set()
        self._dropping: set[str] = set()
        self._status_callbacks: list[Callable[[str, ChainStatus], None]] = []
        self._disconnect_callbacks: list[Callable[[str], None]] = []

        self._host: Any = None
        self._router: AitbcGossipSub | None = None
        self._pubsub: AitbcPubsub | None = None
        self._nursery: trio.Nursery | None = None
        self._started = trio.Event()
        self._wake = trio.Event()
        self._queue_space = trio.Event()
        self._ran = False
        self._running = False
        self._closing = False

    # ============================================================================ public API

    def register_topic(
        self,
        kind: str,
        validator: Validator | None = None,
        max_bytes: int | None = None,
        *,
        require_cbor: bool = True,
    ) -> None:
        """Declare gossip topic ``/aitbc/<chain_id>/<kind>/1`` (before :meth:`run`).

        Incoming messages are checked in this order: size <= ``max_bytes`` (default:
        ``cfg.topic_max_bytes[kind]``), well-formed canonical CBOR (unless ``require_cbor=False``), then
        ``validator(origin_peer_id, data) -> bool`` (sync, or ``async def`` for expensive checks, which
        libp2p runs at most 10 at a time with a 5 s timeout). The validator must be stateless: its result
        is cached per message id (sha256 of the data). A rejected message is neither delivered nor
        forwarded, and the peer that sent it loses ``cfg.invalid_message_penalty`` score points.
        """
        if self._ran:
            raise RuntimeError("register_topic() must be called before run()")
        check_kind(kind)
        if kind in self._topics:
            raise ValueError(f"topic {kind!r} already registered")
        if max_bytes is None:
            if kind not in self.cfg.topic_max_bytes:
                raise ValueError(f"no max_bytes given and none configured for topic {kind!r}")
            max_bytes = self.cfg.topic_max_bytes[kind]
        if not isinstance(max_bytes, int) or not 1 <= max_bytes <= 64 << 20:
            raise ValueError("max_bytes must be an int in 1..64 MiB")
        is_async = inspect.iscoroutinefunction(validator) or inspect.iscoroutinefunction(
            getattr(validator, "__call__", None)  # noqa: B004 - an object with an async __call__
        )
        t = _Topic(kind, topic_name(self.chain_id, kind), validator, is_async, max_bytes, require_cbor)
        self._topics[kind] = t
        self._by_name[t.name] = t

    def subscribe(self, kind: str) -> trio.MemoryReceiveChannel[tuple[str, bytes]]:
        """A channel of ``(origin_peer_id, data)`` for every message on ``kind`` that passed validation,
        none of our own. Bounded (``cfg.subscription_buffer``): a consumer that falls that far behind
        loses messages (logged, counted) rather than stalling the node. Close it to unsubscribe."""
        t = self._topic(kind)
        send, recv = trio.open_memory_channel[tuple[str, bytes]](self.cfg.subscription_buffer)
        t.subscribers.append(send)
        return recv

    async def publish(self, kind: str, data: bytes) -> bool:
        """Validate ``data`` like an incoming message (ValueError if it fails), pace against the
        per-topic rate limit and the peers' outbound queues, and publish it. Returns False if the same
        bytes were already seen in the last two minutes (gossip dedups by content), True otherwise."""
        t = self._topic(kind)
        if not self._running or self._pubsub is None:
            raise P2PError("p2p service is not running")
        data = bytes(data)
        if len(data) > t.max_bytes:
            raise ValueError(f"{kind} message of {len(data)} bytes exceeds the topic bound {t.max_bytes}")
        if t.require_cbor:
            try:
                codec.decode(data, max_bytes=t.max_bytes)
            except DecodeError as exc:
                raise ValueError(f"{kind} message is not canonical CBOR: {exc}") from None
        if t.validator is not None:
            verdict = t.validator(self.peer_id, data)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if not verdict:
                raise ValueError(f"{kind} message rejected by the topic validator")
        if self._pubsub.seen_messages.has(hashlib.sha256(data).digest()):
            self.metrics.gossip(kind, "out", "duplicate")
            return False
        await self._pace(t)
        if not self._running:
            raise P2PError("p2p service stopped")
        await self._pubsub.publish(t.name, data)
        self.metrics.gossip(kind, "out", "published", len(data))
        return True

    async def request_status(self, peer_id: str) -> ChainStatus:
        """Exchange status with a connected peer (it learns ours); notifies on_peer_status listeners."""
        pid = parse_peer_id(peer_id)
        status = await self._exchange_status(pid)
        st = self._peers.get(peer_id)
        if st is not None and not self._accept_status(peer_id, st, status):
            raise P2PError(f"peer {peer_id} is on another chain (disconnected)")
        return status

    async def request_blocks(self, peer_id: str, start: int, count: int) -> list[bytes]:
        """Up to ``count`` encoded items from height ``start`` (what the peer's blocks_provider gives,
        bounded by ``cfg.max_blocks_response_bytes``; fewer when the peer has fewer)."""
        if type(start) is not int or start < 0:
            raise ValueError("start must be a non-negative int")
        if type(count) is not int or not 1 <= count <= self.cfg.max_blocks_per_request:
            raise ValueError(f"count must be in 1..{self.cfg.max_blocks_per_request}")
        val = await self._request(
            parse_peer_id(peer_id),
            "blocks",
            {"start": start, "count": count},
            max_resp=self.cfg.max_blocks_response_bytes,
        )
        if type(val) is not list or len(val) > count or any(type(x) is not bytes for x in val):
            raise BadResponse("blocks: expected a list of at most count byte strings")
        return val

    async def request_blob(self, peer_id: str, blob_hash: bytes) -> bytes | None:
        """The blob with sha256 ``blob_hash`` from a peer (None if it has none). Transferred in bounded
        chunks, at most ``cfg.max_blob_bytes``; the hash is verified before it is returned."""
        if not isinstance(blob_hash, bytes) or len(blob_hash) != 32:
            raise ValueError("blob_hash must be 32 bytes (sha256)")
        async with self._client_stream(parse_peer_id(peer_id), "blob") as fr:
            with trio.fail_after(self.cfg.request_timeout * 6):
                await fr.send({"hash": blob_hash}, MAX_REQUEST_BYTES)
                head = open_envelope(await fr.recv(1024))
                if head is None:
                    return None
                if type(head) is not dict or set(head) != {"size"} or type(head["size"]) is not int:
                    raise BadResponse("blob: malformed header")
                size = head["size"]
                if not 0 <= size <= self.cfg.max_blob_bytes:
                    raise BadResponse(f"blob: size {size} outside 0..{self.cfg.max_blob_bytes}")
                buf = bytearray()
                while len(buf) < size:
                    chunk = await fr.recv(BLOB_MAX_CHUNK + 16)
                    if type(chunk) is not bytes or not chunk or len(buf) + len(chunk) > size:
                        raise BadResponse("blob: malformed chunk")
                    buf += chunk
            data = bytes(buf)
            if hashlib.sha256(data).digest() != blob_hash:
                raise BadResponse("blob: content does not match its hash")
            return data

    def peers(self) -> list[PeerInfo]:
        out = []
        for s, st in sorted(self._peers.items(), key=lambda kv: kv[1].connected_since):
            k = self._known.get(s)
            out.append(
                PeerInfo(
                    peer_id=s,
                    addrs=[f"{a}/p2p/{s}" for a in (k.addrs if k else [])],
                    status=st.status,
                    score=self.score(s),
                    connected_since=st.connected_since,
                    direction=st.direction,
                    handshake=st.handshake,
                )
            )
        return out

    def score(self, peer_id: str) -> float:
        """The peer's score: gossipsub's (invalid messages, misbehaviour) plus application penalties."""
        if self._router is not None and self._router.scorer is not None:
            try:
                return float(self._router.scorer.score(parse_peer_id(peer_id), list(self._by_name)))
            except ValueError:
                pass
        return -self._app_penalty(peer_id)

    def penalize(self, peer_id: str, points: float, reason: str) -> None:
        """Lower a peer's score by ``points`` (decaying with ``cfg.penalty_half_life``). When its score
        falls below ``cfg.graylist_threshold`` it is disconnected and banned for ``cfg.ban_duration``."""
        if not math.isfinite(points) or points < 0:
            raise ValueError("points must be a finite non-negative number")
        parse_peer_id(peer_id)
        self._penalties[peer_id] = (self._app_penalty(peer_id) + points, time.monotonic())
        score = self.score(peer_id)
        log.info("penalize %s by %.1f (%s): score %.1f", peer_id, points, reason, score)
        if score < self.cfg.graylist_threshold:
            self._reject(peer_id, f"score {score:.1f} below graylist threshold after: {reason}")

    def banned_peers(self) -> dict[str, str]:
        """Peers currently refused and not dialed, with the reason."""
        now = time.monotonic()
        return {p: r for p, (until, r) in self._bans.items() if until > now}

    def on_peer_status(self, callback: Callable[[str, ChainStatus], None]) -> None:
        """``callback(peer_id, status)`` whenever a peer's status is learned or changes (sync; keep it
        quick, e.g. ``send_nowait`` into a channel)."""
        self._status_callbacks.append(callback)

    def on_peer_disconnected(self, callback: Callable[[str], None]) -> None:
        """``callback(peer_id)`` when the last connection to a handshaking/handshaken peer closes."""
        self._disconnect_callbacks.append(callback)

    def listen_addrs(self) -> list[str]:
        """Our full multiaddrs (with ``/p2p/<id>``) once running."""
        if self._host is None or not self._running:
            return []
        return [str(a) for a in self._host.get_addrs()]

    def connected(self, peer_id: str) -> bool:
        return peer_id in self._peers

    async def wait_for_mesh(self, kind: str, peer_id: str) -> None:
        """Until ``peer_id`` is in our gossip mesh for ``kind`` (bound it with ``trio.fail_after``)."""
        t = self._topic(kind)
        if self._pubsub is None:
            raise P2PError("p2p service is not running")
        await self._pubsub.wait_for_mesh(parse_peer_id(peer_id), t.name, timeout=math.inf)

    # ============================================================================ lifecycle

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start host and gossip, listen, dial the bootstrap list and keep peers. ``task_status.started()``
        once listening. Runs until cancelled; then stops in order (no new connections, goodbye to every
        peer, libp2p services last) and returns."""
        if self._ran:
            raise RuntimeError("P2PService.run() may be called once per instance")
        self._ran = True
        _configure_libp2p_logging()
        stop = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await nursery.start(self._run_stack, stop)
                    task_status.started()
                    await trio.sleep_forever()
                finally:
                    stop.set()
        finally:
            for t in self._topics.values():
                for ch in t.subscribers:
                    ch.close()
                t.subscribers.clear()
            log.info("p2p stopped")

    async def _run_stack(self, stop: trio.Event, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        # The caller's cancellation must not reach libp2p's tasks directly: they would tear down in
        # arbitrary order, each cut short at its first await (unclosed sockets, half-registered
        # connections). The stack runs shielded and stops in order once ``stop`` is set.
        with trio.CancelScope(shield=True):
            try:
                await self._run_shielded(stop, task_status)
            finally:
                self._running = False
                self._closing = True
                self._nursery = None

    async def _run_shielded(self, stop: trio.Event, task_status: Any) -> None:
        cfg = self.cfg
        host = self._make_host()
        router = AitbcGossipSub(
            protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
            degree=cfg.gossip_degree,
            degree_low=cfg.degree_low,
            degree_high=cfg.degree_high,
            heartbeat_interval=cfg.heartbeat_interval,  # type: ignore[arg-type]  # seconds, float works
            heartbeat_initial_delay=0.1,
            score_params=self._score_params(),
            max_messages_per_topic_per_second=cfg.gossip_rate_limit,
            adaptive_gossip_enabled=False,  # it would stretch the heartbeat to 30-60 s on "poor health"
            eclipse_protection_enabled=False,  # grafts beyond D; every test peer shares 127.0.0.1
            do_px=False,  # our own peer exchange protocol instead
        )
        max_rpc = max((t.max_bytes for t in self._topics.values()), default=64 << 10) + RPC_OVERHEAD
        pubsub = AitbcPubsub(
            host,
            router,
            gate=self._gate,
            deliver=self._deliver,
            on_bad_rpc=self._on_bad_rpc,
            queue_max_msgs=cfg.peer_queue_max_msgs,
            queue_max_bytes=max(cfg.peer_queue_max_bytes, 2 * max_rpc),
            max_rpc_bytes=max_rpc,
            on_queue_drain=self._on_queue_drain,
            on_queue_drop=self._on_queue_drop,
            msg_id_constructor=_content_id,
            strict_signing=True,
        )
        # py-libp2p starts the per-publisher sequence number at int(time.time()) and adds 1 per message:
        # a node that published more than one message per second and restarts would reuse sequence
        # numbers, which peers treat as equivocation (and graylist it). Nanoseconds never go back.
        pubsub.counter = time.time_ns()
        for t in self._topics.values():
            pubsub.set_topic_validator(t.name, self._make_validator(t), t.is_async)
        self._host, self._router, self._pubsub = host, router, pubsub
        for name, fn in (
            ("status", self._serve_status),
            ("blocks", self._serve_blocks),
            ("blob", self._serve_blob),
            ("peers", self._serve_peers),
        ):
            host.set_stream_handler(self._protos[name], self._server(name, fn))
        network = host.get_network()
        network.register_notifee(_Notifee(self))
        network.retry_config = RetryConfig(max_retries=0)  # our dial loop owns retries and backoff
        ip = "ip6" if ":" in cfg.host else "ip4"
        listen = Multiaddr(f"/{ip}/{cfg.host}/tcp/{cfg.port}")
        # Pubsub and router services must run BEFORE the host listens (notes, gotcha 1).
        async with background_trio_service(pubsub), background_trio_service(router):
            for t in self._topics.values():
                await pubsub.subscribe(t.name)  # we relay every registered topic
            async with host.run(listen_addrs=[listen]):
                try:
                    await network.auto_connector.stop()  # dials the whole peerstore otherwise
                except Exception:  # pragma: no cover - libp2p internals moved
                    log.warning("could not stop libp2p's auto-connector", exc_info=True)
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self._running = True
                    nursery.start_soon(self._dial_loop)
                    nursery.start_soon(self._status_loop)
                    nursery.start_soon(self._maintenance_loop)
                    if self.cfg.peer_exchange:
                        nursery.start_soon(self._pex_loop)
                    self._started.set()
                    log.info("p2p listening on %s", ", ".join(self.listen_addrs()))
                    task_status.started()
                    await stop.wait()
                    self._running = False
                    self._closing = True
                    nursery.cancel_scope.cancel()
                # Stop accepting first, then say goodbye: a peer that redials meanwhile must find the
                # port closed, not a half-stopped swarm.
                await self._close_listeners()
                await self._disconnect_all()

    def _make_host(self) -> Any:
        cfg = self.cfg
        kp = self._key_pair
        conns = 2 * cfg.max_peers + 8
        return libp2p.new_host(
            key_pair=kp,
            sec_opt={
                NOISE_PROTOCOL_ID: NoiseTransport(kp, noise_privkey=create_x25519_key_pair().private_key)
            },
            muxer_preference="YAMUX",
            listen_addrs=[Multiaddr(f"/{'ip6' if ':' in cfg.host else 'ip4'}/{cfg.host}/tcp/{cfg.port}")],
            enable_mDNS=False,
            connection_config=ConnectionConfig(
                max_connections=conns,
                min_connections=0,
                low_watermark=0,
                high_watermark=conns,
                dial_timeout=cfg.dial_timeout,
            ),
        )

    def _score_params(self) -> ScoreParams:
        cfg = self.cfg
        return ScoreParams(
            # py-libp2p subtracts weight * count: a POSITIVE weight penalises (go uses a negative one).
            p4_invalid_messages=TopicScoreParams(
                weight=cfg.invalid_message_penalty, cap=1000.0, decay=cfg.score_decay
            ),
            p5_behavior_penalty_weight=1.0,
            p5_behavior_penalty_threshold=10.0,
            p5_behavior_penalty_decay=cfg.score_decay,
            p6_appl_slack_weight=1.0,
            p6_appl_slack_decay=1.0,
            app_specific_score_fn=lambda pid: -self._app_penalty(pid.to_base58()),
            gossip_threshold=cfg.gossip_threshold,
            publish_threshold=cfg.publish_threshold,
            graylist_threshold=cfg.graylist_threshold,
            accept_px_threshold=0.0,
        )

    async def _close_listeners(self) -> None:
        network = self._host.get_network() if self._host is not None else None
        for listener in list(getattr(network, "listeners", {}).values()):
            with trio.move_on_after(2):
                try:
                    await listener.close()
                except Exception as exc:
                    log.debug("closing listener: %s", exc)

    async def _disconnect_all(self) -> None:
        if self._host is None:
            return
        with trio.move_on_after(5):
            for pid in list(self._host.get_connected_peers()):
                with trio.move_on_after(1):
                    try:
                        await self._host.disconnect(pid)
                    except Exception as exc:
                        log.debug("disconnect %s on shutdown: %s", pid, exc)

    def _spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self._nursery is None or self._closing:
            return
        try:
            self._nursery.start_soon(_guarded, fn, *args)
        except RuntimeError:  # nursery closing
            pass

    # ============================================================================ peers and bans

    def _is_banned(self, s: str) -> bool:
        ban = self._bans.get(s)
        if ban is None:
            return False
        if ban[0] <= time.monotonic():
            del self._bans[s]
            return False
        return True

    def _app_penalty(self, s: str) -> float:
        p = self._penalties.get(s)
        if p is None:
            return 0.0
        points, at = p
        return points * 0.5 ** ((time.monotonic() - at) / self.cfg.penalty_half_life)

    def _reject(self, s: str, reason: str) -> None:
        """Ban ``s`` for cfg.ban_duration and disconnect it."""
        self._bans[s] = (time.monotonic() + self.cfg.ban_duration, reason)
        log.warning("disconnecting peer %s: %s (banned for %.0f s)", s, reason, self.cfg.ban_duration)
        self._forget(s)  # at once: it is no longer a peer, whatever the swarm's teardown takes (~0.2 s)
        self._spawn(self._drop, s)

    async def _drop(self, s: str) -> None:
        """Disconnect a refused peer after a short goodbye window in which it may still ask for our
        status (so a peer on another chain learns why and stops redialing); no gossip meanwhile."""
        if self._host is None or s in self._dropping:
            return
        self._dropping.add(s)
        try:
            if len(self._dropping) <= MAX_GOODBYES:
                await trio.sleep(GOODBYE_GRACE)
            with trio.move_on_after(5):
                try:
                    await self._host.disconnect(parse_peer_id(s))
                except Exception as exc:
                    log.debug("disconnect %s: %s", s, exc)
        finally:
            self._dropping.discard(s)

    def _live_connections(self, pid: ID) -> list[Any]:
        try:
            conns = self._host.get_network().get_connections(pid)
        except Exception:
            return []
        return [c for c in conns if not getattr(c, "is_closed", False)]

    def _admit(self, s: str, pid: ID, direction: str) -> _PeerState | None:
        """Track a newly connected peer and start its handshake; None if it is refused."""
        if s == self.peer_id or self._nursery is None or self._closing:
            return None
        st = self._peers.get(s)
        if st is not None:
            return st
        if self._is_banned(s):
            log.debug("refusing banned peer %s (%s)", s, self._bans[s][1])
            self._spawn(self._drop, s)
            return None
        if len(self._peers) >= self.cfg.max_peers:
            log.debug("refusing peer %s: max_peers (%d) reached", s, self.cfg.max_peers)
            self._spawn(self._drop, s)
            return None
        st = _PeerState(pid=pid, direction=direction)
        self._peers[s] = st
        self.metrics.set_peers(len(self._peers))
        log.debug("peer %s connected (%s)", s, direction)
        self._spawn(self._handshake, s, st)
        return st

    def _on_connected(self, conn: INetConn) -> None:
        try:
            pid = conn.muxed_conn.peer_id
        except Exception:
            return
        name = getattr(getattr(conn, "direction", None), "name", None)
        direction = name.lower() if isinstance(name, str) else "unknown"
        st = self._admit(pid.to_base58(), pid, direction)
        if st is not None and st.direction == "unknown":
            st.direction = direction

    def _on_disconnected(self, conn: INetConn) -> None:
        try:
            pid = conn.muxed_conn.peer_id
        except Exception:
            return
        if self._live_connections(pid):
            return
        self._forget(pid.to_base58())

    def _forget(self, s: str) -> None:
        st = self._peers.pop(s, None)
        if st is None:
            return
        st.handshake_done.set()
        self.metrics.set_peers(len(self._peers))
        lived = time.monotonic() - st.connected_mono
        log.debug("peer %s disconnected after %.1f s", s, lived)
        k = self._known.get(s)
        if k is not None:
            k.failures = k.failures + 1 if lived < SHORT_CONNECTION else 0
            k.next_dial = time.monotonic() + self._backoff(k.failures)
        self._wake.set()
        if not self._closing:
            for cb in list(self._disconnect_callbacks):
                try:
                    cb(s)
                except Exception:
                    log.exception("on_peer_disconnected callback failed")

    def _backoff(self, failures: int) -> float:
        base = min(self.cfg.reconnect_backoff_max, self.cfg.reconnect_backoff_min * 2 ** min(failures, 30))
        return base * random.uniform(0.8, 1.2)

    # ============================================================================ status handshake

    def _our_status(self) -> ChainStatus:
        try:
            s = self._status_provider()
            return ChainStatus(self.chain_id, self.genesis_hash, s.height, s.head_hash, s.finalized_height)
        except Exception as exc:
            log.warning("status_provider failed: %s", exc)
            raise P2PError(f"our status is unavailable: {exc}") from None

    def _mismatch(self, status: ChainStatus) -> str | None:
        if status.chain_id != self.chain_id:  # (cannot happen over our own protocol id)
            return f"chain id mismatch (theirs {status.chain_id!r}, ours {self.chain_id!r})"
        if status.genesis_hash != self.genesis_hash:
            return f"genesis mismatch (theirs {status.genesis_hash.hex()[:16]}…, ours {self.genesis_hash.hex()[:16]}…)"
        return None

    def _accept_status(self, s: str, st: _PeerState, status: ChainStatus) -> bool:
        reason = self._mismatch(status)
        if reason is not None:
            self._reject(s, reason)
            return False
        st.last_status_at = time.monotonic()
        if st.handshake != "ok":
            st.handshake = "ok"
            st.handshake_done.set()
        if status != st.status:
            st.status = status
            for cb in list(self._status_callbacks):
                try:
                    cb(s, status)
                except Exception:
                    log.exception("on_peer_status callback failed")
        return True

    async def _exchange_status(self, pid: ID) -> ChainStatus:
        val = await self._request(pid, "status", self._our_status().to_obj(), max_resp=MAX_STATUS_BYTES + 64)
        try:
            return ChainStatus.from_obj(val)
        except DecodeError as exc:
            raise BadResponse(f"status: {exc}") from None

    async def _handshake(self, s: str, st: _PeerState) -> None:
        try:
            with trio.fail_after(self.cfg.handshake_timeout):
                status = await self._exchange_status(st.pid)
        except ProtocolUnsupported:
            if st.handshake == "pending":
                st.handshake = "observer"
                log.info("peer %s does not speak %s: observer (gossip only)", s, self._protos["status"])
        except RemoteError as exc:
            if exc.code == "banned":
                self._refused_by(s, str(exc))
            elif st.handshake == "pending":
                st.handshake = "failed"
        except (P2PError, trio.TooSlowError) as exc:
            if st.handshake == "pending":
                st.handshake = "failed"
            log.debug("status handshake with %s failed: %s", s, exc)
        else:
            if self._peers.get(s) is st:
                self._accept_status(s, st, status)
        finally:
            st.handshake_done.set()
        if st.handshake == "ok" and self.cfg.peer_exchange and self._peers.get(s) is st:
            await self._exchange_peers(s, st.pid)

    def _refused_by(self, s: str, why: str) -> None:
        """The peer has banned us: do not redial it for a ban period (it disconnects us anyway)."""
        k = self._known.get(s)
        if k is not None:
            k.next_dial = time.monotonic() + self.cfg.ban_duration
        log.info("peer %s refuses us (%s); not redialing it for %.0f s", s, why, self.cfg.ban_duration)

    async def _gate(self, pid: ID) -> bool:
        """Pubsub may talk to ``pid`` once its handshake concluded without a mismatch."""
        s = pid.to_base58()
        with trio.move_on_after(self.cfg.handshake_timeout):
            await self._started.wait()
            st = self._peers.get(s) or self._admit(s, pid, "unknown")
            if st is None:
                return False
            await st.handshake_done.wait()
        return s in self._peers and not self._is_banned(s)

    # ============================================================================ gossip

    def _topic(self, kind: str) -> _Topic:
        t = self._topics.get(kind)
        if t is None:
            raise ValueError(f"topic {kind!r} is not registered")
        return t

    def _origin(self, msg: rpc_pb2.Message) -> str:
        try:
            return ID(msg.from_id).to_base58()
        except Exception:
            return ""

    def _precheck(self, t: _Topic, forwarder: ID, msg: rpc_pb2.Message) -> bool | None:
        """Size and encoding checks; a verdict, or None to go on to the topic's validator."""
        if forwarder == self._id:
            return True  # our own publish, checked in publish()
        data = msg.data
        if len(data) > t.max_bytes:
            self.metrics.gossip(t.kind, "in", "oversize")
            log.debug(
                "dropping %d-byte %s message from %s: over %d", len(data), t.kind, forwarder, t.max_bytes
            )
            return False
        if t.require_cbor:
            try:
                codec.decode(data, max_bytes=t.max_bytes)
            except DecodeError as exc:
                self.metrics.gossip(t.kind, "in", "malformed")
                log.debug("dropping malformed %s message from %s: %s", t.kind, forwarder, exc)
                return False
        return None if t.validator is not None else True

    def _verdict(self, t: _Topic, forwarder: ID, ok_: Any) -> bool:
        if not ok_:
            self.metrics.gossip(t.kind, "in", "rejected")
            log.debug("validator rejected a %s message forwarded by %s", t.kind, forwarder)
            return False
        return True

    def _make_validator(self, t: _Topic) -> Callable[..., Any]:
        if t.is_async:

            async def validate_async(forwarder: ID, msg: rpc_pb2.Message) -> bool:
                pre = self._precheck(t, forwarder, msg)
                if pre is not None:
                    return pre
                try:
                    ok_ = await t.validator(self._origin(msg), bytes(msg.data))  # type: ignore[misc]
                except Exception:
                    log.exception("%s validator raised; treating the message as invalid", t.kind)
                    ok_ = False
                return self._verdict(t, forwarder, ok_)

            return validate_async

        def validate(forwarder: ID, msg: rpc_pb2.Message) -> bool:
            pre = self._precheck(t, forwarder, msg)
            if pre is not None:
                return pre
            try:
                ok_ = t.validator(self._origin(msg), bytes(msg.data))  # type: ignore[misc]
            except Exception:
                log.exception("%s validator raised; treating the message as invalid", t.kind)
                ok_ = False
            return self._verdict(t, forwarder, ok_)

        return validate

    def _deliver(self, msg: rpc_pb2.Message) -> None:
        """Called by pubsub for every accepted message (ours included) on a subscribed topic."""
        if msg.from_id == self._id.to_bytes():
            return
        origin = self._origin(msg)
        data = bytes(msg.data)
        for name in msg.topicIDs:
            t = self._by_name.get(name)
            if t is None:
                continue
            self.metrics.gossip(t.kind, "in", "accepted", len(data))
            for ch in list(t.subscribers):
                try:
                    ch.send_nowait((origin, data))
                except trio.WouldBlock:
                    self.metrics.gossip(t.kind, "in", "dropped")
                    now = time.monotonic()
                    if now - t.last_drop_warning > 5:
                        t.last_drop_warning = now
                        log.warning(
                            "%s subscriber is %d messages behind; dropping",
                            t.kind,
                            self.cfg.subscription_buffer,
                        )
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    t.subscribers.remove(ch)

    def _on_bad_rpc(self, pid: ID, reason: str) -> None:
        s = pid.to_base58()
        if s in self._peers:
            self.penalize(s, self.cfg.invalid_message_penalty * 2, reason)

    def _on_queue_drain(self) -> None:
        self._queue_space.set()

    def _on_queue_drop(self, rpc: rpc_pb2.RPC) -> None:
        for msg in rpc.publish:
            for name in msg.topicIDs:
                t = self._by_name.get(name)
                if t is None:
                    continue
                self.metrics.gossip(t.kind, "out", "dropped")
                now = time.monotonic()
                if now - t.last_drop_warning > 5:
                    t.last_drop_warning = now
                    log.warning("a peer's outbound queue is full: dropping %s messages to it", t.kind)

    def _full_queues(self, t: _Topic) -> list[ID]:
        if self._pubsub is None:
            raise InvariantError("p2p service not started")
        subs = self._pubsub.peer_topics.get(t.name, ())
        queues = self._pubsub.peer_queues
        return [p for p in subs if p in queues and queue_is_high(queues[p])]

    async def _pace(self, t: _Topic) -> None:
        # 1. stay under gossipsub's per-topic rate limit (it also applies to our own publishes)
        limit = max(1, int(self.cfg.gossip_rate_limit * 0.9))
        times = t.publish_times
        while True:
            now = time.monotonic()
            while times and times[0] <= now - 1.0:
                times.popleft()
            if len(times) < limit:
                times.append(now)
                break
            await trio.sleep(times[0] + 1.0 - now + 0.001)
        # 2. let full peer queues drain (libp2p would drop what does not fit)
        if not self._full_queues(t):
            return
        deadline = trio.current_time() + self.cfg.publish_backpressure_timeout
        while True:
            if self._queue_space.is_set():
                self._queue_space = trio.Event()  # shared by every waiting publisher
            full = self._full_queues(t)
            if not full:
                return
            with trio.move_on_at(deadline):
                await self._queue_space.wait()
                continue
            log.warning(
                "publish on %s: %d peer queue(s) still full after %.1f s",
                t.kind,
                len(full),
                self.cfg.publish_backpressure_timeout,
            )
            self.metrics.gossip(t.kind, "out", "dropped")
            return

    # ============================================================================ request/response: client

    @asynccontextmanager
    async def _client_stream(self, pid: ID, proto: str) -> AsyncIterator[_Frames]:
        if not self._running or self._host is None:
            raise P2PError("p2p service is not running")
        if not self._live_connections(pid):
            raise PeerNotConnected(f"peer {pid} is not connected")
        result = "error"
        stream = None
        try:
            try:
                with trio.fail_after(self.cfg.request_timeout):
                    stream = await self._host.new_stream(pid, [self._protos[proto]])
            except StreamFailure as exc:
                if "not supported" in str(exc.__cause__ or ""):
                    raise ProtocolUnsupported(f"{pid} does not support {self._protos[proto]}") from None
                raise P2PError(f"{proto}: could not open a stream to {pid}: {exc.__cause__ or exc}") from None
            try:
                yield _Frames(stream, self.cfg.request_timeout)
            except trio.TooSlowError:
                raise RequestTimeout(f"{proto} request to {pid} timed out") from None
            except MessageTooLarge as exc:
                raise BadResponse(f"{proto}: response too large: {exc}") from None
            except DecodeError as exc:
                raise BadResponse(f"{proto}: {exc}") from None
            except (P2PError, ValueError):
                raise
            except Exception as exc:
                raise P2PError(f"{proto} request to {pid} failed: {type(exc).__name__}: {exc}") from None
            result = "ok"
        except trio.TooSlowError:
            result = "timeout"
            raise RequestTimeout(f"{proto}: opening a stream to {pid} timed out") from None
        except RequestTimeout:
            result = "timeout"
            raise
        except ProtocolUnsupported:
            result = "unsupported"
            raise
        except (P2PError, ValueError):
            raise
        except Exception as exc:  # libp2p dial / stream errors
            raise P2PError(
                f"{proto}: could not open a stream to {pid}: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            self.metrics.request(proto, result)
            if stream is not None:
                await _close_stream(stream, reset=result != "ok")

    async def _request(self, pid: ID, proto: str, req: Any, *, max_resp: int) -> Any:
        async with self._client_stream(pid, proto) as fr:
            await fr.send(req, MAX_REQUEST_BYTES)
            resp = await fr.recv(max_resp)
            return open_envelope(resp)

    async def _exchange_peers(self, s: str, pid: ID) -> None:
        try:
            val = await self._request(
                pid, "peers", {"addrs": self._announce()}, max_resp=MAX_PEERS_RESPONSE_BYTES
            )
            if type(val) is not list or len(val) > MAX_PEX_ENTRIES:
                raise BadResponse("peers: expected a list")
            learned = 0
            for e in val:
                if type(e) is not dict or set(e) != {"id", "addrs"} or type(e["id"]) is not str:
                    raise BadResponse("peers: malformed entry")
                addrs = check_addr_list(e["addrs"], bad=BadResponse)
                try:
                    parse_peer_id(e["id"])
                except ValueError:
                    raise BadResponse("peers: malformed peer id") from None
                learned += self._learn(e["id"], addrs)
            if learned:
                log.debug("learned %d peer(s) from %s", learned, s)
                self._wake.set()
        except P2PError as exc:
            log.debug("peer exchange with %s failed: %s", s, exc)

    # ============================================================================ request/response: server

    def _server(
        self, proto: str, fn: Callable[[str, Any, _Frames], Awaitable[None]]
    ) -> Callable[[Any], Awaitable[None]]:
        limiter = trio.Semaphore(self.cfg.max_inbound_requests)

        async def handler(stream: Any) -> None:
            result = "failed"
            s = "?"
            frames = _Frames(stream, self.cfg.request_timeout)
            try:
                s = stream.muxed_conn.peer_id.to_base58()
                if not self._started.is_set() or (self._is_banned(s) and proto != "status"):
                    result = "refused"
                    return
                try:
                    limiter.acquire_nowait()
                except trio.WouldBlock:
                    result = "busy"
                    await frames.send(error("busy", "too many concurrent requests"), MAX_REQUEST_BYTES)
                    return
                try:
                    try:
                        try:
                            req = await frames.recv(MAX_REQUEST_BYTES)
                        except (MessageTooLarge, DecodeError) as exc:
                            raise BadRequest(f"malformed request: {exc}") from None
                        await fn(s, req, frames)
                        result = "served"
                    except BadRequest as exc:
                        result = "bad_request"
                        log.debug("%s: bad request from %s: %s", proto, s, exc)
                        await frames.send(error("bad_request", str(exc)), MAX_REQUEST_BYTES)
                finally:
                    limiter.release()
            except trio.TooSlowError:
                log.debug("%s: request from %s timed out", proto, s)
            except Exception as exc:
                log.debug("%s: serving %s failed: %s: %s", proto, s, type(exc).__name__, exc)
            finally:
                if result != "refused":
                    self.metrics.request(proto, result)
                await _close_stream(stream, reset=result in ("failed", "refused"))

        return handler

    async def _call_provider(self, fn: Callable[..., Any], *args: Any) -> Any:
        res = fn(*args)
        if inspect.isawaitable(res):
            res = await res
        return res

    async def _serve_status(self, s: str, req: Any, frames: _Frames) -> None:
        try:
            theirs = ChainStatus.from_obj(req)
        except DecodeError as exc:
            raise BadRequest(str(exc)) from None
        if self._is_banned(s):
            # Goodbye window: a peer on another chain gets our status (and so bans us in turn); any
            # other banned peer is told so, and stops redialing for a while.
            reason = self._bans.get(s, (0.0, ""))[1]
            if reason.startswith(MISMATCH_PREFIXES):
                await frames.send(ok(self._our_status().to_obj()), MAX_STATUS_BYTES + 64)
            else:
                await frames.send(error("banned", "you are banned for a while"), MAX_REQUEST_BYTES)
            return
        st = self._peers.get(s) or self._admit(s, parse_peer_id(s), "unknown")
        await frames.send(ok(self._our_status().to_obj()), MAX_STATUS_BYTES + 64)
        if st is not None and self._peers.get(s) is st:
            self._accept_status(s, st, theirs)

    async def _serve_blocks(self, s: str, req: Any, frames: _Frames) -> None:
        req = req_map(req, {"start", "count"})
        start = req_uint(req["start"], "start")
        count = req_uint(req["count"], "count", 1, self.cfg.max_blocks_per_request)
        try:
            items = await self._call_provider(self._blocks_provider, start, count)
            if not isinstance(items, list | tuple) or not all(
                isinstance(x, bytes | bytearray) for x in items
            ):
                raise TypeError("blocks_provider must return a list of bytes")
        except Exception as exc:
            log.warning("blocks_provider(%d, %d) failed: %s", start, count, exc)
            await frames.send(error("unavailable", "blocks are not available"), MAX_REQUEST_BYTES)
            return
        limit = self.cfg.max_blocks_response_bytes - 64
        out: list[bytes] = []
        total = 0
        for item in items[:count]:
            n = len(item) + 9  # CBOR byte-string header
            if total + n > limit:
                break
            out.append(bytes(item))
            total += n
        if items and not out:
            await frames.send(
                error("too_large", "the first item exceeds the response bound"), MAX_REQUEST_BYTES
            )
            return
        await frames.send(ok(out), self.cfg.max_blocks_response_bytes)

    async def _serve_blob(self, s: str, req: Any, frames: _Frames) -> None:
        req = req_map(req, {"hash"})
        h = req["hash"]
        if type(h) is not bytes or len(h) != 32:
            raise BadRequest("hash must be 32 bytes")
        if self._blob_provider is None:
            await frames.send(error("unsupported", "this node serves no blobs"), MAX_REQUEST_BYTES)
            return
        try:
            blob = await self._call_provider(self._blob_provider, h)
        except Exception as exc:
            log.warning("blob_provider failed: %s", exc)
            blob = None
        if blob is None:
            await frames.send(ok(None), 1024)
            return
        blob = bytes(blob)
        if len(blob) > self.cfg.max_blob_bytes:
            await frames.send(error("too_large", "blob exceeds max_blob_bytes"), MAX_REQUEST_BYTES)
            return
        if hashlib.sha256(blob).digest() != h:
            log.warning("blob_provider returned content that does not match %s", h.hex())
            await frames.send(error("unavailable", "stored blob is corrupt"), MAX_REQUEST_BYTES)
            return
        await frames.send(ok({"size": len(blob)}), 1024)
        step = min(self.cfg.blob_chunk_bytes, BLOB_MAX_CHUNK)
        for off in range(0, len(blob), step):
            await frames.send(blob[off : off + step], BLOB_MAX_CHUNK + 16)

    async def _serve_peers(self, s: str, req: Any, frames: _Frames) -> None:
        req = req_map(req, {"addrs"})
        addrs = check_addr_list(req["addrs"], bad=BadRequest)
        if self._learn(s, addrs):
            self._wake.set()
        await frames.send(ok(self._pex_entries(exclude=s)), MAX_PEERS_RESPONSE_BYTES)

    # ============================================================================ discovery

    def _announce(self) -> list[str]:
        if self.cfg.announce_addrs:
            return list(self.cfg.announce_addrs)[:8]
        out = []
        for a in self._host.get_transport_addrs() if self._host is not None else []:
            text = str(a)
            if "/ip4/0.0.0.0/" in text or "/ip6/::/" in text:
                continue
            out.append(text)
        return out[:8]

    def _learn(self, s: str, addrs: list[str]) -> int:
        """Remember dialable transport addresses of peer ``s``; 1 if it is new to us."""
        if s == self.peer_id or self._is_banned(s):
            return 0
        clean = []
        for a in addrs:
            try:
                ma = Multiaddr(a)
                protos = [p.name for p in ma.protocols()]
                if "p2p" in protos:
                    if ma.get_peer_id() != s:
                        continue
                    ma = ma.decapsulate(Multiaddr(f"/p2p/{s}"))
                if "tcp" not in protos or (
                    "ip4" not in protos and "ip6" not in protos and "dns4" not in protos
                ):
                    continue
                text = str(ma)
            except Exception:
                continue
            if text and text not in clean:
                clean.append(text)
        if not clean:
            return 0
        k = self._known.get(s)
        if k is not None:
            if not k.bootstrap:
                k.addrs = clean[:8]
            return 0
        if len(self._known) >= self.cfg.max_known_peers:
            victims = [p for p, v in self._known.items() if not v.bootstrap and p not in self._peers]
            if not victims:
                return 0
            victim = max(victims, key=lambda p: (self._known[p].failures, -self._known[p].learned_at))
            del self._known[victim]
        self._known[s] = _KnownPeer(addrs=clean[:8])
        return 1

    def _pex_entries(self, exclude: str) -> list[dict[str, Any]]:
        out = []
        for s, st in self._peers.items():
            k = self._known.get(s)
            if s == exclude or k is None or not k.addrs or st.handshake != "ok":
                continue
            out.append({"id": s, "addrs": [f"{a}/p2p/{s}" for a in k.addrs[:4]]})
        random.shuffle(out)
        return out[:MAX_PEX_ENTRIES]

    async def _dial_loop(self) -> None:
        while True:
            self._wake = trio.Event()
            try:
                next_due = self._dial_due()
            except Exception:
                log.exception("p2p dial loop failed")
                next_due = time.monotonic() + 5.0
            with trio.move_on_after(max(0.02, next_due - time.monotonic())):
                await self._wake.wait()

    def _dial_due(self) -> float:
        """Start dials while below target_peers; the time the next dial falls due."""
        now = time.monotonic()
        next_due = now + 5.0
        need = self.cfg.target_peers - len(self._peers) - len(self._dialing)
        if need > 0:
            cands = [
                (s, k)
                for s, k in self._known.items()
                if s not in self._peers and s not in self._dialing and k.addrs and not self._is_banned(s)
            ]
            due = [(s, k) for s, k in cands if k.next_dial <= now]
            due.sort(key=lambda sk: (not sk[1].bootstrap, sk[1].failures, random.random()))
            for s, _k in due[:need]:
                self._dialing.add(s)
                self._spawn(self._dial, s)
            later = [k.next_dial for _s, k in cands if k.next_dial > now]
            if later:
                next_due = min(next_due, min(later))
        return next_due

    async def _dial(self, s: str) -> None:
        k = self._known.get(s)
        try:
            if k is None:
                return
            pid = parse_peer_id(s)
            network = self._host.get_network()
            if hasattr(network, "unblock_peer"):
                network.unblock_peer(pid)  # libp2p's own 60 s negative cache; we keep our own backoff
            with trio.fail_after(self.cfg.dial_timeout):
                await self._host.connect(Libp2pPeerInfo(pid, [Multiaddr(a) for a in k.addrs]))
        except (Exception, trio.TooSlowError) as exc:
            if k is not None:
                k.failures += 1
                delay = self._backoff(k.failures - 1)
                k.next_dial = time.monotonic() + delay
                log.log(
                    logging.INFO if k.bootstrap and k.failures == 1 else logging.DEBUG,
                    "dial %s failed (%s: %s); retry in %.1f s",
                    s,
                    type(exc).__name__,
                    exc,
                    delay,
                )
        else:
            log.debug("dialed %s", s)
        finally:
            self._dialing.discard(s)
            self._wake.set()

    async def _pex_loop(self) -> None:
        while True:
            await trio.sleep(self.cfg.pex_interval * random.uniform(0.8, 1.2))
            if len(self._peers) >= self.cfg.target_peers:
                continue
            ready = [(s, st) for s, st in self._peers.items() if st.handshake == "ok"]
            if ready:
                s, st = random.choice(ready)
                await _guarded(self._exchange_peers, s, st.pid)

    # ============================================================================ periodic work

    async def _status_loop(self) -> None:
        while True:
            await trio.sleep(self.cfg.status_interval)
            async with trio.open_nursery() as n:
                for s, st in list(self._peers.items()):
                    if st.handshake == "observer":
                        continue
                    if time.monotonic() - st.last_status_at < self.cfg.status_interval / 2:
                        continue  # it told us its status recently (its own request)
                    n.start_soon(_guarded, self._refresh_status, s, st)

    async def _refresh_status(self, s: str, st: _PeerState) -> None:
        was = st.handshake
        try:
            status = await self._exchange_status(st.pid)
        except ProtocolUnsupported:
            if was == "failed":
                st.handshake = "observer"
            return
        except RemoteError as exc:
            if exc.code == "banned":
                self._refused_by(s, str(exc))
            return
        except P2PError as exc:
            log.debug("status refresh from %s failed: %s", s, exc)
            return
        if self._peers.get(s) is st and self._accept_status(s, st, status):
            if was != "ok" and self.cfg.peer_exchange:
                await self._exchange_peers(s, st.pid)

    async def _repair_gossip_stream(self, pid: ID) -> None:
        log.debug("opening the missing gossip stream to %s", pid)
        with trio.move_on_after(self.cfg.handshake_timeout):
            try:
                await self._pubsub.ensure_peer_stream(pid, timeout=self.cfg.handshake_timeout)
            except Exception as exc:
                log.debug("gossip stream to %s: %s", pid, exc)

    async def _maintenance_loop(self) -> None:
        while True:
            await trio.sleep(self.cfg.heartbeat_interval)
            try:
                self._maintain()
            except Exception:
                log.exception("p2p maintenance failed")

    def _maintain(self) -> None:
        """Expire bans and penalties, drop graylisted peers, repair gossip streams, reconcile peers."""
        now = time.monotonic()
        for s in [s for s, (until, _r) in self._bans.items() if until <= now]:
            del self._bans[s]
        for s in [s for s in self._penalties if self._app_penalty(s) < 0.01]:
            del self._penalties[s]
        for s in list(self._peers):
            sc = self.score(s)
            if sc < self.cfg.graylist_threshold:
                self._reject(s, f"score {sc:.1f} below graylist threshold {self.cfg.graylist_threshold}")
        # A connected peer without our outbound gossip stream (its registration gave up, e.g. the
        # handshake outlasted the gate's wait) would silently miss every message: repair it.
        for st in self._peers.values():
            if (
                st.handshake != "pending"
                and st.pid not in self._pubsub.peers
                and now - st.connected_mono > 5.0
                and now - st.pubsub_retry_at > 30.0
            ):
                st.pubsub_retry_at = now
                self._spawn(self._repair_gossip_stream, st.pid)
        # Reconcile with the swarm (a notification may have been missed around start-up).
        connected = {p.to_base58(): p for p in self._host.get_connected_peers()}
        for s in [s for s in self._peers if s not in connected]:
            self._forget(s)
        for s, pid in connected.items():
            if s not in self._peers and self._live_connections(pid):
                self._admit(s, pid, "unknown")
        self.metrics.set_peers(len(self._peers))


async def _guarded(fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Run a background task of the service; a bug in one peer's handling must not stop the node."""
    try:
        await fn(*args)
    except Exception:
        log.exception("p2p task %s failed", getattr(fn, "__name__", fn))


async def _close_stream(stream: Any, *, reset: bool) -> None:
    with trio.CancelScope(shield=True):
        with trio.move_on_after(1.0):
            try:
                if reset:
                    await stream.reset()
                else:
                    await stream.close()
            except Exception:
                pass
