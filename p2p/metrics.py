"""Prometheus metrics of the p2p layer (registered only when a registry is given)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class P2PMetrics:
    """``p2p_peers``, ``p2p_gossip_messages_total{topic,direction,result}``,
    ``p2p_gossip_bytes_total{topic,direction}``, ``p2p_reqresp_requests_total{protocol,result}``.

    ``topic`` is the kind (``tx``, ``block`` …). Gossip results: ``in``: accepted, rejected (validator:
    reject or ban), ignored (validator), oversize, malformed (not canonical CBOR), over_budget (the
    forwarder's budget was spent), dropped (a slow subscriber's channel was full);
    ``out``: published, dropped (a peer queue stayed full). Request results: outbound ok, error,
    timeout, unsupported; inbound served, bad_request, busy, failed.
    """

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.enabled = registry is not None
        if registry is None:
            return
        self.peers = Gauge("p2p_peers", "Connected libp2p peers", registry=registry)
        self.gossip_messages = Counter(
            "p2p_gossip_messages_total",
            "Gossip messages by topic kind, direction and result",
            ["topic", "direction", "result"],
            registry=registry,
        )
        self.gossip_bytes = Counter(
            "p2p_gossip_bytes_total",
            "Gossip payload bytes by topic kind and direction",
            ["topic", "direction"],
            registry=registry,
        )
        self.reqresp = Counter(
            "p2p_reqresp_requests_total",
            "Request/response exchanges by protocol and result",
            ["protocol", "result"],
            registry=registry,
        )

    def set_peers(self, n: int) -> None:
        if self.enabled:
            self.peers.set(n)

    def gossip(self, kind: str, direction: str, result: str, nbytes: int = 0) -> None:
        if self.enabled:
            self.gossip_messages.labels(kind, direction, result).inc()
            if nbytes and result in ("accepted", "published"):
                self.gossip_bytes.labels(kind, direction).inc(nbytes)

    def request(self, protocol: str, result: str) -> None:
        if self.enabled:
            self.reqresp.labels(protocol, result).inc()
