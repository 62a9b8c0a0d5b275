"""The compute market state machine (state/market): real execute_block on an in-memory state, real
signatures, real job kinds (gpu.kinds) and real Merkle proofs (state.merkle).

After every block the harness checks conservation: the sum of balances plus the market's escrow and
bonds equals the recorded total supply, and the totals record agrees with the job and miner records.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from memstate import MemState

import state.market as mkt
import state.market_views as views
from gpu.encoding import array_hash, encode_array, result_leaves, result_root
from gpu.kinds import get_kind
from state import codec
from state.address import encode_address
from state.crypto import SigningKey
from state.errors import TxError
from state.genesis import ChainParams
from state.machine import SUPPLY_KEY, BlockEnv, execute_block
from state.market.anon import get as anon_get
from state.market.records import JOB_PREFIX, MINER_PREFIX, SEALED_PREFIX, Job, Miner, Stats
from state.market.sealed import SealedAuction
from state.merkle import merkle_proof
from state.params import MarketParams
from state.types import Transaction

CHAIN = "mkt-test"
FEE = 10
MARKET = MarketParams(
    min_miner_bond=1_000,
    miner_unbonding_blocks=3,
    max_deadline_blocks=50,
    max_challenge_window=20,
    challenge_bond=400,
    availability_bond=300,
    slash_wrong_result_bps=5_000,
    slash_timeout_bps=1_000,
    slash_false_challenge_bps=2_500,
    challenger_reward_bps=5_000,
    max_bids_per_job=4,
    max_open_jobs_per_miner=3,
    max_inline_input=4096,
)
PARAMS = ChainParams(min_fee=FEE, market=MARKET)
PROPOSER = b"\xee" * 32


def key(name: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(name.encode()).digest())


CLIENT, MINER1, MINER2, MINER3, VERIFIER, CLIENT2 = (
    key(n) for n in ("client", "miner1", "miner2", "miner3", "verifier", "client2")
)
EVERYONE = (CLIENT, MINER1, MINER2, MINER3, VERIFIER, CLIENT2)
START_BALANCE = 1_000_000

SEED = bytes(range(32))
KIND_PARAMS = {
    "matmul-u32": {"m": 4, "n": 3, "k": 5, "seed": SEED},
    "hash-chain": {"chains": 5, "iterations": 7, "seed": SEED},
    "mlp-f32": {"batch": 3, "d_in": 4, "d_hidden": 5, "d_out": 2, "seed": SEED},
}


def caps(memory: int = 8 << 30, backend: str = "cuda", kinds: tuple[str, ...] = tuple(KIND_PARAMS)) -> dict:
    return mkt.capabilities(backend, "Test GPU", memory, "9.0", {k: 100 for k in kinds})


class Market:
    """Drives blocks of market transactions and checks the invariants after each."""

    def __init__(self, params: ChainParams = PARAMS, balances: dict[bytes, int] | None = None) -> None:
        self.params = params
        self.s = MemState(
            balances if balances is not None else {k.public_key: START_BALANCE for k in EVERYONE}
        )
        self.height = 0
        self.events: list[tuple[str, dict]] = []

    # transactions --------------------------------------------------------------------------------
    def tx(self, k: SigningKey, type_: str, body: dict, nonce_offset: int = 0) -> Transaction:
        acc = self.s.get_account(k.public_key)
        nonce = (acc.nonce if acc else 0) + nonce_offset
        return Transaction.create(k, CHAIN, type_, nonce, FEE, body)

    def block(self, *items: tuple[SigningKey, str, dict] | Transaction) -> list:
        """Execute one block at the next height with these transactions; returns the TxResults."""
        txs: list[Transaction] = []
        seen: dict[bytes, int] = {}
        for it in items:
            if isinstance(it, Transaction):
                txs.append(it)
                continue
            k, type_, body = it
            txs.append(self.tx(k, type_, body, seen.get(k.public_key, 0)))
            seen[k.public_key] = seen.get(k.public_key, 0) + 1
        env = BlockEnv(CHAIN, self.height + 1, 1_000 * (self.height + 1), PROPOSER, self.params)
        out = execute_block(self.s, env, txs)
        self.s.apply(out)
        self.height += 1
        self.events.extend(out.events)
        self.check_invariants()
        return out.results

    def ok(self, k: SigningKey, type_: str, body: dict) -> None:
        (r,) = self.block((k, type_, body))
        assert r.ok, (r.reason, r.message)

    def fail(self, k: SigningKey, type_: str, body: dict) -> str:
        """The tx is included but its body fails: returns the reason (the machine rolls the body back)."""
        (r,) = self.block((k, type_, body))
        assert not r.ok and r.message
        return r.reason

    def invalid(self, k: SigningKey, type_: str, body: dict) -> TxError:
        """A statically invalid tx: refused, the block would be invalid; nothing changes."""
        env = BlockEnv(CHAIN, self.height + 1, 1_000 * (self.height + 1), PROPOSER, self.params)
        with pytest.raises(TxError) as ei:
            execute_block(self.s, env, [self.tx(k, type_, body)])
        return ei.value

    def advance(self, to_height: int) -> None:
        while self.height < to_height:
            self.block()

    # reads ---------------------------------------------------------------------------------------
    def bal(self, k: SigningKey | bytes) -> int:
        pk = k.public_key if isinstance(k, SigningKey) else k
        acc = self.s.get_account(pk)
        return acc.balance if acc else 0

    def job(self, job_id: bytes) -> Job:
        j = views.load_job(self.s.get_object, job_id)
        assert j is not None
        return j

    def miner(self, k: SigningKey) -> Miner:
        m = views.load_miner(self.s.get_object, k.public_key)
        assert m is not None
        return m

    def stats(self) -> Stats:
        return views.load_stats(self.s.get_object)

    def supply(self) -> int:
        return codec.decode(self.s.objects[SUPPLY_KEY])

    def check_invariants(self) -> None:
        st = self.stats()
        balances = [a.balance for a in self.s.accounts.values()]
        assert all(b >= 0 for b in balances)
        assert sum(balances) + st.locked() == self.supply()
        auctions = [SealedAuction.decode(v) for _, v in self.s.scan(SEALED_PREFIX)]
        assert sum(a.deposits for a in auctions) == st.sealed_deposits
        open_da = [j.availability for j in (Job.decode(v) for _, v in self.s.scan(JOB_PREFIX)) if j.availability]
        assert sum(d["bond"] for d in open_da) == st.availability_bonds
        jobs = [Job.decode(v) for _, v in self.s.scan(JOB_PREFIX)]
        miners = [Miner.decode(v) for _, v in self.s.scan(MINER_PREFIX)]
        assert sum(j.escrow for j in jobs) == st.escrow
        assert sum(m.bond for m in miners) == st.bonds
        assert all(m.bond >= 0 and m.running >= 0 and m.open_jobs >= m.running for m in miners)
        assert st.jobs == len(jobs)
        by_state: dict[str, int] = {}
        for j in jobs:
            by_state[j.state] = by_state.get(j.state, 0) + 1
            assert j.escrow >= 0
            aa = anon_get(self.s.get_object, j.job_id)  # an anonymous job also escrows its bids' fees
            extra = (aa.max_bids * aa.bid_fee, aa.fees_paid) if aa is not None else (0, 0)
            assert j.paid + j.refunded + j.escrow + extra[1] == j.max_price * j.max_units + extra[0]
        assert by_state == st.by_state
        assert st.open_bids == sum(len(j.bids) for j in jobs if j.state == mkt.QUEUED)
        assert st.miners == sum(1 for m in miners if m.status == mkt.ACTIVE)
        for m in miners:
            running = [j for j in jobs if j.miner == m.miner and j.state == mkt.RUNNING]
            in_window = [
                j
                for j in jobs
                if j.miner == m.miner and j.state == mkt.COMPLETED and j.payment == mkt.ESCROWED
            ]
            assert m.running == len(running)
            assert m.open_jobs == len(running) + len(in_window)

    # market helpers ------------------------------------------------------------------------------
    def register(self, k: SigningKey, bond: int = 2_000, **kw) -> None:
        self.ok(k, mkt.TX_MINER_REGISTER, mkt.miner_register_body(bond, caps(**kw), {"matmul-u32": 5}))

    def submit(self, k: SigningKey = CLIENT, kind: str = "matmul-u32", **kw) -> bytes:
        args = dict(max_price=100, max_units=5, bid_window=2, deadline=5)
        args.update(kw)
        params = args.pop("params", KIND_PARAMS[kind])
        tx = self.tx(k, mkt.TX_JOB_SUBMIT, mkt.job_submit_body(kind, get_kind(kind).version, params, **args))
        (r,) = self.block(tx)
        assert r.ok, (r.reason, r.message)
        return tx.hash

    def award(self, job_id: bytes, *bids: tuple[SigningKey, int]) -> Job:
        """Bid (all in one block, in order) and run to the end of the bid window."""
        res = self.block(*((k, mkt.TX_BID, mkt.bid_body(job_id, p)) for k, p in bids))
        assert all(r.ok for r in res), [(r.reason, r.message) for r in res]
        self.advance(self.job(job_id).bid_close_height)
        return self.job(job_id)


class Result:
    """A job's result computed with the kind's NumPy reference (optionally wrong at one leaf)."""

    def __init__(
        self, kind: str, params: dict, input: bytes | None = None, tamper: int | None = None
    ) -> None:
        arr = get_kind(kind).execute_numpy(params, input)
        if tamper is not None:
            arr = arr.copy()
            if arr.dtype.kind == "f":  # far outside the float kind's tolerance
                arr[tamper, 0] = arr[tamper, 0] * 1024 + 7
            else:
                arr[tamper, 0] ^= 0x5A
        self.arr = arr
        self.leaves = result_leaves(arr)
        self.root = result_root(arr)
        self.hash = array_hash(arr)
        self.size = len(encode_array(arr))

    def proof(self, index: int) -> list[bytes]:
        return merkle_proof(self.leaves, index)


def receipt(m: Market, k: SigningKey, job: Job, res: Result, *, units: int = 1, **over) -> dict:
    r, sig = mkt.make_receipt(
        k,
        CHAIN,
        job,
        units=units,
        started_at=1_000,
        completed_at=2_000,
        result_hash=res.hash,
        result_root=res.root,
        result_size=res.size,
        backend="cuda",
        device="Test GPU",
    )
    if over:  # altered fields, correctly signed by k
        r = {**r, **over}
        sig = mkt.sign_receipt(k, CHAIN, r)
    return mkt.receipt_body(r, sig)


# ----------------------------------------------------------------------------------------------------
# Full lifecycles


@pytest.mark.parametrize("window", [0, 3])
@pytest.mark.parametrize("kind", sorted(KIND_PARAMS))
def test_full_lifecycle(kind: str, window: int) -> None:
    m = Market()
    m.register(MINER1)
    supply0 = m.supply()
    c0 = m.bal(CLIENT)
    verify = {"challenge_window": window, "verify_rate_bps": 2_500} if window else {}
    job_id = m.submit(kind=kind, max_price=100, max_units=5, **verify)
    j = m.job(job_id)
    assert (j.state, j.payment, j.escrow, j.seq) == (mkt.QUEUED, mkt.ESCROWED, 500, 0)
    assert m.bal(CLIENT) == c0 - 500 - FEE
    assert j.bid_close_height == j.submitted_height + 2

    j = m.award(job_id, (MINER1, 60))
    assert (j.state, j.miner, j.price) == (mkt.RUNNING, MINER1.public_key, 60)
    assert j.escrow == 60 * 5 and j.refunded == 200  # escrow above price × max_units returned at award
    assert j.deadline_height == j.award_height + 5
    assert [e for e, _ in m.events].count("job_awarded") == 1
    assert [x.job_id for x in views.assigned_jobs(m.s.scan, m.s.get_object, MINER1.public_key)] == [job_id]

    res = Result(kind, KIND_PARAMS[kind])
    m0 = m.bal(MINER1)
    m.ok(MINER1, mkt.TX_RECEIPT, receipt(m, MINER1, j, res, units=1))
    j = m.job(job_id)
    assert j.state == mkt.COMPLETED
    assert j.refunded == 200 + 60 * 4
    assert views.assigned_jobs(m.s.scan, m.s.get_object, MINER1.public_key) == []
    if window:
        assert j.payment == mkt.ESCROWED and j.escrow == 60 and j.release_height == m.height + window
        assert m.bal(MINER1) == m0 - FEE
        assert [x.job_id for x in views.challengeable_jobs(m.s.scan, m.s.get_object)] == [job_id]
        m.advance(j.release_height - 1)
        assert m.job(job_id).payment == mkt.ESCROWED
        m.advance(j.release_height)
        j = m.job(job_id)
        assert views.challengeable_jobs(m.s.scan, m.s.get_object) == []
    assert (j.payment, j.escrow, j.paid) == (mkt.RELEASED, 0, 60)
    assert j.settle_height == m.height
    assert m.bal(MINER1) == m0 - FEE + 60
    assert m.bal(CLIENT) == c0 - FEE - 60
    mi = m.miner(MINER1)
    assert (mi.reputation, mi.completed, mi.running, mi.open_jobs) == (1, 1, 0, 0)
    assert m.supply() == supply0

    # read side
    view = views.get_job(m.s.get_object, job_id, chain_id=CHAIN)
    assert view["state"] == "COMPLETED" and view["payment"] == "released"
    assert view["job_id"] == "0x" + job_id.hex() and view["client"].startswith("ait1")
    assert view["miner"].startswith("ait1") and view["price"] == "60" and view["max_price"] == "100"
    assert view["params"]["seed"] == "0x" + SEED.hex()
    assert view["bids"] == [{"miner": view["miner"], "price": "60", "height": j.bids[0][2]}]
    rj = view["receipt"]
    assert rj == views.get_receipt(m.s.get_object, job_id, chain_id=CHAIN)
    assert set(rj) >= {
        "receipt_id",
        "job_id",
        "provider",
        "client",
        "units",
        "unit_type",
        "unit_price",
        "price",
        "started_at",
        "completed_at",
        "signature",
    }
    assert rj["signature"]["alg"] == "ed25519" and rj["signature"]["key_id"] == rj["provider"]
    assert rj["unit_type"] == get_kind(kind).unit_type and rj["price"] == "60" and rj["unit_price"] == "60"
    r_map, sig = mkt.receipt_from_json(rj)
    assert mkt.verify_receipt(CHAIN, r_map, sig)
    assert not mkt.verify_receipt("other-chain", r_map, sig)
    assert rj["receipt_id"] == "0x" + hashlib.sha256(codec.encode(r_map)).hexdigest()
    items, cursor = views.list_jobs(m.s.scan, state="COMPLETED", kind=kind)
    assert [i["job_id"] for i in items] == [view["job_id"]] and cursor is None
    stats = views.market_stats(m.s.scan)
    assert stats["jobs_by_state"]["COMPLETED"] == 1 and stats["escrow_locked"] == "0"
    assert stats["bonds_locked"] == "2000" and stats["paid_total"] == "60"


def test_job_submit_escrow_and_precise_refusals() -> None:
    m = Market(balances={CLIENT.public_key: 1_000, MINER1.public_key: 10_000})
    body = mkt.job_submit_body(
        "matmul-u32", 1, KIND_PARAMS["matmul-u32"], max_price=100, max_units=10, bid_window=2, deadline=5
    )
    assert m.fail(CLIENT, mkt.TX_JOB_SUBMIT, body) == "insufficient_balance"
    good = dict(max_price=10, max_units=5, deadline=5)
    for over, reason in [
        ({"bid_window": MARKET.max_bid_window + 1}, "bid_window_out_of_range"),
        ({"deadline": MARKET.max_deadline_blocks + 1}, "deadline_out_of_range"),
        ({"challenge_window": MARKET.max_challenge_window + 1}, "challenge_window_out_of_range"),
    ]:
        args = {**good, "bid_window": 2, **over}
        b = mkt.job_submit_body("matmul-u32", 1, KIND_PARAMS["matmul-u32"], **args)
        assert m.fail(CLIENT, mkt.TX_JOB_SUBMIT, b) == reason
    # matmul without a seed takes an input A‖B
    p = {"m": 32, "n": 2, "k": 32}
    size = get_kind("matmul-u32").expected_input_size(p)
    assert size > MARKET.max_inline_input
    b = mkt.job_submit_body("matmul-u32", 1, p, inline_input=b"\0" * size, bid_window=2, **good)
    assert m.fail(CLIENT, mkt.TX_JOB_SUBMIT, b) == "input_too_large"
    b = mkt.job_submit_body(
        "matmul-u32", 1, p, blob_input=(b"\1" * 32, size), bid_window=2, challenge_window=2, **good
    )
    big = replace(PARAMS, market=replace(MARKET, max_challenge_input=size - 1))
    m.params = big
    assert m.fail(CLIENT, mkt.TX_JOB_SUBMIT, b) == "input_too_large_for_challenge"
    m.params = PARAMS
    assert m.stats().jobs == 0

    # statically malformed bodies: refused outright (mempool / block invalid)
    def submit(**over):
        body = mkt.job_submit_body("matmul-u32", 1, KIND_PARAMS["matmul-u32"], bid_window=2, **good)
        body.update(over)
        return m.invalid(CLIENT, mkt.TX_JOB_SUBMIT, body)

    e = submit(kind="no-such-kind")
    assert e.reason == "invalid_params" and "unknown_kind" in str(e)
    e = submit(version=2)
    assert e.reason == "invalid_params" and "version" in str(e)
    e = submit(params={"m": 0, "n": 3, "k": 5, "seed": SEED})
    assert e.reason == "invalid_params" and "out_of_bounds" in str(e)
    e = submit(params={"m": 4, "n": 3, "k": 5, "seed": SEED, "x": 1})
    assert e.reason == "invalid_params" and "unknown_param" in str(e)
    e = submit(params={"m": 4, "n": 3, "k": 5})  # no seed: an input is required
    assert e.reason == "invalid_params" and "input_required" in str(e)
    assert submit(max_price=1 << 40, max_units=1 << 40).reason == "invalid_body"  # escrow overflows u64
    assert submit(max_price=0).reason == "invalid_body"
    assert submit(extra=1).reason == "invalid_body"
    assert submit(input={"inline": b"x", "blob": b"\0" * 32}).reason == "invalid_body"
    assert submit(verify={"rate_bps": 10_001, "challenge_window": 1}).reason == "invalid_body"
    assert submit(requirements={"gpu": "x"}).reason == "invalid_body"
    e = m.invalid(
        CLIENT,
        mkt.TX_JOB_SUBMIT,
        mkt.job_submit_body(
            "matmul-u32", 1, KIND_PARAMS["matmul-u32"], inline_input=b"x", bid_window=2, **good
        ),
    )
    assert e.reason == "invalid_params" and "input_size" in str(e)
    k = mkt.job_submit_body("matmul-u32", 1, KIND_PARAMS["matmul-u32"], bid_window=2, **good)
    del k["deadline"]
    assert m.invalid(CLIENT, mkt.TX_JOB_SUBMIT, k).reason == "invalid_body"
    # the mempool's cost of a job_submit is its escrow
    assert (
        mkt.body_cost(
            mkt.TX_JOB_SUBMIT,
            mkt.job_submit_body(
                "hash-chain", 1, KIND_PARAMS["hash-chain"], max_price=7, max_units=9, bid_window=1, deadline=1
            ),
        )
        == 63
    )


def test_job_submit_refuses_max_units_below_the_metered_work() -> None:
    """Every kind's units are known from its params at submission (what a receipt then claims): a job
    whose max_units is below them is refused outright (the miner would run it all and be paid for
    max_units), with the stable reason ``max_units_below_work``; the dry run (``tx_simulate``) says so
    before anything is sent, and nothing is charged."""
    from state.simulate import simulate_tx

    m = Market()
    llm = {"model": b"\x09" * 32, "prompt": [5, 17, 3], "max_new_tokens": 13, "sampling": {"mode": "greedy"}}
    cases = [
        ("matmul-u32", {"m": 256, "n": 256, "k": 256, "seed": SEED}, 16),  # 2^24 MAC = 16 mmac
        ("hash-chain", {"chains": 2048, "iterations": 1, "seed": SEED}, 4),  # 4096 hashes = 4 khash
        ("mlp-f32", {"batch": 64, "d_in": 256, "d_hidden": 256, "d_out": 64, "seed": SEED}, 10),
        ("llm-generate", llm, 16),  # prompt + max_new_tokens
    ]
    for kind, params, work in cases:
        assert get_kind(kind).work_units(params) == work, kind
        for below in (1, work - 1):
            body = mkt.job_submit_body(kind, 1, params, max_price=10, max_units=below, bid_window=2, deadline=5)
            e = m.invalid(CLIENT, mkt.TX_JOB_SUBMIT, body)
            assert e.reason == "max_units_below_work", (kind, e)
            assert f"max_units {below}" in str(e) and f"{work} {get_kind(kind).unit_type}" in str(e)
            env = BlockEnv(CHAIN, m.height + 1, 1_000 * (m.height + 1), PROPOSER, m.params)
            sim = simulate_tx(m.s, env, m.tx(CLIENT, mkt.TX_JOB_SUBMIT, body))
            assert (sim["ok"], sim["stage"], sim["reason"]) == (False, "check", "max_units_below_work"), sim
            assert sim["balance_after"] == sim["balance_before"] == START_BALANCE  # no fee
    assert m.s.get_account(CLIENT.public_key).nonce == 0 and m.stats().jobs == 0
    # exactly the work, or more, is accepted
    job_id = m.submit(params=cases[0][1], max_price=10, max_units=16)
    m.submit(params=cases[0][1], max_price=10, max_units=17)
    assert m.stats().jobs == 2 and m.job(job_id).max_units == 16


# ----------------------------------------------------------------------------------------------------
# Awards


def test_cheapest_bid_wins_then_reputation_then_earliest() -> None:
    m = Market()
    for k in (MINER1, MINER2, MINER3):
        m.register(k)
    # cheaper wins, whatever the order
    job = m.award(m.submit(), (MINER1, 50), (MINER2, 40), (MINER3, 45))
    assert job.miner == MINER2.public_key and job.price == 40
    assert [b[:2] for b in job.bids] == [
        [MINER1.public_key, 50],
        [MINER2.public_key, 40],
        [MINER3.public_key, 45],
    ]
    m.ok(MINER2, mkt.TX_RECEIPT, receipt(m, MINER2, job, Result("matmul-u32", KIND_PARAMS["matmul-u32"])))
    assert m.miner(MINER2).reputation == 1
    # same price: higher reputation wins even though it bid last
    job = m.award(m.submit(), (MINER1, 40), (MINER3, 40), (MINER2, 40))
    assert job.miner == MINER2.public_key
    # same price and reputation: the earliest bid wins (bids in separate blocks, then same block order)
    jid = m.submit(bid_window=3)
    m.ok(MINER3, mkt.TX_BID, mkt.bid_body(jid, 30))
    job = m.award(jid, (MINER1, 30))
    assert job.miner == MINER3.public_key
    job = m.award(m.submit(), (MINER1, 30), (MINER3, 30))
    assert job.miner == MINER1.public_key
    assert mkt.award_order([[b"a", 5, 1], [b"b", 4, 2], [b"c", 4, 3]], {b"c": 3}) == [2, 1, 0]


def test_no_bids_expires_with_full_refund() -> None:
    m = Market()
    c0 = m.bal(CLIENT)
    jid = m.submit(bid_window=3)
    m.advance(m.job(jid).bid_close_height - 1)
    assert m.job(jid).state == mkt.QUEUED
    assert [
        j.job_id for j in views.biddable_jobs(m.s.scan, m.s.get_object, MINER1.public_key)
    ] == []  # unregistered
    m.advance(m.job(jid).bid_close_height)
    j = m.job(jid)
    assert (j.state, j.payment, j.escrow, j.refunded) == (mkt.EXPIRED, mkt.REFUNDED, 0, 500)
    assert m.bal(CLIENT) == c0 - FEE
    assert (
        "job_expired",
        {
            "job_id": "0x" + jid.hex(),
            "client": encode_address(CLIENT.public_key),
            "refunded": "500",
            "bids": 0,
        },
    ) in m.events


def test_only_eligible_bidders_are_awarded() -> None:
    m = Market()
    m.register(MINER1)
    m.register(MINER2)
    jid = m.submit(bid_window=3)
    m.ok(MINER1, mkt.TX_BID, mkt.bid_body(jid, 10))
    m.ok(MINER2, mkt.TX_BID, mkt.bid_body(jid, 20))
    m.ok(MINER1, mkt.TX_MINER_EXIT, {})  # the cheaper bidder leaves before the award
    j = m.award(jid)
    assert j.miner == MINER2.public_key and j.price == 20


def test_cancel_before_award_refunds_and_after_award_is_refused() -> None:
    m = Market()
    m.register(MINER1)
    c0 = m.bal(CLIENT)
    jid = m.submit(bid_window=10)
    m.ok(MINER1, mkt.TX_BID, mkt.bid_body(jid, 10))
    assert m.fail(CLIENT2, mkt.TX_JOB_CANCEL, mkt.job_cancel_body(jid)) == "not_job_client"
    m.ok(CLIENT, mkt.TX_JOB_CANCEL, mkt.job_cancel_body(jid))
    j = m.job(jid)
    assert (j.state, j.payment, j.refunded, j.escrow) == (mkt.CANCELED, mkt.REFUNDED, 500, 0)
    assert m.bal(CLIENT) == c0 - 2 * FEE
    assert m.fail(CLIENT, mkt.TX_JOB_CANCEL, mkt.job_cancel_body(jid)) == "job_canceled"
    assert m.fail(MINER1, mkt.TX_BID, mkt.bid_body(jid, 10)) == "job_canceled"
    m.advance(j.bid_close_height)  # the stale award entry is ignored
    assert m.job(jid).state == mkt.CANCELED

    jid = m.award(m.submit(), (MINER1, 10)).job_id
    assert m.fail(CLIENT, mkt.TX_JOB_CANCEL, mkt.job_cancel_body(jid)) == "already_awarded"
    assert m.fail(CLIENT, mkt.TX_JOB_CANCEL, mkt.job_cancel_body(b"\7" * 32)) == "unknown_job"


# ----------------------------------------------------------------------------------------------------
# Bids


def test_bid_refusals() -> None:
    m = Market()
    m.register(MINER1)
    m.register(MINER2, memory=1 << 30, backend="numpy", kinds=("hash-chain",))
    jid = m.submit(bid_window=20, max_price=100, min_memory=4 << 30)
    assert m.fail(MINER1, mkt.TX_BID, mkt.bid_body(jid, 101)) == "price_above_max"
    assert m.fail(MINER2, mkt.TX_BID, mkt.bid_body(jid, 50)) == "kind_not_supported"
    m.ok(
        MINER2, mkt.TX_MINER_UPDATE, mkt.miner_update_body(capabilities=caps(memory=1 << 30, backend="numpy"))
    )
    assert m.fail(MINER2, mkt.TX_BID, mkt.bid_body(jid, 50)) == "insufficient_memory"
    assert m.fail(MINER3, mkt.TX_BID, mkt.bid_body(jid, 50)) == "not_registered"
    assert m.fail(MINER1, mkt.TX_BID, mkt.bid_body(b"\1" * 32, 50)) == "unknown_job"
    m.ok(MINER1, mkt.TX_BID, mkt.bid_body(jid, 50))
    before = (m.s.objects[mkt.job_key(jid)], m.s.objects[mkt.STATS_KEY], m.bal(MINER1))
    assert m.fail(MINER1, mkt.TX_BID, mkt.bid_body(jid, 40)) == "duplicate_bid"
    # a failed body leaves no trace but the fee
    assert (m.s.objects[mkt.job_key(jid)], m.s.objects[mkt.STATS_KEY], m.bal(MINER1) + FEE) == before
    m.advance(m.job(jid).bid_close_height)
    m.register(MINER3)
    assert m.fail(MINER3, mkt.TX_BID, mkt.bid_body(jid, 50)) == "bid_window_closed"
    # backend requirement, self-bids, exiting miners
    jid = m.submit(MINER1, bid_window=20, backend="numpy")
    assert m.fail(MINER3, mkt.TX_BID, mkt.bid_body(jid, 5)) == "backend_mismatch"
    assert m.fail(MINER1, mkt.TX_BID, mkt.bid_body(jid, 5)) == "self_bid"
    m.ok(MINER3, mkt.TX_MINER_EXIT, {})
    m.ok(MINER2, mkt.TX_MINER_EXIT, {})
    assert m.fail(MINER2, mkt.TX_BID, mkt.bid_body(jid, 5)) == "miner_exiting"
    # statically malformed
    assert m.invalid(MINER1, mkt.TX_BID, {"job_id": jid, "price": 0}).reason == "invalid_body"
    assert m.invalid(MINER1, mkt.TX_BID, {"job_id": jid[:31], "price": 5}).reason == "invalid_body"
    assert m.invalid(MINER1, mkt.TX_BID, {"job_id": jid}).reason == "invalid_body"


def test_bid_limits_and_biddable_view() -> None:
    m = Market()
    for k in (MINER1, MINER2, MINER3, VERIFIER):
        m.register(k)
    jid = m.submit(bid_window=10)
    pks = [MINER1, MINER2, MINER3]
    assert {j.job_id for j in views.biddable_jobs(m.s.scan, m.s.get_object, MINER1.public_key)} == {jid}
    for k in pks:
        m.ok(k, mkt.TX_BID, mkt.bid_body(jid, 10))
    assert views.biddable_jobs(m.s.scan, m.s.get_object, MINER1.public_key) == []  # already bid
    m2 = replace(PARAMS, market=replace(MARKET, max_bids_per_job=3))
    m.params = m2
    assert m.fail(VERIFIER, mkt.TX_BID, mkt.bid_body(jid, 10)) == "too_many_bids"
    m.params = PARAMS
    assert views.get_bids(m.s.get_object, jid)[2]["price"] == "10"
    assert views.market_stats(m.s.scan)["open_bids"] == 3


def test_open_job_limit() -> None:
    """A miner holding max_open_jobs_per_miner running jobs can neither bid nor win another."""
    m = Market()
    m.register(MINER1)
    m.register(MINER2)
    jid = m.submit(bid_window=30)
    m.ok(MINER1, mkt.TX_BID, mkt.bid_body(jid, 1))
    m.ok(MINER2, mkt.TX_BID, mkt.bid_body(jid, 2))
    for _ in range(MARKET.max_open_jobs_per_miner):
        m.award(m.submit(deadline=40), (MINER1, 1))
    assert m.miner(MINER1).running == MARKET.max_open_jobs_per_miner
    late = m.submit()
    assert m.fail(MINER1, mkt.TX_BID, mkt.bid_body(late, 1)) == "too_many_open_jobs"
    assert m.award(jid).miner == MINER2.public_key  # the cheaper bidder is full: the next one wins


# ----------------------------------------------------------------------------------------------------
# Receipts


def test_receipt_refusals() -> None:
    m = Market()
    m.register(MINER1)
    m.register(MINER2)
    res = Result("matmul-u32", KIND_PARAMS["matmul-u32"])
    job = m.award(m.submit(max_units=2, deadline=40), (MINER1, 30), (MINER2, 40))
    other = m.award(m.submit(CLIENT2, deadline=20), (MINER2, 30))

    # from a key the job was not awarded to (correctly signed by that key)
    assert m.fail(MINER2, mkt.TX_RECEIPT, receipt(m, MINER2, job, res)) == "not_awarded_miner"
    # sent by someone else than the provider
    assert m.fail(MINER2, mkt.TX_RECEIPT, receipt(m, MINER1, job, res)) == "sender_not_provider"
    # bad signature: signed for another chain, or by another key
    r, _ = mkt.make_receipt(
        MINER1,
        "other-chain",
        job,
        units=1,
        started_at=1,
        completed_at=2,
        result_hash=res.hash,
        result_root=res.root,
        result_size=res.size,
        backend="cuda",
        device="x",
    )
    bad_sig = mkt.sign_receipt(MINER1, "other-chain", r)
    assert m.fail(MINER1, mkt.TX_RECEIPT, mkt.receipt_body(r, bad_sig)) == "bad_receipt_signature"
    forged = mkt.receipt_body(r, mkt.sign_receipt(MINER2, CHAIN, r))
    assert m.fail(MINER1, mkt.TX_RECEIPT, forged) == "bad_receipt_signature"
    assert not mkt.verify_receipt(CHAIN, r, bad_sig)
    # units and prices
    assert m.fail(MINER1, mkt.TX_RECEIPT, receipt(m, MINER1, job, res, units=3)) == "units_exceed_max"
    assert m.fail(MINER1, mkt.TX_RECEIPT, receipt(m, MINER1, job, res, units=2)) == "units_exceed_metered"
    assert (
        m.fail(MINER1, mkt.TX_RECEIPT, receipt(m, MINER1, job, res, unit_price=29, price=29))
        == "wrong_unit_price"
    )
    assert (
        m.fail(MINER1, mkt.TX_RECEIPT, receipt(m, MINER1, job, res, unit_type="gpu_seconds"))
        == "wrong_unit_type"
    )
    assert (
        m.fail(MINER1, mkt.TX_RECEIPT, receipt(m, MINER1, job, res, client=CLIENT2.public_key))
        == "wrong_client"
    )
    assert m.fail(MINER2, mkt.TX_RECEIPT, receipt(m, MINER2, job, res, job_id=b"\3" * 32)) == "unknown_job"
    e = m.invalid(MINER1, mkt.TX_RECEIPT, receipt(m, MINER1, job, res, price=31))
    assert e.reason == "wrong_price"
    e = m.invalid(MINER1, mkt.TX_RECEIPT, receipt(m, MINER1, job, res, completed_at=1))
    assert e.reason == "invalid_body" and "completed_at" in str(e)
    body = receipt(m, MINER1, job, res)
    del body["receipt"]["device"]
    assert m.invalid(MINER1, mkt.TX_RECEIPT, body).reason == "invalid_body"
    assert m.job(job.job_id).state == mkt.RUNNING

    m.ok(MINER1, mkt.TX_RECEIPT, receipt(m, MINER1, job, res))
    assert m.fail(MINER1, mkt.TX_RECEIPT, receipt(m, MINER1, job, res)) == "duplicate_receipt"
    # too late: the deadline passed (the job already failed)
    m.advance(other.deadline_height)
    assert m.job(other.job_id).state == mkt.FAILED
    assert m.fail(MINER2, mkt.TX_RECEIPT, receipt(m, MINER2, other, res)) == "deadline_passed"
    # a receipt for a job still bidding
    jid = m.submit()
    q = m.job(jid)
    q.price = 1
    assert m.fail(MINER1, mkt.TX_RECEIPT, receipt(m, MINER1, q, res)) == "job_not_running"


def test_receipt_on_the_deadline_block_is_accepted() -> None:
    m = Market()
    m.register(MINER1)
    job = m.award(m.submit(deadline=3), (MINER1, 10))
    m.advance(job.deadline_height - 1)
    m.ok(MINER1, mkt.TX_RECEIPT, receipt(m, MINER1, job, Result("matmul-u32", KIND_PARAMS["matmul-u32"])))
    assert m.height == job.deadline_height
    assert m.job(job.job_id).payment == mkt.RELEASED
    assert m.miner(MINER1).bond == 2_000


def test_missed_deadline_refunds_and_slashes() -> None:
    m = Market()
    m.register(MINER1, bond=3_000)
    c0 = m.bal(CLIENT)
    supply0 = m.supply()
    job = m.award(m.submit(deadline=4), (MINER1, 10))
    m.advance(job.deadline_height - 1)
    assert m.job(job.job_id).state == mkt.RUNNING
    m.advance(job.deadline_height)
    j = m.job(job.job_id)
    assert (j.state, j.payment, j.failure, j.escrow) == (mkt.FAILED, mkt.REFUNDED, "timeout", 0)
    assert m.bal(CLIENT) == c0 - FEE
    mi = m.miner(MINER1)
    slash = 3_000 * MARKET.slash_timeout_bps // 10_000
    assert (mi.bond, mi.slashed, mi.running, mi.open_jobs, mi.failed) == (3_000 - slash, slash, 0, 0, 1)
    assert mi.reputation == -MARKET.reputation_timeout_penalty
    assert m.supply() == supply0 - slash  # the timeout slash is burned
    assert m.stats().burned == slash
    ev = dict((e, f) for e, f in m.events if e in ("miner_slashed", "job_failed"))
    assert ev["miner_slashed"]["amount"] == str(slash) and ev["miner_slashed"]["reason"] == "timeout"
    assert ev["job_failed"]["reason"] == "timeout"


# ----------------------------------------------------------------------------------------------------
# Challenges


def _window_job(
    m: Market, kind: str = "matmul-u32", tamper: int | None = None, window: int = 4, **kw
) -> tuple[Job, Result]:
    params = kw.pop("params", KIND_PARAMS[kind])
    jid = m.submit(kind=kind, params=params, challenge_window=window, **kw)
    job = m.award(jid, (MINER1, 50))
    res = Result(kind, params, kw.get("inline_input"), tamper=tamper)
    m.ok(MINER1, mkt.TX_RECEIPT, receipt(m, MINER1, job, res))
    return m.job(jid), res


@pytest.mark.parametrize("kind", sorted(KIND_PARAMS))
def test_wrong_leaf_challenge_slashes_miner_and_refunds_client(kind: str) -> None:
    m = Market()
    m.register(MINER1, bond=4_000)
    supply0 = m.supply()
    c0, v0 = m.bal(CLIENT), m.bal(VERIFIER)
    job, res = _window_job(m, kind, tamper=1)
    assert job.payment == mkt.ESCROWED
    m.ok(VERIFIER, mkt.TX_CHALLENGE, mkt.challenge_body(job.job_id, 1, res.leaves[1], res.proof(1)))
    j = m.job(job.job_id)
    assert (j.state, j.payment, j.failure, j.escrow, j.paid) == (
        mkt.FAILED,
        mkt.REFUNDED,
        "wrong_result",
        0,
        0,
    )
    assert m.bal(CLIENT) == c0 - FEE  # fully refunded
    slash = 4_000 * MARKET.slash_wrong_result_bps // 10_000
    reward = slash * MARKET.challenger_reward_bps // 10_000
    assert m.bal(VERIFIER) == v0 - FEE + reward  # challenge bond back plus the reward
    mi = m.miner(MINER1)
    assert (mi.bond, mi.open_jobs, mi.failed) == (4_000 - slash, 0, 1)
    assert mi.reputation == -MARKET.reputation_wrong_result_penalty
    assert m.supply() == supply0 - (slash - reward)
    assert "challenge_upheld" in [e for e, _ in m.events]
    # the window end does nothing any more; a second challenge is refused
    m.advance(j.release_height)
    assert m.job(job.job_id).payment == mkt.REFUNDED
    r = m.fail(VERIFIER, mkt.TX_CHALLENGE, mkt.challenge_body(job.job_id, 1, res.leaves[1], res.proof(1)))
    assert r == "not_in_challenge_window"


@pytest.mark.parametrize("kind", ["hash-chain", "mlp-f32"])
def test_false_challenge_slashes_challenger_bond(kind: str) -> None:
    m = Market()
    m.register(MINER1)
    supply0 = m.supply()
    v0 = m.bal(VERIFIER)
    job, res = _window_job(m, kind)
    m.ok(VERIFIER, mkt.TX_CHALLENGE, mkt.challenge_body(job.job_id, 2, res.leaves[2], res.proof(2)))
    work = get_kind(kind).leaf_check_work(job.params, job.input_size)
    assert work >= 1
    bond = MARKET.challenge_bond + work * MARKET.dispute_work_price  # the bond pays for the re-check
    burned = bond * MARKET.slash_false_challenge_bps // 10_000
    assert m.bal(VERIFIER) == v0 - FEE - burned
    assert m.supply() == supply0 - burned
    j = m.job(job.job_id)
    assert (j.state, j.payment, j.false_challenges) == (mkt.COMPLETED, mkt.ESCROWED, 1)
    m.advance(j.release_height)
    assert m.job(job.job_id).payment == mkt.RELEASED
    assert m.miner(MINER1).reputation == 1 and m.miner(MINER1).bond == 2_000


def test_challenge_refusals() -> None:
    m = Market()
    m.register(MINER1)
    job, res = _window_job(m, tamper=0, window=15)
    jid = job.job_id

    def ch(k: SigningKey = VERIFIER, index: int = 0, leaf: bytes | None = None, proof=None, **kw) -> str:
        body = mkt.challenge_body(
            jid,
            index,
            res.leaves[index] if leaf is None else leaf,
            res.proof(index) if proof is None else proof,
            **kw,
        )
        return m.fail(k, mkt.TX_CHALLENGE, body)

    assert ch(proof=res.proof(1)) == "bad_proof"  # proof of another leaf
    assert ch(leaf=res.leaves[0][:-1] + b"\0") == "bad_proof"  # a leaf the miner never committed to
    assert ch(index=1, leaf=res.leaves[0], proof=res.proof(0)) == "bad_proof"
    body = mkt.challenge_body(jid, 99, res.leaves[0], res.proof(0))
    assert m.fail(VERIFIER, mkt.TX_CHALLENGE, body) == "bad_proof"
    assert ch(MINER1) == "self_challenge"
    assert ch(input=b"abc") == "unexpected_input"
    poor = SigningKey.from_seed(b"\x42" * 32)
    m.ok(CLIENT, "transfer", {"to": poor.public_key, "amount": MARKET.challenge_bond + FEE - 1})
    assert ch(poor) == "insufficient_balance"
    assert (
        m.invalid(
            VERIFIER, mkt.TX_CHALLENGE, {**mkt.challenge_body(jid, 0, b"x", []), "proof": [b"x"]}
        ).reason
        == "invalid_body"
    )
    assert m.job(jid).state == mkt.COMPLETED and m.job(jid).false_challenges == 0
    # a job settled without a window cannot be challenged
    job2 = m.award(m.submit(), (MINER1, 5))
    m.ok(MINER1, mkt.TX_RECEIPT, receipt(m, MINER1, job2, res))
    r = m.fail(VERIFIER, mkt.TX_CHALLENGE, mkt.challenge_body(job2.job_id, 0, res.leaves[0], res.proof(0)))
    assert r == "not_in_challenge_window"
    mkt.set_cost_params(MarketParams())  # the mempool's cost of a challenge is this chain's fixed bond
    assert mkt.body_cost(mkt.TX_CHALLENGE, body) == MarketParams().challenge_bond


def test_blob_input_challenge_needs_the_matching_input() -> None:
    m = Market()
    m.register(MINER1, bond=2_000)
    kind = get_kind("matmul-u32")
    p = {"m": 3, "n": 2, "k": 4}
    rng = __import__("numpy").random.default_rng(5)
    a = rng.integers(0, 2**32, size=(3, 4), dtype="uint32")
    b = rng.integers(0, 2**32, size=(4, 2), dtype="uint32")
    data = encode_array(a) + encode_array(b)
    assert len(data) == kind.expected_input_size(p)
    jid = m.submit(params=p, blob_input=(hashlib.sha256(data).digest(), len(data)), challenge_window=6)
    view = views.get_job(m.s.get_object, jid)
    assert view["input"] == {
        "type": "blob",
        "hash": "0x" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }
    job = m.award(jid, (MINER1, 9))
    res = Result("matmul-u32", p, data, tamper=2)
    m.ok(MINER1, mkt.TX_RECEIPT, receipt(m, MINER1, job, res))
    body = mkt.challenge_body(jid, 2, res.leaves[2], res.proof(2))
    assert m.fail(VERIFIER, mkt.TX_CHALLENGE, body) == "input_required"
    wrong = data[:-1] + bytes([data[-1] ^ 1])
    assert m.fail(VERIFIER, mkt.TX_CHALLENGE, {**body, "input": wrong}) == "input_mismatch"
    m.ok(VERIFIER, mkt.TX_CHALLENGE, {**body, "input": data})
    assert m.job(jid).failure == "wrong_result"


def test_inline_input_job_and_its_challenge() -> None:
    m = Market()
    m.register(MINER1)
    p = {"m": 2, "n": 2, "k": 2}
    data = encode_array(__import__("numpy").arange(4, dtype="uint32").reshape(2, 2)) * 2
    job, res = _window_job(m, params=p, inline_input=data, tamper=None)
    assert views.get_job(m.s.get_object, job.job_id)["input"]["type"] == "inline"
    assert m.job(job.job_id).input_bytes == data
    m.ok(VERIFIER, mkt.TX_CHALLENGE, mkt.challenge_body(job.job_id, 1, res.leaves[1], res.proof(1)))
    assert m.job(job.job_id).false_challenges == 1  # the leaf was right


# ----------------------------------------------------------------------------------------------------
# Miners


def test_miner_register_update_and_refusals() -> None:
    m = Market()
    m0 = m.bal(MINER1)
    body = mkt.miner_register_body(MARKET.min_miner_bond - 1, caps())
    assert m.fail(MINER1, mkt.TX_MINER_REGISTER, body) == "bond_too_low"
    m.register(MINER1, bond=1_500)
    assert m.bal(MINER1) == m0 - 2 * FEE - 1_500
    assert (
        m.fail(MINER1, mkt.TX_MINER_REGISTER, mkt.miner_register_body(1_500, caps())) == "already_registered"
    )
    m.ok(MINER1, mkt.TX_MINER_UPDATE, mkt.miner_update_body(add_bond=500, prices={"hash-chain": 3}))
    mi = m.miner(MINER1)
    assert mi.bond == 2_000 and mi.prices == {"hash-chain": 3}
    assert m.fail(MINER2, mkt.TX_MINER_UPDATE, mkt.miner_update_body(add_bond=1)) == "not_registered"
    assert (
        m.fail(MINER1, mkt.TX_MINER_UPDATE, mkt.miner_update_body(add_bond=10**9)) == "insufficient_balance"
    )
    assert m.invalid(MINER1, mkt.TX_MINER_UPDATE, {}).reason == "invalid_body"
    bad_caps = {**caps(), "memory": -1}
    assert (
        m.invalid(MINER1, mkt.TX_MINER_REGISTER, mkt.miner_register_body(1_500, bad_caps)).reason
        == "invalid_body"
    )
    assert m.invalid(MINER1, mkt.TX_MINER_EXIT, {"now": True}).reason == "invalid_body"
    v = views.get_miner(m.s.get_object, MINER1.public_key)
    assert v["status"] == "active" and v["bond"] == "2000" and v["capabilities"]["backend"] == "cuda"
    assert v["prices"] == {"hash-chain": "3"}
    m.register(MINER2)
    page, cur = views.list_miners(m.s.scan, limit=1)
    page2, cur2 = views.list_miners(m.s.scan, cur, limit=1)
    assert len(page) == len(page2) == 1 and cur2 is None and page[0]["address"] != page2[0]["address"]
    assert mkt.body_cost(mkt.TX_MINER_REGISTER, body) == MARKET.min_miner_bond - 1


def test_miner_exit_returns_bond_after_delay_without_open_jobs() -> None:
    m = Market()
    m.register(MINER1, bond=2_500)
    m0 = m.bal(MINER1)
    m.ok(MINER1, mkt.TX_MINER_EXIT, {})
    mi = m.miner(MINER1)
    assert mi.status == mkt.EXITING and mi.exit_height == m.height + MARKET.miner_unbonding_blocks
    assert m.fail(MINER1, mkt.TX_MINER_EXIT, {}) == "already_exiting"
    assert m.fail(MINER1, mkt.TX_MINER_UPDATE, mkt.miner_update_body(add_bond=5)) == "miner_exiting"
    m.advance(mi.exit_height - 1)
    assert m.miner(MINER1).bond == 2_500
    m.advance(mi.exit_height)
    mi = m.miner(MINER1)
    assert (mi.status, mi.bond) == (mkt.EXITED, 0)
    assert m.bal(MINER1) == m0 - 3 * FEE + 2_500
    assert ("miner_unbonded", {"miner": encode_address(MINER1.public_key), "amount": "2500"}) in m.events
    # a returning miner keeps its track record
    m.register(MINER1)
    assert m.miner(MINER1).status == mkt.ACTIVE


def test_miner_exit_waits_for_open_jobs_and_slashes_still_apply() -> None:
    m = Market()
    m.register(MINER1, bond=2_000)
    job, res = _window_job(m, tamper=0, window=15)  # receipted, in a challenge window
    timeout_job = m.award(m.submit(deadline=8), (MINER1, 10))
    m.ok(MINER1, mkt.TX_MINER_EXIT, {})
    exit_height = m.miner(MINER1).exit_height
    m.advance(exit_height)
    assert m.miner(MINER1).status == mkt.EXITING and m.miner(MINER1).bond == 2_000  # jobs still open
    # the wrong result is proven while the miner is exiting: the slash applies
    m.ok(VERIFIER, mkt.TX_CHALLENGE, mkt.challenge_body(job.job_id, 0, res.leaves[0], res.proof(0)))
    bond = m.miner(MINER1).bond
    assert bond == 1_000
    m.advance(timeout_job.deadline_height)  # the other job times out: slashed again, last open job gone
    mi = m.miner(MINER1)
    assert mi.open_jobs == 0 and mi.status == mkt.EXITING and mi.bond == 900
    m1 = m.bal(MINER1)
    m.block()
    mi = m.miner(MINER1)
    assert (mi.status, mi.bond) == (mkt.EXITED, 0) and m.bal(MINER1) == m1 + 900


# ----------------------------------------------------------------------------------------------------
# Receipts off-chain and read side


def test_receipt_json_roundtrip_and_tampering() -> None:
    job = Job(
        job_id=b"\1" * 32,
        seq=0,
        client=CLIENT.public_key,
        kind="hash-chain",
        version=1,
        params={},
        input=None,
        max_price=9,
        max_units=9,
        bid_window=1,
        deadline=1,
        verify=None,
        requirements={},
        submitted_height=1,
        bid_close_height=2,
        price=7,
    )
    r, sig = mkt.make_receipt(
        MINER1,
        CHAIN,
        job,
        units=3,
        started_at=5,
        completed_at=9,
        result_hash=b"\2" * 32,
        result_root=b"\3" * 32,
        result_size=100,
        backend="cpu",
        device="numpy",
    )
    assert r["price"] == 21 and r["unit_type"] == "khash"
    j = mkt.receipt_json(r, sig, CHAIN)
    assert j["chain_id"] == CHAIN and j["unit_price"] == "7" and j["price"] == "21"
    r2, sig2 = mkt.receipt_from_json(j)
    assert (r2, sig2) == (r, sig) and mkt.verify_receipt(CHAIN, r2, sig2)
    bad = {**j, "units": 4}
    with pytest.raises(mkt.ReceiptJsonError):
        mkt.receipt_from_json(bad)  # receipt_id no longer matches
    del bad["receipt_id"]
    assert not mkt.verify_receipt(CHAIN, *mkt.receipt_from_json(bad))
    with pytest.raises(mkt.ReceiptJsonError):
        mkt.receipt_from_json(
            {**j, "signature": {**j["signature"], "key_id": encode_address(MINER2.public_key)}}
        )
    with pytest.raises(mkt.ReceiptJsonError):
        mkt.receipt_from_json({k: v for k, v in j.items() if k != "client"})
    assert not mkt.verify_receipt(CHAIN, {**r, "extra": 1}, sig)


def test_list_jobs_filters_and_cursor() -> None:
    m = Market()
    m.register(MINER1)
    ids = [
        m.submit(CLIENT if i % 2 == 0 else CLIENT2, kind="hash-chain" if i < 3 else "matmul-u32")
        for i in range(5)
    ]
    m.award(ids[4], (MINER1, 5))
    page, cur = views.list_jobs(m.s.scan, limit=2)
    assert [p["job_id"] for p in page] == ["0x" + i.hex() for i in ids[:2]] and cur is not None
    page, cur = views.list_jobs(m.s.scan, limit=2, cursor=cur, get_object=m.s.get_object)
    assert [p["job_id"] for p in page] == ["0x" + i.hex() for i in ids[2:4]]
    page, cur = views.list_jobs(m.s.scan, limit=2, cursor=cur)
    assert [p["job_id"] for p in page] == ["0x" + ids[4].hex()] and cur is None
    mine, _ = views.list_jobs(m.s.scan, client=CLIENT.public_key)
    assert [p["job_id"] for p in mine] == ["0x" + ids[i].hex() for i in (0, 2, 4)]
    hc, _ = views.list_jobs(m.s.scan, kind="hash-chain", client=CLIENT2.public_key)
    assert [p["job_id"] for p in hc] == ["0x" + ids[1].hex()]
    run, _ = views.list_jobs(m.s.scan, miner=MINER1.public_key, state="RUNNING")
    assert [p["job_id"] for p in run] == ["0x" + ids[4].hex()]
    assert views.list_jobs(m.s.scan, miner=MINER2.public_key) == ([], None)
    assert views.get_job(m.s.get_object, b"\0" * 32) is None
    with pytest.raises(ValueError):
        views.list_jobs(m.s.scan, state="DONE")
    with pytest.raises(ValueError):
        views.list_jobs(m.s.scan, cursor="x")


# ----------------------------------------------------------------------------------------------------
# Property: random market operations conserve supply and never go negative

PROP_KIND = "hash-chain"
PROP_PARAMS = {"chains": 4, "iterations": 3, "seed": SEED}
PROP_RES = Result(PROP_KIND, PROP_PARAMS)
PROP_BAD = Result(PROP_KIND, PROP_PARAMS, tamper=1)
MINERS = (MINER1, MINER2, MINER3)
ACTORS = (CLIENT, CLIENT2, VERIFIER, *MINERS)
BY_PK = {k.public_key: k for k in ACTORS}
OPS = (
    "submit",
    "submit",
    "bid",
    "bid",
    "bid",
    "bid",
    "bid",
    "receipt",
    "receipt",
    "receipt",
    "challenge",
    "challenge",
    "availability",
    "answer",
    "cancel",
    "register",
    "exit",
    "add_bond",
    "transfer",
)


def _random_op(rnd, m: Market, jobs: list[Job]) -> tuple[SigningKey, str, dict] | None:
    """One market operation, aimed most of the time at a job in the state where it can succeed."""
    name = rnd.choice(OPS)
    who = rnd.choice(MINERS if name in ("bid", "register", "exit", "add_bond") else ACTORS)
    if name == "submit":
        return (
            who,
            mkt.TX_JOB_SUBMIT,
            mkt.job_submit_body(
                PROP_KIND,
                1,
                PROP_PARAMS,
                max_price=rnd.randint(1, 60),
                max_units=rnd.randint(1, 4),
                bid_window=rnd.randint(1, 5),
                deadline=rnd.randint(1, 6),
                challenge_window=rnd.randint(0, 4) or None,
            ),
        )
    if name == "register":
        return who, mkt.TX_MINER_REGISTER, mkt.miner_register_body(rnd.randint(500, 3_000), caps())
    if name == "exit":
        return (who, mkt.TX_MINER_EXIT, {}) if rnd.random() < 0.3 else None
    if name == "add_bond":
        return who, mkt.TX_MINER_UPDATE, mkt.miner_update_body(add_bond=rnd.randint(1, 500))
    if name == "transfer":
        return who, "transfer", {"to": rnd.choice(ACTORS).public_key, "amount": rnd.randint(1, 5_000)}
    if not jobs:
        return None
    want = {
        "bid": mkt.QUEUED,
        "cancel": mkt.QUEUED,
        "receipt": mkt.RUNNING,
        "challenge": mkt.COMPLETED,
        "availability": mkt.COMPLETED,
        "answer": mkt.COMPLETED,
    }[name]
    aimed = [j for j in jobs if j.state == want]
    if not aimed and rnd.random() < 0.7:
        return None
    job = rnd.choice(aimed if aimed and rnd.random() < 0.85 else jobs)
    if name == "bid":
        return who, mkt.TX_BID, mkt.bid_body(job.job_id, rnd.randint(1, 70))
    if name == "cancel":
        return (
            (BY_PK[job.client] if rnd.random() < 0.7 else who),
            mkt.TX_JOB_CANCEL,
            mkt.job_cancel_body(job.job_id),
        )
    res = PROP_RES if rnd.random() < 0.6 else PROP_BAD
    if name == "availability":
        idx = sorted(rnd.sample(range(len(res.leaves)), rnd.randint(1, 3)))
        return who, mkt.TX_AVAILABILITY_CHALLENGE, mkt.availability_challenge_body(job.job_id, idx)
    if name == "answer":  # the miner publishes what it committed to (or a wrong set, sometimes)
        if job.miner is not None and rnd.random() < 0.85:
            who = BY_PK[job.miner]
        if job.receipt is not None:
            res = PROP_BAD if job.receipt["result_root"] == PROP_BAD.root else PROP_RES
        idx = job.availability["indices"] if job.availability and rnd.random() < 0.85 else [0]
        chunks = [(i, res.leaves[i], res.proof(i)) for i in idx]
        return who, mkt.TX_AVAILABILITY_RESPONSE, mkt.availability_response_body(job.job_id, chunks)
    if name == "receipt":
        if job.miner is None:
            job = replace(job, price=1)
        elif rnd.random() < 0.85:  # usually the awarded miner answers
            who = BY_PK[job.miner]
        return who, mkt.TX_RECEIPT, receipt(m, who, job, res, units=rnd.choice((1, 1, 1, 2)))
    if job.receipt is not None and rnd.random() < 0.8:  # prove a leaf of what the miner committed to
        res = PROP_BAD if job.receipt["result_root"] == PROP_BAD.root else PROP_RES
    idx = 1 if rnd.random() < 0.5 else rnd.randrange(len(res.leaves))  # leaf 1 is the wrong one in PROP_BAD
    return who, mkt.TX_CHALLENGE, mkt.challenge_body(job.job_id, idx, res.leaves[idx], res.proof(idx))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=True), st.integers(6, 30))
def test_random_market_operations_conserve_supply(rnd, n_blocks: int) -> None:
    m = Market(balances={k.public_key: 6_000 for k in ACTORS})
    supply0 = m.supply()
    m.block(*((k, mkt.TX_MINER_REGISTER, mkt.miner_register_body(1_500, caps())) for k in MINERS[:2]))
    job_ids: list[bytes] = []
    for _ in range(n_blocks):
        jobs = [m.job(j) for j in job_ids]
        items = [t for t in (_random_op(rnd, m, jobs) for _ in range(rnd.randint(0, 6))) if t is not None]
        txs, seen = [], {}
        for k, type_, body in items:
            txs.append(m.tx(k, type_, body, seen.get(k.public_key, 0)))
            seen[k.public_key] = seen.get(k.public_key, 0) + 1
        env = BlockEnv(CHAIN, m.height + 1, 0, PROPOSER, m.params)
        out = execute_block(m.s, env, txs, skip_invalid=True)  # unaffordable fees are left out
        m.s.apply(out)
        m.height += 1
        m.check_invariants()  # balances + escrow + bonds == supply, records agree, nothing negative
        job_ids.extend(
            tx.hash
            for tx, r in zip(out.included, out.results, strict=True)
            if tx.type == mkt.TX_JOB_SUBMIT and r.ok
        )
    # run everything to completion: every escrow is eventually paid out or refunded
    m.advance(m.height + 20)
    st_ = m.stats()
    assert st_.escrow == 0 and st_.open_bids == 0
    assert m.supply() == supply0 - st_.burned
    assert st_.availability_bonds == 0
    assert sum(a.balance for a in m.s.accounts.values()) + st_.bonds == m.supply()
