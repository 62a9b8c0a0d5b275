"""The compute market on a multi-process network: real `aitbc-peer run --miner` processes, NumPy backend.

One network, four processes: node0 is the (single) validator and the client's node; node1 and node2 are
miners (unit price 1000 and 2000 for every kind); node3 is a miner that also verifies (price 9000, so
it never wins against the others). The miners run behind ``python -m testnet.faults`` (byzantine behaviour
is injected from outside the node): their behaviour is switched between scenarios by rewriting their
faults files. Every wait is bounded; every process is stopped by pid.
"""

from __future__ import annotations

import hashlib
import json
import time

from net_helpers import wait_heights

from gpu.encoding import decode_array, result_root
from gpu.kinds import get_kind
from state import market
from state.address import encode_address
from state.crypto import SigningKey
from state.types import Transaction
from testnet import faults
from testnet.network import Network, NodeInfo, TestnetError

KINDS = ["matmul-u32", "hash-chain", "mlp-f32"]
PARAMS = {
    "matmul-u32": {"m": 16, "n": 16, "k": 16, "seed": b"\x01" * 32},
    "hash-chain": {"chains": 8, "iterations": 50, "seed": b"\x02" * 32},
    "mlp-f32": {"batch": 4, "d_in": 8, "d_hidden": 16, "d_out": 4, "seed": b"\x03" * 32},
}
MARKET = {"miner_unbonding_blocks": 5, "availability_response_blocks": 6}
FAST = {"timeout_propose_ms": 800, "timeout_vote_ms": 300, "timeout_delta_ms": 200}


class Client:
    """Signs transactions with a faucet key and submits them to node0 over JSON-RPC."""

    def __init__(self, net: Network, key: SigningKey) -> None:
        self.net, self.key, self.node = net, key, net.nodes[0]
        self.pk = key.public_key
        self.chain_id = net.chain_id
        self.nonce = 0

    def send(self, tx_type: str, body: dict, *, timeout: float = 30) -> dict:
        tx = Transaction.create(self.key, self.chain_id, tx_type, self.nonce, 1000, body)
        self.nonce += 1
        res = self.net.rpc(self.node, "tx_submit", tx="0x" + tx.raw.hex())
        return wait_tx(self.net, self.node, res["hash"], timeout)

    def balance(self, pk: bytes | None = None) -> int:
        return int(self.net.rpc(self.node, "state_getAccount", address=encode_address(pk or self.pk))["balance"])


def wait_tx(net: Network, node: NodeInfo, tx_hash: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = net.rpc(node, "chain_getTransaction", hash=tx_hash)
        if st["status"] != "pending":
            return st
        time.sleep(0.1)
    raise AssertionError(f"tx {tx_hash} not included within {timeout} s")


def wait_job(net: Network, job_id: str, pred, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    job = {}
    while time.monotonic() < deadline:
        job = net.rpc(net.nodes[0], "market_getJob", job_id=job_id)
        if pred(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach the expected state within {timeout} s: {json.dumps(job)[:800]}")


def settled(job: dict) -> bool:
    return job["state"] in ("COMPLETED", "FAILED", "CANCELED", "EXPIRED") and job["payment"] != "escrowed"


def submit_job(c: Client, kind: str, *, max_price: int = 5000, bid_window: int = 16, deadline: int = 20,
               challenge_window: int | None = None, params: dict | None = None) -> str:
    body = market.job_submit_body(
        kind, get_kind(kind).version, params or PARAMS[kind], max_price=max_price,
        max_units=get_kind(kind).work_units(params or PARAMS[kind]), bid_window=bid_window, deadline=deadline,
        verify_rate_bps=10_000 if challenge_window else None, challenge_window=challenge_window,
    )
    st = c.send("job_submit", body)
    assert st["status"] == "committed", st
    return st["hash"]


def faults_file(net: Network, index: int):
    return net.nodes[index].home / "faults.json"


def set_faults(net: Network, index: int, **switched_on: bool) -> None:
    faults.write_faults(faults_file(net, index), **switched_on)


def miner_of(net: Network, index: int) -> str:
    return net.meta["nodes"][index]["miner"]


def test_market_lifecycle_and_faults_on_a_network(make_net) -> None:
    net = make_net(
        4, block_interval_ms=250, start=False, params={**FAST, "market": MARKET}, validators=1,
        miners=[1, 2], verifiers=[3],
        miner_prices={1: [f"{k}=1000" for k in KINDS], 2: [f"{k}=2000" for k in KINDS], 3: [f"{k}=9000" for k in KINDS]},
    )
    for n in net.nodes:  # the miners behind the fault-injection wrapper, honest until their file says otherwise
        net.start(n, wrapper_args=faults.wrapper_args(faults_file=faults_file(net, n.index)) if n.index else None)
    wait_heights(net, net.nodes, 2, 90)
    # all three miners register themselves (their accounts are funded in genesis)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(net.rpc(net.nodes[0], "market_listMiners")["miners"]) == 3:
            break
        time.sleep(0.3)
    miners = {m["address"]: m for m in net.rpc(net.nodes[0], "market_listMiners")["miners"]}
    assert set(miners) == {miner_of(net, i) for i in (1, 2, 3)}
    bond = int(miners[miner_of(net, 1)]["bond"])
    genesis_total = int(net.rpc(net.nodes[0], "chain_getSupply")["total"])

    # every miner has caught up with the chain (a loaded machine slows the late starters' sync), so all bid
    wait_heights(net, net.nodes, int(net.rpc(net.nodes[0], "chain_getHead")["finalized_height"]), 60)
    c = Client(net, net.faucet_keys()[0])
    start_balance = c.balance()

    # 1. every kind, end to end: the cheaper miner (node1) wins; node2's bid loses; result verifiable.
    jobs = {k: submit_job(c, k) for k in KINDS}
    for kind, job_id in jobs.items():
        job = wait_job(net, job_id, settled)
        assert job["state"] == "COMPLETED" and job["payment"] == "released", job
        assert job["miner"] == miner_of(net, 1)
        assert {b["miner"] for b in job["bids"]} >= {miner_of(net, 1), miner_of(net, 2)}
        rec = job["receipt"]
        assert rec["provider"] == miner_of(net, 1) and rec["unit_type"] == get_kind(kind).unit_type
        assert int(rec["price"]) == int(rec["unit_price"]) * rec["units"] == int(job["paid"])
        assert int(job["paid"]) + int(job["refunded"]) == 5000 * job["max_units"]
        # the client's node fetches the result from the miner over the blob protocol; hash and root match
        blob = net.rpc(net.nodes[0], "blob_get", hash=rec["result_hash"], timeout=30)
        data = bytes.fromhex(blob["data"][2:])
        assert "0x" + hashlib.sha256(data).hexdigest() == rec["result_hash"]
        arr = decode_array(data, max_bytes=len(data))
        assert "0x" + result_root(arr).hex() == rec["result_root"]
        ref = get_kind(kind).execute_numpy(PARAMS[kind], None)
        assert arr.shape == ref.shape
    paid = sum(int(net.rpc(net.nodes[0], "market_getJob", job_id=j)["paid"]) for j in jobs.values())
    assert c.balance() == start_balance - paid - 3 * 1000  # price × units + fees, nothing else

    # 2. nobody bids below the miners' prices: the job expires, escrow refunded. Meanwhile (another client,
    # so the balances checked here do not move) node1 withholds: it computes and signs a receipt but serves
    # the result blob to no one and ignores availability challenges. The verifier (node3) cannot fetch the
    # result, challenges its availability; unanswered, the job fails: client refunded, miner slashed.
    set_faults(net, 1, withhold=True)
    fresh = {**PARAMS["matmul-u32"], "seed": b"\x04" * 32}  # a result no node has seen (blobs are by hash)
    c2 = Client(net, net.faucet_keys()[1])
    c2_before = c2.balance()
    slashed_before_withhold = int(net.rpc(net.nodes[0], "market_getMiner", address=miner_of(net, 1))["slashed"])
    withheld = submit_job(c2, "matmul-u32", params=fresh, challenge_window=40)
    before = c.balance()
    job = wait_job(net, submit_job(c, "matmul-u32", max_price=100), settled)
    assert job["state"] == "EXPIRED" and job["payment"] == "refunded" and not job["bids"]
    assert c.balance() == before - 1000

    # 3. cancel before award: full refund; cancelling again is refused with a reason
    before = c.balance()
    job_id = submit_job(c, "hash-chain", bid_window=40)
    st = c.send("job_cancel", market.job_cancel_body(bytes.fromhex(job_id[2:])))
    assert st["status"] == "committed"
    job = net.rpc(net.nodes[0], "market_getJob", job_id=job_id)
    assert job["state"] == "CANCELED" and job["payment"] == "refunded"
    assert c.balance() == before - 2000
    again = c.send("job_cancel", market.job_cancel_body(bytes.fromhex(job_id[2:])))
    assert again["status"] == "failed" and again["result"]["reason"]
    job = wait_job(net, withheld, lambda j: j["state"] == "COMPLETED" or settled(j), timeout=60)
    assert job["miner"] == miner_of(net, 1) and job["receipt"], job
    for n in (net.nodes[0], net.nodes[1]):  # not from the client's node, not even from the miner's own node
        try:
            net.rpc(n, "blob_get", hash=job["receipt"]["result_hash"], timeout=30)
        except TestnetError as exc:
            assert "not found" in str(exc).lower(), exc
        else:
            raise AssertionError(f"node{n.index} served a withheld result")
    job = wait_job(net, withheld, settled, timeout=90)
    assert (job["state"], job["payment"], job["failure"]) == ("FAILED", "refunded", "unavailable"), job
    assert job["availability_rounds"] == 1 and not job["availability_answers"] and int(job["paid"]) == 0
    assert c2.balance() == c2_before - 1000  # the escrow came back in full; only the submit fee is gone
    m1 = net.rpc(net.nodes[0], "market_getMiner", address=miner_of(net, 1))
    assert int(m1["slashed"]) > slashed_before_withhold

    # 2b. an honest miner answers an availability challenge (raised here by the client) and is paid: the
    # rows it published are on chain, verified against its receipt; the payment is released afterwards.
    set_faults(net, 1)
    answered = submit_job(c, "matmul-u32", params={**fresh, "seed": b"\x05" * 32}, challenge_window=20)
    job = wait_job(net, answered, lambda j: j["state"] == "COMPLETED" or settled(j), timeout=60)
    assert job["payment"] == "escrowed", job
    miner_balance = c.balance(_pk(miner_of(net, 1)))
    st = c.send("availability_challenge", market.availability_challenge_body(bytes.fromhex(answered[2:]), [0, 3]))
    assert st["status"] == "committed", st
    job = wait_job(net, answered, lambda j: j["availability"] is None and j["availability_answers"], timeout=60)
    chunks = net.rpc(net.nodes[0], "market_getAvailableChunks", job_id=answered)
    assert [ch["index"] for ch in chunks["chunks"]] == [0, 3] and chunks["result_root"] == job["receipt"]["result_root"]
    from state.merkle import verify_merkle_proof

    for ch in chunks["chunks"]:
        assert verify_merkle_proof(
            bytes.fromhex(chunks["result_root"][2:]), bytes.fromhex(ch["leaf"][2:]), ch["index"],
            chunks["leaf_count"], [bytes.fromhex(h[2:]) for h in ch["proof"]],
        )
    job = wait_job(net, answered, settled, timeout=60)
    assert (job["state"], job["payment"]) == ("COMPLETED", "released"), job
    # the miner got the availability bond (for publishing) and the payment, minus its own tx fees
    assert c.balance(_pk(miner_of(net, 1))) > miner_balance + int(job["paid"])

    # 4. the awarded miner never answers: refund at the deadline, bond penalty, reputation drops
    set_faults(net, 1, silent=True)
    rep_before = net.rpc(net.nodes[0], "market_getMiner", address=miner_of(net, 1))["reputation"]
    before = c.balance()
    job = wait_job(net, submit_job(c, "matmul-u32", deadline=4), settled)
    assert job["state"] == "FAILED" and job["payment"] == "refunded" and job["miner"] == miner_of(net, 1)
    assert c.balance() == before - 1000
    m1 = net.rpc(net.nodes[0], "market_getMiner", address=miner_of(net, 1))
    assert int(m1["slashed"]) > 0 and m1["reputation"] < rep_before

    # 5. a lying miner: node3 re-executes, challenges the wrong leaf; the miner is slashed, client refunded.
    # Two jobs at once: an exact kind (one flipped bit) and mlp-f32 (checked within its tolerance).
    set_faults(net, 1, corrupt=True)
    v_before = c.balance(_pk(miner_of(net, 3)))
    slashed_before = int(m1["slashed"])
    before = c.balance()
    # (a wide window costs nothing here: the job fails as soon as the challenge is included)
    lied = [submit_job(c, kind, challenge_window=24) for kind in ("matmul-u32", "mlp-f32")]
    for job_id in lied:
        job = wait_job(net, job_id, settled, timeout=90)
        assert job["state"] == "FAILED" and job["payment"] == "refunded" and job["failure"] == "wrong_result", job
        assert job["miner"] == miner_of(net, 1)
    assert c.balance() == before - 2 * 1000
    m1 = net.rpc(net.nodes[0], "market_getMiner", address=miner_of(net, 1))
    # slash_wrong_result_bps = 50 % of the bond, once per wrong job (the second on what the first left)
    assert int(m1["slashed"]) >= slashed_before + bond // 2 + bond // 4
    assert c.balance(_pk(miner_of(net, 3))) > v_before  # challenger rewarded (net of its tx fees)

    # 6. a false challenge: the honest result stands, the challenger's bond is slashed
    set_faults(net, 1)
    set_faults(net, 3, false_challenge=True)
    v_before = c.balance(_pk(miner_of(net, 3)))
    job = wait_job(net, submit_job(c, "hash-chain", challenge_window=12), settled, timeout=90)
    assert job["state"] == "COMPLETED" and job["payment"] == "released", job
    assert job["false_challenges"] >= 1
    assert c.balance(_pk(miner_of(net, 3))) < v_before - 1000 * job["false_challenges"]  # lost more than fees

    # 7. supply: nothing created, only slashes burned; balances + escrow + bonds == recorded supply
    supply = net.rpc(net.nodes[0], "chain_getSupply")
    stats = net.rpc(net.nodes[0], "market_stats")
    assert int(supply["total"]) == genesis_total - int(stats["burned_total"])
    accounts = [k.public_key for k in net.faucet_keys()] + [_pk(miner_of(net, i)) for i in (1, 2, 3)]
    accounts.append(_pk(net.meta["nodes"][0]["validator"]))  # the proposer collects the fees
    held = sum(c.balance(pk) for pk in accounts)
    assert held + int(stats["escrow_locked"]) + int(stats["bonds_locked"]) == int(supply["total"])
    # every node agrees on the market state
    views = {json.dumps(net.rpc(n, "market_getJob", job_id=jobs["matmul-u32"]), sort_keys=True) for n in net.nodes}
    assert len(views) == 1


def _pk(address: str) -> bytes:
    from state.address import decode_address

    return decode_address(address)
