"""Resource limits of the JSON-RPC server: everything that comes from outside is bounded.

* :class:`RpcLimits` — the knobs (``[rpc]`` config keys, see README "Configuration").
* :class:`ConnectionGate` — global and per-IP caps on TCP connections (checked at accept, before any
  byte is parsed) and on WebSockets (checked at the upgrade), plus the file-descriptor reserve: a
  connection is refused when keeping it would leave fewer than the reserve free.
* :class:`RateLimiter` — per-IP token buckets for JSON-RPC calls (HTTP and WebSocket alike).
* :func:`ip_key` — the unit a per-IP limit counts: an IPv4 address, or an IPv6 /64 (one host usually
  owns a whole /64, so counting single IPv6 addresses would not bound anything).

Refusals carry a stable reason (``data.reason`` of the JSON-RPC error, and the ``reason`` label of
``rpc_refusals_total``); see :data:`REASONS`.
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from rpc.errors import BUSY, UNAUTHORIZED

__all__ = [
    "REASONS",
    "ConnectionGate",
    "FdHeadroom",
    "HostCheck",
    "RateLimiter",
    "Refusal",
    "RpcLimits",
    "ip_key",
]

#: data.reason values of refusals, with the JSON-RPC code and HTTP status they come with.
REASONS: dict[str, tuple[int, int]] = {
    "connection_limit": (BUSY, 503),  # rpc.max_connections open
    "ip_connection_limit": (BUSY, 429),  # rpc.max_connections_per_ip open from this address
    "fd_reserve": (BUSY, 503),  # accepting would eat into rpc.fd_reserve
    "ws_limit": (BUSY, 503),  # rpc.max_ws_connections open
    "ip_ws_limit": (BUSY, 429),  # rpc.max_ws_per_ip open from this address
    "rate_limited": (BUSY, 429),  # the address's token bucket is empty
    "timeout": (BUSY, 408),  # rpc.request_timeout_s passed
    "subscription_limit": (BUSY, 200),  # rpc.max_subscriptions_per_connection
    "total_subscription_limit": (BUSY, 200),  # rpc.max_subscriptions
    "origin_not_allowed": (UNAUTHORIZED, 403),  # a browser page of an origin not in rpc.cors_origins
    "host_not_allowed": (UNAUTHORIZED, 403),  # a Host header naming no allowed host (DNS rebinding)
    "content_type": (UNAUTHORIZED, 415),  # a state-changing call without Content-Type: application/json
}

#: Methods that change node or chain state besides ``admin_*``: refused without a JSON content type
#: (a browser can send form or text/plain POSTs cross-origin without a CORS preflight).
STATE_CHANGING = frozenset({"tx_submit", "tx_submitBatch", "blob_put"})

MAX_TRACKED_KEYS = 65536  # token buckets kept at most (full buckets are dropped first)


class FdHeadroom(Protocol):
    def headroom(self, held: int) -> int: ...


@dataclass(frozen=True)
class RpcLimits:
    """Bounds of the RPC server. 0 disables a timeout or the rate limit; caps must be positive."""

    max_connections: int = 1024  # TCP connections on the RPC port (HTTP keep-alive and WebSocket)
    max_connections_per_ip: int = 32
    max_ws_connections: int = 512
    max_ws_per_ip: int = 16
    idle_timeout_s: float = 15.0  # an HTTP connection without a request in flight is closed after this
    ws_idle_timeout_s: float = 300.0  # a WebSocket with no message either way is closed after this
    request_timeout_s: float = 30.0  # reading the body + handling every call of one request
    rate_limit: float = 50.0  # calls per second per address (token refill)
    rate_burst: int = 200  # bucket size
    loopback_exempt: bool = True  # loopback clients skip per-IP caps and rate limits
    cors_origins: tuple[str, ...] = ()  # browser origins allowed on /rpc and /ws ("*": any)
    #: Host header names accepted besides localhost names, IP literals and the bound host ("*": any).
    allowed_hosts: tuple[str, ...] = ()
    admin_loopback: bool = True  # loopback clients may call admin_* without the token
    state_changing: frozenset[str] = STATE_CHANGING
    fd_budget: FdHeadroom | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_connections_per_ip", "max_ws_connections", "max_ws_per_ip"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        for name in ("idle_timeout_s", "ws_idle_timeout_s", "request_timeout_s", "rate_limit"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a non-negative number")
        if self.rate_burst < 1:
            raise ValueError("rate_burst must be positive")

    @classmethod
    def from_config(cls, rpc: Any, *, fd_budget: FdHeadroom | None = None) -> RpcLimits:
        """From the ``[rpc]`` config section (``node.config.RpcSection``)."""
        return cls(
            max_connections=rpc.max_connections,
            max_connections_per_ip=rpc.max_connections_per_ip,
            max_ws_connections=rpc.max_ws_connections,
            max_ws_per_ip=rpc.max_ws_per_ip,
            idle_timeout_s=float(rpc.idle_timeout_s),
            ws_idle_timeout_s=float(rpc.ws_idle_timeout_s),
            request_timeout_s=float(rpc.request_timeout_s),
            rate_limit=float(rpc.rate_limit),
            rate_burst=rpc.rate_burst,
            loopback_exempt=rpc.loopback_exempt,
            cors_origins=tuple(rpc.cors_origins),
            allowed_hosts=tuple(getattr(rpc, "allowed_hosts", ())),
            admin_loopback=rpc.admin_loopback,
            fd_budget=fd_budget,
        )

    def origin_allowed(self, origin: str) -> bool:
        o = origin.rstrip("/").lower()
        return any(a == "*" or a.rstrip("/").lower() == o for a in self.cors_origins)


def host_name(value: str) -> str:
    """The host of a ``Host`` header value (``name:port``, ``[v6]:port``, ``v4``), lower-case, without the
    port and a trailing dot."""
    v = value.strip().lower()
    if v.startswith("["):
        end = v.find("]")
        return v[1:end] if end > 0 else v
    if v.count(":") == 1:
        v = v.split(":", 1)[0]
    return v.rstrip(".")


class HostCheck:
    """The ``Host`` allow-list against DNS rebinding: a page of ``http://evil.example:8202`` whose name the
    attacker re-points to 127.0.0.1 reaches the node same-origin, past every Origin check, but its requests
    carry ``Host: evil.example:8202``. Allowed: IP literals (nothing to rebind), ``localhost`` and
    ``*.localhost`` (browsers resolve those to loopback themselves), the bound host and ``allowed``
    (``"*"``: any host, no check). A request without a Host header (HTTP/1.0, no browser) is allowed."""

    def __init__(self, allowed: Iterable[str], bound_host: str) -> None:
        names = {host_name(a) for a in allowed if a}
        self.any = "*" in names
        names.add(host_name(bound_host))
        names.add("localhost")
        self.names = frozenset(names)

    def allowed(self, value: str | None) -> bool:
        if value is None or self.any:
            return True
        name = host_name(value)
        if name in self.names or name.endswith(".localhost"):
            return True
        try:
            ipaddress.ip_address(name.split("%", 1)[0])
        except ValueError:
            return False
        return True


def ip_key(host: str | None) -> str:
    """What per-IP limits count: the IPv4 address, or the /64 of an IPv6 address."""
    if not host:
        return "?"
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host[:64]
    if ip.version == 6:
        mapped = ip.ipv4_mapped  # type: ignore[union-attr]
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if ip.is_loopback:
        return True
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped is not None and mapped.is_loopback


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    message: str

    @property
    def code(self) -> int:
        return REASONS[self.reason][0]

    @property
    def status(self) -> int:
        return REASONS[self.reason][1]

    def data(self, **extra: Any) -> dict:
        return {"reason": self.reason, **extra}

    def body(self, **extra: Any) -> bytes:
        """The JSON-RPC error response (id null) for an HTTP refusal."""
        err = {"code": self.code, "message": self.message, "data": self.data(**extra)}
        return json.dumps({"jsonrpc": "2.0", "id": None, "error": err}, separators=(",", ":")).encode()

    def http_response(self, **extra: Any) -> bytes:
        """A complete HTTP/1.1 response (``Connection: close``) for refusing at accept."""
        body = self.body(**extra)
        phrase = {408: "Request Timeout", 429: "Too Many Requests", 503: "Service Unavailable"}.get(
            self.status, "Refused"
        )
        head = (
            f"HTTP/1.1 {self.status} {phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\nretry-after: 1\r\n\r\n"
        )
        return head.encode() + body


class RateLimiter:
    """Token buckets by key: ``rate`` tokens per second up to ``burst``. ``rate`` 0 = unlimited."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = MAX_TRACKED_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, last refill time]

    def take(self, key: str, n: int = 1) -> float | None:
        """Take ``n`` tokens (at most ``burst``: a large batch needs a full bucket): None when granted,
        else the seconds until they would be (nothing is taken then). A negative ``n`` gives tokens back."""
        if self.rate <= 0:
            return None
        if n < 0:
            b = self._buckets.get(key)
            if b is not None:
                b[0] = min(float(self.burst), b[0] - n)
            return None
        n = min(max(n, 1), self.burst)
        now = self._clock()
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            b = self._buckets[key] = [float(self.burst), now]
        else:
            b[0] = min(float(self.burst), b[0] + (now - b[1]) * self.rate)
            b[1] = now
        if b[0] >= n:
            b[0] -= n
            return None
        return (n - b[0]) / self.rate

    def _prune(self, now: float) -> None:
        full = [k for k, (tokens, at) in self._buckets.items() if tokens + (now - at) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:  # all busy: forget the oldest half
            for k in list(self._buckets)[: len(self._buckets) // 2]:
                del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)


class ConnectionGate:
    """Counts open TCP connections and WebSockets, globally and per address, and refuses beyond the caps
    or when the descriptor reserve would be touched. Not thread-safe: trio code only."""

    def __init__(self, limits: RpcLimits) -> None:
        self.limits = limits
        self.fd_budget = limits.fd_budget
        self.tcp_total = 0
        self.ws_total = 0
        self._tcp: Counter[str] = Counter()
        self._ws: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.accepted = 0

    def _exempt(self, host: str | None) -> bool:
        return self.limits.loopback_exempt and is_loopback(host)

    def admit_tcp(self, host: str | None) -> Refusal | None:
        """Count a just-accepted connection (call :meth:`release_tcp` when it closes, refused or not)."""
        key = ip_key(host)
        self.tcp_total += 1
        self._tcp[key] += 1
        lim = self.limits
        refusal = None
        if self.fd_budget is not None and self.fd_budget.headroom(self.tcp_total) < 0:
            refusal = Refusal("fd_reserve", "the node is out of file descriptors for new connections")
        elif self.tcp_total > lim.max_connections:
            refusal = Refusal("connection_limit", f"too many connections (max {lim.max_connections})")
        elif self._tcp[key] > lim.max_connections_per_ip and not self._exempt(host):
            refusal = Refusal(
                "ip_connection_limit", f"too many connections from this address (max {lim.max_connections_per_ip})"
            )
        if refusal is not None:
            self.refusals[refusal.reason] += 1
        else:
            self.accepted += 1
        return refusal

    def release_tcp(self, host: str | None) -> None:
        key = ip_key(host)
        self.tcp_total -= 1
        n = self._tcp[key] - 1
        if n > 0:
            self._tcp[key] = n
        else:
            del self._tcp[key]

    def admit_ws(self, host: str | None) -> Refusal | None:
        """Count a WebSocket at its upgrade; None if admitted (then :meth:`release_ws` when it ends)."""
        key = ip_key(host)
        lim = self.limits
        refusal = None
        if self.ws_total >= lim.max_ws_connections:
            refusal = Refusal("ws_limit", f"too many WebSocket connections (max {lim.max_ws_connections})")
        elif self._ws[key] >= lim.max_ws_per_ip and not self._exempt(host):
            refusal = Refusal(
                "ip_ws_limit", f"too many WebSocket connections from this address (max {lim.max_ws_per_ip})"
            )
        if refusal is not None:
            self.refusals[refusal.reason] += 1
            if not self._ws[key]:
                del self._ws[key]
            return refusal
        self.ws_total += 1
        self._ws[key] += 1
        return None

    def release_ws(self, host: str | None) -> None:
        key = ip_key(host)
        self.ws_total -= 1
        n = self._ws[key] - 1
        if n > 0:
            self._ws[key] = n
        else:
            del self._ws[key]

    def connections_from(self, host: str | None) -> int:
        return self._tcp.get(ip_key(host), 0)


def merge_counters(counters: Iterable[Counter[str]]) -> Counter[str]:
    out: Counter[str] = Counter()
    for c in counters:
        out.update(c)
    return out
