"""Sealed-bid jobs in the state machine (state/market/sealed.py): real execute_block, real signatures,
real ristretto255 proofs (zk/). Only the winning price ever appears in state or events; a bidder whose
sealed opening is garbage loses its deposit and the auction completes; a client that never awards lets
the job expire and every deposit goes back; proofs for another job or bidder are refused and cost the
fee.
"""

from __future__ import annotations

from dataclasses import replace

from test_market_state import CHAIN, CLIENT, FEE, MINER1, MINER2, MINER3, Market

import state.market as mkt
from state.market import sealed
from zk import auction, group

BITS = 12
DEPOSIT = 500


def _setup(deposit: int = DEPOSIT, settle_window: int = 3):
    m = Market()
    for k in (MINER1, MINER2, MINER3):
        m.register(k)
    secret = group.random_scalar()
    spec = {"bits": BITS, "key": group.mul_base(secret), "deposit": deposit, "settle_window": settle_window}
    job_id = m.submit(max_price=100, max_units=60, bid_window=8, sealed=spec)
    return m, secret, spec, job_id


def _bid(m: Market, job_id: bytes, k, tick: int, spec: dict) -> auction.SealedBid:
    bid, _ = auction.make_bid(CHAIN, job_id, k.public_key, spec["key"], BITS, tick)
    m.ok(k, sealed.TX_SEALED_BID, sealed.sealed_bid_body(job_id, bid))
    return bid


def _event_values(m: Market) -> set[str]:
    return {str(v) for _, fields in m.events for v in fields.values()}


def test_sealed_auction_awards_the_lowest_and_reveals_only_its_price() -> None:
    m, secret, spec, job_id = _setup()
    before = {k.public_key: m.bal(k) for k in (MINER1, MINER2, MINER3)}
    ticks = {MINER1: 3000, MINER2: 1234, MINER3: 2999}
    bids = [_bid(m, job_id, k, t, spec) for k, t in ticks.items()]
    assert m.stats().sealed_deposits == 3 * DEPOSIT
    # open bids are refused on a sealed job
    assert m.fail(MINER1, mkt.TX_BID, mkt.bid_body(job_id, 5)) == "sealed_job"
    m.advance(m.job(job_id).bid_close_height)
    job = m.job(job_id)
    assert job.state == mkt.QUEUED and job.miner is None
    award = auction.make_award(CHAIN, job_id, CLIENT.public_key, secret, BITS, bids)
    m.ok(CLIENT, sealed.TX_SEALED_AWARD, sealed.sealed_award_body(job_id, award))
    job = m.job(job_id)
    price = auction.tick_price(1234, 100, BITS)
    assert (job.state, job.miner, job.price) == (mkt.RUNNING, MINER2.public_key, price)
    assert job.escrow == price * job.max_units
    # deposits back to everyone (fees aside)
    fees = {MINER1.public_key: 2 * FEE}  # its refused open bid cost a fee too
    for k in (MINER1, MINER2, MINER3):
        assert m.bal(k) == before[k.public_key] - fees.get(k.public_key, FEE)
    assert m.stats().sealed_deposits == 0
    # the losing ticks and prices never appear in state or events
    values = _event_values(m)
    for t in (3000, 2999):
        assert str(t) not in values and str(auction.tick_price(t, 100, BITS)) not in values
    record = sealed.SealedAuction.decode(m.s.objects[sealed.sealed_key(job_id)])
    assert all(len(b) == 4 and b[3] <= m.height for b in record.bids)  # miner, commitment, sealed, height
    assert record.tick == 1234 and job.bids == []
    events = [e for e in m.events if e[0] == "sealed_awarded"]
    assert events and events[0][1]["price"] == str(price) and events[0][1]["faulty"] == 0


def test_griefing_bidder_loses_its_deposit_to_the_client_and_the_auction_completes() -> None:
    m, secret, spec, job_id = _setup()
    client_before = m.bal(CLIENT)
    good = _bid(m, job_id, MINER1, 800, spec)
    bad, _ = auction.make_bid(CHAIN, job_id, MINER2.public_key, spec["key"], BITS, 10)
    bad = replace(bad, sealed=bad.sealed[:60] + bytes([bad.sealed[60] ^ 1]) + bad.sealed[61:])
    m.ok(MINER2, sealed.TX_SEALED_BID, sealed.sealed_bid_body(job_id, bad))  # looks fine to everyone
    m2_before = m.bal(MINER2)
    m.advance(m.job(job_id).bid_close_height)
    award = auction.make_award(CHAIN, job_id, CLIENT.public_key, secret, BITS, [good, bad])
    assert isinstance(award.entries[1], auction.Fault)
    m.ok(CLIENT, sealed.TX_SEALED_AWARD, sealed.sealed_award_body(job_id, award))
    assert m.job(job_id).miner == MINER1.public_key
    assert m.bal(MINER2) == m2_before  # deposit not returned
    job = m.job(job_id)
    # the client paid one fee, got the griefer's deposit and the escrow above price × max_units back
    assert m.bal(CLIENT) == client_before - FEE + DEPOSIT + (job.max_price * job.max_units - job.escrow)
    a = sealed.SealedAuction.decode(m.s.objects[sealed.sealed_key(job_id)])
    assert a.faulty == [MINER2.public_key]


def test_client_that_never_awards_lets_the_job_expire_and_deposits_return() -> None:
    m, secret, spec, job_id = _setup(settle_window=2)
    before = m.bal(MINER1)
    bids = [_bid(m, job_id, MINER1, 5, spec)]
    close = m.job(job_id).bid_close_height
    m.advance(close + 2)
    job = m.job(job_id)
    assert (job.state, job.payment, job.escrow) == (mkt.EXPIRED, mkt.REFUNDED, 0)
    assert m.bal(MINER1) == before - FEE and m.stats().sealed_deposits == 0
    late = auction.make_award(CHAIN, job_id, CLIENT.public_key, secret, BITS, bids)
    assert m.fail(CLIENT, sealed.TX_SEALED_AWARD, sealed.sealed_award_body(job_id, late)) == "award_window_closed"


def test_cancel_returns_deposits() -> None:
    m, _, spec, job_id = _setup()
    before = m.bal(MINER1)
    _bid(m, job_id, MINER1, 5, spec)
    m.ok(CLIENT, mkt.TX_JOB_CANCEL, mkt.job_cancel_body(job_id))
    assert m.bal(MINER1) == before - FEE and m.stats().sealed_deposits == 0


def test_proofs_for_another_job_or_bidder_are_refused_and_cost_the_fee() -> None:
    m, secret, spec, job_id = _setup()
    other = m.submit(max_price=100, max_units=60, bid_window=8, sealed=spec)
    bid, _ = auction.make_bid(CHAIN, other, MINER1.public_key, spec["key"], BITS, 7)
    before = m.bal(MINER1)
    assert m.fail(MINER1, sealed.TX_SEALED_BID, sealed.sealed_bid_body(job_id, bid)) == "zk_invalid"
    assert m.bal(MINER1) == before - FEE
    stolen, _ = auction.make_bid(CHAIN, job_id, MINER1.public_key, spec["key"], BITS, 7)
    assert m.fail(MINER2, sealed.TX_SEALED_BID, sealed.sealed_bid_body(job_id, stolen)) == "zk_invalid"
    body = sealed.sealed_bid_body(job_id, stolen)
    assert m.fail(MINER1, sealed.TX_SEALED_BID, {**body, "proof": body["proof"][:-32] + b"\xff" * 32}) == "zk_malformed"
    assert m.invalid(MINER1, sealed.TX_SEALED_BID, {**body, "proof": b"\x01" * 70_000}).reason == "invalid_body"
    assert m.fail(MINER1, sealed.TX_SEALED_BID, {**body, "proof": range_proof_for_bits(job_id, spec, 16)}) in (
        "zk_invalid", "zk_out_of_range")
    # replay: the same bid twice
    m.ok(MINER1, sealed.TX_SEALED_BID, body)
    assert m.fail(MINER1, sealed.TX_SEALED_BID, body) == "duplicate_bid"


def range_proof_for_bits(job_id: bytes, spec: dict, bits: int) -> bytes:
    bid, _ = auction.make_bid(CHAIN, job_id, MINER1.public_key, spec["key"], bits, 7)
    return bid.proof


def test_award_cannot_name_a_higher_bid_and_only_the_client_awards() -> None:
    m, secret, spec, job_id = _setup(settle_window=10)
    bids = [_bid(m, job_id, MINER1, 40, spec), _bid(m, job_id, MINER2, 90, spec)]
    assert m.fail(CLIENT, sealed.TX_SEALED_AWARD, sealed.sealed_award_body(
        job_id, auction.make_award(CHAIN, job_id, CLIENT.public_key, secret, BITS, bids))) == "bid_window_open"
    m.advance(m.job(job_id).bid_close_height)
    honest = auction.make_award(CHAIN, job_id, CLIENT.public_key, secret, BITS, bids)
    assert m.fail(MINER3, sealed.TX_SEALED_AWARD, sealed.sealed_award_body(job_id, honest)) == "not_job_client"
    o = honest.opening
    forged = auction.Award(1, o, (honest.entries[1], None))
    assert m.fail(CLIENT, sealed.TX_SEALED_AWARD, sealed.sealed_award_body(job_id, forged)) in ("zk_invalid",)
    skip = auction.Award(0, o, (None, auction.SKIP))
    assert m.fail(CLIENT, sealed.TX_SEALED_AWARD, sealed.sealed_award_body(job_id, skip)) == "bidder_can_win"
    m.ok(CLIENT, sealed.TX_SEALED_AWARD, sealed.sealed_award_body(job_id, honest))
    assert m.fail(CLIENT, sealed.TX_SEALED_AWARD, sealed.sealed_award_body(job_id, honest)) == "already_awarded"


def test_sealed_spec_is_checked_statically() -> None:
    m = Market()
    base = {"bits": BITS, "key": group.mul_base(group.random_scalar()), "deposit": 1, "settle_window": 2}
    for bad in ({**base, "bits": 40}, {**base, "key": b"\xff" * 32}, {**base, "key": group.IDENTITY},
                {**base, "settle_window": 0}, {k: v for k, v in base.items() if k != "deposit"}):
        body = mkt.job_submit_body("matmul-u32", 1, {"m": 4, "n": 3, "k": 5, "seed": bytes(32)}, max_price=10,
                                   max_units=60, bid_window=2, deadline=5, sealed=bad)
        assert m.invalid(CLIENT, mkt.TX_JOB_SUBMIT, body).reason == "invalid_body"


def test_second_price_job_pays_the_runner_up_price() -> None:
    m = Market()
    for k in (MINER1, MINER2, MINER3):
        m.register(k)
    secret = group.random_scalar()
    spec = {"bits": BITS, "key": group.mul_base(secret), "deposit": DEPOSIT, "settle_window": 10,
            "second_price": True}
    job_id = m.submit(max_price=100, max_units=60, bid_window=8, sealed=spec)
    bids = [_bid(m, job_id, k, t, spec) for k, t in ((MINER1, 3000), (MINER2, 1234), (MINER3, 2222))]
    m.advance(m.job(job_id).bid_close_height)
    first = auction.make_award(CHAIN, job_id, CLIENT.public_key, secret, BITS, bids)  # no runner-up opened
    assert m.fail(CLIENT, sealed.TX_SEALED_AWARD, sealed.sealed_award_body(job_id, first)) == "zk_malformed"
    award = auction.make_award(CHAIN, job_id, CLIENT.public_key, secret, BITS, bids, second_price=True)
    m.ok(CLIENT, sealed.TX_SEALED_AWARD, sealed.sealed_award_body(job_id, award))
    job = m.job(job_id)
    assert (job.miner, job.price) == (MINER2.public_key, auction.tick_price(2222, 100, BITS))
    record = sealed.SealedAuction.decode(m.s.objects[sealed.sealed_key(job_id)])
    assert (record.tick, record.second_tick) == (1234, 2222)
    values = _event_values(m)
    assert "3000" not in values and str(auction.tick_price(3000, 100, BITS)) not in values  # the third stays sealed


def test_second_price_with_a_lone_bidder_pays_max_price_and_first_price_refuses_a_runner_up() -> None:
    m, secret, spec, job_id = _setup(settle_window=10)
    bids = [_bid(m, job_id, MINER1, 40, spec), _bid(m, job_id, MINER2, 90, spec)]
    m.advance(m.job(job_id).bid_close_height)
    vickrey = auction.make_award(CHAIN, job_id, CLIENT.public_key, secret, BITS, bids, second_price=True)
    assert m.fail(CLIENT, sealed.TX_SEALED_AWARD, sealed.sealed_award_body(job_id, vickrey)) == "zk_malformed"
    m2 = Market()
    m2.register(MINER1)
    secret2 = group.random_scalar()
    spec2 = {**spec, "key": group.mul_base(secret2), "second_price": True}
    job2 = m2.submit(max_price=100, max_units=60, bid_window=8, sealed=spec2)
    lone = [_bid(m2, job2, MINER1, 40, spec2)]
    m2.advance(m2.job(job2).bid_close_height)
    m2.ok(CLIENT, sealed.TX_SEALED_AWARD, sealed.sealed_award_body(
        job2, auction.make_award(CHAIN, job2, CLIENT.public_key, secret2, BITS, lone, second_price=True)))
    assert m2.job(job2).price == 100  # the client's ceiling


def test_the_largest_award_fits_one_transaction() -> None:
    """MAX_SEALED_BIDS bids at the widest tick range: the award (a comparison proof per other bid, the
    second-price one too) is one transaction under MAX_TX_BYTES, and every node verifies it."""
    from state.types import MAX_TX_BYTES, Transaction
    from zk import group as zk_group

    secret = zk_group.random_scalar()
    key = zk_group.mul_base(secret)
    job_id = b"\x5e" * 32
    bids = [auction.make_bid(CHAIN, job_id, bytes([i + 1]) * 32, key, auction.MAX_BITS, 2**auction.MAX_BITS - 1 - i)[0]
            for i in range(sealed.MAX_SEALED_BIDS)]
    award = auction.make_award(CHAIN, job_id, CLIENT.public_key, secret, auction.MAX_BITS, bids, second_price=True)
    tx = Transaction.create(CLIENT, CHAIN, sealed.TX_SEALED_AWARD, 0, FEE, sealed.sealed_award_body(job_id, award))
    assert 50_000 < len(tx.raw) < MAX_TX_BYTES, len(tx.raw)
    sealed.check_sealed_award(tx.body)
    out = auction.verify_award(CHAIN, job_id, CLIENT.public_key, key, auction.MAX_BITS, bids, award)
    assert (out.winner, out.second_tick) == (sealed.MAX_SEALED_BIDS - 1, 2**auction.MAX_BITS - sealed.MAX_SEALED_BIDS + 1)
