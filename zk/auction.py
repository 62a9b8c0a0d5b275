"""Sealed-bid auctions, the pure part: what a bid proves, and what the client's award must prove.

Design (documented in docs/zk.md):

* A sealed job fixes ``bits`` and the client's sealing key ``K``. A bid's price is a *tick*
  ``t ∈ [0, 2^bits)``; it pays ``price(t) = max_price·t // (2^bits − 1)``, so one range proof on ``t``
  also shows ``price ≤ max_price``.
* A bid carries a Pedersen commitment to ``t``, a range proof bound to (chain, job, bidder), and the
  opening sealed to ``K`` (:mod:`zk.seal`). Nobody but the client can read a price.
* After the bid window the client posts the award: the winner's opening (the only price that ever
  becomes public) and, for every other bid, either a *comparison proof* — a range proof, made by the
  client who knows both openings, that ``C_j − C_w`` (minus ``V`` for bids that came earlier, so ties
  go to the earliest bid) holds a value in ``[0, 2^bits)`` — or a *fault disclosure* showing that the
  bid's sealed opening does not open its commitment. A faulty bidder loses its deposit; it cannot stall
  the auction, because the client needs nothing from it.
* A client that never awards lets its job expire: bidders get their deposits back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from zk import dleq, g1, group, range_proof, seal
from zk.errors import ProofError
from zk.pedersen import Opening, blinding_from, opens
from zk.transcript import Context

MIN_BITS = 4
MAX_BITS = 24


def check_bits(bits: int) -> None:
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ProofError(f"sealed bits {bits} outside [{MIN_BITS}, {MAX_BITS}]", "zk_out_of_range")


def tick_price(tick: int, max_price: int, bits: int) -> int:
    """The price a tick pays: ``max_price·tick // (2^bits − 1)``, monotone, ``price(top) = max_price``."""
    top = 2**bits - 1
    if not 0 <= tick <= top:
        raise ProofError(f"tick {tick} outside [0, {top}]", "zk_out_of_range")
    return max_price * tick // top


def price_tick(price: int, max_price: int, bits: int) -> int:
    """The highest tick whose price does not exceed ``price`` (what a miner bids for a price)."""
    top = 2**bits - 1
    if max_price <= 0:
        return 0
    return min(top, max(0, ((price + 1) * top - 1) // max_price))


def bid_context(chain_id: str, job_id: bytes, bidder: bytes) -> Context:
    return Context(chain_id, job_id, bidder)


@dataclass(frozen=True, slots=True)
class SealedBid:
    """What a sealed bid carries (all public)."""

    bidder: bytes
    commitment: bytes
    proof: bytes
    sealed: bytes


def make_bid(
    chain_id: str, job_id: bytes, bidder: bytes, client_key: bytes, bits: int, tick: int,
    *, rand: Callable[[], bytes] = group.random_scalar,
) -> tuple[SealedBid, Opening]:
    """The miner's side: commit to ``tick``, prove its range, seal the opening to the client (``rand``
    draws blindings and nonces: deterministic only in golden vectors)."""
    check_bits(bits)
    ctx = bid_context(chain_id, job_id, bidder)
    opening = Opening(tick, blinding_from(rand()))
    commitment, proof = range_proof.prove(ctx, opening, bits, rand=rand)
    return SealedBid(bidder, commitment, proof, seal.seal(ctx, client_key, commitment, opening, rand=rand)), opening


def verify_bid(chain_id: str, job_id: bytes, bits: int, bid: SealedBid) -> None:
    """What every node checks when a sealed bid is executed (raises :class:`ProofError`)."""
    check_bits(bits)
    seal.check_form(bid.sealed)
    range_proof.verify(bid_context(chain_id, job_id, bid.bidder), bid.commitment, bid.proof, bits=bits)


def award_context(chain_id: str, job_id: bytes, client: bytes) -> Context:
    return Context(chain_id, job_id, client)


def _difference(bids: list[SealedBid], j: int, ref: int) -> bytes:
    """``C_j − C_ref`` (minus ``V`` when bid ``j`` came first: ties go to the earliest bid)."""
    d = g1.sub(g1.decode(bids[j].commitment, f"bid {j} commitment"), g1.decode(bids[ref].commitment, "reference commitment"))
    return g1.encode(g1.sub(d, g1.V) if j < ref else d)


@dataclass(frozen=True, slots=True)
class Fault:
    """A disclosed sealed opening that does not open its bid: the shared point and its DLEQ proof."""

    shared: bytes
    proof: bytes


#: An award entry for a bid the caller has excluded for reasons outside the proofs (the state machine:
#: a bidder that can no longer win, e.g. it exited or fell below the bond minimum).
SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Award:
    """The client's settlement: the winner, its opening, and per other bid a comparison proof, a fault,
    or :data:`SKIP` (``None`` at the winner's index).

    Second-price auctions also open the runner-up (``second``: its index and opening): its entry then
    compares it with the winner, and every other bid's entry compares that bid with the runner-up."""

    winner: int
    opening: Opening
    entries: tuple[bytes | Fault | str | None, ...]
    second: tuple[int, Opening] | None = None


def make_award(
    chain_id: str, job_id: bytes, client: bytes, secret: bytes, bits: int, bids: list[SealedBid],
    exclude: frozenset[int] = frozenset(), *, rand: Callable[[], bytes] = group.random_scalar,
    second_price: bool = False,
) -> Award:
    """The client's side: open every bid with its secret, pick the lowest tick (earliest on ties) among
    those that open and are not in ``exclude``, and prove it (``second_price``: also open the runner-up,
    when there is one). Raises :class:`ProofError` (``zk_no_valid_bid``) if none qualifies."""
    openings: list[Opening | None] = []
    for b in bids:
        openings.append(seal.unseal(bid_context(chain_id, job_id, b.bidder), secret, b.commitment, b.sealed))
    valid = [i for i, o in enumerate(openings) if o is not None and 0 <= o.value < 2**bits and i not in exclude]
    if not valid:
        raise ProofError("no sealed bid opens", "zk_no_valid_bid")
    winner = min(valid, key=lambda i: (openings[i].value, i))  # type: ignore[union-attr]
    w = openings[winner]
    if w is None:  # filtered above
        raise ProofError("winner has no opening", "zk_no_valid_bid")
    rest = [i for i in valid if i != winner]
    second = min(rest, key=lambda i: (openings[i].value, i)) if second_price and rest else None  # type: ignore[union-attr]
    actx = award_context(chain_id, job_id, client)
    entries: list[bytes | Fault | str | None] = []
    for j, b in enumerate(bids):
        o = openings[j]
        ref, r = (winner, w) if second is None or j == second else (second, openings[second])
        if j == winner:
            entries.append(None)
        elif j in exclude:
            entries.append(SKIP)
        elif o is None or not 0 <= o.value < 2**bits:
            shared, proof = dleq.prove(bid_context(chain_id, job_id, b.bidder), secret, b.sealed[1:33], rand=rand)
            entries.append(Fault(shared, proof))
        elif r is not None:
            diff = o.value - r.value - (1 if j < ref else 0)
            _, proof = range_proof.prove(actx, Opening(diff, g1.scalar_bytes(g1.scalar(o.blinding) - g1.scalar(r.blinding))), bits, rand=rand)
            entries.append(proof)
    s = openings[second] if second is not None else None
    return Award(winner, w, tuple(entries), (second, s) if second is not None and s is not None else None)


@dataclass(frozen=True, slots=True)
class Outcome:
    winner: int
    tick: int
    faulty: tuple[int, ...]
    skipped: tuple[int, ...] = ()
    second_tick: int | None = None  # the runner-up's tick (second-price awards that open one)


def verify_award(
    chain_id: str, job_id: bytes, client: bytes, client_key: bytes, bits: int, bids: list[SealedBid], award: Award
) -> Outcome:
    """What every node checks when the award is executed: the winner's opening opens its commitment, and
    every other bid either holds a higher tick (a higher-or-equal one if it came later), is faulty, or is
    :data:`SKIP` (the caller checks those). With ``award.second`` (second price), the runner-up's opening
    must open its bid, its entry compares it with the winner, and every other proof compares with it."""
    check_bits(bits)
    if len(award.entries) != len(bids):
        raise ProofError(f"award has {len(award.entries)} entries for {len(bids)} bids", "zk_malformed")
    if not 0 <= award.winner < len(bids):
        raise ProofError(f"winner index {award.winner} out of range", "zk_malformed")
    o = award.opening
    g1.scalar(o.blinding, "winner blinding")
    if not 0 <= o.value < 2**bits:
        raise ProofError(f"winner tick {o.value} outside [0, 2^{bits})", "zk_out_of_range")
    if not opens(bids[award.winner].commitment, o):
        raise ProofError("the winner's opening does not open its commitment", "zk_invalid")
    second = None
    if award.second is not None:
        second, so = award.second
        if not 0 <= second < len(bids) or second == award.winner:
            raise ProofError(f"runner-up index {second} out of range", "zk_malformed")
        g1.scalar(so.blinding, "runner-up blinding")
        if not 0 <= so.value < 2**bits:
            raise ProofError(f"runner-up tick {so.value} outside [0, 2^{bits})", "zk_out_of_range")
        if not opens(bids[second].commitment, so):
            raise ProofError("the runner-up's opening does not open its commitment", "zk_invalid")
        if not isinstance(award.entries[second], bytes):
            raise ProofError("the runner-up's entry must compare it with the winner", "zk_malformed")
    actx = award_context(chain_id, job_id, client)
    faulty, skipped = [], []
    for j, entry in enumerate(award.entries):
        if j == award.winner:
            if entry is not None:
                raise ProofError("the winner's entry must be empty", "zk_malformed")
        elif entry == SKIP:
            skipped.append(j)
        elif isinstance(entry, Fault):
            b = bids[j]
            if seal.verify_disclosure(
                bid_context(chain_id, job_id, b.bidder), client_key, b.commitment, b.sealed, entry.shared, entry.proof
            ) is not None:
                raise ProofError(f"bid {j} opens correctly: it is not at fault", "zk_invalid")
            faulty.append(j)
        elif isinstance(entry, bytes):
            ref = award.winner if second is None or j == second else second
            range_proof.verify(actx, _difference(bids, j, ref), entry, bits=bits)
        else:
            raise ProofError(f"entry {j} is neither a comparison proof nor a fault", "zk_malformed")
    second_tick = award.second[1].value if award.second is not None else None
    return Outcome(award.winner, o.value, tuple(faulty), tuple(skipped), second_tick)
