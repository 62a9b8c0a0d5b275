"""End to end: a real ``aitbc-peer run --dev`` process driven through its CLI, JSON-RPC, WebSocket and
/metrics, the way a user runs it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cbor2
import httpx
import pytest
import trio
from nodeproc import (
    NodeProcess,
    address,
    clean_env,
    free_port,
    load_dev_key,
    run_cli,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import open_websocket_url

from node.cli import format_ait
from node.keystore import Keystore
from state import codec
from state.address import decode_address
from state.codec import sha256
from state.crypto import KIND_VOTE, SigningKey, verify
from state.machine import account_state_key
from state.smt import SmtProof, verify_proof
from state.types import PRECOMMIT, Account, Transaction, transfer, vote_sign_bytes

AIT = 1_000_000
TX_REJECTED = -32010


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def dev_key(dev_node: NodeProcess) -> SigningKey:
    return load_dev_key(dev_node.home)


@pytest.fixture(scope="module")
def chain(dev_node: NodeProcess) -> dict:
    """system_info of the module's node."""
    return dev_node.rpc("system_info")


def hx(b: bytes) -> str:
    return "0x" + b.hex()


def send_and_wait(node: NodeProcess, key: SigningKey, chain: dict, to: bytes, amount: int) -> dict:
    """Submit one transfer at the sender's pending nonce and wait until it is committed."""
    nonce = node.account(key)["pending_nonce"]
    return submit_and_wait(node, transfer(key, chain["chain_id"], to, amount, nonce, chain["params"]["min_fee"]))


def submit_and_wait(node: NodeProcess, tx: Transaction) -> dict:
    assert node.rpc("tx_submit", tx=hx(tx.raw)) == {"hash": hx(tx.hash)}
    st = node.wait_included([hx(tx.hash)])[hx(tx.hash)]
    assert st["status"] == "committed", st
    return st


# ------------------------------------------------------------------------------------- the process


def test_run_dev_on_fresh_home_produces_blocks_and_stops_on_sigterm(tmp_path: Path) -> None:
    """``run --dev`` initialises a missing home, produces blocks every interval and exits promptly on
    SIGTERM."""
    home = tmp_path / "fresh"
    port = free_port()
    url = f"http://127.0.0.1:{port}/rpc"
    # AITBC_RPC_URL (the CLI's node URL) in the environment must not be taken for a config key
    node = NodeProcess(home, rpc_port=port, env={"AITBC_RPC_URL": url})
    try:
        node.start()
        head = node.wait_ready(timeout=30)
        assert head["height"] >= 1
        assert (home / "keys" / "dev.password").exists()
        seen: list[tuple[int, str]] = [(head["height"], head["hash"])]

        def two_more_blocks() -> bool:
            h = node.rpc("chain_getHead")
            if h["height"] != seen[-1][0]:
                seen.append((h["height"], h["hash"]))
            return h["height"] >= head["height"] + 2

        wait_for(two_more_blocks, 10, "two more blocks (1 s interval)")
        heights = [h for h, _ in seen]
        assert heights == sorted(set(heights)), heights  # strictly increasing
        assert len({bh for _, bh in seen}) == len(seen)
        # consecutive blocks link up
        top = node.rpc("chain_getBlock", height=heights[-1])
        below = node.rpc("chain_getBlock", height=heights[-1] - 1)
        assert top["prev_hash"] == below["hash"]
        assert "initialised dev home" in node.log_text()
        r = run_cli("status", "--json", env=clean_env(AITBC_RPC_URL=url))
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["height"] >= heights[-1]

        elapsed = node.stop(timeout=10)
        assert elapsed < 5, f"took {elapsed:.1f} s to exit after SIGTERM"
        assert node.proc is not None and node.proc.returncode == 0, node.log_tail()
    finally:
        node.close()


def test_run_uninitialised_home_without_dev_fails_clearly(tmp_path: Path) -> None:
    r = run_cli("run", "--home", str(tmp_path / "nothing"), "--rpc-port", "0", timeout=30)
    assert r.returncode != 0
    assert "not initialised" in r.stderr and "init" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("[rpc]\n", "[rpc]\nbogus_key = 1\n", "rpc.bogus_key"),
        ("port = 8202", 'port = "eighty"', "rpc.port"),
        ("max_txs = 100000", "max_txs = true", "mempool.max_txs"),
        ("[node]\n", "[nonsense]\nx = 1\n[node]\n", "nonsense"),
    ],
    ids=["unknown-key", "bad-port", "bad-bool", "unknown-section"],
)
def test_run_with_bad_config_fails_naming_the_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    home = tmp_path / "home"
    r = run_cli("init", "--home", str(home))
    assert r.returncode == 0, r.stderr
    cfg = home / "config.toml"
    text = cfg.read_text()
    assert old in text
    cfg.write_text(text.replace(old, new, 1))
    r = run_cli("run", "--home", str(home), "--rpc-port", "0", timeout=30)
    assert r.returncode != 0
    assert expected in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_wallet_keys_and_status(dev_node: NodeProcess, chain: dict) -> None:
    home, url = str(dev_node.home), dev_node.url
    min_fee = chain["params"]["min_fee"]
    dev_before = dev_node.account(Keystore(dev_node.home / "keys" / "keystore").info("dev").address)

    r = run_cli("wallet", "balance", "dev", "--home", home, "--rpc", url)
    assert r.returncode == 0, r.stderr
    rows = dict(ln.split(None, 1) for ln in r.stdout.splitlines())  # a key/value table
    assert rows["balance"] == f"{format_ait(int(dev_before['balance']))} AIT", r.stdout
    assert rows["address"] == dev_before["address"] and int(rows["nonce"]) == dev_before["nonce"]
    # --home is accepted before the subcommand too
    r2 = run_cli("wallet", "--home", home, "balance", "dev", "--rpc", url)
    assert r2.returncode == 0 and r2.stdout == r.stdout, r2.stderr

    pw_env = clean_env(AITBC_PASSWORD="alice-secret-pw")
    r = run_cli("keys", "new", "alice", "--home", home, env=pw_env)
    assert r.returncode == 0, r.stderr
    alice = re.search(r"(ait1[0-9a-z]+)", r.stdout).group(1)

    # the dev password comes from keys/dev.password (no AITBC_PASSWORD in this environment)
    r = run_cli("wallet", "send", "--from", "dev", "--to", "alice", "--amount", "12.5", "--wait",
                "--home", home, "--rpc", url)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"committed in block \d+", r.stdout), r.stdout

    assert dev_node.account(alice)["balance"] == "12500000"
    dev_after = dev_node.account(dev_before["address"])
    assert int(dev_before["balance"]) - int(dev_after["balance"]) == 12_500_000 + min_fee
    assert dev_after["nonce"] == dev_before["nonce"] + 1

    r = run_cli("wallet", "balance", alice, "--home", home, "--rpc", url, "--json")
    bal = json.loads(r.stdout)
    assert r.returncode == 0 and bal["balance"] == 12_500_000 and bal["balance_ait"] == "12.5"

    r = run_cli("status", "--home", home, "--rpc", url)
    assert r.returncode == 0, r.stderr
    rows = dict(re.findall(r"^\s*(\w[\w ]*?)\s{2}(.+)$", r.stdout, re.M))
    for k in ("chain", "node id", "validator", "head", "finalized", "peers", "mempool", "sync"):
        assert k in rows, r.stdout
    assert rows["chain"] == "aitbc-dev" and rows["validator"] == chain["validator"]
    assert int(rows["head"].split()[0]) >= 1 and int(rows["finalized"]) >= 1

    r = run_cli("keys", "list", "--home", home)
    assert r.returncode == 0 and "dev" in r.stdout and alice in r.stdout
    r = run_cli("keys", "list", "--json", "--home", home)
    assert {k["name"]: k["address"] for k in json.loads(r.stdout)}["alice"] == alice
    r = run_cli("keys", "show", "alice", "--home", home)
    assert dict(ln.split(None, 1) for ln in r.stdout.splitlines())["address"] == alice, r.stdout
    r = run_cli("keys", "show", "alice", "--home", home, "--json")
    shown = json.loads(r.stdout)
    assert shown["address"] == alice and decode_address(alice).hex() == shown["public_key"][2:]

    r = run_cli("keys", "export", "alice", "--home", home, env=pw_env)
    assert r.returncode == 0, r.stderr
    seed = bytes.fromhex(r.stdout.strip().removeprefix("0x"))
    assert address(SigningKey.from_seed(seed)) == alice

    r = run_cli("keys", "export", "alice", "--home", home, env=clean_env(AITBC_PASSWORD="not-the-password"))
    assert r.returncode == 1
    assert "wrong password" in r.stderr
    assert "Traceback" not in r.stderr and "0x" not in r.stdout


# ---------------------------------------------------------------------------------------- raw JSON-RPC


def test_submit_and_batch_then_query_blocks_commits_txs(dev_node: NodeProcess, dev_key: SigningKey, chain: dict) -> None:
    chain_id, fee = chain["chain_id"], chain["params"]["min_fee"]
    recipients = [SigningKey.generate().public_key for _ in range(3)]
    start = dev_node.account(dev_key)
    nonce = start["pending_nonce"]
    txs = [transfer(dev_key, chain_id, recipients[i % 3], 1_000 + i, nonce + i, fee) for i in range(200)]

    assert dev_node.rpc("tx_submit", tx=hx(txs[0].raw))["hash"] == hx(txs[0].hash)
    res = dev_node.rpc("tx_submitBatch", txs=[hx(t.raw) for t in txs[1:]])
    assert res["accepted"] == 199 and res["rejected"] == 0, res
    assert [r["hash"] for r in res["results"]] == [hx(t.hash) for t in txs[1:]]

    statuses = dev_node.wait_included([hx(t.hash) for t in txs], timeout=30)
    assert all(s["status"] == "committed" for s in statuses.values())

    after = dev_node.account(dev_key)
    assert after["nonce"] == nonce + 200 == after["pending_nonce"]
    assert int(start["balance"]) - int(after["balance"]) == sum(1_000 + i + fee for i in range(200))
    for j, pk in enumerate(recipients):
        assert dev_node.balance(pk) == sum(1_000 + i for i in range(200) if i % 3 == j)

    st = dev_node.rpc("chain_getTransaction", hash=hx(txs[57].hash))
    assert st["status"] == "committed" and st["result"]["ok"] is True
    assert isinstance(st["block_height"], int) and st["block_height"] >= 1
    assert st["tx"]["nonce"] == nonce + 57 and st["tx"]["sender"] == address(dev_key)
    assert st["tx"]["body"] == {"to": address(recipients[57 % 3]), "amount": "1057"}

    heights = sorted({s["block_height"] for s in statuses.values()})
    seen_hashes: set[str] = set()
    for h in heights:
        by_height = dev_node.rpc("chain_getBlock", height=h)
        by_hash = dev_node.rpc("chain_getBlock", hash=by_height["hash"])
        assert by_height == by_hash
        assert by_height["height"] == h
        full = dev_node.rpc("chain_getBlock", height=h, full_transactions=True)
        assert [t["hash"] for t in full["transactions"]] == by_height["transactions"]
        for t in full["transactions"]:
            if t["sender"] == address(dev_key):
                seen_hashes.add(t["hash"])
                assert t["type"] == "transfer" and t["result"]["ok"] is True
                assert t["fee"] == str(fee)
                assert decode_address(t["body"]["to"]) in recipients

        commit = dev_node.rpc("chain_getCommit", height=h)
        assert commit["height"] == h and commit["block_hash"] == by_height["hash"]
        assert len(commit["signatures"]) == 1
        sig = commit["signatures"][0]
        assert sig["validator"] == chain["validator"]
        assert verify(
            KIND_VOTE, chain_id, decode_address(sig["validator"]),
            vote_sign_bytes(h, commit["round"], PRECOMMIT, bytes.fromhex(by_height["hash"][2:])),
            bytes.fromhex(sig["signature"][2:]),
        )  # fmt: skip
    assert seen_hashes == {hx(t.hash) for t in txs}

    vals = dev_node.rpc("consensus_getValidators")
    assert [v["address"] for v in vals["validators"]] == [chain["validator"]]
    assert dev_node.rpc("mempool_status")["size"] == 0


def test_account_proof_verifies_against_block_state_root(dev_node: NodeProcess, dev_key: SigningKey) -> None:
    acc = dev_node.rpc("state_getAccount", address=address(dev_key), proof=True)
    p = acc["proof"]
    root = bytes.fromhex(p["state_root"][2:])
    key = account_state_key(dev_key.public_key)
    assert p["key"] == hx(key)
    value = bytes.fromhex(p["value"][2:])
    assert Account.decode(value) == Account(int(acc["balance"]), acc["nonce"])
    proof = SmtProof.from_obj({k: p[k] for k in ("siblings", "leaf_key", "leaf_value_hash")})
    assert verify_proof(root, key, sha256(value), proof)

    block = dev_node.rpc("chain_getBlock", height=acc["height"])
    assert block["state_root"] == p["state_root"]

    # tampering with anything breaks it
    assert not verify_proof(root, key, sha256(Account(int(acc["balance"]) + 1, acc["nonce"]).encode()), proof)
    if proof.siblings:
        sib = bytearray(proof.siblings[0])
        sib[0] ^= 1
        bad = SmtProof([bytes(sib), *proof.siblings[1:]], proof.leaf_key, proof.leaf_value_hash)
        assert not verify_proof(root, key, sha256(value), bad)
    assert not verify_proof(bytes(32), key, sha256(value), proof)

    # an account that never existed: a verifiable non-inclusion proof
    stranger = SigningKey.generate().public_key
    acc = dev_node.rpc("state_getAccount", address=address(stranger), proof=True)
    assert acc["exists"] is False and acc["balance"] == "0" and acc["proof"]["value"] is None
    p = acc["proof"]
    proof = SmtProof.from_obj({k: p[k] for k in ("siblings", "leaf_key", "leaf_value_hash")})
    assert verify_proof(bytes.fromhex(p["state_root"][2:]), account_state_key(stranger), None, proof)


# -------------------------------------------------------------------------------------------- WebSocket


async def _ws_call(ws, rid: int, method: str, **params) -> dict:
    await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
    while True:
        msg = json.loads(await ws.get_message())
        if msg.get("id") == rid:
            return msg


async def test_websocket_new_heads_and_tx_inclusion(dev_node: NodeProcess, dev_key: SigningKey, chain: dict) -> None:
    with trio.fail_after(30):
        async with open_websocket_url(dev_node.ws_url) as ws:
            sub = await _ws_call(ws, 1, "subscribe", topic="newHeads")
            sid = sub["result"]
            heights = []
            while len(heights) < 3:
                msg = json.loads(await ws.get_message())
                assert msg["method"] == "subscription" and msg["params"]["subscription"] == sid
                assert msg["params"]["topic"] == "newHeads"
                heights.append(msg["params"]["result"]["height"])
            assert heights == list(range(heights[0], heights[0] + 3)), heights
            assert (await _ws_call(ws, 2, "unsubscribe", subscription=sid))["result"] is True

            acc = await trio.to_thread.run_sync(dev_node.account, dev_key)
            tx = transfer(dev_key, chain["chain_id"], SigningKey.generate().public_key, 5 * AIT,
                          acc["pending_nonce"], chain["params"]["min_fee"])  # fmt: skip
            tx_sub = await _ws_call(ws, 3, "subscribe", topic="tx", hash=hx(tx.hash))
            assert "result" in tx_sub, tx_sub
            res = await trio.to_thread.run_sync(lambda: dev_node.rpc("tx_submit", tx=hx(tx.raw)))
            assert res["hash"] == hx(tx.hash)
            while True:  # newHeads notifications already queued before the unsubscribe may still arrive
                msg = json.loads(await ws.get_message())
                if msg.get("params", {}).get("topic") == "tx":
                    break
            note = msg["params"]
            assert note["subscription"] == tx_sub["result"]
            assert note["result"]["hash"] == hx(tx.hash)
            assert note["result"]["status"] == "committed"
            height = note["result"]["block_height"]
    st = await trio.to_thread.run_sync(lambda: dev_node.rpc("chain_getTransaction", hash=hx(tx.hash)))
    assert st["block_height"] == height


# ------------------------------------------------------------------------------------------ rejections


def _reject(node: NodeProcess, raw: bytes) -> dict:
    err = node.rpc_error("tx_submit", tx=hx(raw))
    assert err["code"] == TX_REJECTED, err
    return err


def test_rejection_reasons(dev_node: NodeProcess, dev_key: SigningKey, chain: dict) -> None:
    chain_id, fee = chain["chain_id"], chain["params"]["min_fee"]
    to = SigningKey.generate().public_key
    nonce = dev_node.account(dev_key)["pending_nonce"]

    # bad signature: one bit of the signature flipped, re-encoded canonically
    good = transfer(dev_key, chain_id, to, AIT, nonce, fee)
    obj = cbor2.loads(good.raw)
    obj["sig"] = bytes([obj["sig"][0] ^ 0x01]) + obj["sig"][1:]
    bad_raw = codec.encode(obj)
    err = _reject(dev_node, bad_raw)
    assert err["data"]["reason"] == "bad_signature"
    assert err["data"]["hash"] == hx(sha256(bad_raw))

    # bad signature: signed by another key, claiming the dev account as sender
    impostor = SigningKey.generate()
    forged = Transaction.create(impostor, chain_id, "transfer", nonce, fee, {"to": to, "amount": AIT})
    obj = cbor2.loads(forged.raw)
    obj["sender"] = dev_key.public_key
    assert _reject(dev_node, codec.encode(obj))["data"]["reason"] == "bad_signature"

    # signed for another chain
    err = _reject(dev_node, transfer(dev_key, "some-other-chain", to, AIT, nonce, fee).raw)
    assert err["data"]["reason"] == "wrong_chain"

    # fee below the chain minimum
    err = _reject(dev_node, transfer(dev_key, chain_id, to, AIT, nonce, fee - 1).raw)
    assert err["data"]["reason"] == "fee_too_low"

    # a key with no funds
    err = _reject(dev_node, transfer(SigningKey.generate(), chain_id, to, AIT, 0, fee).raw)
    assert err["data"]["reason"] == "insufficient_balance"

    # malformed bytes
    err = _reject(dev_node, b"\xff\x00garbage")
    assert err["data"]["reason"] == "malformed"

    # replay of an included tx
    st = submit_and_wait(dev_node, good)
    assert hx(good.hash) in dev_node.rpc("chain_getBlock", height=st["block_height"])["transactions"]
    err = _reject(dev_node, good.raw)
    assert err["data"]["reason"] == "nonce_too_low", err

    # duplicate of a tx waiting in the mempool: a funded account's tx with a nonce gap stays pooled
    carol = SigningKey.generate()
    send_and_wait(dev_node, dev_key, chain, carol.public_key, 10 * AIT)
    parked = transfer(carol, chain_id, to, AIT, 1, fee)  # carol's nonce is 0: nonce 1 cannot be mined yet
    assert dev_node.rpc("tx_submit", tx=hx(parked.raw))["hash"] == hx(parked.hash)
    err = _reject(dev_node, parked.raw)
    assert err["data"]["reason"] == "already_known"
    assert dev_node.rpc("chain_getTransaction", hash=hx(parked.hash))["status"] == "pending"

    # the batch form reports the same reasons per tx without failing the call
    res = dev_node.rpc("tx_submitBatch", txs=[hx(b"\x00"), hx(parked.raw), hx(bad_raw)])
    assert res["accepted"] == 0 and res["rejected"] == 3
    assert [r["error"]["reason"] for r in res["results"]] == ["malformed", "already_known", "bad_signature"]
    assert res["results"][0]["hash"] is None


# -------------------------------------------------------------------------------- metrics, discovery


def test_metrics_exposed(dev_node: NodeProcess, chain: dict, dev_key: SigningKey) -> None:
    dev_node.rpc("chain_getHead")
    dev_node.rpc_error("tx_submit", tx=hx(transfer(dev_key, chain["chain_id"], dev_key.public_key, 1, 0, 0).raw))
    resp = httpx.get(dev_node.metrics_url, timeout=10)
    assert resp.status_code == 200
    samples: dict[tuple[str, tuple], float] = {}
    for fam in text_string_to_metric_families(resp.text):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("chain_head_height") >= 1
    assert value("block_interval_seconds_count") >= 1
    assert value("mempool_size") >= 0
    assert value("tx_accepted_total") >= 1
    assert value("tx_rejected_total", reason="fee_too_low") >= 1
    assert value("rpc_request_seconds_count", method="chain_getHead") >= 1
    assert value("rpc_requests_total", method="chain_getHead", outcome="ok") >= 1


def test_rpc_discover_lists_every_method(dev_node: NodeProcess) -> None:
    doc = dev_node.rpc("rpc.discover")
    assert doc["openrpc"].startswith("1.")
    names = {m["name"] for m in doc["methods"]}
    expected = {
        "system_health", "system_info", "chain_getHead", "chain_getBlock", "chain_getCommit",
        "chain_getTransaction", "state_getAccount", "tx_submit", "tx_submitBatch", "mempool_status",
        "consensus_status", "consensus_getValidators", "net_info", "net_peers", "subscribe", "unsubscribe",
    }  # fmt: skip
    assert expected <= names, expected - names
    block = next(m for m in doc["methods"] if m["name"] == "chain_getBlock")
    assert {p["name"] for p in block["params"]} == {"height", "hash", "full_transactions"}
    for name in ("system_health", "consensus_status", "net_info", "net_peers", "mempool_status"):
        assert "result" in dev_node.call(name), name
