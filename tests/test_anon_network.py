"""Anonymous bonded bidders on a multi-process network: three real `aitbc-peer run --miner` processes
register bidding identities and bid anonymously (snarkjs proofs, throwaway senders) on a job of node0's
client. The cheapest bidder is killed (-9) before it can accept: after its accept window the next price
is pending, that miner reveals itself and does the job. No bid transaction, RPC view or event names a
bidder before it accepts; the griefing bidder never appears anywhere. Then a second job: the cheapest
live bidder is killed (-9) right after its bid lands and restarted, and it still accepts and does the
job (its claim's blind is derived from its identity, its open bids are on disk). Every wait is bounded;
every process is stopped by pid.
"""

from __future__ import annotations

import json
import signal
import time

import httpx
from net_helpers import wait_heights
from prometheus_client.parser import text_string_to_metric_families
from test_market_network import FAST, Client, settled, wait_job
from zk_tools import requires_snarkjs

from gpu.kinds import get_kind
from state import market
from state.market import anon

pytestmark = requires_snarkjs

PRICES = {1: 1337, 2: 2671, 3: 3889}  # base units per unit of work; node1 is cheapest, then node2
MAX_PRICE = 5_000
PARAMS = {"m": 16, "n": 16, "k": 16, "seed": b"\x06" * 32}


def _stem_counts(node) -> dict[str, float]:
    """The node's ``tx_stem_total`` counters by event, from its /metrics."""
    text = httpx.get(node.rpc_url.removesuffix("/rpc") + "/metrics", timeout=10).text
    return {s.labels["event"]: s.value for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name == "tx_stem_total"}


def test_anonymous_bids_with_three_miners_and_a_bidder_that_never_accepts(make_net) -> None:
    net = make_net(
        4, block_interval_ms=250, start=True, params={**FAST}, validators=1, miners=[1, 2, 3],
        miner_prices={i: [f"matmul-u32={p}"] for i, p in PRICES.items()},
    )
    wait_heights(net, net.nodes, 2, 90)
    node0 = net.nodes[0]
    deadline = time.monotonic() + 90
    while net.rpc(node0, "zk_bidderTree")["size"] < 3:  # each miner registers an identity by itself
        assert time.monotonic() < deadline, "the miners' bidding identities did not reach the tree"
        time.sleep(0.3)
    miners = {i: net.meta["nodes"][i]["miner"] for i in (1, 2, 3)}
    c = Client(net, net.faucet_keys()[0])
    kind = get_kind("matmul-u32")
    units = kind.work_units(PARAMS)
    spec = {"max_bids": 4, "bid_fee": 1000, "accept_window": 12, "min_bond": 0}
    body = market.job_submit_body("matmul-u32", kind.version, PARAMS, max_price=MAX_PRICE, max_units=units,
                                  bid_window=80, deadline=40, anonymous=spec)
    st = c.send("job_submit", body)
    assert st["status"] == "committed", st
    job_id = st["hash"]
    job = wait_job(net, job_id, lambda j: len(j["anonymous"]["bids"]) == 3, timeout=90)
    assert sorted(int(b["price"]) for b in job["anonymous"]["bids"]) == sorted(PRICES.values())
    # every miner's bid left its node by the stem (node/stem.py), not as gossip under its own peer id,
    # and some other node put each on the gossip (or it reached a proposer on the stem)
    stem = {n.index: _stem_counts(n) for n in net.nodes}
    assert all(stem[i]["sent"] >= 1 for i in (1, 2, 3)), stem
    assert sum(c["received"] for c in stem.values()) >= 3, stem
    # the cheapest bidder disappears before the award: it cannot accept
    net.stop(net.nodes[1], sig=signal.SIGKILL, timeout=5)
    job = wait_job(net, job_id, settled, timeout=120)
    an = job["anonymous"]
    assert (job["state"], job["miner"], int(job["price"])) == ("COMPLETED", miners[2], PRICES[2])
    assert an["winner"] == miners[2] and len(an["passed"]) == 1
    assert int(an["bids"][an["passed"][0]]["price"]) == PRICES[1]
    assert int(an["fees_paid"]) == 3 * 1000 and job["bids"] == []

    # No anonymous bid names its miner; the miners that did not win (node1 griefed, node3 lost) never
    # appear in any transaction, block event or the job's view.
    head = net.rpc(node0, "chain_getHead")["height"]
    bid_senders = set()
    for h in range(1, head + 1):
        blk = net.rpc(node0, "chain_getBlock", height=h, full_transactions=True)
        for tx in blk["transactions"]:
            if tx["type"] == anon.TX_ANON_BID:
                bid_senders.add(tx["sender"])
                assert not set(miners.values()) & set(json.dumps(tx).split('"')), tx
            if tx["type"] == anon.TX_ANON_ACCEPT:
                assert tx["sender"] == miners[2]
    assert len(bid_senders) == 3 and not bid_senders & set(miners.values())
    view = json.dumps(net.rpc(node0, "market_getJob", job_id=job_id))
    assert miners[1] not in view and miners[3] not in view
    for s in bid_senders:  # throwaway keys: no account in state at all
        assert net.rpc(node0, "state_getAccount", address=s)["exists"] is False

    # A bidder killed (-9) after its bid and restarted still accepts: node2 is now the cheapest.
    body2 = market.job_submit_body("matmul-u32", kind.version, {**PARAMS, "seed": b"\x07" * 32},
                                   max_price=MAX_PRICE, max_units=units, bid_window=60, deadline=40,
                                   anonymous={**spec, "accept_window": 40})
    st = c.send("job_submit", body2)
    assert st["status"] == "committed", st
    job2 = st["hash"]
    wait_job(net, job2, lambda j: len(j["anonymous"]["bids"]) == 2, timeout=90)
    net.stop(net.nodes[2], sig=signal.SIGKILL, timeout=5)
    net.start(net.nodes[2])
    job = wait_job(net, job2, settled, timeout=150)
    an = job["anonymous"]
    assert (job["state"], job["miner"], int(job["price"])) == ("COMPLETED", miners[2], PRICES[2])
    assert an["winner"] == miners[2] and an["passed"] == []
