"""HTTP + WebSocket JSON-RPC server (quart-trio app served by hypercorn under trio).

Routes:

* ``POST /rpc``   JSON-RPC 2.0 (single or batch); other methods -> 405. Also ``POST /`` (geth/CometBFT
  clients); ``GET /`` is the web app's page when one is attached (:attr:`RpcServer.index_route`, ``rpc/web``)
* ``GET  /ws``    WebSocket: the same JSON-RPC calls plus ``subscribe``/``unsubscribe``
* ``GET  /metrics`` Prometheus text exposition of ``metrics_registry`` (404 without one)
* ``GET  /health``  200 "ok"; with a :attr:`RpcServer.health` provider (the node) JSON: 200
  ``{"status": "ok", ...}`` when healthy, else 503 ``{"status": "stalled"|"syncing", "reasons": [...], ...}``

``/rpc`` and ``/ws`` are served by a lean ASGI layer installed in front of the Quart
app (``app.asgi_app`` middleware): a JSON-RPC call then costs one dict parse,
one encode and two ASGI sends instead of a full Quart request/response cycle.
Everything else (``/health``, ``/metrics``, routes the node adds to
:attr:`RpcServer.app`, ASGI lifespan) goes through Quart.

Limits (``rpc.limits.RpcLimits``; everything from outside is hostile):

* connections — hypercorn is driven by our own accept loop (:meth:`RpcServer._serve_hypercorn`, the
  body of ``hypercorn.trio.run.worker_serve`` with a gate in front of ``TCPServer``): each accepted TCP
  connection is counted globally and per address and checked against the file-descriptor reserve
  before hypercorn sees a byte; a refused one gets a canned HTTP 429/503 with a JSON-RPC error
  (``data.reason``) and is closed. WebSockets are counted again at the upgrade (refused with an HTTP
  429/503 response instead of the 101).
* idle connections — HTTP keep-alive connections (and half-sent request heads) are closed by
  hypercorn after ``idle_timeout_s``; a WebSocket with no message either way for ``ws_idle_timeout_s``
  is closed with code 1000 "idle timeout".
* time — reading a request body and running its calls share one ``request_timeout_s`` deadline
  (408 for a body that is too slow, error -32005 ``timeout`` for a call that is).
* rate — every JSON-RPC call (each member of a batch, each WebSocket message) takes a token of the
  client address's bucket; an empty bucket answers HTTP 429 / error -32005 ``rate_limited``.
* browsers — a request or WebSocket upgrade carrying an ``Origin`` not listed in ``cors_origins`` is
  refused (403, ``origin_not_allowed``): any web page can make the operator's browser POST to
  127.0.0.1. State-changing methods also need ``Content-Type: application/json`` (which a page can
  only send cross-origin after a CORS preflight this server answers only for allowed origins).
* DNS rebinding — every HTTP request and WebSocket upgrade whose ``Host`` names a host outside
  ``allowed_hosts`` (besides localhost names, IP literals and the bound host) is refused (403,
  ``host_not_allowed``), before any route.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from quart import Response
from quart_trio import QuartTrio

from rpc.jsonrpc import (
    REQUEST_TOO_LARGE_RESPONSE,
    CallContext,
    Dispatcher,
    MethodRegistry,
    RpcMetrics,
    make_openrpc_provider,
)
from rpc.limits import REASONS as REFUSAL_REASONS
from rpc.limits import ConnectionGate, HostCheck, RateLimiter, Refusal, RpcLimits, ip_key, is_loopback
from rpc.subscriptions import SubscriberConnection, SubscriptionHub

__all__ = ["RpcServer"]

log = logging.getLogger("aitbc.rpc")

_JSON_HEADERS_PREFIX = (b"content-type", b"application/json")
_405_BODY = (
    b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"HTTP method not allowed; use POST"}}'
)
_426_BODY = b"WebSocket upgrade required\n"

# Close codes used on /ws.
WS_GOING_AWAY = 1001
WS_NORMAL = 1000  # with reason "idle timeout"

#: Refusals answered politely (response sent, request drained) at once; more are just closed.
MAX_GRACEFUL_REFUSALS = 64
REFUSAL_TIMEOUT = 1.0  # seconds a refused connection may take to read its answer
QUICK_REFUSAL_TIMEOUT = 0.05  # beyond MAX_GRACEFUL_REFUSALS: the answer is written or dropped
REFUSAL_DRAIN_BYTES = 64 << 10
EOF_GRACE = 1.0  # seconds a connection's task may outlive its client's EOF (e.g. to finish a call)


class _Outcome:
    """Sentinels for :meth:`RpcServer._read_body`."""

    DISCONNECTED = object()
    TOO_LARGE = object()  # body fully read (discarded): reply 413, keep the connection
    TOO_LARGE_CLOSE = object()  # stopped reading: reply 413 and close the connection


async def _send_simple(
    send: Any, status: int, body: bytes, content_type: bytes, extra: list | None = None
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def _unwrap_single_error() -> AsyncIterator[None]:
    """Re-raise a lone non-Cancelled error (e.g. the OSError of a failed bind) out of
    the exception groups that trio/hypercorn nurseries wrap it in."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves: list[BaseException] = []
        stack: list[BaseException] = [group]
        while stack:
            e = stack.pop()
            if isinstance(e, BaseExceptionGroup):
                stack.extend(e.exceptions)
            else:
                leaves.append(e)
        if len(leaves) == 1 and not isinstance(leaves[0], trio.Cancelled):
            raise leaves[0] from group
        raise


class _WsState:
    __slots__ = ("disconnected",)

    def __init__(self) -> None:
        self.disconnected = False


def _header_text(value: bytes) -> str:
    return value.decode("latin-1").strip()


def _is_json_content_type(value: bytes | None) -> bool:
    if value is None:
        return False
    return value.split(b";", 1)[0].strip().lower() == b"application/json"


class _CountedStream(trio.abc.HalfCloseableStream):
    """A connection's stream handed to hypercorn: calls ``on_close`` once, as soon as it is closed.

    When the client closes its side (EOF), hypercorn stops reading but keeps the socket open until its
    keep-alive timer fires; here the socket is closed at once (nothing more can be exchanged on it:
    hypercorn reports EOF to the app as a disconnect) and ``on_eof`` lets the server end that
    connection's task soon after. So the gate counts live sockets, and a client that connects and
    disconnects quickly costs no descriptor for the length of a keep-alive period.
    """

    def __init__(
        self, stream: trio.SocketStream, on_close: Callable[[], None], on_eof: Callable[[], None] | None = None
    ) -> None:
        self._stream = stream
        self._on_close: Callable[[], None] | None = on_close
        self._on_eof = on_eof

    def __getattr__(self, name: str) -> Any:  # socket, setsockopt, ... (do_handshake: AttributeError)
        return getattr(self._stream, name)

    def release(self) -> None:
        cb, self._on_close = self._on_close, None
        if cb is not None:
            cb()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self._stream.receive_some(max_bytes)
        if not data and self._on_eof is not None:
            on_eof, self._on_eof = self._on_eof, None
            with trio.CancelScope(shield=True):
                await self.aclose()
            on_eof()
        return data

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self.release()


class _LimitsCollector:
    """Prometheus collector for the server's limits: read at scrape time (on the trio thread)."""

    def __init__(self, server: RpcServer) -> None:
        self.server = server

    def describe(self) -> list:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.server
        for name, doc, value in (
            ("rpc_connections", "Open TCP connections on the RPC port", s.gate.tcp_total),
            ("rpc_ws_connections", "Open WebSocket connections", s.gate.ws_total),
            ("rpc_ws_subscriptions", "Live WebSocket subscriptions", s.hub.total_subscriptions),
        ):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], value)
            yield g
        fd = s.limits.fd_budget
        if fd is not None:
            g = GaugeMetricFamily("rpc_fd_headroom", "File descriptors left for connections above the reserve")
            g.add_metric([], fd.headroom(s.gate.tcp_total))
            yield g
        c = CounterMetricFamily("rpc_refusals", "Refused connections and calls, by reason", labels=["reason"])
        merged = Counter(dict.fromkeys(REFUSAL_REASONS, 0))  # every reason from 0: rate() sees the first one
        merged.update(s.gate.refusals)
        merged.update(s.dispatcher.refusals)
        for reason, n in sorted(merged.items()):
            c.add_metric([reason], n)
        yield c
        checked = CounterMetricFamily(
            "rpc_ws_fanout_checked", "Subscriptions examined to publish events, by topic", labels=["topic"]
        )
        sent = CounterMetricFamily("rpc_ws_notifications", "Notifications queued, by topic", labels=["topic"])
        for t in s.hub.topics():
            checked.add_metric([t.name], t.checked)
            sent.add_metric([t.name], t.delivered)
        yield checked
        yield sent


async def _abort_transport(send: Any) -> None:
    """Close the TCP stream under a hypercorn connection, given its ASGI ``send``.

    Follows WSStream.send -> H11/H2 protocol .send -> TCPServer.stream (hypercorn
    internals, looked up defensively); closing the trio stream wakes a write that
    is blocked on a peer that stopped reading.  No-op if the layout is unknown.
    """
    obj = getattr(send, "__self__", None)
    for _ in range(6):
        if obj is None:
            return
        stream = getattr(obj, "stream", None)
        if isinstance(stream, trio.abc.Stream):
            try:
                await stream.aclose()
            except Exception:  # pragma: no cover - best effort
                log.debug("closing a stuck WebSocket transport failed", exc_info=True)
            return
        obj = getattr(getattr(obj, "send", None), "__self__", None)


class RpcServer:
    """JSON-RPC 2.0 over HTTP and WebSocket, plus ``/metrics`` and ``/health``.

    Run it with ``port = await nursery.start(server.serve)``; cancelling the
    enclosing scope shuts it down gracefully (open WebSockets get close 1001,
    in-flight requests get up to ``shutdown_timeout`` seconds) and then hard.
    """

    def __init__(
        self,
        registry: MethodRegistry,
        hub: SubscriptionHub,
        *,
        host: str = "127.0.0.1",
        port: int = 8202,
        max_body_bytes: int = 4 << 20,
        max_batch: int = 1000,
        admin_enabled: bool = False,
        admin_token: str | None = None,
        metrics_registry: CollectorRegistry | None = None,
        title: str = "aitbc-peer",
        version: str = "0.1.0",
        access_log: bool = False,
        shutdown_timeout: float = 2.0,
        limits: RpcLimits | None = None,
    ) -> None:
        if max_body_bytes < 1 or max_batch < 1:
            raise ValueError("max_body_bytes and max_batch must be positive")
        self.limits = limits = limits if limits is not None else RpcLimits()
        self.gate = ConnectionGate(limits)
        self.rate_limiter = RateLimiter(limits.rate_limit, limits.rate_burst)
        self._refusing = 0
        self.registry = registry
        self.hub = hub
        self.host = host
        self.host_check = HostCheck(limits.allowed_hosts, host)
        self.port = port  # the bound port once serving (port=0 binds an ephemeral one)
        self._bind_port = port
        self.max_body_bytes = max_body_bytes
        self.max_batch = max_batch
        self.admin_enabled = admin_enabled
        self.metrics_registry = metrics_registry
        self.access_log = access_log
        self.shutdown_timeout = shutdown_timeout
        #: Seconds a WebSocket may take to complete its close handshake (1008/1001)
        #: before its transport is closed under it.
        self.ws_close_timeout = 5.0
        self.metrics = RpcMetrics(metrics_registry) if metrics_registry is not None else None
        self.dispatcher = Dispatcher(
            registry,
            max_batch=max_batch,
            admin_enabled=admin_enabled,
            admin_token=admin_token,
            metrics=self.metrics,
            openrpc=make_openrpc_provider(
                registry, hub, title=title, version=version, include_admin=admin_enabled
            ),
            admin_loopback=limits.admin_loopback,
            state_changing=limits.state_changing,
        )
        if metrics_registry is not None:
            metrics_registry.register(_LimitsCollector(self))
        self._ws_conns: set[SubscriberConnection] = set()
        self._stopping = False
        self._serving = False
        #: Extra raw-ASGI HTTP routes by path prefix (the node's OpenAI endpoint, ``rpc/openai.py``); the
        #: connection limits apply to them, the handler applies origin checks and rates itself.
        self.http_routes: list[tuple[str, Callable[[Any, Any, Any], Awaitable[None]]]] = []
        #: ``GET /`` (any method but POST/OPTIONS, which are JSON-RPC): the web app's page (``rpc/web``); None: 404.
        self.index_route: Callable[[Any, Any, Any], Awaitable[None]] | None = None
        #: Accept a browser ``Origin`` equal to ``http(s)://<Host>`` besides ``cors_origins``: the page
        #: this server serves itself (``rpc/web``) calling ``/rpc`` and ``/ws``.
        self.allow_same_origin = False
        #: ``GET /health`` body: a dict whose ``status`` is "ok" (200) or a problem (503); None: plain "ok".
        self.health: Callable[[], dict] | None = None
        self.app = self._build_app()

    # ------------------------------------------------------------ per-client
    def _rate_for(self, host: str | None) -> Callable[[int], float | None] | None:
        """The client's token bucket (None: not limited)."""
        lim = self.limits
        if lim.rate_limit <= 0 or (lim.loopback_exempt and is_loopback(host)):
            return None
        return partial(self.rate_limiter.take, ip_key(host))

    def _host_refusal(self, scope: Any) -> Refusal | None:
        """403 for a ``Host`` header outside the allow-list (``rpc.allowed_hosts``; DNS rebinding)."""
        value = None
        for name, v in scope["headers"]:
            if name == b"host":
                value = _header_text(v)
                break
        if self.host_check.allowed(value):
            return None
        self.gate.refusals["host_not_allowed"] += 1
        return Refusal(
            "host_not_allowed",
            f"host {(value or '')[:100]!r} is not allowed: add its name to rpc.allowed_hosts",
        )

    def _origin_refusal(self, origin: str | None, scope: Any = None) -> Refusal | None:
        if origin is None or self.limits.origin_allowed(origin):
            return None
        if self.allow_same_origin and scope is not None and self._same_origin(origin, scope):
            return None
        self.gate.refusals["origin_not_allowed"] += 1
        return Refusal("origin_not_allowed", f"cross-origin requests from {origin[:100]!r} are not allowed")

    def _same_origin(self, origin: str, scope: Any) -> bool:
        """``origin`` is ``http(s)://`` + this request's ``Host`` (already checked against DNS rebinding);
        never with ``allowed_hosts = ["*"]``, where any name would do."""
        if self.host_check.any:
            return False
        for name, value in scope["headers"]:
            if name == b"host":
                host = _header_text(value).lower()
                o = origin.rstrip("/").lower()
                return bool(host) and o in (f"http://{host}", f"https://{host}")
        return False

    # ------------------------------------------------------------------ app
    def _build_app(self) -> QuartTrio:
        app = QuartTrio(__name__, static_folder=None)
        app.config["MAX_CONTENT_LENGTH"] = self.max_body_bytes

        @app.get("/health")
        async def health() -> Response:
            if self.health is None:
                return Response("ok", status=200, content_type="text/plain; charset=utf-8")
            body = self.health()
            return Response(json.dumps(body), status=200 if body.get("status") == "ok" else 503,
                            content_type="application/json")

        @app.get("/metrics")
        async def metrics() -> Response:
            if self.metrics_registry is None:
                return Response("metrics disabled\n", status=404, content_type="text/plain")
            return Response(
                generate_latest(self.metrics_registry), status=200, content_type=CONTENT_TYPE_LATEST
            )

        quart_asgi = app.asgi_app

        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            kind = scope["type"]
            if kind in ("http", "websocket"):
                refusal = self._host_refusal(scope)
                if refusal is not None:
                    if kind == "websocket":
                        if (await receive())["type"] == "websocket.connect":
                            await self._ws_refuse(scope, send, refusal)
                        return None
                    return await _send_simple(send, refusal.status, refusal.body(), b"application/json")
            if kind == "http":
                path = scope["path"]
                # JSON-RPC at /rpc, and at / (POST and CORS preflight only: GET / is kept for a web app)
                if path == "/rpc" or (path == "/" and scope["method"] in ("POST", "OPTIONS")):
                    return await self._http_rpc(scope, receive, send)
                for prefix, handler in self.http_routes:
                    if path.startswith(prefix):
                        return await handler(scope, receive, send)
                if path == "/" and self.index_route is not None:
                    return await self.index_route(scope, receive, send)
                if path == "/ws":
                    return await _send_simple(
                        send,
                        426,
                        _426_BODY,
                        b"text/plain",
                        [(b"upgrade", b"websocket"), (b"connection", b"upgrade")],
                    )
            elif kind == "websocket" and scope["path"] == "/ws":
                return await self._ws_endpoint(scope, receive, send)
            await quart_asgi(scope, receive, send)

        app.asgi_app = asgi  # type: ignore[method-assign]
        return app

    # ------------------------------------------------------------------ HTTP
    async def _http_rpc(self, scope: Any, receive: Any, send: Any) -> None:
        authorization = None
        declared = None
        origin = None
        content_type = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
            elif name == b"authorization":
                authorization = value
            elif name == b"origin":
                origin = _header_text(value)
            elif name == b"content-type":
                content_type = value
        refusal = self._origin_refusal(origin, scope)
        if refusal is not None:
            await _send_simple(send, refusal.status, refusal.body(), b"application/json")
            return
        cors = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"origin")] if origin else []
        if scope["method"] == "OPTIONS" and origin is not None:  # CORS preflight of an allowed origin
            await _send_simple(
                send,
                204,
                b"",
                b"text/plain",
                cors
                + [
                    (b"access-control-allow-methods", b"POST, OPTIONS"),
                    (b"access-control-allow-headers", b"content-type, authorization"),
                    (b"access-control-max-age", b"600"),
                ],
            )
            return
        if scope["method"] != "POST":
            await _send_simple(send, 405, _405_BODY, b"application/json", [(b"allow", b"POST"), *cors])
            return
        client = scope.get("client")
        host = client[0] if client else None
        timeout = self.limits.request_timeout_s
        deadline = trio.current_time() + timeout if timeout > 0 else None
        with trio.CancelScope(deadline=deadline if deadline is not None else float("inf")) as reading:
            body = await self._read_body(receive, declared)
        if reading.cancelled_caught:
            self.dispatcher.refusals["timeout"] += 1
            late = Refusal("timeout", f"request body not received within {timeout:g} s")
            await _send_simple(
                send, late.status, late.body(), b"application/json", [(b"connection", b"close"), *cors]
            )
            return
        if type(body) is not bytes:
            if body is _Outcome.DISCONNECTED:
                return
            extra = [(b"connection", b"close"), *cors] if body is _Outcome.TOO_LARGE_CLOSE else cors
            if self.metrics is not None:
                self.metrics.record("unknown", False, 0.0)
            await _send_simple(send, 413, REQUEST_TOO_LARGE_RESPONSE.encode(), b"application/json", extra)
            return
        ctx = CallContext(host, authorization)
        ctx.rate = self._rate_for(host)
        ctx.deadline = deadline
        ctx.json_body = _is_json_content_type(content_type)
        ctx.origin = origin
        out = await self.dispatcher.handle(body, ctx)
        if out is None:
            await send({"type": "http.response.start", "status": 204, "headers": cors})
            await send({"type": "http.response.body", "body": b""})
            return
        data = out.encode()
        headers = [_JSON_HEADERS_PREFIX, (b"content-length", b"%d" % len(data)), *cors]
        if ctx.retry_after is not None:
            headers.append((b"retry-after", b"%d" % max(1, int(ctx.retry_after + 0.999))))
        await send({"type": "http.response.start", "status": ctx.status or 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _read_body(self, receive: Any, declared: int | None) -> Any:
        limit = self.max_body_bytes
        # Bodies a little over the limit are read and discarded so that the 413
        # reaches the client on a healthy keep-alive connection; beyond twice the
        # limit we stop reading and close instead.
        drain_limit = 2 * limit
        if declared is not None and declared > drain_limit:
            return _Outcome.TOO_LARGE_CLOSE
        too_large = declared is not None and declared > limit
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return _Outcome.DISCONNECTED
            chunk = msg.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    too_large = True
                    chunks.clear()
                    if size > drain_limit:
                        return _Outcome.TOO_LARGE_CLOSE
                elif not too_large:
                    chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        if too_large:
            return _Outcome.TOO_LARGE
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    # ------------------------------------------------------------- WebSocket
    async def _ws_refuse(self, scope: Any, send: Any, refusal: Refusal) -> None:
        """Answer a WebSocket upgrade with an HTTP error instead of the 101 (403 without the extension)."""
        if "websocket.http.response" in (scope.get("extensions") or {}):
            body = refusal.body()
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": refusal.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:  # pragma: no cover - hypercorn supports the extension
            await send({"type": "websocket.close", "code": 1008})

    async def _ws_endpoint(self, scope: Any, receive: Any, send: Any) -> None:
        msg = await receive()
        if msg["type"] != "websocket.connect":
            return
        if self._stopping:
            await send({"type": "websocket.close", "code": WS_GOING_AWAY})
            return
        authorization = None
        origin = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"origin":
                origin = _header_text(value)
        client = scope.get("client")
        host = client[0] if client else None
        refusal = self._origin_refusal(origin, scope) or self.gate.admit_ws(host)
        if refusal is not None:
            await self._ws_refuse(scope, send, refusal)
            return
        try:
            await send({"type": "websocket.accept"})
            conn = self.hub.open_connection()
            ctx = CallContext(host, authorization, conn)
            ctx.rate = self._rate_for(host)
            ctx.origin = origin
            state = _WsState()
            self._ws_conns.add(conn)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._ws_writer, conn, send)
                    nursery.start_soon(self._ws_watchdog, conn, state, send, nursery.cancel_scope)
                    nursery.start_soon(self._ws_idle, conn)
                    await self._ws_reader(conn, ctx, receive)
                    state.disconnected = True
                    nursery.cancel_scope.cancel()
            finally:
                self._ws_conns.discard(conn)
                conn.close()
        finally:
            self.gate.release_ws(host)

    async def _ws_idle(self, conn: SubscriberConnection) -> None:
        """Close the WebSocket once no message went either way for ``ws_idle_timeout_s``."""
        idle = self.limits.ws_idle_timeout_s
        if idle <= 0:
            return
        while not conn.closing:
            deadline = conn.last_activity + idle
            if trio.current_time() >= deadline:
                log.debug("closing an idle WebSocket")
                conn.request_close(WS_NORMAL, "idle timeout")
                return
            await trio.sleep_until(deadline)

    async def _ws_reader(self, conn: SubscriberConnection, ctx: CallContext, receive: Any) -> None:
        handle = self.dispatcher.handle
        timeout = self.limits.request_timeout_s
        while True:
            msg = await receive()
            kind = msg["type"]
            if kind == "websocket.receive":
                if conn.closing:
                    continue  # closing: ignore further requests, wait for the disconnect
                now = trio.current_time()
                conn.last_activity = now
                ctx.deadline = now + timeout if timeout > 0 else None
                data = msg.get("text")
                if data is None:
                    data = msg.get("bytes") or b""
                out = await handle(data, ctx)
                if out is not None and not conn.closing:
                    try:
                        await conn.send_response(out)
                    except (trio.ClosedResourceError, trio.BrokenResourceError):
                        pass
            elif kind == "websocket.disconnect":
                return

    async def _ws_writer(self, conn: SubscriberConnection, send: Any) -> None:
        outgoing = conn.outgoing
        while True:
            try:
                text = await outgoing.receive()
            except trio.EndOfChannel:
                break
            if conn.closing:
                break  # drop whatever is still queued
            await send({"type": "websocket.send", "text": text})
            conn.last_activity = trio.current_time()
        if conn.close_code is not None:
            await send({"type": "websocket.close", "code": conn.close_code, "reason": conn.close_reason})

    async def _ws_watchdog(
        self, conn: SubscriberConnection, state: _WsState, send: Any, cancel_scope: trio.CancelScope
    ) -> None:
        """Once a close is requested, bound how long the connection may linger.

        The writer can be stuck in a socket write to a client that does not read
        (hypercorn shields those writes from cancellation), so past the deadline
        (or if the server is torn down meanwhile) the transport is closed under it.
        """
        await conn.close_requested.wait()
        timeout = self.ws_close_timeout
        if self._stopping:
            timeout = min(timeout, self.shutdown_timeout / 2)
        try:
            await trio.sleep(timeout)
        finally:
            if not state.disconnected:
                with trio.CancelScope(shield=True):
                    await _abort_transport(send)
            cancel_scope.cancel()

    # ----------------------------------------------------------------- serve
    def _hypercorn_config(self) -> HypercornConfig:
        config = HypercornConfig()
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        config.bind = [f"{host}:{self._bind_port}"]
        config.accesslog = logging.getLogger("aitbc.rpc.access") if self.access_log else None
        config.errorlog = logging.getLogger("aitbc.rpc.hypercorn")
        config.websocket_max_message_size = self.max_body_bytes
        config.graceful_timeout = self.shutdown_timeout
        config.include_server_header = False
        if self.limits.idle_timeout_s > 0:
            config.keep_alive_timeout = self.limits.idle_timeout_s
        else:
            config.keep_alive_timeout = float("inf")
        return config

    async def _serve_hypercorn(
        self,
        config: HypercornConfig,
        shutdown_trigger: Callable[[], Awaitable[None]],
        task_status: trio.TaskStatus[list[str]],
    ) -> None:
        """``hypercorn.trio.run.worker_serve`` (plain TCP, one worker) with :meth:`_handle_tcp` in front
        of hypercorn's per-connection ``TCPServer``: connections are gated before hypercorn reads them."""
        from hypercorn.trio.lifespan import Lifespan
        from hypercorn.trio.statsd import StatsdLogger
        from hypercorn.trio.tcp_server import TCPServer
        from hypercorn.trio.worker_context import WorkerContext
        from hypercorn.typing import ConnectionState
        from hypercorn.utils import ShutdownError, raise_shutdown, repr_socket_addr, wrap_app

        app = wrap_app(self.app, config.wsgi_max_body_size, None)
        config.set_statsd_logger_class(StatsdLogger)
        lifespan_state: dict = {}
        lifespan = Lifespan(app, config, lifespan_state)
        context = WorkerContext(None)
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            async with trio.open_nursery() as server_nursery:
                sockets = config.create_sockets()
                listeners = []
                binds = []
                for sock in sockets.insecure_sockets:
                    sock.listen(config.backlog)
                    listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                    binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
                state = ConnectionState(lifespan_state.copy())
                run_connection = partial(TCPServer, app, config, context, state)
                task_status.started(binds)
                try:
                    async with trio.open_nursery(strict_exception_groups=True) as nursery:
                        nursery.start_soon(raise_shutdown, shutdown_trigger)
                        nursery.start_soon(raise_shutdown, context.terminate.wait)
                        nursery.start_soon(
                            partial(
                                trio.serve_listeners,
                                partial(self._handle_tcp, run_connection),
                                listeners,
                                handler_nursery=server_nursery,
                            )
                        )
                        await trio.sleep_forever()
                except BaseExceptionGroup as error:
                    _, other_errors = error.split((ShutdownError, KeyboardInterrupt))
                    if other_errors is not None:
                        raise other_errors from None
                finally:
                    await context.terminated.set()
                    server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()

    async def _handle_tcp(self, run_connection: Callable[[Any], Awaitable[None]], stream: trio.SocketStream) -> None:
        """One accepted connection: counted and checked by the gate, then handed to hypercorn or refused."""
        try:
            peer = stream.socket.getpeername()
            host = peer[0] if isinstance(peer, tuple) else None
        except OSError:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            return
        refusal = self.gate.admit_tcp(host)
        if refusal is not None:
            counted = _CountedStream(stream, partial(self.gate.release_tcp, host))
            try:
                await self._refuse_tcp(counted, refusal)
            finally:
                counted.release()
            return
        with trio.CancelScope() as scope:

            def on_eof() -> None:  # the client is gone: let an app call in flight finish briefly, then end
                scope.deadline = min(scope.deadline, trio.current_time() + EOF_GRACE)

            counted = _CountedStream(stream, partial(self.gate.release_tcp, host), on_eof)
            try:
                await run_connection(counted)
            finally:
                counted.release()

    async def _refuse_tcp(self, stream: trio.abc.HalfCloseableStream, refusal: Refusal) -> None:
        """Answer a refused connection with a canned HTTP error and close it. The request is drained
        (bounded in bytes and time) so that closing does not reset the answer away; beyond
        :data:`MAX_GRACEFUL_REFUSALS` at once connections are closed without an answer."""
        log.debug("refusing an RPC connection: %s", refusal.reason)
        if self._refusing >= MAX_GRACEFUL_REFUSALS:
            # A flood: answer without waiting for the request (the answer fits the socket buffer) and close
            # at once. The client may see a reset instead, but no descriptor is held for it.
            with trio.move_on_after(QUICK_REFUSAL_TIMEOUT):
                try:
                    await stream.send_all(refusal.http_response())
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
            with trio.CancelScope(shield=True):
                await stream.aclose()
            return
        self._refusing += 1
        try:
            with trio.move_on_after(REFUSAL_TIMEOUT):
                try:
                    await stream.send_all(refusal.http_response())
                    await stream.send_eof()
                    drained = 0
                    while drained < REFUSAL_DRAIN_BYTES:
                        data = await stream.receive_some(16384)
                        if not data:
                            break
                        drained += len(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
        finally:
            self._refusing -= 1
            with trio.CancelScope(shield=True):
                await stream.aclose()

    def _begin_shutdown(self) -> None:
        self._stopping = True
        for conn in list(self._ws_conns):
            conn.request_close(WS_GOING_AWAY, "server shutting down")

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started(bound_port)`` once listening."""
        if self._serving:
            raise RuntimeError("RpcServer is already serving")
        self._serving = True
        self._stopping = False
        config = self._hypercorn_config()
        stop = trio.Event()
        finished = trio.Event()
        # Hypercorn runs shielded from our caller's cancellation so that a cancel
        # turns into its graceful shutdown (shutdown_trigger) instead of tearing
        # connections down mid-write; the shield is dropped after shutdown_timeout.
        server_scope = trio.CancelScope(shield=True)

        async def run_hypercorn(task_status: trio.TaskStatus[list[str]]) -> None:
            try:
                with server_scope:
                    await self._serve_hypercorn(config, stop.wait, task_status)
            finally:
                finished.set()

        try:
            async with _unwrap_single_error(), trio.open_nursery() as nursery:
                try:
                    binds = await nursery.start(run_hypercorn)
                    self.port = int(binds[0].rsplit(":", 1)[1])
                    log.info("JSON-RPC server listening on %s", binds[0])
                    task_status.started(self.port)
                    await finished.wait()
                finally:
                    self._begin_shutdown()
                    stop.set()
                    with trio.CancelScope(shield=True) as grace:
                        grace.deadline = trio.current_time() + self.shutdown_timeout + 1.0
                        await finished.wait()
                    if not finished.is_set():
                        log.warning(
                            "JSON-RPC server did not stop within %.1fs; cancelling", self.shutdown_timeout
                        )
                    server_scope.cancel()
        finally:
            self._serving = False
            self._stopping = True
            log.info("JSON-RPC server stopped")
