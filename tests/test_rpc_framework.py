"""Tests for the generic JSON-RPC 2.0 / WebSocket / metrics server (package ``rpc``).

Every test runs the real server (hypercorn + quart-trio) on 127.0.0.1:0 inside a trio
nursery and talks to it with real ``httpx.AsyncClient`` / ``trio_websocket`` clients.
Every wait is bounded with ``trio.fail_after``.
"""

from __future__ import annotations

import json
import logging
import time
from types import SimpleNamespace

import httpx
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry
from trio_websocket import ConnectionClosed, open_websocket_url

from rpc.jsonrpc import (
    BUSY,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    NOT_FOUND,
    PARSE_ERROR,
    UNAUTHORIZED,
    CallContext,
    Dispatcher,
    MethodRegistry,
    Param,
    RpcError,
)
from rpc.openrpc import build_openrpc
from rpc.server import RpcServer
from rpc.subscriptions import SubscriptionHub

HASH_A = "0x" + "aa" * 32
HASH_B = "0x" + "bb" * 32
TOKEN = "s3cret-token"

# --------------------------------------------------------------------------- setup


def build_registry() -> MethodRegistry:
    reg = MethodRegistry()

    @reg.method("echo", params=[Param("value", {}, required=False, description="anything")], summary="Echo")
    async def echo(value=None):
        return value

    @reg.method(
        "add",
        params=[
            Param("a", {"type": "integer"}),
            Param("b", {"type": "integer", "minimum": 0}, description="non-negative"),
        ],
        result={"type": "integer"},
        summary="Add two integers",
    )
    async def add(a, b):
        return a + b

    @reg.method(
        "typed",
        params=[
            Param("hash", {"format": "hash32"}),
            Param("data", {"type": "string", "format": "hex", "maxBytes": 4}, required=False),
            Param("value", {"type": "string", "format": "amount"}, required=False),
            Param("to", {"type": "string", "format": "address"}, required=False),
            Param("flag", {"type": "boolean"}, required=False),
            Param("items", {"type": "array"}, required=False),
            Param("obj", {"type": "object"}, required=False),
        ],
    )
    async def typed(**kw):
        return sorted(kw)

    @reg.method("fail")
    async def fail():
        raise RpcError(NOT_FOUND, "block not found", {"height": 7})

    @reg.method("boom")
    async def boom():
        raise ValueError("secret internal detail")

    @reg.method("unserialisable")
    async def unserialisable():
        return object()

    @reg.method("adminPing", admin=True, summary="admin only")
    async def admin_ping():
        return "admin-pong"

    return reg


def build_hub(**kw) -> SubscriptionHub:
    hub = SubscriptionHub(**kw)
    hub.register_topic("newHeads", summary="new block headers")
    hub.register_topic(
        "tx",
        params=[Param("hash", {"type": "string", "format": "hash32"})],
        matcher=lambda f, key: f["hash"] == key,
        summary="transaction status updates",
    )
    return hub


async def start_server(nursery: trio.Nursery, *, hub_kw: dict | None = None, **kw) -> SimpleNamespace:
    metrics = CollectorRegistry()
    hub = build_hub(**(hub_kw or {}))
    server = RpcServer(build_registry(), hub, host="127.0.0.1", port=0, metrics_registry=metrics, **kw)
    with trio.fail_after(10):
        port = await nursery.start(server.serve)
    assert port != 0
    return SimpleNamespace(
        server=server,
        hub=hub,
        metrics=metrics,
        port=port,
        url=f"http://127.0.0.1:{port}",
        ws_url=f"ws://127.0.0.1:{port}/ws",
    )


@pytest.fixture
async def srv(nursery):
    return await start_server(nursery)


@pytest.fixture
async def client(srv):
    async with httpx.AsyncClient(base_url=srv.url, timeout=10, trust_env=False) as c:
        yield c


async def post(client: httpx.AsyncClient, payload, **kw) -> httpx.Response:
    if isinstance(payload, (bytes, str)):
        return await client.post("/rpc", content=payload, headers={"content-type": "application/json"}, **kw)
    return await client.post("/rpc", json=payload, **kw)


async def call(client: httpx.AsyncClient, method: str, params=None, rid=1) -> dict:
    req = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        req["params"] = params
    r = await post(client, req)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def assert_error(resp: dict, code: int, rid=1, contains: str | None = None) -> dict:
    assert resp["jsonrpc"] == "2.0"
    assert "result" not in resp
    assert resp["id"] == rid
    assert resp["error"]["code"] == code, resp
    if contains is not None:
        assert contains in resp["error"]["message"], resp
    return resp["error"]


async def ws_call(ws, method: str, params=None, rid=1) -> dict:
    req = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        req["params"] = params
    await ws.send_message(json.dumps(req))
    return json.loads(await ws.get_message())


# --------------------------------------------------------------------------- HTTP basics


async def test_success_and_health(srv, client):
    with trio.fail_after(10):
        assert await call(client, "add", {"a": 2, "b": 3}) == {"jsonrpc": "2.0", "id": 1, "result": 5}
        assert (await call(client, "echo", {"value": {"x": [1, "y"]}}, rid="abc"))["result"] == {
            "x": [1, "y"]
        }
        # absent params == {}; optional params may be omitted or null
        assert (await call(client, "echo", rid=None)) == {"jsonrpc": "2.0", "id": None, "result": None}
        assert (await call(client, "echo", {"value": None}, rid=1.5))["id"] == 1.5
        r = await client.get("/health")
        assert r.status_code == 200 and r.text == "ok"
        assert (await client.get("/nope")).status_code == 404


async def test_parse_errors(client):
    with trio.fail_after(10):
        for body in (b"{not json", b'{"jsonrpc":"2.0","id":1,"method":"echo"', b"", b"\xff\xfe{}", b"[NaN]"):
            r = await post(client, body)
            assert r.status_code == 200
            assert_error(r.json(), PARSE_ERROR, rid=None)
        # deep nesting must not crash the server
        r = await post(client, b"[" * 100_000 + b"]" * 100_000)
        assert r.status_code == 200 and "error" in r.json()


async def test_invalid_request_variants(client):
    with trio.fail_after(10):
        cases = [
            (1, None, "JSON object"),
            (b'"x"', None, "JSON object"),
            ({"id": 1, "method": "echo"}, 1, "jsonrpc"),
            ({"jsonrpc": "1.0", "id": 1, "method": "echo"}, 1, "jsonrpc"),
            ({"jsonrpc": 2.0, "id": 1, "method": "echo"}, 1, "jsonrpc"),
            ({"jsonrpc": "2.0", "id": 1, "method": 5}, 1, "method"),
            ({"jsonrpc": "2.0", "id": 1}, 1, "method"),
            ({"jsonrpc": "2.0", "id": True, "method": "echo"}, None, "'id'"),
            ({"jsonrpc": "2.0", "id": {"a": 1}, "method": "echo"}, None, "'id'"),
            ({"jsonrpc": "2.0", "id": [1], "method": "echo"}, None, "'id'"),
            ({"jsonrpc": "2.0", "id": 1, "method": "echo", "params": "bar"}, 1, "params"),
            ({"jsonrpc": "2.0", "id": 1, "method": "echo", "params": 3}, 1, "params"),
            # structurally invalid objects get an error even without an id
            ({"jsonrpc": "2.0", "method": 1, "params": "bar"}, None, "method"),
        ]
        for payload, rid, text in cases:
            r = await post(client, payload)
            assert r.status_code == 200, payload
            assert_error(r.json(), INVALID_REQUEST, rid=rid, contains=text)


async def test_positional_params(client):
    with trio.fail_after(10):
        assert (await call(client, "add", [1, 2]))["result"] == 3
        assert (await call(client, "echo", []))["result"] is None
        assert (await call(client, "echo", [None]))["result"] is None  # null: an absent optional param
        assert (await call(client, "typed", [HASH_A, None, "7"]))["result"] == ["hash", "value"]
        assert (await call(client, "rpc.discover", []))["result"]["openrpc"]
        assert_error(await call(client, "fail", []), NOT_FOUND)  # [] means no params
        batch = [
            {"jsonrpc": "2.0", "id": 1, "method": "add", "params": [2, 3]},
            {"jsonrpc": "2.0", "id": 2, "method": "add", "params": {"a": 4, "b": 5}},
        ]
        assert sorted(r["result"] for r in (await post(client, batch)).json()) == [5, 9]


async def test_method_not_found(client):
    with trio.fail_after(10):
        assert_error(await call(client, "nope"), METHOD_NOT_FOUND, contains="nope")
        # whatever its params: an unknown method is -32601, not a params error
        for params in ([1, 2], {"a": 1}, "bar", 5, [None] * 1000):
            assert_error(await call(client, "nope", params), METHOD_NOT_FOUND, contains="nope")
        assert_error(await call(client, "rpc.nope"), METHOD_NOT_FOUND)
        # subscriptions only exist on the WebSocket
        assert_error(
            await call(client, "subscribe", {"topic": "newHeads"}), METHOD_NOT_FOUND, contains="WebSocket"
        )


async def test_invalid_params(client):
    with trio.fail_after(10):
        cases = [
            # by position: in the order of the declared params, bounded by their number
            ("add", [1, 2, 3], "too many positional params: add takes at most 2 (a, b), got 3"),
            ("add", [1], "missing required parameter 'b'"),
            ("add", [1, "2"], "'b' must be an integer, got string"),
            ("echo", [1, 2], "too many positional params: echo takes at most 1 (value), got 2"),
            ("fail", [None], "fail takes no params, got 1"),
            ("rpc.discover", [1], "rpc.discover takes no params, got 1"),
            ("add", {"a": 1, "b": 2, "c": 3}, "unknown parameter 'c'"),
            ("add", {"a": 1}, "missing required parameter 'b'"),
            ("add", {"a": True, "b": 1}, "'a' must be an integer, got boolean"),
            ("add", {"a": 1.0, "b": 1}, "'a' must be an integer, got number"),
            ("add", {"a": "1", "b": 1}, "'a' must be an integer, got string"),
            ("add", {"a": None, "b": 1}, "'a' must be an integer, got null"),
            ("add", {"a": 1, "b": -1}, "'b' must be >= 0"),
            ("echo", {"other": 1}, "unknown parameter 'other'"),
            ("rpc.discover", {"x": 1}, "unknown parameter 'x'"),
            ("typed", {}, "missing required parameter 'hash'"),
            ("typed", {"hash": "0x1234"}, "'hash' must be 0x-prefixed 32-byte hex"),
            ("typed", {"hash": "aa" * 33}, "'hash' must be 0x-prefixed 32-byte hex"),
            ("typed", {"hash": "0x" + "zz" * 32}, "'hash' must be 0x-prefixed 32-byte hex"),
            ("typed", {"hash": HASH_A + "\n"}, "'hash' must be 0x-prefixed 32-byte hex"),
            ("typed", {"hash": 5}, "'hash' must be a string"),
            ("typed", {"hash": HASH_A, "data": "0x123"}, "'data' must be 0x-prefixed hex"),
            ("typed", {"hash": HASH_A, "data": "1234"}, "'data' must be 0x-prefixed hex"),
            ("typed", {"hash": HASH_A, "data": "0xgg"}, "'data' must be 0x-prefixed hex"),
            ("typed", {"hash": HASH_A, "data": "0x0102030405"}, "'data' must be at most 4 bytes"),
            ("typed", {"hash": HASH_A, "flag": 1}, "'flag' must be a boolean"),
            ("typed", {"hash": HASH_A, "items": {}}, "'items' must be an array"),
            ("typed", {"hash": HASH_A, "obj": []}, "'obj' must be an object"),
            ("typed", {"hash": HASH_A, "to": "0xabc"}, "'to' must be an address starting with 'ait1'"),
        ]
        for value in ("-1", "+1", "1.5", "1e3", "01", " 1", "", "0x10", "\uff11", "1" * 79):
            cases.append(("typed", {"hash": HASH_A, "value": value}, "'value' must be a decimal string"))
        cases.append(("typed", {"hash": HASH_A, "value": 10}, "'value' must be a string, got integer"))
        for method, params, text in cases:
            e = assert_error(await call(client, method, params), INVALID_PARAMS)
            assert e["message"].startswith("invalid params: "), e
            assert text in e["message"], (params, e)
        # well-formed values pass
        ok = {
            "hash": HASH_A.upper().replace("0X", "0x"),
            "data": "0x",
            "value": "0",
            "to": "ait1qxyz",
            "flag": False,
            "items": [],
            "obj": {},
        }
        assert (await call(client, "typed", ok))["result"] == sorted(ok)
        assert (await call(client, "typed", {"hash": HASH_A, "data": "0xDEADbeef", "value": "1" * 78}))[
            "result"
        ] == ["data", "hash", "value"]
        # optional param given as null is treated as absent
        assert (await call(client, "typed", {"hash": HASH_A, "value": None}))["result"] == ["hash"]


async def test_handler_errors(client, caplog):
    with trio.fail_after(10):
        e = assert_error(await call(client, "fail"), NOT_FOUND)
        assert e == {"code": NOT_FOUND, "message": "block not found", "data": {"height": 7}}
        with caplog.at_level(logging.ERROR, logger="aitbc.rpc"):
            r = await post(client, {"jsonrpc": "2.0", "id": 9, "method": "boom"})
        e = assert_error(r.json(), INTERNAL_ERROR, rid=9)
        assert e == {"code": INTERNAL_ERROR, "message": "internal error"}
        assert "secret" not in r.text
        records = [rec for rec in caplog.records if rec.name == "aitbc.rpc" and rec.exc_info]
        assert records and "secret internal detail" in str(records[-1].exc_info[1])
        assert_error(await call(client, "unserialisable"), INTERNAL_ERROR)


async def test_notifications_get_no_response(client):
    with trio.fail_after(10):
        for req in (
            {"jsonrpc": "2.0", "method": "echo", "params": {"value": 1}},
            {"jsonrpc": "2.0", "method": "nope"},
            {"jsonrpc": "2.0", "method": "add", "params": [1, 2]},
            {"jsonrpc": "2.0", "method": "boom"},
        ):
            r = await post(client, req)
            assert r.status_code == 204 and r.content == b"", req


async def test_batches(srv, client):
    with trio.fail_after(20):
        batch = [
            {"jsonrpc": "2.0", "id": 1, "method": "add", "params": {"a": 1, "b": 2}},
            {"jsonrpc": "2.0", "method": "echo", "params": {"value": "notify"}},
            {"jsonrpc": "2.0", "id": "x", "method": "nope"},
            1,
            {"jsonrpc": "2.0", "id": 3, "method": "add", "params": {"a": 1}},
            {"jsonrpc": "2.0", "id": 4, "method": "echo", "params": {"value": [4]}},
        ]
        r = await post(client, batch)
        assert r.status_code == 200
        out = r.json()
        assert isinstance(out, list) and len(out) == 5
        by_id = {json.dumps(o["id"]): o for o in out if o["id"] is not None}
        assert by_id["1"]["result"] == 3
        assert by_id['"x"']["error"]["code"] == METHOD_NOT_FOUND
        assert by_id["3"]["error"]["code"] == INVALID_PARAMS
        assert by_id["4"]["result"] == [4]
        assert [o["error"]["code"] for o in out if o["id"] is None] == [INVALID_REQUEST]

        # empty batch: one error object, not an array
        r = await post(client, [])
        assert_error(r.json(), INVALID_REQUEST, rid=None)

        # only notifications: 204 without a body
        r = await post(client, [{"jsonrpc": "2.0", "method": "echo"}, {"jsonrpc": "2.0", "method": "nope"}])
        assert r.status_code == 204 and r.content == b""

        # batch of invalid items: one error per item
        r = await post(client, [1, 2, 3])
        assert [o["error"]["code"] for o in r.json()] == [INVALID_REQUEST] * 3

        # bound on batch length (default 1000)
        item = {"jsonrpc": "2.0", "id": 1, "method": "echo"}
        assert len((await post(client, [item] * 1000)).json()) == 1000
        r = await post(client, [item] * 1001)
        assert_error(r.json(), INVALID_REQUEST, rid=None, contains="batch too large")


async def test_request_too_large(client):
    with trio.fail_after(30):
        limit = 4 << 20
        body = b'{"jsonrpc":"2.0","id":1,"method":"echo","params":{"value":"' + b"x" * limit + b'"}}'
        r = await post(client, body)
        assert r.status_code == 413
        assert_error(r.json(), INVALID_REQUEST, rid=None, contains="request too large")
        # the connection is still usable afterwards
        assert (await call(client, "add", {"a": 1, "b": 1}))["result"] == 2


async def test_request_too_large_small_limit(nursery):
    s = await start_server(nursery, max_body_bytes=1024)
    async with httpx.AsyncClient(base_url=s.url, timeout=10, trust_env=False) as c:
        with trio.fail_after(10):
            ok = {"jsonrpc": "2.0", "id": 1, "method": "echo", "params": {"value": "y" * 900}}
            assert (await post(c, ok)).json()["result"] == "y" * 900
            for size in (1500, 5000):  # drained (keep-alive) and not read (connection closed)
                r = await post(
                    c, {"jsonrpc": "2.0", "id": 1, "method": "echo", "params": {"value": "y" * size}}
                )
                assert r.status_code == 413
                assert_error(r.json(), INVALID_REQUEST, rid=None, contains="request too large")
            assert (await post(c, ok)).status_code == 200


async def test_chunked_bodies(nursery):
    s = await start_server(nursery, max_body_bytes=4096)

    def chunks(data: bytes, size: int = 700):
        async def gen():
            for i in range(0, len(data), size):
                yield data[i : i + size]

        return gen()

    async with httpx.AsyncClient(base_url=s.url, timeout=10, trust_env=False) as c:
        with trio.fail_after(10):
            ok = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "echo", "params": {"value": "q" * 3000}})
            r = await c.post("/rpc", content=chunks(ok.encode()))  # no content-length: chunked
            assert r.json() == {"jsonrpc": "2.0", "id": 7, "result": "q" * 3000}
            big = json.dumps({"jsonrpc": "2.0", "id": 8, "method": "echo", "params": {"value": "q" * 6000}})
            r = await c.post("/rpc", content=chunks(big.encode()))
            assert r.status_code == 413
            assert_error(r.json(), INVALID_REQUEST, rid=None, contains="request too large")
            assert (await call(c, "add", {"a": 1, "b": 2}))["result"] == 3


async def test_non_post_is_405(client):
    with trio.fail_after(10):
        for method in ("GET", "PUT", "DELETE"):
            r = await client.request(method, "/rpc")
            assert r.status_code == 405
            assert "POST" in r.headers["allow"]
        # content-type is not required to be exact
        r = await client.post(
            "/rpc",
            content=b'{"jsonrpc":"2.0","id":1,"method":"echo"}',
            headers={"content-type": "text/plain"},
        )
        assert r.json()["result"] is None


async def test_discover(client):
    with trio.fail_after(10):
        doc = (await call(client, "rpc.discover"))["result"]
        assert doc["openrpc"] == "1.2.6"
        assert doc["info"]["title"] == "aitbc-peer" and doc["info"]["version"] == "0.1.0"
        assert "by position" in doc["info"]["description"]
        methods = {m["name"]: m for m in doc["methods"]}
        assert {"echo", "add", "typed", "fail", "boom", "subscribe", "unsubscribe"} <= set(methods)
        assert "adminPing" not in methods  # admin disabled: not advertised
        add = methods["add"]
        assert add["summary"] == "Add two integers"
        assert add["paramStructure"] == "either"  # by name or by position
        assert add["params"] == [
            {"name": "a", "required": True, "schema": {"type": "integer"}, "description": ""},
            {
                "name": "b",
                "required": True,
                "schema": {"type": "integer", "minimum": 0},
                "description": "non-negative",
            },
        ]
        assert add["result"] == {"name": "result", "schema": {"type": "integer"}}
        # every method documents its errors (by default the common ones: params, busy, internal)
        assert [e["code"] for e in add["errors"]] == [-32602, -32005, -32603]
        assert {"-32700", "-32600", "-32601", "-32602"} <= set(doc["components"]["errors"])
        hash_schema = next(p for p in methods["typed"]["params"] if p["name"] == "hash")["schema"]
        assert hash_schema["format"] == "hash32" and hash_schema["pattern"] == "^0x[0-9a-fA-F]{64}$"
        sub = methods["subscribe"]
        assert "WebSocket-only" in sub["summary"] and sub["paramStructure"] == "either"
        assert sub["params"][0]["name"] == "topic"
        assert set(sub["params"][0]["schema"]["enum"]) == {"newHeads", "tx"}
        topics = {t["name"]: t for t in sub["x-topics"]}
        assert topics["tx"]["params"][0]["name"] == "hash"
        assert "WebSocket-only" in methods["unsubscribe"]["summary"]


async def test_metrics(srv, client):
    with trio.fail_after(10):
        await call(client, "add", {"a": 1, "b": 2})
        await call(client, "add", {"a": 1, "b": -2})
        await call(client, "definitely_not_registered_xyz")
        r = await client.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        text = r.text
        assert 'rpc_request_seconds_count{method="add"} 2.0' in text
        assert 'rpc_request_seconds_bucket{le="0.005",method="add"}' in text
        assert 'rpc_requests_total{method="add",outcome="ok"} 1.0' in text
        assert 'rpc_requests_total{method="add",outcome="error"} 1.0' in text
        assert 'rpc_requests_total{method="unknown",outcome="error"} 1.0' in text
        assert "definitely_not_registered_xyz" not in text


async def test_metrics_disabled_without_registry(nursery):
    server = RpcServer(build_registry(), build_hub(), port=0)
    with trio.fail_after(10):
        port = await nursery.start(server.serve)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False) as c:
        with trio.fail_after(10):
            assert (await c.get("/metrics")).status_code == 404
            assert (await call(c, "add", {"a": 1, "b": 1}))["result"] == 2


# --------------------------------------------------------------------------- admin


async def test_admin_refused_when_disabled(client):
    with trio.fail_after(10):
        assert_error(await call(client, "adminPing"), UNAUTHORIZED, contains="admin methods are disabled")


async def test_admin_enabled_on_loopback(nursery):
    s = await start_server(nursery, admin_enabled=True, admin_token=TOKEN)
    async with httpx.AsyncClient(base_url=s.url, timeout=10, trust_env=False) as c:
        with trio.fail_after(10):
            assert (await call(c, "adminPing"))["result"] == "admin-pong"
            doc = (await call(c, "rpc.discover"))["result"]
            assert "adminPing" in {m["name"] for m in doc["methods"]}


async def test_admin_needs_bearer_token_off_loopback():
    reg = build_registry()
    body = b'{"jsonrpc":"2.0","id":1,"method":"adminPing"}'
    with trio.fail_after(10):
        d = Dispatcher(reg, admin_enabled=True, admin_token=TOKEN)
        for host, auth in (
            ("10.1.2.3", None),
            ("10.1.2.3", b"Bearer wrong"),
            ("::ffff:10.0.0.1", b"Basic x"),
            (None, None),
        ):
            resp = json.loads(await d.handle(body, CallContext(host, auth)))
            assert_error(resp, UNAUTHORIZED, contains="Bearer")
        for host, auth in (
            ("10.1.2.3", b"Bearer " + TOKEN.encode()),
            ("127.0.0.1", None),
            ("::1", None),
            ("::ffff:127.0.0.1", None),
        ):
            assert json.loads(await d.handle(body, CallContext(host, auth)))["result"] == "admin-pong"
        # no token configured: only loopback may use admin methods
        d = Dispatcher(reg, admin_enabled=True, admin_token=None)
        assert_error(json.loads(await d.handle(body, CallContext("10.1.2.3", b"Bearer "))), UNAUTHORIZED)
        d = Dispatcher(reg, admin_enabled=False, admin_token=TOKEN)
        resp = json.loads(await d.handle(body, CallContext("10.1.2.3", b"Bearer " + TOKEN.encode())))
        assert_error(resp, UNAUTHORIZED, contains="disabled")


# --------------------------------------------------------------------------- WebSocket


async def test_ws_method_calls(srv):
    with trio.fail_after(10):
        async with open_websocket_url(srv.ws_url) as ws:
            assert await ws_call(ws, "add", {"a": 20, "b": 22}) == {"jsonrpc": "2.0", "id": 1, "result": 42}
            assert (await ws_call(ws, "add", [1, 2]))["result"] == 3  # by position too
            assert_error(await ws_call(ws, "add", [1, 2, 3]), INVALID_PARAMS, contains="too many")
            await ws.send_message("{oops")
            assert_error(json.loads(await ws.get_message()), PARSE_ERROR, rid=None)
            await ws.send_message(
                json.dumps(
                    [
                        {"jsonrpc": "2.0", "id": 1, "method": "echo", "params": {"value": 1}},
                        {"jsonrpc": "2.0", "method": "echo"},
                        {"jsonrpc": "2.0", "id": 2, "method": "nope"},
                    ]
                )
            )
            out = json.loads(await ws.get_message())
            assert [o["id"] for o in out] == [1, 2] and out[0]["result"] == 1
            # a notification produces nothing: the next message answers the next request
            await ws.send_message(json.dumps({"jsonrpc": "2.0", "method": "echo"}))
            assert (await ws_call(ws, "echo", {"value": "after"}, rid=5))["result"] == "after"
            # binary frames are accepted as UTF-8 JSON
            await ws.send_message(b'{"jsonrpc":"2.0","id":6,"method":"echo","params":{"value":6}}')
            assert json.loads(await ws.get_message())["result"] == 6
            assert_error(await ws_call(ws, "adminPing"), UNAUTHORIZED)


async def test_ws_subscribe_notify_filter_unsubscribe(srv):
    hub = srv.hub
    with trio.fail_after(10):
        async with open_websocket_url(srv.ws_url) as ws:
            r = await ws_call(ws, "subscribe", {"topic": "newHeads"})
            heads_id = r["result"]
            assert isinstance(heads_id, str) and heads_id.startswith("0x") and len(heads_id) == 18
            int(heads_id, 16)
            r = await ws_call(ws, "subscribe", {"topic": "tx", "hash": HASH_A}, rid=2)
            tx_id = r["result"]
            assert tx_id != heads_id
            assert hub.subscriber_count("tx") == 1 and hub.subscriber_count() == 2
            # by position too (like eth_subscribe): [topic] or [topic, {filter params}]; unsubscribe [id]
            extra = [(await ws_call(ws, "subscribe", p, rid=3))["result"] for p in (["newHeads"], ["tx", {"hash": HASH_B}])]
            assert hub.subscriber_count() == 4
            assert [(await ws_call(ws, "unsubscribe", [x], rid=4))["result"] for x in extra] == [True, True]
            assert hub.subscriber_count("tx") == 1 and hub.subscriber_count() == 2

            hub.publish("newHeads", {"height": 1, "hash": HASH_B})
            note = json.loads(await ws.get_message())
            assert note == {
                "jsonrpc": "2.0",
                "method": "subscription",
                "params": {
                    "subscription": heads_id,
                    "topic": "newHeads",
                    "result": {"height": 1, "hash": HASH_B},
                },
            }
            # filter: key B does not match this subscriber, key A does
            hub.publish("tx", {"hash": HASH_B, "status": "pending"}, key=HASH_B)
            hub.publish("tx", {"hash": HASH_A, "status": "included"}, key=HASH_A)
            note = json.loads(await ws.get_message())
            assert note["params"]["subscription"] == tx_id
            assert note["params"]["result"] == {"hash": HASH_A, "status": "included"}

            assert (await ws_call(ws, "unsubscribe", {"subscription": tx_id}, rid=3))["result"] is True
            assert (await ws_call(ws, "unsubscribe", {"subscription": tx_id}, rid=4))["result"] is False
            assert hub.subscriber_count("tx") == 0
            hub.publish("tx", {"hash": HASH_A}, key=HASH_A)  # nobody listens any more
            # next frame is the answer to this call, not a stale notification
            assert (await ws_call(ws, "echo", {"value": "marker"}, rid=5))["result"] == "marker"
        # closing the connection drops its subscriptions (once the server has
        # processed the disconnect, i.e. when every task is idle again)
        with trio.fail_after(5):
            await trio.testing.wait_all_tasks_blocked(0.05)
        assert hub.subscriber_count() == 0


async def test_ws_subscribe_errors(srv):
    with trio.fail_after(10):
        async with open_websocket_url(srv.ws_url) as ws:
            assert_error(
                await ws_call(ws, "subscribe", {"topic": "nope"}), INVALID_PARAMS, contains="unknown topic"
            )
            assert_error(await ws_call(ws, "subscribe", {}), INVALID_PARAMS, contains="'topic'")
            assert_error(await ws_call(ws, "subscribe", {"topic": 5}), INVALID_PARAMS, contains="'topic'")
            assert_error(await ws_call(ws, "subscribe", ["tx"]), INVALID_PARAMS, contains="'hash'")
            assert_error(await ws_call(ws, "subscribe", ["tx", 5]), INVALID_PARAMS, contains="second positional")
            assert_error(await ws_call(ws, "subscribe", ["tx", {}, 3]), INVALID_PARAMS, contains="too many")
            assert_error(await ws_call(ws, "unsubscribe", ["0x00", 1]), INVALID_PARAMS, contains="too many")
            assert_error(
                await ws_call(ws, "subscribe", {"topic": "tx", "hash": "0x12"}),
                INVALID_PARAMS,
                contains="'hash' must be 0x-prefixed 32-byte hex",
            )
            assert_error(await ws_call(ws, "subscribe", {"topic": "tx"}), INVALID_PARAMS, contains="'hash'")
            assert_error(
                await ws_call(ws, "subscribe", {"topic": "newHeads", "x": 1}), INVALID_PARAMS, contains="'x'"
            )
            assert_error(await ws_call(ws, "unsubscribe", {}), INVALID_PARAMS)
            assert_error(await ws_call(ws, "unsubscribe", {"subscription": 1}), INVALID_PARAMS)
            # at most 64 subscriptions per connection
            ids = set()
            for i in range(64):
                ids.add((await ws_call(ws, "subscribe", {"topic": "newHeads"}, rid=i))["result"])
            assert len(ids) == 64
            assert_error(await ws_call(ws, "subscribe", {"topic": "newHeads"}, rid=99), BUSY, rid=99)
            assert (await ws_call(ws, "unsubscribe", {"subscription": ids.pop()}))["result"] is True
            assert "result" in await ws_call(ws, "subscribe", {"topic": "newHeads"})


async def test_ws_slow_subscriber_is_disconnected(nursery):
    s = await start_server(nursery, hub_kw={"queue_size": 16})
    hub = s.hub
    payload = {"blob": "x" * 16384}
    with trio.fail_after(60):
        async with open_websocket_url(s.ws_url) as slow, open_websocket_url(s.ws_url) as fast:
            await ws_call(slow, "subscribe", {"topic": "tx", "hash": HASH_A})
            fast_id = (await ws_call(fast, "subscribe", {"topic": "tx", "hash": HASH_B}))["result"]
            # Flood the slow client, which never reads, until the hub drops it.  Each
            # publish is synchronous and must return at once; the checkpoint lets the
            # server's writer push into the (filling) socket buffers.
            published = 0
            worst = 0.0
            while hub.subscriber_count("tx") == 2:
                t0 = time.perf_counter()
                hub.publish("tx", payload, key=HASH_A)
                worst = max(worst, time.perf_counter() - t0)
                published += 1
                assert published < 100_000
                await trio.lowlevel.checkpoint()
            assert hub.subscriber_count("tx") == 1  # only the fast subscriber is left
            assert worst < 0.1, worst
            # publishing keeps working for the others
            hub.publish("tx", {"ok": True}, key=HASH_B)
            note = json.loads(await fast.get_message())
            assert note["params"] == {"subscription": fast_id, "topic": "tx", "result": {"ok": True}}
            # the slow client finds the close (1008) after whatever was already in flight
            received = 0
            with pytest.raises(ConnectionClosed) as exc:
                while True:
                    await slow.get_message()
                    received += 1
            assert exc.value.reason.code == 1008
            assert exc.value.reason.reason == "subscriber too slow"
            assert received < published
            assert (await ws_call(fast, "echo", {"value": 1}))["result"] == 1


async def test_stuck_subscriber_does_not_block_shutdown():
    """A subscriber that never reads at all (socket buffers full) is dropped without
    blocking publish, and the server still stops promptly: the stuck transport is
    closed under the writer once the close deadline passes."""
    hub = build_hub(queue_size=8)
    server = RpcServer(build_registry(), hub, port=0, shutdown_timeout=1.0)
    server.ws_close_timeout = 0.5
    payload = {"blob": "z" * 65536}
    with trio.fail_after(30):
        done = trio.Event()

        async def run_server(task_status=trio.TASK_STATUS_IGNORED):
            async with trio.open_nursery() as n:
                port = await n.start(server.serve)
                task_status.started((port, n.cancel_scope))
            done.set()

        async with trio.open_nursery() as test_nursery:
            port, server_scope = await test_nursery.start(run_server)
            # message_queue_size=0 and a tiny receive buffer: this client reads nothing
            async with open_websocket_url(f"ws://127.0.0.1:{port}/ws", message_queue_size=0) as ws:
                await ws_call(ws, "subscribe", {"topic": "newHeads"})
                while hub.subscriber_count("newHeads"):
                    hub.publish("newHeads", payload)
                    await trio.lowlevel.checkpoint()
                t0 = trio.current_time()
                server_scope.cancel()
                await done.wait()
                assert trio.current_time() - t0 < 3.0
                with pytest.raises(ConnectionClosed):
                    while True:
                        await ws.get_message()


async def test_ws_oversized_message_refused(srv):
    with trio.fail_after(30):
        async with open_websocket_url(srv.ws_url) as ws:
            await ws.send_message("x" * ((4 << 20) + 1))
            with pytest.raises(ConnectionClosed) as exc:
                await ws.get_message()
            assert exc.value.reason.code == 1009
        async with open_websocket_url(srv.ws_url) as ws:  # the server still serves
            assert (await ws_call(ws, "echo", {"value": 2}))["result"] == 2


async def test_ws_path_over_plain_http(client):
    with trio.fail_after(10):
        assert (await client.get("/ws")).status_code == 426


# --------------------------------------------------------------------------- lifecycle


def _count_tasks() -> int:
    count = 0
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


async def test_clean_quick_shutdown():
    hub = build_hub()
    server = RpcServer(build_registry(), hub, port=0)
    with trio.fail_after(20):
        before = _count_tasks()
        done = trio.Event()

        async def run_server(task_status=trio.TASK_STATUS_IGNORED):
            async with trio.open_nursery() as n:
                port = await n.start(server.serve)
                task_status.started((port, n.cancel_scope))
            done.set()

        async with trio.open_nursery() as test_nursery:
            port, server_scope = await test_nursery.start(run_server)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False
            ) as c:
                assert (await call(c, "echo", {"value": 1}))["result"] == 1  # keep-alive connection open
                async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
                    await ws_call(ws, "subscribe", {"topic": "newHeads"})
                    assert hub.subscriber_count() == 1
                    t0 = trio.current_time()
                    server_scope.cancel()
                    with pytest.raises(ConnectionClosed) as exc:
                        await ws.get_message()
                    assert exc.value.reason.code == 1001
                await done.wait()
                assert trio.current_time() - t0 < 2.0
        assert hub.subscriber_count() == 0
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)
        assert _count_tasks() == before
        # the server object can serve again
        async with trio.open_nursery() as n:
            port2 = await n.start(server.serve)
            async with httpx.AsyncClient(timeout=10, trust_env=False) as c:
                assert (await c.get(f"http://127.0.0.1:{port2}/health")).text == "ok"
            n.cancel_scope.cancel()


async def test_serve_reports_bind_errors():
    with trio.fail_after(10):
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]
        try:
            server = RpcServer(build_registry(), build_hub(), port=port)
            with pytest.raises(OSError):
                await server.serve()
        finally:
            await listener.aclose()


# --------------------------------------------------------------------------- registry / hub units


def test_registry_rejects_bad_declarations():
    reg = MethodRegistry()

    async def h(a):
        return a

    with pytest.raises(ValueError):
        reg.add("rpc.x", h, params=[Param("a", {})])
    with pytest.raises(ValueError):
        reg.add("subscribe", h, params=[Param("a", {})])
    with pytest.raises(ValueError):
        reg.add("m", h, params=[Param("a", {"type": "float"})])
    with pytest.raises(ValueError):
        reg.add("m", h, params=[Param("a", {"format": "base58"})])
    with pytest.raises(ValueError):
        reg.add("m", h, params=[Param("a", {}), Param("a", {})])
    with pytest.raises(TypeError):
        reg.add("m", h)  # handler needs 'a' but it is not declared
    with pytest.raises(TypeError):
        reg.add("m", h, params=[Param("a", {}), Param("b", {})])  # handler does not accept 'b'
    reg.add("m", h, params=[Param("a", {})])
    with pytest.raises(ValueError):
        reg.add("m", h, params=[Param("a", {})])
    assert "m" in reg and len(reg) == 1


def test_hub_publish_and_registration():
    hub = build_hub()
    assert hub.queue_size == 1024 and hub.max_subscriptions_per_connection == 64
    hub.publish("newHeads", object())  # no subscribers: nothing is even encoded
    with pytest.raises(ValueError):
        hub.publish("nope", {})
    with pytest.raises(ValueError):
        hub.register_topic("tx")
    with pytest.raises(ValueError):
        hub.register_topic("bad", params=[Param("topic", {})])
    assert hub.subscriber_count() == 0 and hub.subscriber_count("nope") == 0
    doc = build_openrpc(build_registry(), hub)
    assert [m["name"] for m in doc["methods"]][-2:] == ["subscribe", "unsubscribe"]
