"""zk/: range proofs and Pedersen commitments on BN254 G1 (real mcl), DLEQ and sealed openings on
ristretto255 (real libsodium), and the sealed-bid award.

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

from zk import auction, bn254, dleq, g1, group, range_proof, seal
from zk.errors import ProofError
from zk.pedersen import Opening, random_blinding
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


def _point(data: bytes) -> bytes:
    return g1.encode(g1.decode(data))


def test_g1_decoding_checks_the_curve_like_mcl_does() -> None:
    """Our 3 µs on-curve check (mcl's field operations) agrees with mcl's own isValid, which also runs
    an order check that BN254 G1 (cofactor 1) does not need."""
    pts = [g1.encode(g1.msm((g1.V,), (g1.random_scalar(),))) for _ in range(20)]
    for enc in pts:
        assert _point(enc) == enc and bn254.LIB.mclBnG1_isValid(g1.decode(enc)) == 1
        bad = bytearray(enc)
        bad[5] ^= 1  # x changed: off the curve with overwhelming probability
        with pytest.raises(ProofError) as e:
            g1.decode(bytes(bad))
        assert e.value.reason == "zk_malformed"
    x = int.from_bytes(pts[0][:32], "little")
    for bad in (pts[0][:63], pts[0] + b"\x00", (x + bn254.P).to_bytes(32, "little") + pts[0][32:], b"\xff" * 64,
                bytes(32) + (1).to_bytes(32, "little")):
        with pytest.raises(ProofError):
            g1.decode(bad)
    assert g1.is_identity(g1.decode(g1.IDENTITY)) and g1.encode(g1.decode(g1.IDENTITY)) == g1.IDENTITY
    neg = pts[0][:32] + (bn254.P - int.from_bytes(pts[0][32:], "little")).to_bytes(32, "little")
    assert g1.is_identity(g1.add(g1.decode(pts[0]), g1.decode(neg)))
    with pytest.raises(ProofError):
        g1.scalar(g1.R.to_bytes(32, "little"))
    assert len({g1.encode(p) for p in (g1.V, g1.B, *g1.G)}) == 2 + g1.MAX_GENERATORS


# ---------------------------------------------------------------------------------- range proofs
@FAST
@given(bits=st.integers(1, 20), data=st.data())
def test_range_proof_accepts_every_value_in_range(bits: int, data: st.DataObject) -> None:
    value = data.draw(st.integers(0, 2**bits - 1))
    commitment, proof = range_proof.prove(CTX, Opening(value, random_blinding()), bits)
    assert len(proof) == range_proof.proof_size(bits)
    range_proof.verify(CTX, commitment, proof, bits=bits)


@pytest.mark.parametrize("value", [0, 1, 2**16 - 1])
def test_range_proof_edges_and_context_binding(value: int) -> None:
    commitment, proof = range_proof.prove(CTX, Opening(value, random_blinding()), 16)
    range_proof.verify(CTX, commitment, proof, bits=16)
    for other in OTHER_CONTEXTS:
        with pytest.raises(ProofError) as e:
            range_proof.verify(other, commitment, proof, bits=16)
        assert e.value.reason == "zk_invalid"
    with pytest.raises(ProofError):  # another commitment
        range_proof.verify(CTX, g1.encode(g1.add(g1.decode(commitment), g1.V)), proof, bits=16)
    with pytest.raises(ProofError):  # the verifier decides the bit length, not the proof
        range_proof.verify(CTX, commitment, proof, bits=15)


def test_out_of_range_values_cannot_be_proven_or_faked() -> None:
    with pytest.raises(ProofError) as e:
        range_proof.prove(CTX, Opening(2**8, random_blinding()), 8)
    assert e.value.reason == "zk_out_of_range"
    with pytest.raises(ProofError):
        range_proof.prove(CTX, Opening(-1, random_blinding()), 8)
    # A proof for 255 does not stretch to a commitment to 256 (= C + V) or to -1 (= C - 256·V).
    c, proof = range_proof.prove(CTX, Opening(255, random_blinding()), 8)
    cp = g1.decode(c)
    for forged in (g1.encode(g1.add(cp, g1.V)), g1.encode(g1.sub(cp, g1.msm((g1.V,), (256,))))):
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
    for bad in (b"", proof[:-1], proof + b"\x00", b"\x01" + proof[1:], proof[:1] + b"\x00" + proof[2:]):
        with pytest.raises(ProofError):
            range_proof.verify(CTX, commitment, bad, bits=8)
    with pytest.raises(ProofError) as e:  # a 64-bit claim is refused before any curve work
        range_proof.RangeProof.decode(b"\x02\x40" + bytes(range_proof.proof_size(64) - 2), max_bits=16)
    assert e.value.reason == "zk_out_of_range"


def _cheating_proof(bvec: list[int], r: int) -> tuple[bytes, bytes]:
    """A prover that follows the protocol with a "bit" vector that is not all bits (so its commitment
    may hold a value >= 2^n): what the second equation exists to catch."""
    n = len(bvec)
    value = sum(b << i for i, b in enumerate(bvec))
    c = g1.encode(g1.msm((g1.V, g1.B), (value, r)))
    a = [g1.random_scalar() for _ in range(n)]
    ra, rb, rc, rd, re = (g1.random_scalar() for _ in range(5))
    gens = (*g1.G[:n], g1.B)
    pts = tuple(g1.encode(p) for p in (
        g1.msm(gens, (*bvec, ra)), g1.msm(gens, (*a, rb)),
        g1.msm(gens, (*(ai * (1 - 2 * bi) for ai, bi in zip(a, bvec, strict=True)), rc)),
        g1.msm(gens, (*(-ai * ai for ai in a), rd)), g1.msm((g1.V, g1.B), (sum(ai << i for i, ai in enumerate(a)), re))))
    x = range_proof._transcript(CTX, c, n, pts).challenge_mod(b"x", g1.R)
    f = tuple((bi * x + ai) % g1.R for ai, bi in zip(a, bvec, strict=True))
    z = ((ra * x + rb) % g1.R, (rc * x + rd) % g1.R, (r * x + re) % g1.R)
    return c, range_proof.RangeProof(n, pts, f, z).encode()


def test_a_prover_with_a_non_bit_is_caught() -> None:
    r = g1.random_scalar()
    c, proof = _cheating_proof([1, 0, 1, 1, 0, 0, 1, 0], r)  # honest bits: accepted
    range_proof.verify(CTX, c, proof, bits=8)
    for bvec in ([0, 0, 0, 0, 0, 0, 0, 2], [3, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, g1.R - 1]):
        c, proof = _cheating_proof(bvec, r)  # 256, 3 (a "3" bit), and -128 + 127 = -1
        with pytest.raises(ProofError) as e:
            range_proof.verify(CTX, c, proof, bits=8)
        assert e.value.reason == "zk_invalid"


_FIXED: dict[str, tuple[bytes, bytes]] = {}


def _fixed_range_proof() -> tuple[bytes, bytes]:
    if "p" not in _FIXED:
        rand = counter_rand(b"golden-range")
        _FIXED["p"] = range_proof.prove(CTX, Opening(201, g1.scalar_bytes(g1.hash_to_scalar(rand()))), 8, rand=rand)
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
    opening = Opening(7, g1.scalar_bytes(g1.hash_to_scalar(rand())))
    sealed = seal.seal(CTX, key, opening.commit(), opening, rand=rand)
    digests = {
        "range": hashlib.sha256(commitment + proof).hexdigest(),
        "dleq": hashlib.sha256(share + dproof).hexdigest(),
        "seal": hashlib.sha256(sealed).hexdigest(),
        "g1_generators": hashlib.sha256(b"".join(g1.encode(p) for p in (g1.V, g1.B, *g1.G))).hexdigest(),
    }
    assert digests == GOLDEN


GOLDEN = {
    "range": "6da4b0a500b01a4e4c146b1d122dbbba565e6f61c209b2251153ed185d2b397e",
    "dleq": "a5551fbc4c3cffef2a516c703c272a63f42f2ce253ddca743f786fb0928244e3",
    "seal": "decc99f4976d06c52946d84eed9122e141036425325849f4e07e325c0a329959",
    "g1_generators": "6db4a9c98cd16abba990e9a498f8c826d7577d2ebf341d38579734f9c90e930a",
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
    opening = Opening(4242, random_blinding())
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
