"""Hostile clients against real node processes: descriptor exhaustion, per-IP caps and rate limits,
WebSocket fan-out, signed blob uploads with quotas and garbage collection, admin methods, and the CLI's
signed ``job submit --input``.

Real processes (tests/nodeproc.py), real HTTP/WebSocket clients, real signatures. Every wait is bounded;
every process is stopped by pid in teardown.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import socket
import sys
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
import trio
from nodeproc import NodeProcess, address, clean_env, init_home, load_dev_key, run_cli, wait_for
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    open_websocket_url,
)

from gpu.encoding import encode_array
from node.blobs import signed_blob_put_params
from p2p.identity import peer_id_from_ed25519
from rpc.limits import REASONS as REFUSAL_REASONS
from state import market
from state.crypto import SigningKey
from state.types import Transaction, transfer

BUSY, UNAUTHORIZED, NOT_FOUND, BLOB_REJECTED = -32005, -32001, -32004, -32011
TOKEN = "hostile-admin-token"


class LimitedNode(NodeProcess):
    """A node process started with RLIMIT_NOFILE lowered to ``nofile`` (soft and hard): the interpreter
    sets the limit and execs the node in the same process (same pid)."""

    def __init__(self, *args, nofile: int, **kw) -> None:
        super().__init__(*args, **kw)
        self.nofile = nofile

    @property
    def args(self) -> list[str]:
        n = self.nofile
        code = (
            f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({n}, {n})); "
            "os.execv(sys.executable, [sys.executable] + sys.argv[1:])"
        )
        return [sys.executable, "-c", code, *super().args[1:]]


def metric(node: NodeProcess, name: str, **labels: str) -> float:
    text = httpx.get(node.metrics_url, timeout=10).text
    sel = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name + ("{" + sel + "}" if sel else "")) + r" ([0-9.e+]+)"
    m = re.search(pattern, text)
    return float(m.group(1)) if m else 0.0


def rpc_json(node: NodeProcess, method: str, params: dict | None = None, *, token: str | None = None) -> dict:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
    return httpx.post(node.url, json=body, headers=headers, timeout=30).json()


def _raise_own_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < min(want, 8192):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, 8192), hard))


# ------------------------------------------------------------------------------------ descriptors


async def test_a_thousand_idle_websockets_do_not_exhaust_descriptors(tmp_path: Path) -> None:
    """With RLIMIT_NOFILE at 512, 1,100 WebSockets that never send anything: the node refuses the excess
    (fd_reserve), keeps committing blocks, signing, writing LevelDB and blobs, and serving RPC."""
    _raise_own_nofile()
    home = init_home(tmp_path / "home")
    node = LimitedNode(home, nofile=512, env={
        "AITBC_RPC_MAX_CONNECTIONS": "5000", "AITBC_RPC_MAX_WS_CONNECTIONS": "5000",
    })  # fmt: skip
    try:
        await trio.to_thread.run_sync(lambda: (node.start(), node.wait_ready()))
        key = load_dev_key(home)
        info = await trio.to_thread.run_sync(node.rpc, "system_info")
        held = []
        outcome: Counter[str] = Counter()
        release = trio.Event()
        with trio.fail_after(180):
            async with trio.open_nursery() as conns:

                async def one(task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
                    started = False
                    try:
                        async with open_websocket_url(node.ws_url, message_queue_size=4, connect_timeout=20) as ws:
                            held.append(ws)
                            outcome["accepted"] += 1
                            started = True
                            task_status.started()
                            await release.wait()
                    except ConnectionRejected as exc:
                        outcome[json.loads(exc.body)["error"]["data"]["reason"]] += 1
                    except (HandshakeError, ConnectionClosed, OSError, trio.BrokenResourceError):
                        if not started:
                            outcome["closed"] += 1  # beyond the polite refusals a connection is just closed
                    finally:
                        if not started:
                            task_status.started()

                for _wave in range(22):  # 1,100 attempts, 50 at a time
                    async with trio.open_nursery() as wave:
                        for _ in range(50):
                            wave.start_soon(conns.start, one)
                assert sum(outcome.values()) == 1100
                assert outcome["accepted"] >= 50, outcome
                assert outcome["fd_reserve"] >= 500, outcome  # refused with the reason, not crashed
                assert node.alive(), node.log_tail()

                # A new HTTP connection is refused with 503 fd_reserve while they are all held ...
                r = await trio.to_thread.run_sync(lambda: httpx.post(
                    node.url, json={"jsonrpc": "2.0", "id": 1, "method": "system_health"}, timeout=10))
                assert r.status_code == 503 and r.json()["error"]["data"]["reason"] == "fd_reserve", r.text

                # ... and the node works: blocks keep coming, a transfer is signed, committed and notified,
                # a blob is written, all over connections it had accepted.
                ws = held[0]

                async def call(method: str, params: dict, rid: int) -> dict:
                    await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                                                      "params": params}))
                    while True:
                        msg = json.loads(await ws.get_message())
                        if msg.get("id") == rid:
                            return msg

                h0 = (await call("chain_getHead", {}, 1))["result"]["height"]
                nonce = (await call("state_getAccount", {"address": address(key)}, 2))["result"]["pending_nonce"]
                tx = transfer(key, info["chain_id"], SigningKey.generate().public_key, 5, nonce,
                              info["params"]["min_fee"])
                sub = await call("subscribe", {"topic": "tx", "hash": "0x" + tx.hash.hex()}, 3)
                assert "result" in sub, sub
                assert (await call("tx_submit", {"tx": "0x" + tx.raw.hex()}, 4))["result"]["hash"]
                while True:  # the inclusion notification
                    note = json.loads(await ws.get_message())
                    if note.get("method") == "subscription":
                        assert note["params"]["result"]["status"] == "committed", note
                        break
                put = await call("blob_put", signed_blob_put_params(key, info["chain_id"], os.urandom(5000), h0 + 50), 5)
                assert "result" in put, put
                assert (await call("chain_getHead", {}, 6))["result"]["height"] > h0
                assert node.alive()
                release.set()  # every client closes its WebSocket
        # everything released: plain HTTP works again, the refusals are counted
        await trio.to_thread.run_sync(lambda: wait_for(
            lambda: node.rpc("system_health")["status"] == "ok", 30, "HTTP RPC after the flood"))
        assert await trio.to_thread.run_sync(lambda: metric(node, "rpc_refusals_total", reason="fd_reserve")) >= 500
        log = node.log_text()
        assert "Too many open files" not in log and "Traceback" not in log, node.log_tail(80)
        h = await trio.to_thread.run_sync(node.height)
        await trio.to_thread.run_sync(node.wait_height, h + 2)
    finally:
        node.close()


# ---------------------------------------------------------------------------------- caps and rates


def test_per_ip_caps_and_rate_limit_on_a_node(node_factory) -> None:
    node = node_factory(env={
        "AITBC_RPC_LOOPBACK_EXEMPT": "false", "AITBC_RPC_MAX_CONNECTIONS_PER_IP": "8",
        "AITBC_RPC_MAX_WS_PER_IP": "2", "AITBC_RPC_RATE_LIMIT": "20", "AITBC_RPC_RATE_BURST": "60",
    })  # fmt: skip
    body = {"jsonrpc": "2.0", "id": 1, "method": "system_health"}
    # every refusal reason has a series from the start (0), so rate() and alerts see the first refusal
    text = httpx.get(node.metrics_url, timeout=10).text
    for reason in REFUSAL_REASONS:
        assert f'rpc_refusals_total{{reason="{reason}"}} 0.0' in text, reason
    # rate: the burst goes, then 429 with -32005 rate_limited
    with httpx.Client(timeout=10) as c:
        statuses = [c.post(node.url, json=body).status_code for _ in range(200)]
        assert 200 in statuses and 429 in statuses
        first = statuses.index(429)
        assert 40 <= first <= 120, first
        r = c.post(node.url, json=body)
        if r.status_code == 429:
            err = r.json()["error"]
            assert err["code"] == BUSY and err["data"]["reason"] == "rate_limited"
    assert metric(node, "rpc_refusals_total", reason="rate_limited") >= 1

    # connections: 8 from this address are held, the 9th is refused with 429 ip_connection_limit
    held = [socket.create_connection(("127.0.0.1", node.rpc_port), timeout=10) for _ in range(8)]
    try:
        def refused() -> httpx.Response | None:
            r = httpx.post(node.url, json=body, timeout=10)
            return r if r.status_code == 429 and "ip_connection_limit" in r.text else None

        r = wait_for(refused, 10, "the per-IP connection cap")  # the node counts them as it accepts
        assert r.json()["error"]["code"] == BUSY and r.headers["connection"] == "close"
    finally:
        for s in held:
            s.close()
    wait_for(lambda: httpx.post(node.url, json=body, timeout=10).status_code == 200, 15, "capacity back")

    async def websockets() -> None:
        with trio.fail_after(20):
            async with open_websocket_url(node.ws_url), open_websocket_url(node.ws_url):
                with pytest.raises(ConnectionRejected) as exc:
                    async with open_websocket_url(node.ws_url):
                        pass
                assert exc.value.status_code == 429
                assert json.loads(exc.value.body)["error"]["data"]["reason"] == "ip_ws_limit"

    trio.run(websockets)


# ------------------------------------------------------------------------------------------ fan-out


@pytest.fixture(scope="module")
def rich_node(tmp_path_factory: pytest.TempPathFactory):
    """A dev node with admin methods (token required even on loopback), p2p on (no peers), small blob
    quotas and short blob expiry (gc only on request), many subscriptions per connection."""
    home = init_home(tmp_path_factory.mktemp("rich") / "home")
    node = NodeProcess(home, env={
        "AITBC_RPC_ADMIN": "true", "AITBC_RPC_ADMIN_TOKEN": TOKEN, "AITBC_RPC_ADMIN_LOOPBACK": "false",
        "AITBC_P2P_ENABLED": "true", "AITBC_RPC_MAX_SUBSCRIPTIONS_PER_CONNECTION": "3000",
        "AITBC_BLOBS_MAX_ACCOUNT_BYTES": "150000", "AITBC_BLOBS_MAX_TOTAL_BYTES": "300000",
        "AITBC_BLOBS_GRACE_S": "2", "AITBC_BLOBS_RETAIN_S": "2", "AITBC_BLOBS_GC_INTERVAL_S": "3600",
    })  # fmt: skip
    try:
        node.start()
        node.wait_ready()
        yield node
    finally:
        node.close()


async def test_tx_fanout_touches_only_matching_subscribers(rich_node: NodeProcess) -> None:
    node = rich_node
    key = load_dev_key(node.home)
    info = await trio.to_thread.run_sync(node.rpc, "system_info")
    nonce = (await trio.to_thread.run_sync(node.account, key))["pending_nonce"]
    tx = transfer(key, info["chain_id"], SigningKey.generate().public_key, 3, nonce, info["params"]["min_fee"])
    checked0 = await trio.to_thread.run_sync(lambda: metric(node, "rpc_ws_fanout_checked_total", topic="tx"))
    with trio.fail_after(60):
        async with open_websocket_url(node.ws_url) as crowd, open_websocket_url(node.ws_url) as me:
            for _ in range(5):  # 2,500 subscriptions to other transactions
                batch = [{"jsonrpc": "2.0", "id": j, "method": "subscribe",
                          "params": {"topic": "tx", "hash": "0x" + os.urandom(32).hex()}} for j in range(500)]
                await crowd.send_message(json.dumps(batch))
                assert all("result" in r for r in json.loads(await crowd.get_message()))
            await me.send_message(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "subscribe",
                                              "params": {"topic": "tx", "hash": "0x" + tx.hash.hex()}}))
            sid = json.loads(await me.get_message())["result"]
            await trio.to_thread.run_sync(lambda: node.rpc("tx_submit", tx="0x" + tx.raw.hex()))
            note = json.loads(await me.get_message())
            assert note["params"]["subscription"] == sid and note["params"]["result"]["status"] == "committed"
            assert await trio.to_thread.run_sync(lambda: metric(node, "rpc_ws_subscriptions")) == 2501
            checked = await trio.to_thread.run_sync(lambda: metric(node, "rpc_ws_fanout_checked_total", topic="tx"))
    # publishing this block's one tx event examined one subscription, not 2,501
    assert checked - checked0 == 1


# ---------------------------------------------------------------------------------------------- blobs


def _matmul_input(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**32, size=(64, 64), dtype=np.uint32)
    b = rng.integers(0, 2**32, size=(64, 64), dtype=np.uint32)
    return encode_array(a) + encode_array(b)


def test_blob_put_is_signed_funded_bounded_and_collected(rich_node: NodeProcess) -> None:
    node = rich_node
    dev = load_dev_key(node.home)
    info = node.rpc("system_info")
    chain_id, fee = info["chain_id"], info["params"]["min_fee"]
    head = node.height()

    def put(key: SigningKey, data: bytes, expires: int | None = None, **override) -> dict:
        params = signed_blob_put_params(key, chain_id, data, node.height() + 50 if expires is None else expires)
        params.update(override)
        return node.call("blob_put", **params)

    def refused(resp: dict, reason: str) -> dict:
        assert "error" in resp, resp
        assert resp["error"]["code"] == BLOB_REJECTED and resp["error"]["data"]["reason"] == reason, resp
        return resp["error"]

    data = os.urandom(1000)
    refused(node.call("blob_put", data="0x" + data.hex()), "unsigned")
    refused(put(dev, data, sig=put_sig(dev, chain_id, b"other bytes", head + 50)), "bad_signature")
    refused(put(dev, data, sig=put_sig(dev, "another-chain", data, head + 50)), "bad_signature")
    refused(put(dev, data, expires=head - 1), "expired")
    refused(put(dev, data, expires=head + 10_000), "expiry_too_far")
    refused(put(SigningKey.generate(), data), "unfunded")
    bad_owner = node.call("blob_put", **{**signed_blob_put_params(dev, chain_id, data, head + 50), "owner": "ait1x"})
    assert bad_owner["error"]["code"] == -32602 and "owner" in bad_owner["error"]["message"]

    # accepted: stored, served, charged to the owner
    a_data = _matmul_input(1)  # a job input (matmul 64x64x64 without seed)
    b_data = os.urandom(40_000)
    a = put(dev, a_data)["result"]
    b = put(dev, b_data)["result"]
    assert a["hash"] == "0x" + hashlib.sha256(a_data).hexdigest() and a["size"] == len(a_data)
    assert b["account_bytes"] == len(a_data) + len(b_data) and b["account_blobs"] == 2
    assert node.rpc("blob_get", hash=b["hash"])["data"] == "0x" + b_data.hex()
    assert put(dev, b_data)["result"]["account_blobs"] == 2  # the same blob again: idempotent
    # quotas: per account (150 kB), then in total (300 kB)
    err = refused(put(dev, os.urandom(80_000)), "account_quota")
    assert "150000" in err["message"]
    k2, k3 = SigningKey.generate(), SigningKey.generate()
    nonce = node.account(dev)["pending_nonce"]
    txs = [transfer(dev, chain_id, k.public_key, 5_000_000, nonce + i, fee) for i, k in enumerate((k2, k3))]
    node.wait_included([node.rpc("tx_submit", tx="0x" + t.raw.hex())["hash"] for t in txs])
    d = put(k2, os.urandom(140_000))["result"]
    refused(put(k3, os.urandom(100_000)), "total_quota")

    # garbage collection: a job of the owner refers to A (QUEUED for a long bid window); B and D are
    # referenced by nothing and go once the grace period (2 s) is over; A stays while the job lives.
    body = market.job_submit_body("matmul-u32", 1, {"m": 64, "n": 64, "k": 64}, max_price=1000, max_units=1,
                                  bid_window=900, deadline=10, blob_input=(bytes.fromhex(a["hash"][2:]), a["size"]))
    job = Transaction.create(dev, chain_id, "job_submit", node.account(dev)["pending_nonce"], fee, body)
    node.wait_included([node.rpc("tx_submit", tx="0x" + job.raw.hex())["hash"]])
    assert node.rpc("market_getJob", job_id="0x" + job.hash.hex())["state"] == "QUEUED"

    def gc() -> dict:
        resp = rpc_json(node, "admin_blobGc", token=TOKEN)
        assert "result" in resp, resp
        return resp["result"]

    def gone(h: str) -> bool:
        return node.call("blob_get", hash=h).get("error", {}).get("code") == NOT_FOUND

    wait_for(lambda: gc()["removed"] and gone(b["hash"]) and gone(d["hash"]), 20, "unreferenced uploads collected")
    assert not gone(a["hash"])  # a live job of its owner refers to it
    st = gc()
    assert st["live"] >= 1 and st["live_jobs"] >= 1
    # the job ends (canceled): A is collected once retain_s (2 s) after it was last seen live has passed
    cancel = Transaction.create(dev, chain_id, "job_cancel", node.account(dev)["pending_nonce"], fee,
                                market.job_cancel_body(job.hash))
    node.wait_included([node.rpc("tx_submit", tx="0x" + cancel.raw.hex())["hash"]])
    wait_for(lambda: gc() is not None and gone(a["hash"]), 20, "the input of a finished job collected")
    # quota is free again
    assert "result" in put(dev, os.urandom(80_000))


def put_sig(key: SigningKey, chain_id: str, data: bytes, expires: int) -> str:
    return signed_blob_put_params(key, chain_id, data, expires)["sig"]


def test_cli_job_submit_input_signs_its_blob_put(rich_node: NodeProcess, tmp_path: Path) -> None:
    node = rich_node
    data = _matmul_input(7)
    assert len(data) > node.rpc("system_info")["params"]["market"]["max_inline_input"]  # goes as a blob
    f = tmp_path / "input.bin"
    f.write_bytes(data)
    r = run_cli("job", "submit", "--from", "dev", "--kind", "matmul-u32", "--params", '{"m":64,"n":64,"k":64}',
                "--max-price", "0.001", "--max-units", "1", "--bid-window", "900", "--input", str(f),
                "--home", str(node.home), env=clean_env(AITBC_RPC_URL=node.url), timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr + node.log_tail()
    job_id = r.stdout.split()[1]
    job = node.rpc("market_getJob", job_id=job_id)
    digest = "0x" + hashlib.sha256(data).hexdigest()
    assert json.dumps(job).count(digest[2:]) >= 1, job  # the job names the blob the CLI uploaded
    assert node.rpc("blob_get", hash=digest)["data"] == "0x" + data.hex()
    dev = load_dev_key(node.home)
    put = node.call("blob_put", **signed_blob_put_params(dev, node.rpc("system_info")["chain_id"], data,
                                                         node.height() + 10))
    assert put["result"]["hash"] == digest  # charged to dev (the --from key)


# ---------------------------------------------------------------------------------------------- admin


def test_admin_methods_need_the_token_and_work(rich_node: NodeProcess) -> None:
    node = rich_node
    names = ("admin_peers", "admin_banPeer", "admin_unbanPeer", "admin_blobGc", "admin_setLogLevel",
             "admin_mempoolFlush")  # fmt: skip
    victim = peer_id_from_ed25519(SigningKey.generate().public_key)
    params = {"admin_banPeer": {"peer_id": victim}, "admin_unbanPeer": {"peer_id": victim},
              "admin_setLogLevel": {"level": "info"}}  # fmt: skip
    for name in names:  # loopback is not trusted on this node (rpc.admin_loopback = false)
        for token in (None, "wrong"):
            err = rpc_json(node, name, params.get(name), token=token)["error"]
            assert err["code"] == UNAUTHORIZED and "Bearer" in err["message"], (name, err)
    doc = node.rpc("rpc.discover")
    assert set(names) <= {m["name"] for m in doc["methods"]}

    def admin(name: str, p: dict | None = None) -> dict:
        resp = rpc_json(node, name, p, token=TOKEN)
        assert "result" in resp, (name, resp)
        return resp["result"]

    assert admin("admin_peers") == {"peers": [], "banned": {}}
    banned = admin("admin_banPeer", {"peer_id": victim, "reason": "test"})
    assert banned["banned"] is True and banned["score"] < 0
    assert victim in admin("admin_peers")["banned"]
    assert admin("admin_unbanPeer", {"peer_id": victim}) == {"peer_id": victim, "unbanned": True}
    assert admin("admin_peers")["banned"] == {}
    err = rpc_json(node, "admin_banPeer", {"peer_id": "not-a-peer-id"}, token=TOKEN)["error"]
    assert err["code"] == -32602

    assert admin("admin_setLogLevel", {"level": "debug", "logger": "aitbc.rpc"}) == {"logger": "aitbc.rpc",
                                                                                      "level": "debug"}
    assert admin("admin_setLogLevel", {"level": "info"})["logger"] == "root"
    err = rpc_json(node, "admin_setLogLevel", {"level": "info", "logger": "no.such.logger"}, token=TOKEN)["error"]
    assert err["code"] == NOT_FOUND

    # a transaction that cannot be mined yet (nonce gap) sits in the mempool until flushed
    dev = load_dev_key(node.home)
    info = node.rpc("system_info")
    gap = transfer(dev, info["chain_id"], SigningKey.generate().public_key, 1, node.account(dev)["pending_nonce"] + 3,
                   info["params"]["min_fee"])
    node.rpc("tx_submit", tx="0x" + gap.raw.hex())
    assert node.rpc("mempool_status")["size"] >= 1
    assert admin("admin_mempoolFlush")["dropped"] >= 1
    assert node.rpc("mempool_status")["size"] == 0
    assert node.tx_status("0x" + gap.hash.hex()) is None
    assert "removed" in admin("admin_blobGc")
    assert node.alive()
