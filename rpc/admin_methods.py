"""The node's ``admin_*`` methods and its RPC wiring beyond the route table of ``rpc.methods``.

Admin methods are registered with ``admin=True``: the dispatcher's admin gate refuses them unless
``rpc.admin`` is on and the caller is on loopback (without a browser ``Origin``; ``rpc.admin_loopback``)
or sends ``Authorization: Bearer <rpc.admin_token>``. They are listed by ``rpc.discover`` only when
enabled.

=========================  =======================================  ===================================
method                     params                                   result
=========================  =======================================  ===================================
``admin_peers``            –                                        ``{peers: [...], banned: {id: why}}``
``admin_banPeer``          ``{peer_id, reason?}``                   ``{peer_id, banned, score}``
``admin_unbanPeer``        ``{peer_id}``                            ``{peer_id, unbanned}``
``admin_blobGc``           –                                        gc pass stats
``admin_setLogLevel``      ``{level, logger?}``                     ``{logger, level}``
``admin_mempoolFlush``     –                                        ``{dropped}``
``admin_pinModel``         ``{model}``                              local model status (``rpc/model_methods.py``)
``admin_unpinModel``       ``{model}``                              local model status (``rpc/model_methods.py``)
=========================  =======================================  ===================================
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from state.address import encode_address

from .errors import RpcError
from .jsonrpc import MethodRegistry
from .params import Param
from .schemas import document_node_methods
from .subscriptions import SubscriptionHub

if TYPE_CHECKING:
    from .node_api import NetworkApi, NodeApi

log = logging.getLogger("aitbc.rpc")

OBJ = {"type": "object"}
PEER_ID = {"type": "string", "minLength": 10, "maxLength": 128}
LEVELS = ["debug", "info", "warning", "error", "critical"]

#: WebSocket topics of the node and the filter param each is indexed by (publish ``key``).
TOPIC_INDEXES = {"tx": "hash", "jobs": "job_id"}


def install_node_extras(reg: MethodRegistry, hub: SubscriptionHub, node: NodeApi) -> None:
    """Everything RPC the node adds to ``rpc.methods.build_rpc``: subscription caps from ``[rpc]``, topic
    indexes (fan-out O(matching subscribers)) and the ``admin_*`` methods."""
    c = node.rpc_settings
    hub.configure(
        max_subscriptions_per_connection=c.max_subscriptions_per_connection, max_subscriptions=c.max_subscriptions
    )
    for topic, param in TOPIC_INDEXES.items():
        if topic in hub:
            hub.set_index(topic, param)
    register_admin_methods(reg, node)
    document_node_methods(reg)  # result schemas and errors of the admin methods (rpc/schemas.py)


def _p2p(node: NodeApi) -> NetworkApi:
    net = node.network
    if net is None:
        raise RpcError(RpcError.NOT_FOUND, "the p2p network is disabled on this node", {"reason": "p2p_disabled"})
    return net


def _peer_id(p2p: NetworkApi, peer_id: str) -> str:
    try:
        p2p.check_peer_id(peer_id)
    except ValueError as exc:
        raise RpcError(RpcError.INVALID_PARAMS, f"invalid params: 'peer_id': {exc}") from None
    if peer_id == getattr(p2p, "peer_id", None):
        raise RpcError(RpcError.INVALID_PARAMS, "invalid params: 'peer_id' is this node's own id")
    return peer_id


def register_admin_methods(reg: MethodRegistry, node: NodeApi) -> None:
    @reg.method("admin_peers", admin=True, result=OBJ,
                summary="Admin: connected peers (id, addresses, direction, handshake, score, head, protected, "
                "the validator it proved) and banned ones")
    async def admin_peers() -> dict:
        p2p = _p2p(node)
        peers = []
        for p in p2p.peers():
            st = p.status
            peers.append({
                "peer_id": p.peer_id,
                "addrs": list(p.addrs),
                "direction": p.direction,
                "handshake": p.handshake,
                "connected_since": p.connected_since,
                "score": round(p.score, 2),
                "height": st.height if st is not None else None,
                "protected": p.protected,
                "validator": encode_address(p.validator) if p.validator is not None else None,
            })
        return {"peers": peers, "banned": dict(p2p.banned_peers())}

    @reg.method(
        "admin_banPeer",
        params=[Param("peer_id", PEER_ID), Param("reason", {"type": "string", "maxLength": 200}, required=False)],
        admin=True,
        result=OBJ,
        summary="Admin: disconnect a peer and refuse it for the p2p ban duration (through its score)",
    )
    async def admin_ban_peer(peer_id: str, reason: str = "banned by the operator") -> dict:
        p2p = _p2p(node)
        _peer_id(p2p, peer_id)
        p2p.ban(peer_id, reason)  # through its score: disconnected, refused for the p2p ban duration
        return {"peer_id": peer_id, "banned": peer_id in p2p.banned_peers(), "score": round(p2p.score(peer_id), 2)}

    @reg.method("admin_unbanPeer", params=[Param("peer_id", PEER_ID)], admin=True, result=OBJ,
                summary="Admin: lift a peer's ban and its application penalties (it may be dialed again)")
    async def admin_unban_peer(peer_id: str) -> dict:
        p2p = _p2p(node)
        _peer_id(p2p, peer_id)
        was = peer_id in p2p.banned_peers()
        p2p.unban(peer_id)
        log.info("admin: unbanned peer %s", peer_id)
        return {"peer_id": peer_id, "unbanned": was}

    @reg.method("admin_blobGc", admin=True, result=OBJ,
                summary="Admin: run one blob garbage-collection pass now; removed/kept counts and bytes")
    async def admin_blob_gc() -> dict:
        return await node.blobs.gc()

    @reg.method(
        "admin_setLogLevel",
        params=[
            Param("level", {"type": "string", "enum": LEVELS}),
            Param("logger", {"type": "string", "maxLength": 100}, required=False,
                  description="an existing logger name (e.g. aitbc.p2p); default: the root logger"),
        ],
        admin=True,
        result=OBJ,
        summary="Admin: change the log level of the node or of one of its loggers",
    )
    async def admin_set_log_level(level: str, logger: str | None = None) -> dict:
        if logger:
            if logger not in logging.root.manager.loggerDict:  # never create loggers on request
                raise RpcError(RpcError.NOT_FOUND, f"no logger named {logger!r}", {"logger": logger})
            target = logging.getLogger(logger)
        else:
            target = logging.getLogger()
        target.setLevel(level.upper())
        log.warning("admin: log level of %s set to %s", logger or "root", level)
        return {"logger": logger or "root", "level": level}

    @reg.method("admin_mempoolFlush", admin=True, result=OBJ,
                summary="Admin: drop every pending transaction from this node's mempool")
    async def admin_mempool_flush() -> dict:
        dropped = node.flush_mempool()
        log.warning("admin: mempool flushed (%d transactions dropped)", dropped)
        return {"dropped": dropped}

