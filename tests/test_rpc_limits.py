"""Limits of the JSON-RPC server (rpc/limits.py, rpc/server.py, rpc/subscriptions.py): connection caps,
idle and request timeouts, per-IP rate limits, browser origins, admin gate, subscription caps and fan-out.

Every test runs the real server (hypercorn + quart-trio) on 127.0.0.1:0 in a trio nursery and talks to
it with real clients (httpx, trio_websocket, raw trio sockets). Every wait is bounded with
``trio.fail_after``; nothing waits on a sleep for synchronisation.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from rpc.jsonrpc import BUSY, UNAUTHORIZED, MethodRegistry, Param
from rpc.limits import ConnectionGate, RateLimiter, RpcLimits, ip_key
from rpc.server import RpcServer
from rpc.subscriptions import SubscriptionHub

TOKEN = "limits-token"
HASH = {"type": "string", "format": "hash32"}


def _hash(i: int) -> str:
    return "0x" + i.to_bytes(32, "big").hex()


def build_registry() -> MethodRegistry:
    reg = MethodRegistry()

    @reg.method("echo", params=[Param("value", {}, required=False)])
    async def echo(value=None):
        return value

    @reg.method("hang")
    async def hang():
        await trio.sleep_forever()

    @reg.method("tx_submit", params=[Param("tx", {"type": "string"})])  # a state-changing name
    async def tx_submit(tx):
        return {"hash": tx}

    @reg.method("adminPing", admin=True)
    async def admin_ping():
        return "admin-pong"

    return reg


def build_hub(**kw) -> SubscriptionHub:
    hub = SubscriptionHub(**kw)
    hub.register_topic("newHeads")
    hub.register_topic("tx", params=[Param("hash", HASH)], index="hash")
    hub.register_topic(
        "jobs",
        params=[Param("job_id", HASH, required=False)],
        matcher=lambda flt, key: "job_id" not in flt or flt["job_id"].lower() == key,
        index="job_id",
    )
    return hub


async def start(nursery: trio.Nursery, *, hub_kw: dict | None = None, **limits) -> SimpleNamespace:
    metrics = CollectorRegistry()
    hub = build_hub(**(hub_kw or {}))
    admin = limits.pop("admin", False)
    server = RpcServer(
        build_registry(), hub, port=0, metrics_registry=metrics, limits=RpcLimits(**limits),
        admin_enabled=admin, admin_token=TOKEN,
    )  # fmt: skip
    with trio.fail_after(10):
        port = await nursery.start(server.serve)
    return SimpleNamespace(
        server=server, hub=hub, port=port, url=f"http://127.0.0.1:{port}", rpc=f"http://127.0.0.1:{port}/rpc",
        ws=f"ws://127.0.0.1:{port}/ws",
    )  # fmt: skip


def req(method: str, params: dict | None = None, rid: int = 1) -> dict:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}}


async def ws_call(ws, method: str, params: dict | None = None, rid: int = 1) -> dict:
    await ws.send_message(json.dumps(req(method, params, rid)))
    return json.loads(await ws.get_message())


def client(**kw) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=10, trust_env=False, **kw)


# ------------------------------------------------------------------------------------------- connections


async def test_per_ip_connection_cap_refuses_with_429(nursery):
    s = await start(nursery, loopback_exempt=False, max_connections_per_ip=3)
    with trio.fail_after(20):
        held = [await trio.open_tcp_stream("127.0.0.1", s.port) for _ in range(3)]
        try:
            # hypercorn has them (the gate counts at accept, asynchronously to connect())
            await _wait_until(lambda: s.server.gate.tcp_total == 3)
            async with client() as c:
                r = await c.post(s.rpc, json=req("echo", {"value": 1}))
            assert r.status_code == 429
            err = r.json()["error"]
            assert err["code"] == BUSY and err["data"]["reason"] == "ip_connection_limit", err
            assert "max 3" in err["message"]
            assert r.headers["connection"] == "close"
            # a WebSocket upgrade is refused the same way
            with pytest.raises(ConnectionRejected) as exc:
                async with open_websocket_url(s.ws):
                    pass
            assert exc.value.status_code == 429
            assert json.loads(exc.value.body)["error"]["data"]["reason"] == "ip_connection_limit"
        finally:
            for h in held:
                await h.aclose()
        await _wait_until(lambda: s.server.gate.tcp_total == 0)
        async with client() as c:  # capacity is back once they are gone
            assert (await c.post(s.rpc, json=req("echo", {"value": 2}))).json()["result"] == 2
        assert s.server.gate.refusals["ip_connection_limit"] == 2


async def test_global_connection_cap_and_loopback_exemption(nursery):
    # loopback clients are exempt from the per-IP cap (default) but not from the global cap
    s = await start(nursery, max_connections=4, max_connections_per_ip=1)
    with trio.fail_after(20):
        held = [await trio.open_tcp_stream("127.0.0.1", s.port) for _ in range(4)]
        try:
            await _wait_until(lambda: s.server.gate.tcp_total == 4)
            async with client() as c:
                r = await c.post(s.rpc, json=req("echo"))
            assert r.status_code == 503
            assert r.json()["error"]["data"]["reason"] == "connection_limit"
        finally:
            for h in held:
                await h.aclose()


async def test_fd_reserve_refuses_connections(nursery):
    class Budget:  # the node's FdBudget says how many descriptors stay free above the reserve
        room = 2

        def headroom(self, held: int) -> int:
            return self.room - held

    budget = Budget()
    s = await start(nursery, fd_budget=budget)
    with trio.fail_after(20):
        async with client() as c:  # one keep-alive connection: fits
            assert (await c.post(s.rpc, json=req("echo", {"value": 1}))).json()["result"] == 1
            budget.room = 0  # descriptors ran short: new connections are refused, open ones keep working
            async with client() as other:
                r = await other.post(s.rpc, json=req("echo"))
            assert r.status_code == 503 and r.json()["error"]["data"]["reason"] == "fd_reserve"
            assert (await c.post(s.rpc, json=req("echo", {"value": 3}))).json()["result"] == 3


async def test_websocket_caps(nursery):
    s = await start(nursery, loopback_exempt=False, max_ws_per_ip=2, max_ws_connections=3)
    with trio.fail_after(20):
        async with open_websocket_url(s.ws) as a, open_websocket_url(s.ws) as b:
            with pytest.raises(ConnectionRejected) as exc:
                async with open_websocket_url(s.ws):
                    pass
            assert exc.value.status_code == 429
            body = json.loads(exc.value.body)
            assert body["error"]["code"] == BUSY and body["error"]["data"]["reason"] == "ip_ws_limit"
            # HTTP from the same address still works: the WebSocket cap is separate
            async with client() as c:
                assert (await c.post(s.rpc, json=req("echo", {"value": 5}))).json()["result"] == 5
            assert (await ws_call(a, "echo", {"value": "a"}))["result"] == "a"
            assert (await ws_call(b, "echo", {"value": "b"}))["result"] == "b"
        await _wait_until(lambda: s.server.gate.ws_total == 0)
        async with open_websocket_url(s.ws) as a:
            assert (await ws_call(a, "echo", {"value": 1}))["result"] == 1

    t = await start(nursery, max_ws_connections=2)  # global cap, loopback exempt from the per-IP one
    with trio.fail_after(20):
        async with open_websocket_url(t.ws), open_websocket_url(t.ws):
            with pytest.raises(ConnectionRejected) as exc:
                async with open_websocket_url(t.ws):
                    pass
            assert exc.value.status_code == 503
            assert json.loads(exc.value.body)["error"]["data"]["reason"] == "ws_limit"


# ----------------------------------------------------------------------------------------------- idle


async def test_idle_http_connection_is_closed(nursery):
    s = await start(nursery, idle_timeout_s=0.5)
    with trio.fail_after(10):
        # a connection that never sends anything
        silent = await trio.open_tcp_stream("127.0.0.1", s.port)
        t0 = trio.current_time()
        assert await silent.receive_some(1024) == b""  # EOF from the server
        assert 0.4 <= trio.current_time() - t0 < 5
        await silent.aclose()
        # a keep-alive connection after a request, and a half-sent request head (slowloris)
        ka = await trio.open_tcp_stream("127.0.0.1", s.port)
        body = json.dumps(req("echo", {"value": 1})).encode()
        await ka.send_all(b"POST /rpc HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                          b"content-length: %d\r\n\r\n" % len(body) + body)  # fmt: skip
        slow = await trio.open_tcp_stream("127.0.0.1", s.port)
        await slow.send_all(b"POST /rpc HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        got = b""
        while True:
            chunk = await ka.receive_some(4096)
            if not chunk:
                break
            got += chunk
        assert got.startswith(b"HTTP/1.1 200") and b'"result":1' in got
        while await slow.receive_some(1024):  # closed by the server (bounded by fail_after)
            pass
        await ka.aclose()
        await slow.aclose()
    await _wait_until(lambda: s.server.gate.tcp_total == 0)


async def test_idle_websocket_is_closed_and_activity_keeps_it(nursery):
    s = await start(nursery, ws_idle_timeout_s=0.6)
    with trio.fail_after(15):
        async with open_websocket_url(s.ws) as quiet, open_websocket_url(s.ws) as busy:
            t0 = trio.current_time()

            async def keep_busy() -> None:  # a request every 0.2 s: never idle for 0.6 s
                for i in range(10):
                    assert (await ws_call(busy, "echo", {"value": i}))["result"] == i
                    await trio.sleep(0.2)

            async with trio.open_nursery() as n:
                n.start_soon(keep_busy)
                with pytest.raises(ConnectionClosed) as exc:
                    await quiet.get_message()
            assert exc.value.reason.code == 1000 and exc.value.reason.reason == "idle timeout"
            assert 0.5 <= trio.current_time() - t0
            # the busy one is still open after 2 s of activity
            assert (await ws_call(busy, "echo", {"value": "still"}))["result"] == "still"


# ------------------------------------------------------------------------------------------------ time


async def test_request_timeout(nursery):
    s = await start(nursery, request_timeout_s=0.5)
    with trio.fail_after(15):
        async with client() as c:
            t0 = trio.current_time()
            r = await c.post(s.rpc, json=req("hang", rid=42))
            assert trio.current_time() - t0 < 5
            err = r.json()["error"]
            assert r.json()["id"] == 42 and err["code"] == BUSY and err["data"]["reason"] == "timeout", r.json()
            # the batch's other members are answered, the slow one times out
            out = (await c.post(s.rpc, json=[req("echo", {"value": 1}, 1), req("hang", rid=2)])).json()
            assert out[0]["result"] == 1 and out[1]["error"]["data"]["reason"] == "timeout"
        async with open_websocket_url(s.ws) as ws:
            assert (await ws_call(ws, "hang", rid=7))["error"]["data"]["reason"] == "timeout"
            assert (await ws_call(ws, "echo", {"value": 8}))["result"] == 8
        # a body that never finishes: 408 and the connection is closed
        raw = await trio.open_tcp_stream("127.0.0.1", s.port)
        await raw.send_all(b"POST /rpc HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 100\r\n\r\n{\"jsonrpc\"")
        got = b""
        while chunk := await raw.receive_some(4096):
            got += chunk
        assert got.startswith(b"HTTP/1.1 408"), got
        assert b'"reason":"timeout"' in got
        await raw.aclose()


# ------------------------------------------------------------------------------------------------ rate


async def test_rate_limit_http_and_websocket(nursery):
    s = await start(nursery, loopback_exempt=False, rate_limit=1, rate_burst=3)
    with trio.fail_after(30):
        async with client() as c:
            codes = [(await c.post(s.rpc, json=req("echo", {"value": i}))).status_code for i in range(3)]
            assert codes == [200] * 3
            r = await c.post(s.rpc, json=req("echo"))
            assert r.status_code == 429
            err = r.json()["error"]
            assert err["code"] == BUSY and err["data"]["reason"] == "rate_limited", err
            assert err["data"]["retry_after_ms"] > 0 and int(r.headers["retry-after"]) >= 1
            # the same bucket is charged over the WebSocket
            async with open_websocket_url(s.ws) as ws:
                out = await ws_call(ws, "echo", {"value": 1})
                assert out["error"]["code"] == BUSY and out["error"]["data"]["reason"] == "rate_limited", out
            # tokens come back at 1/s, as the answer said
            await _after_refill(r)
            assert (await c.post(s.rpc, json=req("echo"))).status_code == 200
            # a batch costs one token per call (a refused batch costs nothing); 3 calls need a full bucket
            r = await c.post(s.rpc, json=[req("echo", rid=i) for i in range(3)])
            assert r.status_code == 429 and r.json()["error"]["data"]["reason"] == "rate_limited"
            await trio.sleep(3 / 1 + 0.1)  # a full bucket: burst / rate (time is what is tested here)
            r = await c.post(s.rpc, json=[req("echo", rid=i) for i in range(3)])
            assert r.status_code == 200 and len(r.json()) == 3
            r = await c.post(s.rpc, json=[req("echo", rid=i) for i in range(2)])
            assert r.status_code == 429
    assert s.server.dispatcher.refusals["rate_limited"] >= 4
    # loopback clients are not rate-limited by default
    t = await start(nursery, rate_limit=1, rate_burst=1)
    async with client() as c:
        with trio.fail_after(20):
            for i in range(20):
                assert (await c.post(t.rpc, json=req("echo", {"value": i}))).status_code == 200


def test_rate_limiter_and_ip_keys():
    now = [0.0]
    rl = RateLimiter(10, 5, clock=lambda: now[0], max_keys=4)
    assert [rl.take("a") for _ in range(5)] == [None] * 5
    assert rl.take("a") == pytest.approx(0.1)
    now[0] += 0.25  # 2.5 tokens back
    assert rl.take("a", 2) is None and rl.take("a", 1) is not None
    assert rl.take("a", 100) == pytest.approx((5 - 0.5) / 10)  # capped at the burst
    rl.take("a", -2)  # given back
    assert rl.take("a", 2) is None
    for k in "bcdefgh":  # bounded memory: full buckets are forgotten first
        rl.take(k)
    assert len(rl) <= 4
    assert RateLimiter(0, 1).take("x", 10**6) is None  # rate 0: unlimited
    assert ip_key("10.0.0.1") == "10.0.0.1"
    assert ip_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert ip_key("2001:db8:1:2:3:4:5:6") == ip_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert ip_key("2001:db8:1:3::1") != ip_key("2001:db8:1:2::1")
    gate = ConnectionGate(RpcLimits(max_connections_per_ip=1, loopback_exempt=False))
    assert gate.admit_tcp("2001:db8::1") is None
    assert gate.admit_tcp("2001:db8::2").reason == "ip_connection_limit"  # same /64
    assert gate.admit_tcp("2001:db9::1") is None


# -------------------------------------------------------------------------------------- browsers, admin


async def test_cross_origin_requests_are_refused(nursery):
    s = await start(nursery, cors_origins=("https://wallet.example",))
    with trio.fail_after(20):
        async with client() as c:
            r = await c.post(s.rpc, json=req("echo", {"value": 1}), headers={"origin": "https://evil.example"})
            assert r.status_code == 403
            assert r.json()["error"] == {
                "code": UNAUTHORIZED,
                "message": "cross-origin requests from 'https://evil.example' are not allowed",
                "data": {"reason": "origin_not_allowed"},
            }
            ok = await c.post(s.rpc, json=req("echo", {"value": 1}), headers={"origin": "https://wallet.example"})
            assert ok.json()["result"] == 1
            assert ok.headers["access-control-allow-origin"] == "https://wallet.example"
            pre = await c.options(s.rpc, headers={"origin": "https://wallet.example",
                                                  "access-control-request-method": "POST"})  # fmt: skip
            assert pre.status_code == 204 and "POST" in pre.headers["access-control-allow-methods"]
            assert (await c.options(s.rpc, headers={"origin": "https://evil.example"})).status_code == 403
            # a "simple" cross-site form/text POST cannot change state even without an Origin header
            r = await c.post(s.rpc, content=json.dumps(req("tx_submit", {"tx": "0x00"})),
                             headers={"content-type": "text/plain"})  # fmt: skip
            err = r.json()["error"]
            assert err["code"] == UNAUTHORIZED and err["data"]["reason"] == "content_type", err
            r = await c.post(s.rpc, content=json.dumps(req("echo", {"value": 2})), headers={"content-type": "text/plain"})
            assert r.json()["result"] == 2  # reads are fine
            assert (await c.post(s.rpc, json=req("tx_submit", {"tx": "0x00"}))).json()["result"] == {"hash": "0x00"}
        # WebSocket upgrades from a foreign page are refused too (browsers apply no CORS to WebSockets)
        with pytest.raises(ConnectionRejected) as exc:
            async with open_websocket_url(s.ws, extra_headers=[("Origin", "https://evil.example")]):
                pass
        assert exc.value.status_code == 403
        async with open_websocket_url(s.ws, extra_headers=[("Origin", "https://wallet.example")]) as ws:
            assert (await ws_call(ws, "echo", {"value": 3}))["result"] == 3


async def test_json_rpc_at_root_and_cors_preflight(nursery):
    """POST / is the same JSON-RPC handler as POST /rpc (geth and CometBFT clients post to /); GET / is not
    served (kept for a web app); a CORS preflight is answered at both for allowed origins only."""
    s = await start(nursery, cors_origins=("https://wallet.example",))
    with trio.fail_after(20):
        async with client() as c:
            for url in (s.url + "/", s.rpc):
                assert (await c.post(url, json=req("echo", {"value": 7}))).json()["result"] == 7
                positional = {"jsonrpc": "2.0", "id": 2, "method": "echo", "params": [8]}
                assert (await c.post(url, json=positional)).json()["result"] == 8
                pre = await c.options(url, headers={"origin": "https://wallet.example",
                                                    "access-control-request-method": "POST",
                                                    "access-control-request-headers": "content-type"})  # fmt: skip
                assert pre.status_code == 204, url
                assert pre.headers["access-control-allow-origin"] == "https://wallet.example"
                assert "POST" in pre.headers["access-control-allow-methods"]
                assert "content-type" in pre.headers["access-control-allow-headers"]
                assert pre.headers["vary"].lower() == "origin"
                bad = await c.options(url, headers={"origin": "https://evil.example",
                                                    "access-control-request-method": "POST"})  # fmt: skip
                assert bad.status_code == 403 and "access-control-allow-origin" not in bad.headers
                r = await c.post(url, json=req("echo", {"value": 9}), headers={"origin": "https://wallet.example"})
                assert r.json()["result"] == 9 and r.headers["access-control-allow-origin"] == "https://wallet.example"
            # the Content-Type rule of state-changing calls holds at / as at /rpc
            r = await c.post(s.url + "/", content=json.dumps(req("tx_submit", {"tx": "0x00"})),
                             headers={"content-type": "text/plain"})  # fmt: skip
            assert r.json()["error"]["data"]["reason"] == "content_type"
            root = await c.get(s.url + "/")
            assert root.status_code == 404 and b"jsonrpc" not in root.content  # nothing served on GET /
            assert (await c.get(s.rpc)).status_code == 405
            # a refusal a browser may read still carries the CORS headers of an allowed origin
            r = await c.get(s.rpc, headers={"origin": "https://wallet.example"})
            assert r.status_code == 405 and r.headers["access-control-allow-origin"] == "https://wallet.example"


async def _ws_upgrade_status(port: int, host: str) -> int:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n" not in head:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1])


async def test_host_allow_list_against_dns_rebinding(nursery):
    """A page whose name was re-pointed at the node (DNS rebinding) talks to it same-origin, past the Origin
    check, but sends its own name as Host: refused with 403 before any route, HTTP and WebSocket alike."""
    s = await start(nursery, cors_origins=("*",))
    p = s.port
    with trio.fail_after(20):
        async with client() as c:
            for host in (f"127.0.0.1:{p}", f"localhost:{p}", "LOCALHOST", f"[::1]:{p}", f"app.localhost:{p}",
                         "10.1.2.3", f"localhost.:{p}"):  # fmt: skip
                r = await c.post(s.rpc, json=req("echo", {"value": 1}), headers={"host": host})
                assert r.status_code == 200 and r.json()["result"] == 1, host
            for url in (s.rpc, s.url + "/", s.url + "/metrics", s.url + "/health"):
                r = await c.post(url, json=req("echo", {"value": 1}),
                                 headers={"host": f"evil.example:{p}", "origin": f"http://evil.example:{p}"})
                assert r.status_code == 403, url
                assert "\n" not in r.text and r.json()["error"] == {
                    "code": UNAUTHORIZED,
                    "message": f"host 'evil.example:{p}' is not allowed: add its name to rpc.allowed_hosts",
                    "data": {"reason": "host_not_allowed"},
                }
            assert (await c.get(s.url + "/health", headers={"host": "evil.example"})).status_code == 403
        assert await _ws_upgrade_status(p, "evil.example") == 403
        assert await _ws_upgrade_status(p, f"127.0.0.1:{p}") == 101
        assert s.server.gate.refusals["host_not_allowed"] == 6
    t = await start(nursery, allowed_hosts=("node.example",))
    async with client() as c:
        with trio.fail_after(20):
            ok = await c.post(t.rpc, json=req("echo", {"value": 2}), headers={"host": "NODE.example.:8202"})
            assert ok.json()["result"] == 2
            assert (await c.post(t.rpc, json=req("echo"), headers={"host": "other.example"})).status_code == 403
    u = await start(nursery, allowed_hosts=("*",))
    async with client() as c:
        with trio.fail_after(20):
            r = await c.post(u.rpc, json=req("echo", {"value": 3}), headers={"host": "anything.example"})
            assert r.json()["result"] == 3


def test_host_check_defaults():
    from rpc.limits import HostCheck, host_name

    assert host_name("Node.Example.:80") == "node.example" and host_name("[::1]:8202") == "::1"
    check = HostCheck((), "node.lan")  # the bound host is allowed
    assert check.allowed("node.lan:8202") and check.allowed("localhost") and check.allowed("192.168.1.5:8202")
    assert check.allowed(None)  # no Host header: no browser
    assert not check.allowed("evil.example") and not check.allowed("localhost.evil.example")
    assert not HostCheck((), "0.0.0.0").allowed("node.lan")


async def test_admin_gate_without_loopback_trust(nursery):
    s = await start(nursery, admin=True, admin_loopback=False)
    with trio.fail_after(20):
        async with client() as c:
            err = (await c.post(s.rpc, json=req("adminPing"))).json()["error"]
            assert err["code"] == UNAUTHORIZED and "Bearer" in err["message"]
            ok = await c.post(s.rpc, json=req("adminPing"), headers={"authorization": "Bearer " + TOKEN})
            assert ok.json()["result"] == "admin-pong"
    t = await start(nursery, admin=True, cors_origins=("*",))  # loopback trusted, but never a browser
    async with client() as c:
        with trio.fail_after(20):
            assert (await c.post(t.rpc, json=req("adminPing"))).json()["result"] == "admin-pong"
            r = await c.post(t.rpc, json=req("adminPing"), headers={"origin": "http://localhost:3000"})
            assert r.json()["error"]["code"] == UNAUTHORIZED


# -------------------------------------------------------------------------------------- subscriptions


async def test_subscription_caps(nursery):
    s = await start(nursery, hub_kw={"max_subscriptions_per_connection": 3, "max_subscriptions": 5})
    with trio.fail_after(20):
        async with open_websocket_url(s.ws) as a, open_websocket_url(s.ws) as b:
            for i in range(3):
                assert "result" in await ws_call(a, "subscribe", {"topic": "tx", "hash": _hash(i)})
            err = (await ws_call(a, "subscribe", {"topic": "newHeads"}, rid=9))["error"]
            assert err["code"] == BUSY and err["data"] == {"reason": "subscription_limit", "max": 3}, err
            for _ in range(2):
                assert "result" in await ws_call(b, "subscribe", {"topic": "newHeads"})
            err = (await ws_call(b, "subscribe", {"topic": "newHeads"}))["error"]
            assert err["data"] == {"reason": "total_subscription_limit", "max": 5}, err
            assert s.hub.total_subscriptions == 5
        await _wait_until(lambda: s.hub.total_subscriptions == 0)


async def test_fanout_work_is_proportional_to_matching_subscribers(nursery):
    """Thousands of subscriptions to other tx hashes: publishing one tx event examines only its own
    subscribers (counter rpc_ws_fanout_checked_total), not every subscription."""
    s = await start(nursery, hub_kw={"max_subscriptions_per_connection": 2000})
    hub = s.hub
    target = _hash(10**9)
    with trio.fail_after(60):
        async with open_websocket_url(s.ws) as a, open_websocket_url(s.ws) as b, open_websocket_url(s.ws) as w:
            for ws, base in ((a, 0), (b, 100_000)):  # 3000 subscriptions to other hashes, in batches
                for start_i in range(0, 1500, 500):
                    batch = [req("subscribe", {"topic": "tx", "hash": _hash(base + start_i + j)}, j) for j in range(500)]
                    await ws.send_message(json.dumps(batch))
                    assert all("result" in r for r in json.loads(await ws.get_message()))
            mine = (await ws_call(w, "subscribe", {"topic": "tx", "hash": target.upper().replace("0X", "0x")}))
            jobs_all = (await ws_call(w, "subscribe", {"topic": "jobs"}, rid=2))["result"]
            jobs_one = (await ws_call(w, "subscribe", {"topic": "jobs", "job_id": _hash(5)}, rid=3))["result"]
            assert hub.subscriber_count("tx") == 3001
            tx = hub.topic("tx")
            before = tx.checked
            hub.publish("tx", {"hash": target, "status": "committed"}, key=target)
            assert tx.checked - before == 1 and tx.delivered == 1
            note = json.loads(await w.get_message())
            assert note["params"]["subscription"] == mine["result"]
            hub.publish("tx", {"hash": _hash(1)}, key=_hash(1))  # one other subscriber
            assert tx.checked - before == 2
            for _ in range(1000):  # events nobody watches cost nothing per subscription
                hub.publish("tx", {"x": 1}, key=_hash(7 * 10**8))
            assert tx.checked - before == 2
            # an optional index param: unfiltered subscribers plus the key's own ones
            jobs = hub.topic("jobs")
            hub.publish("jobs", {"event": "e"}, key=_hash(5))
            assert jobs.checked == 2 and jobs.delivered == 2
            got = {json.loads(await w.get_message())["params"]["subscription"] for _ in range(2)}
            assert got == {jobs_all, jobs_one}
            hub.publish("jobs", {"event": "f"}, key=_hash(6))
            assert jobs.checked == 3 and jobs.delivered == 3
            assert json.loads(await w.get_message())["params"]["subscription"] == jobs_all
            async with client() as c:
                text = (await c.get(s.url + "/metrics")).text
            assert 'rpc_ws_fanout_checked_total{topic="tx"} 2.0' in text
            assert "rpc_ws_subscriptions 3003.0" in text
    await _wait_until(lambda: hub.total_subscriptions == 0)
    assert hub.topic("tx").by_key == {} and hub.topic("jobs").unfiltered == {}


def test_hub_index_refiles_live_subscriptions():
    hub = SubscriptionHub()
    hub.register_topic("tx", params=[Param("hash", HASH)], matcher=lambda f, k: f["hash"].lower() == k)
    with pytest.raises(ValueError):
        hub.set_index("tx", "nope")
    with pytest.raises(ValueError):
        hub.register_topic("t2", params=[Param("hash", HASH)], index="other")
    conns = [hub.open_connection(queue_size=4) for _ in range(3)]
    for i, conn in enumerate(conns):
        conn.subscribe({"topic": "tx", "hash": _hash(i)})
    t = hub.topic("tx")
    hub.publish("tx", {}, key=_hash(1))
    assert t.checked == 3 and t.delivered == 1  # not indexed: every subscription is examined
    hub.set_index("tx", "hash")
    hub.publish("tx", {}, key=_hash(1))
    assert t.checked == 4 and t.delivered == 2
    conns[1].close()
    hub.publish("tx", {}, key=_hash(1))
    assert t.checked == 4 and hub.total_subscriptions == 2


# ------------------------------------------------------------------------------------------------ utils


async def _wait_until(predicate, what: str = "the server to catch up") -> None:
    """Let the server's tasks run until ``predicate()`` holds (bounded: 10 s)."""
    with trio.fail_after(10):
        for _ in range(10_000):
            if predicate():
                return
            await trio.testing.wait_all_tasks_blocked(0.005)
    raise AssertionError(f"gave up waiting for {what}")


async def _after_refill(resp: httpx.Response) -> None:
    """Wait as long as a 429 answer says the tokens take to come back (the thing under test is time)."""
    await trio.sleep(resp.json()["error"]["data"]["retry_after_ms"] / 1000 + 0.05)
