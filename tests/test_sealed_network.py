"""A sealed-bid auction on a multi-process network: three real `aitbc-peer run --miner` processes bid
sealed prices; the client (node0's faucet key) awards the lowest with proofs every node checks. Only the
winning price ever appears: not in any block's transactions, not in the RPC view of the job, not in the
client's or the other miners' logs. Every wait is bounded; every process is stopped by pid.
"""

from __future__ import annotations

import time

from net_helpers import wait_heights
from test_market_network import FAST, Client, settled, wait_job

from gpu.kinds import get_kind
from state import market
from state.address import decode_address
from state.market import sealed
from zk import auction, group

PRICES = {1: 1337, 2: 2671, 3: 3889}  # base units per unit of work; node1 wins
MAX_PRICE = 5_000
BITS = 16
PARAMS = {"m": 16, "n": 16, "k": 16, "seed": b"\x05" * 32}


def test_sealed_bid_auction_with_three_miners(make_net) -> None:
    net = make_net(
        4, block_interval_ms=250, start=True, params={**FAST}, validators=1, miners=[1, 2, 3],
        miner_prices={i: [f"matmul-u32={p}"] for i, p in PRICES.items()},
    )
    wait_heights(net, net.nodes, 2, 90)
    deadline = time.monotonic() + 60
    while len(net.rpc(net.nodes[0], "market_listMiners")["miners"]) < 3:
        assert time.monotonic() < deadline, "miners did not register"
        time.sleep(0.3)
    c = Client(net, net.faucet_keys()[0])
    secret = group.random_scalar()
    spec = {"bits": BITS, "key": group.mul_base(secret), "deposit": 10_000, "settle_window": 30}
    kind = get_kind("matmul-u32")
    units = kind.work_units(PARAMS)
    body = market.job_submit_body("matmul-u32", kind.version, PARAMS, max_price=MAX_PRICE, max_units=units,
                                  bid_window=40, deadline=40, sealed=spec)
    st = c.send("job_submit", body)
    assert st["status"] == "committed", st
    job_id = st["hash"]
    job = wait_job(net, job_id, lambda j: len(j["sealed"]["bids"]) == 3, timeout=60)
    # bidding closes; the award is the client's
    wait_heights(net, [net.nodes[0]], job["bid_close_height"] + 1, 60)
    job = net.rpc(net.nodes[0], "market_getJob", job_id=job_id)
    sa = job["sealed"]
    bids = [auction.SealedBid(decode_address(b["miner"]), bytes.fromhex(b["commitment"][2:]), b"",
                              bytes.fromhex(b["sealed"][2:])) for b in sa["bids"]]
    jid = bytes.fromhex(job_id[2:])
    award = auction.make_award(net.chain_id, jid, c.pk, secret, BITS, bids)
    st = c.send(sealed.TX_SEALED_AWARD, sealed.sealed_award_body(jid, award))
    assert st["status"] == "committed" and st["result"]["ok"], st
    winner_addr = net.meta["nodes"][1]["miner"]
    tick = auction.price_tick(PRICES[1], MAX_PRICE, BITS)
    price = auction.tick_price(tick, MAX_PRICE, BITS)
    job = wait_job(net, job_id, settled, timeout=90)
    assert (job["state"], job["miner"], int(job["price"])) == ("COMPLETED", winner_addr, price)
    assert job["sealed"]["winner"] == winner_addr and job["sealed"]["faulty"] == []
    assert int(job["paid"]) == price * units

    # Only the winning price ever appears: block transactions (what gossip carried), RPC, logs.
    losing = [auction.price_tick(PRICES[i], MAX_PRICE, BITS) for i in (2, 3)]
    losing += [auction.tick_price(t, MAX_PRICE, BITS) for t in losing] + [PRICES[2], PRICES[3]]
    head = net.rpc(net.nodes[0], "chain_getHead")["height"]
    sealed_txs = 0
    for h in range(1, head + 1):
        blk = net.rpc(net.nodes[0], "chain_getBlock", height=h, full_transactions=True)
        for tx in blk["transactions"]:
            if tx["type"] in (sealed.TX_SEALED_BID, sealed.TX_SEALED_AWARD):
                sealed_txs += 1
                found = set(losing) & _numbers(tx["body"])
                assert not found, (tx["type"], found)
    assert sealed_txs == 4  # three bids and the award
    found = set(losing) & _numbers(net.rpc(net.nodes[0], "market_getJob", job_id=job_id))
    assert not found, found
    for i in (0, 1):  # the client's node and the winner never see a losing price
        words = set((net.nodes[i].home / "node.log").read_text(errors="replace").replace(",", " ").split())
        assert not {str(v) for v in losing} & words, i


def _numbers(v) -> set[int]:
    """Every integer in a JSON value, also those written as decimal strings."""
    if isinstance(v, bool):
        return set()
    if isinstance(v, int):
        return {v}
    if isinstance(v, str):
        return {int(v)} if v.isdigit() else set()
    if isinstance(v, dict):
        return set().union(set(), *(_numbers(x) for x in v.values()))
    if isinstance(v, list):
        return set().union(set(), *(_numbers(x) for x in v))
    return set()
