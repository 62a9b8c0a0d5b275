"""The pure BFT pieces: Proposal/DuplicateVote encodings, proposer schedule, vote bookkeeping and the
upon-rules of BftCore (locking, timeouts, round skips, weighted quorums), the WAL file format, and a
hypothesis safety check over random delivery orders, drops and a byzantine validator."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.bft import (
    NIL,
    TIMEOUT_PRECOMMIT,
    TIMEOUT_PREVOTE,
    TIMEOUT_PROPOSE,
    Action,
    BftCore,
    Broadcast,
    Decide,
    EvidenceFound,
    MessageRejected,
    MissingBlock,
    Proposal,
    ProposalRejected,
    RequestBlock,
    ScheduleTimeout,
    Step,
    Timeouts,
    VoteRejected,
)
from consensus.engine import proposal_sign_bytes as engine_proposal_sign_bytes
from consensus.evidence import DuplicateVote, EvidenceError
from consensus.schedule import ProposerSchedule
from consensus.signstate import DoubleSignError, SignState
from consensus.transport import decode_message, encode_message
from consensus.validators import Validator, ValidatorSet
from consensus.wal import WAL
from state import codec
from state.codec import sha256
from state.crypto import KIND_PROPOSAL, SigningKey
from state.errors import DecodeError, FatalWriteError
from state.types import EMPTY_HASH, PRECOMMIT, PREVOTE, Block, BlockHeader, Vote

CHAIN = "bft-core-test"
KEYS = [SigningKey.from_seed(bytes([0x20 + i]) * 32) for i in range(4)]
OUTSIDER = SigningKey.from_seed(b"\x77" * 32)
TIMEOUTS = Timeouts(propose_ms=300, vote_ms=100, delta_ms=50)


def valset(powers=(1, 1, 1, 1)) -> ValidatorSet:
    return ValidatorSet([Validator(k.public_key, p, f"v{i}") for i, (k, p) in enumerate(zip(KEYS, powers, strict=False))])


def fake_block(height: int, tag: str, proposer: bytes) -> Block:
    """A structurally valid block (the core never executes blocks; validity is an input)."""
    header = BlockHeader(
        chain_id=CHAIN,
        height=height,
        time=1_000 + height,
        prev_hash=EMPTY_HASH,
        tx_root=EMPTY_HASH,
        state_root=sha256(tag.encode()),
        results_hash=EMPTY_HASH,
        proposer=proposer,
        validators_hash=EMPTY_HASH,
        next_validators_hash=EMPTY_HASH,
        last_commit_hash=EMPTY_HASH,
        evidence_hash=EMPTY_HASH,
    )
    return Block(header, (), None, ())


def key_of(pk: bytes) -> SigningKey:
    return next(k for k in KEYS if k.public_key == pk)


class GuardedSigner:
    """An in-memory SignState: signs, and records any attempt to sign two different things for one
    (height, round, step) — which an honest core must never do."""

    def __init__(self, key: SigningKey) -> None:
        self.key = key
        self.signed: dict[tuple[int, int, int], bytes] = {}
        self.conflicts = 0

    def __call__(self, kind: str, h: int, r: int, step: int, sb: bytes) -> bytes:
        prev = self.signed.setdefault((h, r, step), sb)
        if prev != sb:
            self.conflicts += 1
            raise DoubleSignError("conflict")
        return self.key.sign(kind, CHAIN, sb)


def make_core(i: int, powers=(1, 1, 1, 1), height: int = 1, signer=None) -> tuple[BftCore, list[Action]]:
    vs = valset(powers)
    sched = ProposerSchedule(vs)
    key = KEYS[i]
    core = BftCore(CHAIN, TIMEOUTS, signer=signer or GuardedSigner(key), pubkey=key.public_key)
    actions = core.start_height(height, vs, lambda r: sched.proposer(height, r).public_key)
    return core, actions


def of(actions: list[Action], kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def votes_sent(actions: list[Action]) -> list[Vote]:
    return [a.msg for a in actions if isinstance(a, Broadcast) and isinstance(a.msg, Vote)]


def vote(i: int, r: int, t: int, bh: bytes, h: int = 1) -> Vote:
    return Vote.create(KEYS[i], CHAIN, h, r, t, bh)


def others(i: int) -> list[int]:
    return [j for j in range(4) if j != i]


# --------------------------------------------------------------------------------------------------
# Encodings


def test_proposal_roundtrip_and_strict_decode() -> None:
    b = fake_block(5, "x", KEYS[0].public_key)
    p = Proposal.create(KEYS[0], CHAIN, 5, 2, 1, b)
    raw = p.encode()
    q = Proposal.decode(raw)
    assert q == p and q.block.hash == b.hash and q.encode() == raw and q.verify(CHAIN)
    assert not q.verify("other-chain")
    # the sign bytes are the engine's (single definition)
    assert p.sign_bytes() == engine_proposal_sign_bytes(5, 2, 1, b.hash)
    obj = p.to_obj()
    for bad, why in [
        ({**obj, "pol_round": 2}, "pol_round"),
        ({**obj, "pol_round": -2}, "pol_round"),
        ({**obj, "height": 6}, "height"),
        ({**obj, "sig": b"x" * 63}, "sig"),
        ({**obj, "extra": 1}, "exactly"),
        ({k: v for k, v in obj.items() if k != "block"}, "exactly"),
        ({**obj, "block": b"\xa0"}, "block"),
    ]:
        with pytest.raises(DecodeError, match=why):
            Proposal.decode(codec.encode(bad))
    with pytest.raises(DecodeError):
        Proposal.decode(raw + b"\x00")
    with pytest.raises(DecodeError, match="too large"):
        Proposal.decode(raw, max_bytes=len(raw) - 1)
    k, data = encode_message(p)
    assert decode_message(k, data) == p


def test_vote_encoding_helpers() -> None:
    v = vote(1, 3, PRECOMMIT, sha256(b"b"))
    assert Vote.decode(v.encode()) == v
    k, data = encode_message(v)
    assert k == "vote" and decode_message(k, data) == v
    with pytest.raises(DecodeError):
        Vote.decode(v.encode() + b"\x00")


def test_duplicate_vote_canonical_verify_and_strict() -> None:
    a = vote(2, 1, PREVOTE, sha256(b"A"))
    b = vote(2, 1, PREVOTE, NIL)
    ev1 = DuplicateVote.from_votes(a, b)
    ev2 = DuplicateVote.from_votes(b, a)
    assert ev1 == ev2 and ev1.encode() == ev2.encode() and ev1.hash() == ev2.hash()
    assert ev1.vote_a.block_hash == NIL and ev1.validator == KEYS[2].public_key and ev1.height == 1
    assert DuplicateVote.decode(ev1.encode()) == ev1
    ev1.verify(CHAIN, valset())
    with pytest.raises(EvidenceError, match="signature"):
        ev1.verify("other-chain", valset())
    with pytest.raises(EvidenceError, match="not in the set"):
        DuplicateVote.from_votes(
            Vote.create(OUTSIDER, CHAIN, 1, 0, PREVOTE, NIL), Vote.create(OUTSIDER, CHAIN, 1, 0, PREVOTE, b"\x01" * 32)
        ).verify(CHAIN, valset())
    forged = Vote(a.height, a.round, a.type, sha256(b"C"), a.validator, a.sig)
    with pytest.raises(EvidenceError, match="signature"):
        DuplicateVote.from_votes(a, forged).verify(CHAIN, valset())
    with pytest.raises(EvidenceError):
        DuplicateVote.from_votes(a, a)  # same hash: not conflicting
    with pytest.raises(EvidenceError):
        DuplicateVote.from_votes(a, vote(2, 2, PREVOTE, NIL))  # other round
    with pytest.raises(EvidenceError):
        DuplicateVote.from_votes(a, vote(3, 1, PREVOTE, NIL))  # other validator
    with pytest.raises(DecodeError):  # wrong order on the wire
        DuplicateVote.decode(codec.encode({"vote_a": a.to_obj(), "vote_b": b.to_obj()}))
    k, data = encode_message(ev1)
    assert k == "evidence" and decode_message(k, data) == ev1


# --------------------------------------------------------------------------------------------------
# Proposer schedule


def naive_proposer(vs: ValidatorSet, h: int, r: int) -> bytes:
    s = vs.copy()
    for _ in range(h - 1):
        s.advance()
    return s.proposer(r).public_key


def test_schedule_matches_definition_and_weights() -> None:
    for powers in [(1, 1, 1, 1), (1, 1, 1, 3), (5, 2, 9, 1)]:
        vs = valset(powers)
        sched = ProposerSchedule(vs)
        for h in range(1, 40):
            for r in (0, 1, 3):
                assert sched.proposer(h, r).public_key == naive_proposer(vs, h, r), (powers, h, r)
        # an earlier height after later ones is recomputed correctly; the genesis set is untouched
        assert sched.proposer(2, 0).public_key == naive_proposer(vs, 2, 0)
        assert vs.priorities == [0] * len(vs)
    sched = ProposerSchedule(valset((1, 1, 1, 3)))
    counts: dict[bytes, int] = {}
    for h in range(1, 601):
        pk = sched.proposer(h).public_key
        counts[pk] = counts.get(pk, 0) + 1
    assert counts[KEYS[3].public_key] == 300 and all(counts[k.public_key] == 100 for k in KEYS[:3])
    # equal powers: strict rotation, round r of height h is the next ones in the rotation
    sched = ProposerSchedule(valset())
    first4 = [sched.proposer(h).public_key for h in range(1, 5)]
    assert len(set(first4)) == 4
    assert [sched.proposer(1, r).public_key for r in range(4)] == first4


def test_schedule_epoch_hook() -> None:
    vs = valset()
    sched = ProposerSchedule(vs)
    before = [sched.proposer(h).public_key for h in range(1, 20)]
    new = ValidatorSet([Validator(KEYS[0].public_key, 1), Validator(OUTSIDER.public_key, 2)])
    sched.set_validators(10, new)
    assert [sched.proposer(h).public_key for h in range(1, 10)] == before[:9]
    assert sched.validators(9) is not sched.validators(10) and sched.validators(10).hash == new.hash
    for h in range(10, 30):
        s = new.copy()
        for _ in range(h - 10):
            s.advance()
        assert sched.proposer(h, 1).public_key == s.proposer(1).public_key
    assert sched.validators(5).hash == vs.hash and [e[0] for e in sched.epochs()] == [1, 10]


# --------------------------------------------------------------------------------------------------
# Core: rejections and bookkeeping


def test_vote_rejections_duplicates_and_evidence() -> None:
    core, _ = make_core(0)
    bh = sha256(b"A")
    with pytest.raises(VoteRejected) as e:
        core.on_vote(Vote.create(OUTSIDER, CHAIN, 1, 0, PREVOTE, bh))
    assert e.value.reason == "unknown_validator"
    good = vote(1, 0, PREVOTE, bh)
    with pytest.raises(VoteRejected) as e:
        core.on_vote(Vote(1, 0, PREVOTE, bh, KEYS[1].public_key, good.sig[:-1] + bytes([good.sig[-1] ^ 1])))
    assert e.value.reason == "bad_signature"
    with pytest.raises(VoteRejected) as e:
        core.on_vote(vote(1, 0, PREVOTE, bh, h=2))
    assert e.value.reason == "wrong_height"
    with pytest.raises(VoteRejected) as e:  # signed for another chain
        core.on_vote(Vote.create(KEYS[1], "other", 1, 0, PREVOTE, bh))
    assert e.value.reason == "bad_signature"
    core.on_vote(good)
    assert core.has_vote(good) and core.on_vote(good) == []
    acts = core.on_vote(vote(1, 0, PREVOTE, NIL))
    [ev] = of(acts, EvidenceFound)
    assert ev.evidence == DuplicateVote.from_votes(good, vote(1, 0, PREVOTE, NIL))
    assert core.on_vote(vote(1, 0, PREVOTE, NIL)) == []  # reported once
    # an equivocator's votes count per value (nil, known blocks, values backed by > 1/3), but only once
    # towards "2/3+ of any votes"
    pv = core.vote_set(0, PREVOTE)
    assert pv.power_for(bh) == 1 and pv.power_for(NIL) == 1 and pv.total == 1 and len(pv) == 1
    acts = core.on_vote(vote(1, 0, PREVOTE, sha256(b"C")))
    assert len(of(acts, EvidenceFound)) == 1 and pv.power_for(sha256(b"C")) == 0
    # future rounds: at most 2 distinct rounds ahead per validator
    core.on_vote(vote(2, 5, PREVOTE, NIL))
    core.on_vote(vote(2, 6, PREVOTE, NIL))
    core.on_vote(vote(2, 6, PRECOMMIT, NIL))
    with pytest.raises(VoteRejected) as e:
        core.on_vote(vote(2, 7, PREVOTE, NIL))
    assert e.value.reason == "round_too_far"
    not_started = BftCore(CHAIN, TIMEOUTS)
    with pytest.raises(VoteRejected):
        not_started.on_vote(good)


def test_proposal_rejections() -> None:
    vs = valset()
    sched = ProposerSchedule(vs)
    proposer = sched.proposer(1, 0).public_key
    i = next(j for j in range(4) if KEYS[j].public_key != proposer)
    core, _ = make_core(i)
    b = fake_block(1, "A", proposer)
    wrong = next(k for k in KEYS if k.public_key != proposer)
    for p, reason in [
        (Proposal.create(wrong, CHAIN, 1, 0, -1, b), "not_proposer"),
        (Proposal.create(key_of(proposer), "other", 1, 0, -1, b), "bad_signature"),
        (Proposal.create(key_of(proposer), CHAIN, 2, 0, -1, fake_block(2, "A", proposer)), "wrong_height"),
        (Proposal(1, 0, 0, b, proposer, b"\x00" * 64), "bad_pol_round"),
        (Proposal.create(key_of(sched.proposer(1, 5).public_key), CHAIN, 1, 5, -1, b), "round_too_far"),
    ]:
        with pytest.raises(ProposalRejected) as e:
            core.on_proposal(p, True)
        assert e.value.reason == reason
        assert isinstance(e.value, MessageRejected)


# --------------------------------------------------------------------------------------------------
# Core: rules


class Harness:
    """Cores of the validators in ``live`` exchanging messages synchronously (FIFO), with optional
    filters. Timeouts are collected, fired on demand."""

    def __init__(self, powers=(1, 1, 1, 1), live=(0, 1, 2, 3), height: int = 1) -> None:
        self.vs = valset(powers)
        self.sched = ProposerSchedule(self.vs)
        self.height = height
        self.cores: dict[int, BftCore] = {}
        self.queue: list[tuple[int, object]] = []
        self.timeouts: dict[int, list[ScheduleTimeout]] = {i: [] for i in live}
        self.decisions: dict[int, Decide] = {}
        self.drop: Callable[[int, int, object], bool] = lambda src, dst, m: False
        self.blocks: dict[tuple[int, int], Block] = {}
        for i in live:
            self.cores[i] = BftCore(CHAIN, TIMEOUTS, signer=GuardedSigner(KEYS[i]), pubkey=KEYS[i].public_key)
        for i in live:
            self.handle(i, self.cores[i].start_height(height, self.vs, self.proposer_of))

    def proposer_of(self, r: int) -> bytes:
        return self.sched.proposer(self.height, r).public_key

    def handle(self, i: int, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Broadcast):
                for j in self.cores:
                    if j != i and not self.drop(i, j, a.msg):
                        self.queue.append((j, a.msg))
            elif isinstance(a, ScheduleTimeout):
                self.timeouts[i].append(a)
            elif isinstance(a, RequestBlock):
                b = self.blocks.setdefault((i, a.round), fake_block(a.height, f"n{i}r{a.round}", KEYS[i].public_key))
                self.handle(i, self.cores[i].on_own_block(b))
            elif isinstance(a, Decide):
                assert i not in self.decisions
                self.decisions[i] = a

    def deliver(self, j: int, m: object, valid: bool = True) -> None:
        core = self.cores[j]
        try:
            acts = core.on_proposal(m, valid) if isinstance(m, Proposal) else core.on_vote(m)
        except MessageRejected:
            return
        self.handle(j, acts)

    def run(self) -> None:
        while self.queue:
            j, m = self.queue.pop(0)
            self.deliver(j, m)

    def fire(self, i: int, kind: str) -> None:
        c = self.cores[i]
        self.handle(i, c.on_timeout(kind, c.height, c.round))


def test_four_validators_decide_in_round_zero_with_a_verifiable_commit() -> None:
    hn = Harness()
    hn.run()
    assert len(hn.decisions) == 4
    hashes = {d.block.hash for d in hn.decisions.values()}
    assert len(hashes) == 1
    for d in hn.decisions.values():
        assert d.commit.round == 0 and d.commit.height == 1
        assert hn.vs.verify_commit(CHAIN, d.commit, d.block.hash, 1) >= hn.vs.quorum()
        assert [s.validator for s in d.commit.signatures] == sorted(s.validator for s in d.commit.signatures)
    assert d.block.header.proposer == hn.sched.proposer(1, 0).public_key
    for c in hn.cores.values():
        assert c.step == Step.DECIDED and c.decision_messages()


def test_timeouts_grow_per_round_and_dead_proposer_moves_to_next_round() -> None:
    vs = valset()
    sched = ProposerSchedule(vs)
    dead = next(i for i in range(4) if KEYS[i].public_key == sched.proposer(1, 0).public_key)
    live = tuple(i for i in range(4) if i != dead)
    hn = Harness(live=live)
    for i in live:
        [t] = hn.timeouts[i]
        assert (t.kind, t.round, t.ms) == (TIMEOUT_PROPOSE, 0, 300)
        hn.fire(i, TIMEOUT_PROPOSE)
    hn.run()
    # 3 nil prevotes: everyone precommits nil right away (rule 44), then 2/3+ precommits -> timeout
    for i in live:
        c = hn.cores[i]
        assert c.step == Step.PRECOMMIT and c.vote_set(0, PRECOMMIT).power_for(NIL) == 3
        kinds = [(t.kind, t.ms) for t in hn.timeouts[i]]
        assert (TIMEOUT_PRECOMMIT, 100) in kinds
        hn.fire(i, TIMEOUT_PRECOMMIT)
        assert c.round == 1
        assert hn.timeouts[i][-1] == ScheduleTimeout(TIMEOUT_PROPOSE, 1, 1, 350)
        # a stale timeout does nothing
        assert c.on_timeout(TIMEOUT_PREVOTE, 1, 0) == []
    hn.run()
    assert len(hn.decisions) == 3
    d = next(iter(hn.decisions.values()))
    assert d.commit.round == 1 and d.block.header.proposer == sched.proposer(1, 1).public_key


def test_prevote_timeout_when_votes_split() -> None:
    hn = Harness()
    proposer = hn.sched.proposer(1, 0).public_key
    target = next(i for i in range(4) if KEYS[i].public_key != proposer)
    c = hn.cores[target]
    hn.queue.clear()
    # two prevotes for A, one nil (+ this core's own) -> 2/3+ of any kind, no polka, no nil quorum
    a = fake_block(1, "A", proposer)
    p = Proposal.create(key_of(proposer), CHAIN, 1, 0, -1, a)
    hn.handle(target, c.on_proposal(p, False))  # invalid block -> prevote nil
    assert votes_sent_from(hn, target) == [(PREVOTE, NIL)]
    others_ = [j for j in range(4) if j != target]
    hn.handle(target, c.on_vote(vote(others_[0], 0, PREVOTE, a.hash)))
    hn.handle(target, c.on_vote(vote(others_[1], 0, PREVOTE, a.hash)))
    assert any(t.kind == TIMEOUT_PREVOTE for t in hn.timeouts[target])
    assert c.step == Step.PREVOTE
    hn.fire(target, TIMEOUT_PREVOTE)
    assert c.step == Step.PRECOMMIT and c.vote_set(0, PRECOMMIT).get(KEYS[target].public_key).block_hash == NIL


def votes_sent_from(hn: Harness, i: int) -> list[tuple[int, bytes]]:
    pk = KEYS[i].public_key
    out = []
    for (_, m) in hn.queue:
        if isinstance(m, Vote) and m.validator == pk and (m.type, m.block_hash) not in out:
            out.append((m.type, m.block_hash))
    return out


def _locked_core() -> tuple[BftCore, int, ProposerSchedule, Block]:
    """A core (not the proposer of rounds 0-2) locked on block A in round 0, now in round 1."""
    vs = valset()
    sched = ProposerSchedule(vs)
    props = {sched.proposer(1, r).public_key for r in range(3)}
    i = next(j for j in range(4) if KEYS[j].public_key not in props)
    core, _ = make_core(i)
    p0 = sched.proposer(1, 0).public_key
    a = fake_block(1, "A", p0)
    acts = core.on_proposal(Proposal.create(key_of(p0), CHAIN, 1, 0, -1, a), True)
    assert [(v.type, v.block_hash) for v in votes_sent(acts)] == [(PREVOTE, a.hash)]
    o = others(i)
    core.on_vote(vote(o[0], 0, PREVOTE, a.hash))
    acts = core.on_vote(vote(o[1], 0, PREVOTE, a.hash))
    assert [(v.type, v.block_hash) for v in votes_sent(acts)] == [(PRECOMMIT, a.hash)]
    assert core.locked_round == 0 and core.locked_value == a and core.valid_round == 0
    core.on_vote(vote(o[0], 0, PRECOMMIT, NIL))
    acts = core.on_vote(vote(o[1], 0, PRECOMMIT, NIL))
    assert of(acts, ScheduleTimeout)[0].kind == TIMEOUT_PRECOMMIT
    core.on_timeout(TIMEOUT_PRECOMMIT, 1, 0)
    assert core.round == 1 and core.step == Step.PROPOSE and core.locked_round == 0
    return core, i, sched, a


def test_locked_validator_prevotes_nil_for_another_value_without_newer_pol() -> None:
    core, _, sched, _a = _locked_core()
    p1 = sched.proposer(1, 1).public_key
    b = fake_block(1, "B", p1)
    acts = core.on_proposal(Proposal.create(key_of(p1), CHAIN, 1, 1, -1, b), True)
    assert [(v.type, v.block_hash) for v in votes_sent(acts)] == [(PREVOTE, NIL)]
    assert core.locked_value.hash == _a.hash


def test_locked_validator_prevotes_its_locked_value_again() -> None:
    core, _, sched, a = _locked_core()
    p1 = sched.proposer(1, 1).public_key
    acts = core.on_proposal(Proposal.create(key_of(p1), CHAIN, 1, 1, 0, a), True)
    assert [(v.type, v.block_hash) for v in votes_sent(acts)] == [(PREVOTE, a.hash)]


def test_locked_validator_follows_a_newer_pol_but_not_a_missing_one() -> None:
    core, i, sched, a = _locked_core()
    o = others(i)
    p1 = sched.proposer(1, 1).public_key
    b = fake_block(1, "B", p1)
    # round 1: three others prevote B but this node never sees the round-1 proposal
    for j in o:
        core.on_vote(vote(j, 1, PREVOTE, b.hash))
    acts = core.on_timeout(TIMEOUT_PROPOSE, 1, 1)
    assert [(v.type, v.block_hash) for v in votes_sent(acts)] == [(PREVOTE, NIL)]
    acts = core.on_timeout(TIMEOUT_PREVOTE, 1, 1)
    assert [(v.type, v.block_hash) for v in votes_sent(acts)] == [(PRECOMMIT, NIL)]
    assert core.locked_round == 0  # no proposal seen: the polka cannot move the lock
    for j in o[:2]:
        core.on_vote(vote(j, 1, PRECOMMIT, NIL))
    core.on_timeout(TIMEOUT_PRECOMMIT, 1, 1)
    assert core.round == 2
    p2 = sched.proposer(1, 2).public_key
    # a re-proposal of B justified by the round-1 POL (newer than the lock) is prevoted
    acts = core.on_proposal(Proposal.create(key_of(p2), CHAIN, 1, 2, 1, b), True)
    assert [(v.type, v.block_hash) for v in votes_sent(acts)] == [(PREVOTE, b.hash)]


def test_locked_validator_ignores_a_pol_older_than_its_lock() -> None:
    vs = valset()
    sched = ProposerSchedule(vs)
    props = [sched.proposer(1, r).public_key for r in range(3)]
    i = next(j for j in range(4) if KEYS[j].public_key not in props)
    o = others(i)
    core, _ = make_core(i)
    y = fake_block(1, "Y", props[0])
    x = fake_block(1, "X", props[1])
    # round 0: a polka for Y this node only learns about from votes; it prevotes and precommits nil
    for j in o:
        core.on_vote(vote(j, 0, PREVOTE, y.hash))
    core.on_timeout(TIMEOUT_PROPOSE, 1, 0)
    core.on_timeout(TIMEOUT_PREVOTE, 1, 0)
    for j in o[:2]:
        core.on_vote(vote(j, 0, PRECOMMIT, NIL))
    core.on_timeout(TIMEOUT_PRECOMMIT, 1, 0)
    # round 1: X is proposed and gets a polka: this node locks on X in round 1
    core.on_proposal(Proposal.create(key_of(props[1]), CHAIN, 1, 1, -1, x), True)
    for j in o[:2]:
        core.on_vote(vote(j, 1, PREVOTE, x.hash))
    assert core.locked_round == 1 and core.locked_value.hash == x.hash
    for j in o[:2]:
        core.on_vote(vote(j, 1, PRECOMMIT, NIL))
    core.on_timeout(TIMEOUT_PRECOMMIT, 1, 1)
    assert core.round == 2
    # round 2: Y again, justified by the round-0 POL, which is older than the lock: nil
    acts = core.on_proposal(Proposal.create(key_of(props[2]), CHAIN, 1, 2, 0, y), True)
    assert [(v.type, v.block_hash) for v in votes_sent(acts)] == [(PREVOTE, NIL)]


def test_pol_round_without_the_pol_waits_then_prevotes_nil() -> None:
    core, _, sched, _a = _locked_core()
    p1 = sched.proposer(1, 1).public_key
    b = fake_block(1, "B", p1)
    # a round-1 proposal claiming a POL in round 0 for B: round 0 prevotes were for A
    acts = core.on_proposal(Proposal.create(key_of(p1), CHAIN, 1, 1, 0, b), True)
    assert votes_sent(acts) == [] and core.step == Step.PROPOSE
    acts = core.on_timeout(TIMEOUT_PROPOSE, 1, 1)
    assert [(v.type, v.block_hash) for v in votes_sent(acts)] == [(PREVOTE, NIL)]


def test_round_skip_on_f_plus_one_messages_of_a_higher_round() -> None:
    core, _ = make_core(0)
    core.on_vote(vote(1, 3, PREVOTE, NIL))
    assert core.round == 0  # 1/4 of the power is not more than 1/3
    acts = core.on_vote(vote(2, 3, PRECOMMIT, NIL))
    assert core.round == 3 and core.step in (Step.PROPOSE, Step.PREVOTE)
    assert any(isinstance(a, ScheduleTimeout) and a.round == 3 and a.ms == 300 + 3 * 50 for a in acts)


def test_weighted_quorums() -> None:
    # powers 1,1,1,3: total 6, quorum 5: the big validator and two small ones; 3+1 is not enough
    powers = (1, 1, 1, 3)
    vs = valset(powers)
    assert vs.quorum() == 5
    hn = Harness(powers=powers, live=(0, 3))
    hn.run()
    assert not hn.decisions
    hn = Harness(powers=powers, live=(0, 1, 3))
    proposer = hn.sched.proposer(1, 0).public_key
    if proposer not in {KEYS[i].public_key for i in (0, 1, 3)}:
        for i in (0, 1, 3):
            hn.fire(i, TIMEOUT_PROPOSE)
    hn.run()
    for i in list(hn.cores):
        if i not in hn.decisions:
            hn.fire(i, TIMEOUT_PRECOMMIT)
    hn.run()
    assert set(hn.decisions) == {0, 1, 3}
    d = hn.decisions[0]
    assert vs.verify_commit(CHAIN, d.commit, d.block.hash, 1) >= 5
    # the three small validators alone (power 3 of 6) prevote nil but reach no quorum of any kind
    hn = Harness(powers=powers, live=(0, 1, 2))
    for i in (0, 1, 2):
        hn.fire(i, TIMEOUT_PROPOSE)
    hn.run()
    assert not hn.decisions and all(c.step == Step.PREVOTE for c in hn.cores.values())


def test_follower_without_signer_decides_and_signs_nothing() -> None:
    hn = Harness()
    vs, sched = hn.vs, hn.sched
    follower = BftCore(CHAIN, TIMEOUTS)
    acts = follower.start_height(1, vs, lambda r: sched.proposer(1, r).public_key)
    assert not of(acts, RequestBlock) and not of(acts, Broadcast)
    msgs = list(hn.queue)
    hn.run()
    delivered = set()
    for _, m in msgs:
        key = m.encode()
        if key in delivered:
            continue
        delivered.add(key)
        try:
            acts += follower.on_proposal(m, True) if isinstance(m, Proposal) else follower.on_vote(m)
        except MessageRejected:
            pass
    # the follower also needs the votes emitted later in the exchange: replay the decisions' commits
    d = next(iter(hn.decisions.values()))
    for s in d.commit.signatures:
        try:
            acts += follower.on_vote(Vote(1, d.commit.round, PRECOMMIT, d.block.hash, s.validator, s.sig))
        except MessageRejected:
            pass
    [dec] = of(acts, Decide)
    assert dec.block.hash == d.block.hash and not of(acts, Broadcast)


def test_missing_block_is_reported_then_decided_when_it_arrives() -> None:
    core, _ = make_core(0)
    sched = ProposerSchedule(valset())
    p0 = sched.proposer(1, 0).public_key
    a = fake_block(1, "A", p0)
    acts: list[Action] = []
    for j in (1, 2, 3):
        acts += core.on_vote(vote(j, 0, PRECOMMIT, a.hash))
    [mb] = of(acts, MissingBlock)
    assert (mb.height, mb.round, mb.block_hash) == (1, 0, a.hash)
    if p0 != KEYS[0].public_key:
        acts = core.on_proposal(Proposal.create(key_of(p0), CHAIN, 1, 0, -1, a), True)
    else:  # this core proposes; it is fed its own block
        acts = core.on_own_block(a)
    [d] = of(acts, Decide)
    assert d.block.hash == a.hash and len(d.commit.signatures) >= 3


def test_signer_refusal_sends_nothing_but_advances() -> None:
    def refuse(*_a) -> bytes:
        raise DoubleSignError("no")

    core, _ = make_core(0, signer=refuse)
    acts = core.on_timeout(TIMEOUT_PROPOSE, 1, 0)
    assert not of(acts, Broadcast) and core.step == Step.PREVOTE and core.sign_failures >= 1


def test_replayed_own_precommit_restores_step_and_lock() -> None:
    _, i, sched, a = _locked_core()
    p0 = sched.proposer(1, 0).public_key

    def refuse(*_a) -> bytes:
        raise DoubleSignError("already signed")

    # after a restart the sign state refuses to re-sign, but our own precommit for A comes back from
    # the WAL: step and lock are restored
    fresh2, _ = make_core(i, signer=refuse)
    fresh2.on_proposal(Proposal.create(key_of(p0), CHAIN, 1, 0, -1, a), True)
    fresh2.on_vote(vote(i, 0, PRECOMMIT, a.hash))
    assert fresh2.step == Step.PRECOMMIT and fresh2.locked_round == 0 and fresh2.locked_value.hash == a.hash


def test_signstate_signer_roundtrip(tmp_path) -> None:
    ss = SignState(tmp_path / "pv.json", KEYS[0])
    vs = valset()
    sched = ProposerSchedule(vs)
    core = BftCore(
        CHAIN, TIMEOUTS, signer=lambda k, h, r, s, sb: ss.sign(k, CHAIN, h, r, s, sb), pubkey=KEYS[0].public_key
    )
    core.start_height(1, vs, lambda r: sched.proposer(1, r).public_key)
    acts = core.on_timeout(TIMEOUT_PROPOSE, 1, 0)
    [v] = votes_sent(acts)
    assert v.verify(CHAIN) and ss.last.height == 1 and ss.last.step == 2
    # a second core on the same sign state refuses to sign something different for the same step
    core2 = BftCore(
        CHAIN, TIMEOUTS, signer=lambda k, h, r, s, sb: ss.sign(k, CHAIN, h, r, s, sb), pubkey=KEYS[0].public_key
    )
    core2.start_height(1, vs, lambda r: sched.proposer(1, r).public_key)
    p0 = sched.proposer(1, 0).public_key
    if p0 != KEYS[0].public_key:
        acts = core2.on_proposal(Proposal.create(key_of(p0), CHAIN, 1, 0, -1, fake_block(1, "A", p0)), True)
        assert votes_sent(acts) == [] and core2.sign_failures == 1
    assert KIND_PROPOSAL == "proposal"


# --------------------------------------------------------------------------------------------------
# WAL


def test_wal_replay_torn_tail_and_rotation(tmp_path) -> None:
    path = tmp_path / "cs.wal"
    b = fake_block(1, "A", KEYS[0].public_key)
    p = Proposal.create(KEYS[0], CHAIN, 1, 0, -1, b)
    v1 = vote(1, 0, PREVOTE, b.hash)
    v2 = vote(0, 0, PREVOTE, b.hash)
    with WAL(path) as w:
        w.append_proposal(p, valid=True)
        w.append_vote(v1)
        w.append_timeout(TIMEOUT_PROPOSE, 1, 0)
        w.append_vote(v2, own=True)
    w = WAL(path)
    es = w.replay()
    assert [(e.kind, e.height, e.own) for e in es] == [
        ("proposal", 1, False), ("vote", 1, False), ("timeout", 1, False), ("vote", 1, True)
    ]
    assert es[0].message == p and es[0].valid and es[1].message == v1 and es[2].timeout == TIMEOUT_PROPOSE
    w.end_height(1)
    w.append_vote(vote(1, 0, PREVOTE, NIL, h=2))
    w.close()
    # torn last record: a crash in the middle of a write
    good = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\x00\x00\x01\x00\xde\xad")
    w = WAL(path)
    es = w.replay()
    assert [(e.kind, e.height) for e in es] == [("vote", 2)] and w.last_ended_height() == 1
    assert path.stat().st_size == good  # truncated back to the last good record
    w.append_vote(vote(2, 0, PREVOTE, NIL, h=2))
    w.close()
    assert [(e.kind, e.height) for e in WAL(path).replay()] == [("vote", 2), ("vote", 2)]
    # corrupt middle record: everything from it on is ignored
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    assert [(e.kind, e.height) for e in WAL(path).replay()] == [("vote", 2)]
    # rotation keeps the file bounded
    path2 = tmp_path / "rot.wal"
    w = WAL(path2, max_bytes=4096, sync=False)
    for h in range(1, 200):
        for j in range(4):
            w.append_vote(vote(j, 0, PREVOTE, NIL, h=h), own=(j == 0))
        w.end_height(h)
        assert w.size <= 4096 + 2048
    w.close()
    w = WAL(path2)
    assert w.replay() == [] and w.last_ended_height() == 199
    assert not os.path.exists(str(path2) + ".tmp")


def test_wal_timer_and_round_records(tmp_path) -> None:
    with WAL(tmp_path / "cs.wal") as w:
        w.append_timer(TIMEOUT_PROPOSE, 3, 7, 1_700_000_123_456)
        w.append_round(3, 8)
        w.append_timeout(TIMEOUT_PROPOSE, 3, 7)
    es = WAL(tmp_path / "cs.wal").replay()
    assert [(e.kind, e.height, e.round) for e in es] == [("timer", 3, 7), ("round", 3, 8), ("timeout", 3, 7)]
    assert es[0].timeout == TIMEOUT_PROPOSE and es[0].deadline_ms == 1_700_000_123_456


class _FullDiskWAL(WAL):
    """Appends fail like a full disk once ``full`` is set (half of the record reaches the file)."""

    full = False

    def _append(self, rec: bytes, *, sync: bool) -> None:
        if self.full:
            os.write(self._fd, rec[: len(rec) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super()._append(rec, sync=sync)


def test_wal_write_failure_is_fatal_and_poisons_the_log(tmp_path) -> None:
    path = tmp_path / "cs.wal"
    w = _FullDiskWAL(path)
    w.append_vote(vote(1, 0, PREVOTE, NIL))
    w.full = True
    with pytest.raises(FatalWriteError) as ei:
        w.append_vote(vote(0, 0, PREVOTE, NIL), own=True)
    assert ei.value.reason == "wal_write" and "No space left on device" in str(ei.value)
    w.full = False
    with pytest.raises(FatalWriteError):  # nothing more goes into a log whose write failed
        w.append_vote(vote(2, 0, PREVOTE, NIL))
    w.close()
    w = WAL(path)  # the restart cuts the torn record off and appends again
    assert [e.message for e in w.replay()] == [vote(1, 0, PREVOTE, NIL)]
    w.append_vote(vote(0, 0, PREVOTE, NIL), own=True)
    w.close()
    assert [e.own for e in WAL(path).replay()] == [False, True]


def test_signstate_write_failure_is_fatal_not_a_refusal(tmp_path) -> None:
    class FullDisk(SignState):
        full = False

        def _write_file(self, data: bytes) -> None:
            if self.full:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            super()._write_file(data)

    ss = FullDisk(tmp_path / "pv.json", KEYS[0])
    ss.sign("vote", CHAIN, 1, 0, 2, b"a")
    ss.full = True
    with pytest.raises(FatalWriteError) as ei:
        ss.sign("vote", CHAIN, 1, 0, 3, b"b")
    assert ei.value.reason == "signstate_write"
    assert (ss.last.height, ss.last.round, ss.last.step) == (1, 0, 2)  # not signed, not recorded
    assert SignState(tmp_path / "pv.json", KEYS[0]).last == ss.last
    # the core lets it through: a failed write is not a refusal (no "sign_failures", no vote)
    vs = valset()
    sched = ProposerSchedule(vs)
    core = BftCore(
        CHAIN, TIMEOUTS, signer=lambda k, h, r, st_, sb: ss.sign(k, CHAIN, h, r, st_, sb), pubkey=KEYS[0].public_key
    )
    core.start_height(2, vs, lambda r: sched.proposer(2, r).public_key)
    with pytest.raises(FatalWriteError):
        core.on_timeout(TIMEOUT_PROPOSE, 2, 0)
    assert core.sign_failures == 0


def test_enter_round_moves_forward_only() -> None:
    core, _ = make_core(0)
    acts = core.enter_round(3)
    assert core.round == 3 and core.step == Step.PROPOSE
    assert [a.round for a in of(acts, ScheduleTimeout)] == [3]
    assert core.enter_round(2) == [] and core.round == 3


# --------------------------------------------------------------------------------------------------
# Hypothesis: random delivery orders, drops, timeouts and a byzantine validator never make two honest
# nodes decide different blocks; once the network behaves (all messages delivered, byzantine silent),
# every honest node decides.

_SIM_VS = valset()
_SIM_SCHED = ProposerSchedule(_SIM_VS)
_BYZ = next(i for i in range(4) if KEYS[i].public_key == _SIM_SCHED.proposer(1, 0).public_key)
_HONEST = [i for i in range(4) if i != _BYZ]
_SIM_ROUNDS = 4


def _honest_block(i: int, r: int) -> Block:
    return fake_block(1, f"honest-{i}-{r}", KEYS[i].public_key)


def _byz_pool() -> list[Proposal | Vote]:
    k = KEYS[_BYZ]
    a = fake_block(1, "byz-A", k.public_key)
    b = fake_block(1, "byz-B", k.public_key)
    values = [a.hash, b.hash, NIL] + [_honest_block(i, r).hash for i in _HONEST for r in range(_SIM_ROUNDS)]
    pool: list[Proposal | Vote] = []
    for r in range(_SIM_ROUNDS):
        if _SIM_SCHED.proposer(1, r).public_key == k.public_key:
            pool += [Proposal.create(k, CHAIN, 1, r, -1, a), Proposal.create(k, CHAIN, 1, r, -1, b)]
        for t in (PREVOTE, PRECOMMIT):
            pool += [Vote.create(k, CHAIN, 1, r, t, v) for v in values]
    return pool


_BYZ_POOL = _byz_pool()


class Sim:
    def __init__(self) -> None:
        self.cores = {i: BftCore(CHAIN, TIMEOUTS, signer=GuardedSigner(KEYS[i]), pubkey=KEYS[i].public_key) for i in _HONEST}
        self.pending: list[tuple[int, Proposal | Vote]] = []
        self.timeouts: dict[int, list[ScheduleTimeout]] = {i: [] for i in _HONEST}
        self.decisions: dict[int, Decide] = {}
        for i in _HONEST:
            self.handle(i, self.cores[i].start_height(1, _SIM_VS, lambda r: _SIM_SCHED.proposer(1, r).public_key))

    def handle(self, i: int, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Broadcast):
                self.pending += [(j, a.msg) for j in _HONEST if j != i]
            elif isinstance(a, ScheduleTimeout):
                self.timeouts[i].append(a)
            elif isinstance(a, RequestBlock):
                self.handle(i, self.cores[i].on_own_block(_honest_block(i, a.round)))
            elif isinstance(a, Decide):
                assert i not in self.decisions, "decided twice"
                assert _SIM_VS.verify_commit(CHAIN, a.commit, a.block.hash, 1) >= _SIM_VS.quorum()
                self.decisions[i] = a

    def deliver(self, j: int, m: Proposal | Vote) -> None:
        c = self.cores[j]
        try:
            acts = c.on_proposal(m, True) if isinstance(m, Proposal) else c.on_vote(m)
        except MessageRejected:
            return
        self.handle(j, acts)

    def byz_act(self, j: int, kind: int, pick: int) -> None:
        """An adaptive byzantine validator: it tells node ``j`` whatever pushes ``j`` towards deciding
        what ``j`` currently leans to (its proposal, its strongest prevoted value), so different nodes
        are pushed towards different blocks; or it equivocates proposals when it is the proposer."""
        c = self.cores[j]
        k = KEYS[_BYZ]
        r = c.round
        prop = c.proposal(r)
        if kind == 0:
            if _SIM_SCHED.proposer(1, r).public_key == k.public_key:
                blk = fake_block(1, f"byz-{pick % 3}", k.public_key)
                self.deliver(j, Proposal.create(k, CHAIN, 1, r, -1, blk))
            return
        if kind == 1:
            value = prop.block.hash if prop is not None and pick % 4 else NIL
            self.deliver(j, Vote.create(k, CHAIN, 1, r, PREVOTE, value))
            return
        pv = c.vote_set(r, PREVOTE)
        best = max(((p, h) for h, p in pv.power.items() if h != NIL), default=None) if pv else None
        value = best[1] if best is not None else (prop.block.hash if prop is not None else NIL)
        self.deliver(j, Vote.create(k, CHAIN, 1, r, PRECOMMIT, value))

    def fire(self, i: int, pick: int) -> None:
        """Expire one of node ``i``'s timeouts for its current round (older ones would be no-ops)."""
        c = self.cores[i]
        ts = [t for t in self.timeouts[i] if t.round == c.round]
        if ts:
            t = ts[pick % len(ts)]
            self.timeouts[i].remove(t)
            self.handle(i, c.on_timeout(t.kind, t.height, t.round))

    def check_safety(self) -> None:
        assert len({d.block.hash for d in self.decisions.values()}) <= 1, "honest nodes decided different blocks"
        for i, c in self.cores.items():
            assert isinstance(c.signer, GuardedSigner) and c.signer.conflicts == 0, f"node {i} tried to double-sign"

    def settle(self) -> None:
        """After GST: everything is delivered, nodes re-send (gossip), timeouts fire only when nothing
        else is left to do, the byzantine node is silent."""
        for _ in range(60):
            if len(self.decisions) == len(self.cores):
                return
            while self.pending:
                self.deliver(*self.pending.pop(0))
            for i, c in self.cores.items():
                msgs = c.decision_messages() if i in self.decisions else c.gossip_messages()
                self.pending += [(j, m) for m in msgs for j in _HONEST if j != i]
            while self.pending:
                self.deliver(*self.pending.pop(0))
            for i, c in self.cores.items():
                if i in self.decisions:
                    continue
                for kind in (TIMEOUT_PROPOSE, TIMEOUT_PREVOTE, TIMEOUT_PRECOMMIT):
                    cur = [t for t in self.timeouts[i] if t.kind == kind and (t.height, t.round) == (1, c.round)]
                    if cur:
                        self.timeouts[i].remove(cur[0])
                        self.handle(i, c.on_timeout(kind, 1, c.round))
                        break


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    ops=st.lists(
        st.tuples(st.integers(0, 99), st.integers(0, 1 << 16), st.integers(0, 1 << 16)), min_size=10, max_size=250
    )
)
def test_random_schedules_never_decide_conflicting_blocks(ops) -> None:
    sim = Sim()
    for choice, x, y in ops:
        if choice < 55 and sim.pending:
            sim.deliver(*sim.pending.pop(x % len(sim.pending)))
        elif choice < 65 and sim.pending:
            sim.pending.pop(x % len(sim.pending))  # dropped
        elif choice < 75:
            sim.fire(_HONEST[x % 3], y)
        elif choice < 85:
            sim.deliver(_HONEST[y % 3], _BYZ_POOL[x % len(_BYZ_POOL)])
        else:
            sim.byz_act(_HONEST[y % 3], x % 3, x >> 2)
        sim.check_safety()
    sim.settle()
    sim.check_safety()
    assert len(sim.decisions) == 3, "honest nodes did not all decide after the network settled"
