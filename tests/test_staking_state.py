"""Proof-of-stake rules (state/staking): real execute_block on an in-memory state, real signatures, real
DuplicateVote evidence; supply conservation and entry invariants under random operation sequences."""

from __future__ import annotations

from dataclasses import replace

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from memstate import MemState

import state.staking  # noqa: F401  (registers the staking tx kinds and hooks)
from state import staking_views as sv
from state.codec import sha256
from state.crypto import SigningKey
from state.errors import TxError
from state.evidence import DuplicateVote
from state.genesis import ChainParams, Genesis, GenesisValidator
from state.machine import SUPPLY_KEY, BlockEnv, HookError, execute_block, execute_genesis
from state.params import StakingParams
from state.staking.model import (
    K_SETS,
    P_DELEGATION,
    P_UNBONDING,
    P_VALIDATOR,
    SCALE,
    Delegation,
    Unbonding,
    Validator,
    k_delegation,
    k_validator,
    load_totals,
)
from state.types import PREVOTE, Transaction, Vote, transfer

CHAIN = "stk-test"
AIT = 1_000_000
SP = StakingParams(
    epoch_blocks=5,
    max_validators=4,
    min_self_bond=100,
    power_unit=10,
    unbonding_blocks=6,
    block_reward=1000,
    proposer_bonus_bps=500,
    max_commission_bps=5000,
    max_commission_change_bps=1000,
    slash_double_sign_bps=500,
    slash_downtime_bps=100,
    signed_blocks_window=4,
    min_signed_bps=5000,
    jail_blocks=5,
    max_evidence_age=10,
    max_delegations_per_account=3,
    max_unbonding_per_account=4,
)


def key(name: str) -> SigningKey:
    return SigningKey.from_seed(sha256(name.encode()))


G1, G2 = key("g1"), key("g2")  # genesis validators
ALICE, BOB, CAROL = key("alice"), key("bob"), key("carol")
CK_A, CK_B = key("ck-alice"), key("ck-bob")  # consensus keys of created validators


class Chain:
    """A chain driven block by block; ``sets`` mirrors what the BFT engine would install."""

    def __init__(
        self,
        consensus: str = "pos",
        params: StakingParams = SP,
        validators: tuple[tuple[SigningKey, int], ...] = ((G1, 10), (G2, 30)),
        balance: int = 100_000,
        min_fee: int = 1,
    ) -> None:
        self.params = ChainParams(min_fee=min_fee, staking=params)
        self.consensus = consensus
        accounts = tuple(sorted((k.public_key, balance) for k in (ALICE, BOB, CAROL, G1, G2)))
        self.genesis = Genesis(CHAIN, 0, consensus, self.params, accounts,
                               tuple(GenesisValidator(k.public_key, p, f"v{i}") for i, (k, p) in enumerate(validators)))
        self.state = MemState()
        out = execute_genesis(self.state, self.env(0, b"\x00" * 32), self.genesis)
        self.state.apply(out)
        self.sets: list[tuple[int, dict[bytes, int]]] = [(1, {k.public_key: p for k, p in validators})]
        self.height = 0
        self.nonces: dict[bytes, int] = {}
        self.events: list[tuple[str, dict]] = list(out.events)
        self.last = out

    def env(self, height: int, proposer: bytes, signers=frozenset(), evidence=()) -> BlockEnv:
        return BlockEnv(CHAIN, height, 1000 * height, proposer, self.params, frozenset(signers), tuple(evidence),
                        self.consensus)

    def valset(self, height: int) -> dict[bytes, int]:
        cur = self.sets[0][1]
        for frm, vs in self.sets:
            if frm <= height:
                cur = vs
        return cur

    def tx(self, k: SigningKey, type_: str, body: dict, fee: int = 10) -> Transaction:
        n = self.nonces.get(k.public_key, 0)
        self.nonces[k.public_key] = n + 1
        return Transaction.create(k, CHAIN, type_, n, fee, body)

    def block(self, txs=(), *, signers=None, proposer: bytes | None = None, evidence=()):
        h = self.height + 1
        if signers is None:
            signers = set(self.valset(h - 1)) if h > 1 else set()
        if proposer is None:
            proposer = min(self.valset(h))
        out = execute_block(self.state, self.env(h, proposer, signers, evidence), list(txs))
        self.state.apply(out)
        if out.valset_update is not None:
            frm, vs = out.valset_update
            assert frm == h + 2
            self.sets = [e for e in self.sets if e[0] < frm] + [(frm, dict(vs))]
        self.height = h
        self.events.extend(out.events)
        self.last = out
        return out

    def run(self, k: SigningKey, type_: str, body: dict, **kw):
        """One block holding one tx; returns its result."""
        out = self.block([self.tx(k, type_, body)], **kw)
        return out.results[0]

    def advance_to(self, height: int, **kw) -> None:
        while self.height < height:
            self.block(**kw)

    # reads ---------------------------------------------------------------------------------------
    def balance(self, k: SigningKey | bytes) -> int:
        pk = k.public_key if isinstance(k, SigningKey) else k
        acc = self.state.accounts.get(pk)
        return acc.balance if acc else 0

    def validator(self, op: SigningKey | bytes) -> Validator:
        pk = op.public_key if isinstance(op, SigningKey) else op
        return Validator.decode(self.state.objects[k_validator(pk)])

    def delegation(self, d: SigningKey, op: SigningKey | bytes) -> Delegation | None:
        pk = op.public_key if isinstance(op, SigningKey) else op
        raw = self.state.objects.get(k_delegation(d.public_key, pk))
        return Delegation.decode(raw) if raw is not None else None

    def supply(self) -> int:
        raw = self.state.objects.get(SUPPLY_KEY)
        return cbor2.loads(raw) if raw is not None else 0

    def check_invariants(self) -> None:
        """Supply conservation and non-negativity of every staking record."""
        objs = self.state.objects
        t = load_totals(self.state.get_object)
        balances = sum(a.balance for a in self.state.accounts.values())
        assert balances + t.locked == self.supply()
        vals = [Validator.decode(v) for k, v in objs.items() if k.startswith(P_VALIDATOR)]
        assert sum(v.tokens for v in vals) == t.bonded
        assert sum(v.outstanding + v.commission for v in vals) == t.rewards
        for v in vals:
            assert v.tokens >= 0 and v.shares >= 0 and v.self_shares >= 0 and v.outstanding >= 0
            assert v.commission >= 0 and v.acc_rem >= 0 and 0 <= v.missed <= v.tracked
            assert (v.shares == 0) <= (v.tokens == 0)  # no tokens without shares
        by_val: dict[bytes, list[Delegation]] = {}
        for k, raw in objs.items():
            if k.startswith(P_DELEGATION):
                d = Delegation.decode(raw)
                assert d.shares > 0
                by_val.setdefault(k[-32:], []).append(d)
        for v in vals:
            ds = by_val.get(v.operator, [])
            assert sum(d.shares for d in ds) == v.shares
            assert sum(v.pending_rewards(d) for d in ds) <= v.outstanding
        ubs = [Unbonding.decode(v) for k, v in objs.items() if k.startswith(P_UNBONDING)]
        assert all(u.amount >= 0 for u in ubs)
        assert sum(u.amount for u in ubs) == t.unbonding
        assert t.community_pool >= 0 and t.rewards >= 0


def evidence(k: SigningKey, height: int, round_: int = 0) -> bytes:
    a = Vote.create(k, CHAIN, height, round_, PREVOTE, sha256(b"block-a"))
    b = Vote.create(k, CHAIN, height, round_, PREVOTE, sha256(b"block-b"))
    return DuplicateVote.from_votes(a, b).encode()


def create_body(ck: SigningKey, bond: int, commission: int = 0, moniker: str = "val") -> dict:
    return sv.validator_create_body(ck.public_key, commission, bond, moniker)


# genesis --------------------------------------------------------------------------------------------


def test_pos_genesis_stakes_every_genesis_validator_with_its_power() -> None:
    c = Chain()
    t = load_totals(c.state.get_object)
    assert t.bonded == (10 + 30) * SP.power_unit
    assert c.supply() == 5 * 100_000 + t.bonded  # bonds are minted, not taken from balances
    for k, p in ((G1, 10), (G2, 30)):
        v = c.validator(k)
        assert (v.operator, v.consensus_key, v.commission_bps) == (k.public_key, k.public_key, 0)
        assert v.tokens // SP.power_unit == p and v.self_bond == p * SP.power_unit
    sets = cbor2.loads(c.state.objects[K_SETS])
    assert sets == [[1, sorted([[G1.public_key, 10, G1.public_key], [G2.public_key, 30, G2.public_key]])]]
    assert c.last.valset_update is None  # the engine starts with the genesis set: nothing to install
    c.check_invariants()
    # the first epoch keeps the same set: nothing installed
    c.advance_to(SP.epoch_blocks + 1)
    assert all(e[0] != "validator_set" for e in c.events)
    c.check_invariants()


# create / edit / delegate / undelegate --------------------------------------------------------------


def test_validator_becomes_active_exactly_at_next_epoch_plus_two() -> None:
    c = Chain()
    r = c.run(ALICE, "validator_create", create_body(CK_A, 250, 500, "alice"))
    assert r.ok, r
    v = c.validator(ALICE)
    assert (v.tokens, v.shares, v.self_bond, v.commission_bps, v.moniker) == (250, 250, 250, 500, "alice")
    assert c.balance(ALICE) == 100_000 - 250 - 10
    c.advance_to(4)
    assert CK_A.public_key not in c.valset(6)
    out = c.block()  # height 5: epoch boundary
    assert out.valset_update == (7, sorted([(G1.public_key, 10), (G2.public_key, 30), (CK_A.public_key, 25)]))
    ev = [f for e, f in out.events if e == "validator_set"]
    assert ev and ev[0]["height"] == 7 and {"address": sv.encode_address(CK_A.public_key), "power": 25} in ev[0][
        "validators"]
    assert CK_A.public_key not in c.valset(6) and c.valset(7)[CK_A.public_key] == 25
    view = sv.get_validator(c.state.get_object, ALICE.public_key, params=SP, height=7)
    assert view["status"] == "active" and view["power"] == 25 and view["tokens"] == "250"
    c.check_invariants()


def test_create_rejections() -> None:
    c = Chain(params=replace(SP, max_delegations_per_account=1))
    assert c.run(ALICE, "validator_create", create_body(CK_A, 99)).reason == "self_bond_too_low"
    assert c.run(ALICE, "validator_create", create_body(CK_A, 100, 5001)).reason == "commission_too_high"
    assert c.run(ALICE, "validator_create", create_body(CK_A, 10**9)).reason == "insufficient_balance"
    assert c.run(ALICE, "validator_create", create_body(G1, 100)).reason == "consensus_key_taken"
    assert c.run(ALICE, "validator_create", create_body(CK_A, 100)).ok
    assert c.run(ALICE, "validator_create", create_body(CK_B, 100)).reason == "validator_exists"
    assert c.run(BOB, "validator_create", create_body(CK_A, 100)).reason == "consensus_key_taken"
    assert c.run(BOB, "delegate", sv.delegate_body(G1.public_key, 50)).ok
    # BOB already delegates to one validator (the limit here): its own self-delegation does not fit
    assert c.run(BOB, "validator_create", create_body(CK_B, 100)).reason == "too_many_delegations"
    # failed bodies charged the fee and changed nothing else
    assert c.balance(BOB) == 100_000 - 50 - 3 * 10
    c.check_invariants()


@pytest.mark.parametrize(
    "type_,body",
    [
        ("validator_create", {"consensus_key": b"x" * 31, "commission_bps": 0, "self_bond": 100, "moniker": ""}),
        ("validator_create", {"consensus_key": b"x" * 32, "commission_bps": 10_001, "self_bond": 100, "moniker": ""}),
        ("validator_create", {"consensus_key": b"x" * 32, "commission_bps": 0, "self_bond": 0, "moniker": ""}),
        ("validator_create", {"consensus_key": b"x" * 32, "commission_bps": 0, "self_bond": 1, "moniker": "a" * 65}),
        ("validator_create", {"consensus_key": b"x" * 32, "commission_bps": 0, "self_bond": 1}),
        ("validator_edit", {}),
        ("validator_edit", {"commission_bps": "1"}),
        ("delegate", {"validator": b"x" * 32, "amount": -1}),
        ("delegate", {"validator": b"x" * 32, "amount": 1, "extra": 1}),
        ("undelegate", {"validator": b"x" * 32, "amount": True}),
        ("redelegate", {"from": b"x" * 32, "to": b"x" * 32, "amount": 1}),
        ("unjail", {"x": 1}),
        ("withdraw_rewards", {"validator": b"short"}),
    ],
)
def test_malformed_bodies_are_block_invalid(type_: str, body: dict) -> None:
    c = Chain()
    with pytest.raises(TxError) as ei:
        c.block([c.tx(ALICE, type_, body)])
    assert ei.value.reason == "invalid_body"


def test_edit_commission_rules() -> None:
    c = Chain()
    assert c.run(ALICE, "validator_edit", sv.validator_edit_body(moniker="x")).reason == "not_validator"
    assert c.run(ALICE, "validator_create", create_body(CK_A, 100, 1000)).ok  # height 2
    edit = sv.validator_edit_body
    assert c.run(ALICE, "validator_edit", edit(commission_bps=1500)).reason == "commission_change_too_soon"
    c.advance_to(2 + SP.epoch_blocks - 1)
    assert c.run(ALICE, "validator_edit", edit(commission_bps=5001)).reason == "commission_too_high"
    assert c.run(ALICE, "validator_edit", edit(commission_bps=2001)).reason == "commission_change_too_large"
    assert c.run(ALICE, "validator_edit", edit(commission_bps=2000, moniker="new")).ok
    v = c.validator(ALICE)
    assert (v.commission_bps, v.moniker) == (2000, "new")
    assert c.run(ALICE, "validator_edit", edit(commission_bps=1900)).reason == "commission_change_too_soon"
    assert c.run(ALICE, "validator_edit", edit(moniker="only-name")).ok


def test_delegate_undelegate_and_rejections() -> None:
    c = Chain()
    g1 = G1.public_key
    assert c.run(BOB, "delegate", sv.delegate_body(ALICE.public_key, 10)).reason == "unknown_validator"
    assert c.run(BOB, "undelegate", sv.undelegate_body(g1, 10)).reason == "no_delegation"
    assert c.run(BOB, "delegate", sv.delegate_body(g1, 10**9)).reason == "insufficient_balance"
    assert c.run(BOB, "delegate", sv.delegate_body(g1, 400)).ok
    v = c.validator(G1)
    assert (v.tokens, v.shares) == (500, 500) and c.delegation(BOB, G1).shares == 400
    assert c.run(BOB, "undelegate", sv.undelegate_body(g1, 401)).reason == "insufficient_delegation"
    assert c.run(BOB, "withdraw_rewards", sv.withdraw_rewards_body(G2.public_key)).reason == "nothing_to_withdraw"
    assert c.run(BOB, "undelegate", sv.undelegate_body(g1, 150)).ok
    assert c.delegation(BOB, G1).shares == 250 and c.validator(G1).tokens == 350
    views = sv.get_delegations(c.state.get_object, c.state.scan, delegator=BOB.public_key)
    assert [(d["validator"], d["amount"]) for d in views] == [(sv.encode_address(g1), "250")]
    by_val = sv.get_delegations(c.state.get_object, c.state.scan, validator=g1)
    assert {d["delegator"] for d in by_val} == {sv.encode_address(g1), sv.encode_address(BOB.public_key)}
    ub = sv.get_unbonding(c.state.get_object, c.state.scan, delegator=BOB.public_key)
    assert [(u["amount"], u["completes_at"]) for u in ub] == [("150", c.height + SP.unbonding_blocks)]
    # undelegating everything removes the delegation and its indexes
    assert c.run(BOB, "undelegate", sv.undelegate_body(g1, 250)).ok
    assert c.delegation(BOB, G1) is None
    assert sv.get_delegations(c.state.get_object, c.state.scan, delegator=BOB.public_key) == []
    c.check_invariants()


def test_delegation_and_unbonding_limits() -> None:
    c = Chain()
    for op in (G1, G2):
        assert c.run(BOB, "delegate", sv.delegate_body(op.public_key, 100)).ok
    assert c.run(ALICE, "validator_create", create_body(CK_A, 100)).ok
    assert c.run(BOB, "delegate", sv.delegate_body(ALICE.public_key, 100)).ok
    assert c.run(CAROL, "validator_create", create_body(CK_B, 100)).ok
    assert c.run(BOB, "delegate", sv.delegate_body(CAROL.public_key, 100)).reason == "too_many_delegations"
    for _ in range(SP.max_unbonding_per_account):
        assert c.run(BOB, "undelegate", sv.undelegate_body(G1.public_key, 10)).ok
    assert c.run(BOB, "undelegate", sv.undelegate_body(G1.public_key, 10)).reason == "too_many_unbonding"
    c.check_invariants()


def test_unbonding_pays_exactly_after_its_delay() -> None:
    c = Chain()
    assert c.run(BOB, "delegate", sv.delegate_body(G1.public_key, 300)).ok
    assert c.run(BOB, "undelegate", sv.undelegate_body(G1.public_key, 120)).ok
    started = c.height
    before = c.balance(BOB)
    c.advance_to(started + SP.unbonding_blocks - 1)
    assert c.balance(BOB) == before  # rewards are only paid on withdraw; the entry not yet
    assert load_totals(c.state.get_object).unbonding == 120
    out = c.block()
    assert c.height == started + SP.unbonding_blocks
    assert c.balance(BOB) == before + 120
    assert [f["amount"] for e, f in out.events if e == "unbonded"] == ["120"]
    assert load_totals(c.state.get_object).unbonding == 0
    assert sv.get_unbonding(c.state.get_object, c.state.scan, delegator=BOB.public_key) == []
    c.check_invariants()


def test_self_undelegation_below_minimum_leaves_at_next_epoch() -> None:
    c = Chain()
    assert c.run(ALICE, "validator_create", create_body(CK_A, 150)).ok
    assert c.run(BOB, "delegate", sv.delegate_body(ALICE.public_key, 500)).ok
    c.advance_to(5)
    assert c.valset(7)[CK_A.public_key] == 65
    c.advance_to(7)
    assert c.run(ALICE, "undelegate", sv.undelegate_body(ALICE.public_key, 51)).ok  # height 8: self-bond 99
    assert c.validator(ALICE).self_bond == 99
    c.advance_to(9)
    assert CK_A.public_key in c.valset(12)  # still in until the epoch
    out = c.block()  # height 10: epoch
    assert out.valset_update is not None and CK_A.public_key not in dict(out.valset_update[1])
    assert CK_A.public_key in c.valset(11) and CK_A.public_key not in c.valset(12)
    assert sv.get_validator(c.state.get_object, ALICE.public_key, params=SP, height=12)["status"] == "inactive"
    c.check_invariants()


def test_max_validators_keeps_top_power_ties_by_consensus_key() -> None:
    c = Chain(params=replace(SP, max_validators=2))
    assert c.run(ALICE, "validator_create", create_body(CK_A, 300)).ok
    assert c.run(BOB, "validator_create", create_body(CK_B, 300)).ok
    c.advance_to(5)
    # G2 (30) ties ALICE and BOB (30 each); the two smallest consensus keys among them win
    top = sorted([G2.public_key, CK_A.public_key, CK_B.public_key])[:2]
    assert sorted(c.valset(7)) == top


# slashing -------------------------------------------------------------------------------------------


def test_double_sign_slashes_bonded_and_later_unbonding_jails_tombstones_and_removes() -> None:
    c = Chain()
    g2 = G2.public_key
    assert c.run(BOB, "delegate", sv.delegate_body(g2, 1000)).ok  # height 1
    assert c.run(BOB, "undelegate", sv.undelegate_body(g2, 200)).ok  # height 2: before the fault
    fault = 3
    c.advance_to(fault)
    assert c.run(BOB, "undelegate", sv.undelegate_body(g2, 100)).ok  # height 4: after the fault
    supply = c.supply()
    v = c.validator(G2)
    assert v.tokens == 300 + 1000 - 300
    out = c.block(evidence=[evidence(G2, fault)])  # height 5 (also an epoch)
    slashed = 1000 * 500 // 10_000 + 100 * 500 // 10_000  # bonded + the unbonding entry started after
    (slash,) = [f for e, f in out.events if e == "slash"]
    assert slash["reason"] == "double_sign" and slash["amount"] == str(slashed) and slash["height"] == 5
    assert c.supply() == supply + SP.block_reward - slashed
    v = c.validator(G2)
    assert v.jailed and v.tombstoned and v.tokens == 950
    ub = sorted(int(u["amount"]) for u in sv.get_unbonding(c.state.get_object, c.state.scan, delegator=BOB.public_key))
    assert ub == [95, 200]  # the entry started before the fault keeps its amount
    assert out.valset_update == (7, [(G1.public_key, 10)])
    assert g2 in c.valset(6) and g2 not in c.valset(7)
    assert sv.get_validator(c.state.get_object, g2, params=SP)["status"] == "tombstoned"
    # every delegation lost pro rata: BOB's 700 shares are now worth 700 * 950 / 1000
    assert sv.get_delegations(c.state.get_object, c.state.scan, delegator=BOB.public_key, validator=g2)[0][
        "amount"] == str(700 * 950 // 1000)
    c.check_invariants()
    # the same evidence again makes the block invalid; so does re-delegating to a tombstoned validator
    with pytest.raises(HookError, match="already handled"):
        execute_block(c.state, c.env(c.height + 1, G1.public_key, evidence=[evidence(G2, fault)]), [])
    assert c.run(CAROL, "delegate", sv.delegate_body(g2, 100)).reason == "validator_tombstoned"
    assert c.run(G2, "unjail", {}).reason == "tombstoned"
    # the unbonding entries still complete (reduced) on time
    c.advance_to(4 + SP.unbonding_blocks)
    assert load_totals(c.state.get_object).unbonding == 0
    c.check_invariants()


def test_inadmissible_evidence_is_refused() -> None:
    c = Chain()
    c.advance_to(SP.max_evidence_age + 3)
    h = c.height + 1
    env = c.env
    with pytest.raises(HookError, match="too old"):
        execute_block(c.state, env(h, G1.public_key, evidence=[evidence(G2, h - SP.max_evidence_age - 1)]), [])
    with pytest.raises(HookError, match="not a validator"):
        execute_block(c.state, env(h, G1.public_key, evidence=[evidence(ALICE, h - 2)]), [])
    with pytest.raises(HookError, match="above the block"):
        execute_block(c.state, env(h, G1.public_key, evidence=[evidence(G2, h + 1)]), [])
    # the oldest admissible height is fine
    out = execute_block(c.state, env(h, G1.public_key, evidence=[evidence(G2, h - SP.max_evidence_age)]), [])
    assert [e for e, _ in out.events].count("slash") == 1


def test_evidence_record_expires_after_max_age() -> None:
    c = Chain(params=replace(SP, slash_double_sign_bps=0))
    raw = evidence(G1, 1)
    c.block(evidence=[raw])
    assert any(k.startswith(b"stk/ev/") for k in c.state.objects)
    c.advance_to(1 + SP.max_evidence_age + 1)
    assert not any(k.startswith(b"stk/ev") for k in c.state.objects)


def test_downtime_jails_after_the_window_and_unjail_after_jail_blocks() -> None:
    c = Chain()
    assert c.run(ALICE, "validator_create", create_body(CK_A, 200)).ok  # height 1
    c.advance_to(5)  # epoch: ALICE active from 7
    ck = CK_A.public_key
    signers_without = lambda h: set(c.valset(h - 1)) - {ck}  # noqa: E731
    # active from 7: blocks 8.. carry commits of 7..; ALICE signs none of them
    jailed_at = None
    for _ in range(8):
        out = c.block(signers=signers_without(c.height + 1))
        if any(e == "jail" for e, _ in out.events):
            jailed_at = c.height
            break
    # window 4, min 50 %: the 4th tracked height (8, 9, 10, 11) jails
    assert jailed_at == 11
    (slash,) = [f for e, f in out.events if e == "slash"]
    assert slash["reason"] == "downtime" and slash["amount"] == str(200 * 100 // 10_000)
    v = c.validator(ALICE)
    assert v.jailed and not v.tombstoned and v.jailed_until == 11 + SP.jail_blocks and v.missed == 0
    assert out.valset_update is not None and ck not in dict(out.valset_update[1])  # leaves without waiting
    assert ck in c.valset(12) and ck not in c.valset(13)
    c.check_invariants()
    assert c.run(ALICE, "unjail", {}).reason == "jail_period_not_over"  # height 12
    c.advance_to(11 + SP.jail_blocks - 1)
    assert c.run(ALICE, "unjail", {}).ok  # height 16 = jailed_until
    assert c.run(ALICE, "unjail", {}).reason == "not_jailed"
    assert ck not in c.valset(c.height + 2)
    c.advance_to(20)  # epoch: back from 22
    assert c.valset(22)[ck] == (200 - 2) // SP.power_unit


def test_unjail_needs_the_minimum_self_bond() -> None:
    c = Chain()
    assert c.run(ALICE, "validator_create", create_body(CK_A, 100)).ok
    c.advance_to(5)
    ck = CK_A.public_key
    while not c.validator(ALICE).jailed:
        c.block(signers=set(c.valset(c.height)) - {ck})
    c.advance_to(c.validator(ALICE).jailed_until)
    assert c.validator(ALICE).self_bond == 99  # the downtime slash took 1 %
    assert c.run(ALICE, "unjail", {}).reason == "self_bond_too_low"
    assert c.run(ALICE, "delegate", sv.delegate_body(ALICE.public_key, 1)).ok
    assert c.run(ALICE, "unjail", {}).ok


# rewards --------------------------------------------------------------------------------------------


def test_rewards_proposer_bonus_pro_rata_signers_and_dust_to_proposer() -> None:
    c = Chain()
    g1, g2 = G1.public_key, G2.public_key
    # height 1: no last commit -> everything (reward + fee) to the proposer
    out = c.block([transfer(ALICE, CHAIN, BOB.public_key, 5, 0, 10)], proposer=g1)
    c.nonces[ALICE.public_key] = 1
    assert out.fees == 0 and c.balance(g1) == 100_000  # fees are not paid to the proposer's balance
    assert c.validator(G1).outstanding == 1010
    # height 2: pool 1000 + 0 fees: bonus 50, rest 950 split 10:30 -> 237 / 712, dust 1 -> proposer G2
    c.block(proposer=g2, signers={g1, g2})
    assert c.validator(G1).outstanding == 1010 + 237
    assert c.validator(G2).outstanding == 712 + 50 + 1
    # height 3: only G2 signed: all 950 to G2 plus the bonus (proposer G1)
    c.block(proposer=g1, signers={g2})
    assert c.validator(G1).outstanding == 1010 + 237 + 50
    assert c.validator(G2).outstanding == 763 + 950
    c.check_invariants()
    # withdraw pays exactly the accrued amount (genesis validators are their only delegators)
    before = c.balance(G1)
    assert c.run(G1, "withdraw_rewards", {}, proposer=g2, signers=set()).ok
    assert c.balance(G1) == before + 1297 - 10  # the fee of the withdraw
    assert c.validator(G1).outstanding == 0
    c.check_invariants()


def test_commission_and_delegator_shares_are_exact() -> None:
    c = Chain()
    assert c.run(ALICE, "validator_create", create_body(CK_A, 100, commission=1000)).ok
    assert c.run(BOB, "delegate", sv.delegate_body(ALICE.public_key, 200)).ok
    assert c.run(CAROL, "delegate", sv.delegate_body(ALICE.public_key, 33)).ok
    c.advance_to(6)
    ck, g1 = CK_A.public_key, G1.public_key
    v0 = c.validator(ALICE)
    assert v0.shares == 333
    # height 7: the set is {G1, G2, ALICE}; height 8 carries the commit of 7 signed by ALICE only
    c.block(proposer=g1)
    c.block(proposer=g1, signers={ck})
    v = c.validator(ALICE)
    share = 950  # everything but the bonus: ALICE is the only signer
    commission = share * 1000 // 10_000
    assert v.commission - v0.commission == commission
    assert v.outstanding - v0.outstanding == share - commission
    d_bob = c.delegation(BOB, ALICE)
    pending_bob = d_bob.shares * (v.acc - d_bob.acc) // SCALE
    pending_carol = 33 * (v.acc - c.delegation(CAROL, ALICE).acc) // SCALE
    pending_alice = 100 * (v.acc - c.delegation(ALICE, ALICE).acc) // SCALE
    assert pending_bob + pending_carol + pending_alice <= v.outstanding
    assert v.outstanding - (pending_bob + pending_carol + pending_alice) < 3  # floor dust only
    # BOB withdraws from ALICE: gets exactly its pending part; ALICE gets delegation + commission
    b0, a0 = c.balance(BOB), c.balance(ALICE)
    assert c.run(BOB, "withdraw_rewards", sv.withdraw_rewards_body(ALICE.public_key), signers=set()).ok
    assert c.balance(BOB) == b0 + pending_bob - 10
    acc_now = c.validator(ALICE).acc
    alice_now = 100 * (acc_now - c.delegation(ALICE, ALICE).acc) // SCALE
    com_now = c.validator(ALICE).commission
    assert c.run(ALICE, "withdraw_rewards", {}, signers=set()).ok
    assert c.balance(ALICE) == a0 + alice_now + com_now - 10
    assert c.validator(ALICE).commission == 0
    # a delegation change settles pending rewards first
    p = c.validator(ALICE)
    pending_carol = 33 * (p.acc - c.delegation(CAROL, ALICE).acc) // SCALE
    c0 = c.balance(CAROL)
    assert c.run(CAROL, "delegate", sv.delegate_body(ALICE.public_key, 10), signers=set()).ok
    assert c.balance(CAROL) == c0 + pending_carol - 10 - 10
    c.check_invariants()


def test_validator_without_delegators_gives_its_dust_to_the_community_pool() -> None:
    c = Chain()
    assert c.run(ALICE, "validator_create", create_body(CK_A, 100)).ok
    c.advance_to(7)
    c.block(signers=set(c.valset(7)))  # height 8 carries the commit of 7, signed by ALICE too
    assert c.validator(ALICE).outstanding > 0
    pool0 = load_totals(c.state.get_object).community_pool
    assert c.run(ALICE, "undelegate", sv.undelegate_body(ALICE.public_key, 100), signers=set()).ok
    v = c.validator(ALICE)
    assert v.shares == 0 and v.outstanding == 0 and v.tokens == 0
    assert load_totals(c.state.get_object).community_pool >= pool0
    c.check_invariants()


def test_jailed_validator_earns_nothing() -> None:
    c = Chain()
    g1, g2 = G1.public_key, G2.public_key
    c.block([], evidence=[evidence(G2, 1)], proposer=g1)  # G2 tombstoned at height 1 (still votes at 2)
    before = c.validator(G2).outstanding
    c.block(proposer=g2, signers={g1, g2})  # G2 proposes and signs: its share goes elsewhere
    assert c.validator(G2).outstanding == before
    t = load_totals(c.state.get_object)
    assert t.community_pool == 50  # the jailed proposer's bonus
    c.check_invariants()


# redelegation ---------------------------------------------------------------------------------------


def test_redelegate_moves_stake_and_stays_slashable_for_the_source() -> None:
    c = Chain()
    g1, g2 = G1.public_key, G2.public_key
    assert c.run(BOB, "delegate", sv.delegate_body(g2, 1000)).ok  # height 1
    assert c.run(BOB, "redelegate", sv.redelegate_body(g2, g1, 400)).ok  # height 2
    assert c.delegation(BOB, G1).shares == 400 and c.validator(G1).tokens == 500
    assert c.run(BOB, "redelegate", sv.redelegate_body(g1, g2, 10)).reason == "redelegation_in_progress"
    [r] = sv.get_redelegations(c.state.get_object, c.state.scan, delegator=BOB.public_key)
    assert (r["amount"], r["completes_at"]) == ("400", 2 + SP.unbonding_blocks)
    supply = c.supply()
    c.block(evidence=[evidence(G2, 2)])  # height 3: G2 double-signed at 2, when the redelegation started
    # G2's bonded 300 + 600 loses 5 %; the 400 redelegated to G1 loses 5 % of its shares at G1
    assert c.validator(G2).tokens == 900 - 45
    assert c.delegation(BOB, G1).shares == 380 and c.validator(G1).tokens == 480
    assert c.supply() == supply + SP.block_reward - 45 - 20
    c.check_invariants()
    c.advance_to(2 + SP.unbonding_blocks)
    assert sv.get_redelegations(c.state.get_object, c.state.scan, delegator=BOB.public_key) == []
    assert c.run(BOB, "redelegate", sv.redelegate_body(g1, g2, 10)).reason == "validator_tombstoned"
    assert c.run(CAROL, "redelegate", sv.redelegate_body(g1, g2, 10)).reason == "validator_tombstoned"
    c.check_invariants()


# hybrid and PoA -------------------------------------------------------------------------------------


def test_hybrid_authorities_then_switch_to_stake() -> None:
    params = replace(SP, hybrid_switch_height=13, epoch_blocks=100)
    c = Chain("hybrid", params)
    g1, g2 = G1.public_key, G2.public_key
    assert load_totals(c.state.get_object).bonded == 0  # authorities have no stake
    assert c.run(ALICE, "validator_create", create_body(CK_A, 300), proposer=g1).ok
    # authorities earn directly into their accounts (no stake, no delegators)
    assert c.balance(G1) > 100_000
    c.advance_to(10)
    assert c.valset(12) == {g1: 10, g2: 30}
    out = c.block()  # height 11 = switch - 2
    assert out.valset_update == (13, [(CK_A.public_key, 30)])
    assert any(e == "hybrid_switch" for e, _ in out.events)
    c.advance_to(13)
    assert c.valset(13) == {CK_A.public_key: 30}
    c.check_invariants()


def test_hybrid_with_authorities_and_stake_before_switch_and_deferred_switch() -> None:
    c = Chain("hybrid", replace(SP, hybrid_switch_height=8))
    assert c.run(ALICE, "validator_create", create_body(CK_A, 300)).ok
    c.advance_to(5)  # epoch: authorities + staked
    assert c.valset(7) == {G1.public_key: 10, G2.public_key: 30, CK_A.public_key: 30}
    # ALICE leaves the running (self-bond below minimum) before the switch: nobody to switch to
    out = c.block([c.tx(ALICE, "undelegate", sv.undelegate_body(ALICE.public_key, 300))])  # height 6
    assert out.results[0].ok
    assert [f["height"] for e, f in out.events if e == "hybrid_switch_deferred"] == [8]
    # the authorities stay (ALICE, no longer eligible, leaves): never an empty set
    assert out.valset_update == (8, sorted([(G1.public_key, 10), (G2.public_key, 30)]))
    c.advance_to(12)
    assert c.valset(12) == {G1.public_key: 10, G2.public_key: 30}
    # a staked validator appears later: the next epoch completes the switch
    assert c.run(BOB, "validator_create", create_body(CK_B, 200)).ok  # height 13
    c.advance_to(15)
    assert c.valset(17) == {CK_B.public_key: 20}
    c.check_invariants()


def test_poa_ignores_staking() -> None:
    c = Chain("poa")
    g1 = G1.public_key
    s0 = c.supply()
    r = c.run(ALICE, "delegate", sv.delegate_body(g1, 10), proposer=g1)
    assert not r.ok and r.reason == "staking_disabled"
    assert c.balance(G1) == 100_000 + 10  # the fee went to the proposer, nothing minted
    assert c.supply() == s0
    out = c.block(evidence=[evidence(G2, 1)])
    assert [e for e, _ in out.events] == ["evidence"]
    assert c.supply() == s0 and load_totals(c.state.get_object).bonded == 0
    with pytest.raises(HookError, match="already handled"):
        execute_block(c.state, c.env(c.height + 1, g1, evidence=[evidence(G2, 1)]), [])
    with pytest.raises(HookError, match="not a validator"):
        execute_block(c.state, c.env(c.height + 1, g1, evidence=[evidence(ALICE, 1)]), [])
    assert not any(k.startswith((b"stk/v/", b"stk/totals", b"stk/sets")) for k in c.state.objects)


# read side ------------------------------------------------------------------------------------------


def test_views_supply_params_metrics() -> None:
    c = Chain()
    assert c.run(BOB, "delegate", sv.delegate_body(G1.public_key, 100)).ok
    assert c.run(BOB, "undelegate", sv.undelegate_body(G1.public_key, 40)).ok
    sup = sv.supply_view(c.state.get_object)
    t = load_totals(c.state.get_object)
    assert int(sup["total"]) == c.supply()
    assert int(sup["circulating"]) == sum(a.balance for a in c.state.accounts.values())
    assert (sup["bonded"], sup["unbonding"]) == (str(t.bonded), "40")
    vals = sv.get_validators(c.state.get_object, params=SP, height=c.height)
    assert [v["address"] for v in vals] == [sv.encode_address(G2.public_key), sv.encode_address(G1.public_key)]
    assert all(v["status"] == "active" for v in vals)
    m = sv.metrics_view(c.state.get_object, params=SP, height=c.height)
    assert m["active_validators"] == 2 and m["jailed"] == 0 and len(m["missed_blocks"]) == 2
    assert sv.params_view(SP)["min_self_bond"] == "100"
    assert sv.active_set(c.state.get_object, height=c.height)[0]["power"] in (10, 30)


# property test --------------------------------------------------------------------------------------

ACTORS = [ALICE, BOB, CAROL, G1]
KEYS_BY_PK = {k.public_key: k for k in (ALICE, BOB, CAROL, G1, G2)}
KINDS = ["create", "delegate", "delegate", "delegate", "undelegate", "undelegate", "redelegate", "redelegate",
         "withdraw", "unjail", "unjail", "evidence", "block", "block", "block"]
OPS = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(0, 255), st.integers(0, 255), st.integers(1, 600)),
    min_size=5,
    max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_random_staking_sequences_conserve_supply_and_complete_unbonding_on_time(ops) -> None:
    c = Chain(params=replace(SP, epoch_blocks=3, signed_blocks_window=3, jail_blocks=2, unbonding_blocks=4))
    cks = [key(f"ck{i}") for i in range(3)]
    used_evidence: set[bytes] = set()
    pending: list[Transaction] = []

    def operators() -> list[bytes]:
        return cbor2.loads(c.state.objects[b"stk/index"])

    def flush(signer_bits: int = 255, proposer_idx: int = 0, ev: list[bytes] | None = None) -> None:
        nonlocal pending
        h = c.height + 1
        prev = sorted(c.valset(h - 1)) if h > 1 else []
        signers = {pk for i, pk in enumerate(prev) if signer_bits >> i & 1}
        cur = sorted(c.valset(h))
        supply_before = c.supply()
        ubs_before = {k: Unbonding.decode(v) for k, v in c.state.objects.items() if k.startswith(P_UNBONDING)}
        out = c.block(pending, signers=signers, proposer=cur[proposer_idx % len(cur)], evidence=ev or [])
        pending = []
        burned = sum(int(f["amount"]) for e, f in out.events if e == "slash")
        # minted rewards are added to the supply, slashes burned from it; nothing else changes it
        assert c.supply() == supply_before + SP.block_reward - burned
        # unbonding entries complete exactly at completes_at (= start + unbonding_blocks), and only then
        ubs_after = {k for k in c.state.objects if k.startswith(P_UNBONDING)}
        for k, u in ubs_before.items():
            assert u.completes_at == u.created + 4
            assert (k not in ubs_after) == (u.completes_at == h)
        c.check_invariants()

    for op, a, b, amount in ops:
        ops_ = operators()
        if op == "block":
            flush(255 if a < 128 else a, b)  # often everyone signs; otherwise a random subset
            continue
        if op == "evidence" and b % 3 == 0:
            flush(a)
            continue
        if op == "evidence":
            h_ev = max(1, c.height - b % 4)
            vals = sorted(c.valset(h_ev))
            target = vals[a % len(vals)]
            k = next(x for x in [G1, G2, *cks] if x.public_key == target)
            raw = evidence(k, h_ev, round_=b % 4)
            if raw not in used_evidence:
                used_evidence.add(raw)
                flush(ev=[raw])
            continue
        sender = ACTORS[a % 4]
        if op == "create":
            i = a % 3
            pending.append(c.tx([ALICE, BOB, CAROL][i], "validator_create", create_body(cks[i], 50 + amount, b * 25)))
        elif op == "delegate":
            pending.append(c.tx(sender, op, {"validator": ops_[b % len(ops_)], "amount": amount}))
        elif op in ("undelegate", "redelegate"):
            # mostly an existing delegation, for part or all of its worth (or a bit more)
            dels = [(k[6:38], k[38:]) for k in c.state.objects if k.startswith(P_DELEGATION)]
            if not dels:
                continue
            dk, src = dels[a % len(dels)]
            d_key = next(x for x in KEYS_BY_PK.values() if x.public_key == dk)
            worth = sum(int(x["amount"]) for x in sv.get_delegations(
                c.state.get_object, c.state.scan, delegator=dk, validator=src))
            amt = max(1, min(amount, worth + 2) if b % 3 else worth)
            if op == "undelegate":
                pending.append(c.tx(d_key, op, {"validator": src, "amount": amt}))
            else:
                dst = ops_[(b + 1) % len(ops_)]
                if dst != src:
                    pending.append(c.tx(d_key, op, sv.redelegate_body(src, dst, amt)))
        elif op == "withdraw":
            body = {} if b % 2 else {"validator": ops_[b % len(ops_)]}
            pending.append(c.tx(sender, "withdraw_rewards", body))
        elif op == "unjail":
            vs = [c.validator(x) for x in ops_]
            jailed = [v.operator for v in vs if v.jailed and not v.tombstoned] or [v.operator for v in vs if v.jailed]
            jailed = jailed or ops_
            pending.append(c.tx(KEYS_BY_PK[jailed[a % len(jailed)]], "unjail", {}))
        if len(pending) >= 3:
            flush()
    flush()
    for _ in range(5):  # let pending entries complete
        flush()


# the real chain (LevelDB) ---------------------------------------------------------------------------


def test_chain_state_includes_evidence_once_and_records_valsets(tmp_path) -> None:
    from consensus.validators import Validator as BftValidator
    from consensus.validators import ValidatorSet
    from state.chain import ChainState
    from state.errors import BlockError
    from state.store import P_OBJECT, Store
    from state.types import PRECOMMIT, Block, Commit, CommitSig, merkle_root

    vals = (G1, G2)
    genesis = Genesis(CHAIN, 0, "pos", ChainParams(min_fee=1, staking=SP), ((ALICE.public_key, 10**6),),
                      tuple(GenesisValidator(k.public_key, p) for k, p in zip(vals, (10, 30), strict=True)))
    store = Store(tmp_path / "db")
    chain = ChainState(store, genesis)
    vs = ValidatorSet([BftValidator(k.public_key, p) for k, p in zip(vals, (10, 30), strict=True)])

    def scan(prefix: bytes):
        with store.db.iterator(prefix=P_OBJECT + prefix) as it:
            for k, v in it:
                yield k[1:], v

    def commit_block(txs=(), evidence=()):
        last = chain.commit_at(chain.head.height) if chain.head.height else None
        pending = chain.build_block(list(txs), proposer=G1.public_key, time_ms=1000 * (chain.head.height + 1),
                                    last_commit=last, validators_hash=vs.hash, next_validators_hash=vs.hash,
                                    evidence=list(evidence))
        b = pending.block
        sigs = tuple(CommitSig(k.public_key, Vote.create(k, CHAIN, b.height, 0, PRECOMMIT, b.hash).sig) for k in vals)
        chain.commit(pending, Commit(b.height, 0, b.hash, sigs))
        return pending

    commit_block([Transaction.create(ALICE, CHAIN, "validator_create", 0, 1, create_body(CK_A, 500))])
    p2 = commit_block(evidence=[evidence(G2, 1)])
    assert len(p2.block.evidence) == 1 and p2.outcome.valset_update == (4, [(G1.public_key, 10)])
    assert chain.validator_sets()[-1] == (4, [(G1.public_key, 10)])
    p3 = commit_block(evidence=[evidence(G2, 1)])  # already handled: left out, the block stays valid
    assert p3.block.evidence == ()
    # a proposer that includes it anyway produces an invalid block
    blk = chain.build_block([], proposer=G1.public_key, time_ms=10_000, last_commit=chain.commit_at(3),
                            validators_hash=vs.hash, next_validators_hash=vs.hash).block
    ev = (evidence(G2, 1),)
    forged = Block(replace(blk.header, evidence_hash=merkle_root(list(ev))), blk.txs, blk.last_commit, ev)
    with pytest.raises(BlockError, match="already handled"):
        chain.validate_block(forged)
    for _ in range(SP.epoch_blocks):
        commit_block()
    assert chain.validator_sets()[-1] == (7, sorted([(G1.public_key, 10), (CK_A.public_key, 50)]))
    views = sv.get_delegations(chain.get_object, scan, validator=ALICE.public_key)
    assert [d["amount"] for d in views] == ["500"]
    sup = sv.supply_view(chain.get_object)
    assert int(sup["total"]) == chain.supply()
    store.close()
