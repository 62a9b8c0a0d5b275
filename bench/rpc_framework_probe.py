"""Trivial-method throughput probe for the JSON-RPC server (rpc.server).

Issues N sequential JSON-RPC requests (method ``ping`` -> "pong") over one keep-alive
``httpx.AsyncClient``, then N sequential GET /health (the Quart-routed path, for
comparison), N sequential requests from a raw blocking-socket HTTP/1.1 client (which
shows the server's own ceiling: httpx costs more CPU than the server) and N sequential
calls over one WebSocket.  Also times the dispatcher alone (no HTTP).

    .venv/bin/python -m bench.rpc_framework_probe [N] [--inprocess]

By default the server runs in a child process (so client and server each get a core);
``--inprocess`` runs both in the same trio loop (figure includes client overhead).
Everything is bounded by trio.fail_after.
"""

from __future__ import annotations

import multiprocessing
import socket
import sys
import time

import httpx
import trio
from prometheus_client import CollectorRegistry
from trio_websocket import open_websocket_url

from rpc.jsonrpc import CallContext, MethodRegistry
from rpc.server import RpcServer
from rpc.subscriptions import SubscriptionHub


def make_server() -> RpcServer:
    registry = MethodRegistry()

    @registry.method("ping")
    async def ping() -> str:
        return "pong"

    return RpcServer(registry, SubscriptionHub(), port=0, metrics_registry=CollectorRegistry())


def _control(conn) -> None:
    """Child-side control loop (in a thread): "cpu" -> process CPU seconds, else stop."""
    while conn.recv() == "cpu":
        conn.send(time.process_time())


async def _serve_child(conn) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(make_server().serve)
        conn.send(port)
        await trio.to_thread.run_sync(_control, conn)
        nursery.cancel_scope.cancel()


def _child(conn) -> None:
    trio.run(_serve_child, conn)


def raw_http_client(port: int, n: int, body: bytes) -> float:
    """N sequential keep-alive POSTs over a plain blocking socket (near-zero client cost)."""
    req = (  # Host: the address itself (the server refuses unknown host names: DNS rebinding)
        b"POST /rpc HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (port, len(body), body)
    )

    def connect() -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    sock = connect()
    t0 = time.perf_counter()
    try:
        for _ in range(n):
            sock.sendall(req)
            buf = b""
            while True:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("server closed the connection mid-response")
                buf += data
                head, sep, rest = buf.partition(b"\r\n\r\n")
                if not sep:
                    continue
                headers = head.lower()
                length = int(headers.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                if len(rest) >= length:
                    break
            assert rest.endswith(b'"result":"pong"}'), rest
            if b"connection: close" in headers:  # hypercorn recycles after keep_alive_max_requests
                sock.close()
                sock = connect()
        return time.perf_counter() - t0
    finally:
        sock.close()


async def run_client(port: int, n: int, server_cpu=None) -> None:
    base = f"http://127.0.0.1:{port}"
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(200):  # warm-up
            await client.post("/rpc", content=body, headers=headers)
        cpu0 = await server_cpu() if server_cpu else None
        t0 = time.perf_counter()
        for _ in range(n):
            r = await client.post("/rpc", content=body, headers=headers)
            assert r.status_code == 200 and r.content.endswith(b'"result":"pong"}'), r.content
        dt = time.perf_counter() - t0
        extra = ""
        if server_cpu:
            extra = f"; server CPU {(await server_cpu() - cpu0) / n * 1e6:.0f} us/request"
        print(f"POST /rpc ping : {n} sequential requests in {dt:.3f}s = {n / dt:,.0f} req/s{extra}")
        t0 = time.perf_counter()
        for _ in range(n):
            r = await client.get("/health")
            assert r.status_code == 200
        dt = time.perf_counter() - t0
        print(f"GET /health    : {n} sequential requests in {dt:.3f}s = {n / dt:,.0f} req/s (Quart-routed)")
    dt = await trio.to_thread.run_sync(raw_http_client, port, n, body)
    print(f"POST /rpc ping : {n} sequential requests in {dt:.3f}s = {n / dt:,.0f} req/s (raw-socket client)")
    async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
        text = body.decode()
        t0 = time.perf_counter()
        for _ in range(n):
            await ws.send_message(text)
            await ws.get_message()
        dt = time.perf_counter() - t0
        print(f"WS ping        : {n} sequential calls in {dt:.3f}s = {n / dt:,.0f} calls/s")


async def dispatcher_only(n: int) -> None:
    """The framework's own share: parse + validate + call + encode + metrics, no HTTP."""
    server = make_server()
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    ctx = CallContext("127.0.0.1", None)
    t0 = time.perf_counter()
    for _ in range(n):
        await server.dispatcher.handle(body, ctx)
    dt = time.perf_counter() - t0
    print(f"dispatcher only: {dt / n * 1e6:.1f} us/call ({n / dt:,.0f} calls/s)")


async def main(n: int, inprocess: bool) -> None:
    with trio.fail_after(300):
        await dispatcher_only(max(n, 20_000))
        if inprocess:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(make_server().serve)
                await run_client(port, n)
                nursery.cancel_scope.cancel()
            return
        parent, child = multiprocessing.Pipe()
        proc = multiprocessing.get_context("spawn").Process(target=_child, args=(child,), daemon=True)
        proc.start()
        try:
            port = await trio.to_thread.run_sync(parent.recv)

            async def server_cpu() -> float:
                parent.send("cpu")
                return await trio.to_thread.run_sync(parent.recv)

            await run_client(port, n, server_cpu)
        finally:
            parent.send("stop")
            await trio.to_thread.run_sync(proc.join, 10)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    trio.run(main, int(args[0]) if args else 2000, "--inprocess" in sys.argv)
