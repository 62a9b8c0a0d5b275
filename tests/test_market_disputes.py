"""Metered disputes and data availability (state/market/disputes.py) on the real state machine.

Same harness as tests/test_market_state.py (real execute_block, signatures, job kinds, Merkle proofs;
supply conservation checked after every block)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_market_state import (
    CHAIN,
    CLIENT,
    FEE,
    KIND_PARAMS,
    MARKET,
    MINER1,
    PARAMS,
    PROPOSER,
    SEED,
    VERIFIER,
    Market,
    Result,
    _window_job,
    key,
    receipt,
)

import state.market as mkt
import state.market_views as views
from gpu.kinds import get_kind
from state.errors import TxError
from state.genesis import ChainParams
from state.machine import BlockEnv, execute_block
from state.market.disputes import BASE_WORK, challenge_work, leaf_check_work
from state.market.records import availability_key
from state.params import MarketParams as MP
from state.params import ParamsError, parse_section


def da(m: Market, job_id: bytes, indices: list[int], who=VERIFIER) -> None:
    m.ok(who, mkt.TX_AVAILABILITY_CHALLENGE, mkt.availability_challenge_body(job_id, indices))


def answer_body(job_id: bytes, res: Result, indices: list[int]) -> dict:
    return mkt.availability_response_body(job_id, [(i, res.leaves[i], res.proof(i)) for i in indices])


# ----------------------------------------------------------------------------------------------------
# Availability


def test_answered_availability_challenge_pays_the_bond_to_the_miner_and_settles() -> None:
    m = Market()
    m.register(MINER1)
    supply0 = m.supply()
    job, res = _window_job(m, "matmul-u32", window=6)
    v0, m0 = m.bal(VERIFIER), m.bal(MINER1)
    da(m, job.job_id, [0, 2])
    j = m.job(job.job_id)
    assert j.availability["indices"] == [0, 2] and j.availability["bond"] == MARKET.availability_bond
    assert j.availability["deadline"] == m.height + MARKET.availability_response_blocks
    assert m.bal(VERIFIER) == v0 - FEE - MARKET.availability_bond
    assert m.s.get_object(availability_key(MINER1.public_key, j.seq)) == job.job_id
    assert [x.job_id for x in views.availability_challenged_jobs(m.s.scan, m.s.get_object, MINER1.public_key)] == [
        job.job_id
    ]
    m.ok(MINER1, mkt.TX_AVAILABILITY_RESPONSE, answer_body(job.job_id, res, [0, 2]))
    j = m.job(job.job_id)
    assert j.availability is None and len(j.availability_answers) == 1 and j.availability_rounds == 1
    assert m.bal(MINER1) == m0 - FEE + MARKET.availability_bond  # paid for publishing
    assert m.s.get_object(availability_key(MINER1.public_key, j.seq)) is None
    assert j.payment == mkt.ESCROWED  # the window is still open: released at its end as usual
    m.advance(j.release_height)
    j = m.job(job.job_id)
    assert (j.state, j.payment, j.paid) == (mkt.COMPLETED, mkt.RELEASED, 50)
    assert m.supply() == supply0
    assert {"availability_challenged", "availability_answered"} <= {e for e, _ in m.events}


@pytest.mark.parametrize("kind", sorted(KIND_PARAMS))
def test_unanswered_availability_challenge_fails_the_job_refunds_and_slashes(kind: str) -> None:
    m = Market()
    m.register(MINER1, bond=4_000)
    supply0 = m.supply()
    c0 = m.bal(CLIENT)
    job, res = _window_job(m, kind, window=3)
    v0 = m.bal(VERIFIER)
    da(m, job.job_id, [1])
    deadline = m.job(job.job_id).availability["deadline"]
    assert deadline > job.release_height  # the window ends while the challenge is open
    m.advance(job.release_height)
    j = m.job(job.job_id)
    assert (j.state, j.payment) == (mkt.COMPLETED, mkt.ESCROWED)  # not released while it is open
    m.advance(deadline - 1)
    assert m.job(job.job_id).payment == mkt.ESCROWED
    m.advance(deadline)
    j = m.job(job.job_id)
    assert (j.state, j.payment, j.failure, j.escrow, j.paid) == (mkt.FAILED, mkt.REFUNDED, "unavailable", 0, 0)
    assert m.bal(CLIENT) == c0 - FEE  # fully refunded
    slash = 4_000 * MARKET.slash_unavailable_bps // 10_000
    reward = slash * MARKET.challenger_reward_bps // 10_000
    assert m.bal(VERIFIER) == v0 - FEE + reward  # bond back plus the reward
    mi = m.miner(MINER1)
    assert (mi.bond, mi.open_jobs, mi.failed) == (4_000 - slash, 0, 1)
    assert m.supply() == supply0 - (slash - reward)
    assert "availability_failed" in [e for e, _ in m.events]
    # too late to answer now
    r = m.fail(MINER1, mkt.TX_AVAILABILITY_RESPONSE, answer_body(job.job_id, res, [1]))
    assert r == "no_availability_challenge"


def test_answer_after_the_window_settles_at_once() -> None:
    m = Market()
    m.register(MINER1)
    job, res = _window_job(m, "hash-chain", window=2)
    da(m, job.job_id, [3, 4], who=CLIENT)  # the client itself cannot fetch its result
    m.advance(job.release_height + 1)
    assert m.job(job.job_id).payment == mkt.ESCROWED
    m.ok(MINER1, mkt.TX_AVAILABILITY_RESPONSE, answer_body(job.job_id, res, [3, 4]))
    j = m.job(job.job_id)
    assert (j.payment, j.settle_height, j.paid) == (mkt.RELEASED, m.height, 50)
    assert views.challengeable_jobs(m.s.scan, m.s.get_object) == []


def test_upheld_wrong_result_challenge_closes_an_open_availability_challenge() -> None:
    m = Market()
    m.register(MINER1, bond=4_000)
    job, res = _window_job(m, "matmul-u32", tamper=1, window=6)
    c0 = m.bal(CLIENT)
    da(m, job.job_id, [0], who=CLIENT)
    m.ok(VERIFIER, mkt.TX_CHALLENGE, mkt.challenge_body(job.job_id, 1, res.leaves[1], res.proof(1)))
    j = m.job(job.job_id)
    assert (j.state, j.failure, j.availability) == (mkt.FAILED, "wrong_result", None)
    assert m.bal(CLIENT) == c0 - FEE + 50  # escrow refunded, availability bond returned
    m.advance(m.height + MARKET.availability_response_blocks + 1)  # the stale deadline does nothing
    assert m.job(job.job_id).failure == "wrong_result"


def test_availability_refusals() -> None:
    m = Market(params=replace(PARAMS, market=replace(MARKET, max_availability_challenges_per_job=2)))
    m.register(MINER1)
    job, res = _window_job(m, "matmul-u32", window=15)
    jid = job.job_id
    body = mkt.availability_challenge_body

    assert m.fail(MINER1, mkt.TX_AVAILABILITY_CHALLENGE, body(jid, [0])) == "self_challenge"
    assert m.fail(VERIFIER, mkt.TX_AVAILABILITY_CHALLENGE, body(jid, [4])) == "bad_index"  # 4 rows
    assert m.fail(VERIFIER, mkt.TX_AVAILABILITY_CHALLENGE, body(b"\x01" * 32, [0])) == "unknown_job"
    # static shape: ascending distinct indices, a non-empty list
    for bad in ([], [2, 1], [1, 1], [-1], ["0"]):
        err = m.invalid(VERIFIER, mkt.TX_AVAILABILITY_CHALLENGE, {"job_id": jid, "indices": bad})
        assert err.reason == "invalid_body"
    assert m.fail(MINER1, mkt.TX_AVAILABILITY_RESPONSE, answer_body(jid, res, [0])) == "no_availability_challenge"

    da(m, jid, [1, 3])
    assert m.fail(CLIENT, mkt.TX_AVAILABILITY_CHALLENGE, body(jid, [0])) == "availability_challenge_open"
    resp = mkt.TX_AVAILABILITY_RESPONSE
    assert m.fail(VERIFIER, resp, answer_body(jid, res, [1, 3])) == "not_awarded_miner"
    assert m.fail(MINER1, resp, answer_body(jid, res, [1])) == "wrong_chunks"
    assert m.fail(MINER1, resp, answer_body(jid, res, [0, 1, 3])) == "wrong_chunks"
    swapped = mkt.availability_response_body(jid, [(1, res.leaves[1], res.proof(1)), (3, res.leaves[2], res.proof(3))])
    assert m.fail(MINER1, resp, swapped) == "bad_proof"  # a leaf the receipt does not commit to
    short = mkt.availability_response_body(jid, [(1, res.leaves[1][:-1], res.proof(1)), (3, res.leaves[3], res.proof(3))])
    assert m.fail(MINER1, resp, short) == "bad_chunk"
    unordered = {"job_id": jid, "chunks": [[3, res.leaves[3], res.proof(3)], [1, res.leaves[1], res.proof(1)]]}
    assert m.invalid(MINER1, resp, unordered).reason == "invalid_body"
    m.ok(MINER1, resp, answer_body(jid, res, [1, 3]))
    da(m, jid, [0])
    m.ok(MINER1, resp, answer_body(jid, res, [0]))
    assert m.fail(VERIFIER, mkt.TX_AVAILABILITY_CHALLENGE, body(jid, [2])) == "too_many_availability_challenges"

    # chunk count and size bounds come from the chain's params
    m2 = Market(params=replace(PARAMS, market=replace(MARKET, max_availability_chunks=2, max_availability_bytes=8)))
    m2.register(MINER1)
    job2, _ = _window_job(m2, "matmul-u32", window=5)
    assert m2.fail(VERIFIER, mkt.TX_AVAILABILITY_CHALLENGE, body(job2.job_id, [0, 1, 2])) == "too_many_chunks"
    assert m2.fail(VERIFIER, mkt.TX_AVAILABILITY_CHALLENGE, body(job2.job_id, [0])) == "chunks_too_large"  # 12 B

    # a job settled without a window cannot be challenged for availability
    job3 = m.award(m.submit(), (MINER1, 5))
    m.ok(MINER1, mkt.TX_RECEIPT, receipt(m, MINER1, job3, res))
    assert m.fail(VERIFIER, mkt.TX_AVAILABILITY_CHALLENGE, body(job3.job_id, [0])) == "not_in_challenge_window"

    poor = key("poor")
    m.ok(CLIENT, "transfer", {"to": poor.public_key, "amount": MARKET.availability_bond + FEE - 1})
    job4, _ = _window_job(m, "matmul-u32", window=5)
    assert m.fail(poor, mkt.TX_AVAILABILITY_CHALLENGE, body(job4.job_id, [0])) == "insufficient_balance"
    mkt.set_cost_params(MP())
    assert mkt.body_cost(mkt.TX_AVAILABILITY_CHALLENGE, body(jid, [0])) == MP().availability_bond


# ----------------------------------------------------------------------------------------------------
# Metering


def _challenge_txs(m: Market, n: int, kind: str = "hash-chain", params: dict | None = None) -> list:
    """``n`` challenge transactions of distinct verifiers against jobs in their challenge window."""
    txs = []
    for i in range(n):
        job, res = _window_job(m, kind, params=params or KIND_PARAMS[kind], window=60)
        v = key(f"verifier-{i}")
        m.ok(CLIENT, "transfer", {"to": v.public_key, "amount": 200_000})
        txs.append(m.tx(v, mkt.TX_CHALLENGE, mkt.challenge_body(job.job_id, 0, res.leaves[0], res.proof(0))))
    return txs


def test_a_block_of_challenges_stays_within_its_dispute_work_budget() -> None:
    params = {"chains": 5, "iterations": 900, "seed": SEED}
    per = BASE_WORK + get_kind("hash-chain").leaf_check_work(params, None) + 3  # 3 proof hashes (5 leaves)
    budget = 3 * per + per // 2  # room for three challenges, not four
    market = replace(MARKET, max_dispute_work_per_block=budget, max_challenge_work=budget, max_challenge_window=60)
    m = Market(params=replace(PARAMS, market=market), balances={k.public_key: 10**9 for k in (CLIENT, MINER1, VERIFIER)})
    m.register(MINER1, bond=10_000)
    txs = _challenge_txs(m, 5, params=params)
    env = BlockEnv(CHAIN, m.height + 1, 1_000 * (m.height + 1), PROPOSER, m.params)
    # the proposer packs what fits; the rest waits for the next block
    built = execute_block(m.s, env, txs, skip_invalid=True)
    assert len(built.included) == 3
    assert [e.reason for _, e in built.skipped] == ["block_work_exceeded"] * 2
    # a block that carries more than the budget is invalid for every validator
    with pytest.raises(TxError) as ei:
        execute_block(m.s, env, txs)
    assert ei.value.reason == "block_work_exceeded"
    # each challenge's work is known before it runs and does not depend on the leaf it names
    from state.machine import Execution

    ex = Execution(m.s, env)
    assert {challenge_work(ex, tx) for tx in txs} == {per}
    assert all(r.ok for r in built.results)  # all five jobs were still in their window


def test_challenge_work_is_charged_only_for_a_challengeable_job() -> None:
    from state.machine import Execution

    m = Market()
    m.register(MINER1)
    job, res = _window_job(m, "mlp-f32")
    env = BlockEnv(CHAIN, m.height + 1, 0, PROPOSER, m.params)
    ex = Execution(m.s, env)
    live = m.tx(VERIFIER, mkt.TX_CHALLENGE, mkt.challenge_body(job.job_id, 0, res.leaves[0], res.proof(0)))
    dead = m.tx(VERIFIER, mkt.TX_CHALLENGE, mkt.challenge_body(b"\x07" * 32, 0, res.leaves[0], res.proof(0)))
    assert challenge_work(ex, live) == challenge_work(ex, dead) + leaf_check_work(job)
    assert leaf_check_work(job) > 0


def test_a_job_whose_leaf_check_exceeds_max_challenge_work_takes_no_window() -> None:
    m = Market(params=replace(PARAMS, market=replace(MARKET, max_challenge_work=500)))
    big = {"chains": 2, "iterations": 1_000, "seed": SEED}
    tx = m.tx(
        CLIENT,
        mkt.TX_JOB_SUBMIT,
        mkt.job_submit_body("hash-chain", 1, big, max_price=10, max_units=2, bid_window=1, deadline=3, challenge_window=3),
    )
    (r,) = m.block(tx)
    assert (r.ok, r.reason) == (False, "challenge_work_too_large")
    m.submit(kind="hash-chain", params=big)  # without a window it is fine


def test_leaf_check_work_bounds_the_real_cost_of_every_kind() -> None:
    """The largest leaf check each kind allows fits max_challenge_work by default, so every job with
    a window can be challenged in some block."""
    p = MP()
    worst = {
        "matmul-u32": ({"m": 1, "n": 1024, "k": 1024, "seed": SEED}, None),
        "hash-chain": ({"chains": 1, "iterations": 1 << 15, "seed": SEED}, None),
        "mlp-f32": ({"batch": 1, "d_in": 512, "d_hidden": 256, "d_out": 512, "seed": SEED}, None),
    }
    for name, (params, size) in worst.items():
        w = get_kind(name).leaf_check_work(params, size)
        assert 0 < w <= p.max_challenge_work, (name, w)


def test_dispute_params_are_validated() -> None:
    with pytest.raises(ParamsError, match="max_challenge_work"):
        parse_section(MP, {"max_challenge_work": 10, "max_dispute_work_per_block": 5}, "params.market")
    with pytest.raises(ParamsError, match="slash_unavailable_bps"):
        parse_section(MP, {"slash_unavailable_bps": 10_001}, "params.market")
    assert ChainParams().market.max_dispute_work_per_block >= ChainParams().market.max_challenge_work
