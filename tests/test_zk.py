"""zk/: range proofs, DLEQ, sealed openings and the sealed-bid award — real libsodium ristretto255.

Property tests: valid proofs accept; flipping any byte of a proof, changing any public input or the
context (chain, job, party) rejects with a typed reason; out-of-range values cannot be proven. Golden
digests pin the wire forms and transcripts (consensus bytes).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zk import auction, dleq, group, range_proof, seal
from zk.errors import ProofError
from zk.pedersen import Opening
from zk.transcript import Context

CTX = Context("aitbc-test", b"\x11" * 32, b"\x22" * 20)
OTHER_CONTEXTS = (
    Context("aitbc-other", CTX.scope, CTX.party),
    Context(CTX.chain_id, b"\x12" * 32, CTX.party),
    Context(CTX.chain_id, CTX.scope, b"\x23" * 20),
)
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


counter_rand = group.counter_scalars  # deterministic nonces for golden vectors only


# ---------------------------------------------------------------------------------------- group
def test_group_refuses_non_canonical_encodings() -> None:
    with pytest.raises(ProofError) as e:
        group.scalar(group.L.to_bytes(32, "little"))
    assert e.value.reason == "zk_malformed"
    with pytest.raises(ProofError):
        group.point(b"\xff" * 32)
    with pytest.raises(ProofError):
        group.point(b"\x00" * 31)
    assert group.point(group.IDENTITY) == group.IDENTITY
    assert group.H != group.B and group.point(group.H) == group.H


# ---------------------------------------------------------------------------------- range proofs
@FAST
@given(bits=st.integers(1, 20), data=st.data())
def test_range_proof_accepts_every_value_in_range(bits: int, data: st.DataObject) -> None:
    value = data.draw(st.integers(0, 2**bits - 1))
    commitment, proof = range_proof.prove(CTX, Opening(value, group.random_scalar()), bits)
    assert len(proof) == range_proof.proof_size(bits)
    range_proof.verify(CTX, commitment, proof, bits=bits)


@pytest.mark.parametrize("value", [0, 1, 2**16 - 1])
def test_range_proof_edges_and_context_binding(value: int) -> None:
    commitment, proof = range_proof.prove(CTX, Opening(value, group.random_scalar()), 16)
    range_proof.verify(CTX, commitment, proof, bits=16)
    for other in OTHER_CONTEXTS:
        with pytest.raises(ProofError) as e:
            range_proof.verify(other, commitment, proof, bits=16)
        assert e.value.reason == "zk_invalid"
    with pytest.raises(ProofError):  # another commitment
        range_proof.verify(CTX, group.add(commitment, group.H), proof, bits=16)
    with pytest.raises(ProofError):  # the verifier decides the bit length, not the proof
        range_proof.verify(CTX, commitment, proof, bits=15)


def test_out_of_range_values_cannot_be_proven_or_faked() -> None:
    with pytest.raises(ProofError) as e:
        range_proof.prove(CTX, Opening(2**8, group.random_scalar()), 8)
    assert e.value.reason == "zk_out_of_range"
    with pytest.raises(ProofError):
        range_proof.prove(CTX, Opening(-1, group.random_scalar()), 8)
    # A proof for 255 does not stretch to a commitment to 256 (= C + H) or to -1 (= C - 256·H).
    r = group.random_scalar()
    c, proof = range_proof.prove(CTX, Opening(255, r), 8)
    for forged in (group.add(c, group.H), group.sub(c, group.mul(group.from_int(256), group.H))):
        with pytest.raises(ProofError):
            range_proof.verify(CTX, forged, proof, bits=8)


@FAST
@given(position=st.integers(0, range_proof.proof_size(8) - 1), flip=st.integers(1, 255))
def test_range_proof_rejects_any_tampered_byte(position: int, flip: int) -> None:
    commitment, proof = _fixed_range_proof()
    bad = bytearray(proof)
    bad[position] ^= flip
    with pytest.raises(ProofError) as e:
        range_proof.verify(CTX, commitment, bytes(bad), bits=8)
    assert e.value.reason in ("zk_malformed", "zk_invalid", "zk_out_of_range")


def test_range_proof_refuses_wrong_sizes_and_versions() -> None:
    commitment, proof = _fixed_range_proof()
    for bad in (b"", proof[:-1], proof + b"\x00", b"\x02" + proof[1:], proof[:1] + b"\x00" + proof[2:]):
        with pytest.raises(ProofError):
            range_proof.verify(CTX, commitment, bad, bits=8)
    with pytest.raises(ProofError) as e:  # a 64-bit claim is refused before any curve work
        range_proof.RangeProof.decode(b"\x01\x40" + bytes(range_proof.proof_size(64) - 2), max_bits=16)
    assert e.value.reason == "zk_out_of_range"


_FIXED: dict[str, tuple[bytes, bytes]] = {}


def _fixed_range_proof() -> tuple[bytes, bytes]:
    if "p" not in _FIXED:
        rand = counter_rand(b"golden-range")
        _FIXED["p"] = range_proof.prove(CTX, Opening(201, rand()), 8, rand=rand)
    return _FIXED["p"]


# Golden digests: the wire forms and transcripts are consensus bytes. A change here is a new version.
def test_golden_vectors() -> None:
    commitment, proof = _fixed_range_proof()
    rand = counter_rand(b"golden-dleq")
    secret = rand()
    base = group.mul_base(rand())
    share, dproof = dleq.prove(CTX, secret, base, rand=rand)
    rand = counter_rand(b"golden-seal")
    key = group.mul_base(rand())
    opening = Opening(7, rand())
    sealed = seal.seal(CTX, key, opening.commit(), opening, rand=rand)
    digests = {
        "range": hashlib.sha256(commitment + proof).hexdigest(),
        "dleq": hashlib.sha256(share + dproof).hexdigest(),
        "seal": hashlib.sha256(sealed).hexdigest(),
    }
    assert digests == GOLDEN


GOLDEN = {
    "range": "dc46df37d17cfd83ee0fbd0fa3b33875484a10f4188203a6ccd58ab829e26744",
    "dleq": "a5551fbc4c3cffef2a516c703c272a63f42f2ce253ddca743f786fb0928244e3",
    "seal": "480a9c43694607d0793c4ce39e2747aa3d1604bb1441ab80337fd0c82c6d608e",
}


# ------------------------------------------------------------------------------------------ dleq
def test_dleq_accepts_and_binds_everything() -> None:
    secret = group.random_scalar()
    key = group.mul_base(secret)
    base = group.mul_base(group.random_scalar())
    share, proof = dleq.prove(CTX, secret, base)
    dleq.verify(CTX, key, base, share, proof)
    for other in OTHER_CONTEXTS:
        with pytest.raises(ProofError):
            dleq.verify(other, key, base, share, proof)
    with pytest.raises(ProofError):  # a share that is not k·E
        dleq.verify(CTX, key, base, group.add(share, group.B), proof)
    with pytest.raises(ProofError):
        dleq.verify(CTX, group.mul_base(group.random_scalar()), base, share, proof)
    for i in range(len(proof)):
        bad = bytearray(proof)
        bad[i] ^= 0x40
        with pytest.raises(ProofError):
            dleq.verify(CTX, key, base, share, bytes(bad))


# -------------------------------------------------------------------------------------- sealing
def test_sealed_opening_only_the_recipient_reads_and_disclosure_is_checked() -> None:
    k = group.random_scalar()
    key = group.mul_base(k)
    opening = Opening(4242, group.random_scalar())
    c = opening.commit()
    sealed = seal.seal(CTX, key, c, opening)
    assert seal.unseal(CTX, k, c, sealed) == opening
    assert seal.unseal(CTX, group.random_scalar(), c, sealed) is None  # another key
    assert seal.unseal(OTHER_CONTEXTS[1], k, c, sealed) is None  # another job
    shared, proof = seal.disclose(CTX, k, sealed)
    assert seal.verify_disclosure(CTX, key, c, sealed, shared, proof) == opening
    with pytest.raises(ProofError):  # a made-up share is refused, not "garbage"
        seal.verify_disclosure(CTX, key, c, sealed, group.mul_base(group.random_scalar()), proof)
    with pytest.raises(ProofError):
        seal.check_form(sealed[:-1])


# ------------------------------------------------------------------------------------- auctions
CHAIN, JOB, CLIENT = "aitbc-test", b"\x33" * 32, b"\x44" * 20


def _auction(ticks: list[int], bits: int = 8):
    k = group.random_scalar()
    key = group.mul_base(k)
    bids = [auction.make_bid(CHAIN, JOB, bytes([i + 1]) * 20, key, bits, t)[0] for i, t in enumerate(ticks)]
    for b in bids:
        auction.verify_bid(CHAIN, JOB, bits, b)
    return k, key, bids


def test_lowest_tick_wins_ties_go_to_the_earliest_and_only_it_is_opened() -> None:
    k, key, bids = _auction([90, 40, 40, 200])
    award = auction.make_award(CHAIN, JOB, CLIENT, k, 8, bids)
    out = auction.verify_award(CHAIN, JOB, CLIENT, key, 8, bids, award)
    assert (out.winner, out.tick, out.faulty) == (1, 40, ())
    assert award.entries[1] is None and all(isinstance(e, bytes) for i, e in enumerate(award.entries) if i != 1)


def test_a_client_cannot_award_a_higher_bid() -> None:
    k, key, bids = _auction([90, 40])
    honest = auction.make_award(CHAIN, JOB, CLIENT, k, 8, bids)
    # name bid 0 (tick 90) the winner: the comparison for bid 1 would need 40 - 90 >= 0
    o0 = seal.unseal(auction.bid_context(CHAIN, JOB, bids[0].bidder), k, bids[0].commitment, bids[0].sealed)
    assert o0 is not None
    forged = auction.Award(0, o0, (None, honest.entries[0]))
    with pytest.raises(ProofError):
        auction.verify_award(CHAIN, JOB, CLIENT, key, 8, bids, forged)
    with pytest.raises(ProofError):  # the honest award, claimed by another client or for another job
        auction.verify_award(CHAIN, JOB, b"\x45" * 20, key, 8, bids, honest)
    with pytest.raises(ProofError):
        auction.verify_award(CHAIN, b"\x34" * 32, CLIENT, key, 8, bids, honest)
    with pytest.raises(ProofError):  # calling an honest bid faulty
        shared, proof = seal.disclose(auction.bid_context(CHAIN, JOB, bids[0].bidder), k, bids[0].sealed)
        auction.verify_award(CHAIN, JOB, CLIENT, key, 8, bids, auction.Award(1, honest.opening, (auction.Fault(shared, proof), None)))


def test_a_griefing_bidder_is_proven_faulty_and_the_auction_completes() -> None:
    k, key, bids = _auction([90, 120, 60])
    g = bids[2]
    bids[2] = replace(g, sealed=g.sealed[:50] + bytes([g.sealed[50] ^ 1]) + g.sealed[51:])  # garbage opening
    auction.verify_bid(CHAIN, JOB, 8, bids[2])  # well-formed: only the client can tell
    award = auction.make_award(CHAIN, JOB, CLIENT, k, 8, bids)
    out = auction.verify_award(CHAIN, JOB, CLIENT, key, 8, bids, award)
    assert (out.winner, out.tick, out.faulty) == (0, 90, (2,))


def test_bids_are_bound_to_job_and_bidder() -> None:
    _, key, bids = _auction([5])
    with pytest.raises(ProofError):
        auction.verify_bid(CHAIN, b"\x35" * 32, 8, bids[0])
    with pytest.raises(ProofError):
        auction.verify_bid(CHAIN, JOB, 8, replace(bids[0], bidder=b"\x09" * 20))


@FAST
@given(max_price=st.integers(1, 10**15), bits=st.integers(auction.MIN_BITS, auction.MAX_BITS), data=st.data())
def test_tick_prices_are_monotone_and_capped(max_price: int, bits: int, data: st.DataObject) -> None:
    top = 2**bits - 1
    t = data.draw(st.integers(0, top - 1))
    assert auction.tick_price(top, max_price, bits) == max_price
    assert auction.tick_price(t, max_price, bits) <= auction.tick_price(t + 1, max_price, bits)
    price = data.draw(st.integers(0, max_price))
    tick = auction.price_tick(price, max_price, bits)
    assert auction.tick_price(tick, max_price, bits) <= price
    assert tick == top or auction.tick_price(tick + 1, max_price, bits) > price


def test_second_price_award_opens_the_runner_up_and_proves_the_order() -> None:
    k, key, bids = _auction([90, 40, 40, 200, 55])
    award = auction.make_award(CHAIN, JOB, CLIENT, k, 8, bids, second_price=True)
    out = auction.verify_award(CHAIN, JOB, CLIENT, key, 8, bids, award)
    assert (out.winner, out.tick, out.second_tick) == (1, 40, 40)  # the tie: bid 2 is the runner-up
    assert award.second is not None and award.second[0] == 2
    # naming a higher runner-up (bid 4, tick 55) instead: its entry vs the winner holds, but bid 2 (40)
    # cannot be shown >= 55
    o4 = seal.unseal(auction.bid_context(CHAIN, JOB, bids[4].bidder), k, bids[4].commitment, bids[4].sealed)
    assert o4 is not None
    forged = auction.Award(1, award.opening, (award.entries[0], None, award.entries[2], award.entries[3],
                                              award.entries[2]), (4, o4))
    with pytest.raises(ProofError):
        auction.verify_award(CHAIN, JOB, CLIENT, key, 8, bids, forged)
    # a lone bidder: no runner-up to open
    k1, key1, one = _auction([7])
    solo = auction.make_award(CHAIN, JOB, CLIENT, k1, 8, one, second_price=True)
    assert solo.second is None and auction.verify_award(CHAIN, JOB, CLIENT, key1, 8, one, solo).second_tick is None
