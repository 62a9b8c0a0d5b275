"""Anonymous bonded bids in the state machine (state/market/anon.py): real execute_block, real signatures,
real Groth16 proofs (snarkjs through node.zk_prover, verified by the node's own verifier).

The proofs are slow (~2 s each), so one module-scoped scene makes them once: four miners register
bidding identities, an anonymous job takes bids from throwaway keys (MINER2 @50 and MINER1 @60 in one
block, then MINER3 @50), and each test runs on a deep copy of the state it needs.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, replace

import pytest
from test_market_state import (
    CHAIN,
    CLIENT,
    FEE,
    KIND_PARAMS,
    MARKET,
    MINER1,
    MINER2,
    MINER3,
    PROPOSER,
    VERIFIER,
    Market,
    Result,
    caps,
    receipt,
)

import state.market as mkt
import state.market_views as views
from gpu.kinds import get_kind
from node.zk_prover import ProverFailed, ProverMissing, prove
from state.address import encode_address
from state.crypto import SigningKey
from state.errors import TxError
from state.machine import BlockEnv, execute_block
from state.market import anon
from state.types import Transaction
from zk import anon_bid, groth16
from zk.bn254 import R
from zk.poseidon_tree import DictStore, PoseidonTree

BIDDERS = (MINER1, MINER2, MINER3, VERIFIER)
MIN_BOND = 1_500  # the job's anonymous.min_bond (above the chain's min_miner_bond)
SPEC = {"max_bids": 3, "bid_fee": FEE, "accept_window": 3, "min_bond": MIN_BOND}
ESCROW = 100 * 5  # max_price × max_units of every job here
POOL = SPEC["max_bids"] * SPEC["bid_fee"]
BLINDS = {MINER1.public_key: 11, MINER2.public_key: 22, MINER3.public_key: 33, VERIFIER.public_key: 44}


# ------------------------------------------------------------------------------------------- helpers
def _tree(m: Market) -> PoseidonTree:
    """The chain's bidder tree rebuilt from its leaves (what a bidder does off-chain)."""
    t = PoseidonTree(DictStore(), anon_bid.DEPTH)
    for i in range(anon.tree_size(m.s.get_object)):
        t.append(anon.leaf_at(m.s.get_object, i))
    assert t.root() == anon.root_of(m.s.get_object)
    return t


def _prove(
    m: Market,
    k: SigningKey,
    secret: int,
    job_id: bytes,
    price: int,
    *,
    bond: int | None = None,
    min_bond: int = MIN_BOND,
) -> dict:
    """An anon_bid body for ``k``'s identity against the current tree (``bond`` overrides the true one)."""
    t = _tree(m)
    ident = anon.identity_of(m.s.get_object, k.public_key)
    job = m.job(job_id)
    blind = BLINDS[k.public_key]
    st = anon_bid.Statement(
        job_id,
        price,
        t.root(),
        anon_bid.nullifier(job_id, secret),
        anon_bid.claim(k.public_key, blind),
        min_bond,
        0,
        anon.required_kinds(job),
        anon.required_backend(job),
    )
    siblings, bits = t.path(ident.index)
    standing = list(ident.standing)
    if bond is not None:
        standing[0] = bond
    proof, pub = prove("anon_bid", anon_bid.witness_inputs(st, secret, k.public_key, tuple(standing), blind,
                                                           siblings, bits))
    st = replace(st, root=pub[0])  # the circuit outputs the root its witness opens
    assert pub == st.public_inputs()
    return anon.anon_bid_body(st, proof)


def _sender(body: dict) -> SigningKey:
    """The key an anon_bid must come from (derived from its job and nullifier)."""
    return anon.sender_key(body["job_id"], body["nullifier"])


def _accept(job_id: bytes, blind: int) -> dict:
    return {"job_id": job_id, "blind": anon_bid.field_bytes(blind)}


def _refuse(m: Market, tx: Transaction) -> TxError:
    """``tx`` makes the next block invalid (nothing is written)."""
    env = BlockEnv(CHAIN, m.height + 1, 1_000 * (m.height + 1), PROPOSER, m.params)
    with pytest.raises(TxError) as ei:
        execute_block(m.s, env, [tx])
    return ei.value


def _submit_body(**kw) -> dict:
    args = {"max_price": 100, "max_units": 5, "bid_window": 2, "deadline": 5, **kw}
    return mkt.job_submit_body(
        "matmul-u32", get_kind("matmul-u32").version, KIND_PARAMS["matmul-u32"], **args
    )


def _auction(m: Market, job_id: bytes) -> anon.AnonAuction:
    a = anon.get(m.s.get_object, job_id)
    assert a is not None
    return a


@dataclass
class Scene:
    two: Market  # MINER2 @50 and MINER1 @60 placed (one slot left)
    three: Market  # then MINER3 @50: the auction is full
    job_id: bytes
    secrets: dict[bytes, int]
    bodies: dict[str, dict]
    throwaways: list[SigningKey]
    ev0: int  # events before the first anon_bid
    c0: int  # client balance before the job was submitted


@pytest.fixture(scope="module")
def scene() -> Scene:
    m = Market()
    secrets: dict[bytes, int] = {}
    for k in BIDDERS:
        m.register(k)
        secrets[k.public_key] = anon_bid.new_secret()
        m.ok(
            k,
            anon.TX_ANON_IDENTITY,
            {"commitment": anon_bid.field_bytes(anon_bid.identity(secrets[k.public_key]))},
        )
    c0 = m.bal(CLIENT)
    job_id = m.submit(bid_window=40, anonymous=SPEC)

    def bid(k: SigningKey, price: int) -> dict:
        return _prove(m, k, secrets[k.public_key], job_id, price)

    try:
        bodies = {"m2_50": bid(MINER2, 50)}
    except ProverMissing as exc:
        pytest.skip(f"no snarkjs prover: {exc}")
    bodies |= {
        "m1_60": bid(MINER1, 60),
        "m3_50": bid(MINER3, 50),
        "m1_70": bid(MINER1, 70),
        "v_40": bid(VERIFIER, 40),
    }
    tks = [_sender(bodies[k]) for k in ("m2_50", "m1_60", "m3_50")]
    ev0 = len(m.events)
    res = m.block((tks[0], anon.TX_ANON_BID, bodies["m2_50"]), (tks[1], anon.TX_ANON_BID, bodies["m1_60"]))
    assert all(r.ok for r in res), [(r.reason, r.message) for r in res]
    two = copy.deepcopy(m)
    m.ok(tks[2], anon.TX_ANON_BID, bodies["m3_50"])
    return Scene(two, m, job_id, secrets, bodies, tks, ev0, c0)


# --------------------------------------------------------------------------------------- happy path
def test_two_anonymous_bidders_lowest_accepts_and_is_paid(scene: Scene) -> None:
    m, jid = copy.deepcopy(scene.two), scene.job_id
    j, a = m.job(jid), _auction(m, jid)
    assert [b[2] for b in a.bids] == [50, 60] and a.fees_paid == 2 * FEE
    assert j.escrow == ESCROW + POOL - 2 * FEE  # the bids' fees came out of the job's escrow
    assert m.bal(CLIENT) == scene.c0 - FEE - ESCROW - POOL
    for tk in scene.throwaways[:2]:  # the senders held nothing before and leave nothing in state after
        assert m.s.get_account(tk.public_key) is None

    m.advance(j.bid_close_height)
    a = _auction(m, jid)
    assert (a.pending, a.accept_deadline, a.winner) == (0, j.bid_close_height + SPEC["accept_window"], None)
    view = views.get_job(m.s.get_object, jid, chain_id=CHAIN)
    assert view["miner"] is None and view["bids"] == []
    assert [b["price"] for b in view["anonymous"]["bids"]] == ["50", "60"] and view["anonymous"][
        "pending"
    ] == 0
    seen = json.dumps(view, default=str) + repr(m.events[scene.ev0 :])
    for k in BIDDERS:  # no bidder's address or key anywhere before the winner accepts
        assert encode_address(k.public_key) not in seen and k.public_key.hex() not in seen
    assert [e for e, _ in m.events[scene.ev0 :]] == ["anon_bid_placed", "anon_bid_placed", "anon_bid_pending"]

    b1, b2 = BLINDS[MINER1.public_key], BLINDS[MINER2.public_key]
    wrong = m.block(
        (MINER1, anon.TX_ANON_ACCEPT, _accept(jid, b1)),  # its own bid, not the pending one
        (MINER2, anon.TX_ANON_ACCEPT, _accept(jid, b2 + 1)),  # wrong blind
        (MINER1, anon.TX_ANON_ACCEPT, _accept(jid, b2)),
    )  # right blind, wrong account
    assert [r.reason for r in wrong] == ["claim_mismatch"] * 3
    assert m.job(jid).state == mkt.QUEUED

    c1 = m.bal(CLIENT)
    m.ok(MINER2, anon.TX_ANON_ACCEPT, _accept(jid, b2))
    j = m.job(jid)
    assert (j.state, j.miner, j.price, j.escrow) == (mkt.RUNNING, MINER2.public_key, 50, 250)
    assert m.bal(CLIENT) == c1 + ESCROW + POOL - 2 * FEE - 250  # the unused fee slot went back too
    assert _auction(m, jid).winner == MINER2.public_key
    assert views.get_job(m.s.get_object, jid, chain_id=CHAIN)["anonymous"]["winner"] == encode_address(
        MINER2.public_key
    )

    m2 = m.bal(MINER2)
    m.ok(MINER2, mkt.TX_RECEIPT, receipt(m, MINER2, j, Result("matmul-u32", KIND_PARAMS["matmul-u32"])))
    j = m.job(jid)
    assert (j.state, j.payment, j.paid, j.escrow) == (mkt.COMPLETED, mkt.RELEASED, 50, 0)
    assert m.bal(MINER2) == m2 - FEE + 50
    assert m.bal(CLIENT) == scene.c0 - FEE - 50 - 2 * FEE  # submit fee, the price, the two bids' fees
    m.check_invariants()


# ------------------------------------------------------------------------------------------- replay
def test_replays_and_tampered_bids_are_refused_at_block_level(scene: Scene) -> None:
    m, jid, bodies = copy.deepcopy(scene.two), scene.job_id, scene.bodies
    # a replay comes from the same derived key (nonce 0: its account was never written) and its nullifier is
    # recorded: one envelope per bid
    assert m.invalid(_sender(bodies["m2_50"]), anon.TX_ANON_BID, bodies["m2_50"]).reason == "nullifier_used"
    # from any other key it is refused before its proof is even looked at
    assert m.invalid(SigningKey.generate(), anon.TX_ANON_BID, bodies["m2_50"]).reason == "wrong_sender"
    # the same miner again at another price (another message, the same nullifier)
    again, first = bodies["m1_70"], bodies["m1_60"]
    assert again["nullifier"] == first["nullifier"] and again["proof"] != first["proof"]
    assert m.invalid(_sender(again), anon.TX_ANON_BID, again).reason == "nullifier_used"  # same nullifier, same key
    # non-canonical encodings of a used nullifier cannot dodge the check
    alias = (int.from_bytes(first["nullifier"], "big") + R).to_bytes(32, "big")
    assert (
        m.invalid(_sender({**first, "nullifier": alias}), anon.TX_ANON_BID, {**first, "nullifier": alias}).reason
        == "zk_malformed"
    )

    other = m.submit(anonymous=SPEC)
    objects = dict(m.s.objects)
    fresh = bodies["v_40"]  # still unused: valid on this job
    anon.check_anon_bid(fresh)
    swaps = {
        "job_id": other,
        "price": 41,
        "min_bond": MIN_BOND + 1,
        "min_memory": 1,
        "required_kinds": 3,
        "required_backend": first["claim"],
        "claim": first["claim"],
        "nullifier": bodies["m3_50"]["nullifier"],
        "root": first["claim"],
    }
    for field_name, value in swaps.items():  # every public input is bound by the proof
        with pytest.raises(TxError) as ei:
            anon.check_anon_bid({**fresh, field_name: value})
        assert ei.value.reason == "zk_invalid", field_name
    assert (
        m.invalid(_sender({**fresh, "job_id": other}), anon.TX_ANON_BID, {**fresh, "job_id": other}).reason == "zk_invalid"
    )

    proof = fresh["proof"]
    p = groth16.PROOF_SIZE
    assert len(proof) == p
    for bad in (bytes([2]) + proof[1:], proof[:1] + b"\xff" * 32 + proof[33:], proof[:1] + bytes(p - 1)):
        assert (
            m.invalid(_sender({**fresh, "proof": bad}), anon.TX_ANON_BID, {**fresh, "proof": bad}).reason
            == "zk_malformed"
        )
    assert (
        m.invalid(_sender({**fresh, "proof": proof[:-1]}), anon.TX_ANON_BID, {**fresh, "proof": proof[:-1]}).reason
        == "invalid_body"
    )

    # a sender cannot make the job pay more than its bid_fee
    tk = _sender(fresh)
    tx = Transaction.create(tk, CHAIN, anon.TX_ANON_BID, 0, FEE + 1, fresh)
    assert _refuse(m, tx).reason == "fee_above_bid_fee"
    assert m.s.get_account(tk.public_key) is None
    assert m.s.objects == objects  # no refusal wrote anything
    assert len(_auction(m, jid).bids) == 2
    m.ok(tk, anon.TX_ANON_BID, fresh)  # the very body is fine with a fee the job covers
    assert [b[2] for b in _auction(m, jid).bids] == [50, 60, 40]


# ------------------------------------------------------------------------------------ griefing winner
def test_a_pending_bidder_that_never_accepts_is_passed_over(scene: Scene) -> None:
    m, jid = copy.deepcopy(scene.three), scene.job_id
    close = m.job(jid).bid_close_height
    m.advance(close)
    a = _auction(m, jid)
    assert (a.pending, a.accept_deadline) == (0, close + 3)  # MINER2 @50 (MINER3 @50 came later)
    b2, b3 = BLINDS[MINER2.public_key], BLINDS[MINER3.public_key]
    assert m.fail(MINER3, anon.TX_ANON_ACCEPT, _accept(jid, b3)) == "claim_mismatch"  # not its turn yet
    m.advance(close + 3)
    a = _auction(m, jid)
    assert (a.pending, a.passed, a.accept_deadline) == (2, [0], close + 6)  # the tie, then the higher price
    assert ("anon_bid_passed", {"job_id": "0x" + jid.hex(), "price": "50"}) in m.events
    assert m.fail(MINER2, anon.TX_ANON_ACCEPT, _accept(jid, b2)) == "claim_mismatch"  # too late
    assert m.job(jid).state == mkt.QUEUED

    late = copy.deepcopy(m)
    m.advance(close + 5)
    m.ok(MINER3, anon.TX_ANON_ACCEPT, _accept(jid, b3))  # on its deadline block: still in time
    j = m.job(jid)
    assert (j.state, j.miner, j.price) == (mkt.RUNNING, MINER3.public_key, 50)
    m.advance(close + 7)  # the deadline due in the accept's block did nothing
    assert m.job(jid).state == mkt.RUNNING and _auction(m, jid).passed == [0]

    # nobody accepts: 50, 50, 60 are passed over in turn and the job expires with what is left
    m = late
    m.advance(close + 6)
    assert (_auction(m, jid).pending, _auction(m, jid).passed) == (1, [0, 2])
    c1 = m.bal(CLIENT)
    m.advance(close + 9)
    j, a = m.job(jid), _auction(m, jid)
    assert (j.state, j.payment, j.escrow, a.pending) == (mkt.EXPIRED, mkt.REFUNDED, 0, None)
    assert j.refunded == ESCROW + POOL - 3 * FEE and a.fees_paid == 3 * FEE
    assert m.bal(CLIENT) == c1 + j.refunded == scene.c0 - FEE - 3 * FEE
    assert m.fail(MINER1, anon.TX_ANON_ACCEPT, _accept(jid, BLINDS[MINER1.public_key])) == "nothing_pending"
    m.check_invariants()


# ---------------------------------------------------------------------------------- bond and standing
def test_leaves_follow_bond_and_standing_and_an_old_bond_expires_with_its_root(scene: Scene) -> None:
    m = copy.deepcopy(scene.two)
    get = m.s.get_object
    mem = m.miner(MINER1).capabilities["memory"]

    def leaf_of(k: SigningKey) -> tuple[int, int]:
        ident = anon.identity_of(get, k.public_key)
        return anon.leaf_at(get, ident.index), int.from_bytes(ident.commitment, "big")

    def caps_of(k: SigningKey) -> tuple[int, int]:
        return anon.identity_of(get, k.public_key).standing[2:]

    root0 = anon.root_of(get)
    m.ok(MINER1, mkt.TX_MINER_UPDATE, mkt.miner_update_body(add_bond=500))
    leaf, c1 = leaf_of(MINER1)
    assert leaf == anon_bid.leaf(c1, MINER1.public_key, 2_500, mem, *caps_of(MINER1))
    ident = anon.identity_of(get, MINER1.public_key)
    assert (ident.standing[:2], ident.active, ident.queued) == ([2_500, mem], True, False)  # written, not queued
    assert (
        anon.root_of(get) != root0
        and int.from_bytes(get(anon.ROOT_PREFIX + root0.to_bytes(32, "big")), "big") == m.height
    )

    # a slash lowers the bond in the leaf
    open_job = m.award(m.submit(), (MINER2, 10))
    before_slash = anon.root_of(get)
    m.advance(open_job.deadline_height)
    hs = m.height
    assert m.miner(MINER2).bond == 1_800
    leaf, c2 = leaf_of(MINER2)
    assert leaf == anon_bid.leaf(c2, MINER2.public_key, 1_800, mem, *caps_of(MINER2))
    assert anon.root_of(get) != before_slash

    # a job that needs more bond than MINER2 has now: no honest proof; a proof with the bond it had
    # opens the root from before the slash, usable ROOT_WINDOW blocks (and the award checks the bond);
    # an honest proof of a lower requirement is not this job's
    jid = m.submit(bid_window=40, anonymous={**SPEC, "min_bond": 2_000})
    secret = scene.secrets[MINER2.public_key]
    with pytest.raises(ProverFailed):
        _prove(m, MINER2, secret, jid, 30, min_bond=2_000)
    old = _prove(m, MINER2, secret, jid, 30, bond=2_000, min_bond=2_000)
    assert old["root"] == anon_bid.field_bytes(before_slash)
    weaker = _prove(m, MINER2, secret, jid, 30, min_bond=MARKET.min_miner_bond)
    assert m.invalid(_sender(weaker), anon.TX_ANON_BID, weaker).reason == "requirements_mismatch"

    within = copy.deepcopy(m)
    within.ok(_sender(old), anon.TX_ANON_BID, old)
    within.advance(within.job(jid).bid_close_height)
    assert _auction(within, jid).pending == 0
    assert within.fail(MINER2, anon.TX_ANON_ACCEPT, _accept(jid, BLINDS[MINER2.public_key])) == "bond_too_low"
    within.advance(_auction(within, jid).accept_deadline)
    assert within.job(jid).state == mkt.EXPIRED and within.job(jid).refunded == ESCROW + POOL - FEE

    m.advance(hs + anon.ROOT_WINDOW)
    assert m.invalid(_sender(old), anon.TX_ANON_BID, old).reason == "stale_root"

    # exit: the leaf is zeroed, nothing else in the tree moves
    size = anon.tree_size(get)
    m.ok(MINER1, mkt.TX_MINER_EXIT, {})
    assert leaf_of(MINER1)[0] == 0 and anon.identity_of(get, MINER1.public_key).active is False
    assert anon.tree_size(get) == size and leaf_of(MINER3)[0] != 0


def test_a_replaced_root_is_usable_for_root_window_blocks(scene: Scene) -> None:
    m, jid = copy.deepcopy(scene.three), scene.job_id
    late = scene.bodies["v_40"]  # proven against the root before MINER3 exits
    root0 = anon.root_of(m.s.get_object)
    assert late["root"] == anon_bid.field_bytes(root0)
    m.ok(MINER3, mkt.TX_MINER_EXIT, {})
    hx = m.height
    assert anon.root_of(m.s.get_object) != root0
    assert anon.root_usable(m.s.get_object, root0, hx + anon.ROOT_WINDOW)
    assert not anon.root_usable(m.s.get_object, root0, hx + anon.ROOT_WINDOW + 1)
    assert hx + anon.ROOT_WINDOW + 1 <= m.job(jid).bid_close_height
    m.advance(hx + anon.ROOT_WINDOW - 1)  # the next block is the last that takes the old root
    assert m.invalid(_sender(late), anon.TX_ANON_BID, late).reason == "too_many_bids"
    m.block()
    assert m.invalid(_sender(late), anon.TX_ANON_BID, late).reason == "stale_root"


# ----------------------------------------------------------------------------------- limits and rules
def test_bid_window_and_bid_count_limits(scene: Scene) -> None:
    fresh = scene.bodies["v_40"]
    full = copy.deepcopy(scene.three)
    assert full.invalid(_sender(fresh), anon.TX_ANON_BID, fresh).reason == "too_many_bids"
    m = copy.deepcopy(scene.two)
    m.advance(m.job(scene.job_id).bid_close_height)
    assert m.invalid(_sender(fresh), anon.TX_ANON_BID, fresh).reason == "bid_window_closed"
    assert len(_auction(m, scene.job_id).bids) == 2


def test_identity_and_job_rules_without_proofs() -> None:
    m = Market()
    m.register(MINER1)
    commit = {"commitment": anon_bid.field_bytes(anon_bid.identity(anon_bid.new_secret()))}
    assert m.fail(CLIENT, anon.TX_ANON_IDENTITY, commit) == "not_registered"
    assert m.invalid(MINER1, anon.TX_ANON_IDENTITY, {"commitment": bytes(32)}).reason == "invalid_body"
    assert (
        m.invalid(MINER1, anon.TX_ANON_IDENTITY, {"commitment": R.to_bytes(32, "big")}).reason
        == "invalid_body"
    )
    m.ok(MINER1, anon.TX_ANON_IDENTITY, commit)
    assert ("anon_identity_registered", {"miner": encode_address(MINER1.public_key), "index": 0}) in m.events
    assert m.fail(MINER1, anon.TX_ANON_IDENTITY, commit) == "identity_exists"
    assert anon.tree_size(m.s.get_object) == 1
    m.register(MINER2)
    m.ok(MINER2, mkt.TX_MINER_EXIT, {})
    assert m.fail(MINER2, anon.TX_ANON_IDENTITY, commit) == "not_registered"  # exiting

    sealed = {"bits": 12, "key": bytes(32), "deposit": 1, "settle_window": 2}
    for bad in (
        {**SPEC, "max_bids": 0},
        {**SPEC, "max_bids": anon.MAX_ANON_BIDS + 1},
        {**SPEC, "accept_window": 0},
        {k: v for k, v in SPEC.items() if k != "bid_fee"},
    ):
        assert m.invalid(CLIENT, mkt.TX_JOB_SUBMIT, _submit_body(anonymous=bad)).reason == "invalid_body"
    both = _submit_body(anonymous=SPEC, sealed=sealed)
    assert m.invalid(CLIENT, mkt.TX_JOB_SUBMIT, both).reason == "invalid_body"
    c0, jobs = m.bal(CLIENT), m.stats().jobs
    cheap = _submit_body(anonymous={**SPEC, "bid_fee": FEE - 1})
    assert m.fail(CLIENT, mkt.TX_JOB_SUBMIT, cheap) == "anon_fee_too_low"
    assert m.bal(CLIENT) == c0 - FEE and m.stats().jobs == jobs

    jid = m.submit(bid_window=10, anonymous=SPEC)
    assert m.bal(CLIENT) == c0 - 2 * FEE - ESCROW - POOL
    assert m.fail(MINER1, mkt.TX_BID, mkt.bid_body(jid, 50)) == "anonymous_job"
    assert m.fail(MINER1, anon.TX_ANON_ACCEPT, _accept(jid, 1)) == "nothing_pending"
    plain = m.submit()
    assert m.fail(MINER1, anon.TX_ANON_ACCEPT, _accept(plain, 1)) == "not_anonymous"
    # no anonymous bid: the job expires at the end of its window; the whole escrow, pool included, goes back
    m.advance(m.job(jid).bid_close_height - 1)
    c1 = m.bal(CLIENT)
    m.advance(m.job(jid).bid_close_height)
    j = m.job(jid)
    assert (j.state, j.refunded, j.escrow) == (mkt.EXPIRED, ESCROW + POOL, 0)
    assert m.bal(CLIENT) == c1 + ESCROW + POOL


def test_a_bidder_without_the_jobs_kind_or_backend_cannot_prove(scene: Scene) -> None:
    """The leaf carries the miner's kinds and backend: a job it cannot run gets no proof from it."""
    m = copy.deepcopy(scene.two)
    m.ok(MINER1, mkt.TX_MINER_UPDATE, mkt.miner_update_body(capabilities=caps(kinds=("matmul-u32",))))
    assert anon.identity_of(m.s.get_object, MINER1.public_key).standing[2] == 1 << anon.KIND_BITS["matmul-u32"]
    mlp = m.submit(kind="mlp-f32", anonymous=SPEC)
    with pytest.raises(ProverFailed):
        _prove(m, MINER1, scene.secrets[MINER1.public_key], mlp, 30)
    m.ok(_sender(_prove(m, MINER2, scene.secrets[MINER2.public_key], mlp, 30)), anon.TX_ANON_BID, _prove(m, MINER2, scene.secrets[MINER2.public_key], mlp, 30))
    on_numpy = m.submit(backend="numpy", anonymous=SPEC)  # every miner here runs "cuda"
    assert m.job(on_numpy).requirements == {"backend": "numpy"}
    with pytest.raises(ProverFailed):
        _prove(m, MINER2, scene.secrets[MINER2.public_key], on_numpy, 30)
