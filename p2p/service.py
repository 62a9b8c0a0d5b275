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
* Hostile peers: slots (protected bootstrap/persistent peers, outbound slots), a handshake deadline,
  per-peer request limits, per-peer gossip budgets, verdicts that ban what no honest peer forwards.

The service is composed of one class per concern: :class:`~p2p.peers.PeerTable` (peers, slots, bans,
scores), :class:`~p2p.handshake.StatusHandshake`, :class:`~p2p.reqresp.ReqResp`,
:class:`~p2p.discovery.Discovery` and :class:`~p2p.gossip_validation.GossipTopics`; this module wires
them to libp2p and owns the lifecycle. See p2p/NOTES.md for the py-libp2p 0.8.1 behaviours this works
around.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import libp2p
import trio
from libp2p.abc import INetConn, INotifee
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11
from libp2p.pubsub.score import ScoreParams, TopicScoreParams
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr

from state.crypto import SigningKey

from .config import P2PConfig, check_chain_id, protocol_name
from .discovery import Discovery
from .gossip import AitbcGossipSub, AitbcPubsub
from .gossip_validation import GossipTopics, Validator, Verdict, _Budget, _content_id, _Topic
from .handshake import StatusHandshake
from .identity import peer_id_from_ed25519
from .metrics import P2PMetrics
from .peers import PeerInfo, PeerTable, _KnownPeer, _PeerState, _split_p2p, parse_peer_id
from .reqresp import ReqResp
from .swarm import install as install_slot_fix
from .util import _guarded
from .wire import ChainStatus, ValidatorProof

log = logging.getLogger("aitbc.p2p")

RPC_OVERHEAD = 64 << 10  # pubsub RPC framing, signature, key, topic and sender record

StatusProvider = Callable[[], ChainStatus]
BlocksProvider = Callable[[int, int], "list[bytes] | Awaitable[list[bytes]]"]
BlobProvider = Callable[[bytes], "bytes | None | Awaitable[bytes | None]"]
StemProvider = Callable[[str, bytes], Awaitable["str | None"]]

__all__ = ["P2PService", "PeerInfo", "Validator", "Verdict", "parse_peer_id"]


class _DemoteBenignErrors(logging.Filter):
    """py-libp2p logs routine network events at ERROR: every failed stream negotiation (a peer that
    lacks a protocol, a connection closing under a request) and every connection the remote side
    resets. We handle and report those ourselves; they are shown only when aitbc.p2p logs at DEBUG."""

    RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("Failed to open stream to peer", ()),
        ("MultiselectClient handshake:", ()),
        ("MultiselectClient: invalid", ()),
        ("Error in handle_incoming for peer", ("ConnectionClosedError", "ClosedResourceError")),
        ("Failed to open TCP stream", ()),  # every failed dial; the dial loop reports it
        # a connection still being set up when its task is cancelled (our stop, a dial given up): a
        # WARNING with the traceback of the Cancelled, nothing failed
        ("[ADDCONN_FAIL] add_conn failed", ("Cancelled(",)),
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            text = str(record.msg)
            for prefix, needles in self.RULES:
                if text.startswith(prefix) and (not needles or any(n in _message(record) for n in needles)):
                    record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                    return log.isEnabledFor(logging.DEBUG)
        return True


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except (TypeError, ValueError):  # a library's format string that does not fit its args
        return str(record.msg)


def _configure_libp2p_logging() -> None:
    """Importing libp2p turns propagation of its logger off; we want its warnings in our logs."""
    lg = logging.getLogger("libp2p")
    lg.propagate = True
    lg.setLevel(logging.WARNING)
    # This one sets its own level to INFO and logs every 30 s; we disable the auto-connector anyway.
    logging.getLogger("libp2p.network.auto_connector").setLevel(logging.WARNING)
    for name in (
        "libp2p.host.basic_host",
        "libp2p.network.swarm",
        "libp2p.protocol_muxer.multiselect_client",
        "libp2p.stream_muxer.yamux.yamux",
        "libp2p.transport.tcp.tcp",
    ):
        target = logging.getLogger(name)
        if not any(isinstance(f, _DemoteBenignErrors) for f in target.filters):
            target.addFilter(_DemoteBenignErrors())


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


class P2PService(PeerTable, StatusHandshake, ReqResp, Discovery, GossipTopics):
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
        validator_key: SigningKey | None = None,
        is_validator: Callable[[bytes], bool] | None = None,
        stem_provider: StemProvider | None = None,
    ) -> None:
        """``validator_key``: our validator's key, proven to peers in our status (:class:`ValidatorProof`);
        ``is_validator(public_key)``: whether a key is in the current validator set — peers that prove one
        get a protected slot (and probation slots let them in when the others are full).
        ``stem_provider(peer_id, tx)``: takes a transaction a peer hands us on the stem path (None) or
        says why not (a reason code); without it the stem protocol answers ``unsupported``."""
        cfg.validate()
        self.cfg = cfg
        self.chain_id = check_chain_id(chain_id)
        if not isinstance(genesis_hash, bytes | bytearray) or not 0 < len(genesis_hash) <= 64:
            raise ValueError("genesis_hash must be 1..64 bytes")
        self.genesis_hash = bytes(genesis_hash)
        self._status_provider = status_provider
        self._blocks_provider = blocks_provider
        self._blob_provider = blob_provider
        self._stem_provider = stem_provider
        self.metrics = P2PMetrics(metrics_registry)

        self._key_pair = create_new_key_pair(node_key.seed)
        self._id = ID.from_pubkey(self._key_pair.public_key)
        self.peer_id: str = self._id.to_base58()
        if self.peer_id != peer_id_from_ed25519(node_key.public_key):  # pragma: no cover - invariant
            raise RuntimeError("libp2p peer id does not match p2p.identity.peer_id_from_ed25519")

        self._protos = {
            n: TProtocol(protocol_name(self.chain_id, n)) for n in ("status", "blocks", "blob", "peers", "stem")
        }
        self._topics: dict[str, _Topic] = {}
        self._by_name: dict[str, _Topic] = {}
        self._known: dict[str, _KnownPeer] = {}
        for persistent, entries in ((False, cfg.bootstrap), (True, cfg.persistent_peers)):
            for entry in entries:
                pid, addr = _split_p2p(entry)
                if pid != self.peer_id:
                    k = self._known.setdefault(pid, _KnownPeer(addrs=[], bootstrap=True))
                    k.persistent = k.persistent or persistent
                    if addr not in k.addrs:
                        k.addrs.append(addr)
        # Bootstrap and persistent peers: admitted beyond the slot limits (the status exchange carries no
        # proof of a validator key, so configured peers are the reserved class).
        self._protected: set[str] = set(self._known)
        # Peers that proved a current validator's key at their last status: protected as well.
        self._validator_peers: dict[str, bytes] = {}
        self._is_validator = is_validator
        self._validator_proof = (
            ValidatorProof.make(validator_key, self.chain_id, self.genesis_hash, self.peer_id)
            if validator_key is not None else None
        )
        self._peers: dict[str, _PeerState] = {}
        self._bans: dict[str, tuple[float, str]] = {}
        self._penalties: dict[str, tuple[float, float]] = {}  # peer -> (points, time.monotonic())
        self._dialing: set[str] = set()
        self._dropping: set[str] = set()
        self._status_callbacks: list[Callable[[str, ChainStatus], None]] = []
        self._gossip_budgets: dict[str, dict[str, _Budget]] = {}  # peer -> topic kind -> buckets
        self._budget_logged: dict[str, float] = {}  # peer -> time.monotonic() of the last log line
        self._inflight: dict[tuple[str, str], int] = {}  # (peer, "status" | "data") -> open requests
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

    def listen_addrs(self) -> list[str]:
        """Our full multiaddrs (with ``/p2p/<id>``) once running."""
        if self._host is None or not self._running:
            return []
        return [str(a) for a in self._host.get_addrs()]

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
            admit_message=self._within_budget,
            validate=self._validate_message,  # instead of libp2p's topic validators (see p2p/gossip.py)
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
        self._host, self._router, self._pubsub = host, router, pubsub
        for name, fn in (
            ("status", self._serve_status),
            ("blocks", self._serve_blocks),
            ("blob", self._serve_blob),
            ("peers", self._serve_peers),
            ("stem", self._serve_stem),
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
        # Connections (two per peer for simultaneous dials, plus some in their handshake). The swarm
        # admits at most ``max_connections - min_connections`` inbound ones: the rest is kept for our
        # dials to outbound and protected peers.
        reserved = 2 * (cfg.reserved_outbound + len(self._protected)) + 8
        conns = 2 * (cfg.max_peers + cfg.validator_probation_slots) + 8 + reserved
        host = libp2p.new_host(
            key_pair=kp,
            sec_opt={
                NOISE_PROTOCOL_ID: NoiseTransport(kp, noise_privkey=create_x25519_key_pair().private_key)
            },
            muxer_preference="YAMUX",
            listen_addrs=[Multiaddr(f"/{'ip6' if ':' in cfg.host else 'ip4'}/{cfg.host}/tcp/{cfg.port}")],
            enable_mDNS=False,
            connection_config=ConnectionConfig(
                max_connections=conns,
                min_connections=reserved,
                low_watermark=reserved,
                high_watermark=conns,
                dial_timeout=cfg.dial_timeout,
            ),
        )
        install_slot_fix(host.get_network())  # closed inbound connections free their slot (p2p/swarm.py)
        return host

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
