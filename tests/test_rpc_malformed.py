"""Bad input over JSON-RPC (HTTP and WebSocket) gets precise errors and never hurts the node.

All tests share one node; the last one checks it still produces blocks and accepts a valid transfer.
"""

from __future__ import annotations

import json
import os

import cbor2
import httpx
import pytest
import trio
from nodeproc import NodeProcess, address, load_dev_key
from trio_websocket import ConnectionClosed, open_websocket_url

from state import codec
from state.crypto import SigningKey
from state.types import Transaction, transfer

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
NOT_FOUND, TX_REJECTED = -32004, -32010
HASH0 = "0x" + "00" * 32


@pytest.fixture(scope="module")
def chain(dev_node: NodeProcess) -> dict:
    return dev_node.rpc("system_info")


@pytest.fixture(scope="module")
def dev_key(dev_node: NodeProcess) -> SigningKey:
    return load_dev_key(dev_node.home)


@pytest.fixture(scope="module")
def valid_tx(dev_node: NodeProcess, dev_key: SigningKey, chain: dict) -> Transaction:
    """A well-formed transfer (never submitted as is) used as the base of mangled encodings."""
    nonce = dev_node.account(dev_key)["pending_nonce"] + 500
    return transfer(dev_key, chain["chain_id"], SigningKey.generate().public_key, 7, nonce, chain["params"]["min_fee"])


def post_json(node: NodeProcess, body: bytes | str) -> dict | list:
    resp = node.post(body)
    assert resp.status_code == 200, (resp.status_code, resp.text[:300])
    return resp.json()


def req(method: str, params: object = None, rid: object = 1) -> str:
    obj: dict = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        obj["params"] = params
    return json.dumps(obj)


def error_of(node: NodeProcess, body: bytes | str, code: int) -> dict:
    out = post_json(node, body)
    assert isinstance(out, dict) and "error" in out, out
    assert out["error"]["code"] == code, out
    return out["error"]


# ------------------------------------------------------------------------------------------- envelope


@pytest.mark.parametrize(
    "body",
    [b"{", b"not json", b'{"jsonrpc": "2.0", "id": 1, "method": "chain_getHead"', b"\xff\xfe\x00",
     b'{"jsonrpc":"2.0","id":1,"method":"chain_getHead","params":{"x":NaN}}', b"[" * 100_000],
    ids=["open-brace", "text", "truncated", "bad-utf8", "nan", "deep-nesting"],
)  # fmt: skip
def test_invalid_json_is_a_parse_error(dev_node: NodeProcess, body: bytes) -> None:
    err = error_of(dev_node, body, PARSE_ERROR)
    assert post_json(dev_node, body)["id"] is None
    assert "parse" in err["message"]


@pytest.mark.parametrize("body", ["42", '"chain_getHead"', "null", "true"])
def test_non_object_request(dev_node: NodeProcess, body: str) -> None:
    error_of(dev_node, body, INVALID_REQUEST)


@pytest.mark.parametrize(
    "obj",
    [
        {"jsonrpc": "1.0", "id": 1, "method": "chain_getHead"},
        {"id": 1, "method": "chain_getHead"},
        {"jsonrpc": 2.0, "id": 1, "method": "chain_getHead"},
        {"jsonrpc": "2.0", "id": 1, "method": 5},
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "id": {"a": 1}, "method": "chain_getHead"},
        {"jsonrpc": "2.0", "id": [1], "method": "chain_getHead"},
        {"jsonrpc": "2.0", "id": 1, "method": "chain_getHead", "params": "height"},
        {"jsonrpc": "2.0", "id": 1, "method": "chain_getHead", "params": 3},
    ],
    ids=["v1", "no-version", "numeric-version", "method-int", "no-method", "id-object", "id-array",
         "params-string", "params-int"],
)  # fmt: skip
def test_invalid_request_objects(dev_node: NodeProcess, obj: dict) -> None:
    error_of(dev_node, json.dumps(obj), INVALID_REQUEST)


def test_unknown_method(dev_node: NodeProcess) -> None:
    err = error_of(dev_node, req("chain_doesNotExist"), METHOD_NOT_FOUND)
    assert "chain_doesNotExist" in err["message"]
    error_of(dev_node, req("x" * 100_000), METHOD_NOT_FOUND)
    # subscribe is WebSocket-only
    error_of(dev_node, req("subscribe", {"topic": "newHeads"}), METHOD_NOT_FOUND)


def test_notification_gets_no_body_and_http_method_checked(dev_node: NodeProcess) -> None:
    resp = dev_node.post(json.dumps({"jsonrpc": "2.0", "method": "chain_getHead"}))
    assert resp.status_code == 204 and resp.content == b""
    resp = httpx.get(dev_node.url, timeout=10)
    assert resp.status_code == 405
    assert resp.json()["error"]["code"] == INVALID_REQUEST


# ----------------------------------------------------------------------------------------------- params


@pytest.mark.parametrize(
    ("method", "params", "needle"),
    [
        ("chain_getBlock", [1, None, True, 4], "too many positional params: chain_getBlock takes at most 3"),
        ("chain_getBlock", [None, 5], "'hash' must be a string"),
        ("chain_getHead", [1], "chain_getHead takes no params, got 1"),
        ("chain_getHead", {"verbose": True}, "unknown parameter 'verbose'"),
        ("chain_getBlock", {"height": 1, "bogus": 2}, "unknown parameter 'bogus'"),
        ("chain_getBlock", {"height": "1"}, "'height' must be an integer"),
        ("chain_getBlock", {"height": -1}, "'height' must be >= 0"),
        ("chain_getBlock", {"height": 1.5}, "'height' must be an integer"),
        ("chain_getBlock", {"height": 1.0}, "'height' must be an integer"),
        ("chain_getBlock", {"height": True}, "'height' must be an integer"),
        ("chain_getBlock", {"height": 10**30}, "'height' must be <="),
        ("chain_getBlock", {"height": 1, "hash": HASH0}, "exactly one"),
        ("chain_getBlock", {}, "exactly one"),
        ("chain_getBlock", {"height": 1, "full_transactions": "yes"}, "must be a boolean"),
        ("chain_getCommit", {"height": 0}, "'height' must be >= 1"),
        ("chain_getCommit", {"height": 2**64}, "'height' must be <="),
        ("chain_getCommit", {}, "missing required parameter 'height'"),
        ("chain_getBlock", {"hash": "0x1234"}, "32-byte"),
        ("chain_getBlock", {"hash": "0x" + "zz" * 32}, "32-byte"),
        ("chain_getBlock", {"hash": "00" * 32}, "32-byte"),
        ("chain_getTransaction", {"hash": "0x" + "00" * 33}, "32-byte"),
        ("chain_getTransaction", {"hash": 5}, "must be a string"),
        ("tx_submit", {"tx": "0xzz"}, "hex"),
        ("tx_submit", {"tx": "0x123"}, "hex"),
        ("tx_submit", {"tx": "abcd"}, "hex"),
        ("tx_submit", {"tx": ["0x00"]}, "must be a string"),
        ("tx_submit", {}, "missing required parameter 'tx'"),
        ("tx_submit", {"tx": "0x" + "00" * (64 * 1024 + 1)}, "at most 65536 bytes"),
        ("tx_submitBatch", {"txs": "0x00"}, "must be an array"),
        ("tx_submitBatch", {"txs": [5]}, "txs[0]"),
        ("tx_submitBatch", {"txs": ["0x00", "0xgg"]}, "txs[1]"),
        ("tx_submitBatch", {"txs": ["0x00"] * 10_001}, "at most 10000 items"),
        ("state_getAccount", {"address": "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"}, "address"),
        ("state_getAccount", {"address": "ait1" + "q" * 200}, "address"),
        ("state_getAccount", {"address": 12}, "must be a string"),
        ("state_getAccount", {"address": "ait1qqqq", "proof": 1}, "must be a boolean"),
    ],
)
def test_bad_params(dev_node: NodeProcess, method: str, params: object, needle: str) -> None:
    err = error_of(dev_node, req(method, params), INVALID_PARAMS)
    assert needle in err["message"], err


def test_bad_address_checksum(dev_node: NodeProcess, dev_key: SigningKey) -> None:
    good = address(dev_key)
    last = "q" if good[-1] != "q" else "p"
    for bad in (good[:-1] + last, good[:10] + ("q" if good[10] != "q" else "p") + good[11:]):
        err = error_of(dev_node, req("state_getAccount", {"address": bad}), INVALID_PARAMS)
        assert "checksum" in err["message"], err
    err = error_of(dev_node, req("state_getAccount", {"address": good.upper()[:-1] + good[-1]}), INVALID_PARAMS)
    assert "address" in err["message"]


def test_not_found(dev_node: NodeProcess) -> None:
    error_of(dev_node, req("chain_getBlock", {"height": 0}), NOT_FOUND)
    error_of(dev_node, req("chain_getBlock", {"height": 2**64 - 1}), NOT_FOUND)
    error_of(dev_node, req("chain_getBlock", {"hash": HASH0}), NOT_FOUND)
    error_of(dev_node, req("chain_getCommit", {"height": 10**9}), NOT_FOUND)
    error_of(dev_node, req("chain_getTransaction", {"hash": HASH0}), NOT_FOUND)


# ---------------------------------------------------------------------------------------------- batches


def test_batches(dev_node: NodeProcess) -> None:
    error_of(dev_node, "[]", INVALID_REQUEST)
    err = error_of(dev_node, json.dumps([json.loads(req("system_health", rid=i)) for i in range(1001)]), INVALID_REQUEST)
    assert "batch too large" in err["message"]
    # a mixed batch: every member answered on its own
    out = post_json(dev_node, "[" + ",".join([req("chain_getHead", rid=1), "5", req("nope", rid=3),
                                               req("chain_getBlock", {"height": "x"}, rid=4)]) + "]")  # fmt: skip
    assert isinstance(out, list) and len(out) == 4
    assert "result" in out[0] and out[0]["id"] == 1
    assert out[1]["error"]["code"] == INVALID_REQUEST
    assert out[2]["error"]["code"] == METHOD_NOT_FOUND and out[2]["id"] == 3
    assert out[3]["error"]["code"] == INVALID_PARAMS and out[3]["id"] == 4
    # a batch of notifications only: nothing to answer
    resp = dev_node.post(json.dumps([{"jsonrpc": "2.0", "method": "chain_getHead"}] * 3))
    assert resp.status_code == 204


def test_oversized_body(dev_node: NodeProcess) -> None:
    big = req("tx_submit", {"tx": "0x" + "00" * (3 << 20)})  # > 4 MiB of JSON
    assert len(big) > 4 << 20
    resp = dev_node.post(big)
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == INVALID_REQUEST
    # far beyond the limit: the node stops reading and closes (the client may see a 413 or a reset)
    with httpx.Client(timeout=30) as c:
        try:
            resp = c.post(dev_node.url, content=b"[" + b" " * (12 << 20) + b"]")
            assert resp.status_code == 413
        except httpx.TransportError:
            pass
    assert dev_node.rpc("system_health")["status"] == "ok"


# ------------------------------------------------------------------------------------ bad transactions


def _cbor_map(items: list[tuple[bytes, bytes]]) -> bytes:
    assert len(items) < 24
    return bytes([0xA0 | len(items)]) + b"".join(k + v for k, v in items)


def _canonical_items(obj: dict) -> list[tuple[bytes, bytes]]:
    items = [(cbor2.dumps(k), cbor2.dumps(v, canonical=True)) for k, v in obj.items()]
    return sorted(items, key=lambda kv: (len(kv[0]), kv[0]))


def test_canonical_helpers_rebuild_the_same_bytes(valid_tx: Transaction) -> None:
    """Sanity check of the hand-made encodings below: rebuilt canonically they are the tx's bytes."""
    assert _cbor_map(_canonical_items(cbor2.loads(valid_tx.raw))) == valid_tx.raw


def mangled_encodings(tx: Transaction) -> dict[str, bytes]:
    obj = cbor2.loads(tx.raw)
    items = _canonical_items(obj)
    out = {
        "random": os.urandom(200),
        "empty-map": b"\xa0",
        "cbor-int": b"\x01",
        "truncated": tx.raw[: len(tx.raw) // 2],
        "trailing-byte": tx.raw + b"\x00",
        "reversed-key-order": _cbor_map(items[::-1]),
        "indefinite-map": b"\xbf" + b"".join(k + v for k, v in items) + b"\xff",
    }
    # the nonce as an 8-byte integer instead of its shortest form
    long_items = [(k, b"\x1b" + obj["nonce"].to_bytes(8, "big")) if k == cbor2.dumps("nonce") else (k, v)
                  for k, v in items]  # fmt: skip
    out["long-int"] = _cbor_map(long_items)
    # a duplicated key
    out["duplicate-key"] = _cbor_map([*items, items[0]])
    # a missing field and an extra field (canonical, so only the structure is wrong)
    out["missing-field"] = codec.encode({k: v for k, v in obj.items() if k != "fee"})
    out["extra-field"] = codec.encode({**obj, "memo": "hi"})
    out["sig-wrong-length"] = codec.encode({**obj, "sig": obj["sig"][:63]})
    out["nonce-negative"] = codec.encode({**obj, "nonce": -1})
    out["nonce-over-u64"] = codec.encode({**obj, "nonce": 2**64})
    out["body-not-map"] = codec.encode({**obj, "body": [1, 2]})
    out["sender-text"] = codec.encode({**obj, "sender": "ait1abc"})
    # over 64 KiB: refused by the RPC hex limit (tx_submit) or the decoder (tx_submitBatch)
    out["huge"] = codec.encode({**obj, "body": {"to": obj["body"]["to"], "amount": 1, "pad": b"\x00" * 65_536}})
    return out


def test_garbage_transactions_are_rejected_with_a_reason(dev_node: NodeProcess, valid_tx: Transaction) -> None:
    cases = mangled_encodings(valid_tx)
    for name, raw in cases.items():
        assert raw != valid_tx.raw, name
        err = dev_node.rpc_error("tx_submit", tx="0x" + raw.hex())
        assert err["code"] in (TX_REJECTED, INVALID_PARAMS), (name, err)
        if err["code"] == TX_REJECTED:
            assert err["data"]["reason"] in (
                "malformed", "non_canonical", "invalid_body", "bad_signature", "too_large"
            ), (name, err)
    for name in ("truncated", "indefinite-map", "duplicate-key"):
        err = dev_node.rpc_error("tx_submit", tx="0x" + cases[name].hex())
        assert err["code"] == TX_REJECTED and err["data"]["reason"] == "malformed", (name, err)
    # random bytes are either not CBOR at all or (rarely) CBOR that is not canonical
    err = dev_node.rpc_error("tx_submit", tx="0x" + cases["random"].hex())
    assert err["code"] == TX_REJECTED and err["data"]["reason"] in ("malformed", "non_canonical"), err
    for name in ("reversed-key-order", "long-int"):
        err = dev_node.rpc_error("tx_submit", tx="0x" + cases[name].hex())
        assert err["code"] == TX_REJECTED and err["data"]["reason"] == "non_canonical", (name, err)
        assert "non-canonical" in err["message"], err
    # the same through the batch method: one result per tx, none accepted
    huge = cases.pop("huge")
    err = dev_node.rpc_error("tx_submitBatch", txs=["0x00", "0x" + huge.hex()])
    assert err["code"] == INVALID_PARAMS and "'txs[1]' must be at most 65536 bytes" in err["message"], err
    res = dev_node.rpc("tx_submitBatch", txs=["0x" + raw.hex() for raw in cases.values()])
    assert res["accepted"] == 0 and res["rejected"] == len(cases)
    assert all(r["error"]["reason"] for r in res["results"])
    assert dev_node.rpc("mempool_status")["size"] == 0


def test_transfer_with_invalid_body_is_rejected(dev_node: NodeProcess, dev_key: SigningKey, chain: dict) -> None:
    nonce = dev_node.account(dev_key)["pending_nonce"]
    fee = chain["params"]["min_fee"]
    for body in ({"to": b"\x01" * 31, "amount": 1}, {"to": b"\x01" * 32, "amount": 0},
                 {"to": b"\x01" * 32}, {"to": b"\x01" * 32, "amount": 1, "x": 1}):  # fmt: skip
        tx = Transaction.create(dev_key, chain["chain_id"], "transfer", nonce, fee, body)
        err = dev_node.rpc_error("tx_submit", tx="0x" + tx.raw.hex())
        assert err["code"] == TX_REJECTED and err["data"]["reason"] == "invalid_body", (body, err)
    tx = Transaction.create(dev_key, chain["chain_id"], "mint", nonce, fee, {"amount": 1})
    err = dev_node.rpc_error("tx_submit", tx="0x" + tx.raw.hex())
    assert err["code"] == TX_REJECTED, err


# -------------------------------------------------------------------------------------------- WebSocket


async def _ws_rpc(ws, payload: str | bytes) -> dict | list:
    await ws.send_message(payload)
    return json.loads(await ws.get_message())


async def test_websocket_garbage_and_unknown_topics(dev_node: NodeProcess) -> None:
    with trio.fail_after(30):
        async with open_websocket_url(dev_node.ws_url) as ws:
            assert (await _ws_rpc(ws, "garbage{"))["error"]["code"] == PARSE_ERROR
            assert (await _ws_rpc(ws, b"\xff\x00\x81binary"))["error"]["code"] == PARSE_ERROR
            assert (await _ws_rpc(ws, "[]"))["error"]["code"] == INVALID_REQUEST
            assert (await _ws_rpc(ws, "17"))["error"]["code"] == INVALID_REQUEST
            err = (await _ws_rpc(ws, req("subscribe", {"topic": "noSuchTopic"})))["error"]
            assert err["code"] == INVALID_PARAMS and "unknown topic" in err["message"]
            assert (await _ws_rpc(ws, req("subscribe", {})))["error"]["code"] == INVALID_PARAMS
            assert (await _ws_rpc(ws, req("subscribe", {"topic": 5})))["error"]["code"] == INVALID_PARAMS
            assert (await _ws_rpc(ws, req("subscribe", ["newHeads", {}, 1])))["error"]["code"] == INVALID_PARAMS
            assert (await _ws_rpc(ws, req("subscribe", ["noSuchTopic"])))["error"]["code"] == INVALID_PARAMS
            err = (await _ws_rpc(ws, req("subscribe", {"topic": "tx", "hash": "0x12"})))["error"]
            assert err["code"] == INVALID_PARAMS
            err = (await _ws_rpc(ws, req("subscribe", {"topic": "newHeads", "extra": 1})))["error"]
            assert err["code"] == INVALID_PARAMS
            assert (await _ws_rpc(ws, req("unsubscribe", {"subscription": "0xdeadbeef"})))["result"] is False
            assert (await _ws_rpc(ws, req("unsubscribe", {"subscription": 1})))["error"]["code"] == INVALID_PARAMS
            assert (await _ws_rpc(ws, req("nope")))["error"]["code"] == METHOD_NOT_FOUND

            # the same connection still works: plain calls and a live subscription
            head = (await _ws_rpc(ws, req("chain_getHead")))["result"]
            sid = (await _ws_rpc(ws, req("subscribe", {"topic": "newHeads"}, rid=9)))["result"]
            note = json.loads(await ws.get_message())
            assert note["params"]["subscription"] == sid
            assert note["params"]["result"]["height"] > head["height"] - 1

        # a frame larger than the node's message limit closes that connection (1009) only
        async with open_websocket_url(dev_node.ws_url) as ws:
            await ws.send_message("x" * ((4 << 20) + 10))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1009
        async with open_websocket_url(dev_node.ws_url) as ws:
            assert "result" in await _ws_rpc(ws, req("system_health"))


# ------------------------------------------------------------------------------------------ still alive


def test_node_survives_everything(dev_node: NodeProcess, dev_key: SigningKey, chain: dict) -> None:
    assert dev_node.alive(), dev_node.log_tail()
    h0 = dev_node.height()
    dev_node.wait_height(h0 + 2, timeout=15)
    acc = dev_node.account(dev_key)
    to = SigningKey.generate().public_key
    tx = transfer(dev_key, chain["chain_id"], to, 1_234, acc["pending_nonce"], chain["params"]["min_fee"])
    assert dev_node.rpc("tx_submit", tx="0x" + tx.raw.hex())["hash"] == "0x" + tx.hash.hex()
    st = dev_node.wait_included(["0x" + tx.hash.hex()])["0x" + tx.hash.hex()]
    assert st["status"] == "committed"
    assert dev_node.balance(to) == 1_234
    assert "Traceback" not in dev_node.log_text(), dev_node.log_tail(80)
