"""``rpc.discover`` against a real node: every method is called (by name and by position) and its real
result is checked against the result schema the OpenRPC document gives for it; the documented errors are
the ones the node answers with.

One node (proof of stake, the miner role, admin methods, p2p on) with prepared data: a settled job and its
result blob, a registered and pinned model, an uploaded blob, a committed transfer.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from nodeproc import NodeProcess, address, clean_env, load_dev_key, run_cli, wait_for
from trio_websocket import open_websocket_url

from node.blobs import signed_blob_put_params
from rpc.schemas import validate
from state.address import encode_address
from state.crypto import SigningKey
from state.types import transfer

METHOD_NOT_FOUND, INVALID_PARAMS, NOT_FOUND = -32601, -32602, -32004

#: Methods whose result here is degenerate because this test runs one node without peers: the call and
#: the schema check still run, on an empty list / this node's own view.
NEEDS_A_NETWORK = {
    "net_peers": "no peers on a one-node test: an empty list (items are checked by the unit schema test)",
    "consensus_getEvidence": "duplicate votes need a byzantine validator (tests/test_bft_*): an empty list",
}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("discover") / "home"
    r = run_cli("init", "--dev", "--consensus", "pos", "--home", str(home), "--block-interval", "200")
    assert r.returncode == 0, r.stderr
    n = NodeProcess(home, extra_args=["--miner"], env={"AITBC_RPC_ADMIN": "true", "AITBC_P2P_ENABLED": "true"})
    try:
        n.start()
        n.wait_ready()
        yield n
    finally:
        n.close()


def cli(node: NodeProcess, *args: str, timeout: float = 120) -> str:
    r = run_cli(*args, "--home", str(node.home), env=clean_env(AITBC_RPC_URL=node.url), timeout=timeout)
    assert r.returncode == 0, f"{args}: {r.stdout}\n{r.stderr}\n{node.log_tail()}"
    return r.stdout


@pytest.fixture(scope="module")
def prepared(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Data every method can be called on: ids of a job, a model, a blob, a tx, addresses."""
    from test_models import CFG, FILE

    info = node.rpc("system_info")
    key = load_dev_key(node.home)
    dev = address(key)
    wait_for(lambda: node.rpc("market_listMiners")["miners"], 60, "the miner registered")
    out = cli(node, "job", "submit", "--from", "dev", "--kind", "hash-chain",
              "--params", '{"chains": 4, "iterations": 16}', "--max-price", "0.001", "--max-units", "4",
              "--bid-window", "2", "--wait")  # fmt: skip
    assert "COMPLETED" in out, out
    job_id = out.split()[1]
    tmp = tmp_path_factory.mktemp("model")
    path, arch = tmp / "tiny.bin", tmp / "arch.json"
    path.write_bytes(FILE)
    arch.write_text(json.dumps(CFG.to_map()))
    out = cli(node, "model", "register", str(path), "--name", "tiny-llama", "--arch", str(arch), "--from", "dev")
    assert "registered in block" in out, out
    model_id = node.rpc("market_getModel", model="tiny-llama")["model_id"]
    blob = node.rpc("blob_put", **signed_blob_put_params(key, info["chain_id"], b"discover", node.height() + 20))
    acc = node.account(key)
    to = SigningKey.generate().public_key
    tx = transfer(key, info["chain_id"], to, 5, acc["pending_nonce"], info["params"]["min_fee"])
    tx_hash = node.rpc("tx_submit", tx="0x" + tx.raw.hex())["hash"]
    node.wait_included([tx_hash])
    validator = info["validator"]
    return {"info": info, "key": key, "dev": dev, "job_id": job_id, "model_id": model_id, "blob": blob["hash"],
            "tx_hash": tx_hash, "validator": validator, "miner": info["miner"], "to": to}


def calls(p: dict[str, Any], node: NodeProcess, tag: str = "") -> dict[str, dict]:
    """Method -> by-name params of a call that succeeds on the prepared node."""
    key, chain_id = p["key"], p["info"]["chain_id"]
    acc = node.account(key)
    fee = p["info"]["params"]["min_fee"]
    tx1 = transfer(key, chain_id, p["to"], 1, acc["pending_nonce"], fee)
    tx2 = transfer(key, chain_id, p["to"], 1, acc["pending_nonce"] + 1, fee)
    peer = "12D3KooW" + "A" * 44  # a well-formed peer id of no connected peer
    return {
        "system_health": {},
        "system_info": {},
        "chain_getHead": {},
        "chain_getBlock": {"height": 1, "full_transactions": True},
        "chain_getCommit": {"height": 1},
        "chain_getTransaction": {"hash": p["tx_hash"]},
        "chain_getAddressTransactions": {"address": p["dev"], "limit": 2},
        "chain_getSupply": {},
        "state_getAccount": {"address": p["dev"], "proof": True},
        "tx_simulate": {"tx": "0x" + tx1.raw.hex()},  # dry run (rpc/simulate_methods.py): nothing pooled
        "tx_submit": {"tx": "0x" + tx1.raw.hex()},
        "tx_submitBatch": {"txs": ["0x" + tx2.raw.hex(), "0x00"]},
        "mempool_status": {},
        "consensus_status": {},
        "consensus_getValidators": {},
        "consensus_getEvidence": {},
        "net_info": {},
        "net_peers": {},
        "market_getJob": {"job_id": p["job_id"]},
        "market_listJobs": {"limit": 5},
        "market_getBids": {"job_id": p["job_id"]},
        "market_getReceipt": {"job_id": p["job_id"]},
        "market_getMiner": {"address": p["miner"]},
        "market_listMiners": {},
        "market_getAvailableChunks": {"job_id": p["job_id"]},
        "market_stats": {},
        "market_getModel": {"model": "tiny-llama"},
        "market_listModels": {},
        "market_getModelChunk": {"model": p["model_id"], "index": 1},
        "blob_get": {"hash": p["blob"]},
        "blob_put": signed_blob_put_params(key, chain_id, b"discover " + tag.encode(), node.height() + 20),
        "staking_getValidators": {},
        "staking_getValidator": {"address": p["validator"]},
        "staking_getDelegations": {"validator": p["validator"]},
        "staking_getUnbonding": {"delegator": p["dev"]},
        "staking_getParams": {},
        "zk_receiptTree": {},
        "zk_bidderTree": {},
        "zk_bidderLeaves": {"limit": 2},
        "zk_receiptLeaves": {"start": 0, "limit": 4},
        "zk_receiptRoot": {"root": "0x" + "00" * 32},
        "zk_getNullifier": {"scope": "0x6170", "nullifier": "0x" + "11" * 32},
        "admin_peers": {},
        "admin_banPeer": {"peer_id": peer, "reason": "test"},
        "admin_unbanPeer": {"peer_id": peer},
        "admin_blobGc": {},
        "admin_setLogLevel": {"level": "info", "logger": "aitbc.rpc"},
        "admin_pinModel": {"model": p["model_id"]},
        "admin_unpinModel": {"model": p["model_id"]},
        "admin_mempoolFlush": {},
        "rpc.discover": {},
    }


def documented(node: NodeProcess) -> dict[str, dict]:
    doc = node.rpc("rpc.discover")
    assert doc["openrpc"] == "1.2.6"
    return {m["name"]: m for m in doc["methods"]}


def schema_keywords(schema: Any, found: set[str]) -> None:
    if isinstance(schema, dict):
        found.update(schema)
        for k, v in schema.items():
            if k == "properties":
                for sub in v.values():
                    schema_keywords(sub, found)
            elif k in ("items", "additionalProperties"):
                schema_keywords(v, found)
            elif k == "anyOf":
                for sub in v:
                    schema_keywords(sub, found)


def test_discover_documents_every_method(node: NodeProcess) -> None:
    from rpc.schemas import KEYWORDS

    methods = documented(node)
    assert "admin_peers" in methods  # rpc.admin = true: the admin methods are listed
    for name, m in methods.items():
        schema = m["result"]["schema"]
        assert schema.get("properties") or schema.get("items") or name in ("subscribe", "unsubscribe"), name
        used: set[str] = set()
        schema_keywords(schema, used)
        assert used <= KEYWORDS, (name, used - KEYWORDS)
        codes = [e["code"] for e in m["errors"]]
        assert INVALID_PARAMS in codes and all(set(e) <= {"code", "message", "data"} for e in m["errors"]), name
        assert m["paramStructure"] == "either", name


def test_every_method_result_matches_its_documented_schema(node: NodeProcess, prepared: dict) -> None:
    """Every method, called by name and then by position, answers a result its schema accepts."""
    methods = documented(node)
    ws_only = {"subscribe", "unsubscribe"}  # test_websocket_methods_by_position
    for tag in ("by-name", "by-position"):
        table = calls(prepared, node, tag)
        assert set(table) == set(methods) - ws_only | {"rpc.discover"}, set(table) ^ (set(methods) - ws_only)
        for name, params in table.items():
            if name == "rpc.discover":
                continue
            if tag == "by-name":
                resp = node.call(name, **params)
            else:
                order = [p["name"] for p in methods[name]["params"]]
                assert set(params) <= set(order), name
                values = [params.get(n) for n in order]
                while values and values[-1] is None:
                    values.pop()
                resp = positional(node, name, values)
            assert "result" in resp, (tag, name, resp)
            errs = validate(resp["result"], methods[name]["result"]["schema"])
            assert not errs, (tag, name, errs[:10], NEEDS_A_NETWORK.get(name, ""))


def positional(node: NodeProcess, method: str, values: list) -> dict:
    r = node._http.post(node.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": values})
    assert r.status_code == 200, r.text[:300]
    return r.json()


def test_documented_errors_are_the_ones_answered(node: NodeProcess, prepared: dict) -> None:
    """Too many positional params, unknown ids and rejections answer the codes rpc.discover lists."""
    methods = documented(node)
    for name, m in methods.items():
        if name in ("subscribe", "unsubscribe"):
            continue
        n = len(m["params"])
        err = positional(node, name, [None] * (n + 1))["error"]
        assert err["code"] == INVALID_PARAMS, (name, err)
        assert ("too many positional params" in err["message"]) if n else ("takes no params" in err["message"])
        assert f"got {n + 1}" in err["message"], err
    zero, nobody = "0x" + "00" * 32, address(SigningKey.generate())
    failing = [
        ("chain_getBlock", {"height": 10**9}, NOT_FOUND),
        ("chain_getCommit", {"height": 10**9}, NOT_FOUND),
        ("chain_getTransaction", {"hash": zero}, NOT_FOUND),
        ("tx_submit", {"tx": "0x00"}, -32010),
        ("market_getJob", {"job_id": zero}, NOT_FOUND),
        ("market_getBids", {"job_id": zero}, NOT_FOUND),
        ("market_getReceipt", {"job_id": zero}, NOT_FOUND),
        ("market_getAvailableChunks", {"job_id": zero}, NOT_FOUND),
        ("market_getMiner", {"address": nobody}, NOT_FOUND),
        ("market_getModel", {"model": "no-such-model"}, NOT_FOUND),
        ("market_getModelChunk", {"model": "no-such-model", "index": 0}, NOT_FOUND),
        ("market_getModelChunk", {"model": "tiny-llama", "index": 99}, INVALID_PARAMS),
        ("market_listJobs", {"cursor": "abc"}, INVALID_PARAMS),
        ("blob_get", {"hash": zero}, NOT_FOUND),
        ("blob_put", {"data": "0x00"}, -32011),
        ("staking_getValidator", {"address": nobody}, NOT_FOUND),
        ("staking_getDelegations", {}, INVALID_PARAMS),
        ("admin_setLogLevel", {"level": "info", "logger": "no.such.logger"}, NOT_FOUND),
        ("admin_pinModel", {"model": "no-such-model"}, NOT_FOUND),
        ("admin_unpinModel", {"model": "no-such-model"}, NOT_FOUND),
        ("admin_banPeer", {"peer_id": "not a peer id"}, INVALID_PARAMS),
    ]
    for name, params, code in failing:
        err = node.rpc_error(name, **params)
        assert err["code"] == code, (name, err)
        assert code in [e["code"] for e in methods[name]["errors"]], (name, code)
    # admin methods from a browser page (an Origin, even an allowed one) need the token: -32001, documented
    r = node._http.post(node.url, json={"jsonrpc": "2.0", "id": 1, "method": "admin_peers"},
                        headers={"origin": f"http://127.0.0.1:{node.rpc_port}"})
    assert r.status_code == 403 or r.json()["error"]["code"] == -32001
    assert -32001 in [e["code"] for e in methods["admin_peers"]["errors"]]


def test_address_history_pages_newest_first(node: NodeProcess, prepared: dict) -> None:
    """chain_getAddressTransactions: the sender's and the recipient's histories hold the transfer; pages
    of one follow next_cursor without gaps or repeats; a made-up cursor is -32602."""
    to = encode_address(prepared["to"])
    res = node.rpc("chain_getAddressTransactions", address=to)
    assert res["indexed_from"] == 1 and res["next_cursor"] is None
    first = res["transactions"][-1]  # the oldest: the transfer of `prepared` (calls() may have sent more)
    assert (first["hash"], first["type"], first["sender"], first["to"], first["amount"]) == (
        prepared["tx_hash"], "transfer", prepared["dev"], to, "5")
    assert first["result"]["ok"] is True
    whole = node.rpc("chain_getAddressTransactions", address=prepared["dev"], limit=100)["transactions"]
    assert prepared["tx_hash"] in [t["hash"] for t in whole]
    assert any(t["type"] == "job_submit" for t in whole)
    positions = [(t["block_height"], t["index"]) for t in whole]
    assert positions == sorted(positions, reverse=True) and len(set(positions)) == len(positions)
    paged, cursor = [], None
    for _ in range(len(whole) + 1):
        page = node.rpc("chain_getAddressTransactions", address=prepared["dev"], limit=1,
                        **({"cursor": cursor} if cursor else {}))
        paged += page["transactions"]
        cursor = page["next_cursor"]
        if cursor is None or len(paged) >= len(whole):
            break
    assert [t["hash"] for t in paged] == [t["hash"] for t in whole][: len(paged)] and len(paged) == len(whole)
    for bad in ("12", "x:1", "1:-1", "99999999999999999999999:0"):
        err = node.rpc_error("chain_getAddressTransactions", address=to, cursor=bad)
        assert err["code"] == INVALID_PARAMS and "cursor" in err["message"], (bad, err)


def test_unknown_methods_root_path_and_hosts(node: NodeProcess) -> None:
    base = f"http://127.0.0.1:{node.rpc_port}"
    for params in ([1, 2], [], {"x": 1}, "str", None):
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"}
        if params is not None:
            body["params"] = params
        assert node._http.post(node.url, json=body).json()["error"]["code"] == METHOD_NOT_FOUND, params
    # POST / is JSON-RPC too (geth, CometBFT clients); GET / is the web explorer ([web] enabled by default)
    head = node._http.post(base + "/", json={"jsonrpc": "2.0", "id": 1, "method": "chain_getHead", "params": []})
    assert head.json()["result"]["height"] >= 1
    page = node._http.get(base + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # the Host allow-list: localhost names and IPs pass, another name is refused with a one-line reason
    ok = node._http.post(base + "/", json={"jsonrpc": "2.0", "id": 1, "method": "system_health"},
                         headers={"host": f"localhost:{node.rpc_port}"})
    assert ok.json()["result"]["status"] == "ok"
    bad = node._http.post(base + "/rpc", json={"jsonrpc": "2.0", "id": 1, "method": "system_health"},
                          headers={"host": "rebind.example"})
    assert bad.status_code == 403 and bad.json()["error"]["data"]["reason"] == "host_not_allowed"
    assert "rpc.allowed_hosts" in bad.json()["error"]["message"]


async def test_websocket_methods_by_position(node: NodeProcess) -> None:
    methods = await trio.to_thread.run_sync(documented, node)
    with trio.fail_after(30):
        async with open_websocket_url(node.ws_url) as ws:
            async def call(method: str, params: Any) -> dict:
                await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
                while True:
                    msg = json.loads(await ws.get_message())
                    if msg.get("id") == 1:
                        return msg

            sub = await call("subscribe", ["newHeads"])
            assert not validate(sub["result"], methods["subscribe"]["result"]["schema"]), sub
            tx = await call("subscribe", ["tx", {"hash": "0x" + "11" * 32}])
            assert "result" in tx, tx
            head = await call("chain_getHead", [])
            assert not validate(head["result"], methods["chain_getHead"]["result"]["schema"])
            for sid in (sub["result"], tx["result"]):
                done = await call("unsubscribe", [sid])
                assert done["result"] is True and not validate(done["result"], methods["unsubscribe"]["result"]["schema"])
            assert (await call("unsubscribe", ["0x00", 1]))["error"]["code"] == INVALID_PARAMS


def test_schema_validator_and_the_shapes_only_a_network_produces() -> None:
    """The validator finds what disagrees; items of results that are empty on one node (NEEDS_A_NETWORK)
    are checked on the shapes rpc/methods.py builds."""
    from rpc.schemas import RESULTS

    head = {"height": 1, "hash": "0x" + "ab" * 32, "time": 5, "state_root": "0x" + "cd" * 32,
            "finalized_height": 1, "finalized_hash": "0x" + "ab" * 32}  # fmt: skip
    schema = RESULTS["chain_getHead"]
    assert validate(head, schema) == []
    assert validate({**head, "height": "1"}, schema) == ["$.height: expected integer, got str '1'"]
    assert validate({**head, "extra": 1}, schema) == ["$: undocumented member 'extra'"]
    assert validate({k: v for k, v in head.items() if k != "time"}, schema) == ["$: missing member 'time'"]
    assert "does not match" in validate({**head, "hash": "0x12"}, schema)[0]
    assert validate(None, RESULTS["chain_getBlock"]["properties"]["last_commit"]) == []
    assert "anyOf" in validate(5, RESULTS["chain_getBlock"]["properties"]["last_commit"])[0]
    assert "unsupported keywords" in validate(1, {"oneOf": []})[0]
    peer = {"peer_id": "12D3KooWFw8BDTbSK65Ng9NeknYFgBCqApGabenxE4XLERHFn51j", "addrs": ["/ip4/1.2.3.4/tcp/1"],
            "height": None, "finalized_height": 3, "score": 0.5}  # fmt: skip
    assert validate([peer], RESULTS["net_peers"]) == []
    ev = {"type": "duplicate_vote", "validator": "ait1a4v2d0d3p8edrrkm4mtpkznew493vk2a0q8t5zch597nm3fa2qxqw3dkz2",
          "height": 4, "round": 0, "vote_type": 1, "block_hashes": ["0x" + "01" * 32, "0x" + "02" * 32],
          "hash": "0x" + "03" * 32}  # fmt: skip
    assert validate([ev], RESULTS["consensus_getEvidence"]) == []
