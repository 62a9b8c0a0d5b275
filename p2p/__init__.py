"""The node's libp2p layer (DESIGN §4).

``from p2p import P2PService, P2PConfig, ChainStatus, PeerInfo`` – the names are imported lazily so that
``p2p.identity`` (used without networking) does not pull in the libp2p stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .batch import GossipBatcher, decode_batch
    from .config import P2PConfig, protocol_name, topic_name
    from .gossip_validation import Verdict
    from .service import P2PService, PeerInfo
    from .wire import (
        BadResponse,
        ChainStatus,
        P2PError,
        PeerNotConnected,
        ProtocolUnsupported,
        RemoteError,
        RequestTimeout,
        ValidatorProof,
    )

_EXPORTS = {
    "GossipBatcher": "batch",
    "decode_batch": "batch",
    "P2PConfig": "config",
    "topic_name": "config",
    "protocol_name": "config",
    "P2PService": "service",
    "PeerInfo": "service",
    "Verdict": "gossip_validation",
    "ChainStatus": "wire",
    "P2PError": "wire",
    "PeerNotConnected": "wire",
    "ProtocolUnsupported": "wire",
    "RemoteError": "wire",
    "RequestTimeout": "wire",
    "BadResponse": "wire",
    "ValidatorProof": "wire",
}

__all__ = [
    "BadResponse",
    "ChainStatus",
    "GossipBatcher",
    "P2PConfig",
    "P2PError",
    "P2PService",
    "PeerInfo",
    "PeerNotConnected",
    "ProtocolUnsupported",
    "RemoteError",
    "RequestTimeout",
    "ValidatorProof",
    "Verdict",
    "decode_batch",
    "protocol_name",
    "topic_name",
]


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'p2p' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{mod}", __name__), name)
