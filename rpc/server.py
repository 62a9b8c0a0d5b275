"""HTTP + WebSocket JSON-RPC server (quart-trio app served by hypercorn under trio).

Routes:

* ``POST /rpc``   JSON-RPC 2.0 (single or batch); other methods -> 405
* ``GET  /ws``    WebSocket: the same JSON-RPC calls plus ``subscribe``/``unsubscribe``
* ``GET  /metrics`` Prometheus text exposition of ``metrics_registry`` (404 without one)
* ``GET  /health``  200 "ok"

``/rpc`` and ``/ws`` are served by a lean ASGI layer installed in front of the Quart
app (``app.asgi_app`` middleware): a JSON-RPC call then costs one dict parse,
one encode and two ASGI sends instead of a full Quart request/response cycle.
Everything else (``/health``, ``/metrics``, routes the node adds to
:attr:`RpcServer.app`, ASGI lifespan) goes through Quart.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
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
    ) -> None:
        if max_body_bytes < 1 or max_batch < 1:
            raise ValueError("max_body_bytes and max_batch must be positive")
        self.registry = registry
        self.hub = hub
        self.host = host
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
        )
        self._ws_conns: set[SubscriberConnection] = set()
        self._stopping = False
        self._serving = False
        self.app = self._build_app()

    # ------------------------------------------------------------------ app
    def _build_app(self) -> QuartTrio:
        app = QuartTrio(__name__, static_folder=None)
        app.config["MAX_CONTENT_LENGTH"] = self.max_body_bytes

        @app.get("/health")
        async def health() -> Response:
            return Response("ok", status=200, content_type="text/plain; charset=utf-8")

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
            if kind == "http":
                path = scope["path"]
                if path == "/rpc":
                    return await self._http_rpc(scope, receive, send)
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
        if scope["method"] != "POST":
            await _send_simple(send, 405, _405_BODY, b"application/json", [(b"allow", b"POST")])
            return
        authorization = None
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
            elif name == b"authorization":
                authorization = value
        body = await self._read_body(receive, declared)
        if type(body) is not bytes:
            if body is _Outcome.DISCONNECTED:
                return
            extra = [(b"connection", b"close")] if body is _Outcome.TOO_LARGE_CLOSE else None
            if self.metrics is not None:
                self.metrics.record("unknown", False, 0.0)
            await _send_simple(send, 413, REQUEST_TOO_LARGE_RESPONSE.encode(), b"application/json", extra)
            return
        client = scope.get("client")
        ctx = CallContext(client[0] if client else None, authorization)
        out = await self.dispatcher.handle(body, ctx)
        if out is None:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        data = out.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [_JSON_HEADERS_PREFIX, (b"content-length", b"%d" % len(data))],
            }
        )
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
    async def _ws_endpoint(self, scope: Any, receive: Any, send: Any) -> None:
        msg = await receive()
        if msg["type"] != "websocket.connect":
            return
        if self._stopping:
            await send({"type": "websocket.close", "code": WS_GOING_AWAY})
            return
        await send({"type": "websocket.accept"})
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
        client = scope.get("client")
        conn = self.hub.open_connection()
        ctx = CallContext(client[0] if client else None, authorization, conn)
        state = _WsState()
        self._ws_conns.add(conn)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._ws_writer, conn, send)
                nursery.start_soon(self._ws_watchdog, conn, state, send, nursery.cancel_scope)
                await self._ws_reader(conn, ctx, receive)
                state.disconnected = True
                nursery.cancel_scope.cancel()
        finally:
            self._ws_conns.discard(conn)
            conn.close()

    async def _ws_reader(self, conn: SubscriberConnection, ctx: CallContext, receive: Any) -> None:
        handle = self.dispatcher.handle
        while True:
            msg = await receive()
            kind = msg["type"]
            if kind == "websocket.receive":
                if conn.closing:
                    continue  # closing: ignore further requests, wait for the disconnect
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
        return config

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
                    await hypercorn_serve(
                        self.app, config, shutdown_trigger=stop.wait, task_status=task_status
                    )
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
