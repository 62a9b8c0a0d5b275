"""Configuration of the libp2p layer and the names of its topics and protocols (DESIGN §4).

Everything here is plain data: importing this module does not import libp2p.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

KiB = 1 << 10
MiB = 1 << 20

#: Gossip topic kinds of DESIGN §4; :meth:`P2PService.register_topic` also accepts other kinds.
TOPIC_KINDS = ("tx", "block", "vote", "job", "bid", "receipt", "evidence")

#: Default upper bounds of one gossip message per topic kind, in bytes. A block carries up to
#: ``max_block_bytes`` (8 MiB by default in genesis) of transactions plus header, commit and evidence;
#: transactions travel in batches (many per message).
DEFAULT_TOPIC_MAX_BYTES: dict[str, int] = {
    "tx": 4 * MiB,
    "block": 16 * MiB,
    "vote": 4 * KiB,
    "job": 64 * KiB,
    "bid": 16 * KiB,
    "receipt": 16 * KiB,
    "evidence": 16 * KiB,
}

_KIND_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_CHAIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_kind(kind: str) -> str:
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise ValueError(f"invalid topic kind {kind!r} (lowercase letters, digits, '-', '_'; max 32)")
    return kind


def check_chain_id(chain_id: str) -> str:
    if not isinstance(chain_id, str) or not _CHAIN_RE.match(chain_id):
        raise ValueError(f"invalid chain id {chain_id!r} for topic/protocol names")
    return chain_id


def topic_name(chain_id: str, kind: str) -> str:
    """The gossipsub topic ``/aitbc/<chain_id>/<kind>/1``."""
    return f"/aitbc/{chain_id}/{kind}/1"


def protocol_name(chain_id: str, name: str) -> str:
    """A request/response protocol id ``/aitbc/<chain_id>/<name>/1`` (status, blocks, blob, peers)."""
    return f"/aitbc/{chain_id}/{name}/1"


@dataclass
class P2PConfig:
    """Knobs of :class:`p2p.service.P2PService`. The defaults suit small networks (a handful of peers)."""

    # --- listening and peers ---------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 0  # 0: the OS picks a free port
    #: Full multiaddrs with the peer id, e.g. ``/ip4/10.0.0.2/tcp/8200/p2p/12D3KooW…``.
    bootstrap: list[str] = field(default_factory=list)
    #: Addresses to tell other peers (peer exchange) instead of the bound ones (e.g. a public IP when
    #: listening on 0.0.0.0). Transport multiaddrs without ``/p2p``.
    announce_addrs: list[str] = field(default_factory=list)
    #: Like ``bootstrap``, but always (re)dialed whatever ``target_peers`` says, with the backoff capped
    #: at ``reconnect_backoff_max``. Bootstrap and persistent peers are *protected*: admitted beyond the
    #: slot limits below, so identities that cost nothing cannot crowd them out.
    persistent_peers: list[str] = field(default_factory=list)
    target_peers: int = 8  # dial known peers while fewer outbound (or protected) peers are connected
    max_peers: int = 32  # peers beyond this are refused (protected peers do not count)
    #: Of ``max_peers``, slots only our own dials may fill: inbound peers get ``max_peers -
    #: outbound_slots`` at most (Lighthouse's outbound target, CometBFT's max_num_outbound_peers).
    #: None: a quarter of ``max_peers`` (at least 2, and below ``max_peers``).
    outbound_slots: int | None = None
    #: Connections admitted beyond the slot limits only to prove a validator key in the status exchange
    #: (a validator that finds every slot taken still gets in; one that does not prove it is dropped at
    #: its status). Used when the node checks validator proofs at all.
    validator_probation_slots: int = 2
    peer_exchange: bool = True  # ask peers for their peers (``/aitbc/<chain>/peers/1``)
    pex_interval: float = 30.0  # seconds between peer-exchange rounds while below target_peers
    max_known_peers: int = 256  # size of the address book (bootstrap entries are never evicted)

    # --- gossipsub -------------------------------------------------------------------------------
    gossip_degree: int = 4  # D
    degree_low: int = 2  # D_lo
    degree_high: int = 8  # D_hi
    heartbeat_interval: float = 1.0  # seconds
    #: Per-topic upper bound of one message (bytes); :meth:`register_topic` may override per kind.
    topic_max_bytes: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_TOPIC_MAX_BYTES))
    #: gossipsub's per-forwarder, per-topic rate limit (py-libp2p defaults to 10/s and drops the rest,
    #: our own publishes included). publish() paces itself below this.
    gossip_rate_limit: float = 1000.0
    #: Outbound queue per peer (py-libp2p defaults to 32 RPCs and drops silently when full).
    peer_queue_max_msgs: int = 256
    peer_queue_max_bytes: int = 64 * MiB
    #: How long publish() waits for a full peer queue to drain before sending anyway (that peer then
    #: drops the message; counted as ``result="dropped"``).
    publish_backpressure_timeout: float = 5.0
    #: Buffer of each channel returned by subscribe(); a consumer that falls this far behind loses
    #: messages (counted as ``direction="in", result="dropped"``) instead of stalling the node.
    subscription_buffer: int = 4096

    # --- scoring ---------------------------------------------------------------------------------
    invalid_message_penalty: float = 10.0  # score points per invalid gossip message (decays)
    score_decay: float = 0.99  # per heartbeat, for the gossip counters (half-life ~69 s at 1 s)
    gossip_threshold: float = -30.0  # below: we stop sending gossip to the peer
    publish_threshold: float = -50.0  # below: we drop messages the peer forwards
    graylist_threshold: float = -50.0  # below: the peer is disconnected and banned
    penalty_half_life: float = 300.0  # seconds; application penalties (penalize()) decay with it
    ban_duration: float = 600.0  # seconds a graylisted or wrong-chain peer is refused / not dialed

    #: Per-peer, per-topic gossip budgets (token buckets refilled continuously, holding ``burst``
    #: seconds' worth): a message beyond them is dropped before validation and costs the forwarder
    #: ``over_budget_penalty`` score points. The byte bucket always holds at least two messages of the
    #: topic's bound.
    peer_gossip_msgs_per_s: float = 500.0
    peer_gossip_bytes_per_s: int = 8 * MiB
    peer_gossip_burst: float = 2.0  # seconds
    over_budget_penalty: float = 2.0
    #: Messages larger than this are decoded (canonical-CBOR check) in a worker thread.
    offload_decode_bytes: int = 64 * KiB

    # --- timing ----------------------------------------------------------------------------------
    dial_timeout: float = 10.0
    reconnect_backoff_min: float = 1.0  # seconds before redialing a lost or failed peer
    reconnect_backoff_max: float = 60.0  # exponential backoff cap
    handshake_timeout: float = 10.0  # status exchange on a new connection; a peer that misses it is dropped
    status_interval: float = 3.0  # re-request every peer's status this often
    request_timeout: float = 10.0  # one request/response exchange (each read/write bounded by it)

    # --- request/response bounds -----------------------------------------------------------------
    max_blocks_per_request: int = 256
    max_blocks_response_bytes: int = 32 * MiB  # at least one item is always sent if it fits
    blob_chunk_bytes: int = 1 * MiB
    max_blob_bytes: int = 64 * MiB
    max_inbound_requests: int = 32  # concurrent inbound requests per protocol, all peers (more: "busy")
    #: Concurrent inbound requests one peer may have open (blocks, blob, peers together; status has its
    #: own allowance of 2): one peer holding streams open cannot starve the others.
    max_requests_per_peer: int = 4

    @property
    def reserved_outbound(self) -> int:
        """Slots of ``max_peers`` that inbound peers may not take."""
        if self.outbound_slots is not None:
            return self.outbound_slots
        return min(self.max_peers - 1, max(2, self.max_peers // 4))

    @property
    def max_inbound_peers(self) -> int:
        return self.max_peers - self.reserved_outbound

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"p2p port {self.port} out of range")
        if self.target_peers < 0 or self.max_peers < 1 or self.target_peers > self.max_peers:
            raise ValueError("need 0 <= target_peers <= max_peers and max_peers >= 1")
        if self.outbound_slots is not None and not 0 <= self.outbound_slots < self.max_peers:
            raise ValueError("need 0 <= outbound_slots < max_peers")
        if not 0 <= self.validator_probation_slots <= 64:
            raise ValueError("need 0 <= validator_probation_slots <= 64")
        if not 1 <= self.degree_low <= self.gossip_degree <= self.degree_high:
            raise ValueError("need 1 <= degree_low <= gossip_degree <= degree_high")
        if self.heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be > 0")
        if not 0 < self.reconnect_backoff_min <= self.reconnect_backoff_max:
            raise ValueError("need 0 < reconnect_backoff_min <= reconnect_backoff_max")
        if not self.graylist_threshold <= self.publish_threshold <= self.gossip_threshold <= 0:
            raise ValueError("need graylist_threshold <= publish_threshold <= gossip_threshold <= 0")
        for name in (
            "dial_timeout",
            "handshake_timeout",
            "status_interval",
            "request_timeout",
            "pex_interval",
            "penalty_half_life",
            "gossip_rate_limit",
            "publish_backpressure_timeout",
            "peer_gossip_msgs_per_s",
            "peer_gossip_burst",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        for name in (
            "max_blocks_per_request",
            "max_blocks_response_bytes",
            "blob_chunk_bytes",
            "max_blob_bytes",
            "max_inbound_requests",
            "peer_queue_max_msgs",
            "peer_queue_max_bytes",
            "subscription_buffer",
            "max_known_peers",
            "max_requests_per_peer",
            "peer_gossip_bytes_per_s",
            "offload_decode_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.over_budget_penalty < 0:
            raise ValueError("over_budget_penalty must be >= 0")
        for kind, n in self.topic_max_bytes.items():
            check_kind(kind)
            if not 1 <= n <= 64 * MiB:
                raise ValueError(f"topic_max_bytes[{kind!r}] must be in 1..64 MiB")
