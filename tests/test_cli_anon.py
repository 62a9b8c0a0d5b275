"""An anonymous-bid job as users run it, on a real dev node whose miner role proves with snarkjs: the
miner registers a bidding identity by itself, bids from a throwaway key (the job's escrow pays the fee),
is pending after the bid window, accepts from its own account and runs the job. Until it accepts, neither
the chain nor the RPC says which miner bid."""

from __future__ import annotations

import json

import pytest
from nodeproc import NodeProcess, clean_env, run_cli, wait_for
from zk_tools import requires_snarkjs

pytestmark = requires_snarkjs


@pytest.fixture(scope="module")
def node(dev_miner_node: NodeProcess) -> NodeProcess:
    env = clean_env(AITBC_RPC_URL=dev_miner_node.url)
    wait_for(lambda: "active" in run_cli("miner", "status", "--home", str(dev_miner_node.home), env=env).stdout, 60,
             "the miner registered")
    wait_for(lambda: dev_miner_node.rpc("zk_bidderTree")["size"] >= 1, 60, "the miner's bidding identity in the tree")
    return dev_miner_node


def test_anonymous_job_is_won_by_a_bidder_that_reveals_itself_only_to_accept(node: NodeProcess) -> None:
    env = clean_env(AITBC_RPC_URL=node.url)
    miner = json.loads(run_cli("miner", "status", "--json", "--home", str(node.home), env=env).stdout)["address"]
    r = run_cli("job", "submit", "--from", "dev", "--kind", "hash-chain", "--params", '{"chains": 8, "iterations": 16}',
                "--max-price", "0.01", "--max-units", "2", "--anonymous", "--anon-bids", "4", "--bid-window", "30",
                "--accept-window", "10", "--wait", "--json", "--home", str(node.home), env=env, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr + node.log_tail()
    job = json.loads(r.stdout)
    assert job["state"] == "COMPLETED" and job["payment"] == "released" and job["miner"] == miner
    an = job["anonymous"]
    assert an["winner"] == miner and len(an["bids"]) == 1 and an["passed"] == [] and job["bids"] == []
    bid = an["bids"][0]
    assert int(an["fees_paid"]) == int(node.rpc("system_info")["params"]["min_fee"])
    # the bid's transaction: from a throwaway account that holds nothing, not from the miner
    block = node.rpc("chain_getBlock", height=bid["height"], full_transactions=True)
    (tx,) = [t for t in block["transactions"] if t["type"] == "anon_bid"]
    assert tx["sender"] != miner
    acct = node.rpc("state_getAccount", address=tx["sender"])
    assert int(acct["balance"]) == 0
    # nothing about the bid names the miner: its address appears only in the accept and award
    assert miner not in json.dumps(tx)
    # `job status` for people: the anonymous auction and its bids table (prices and nullifiers)
    r = run_cli("job", "status", job["job_id"], "--home", str(node.home), env=env)
    assert r.returncode == 0, r.stderr
    assert f"1 of 4 anonymous bids, winner {miner}" in r.stdout and bid["nullifier"][:18] in r.stdout


def test_anonymous_and_sealed_together_are_refused(node: NodeProcess) -> None:
    r = run_cli("job", "submit", "--from", "dev", "--kind", "hash-chain", "--params", '{"chains": 8, "iterations": 16}',
                "--max-price", "0.01", "--max-units", "2", "--anonymous", "--sealed", "--home", str(node.home),
                env=clean_env(AITBC_RPC_URL=node.url))
    assert r.returncode != 0 and "either --sealed or --anonymous" in r.stderr and "Traceback" not in r.stderr


def test_the_node_refuses_anonymous_bids_that_could_not_go_in_the_next_block(node: NodeProcess) -> None:
    """A valid proof for a job that does not exist, from the right key, is refused before it takes a pool
    slot (nobody would pay for it); from another key, or with a broken proof, it is refused too."""
    from pathlib import Path

    from state import codec
    from state.crypto import SigningKey
    from state.market import anon
    from state.types import Transaction

    body = codec.decode((Path(__file__).parent / "vectors" / "groth16" / "anon_bid_body.cbor").read_bytes())
    info = node.rpc("system_info")
    fee = int(info["params"]["min_fee"])

    def submit(key: SigningKey, b: dict) -> dict:
        tx = Transaction.create(key, info["chain_id"], anon.TX_ANON_BID, 0, fee, b)
        return node.rpc("tx_submitBatch", txs=["0x" + tx.raw.hex()])["results"][0]

    res = submit(anon.sender_key(body["job_id"], body["nullifier"]), body)
    assert (res["error"]["reason"], res["error"]["detail"]) == ("sponsor_refused", "unknown_job"), res
    res = submit(SigningKey.generate(), body)
    assert (res["error"]["reason"], res["error"]["detail"]) == ("invalid_body", "wrong_sender"), res
    broken = {**body, "proof": body["proof"][:100] + bytes([body["proof"][100] ^ 1]) + body["proof"][101:]}
    res = submit(anon.sender_key(broken["job_id"], broken["nullifier"]), broken)
    assert res["error"]["reason"] == "invalid_body" and res["error"]["detail"] in ("zk_invalid", "zk_malformed"), res
    truncated = {**body, "proof": body["proof"][:-1]}  # a plain body rule (the proof's length): no finer reason
    res = submit(anon.sender_key(truncated["job_id"], truncated["nullifier"]), truncated)
    assert res["error"]["reason"] == "invalid_body" and "detail" not in res["error"], res
    assert node.rpc("mempool_status")["size"] == 0
