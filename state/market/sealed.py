"""Sealed-bid jobs: bids whose prices only the client can read, and an award every node can check.

A job submitted with ``sealed = {bits, key, deposit, settle_window}`` takes ``sealed_bid`` transactions
instead of ``bid``: a Pedersen commitment to a price *tick* in ``[0, 2^bits)``, a range proof bound to
(chain, job, bidder), the opening sealed to the client's key ``key``, and a ``deposit`` locked from the
bidder. At the end of the bid window nothing is awarded; the client has ``settle_window`` blocks to post
a ``sealed_award`` that opens the winner's commitment (the only price that becomes public; it pays
``max_price·tick // (2^bits − 1)`` per unit) and proves every other bid higher, faulty (its sealed
opening does not open it: its deposit goes to the client), or unable to win (checked here). Honest
bidders get their deposits back at the award; if the client never awards, the job expires and every
deposit goes back. The proofs are :mod:`zk.auction`'s; their verification is metered like disputes
(``RANGE_WORK_PER_BIT`` dispute work units per bit of every range proof checked).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zk import auction, range_proof, seal
from zk import g1 as zk_g1
from zk import group as zk_group
from zk.errors import ProofError
from zk.pedersen import Opening

from ..errors import InvariantError
from ..machine import ExecFailure, Execution, TxError, TxKind
from ..types import Transaction
from .bodies import TX_SEALED_AWARD, TX_SEALED_BID
from .ledger import Market, address, hex_id, market_tx
from .records import CANCELED, DUE_SEALED_SETTLE, EXPIRED, QUEUED, SEALED_PREFIX, Job, _Record, open_key

#: An award proves every bid: at 24 bits, 47 comparisons (33,840 DWU, ~46 ms) in a 56 KB transaction, under
#: MAX_TX_BYTES (tests/test_sealed_bids.py builds the largest award).
MAX_SEALED_BIDS = 48
MAX_SETTLE_WINDOW = 1_000
#: Dispute work units per bit of a range proof verified (bench/zk: a block of sealed bids costs ~0.03 ms
#: per bit and ~0.7 ms per bid besides — signature, decoding, state — at about 1 µs per DWU).
RANGE_WORK_PER_BIT = 30
BID_BASE_WORK = 700  # signature share, decode, sealed-opening form, bookkeeping
FAULT_WORK = 400  # one DLEQ check and one decryption
_MAX_PROOF = range_proof.proof_size(auction.MAX_BITS)

_hex, _addr = hex_id, address


def sealed_key(job_id: bytes) -> bytes:
    return SEALED_PREFIX + job_id


@dataclass(slots=True)
class SealedAuction(_Record):
    """The sealed side of a job: its terms, the bids (``[bidder, commitment, sealed opening, height]``,
    never a price), the deposits held, and the outcome."""

    bits: int
    key: bytes
    deposit: int
    settle_window: int
    bids: list = field(default_factory=list)
    deposits: int = 0  # locked, not yet returned or forfeited
    settle_height: int = 0  # last height of the award window (set when bidding closes)
    winner: bytes | None = None
    tick: int = 0
    faulty: list = field(default_factory=list)  # bidders whose deposit went to the client
    second_price: bool = False  # the winner is paid the runner-up's price (Vickrey), max_price without one
    second_tick: int | None = None  # the runner-up's tick, opened by a second-price award


# -------------------------------------------------------------------------------------------- static
def _bad(msg: str) -> TxError:
    return TxError(msg, "invalid_body")


def check_sealed_spec(spec: object) -> None:
    """The ``sealed`` map of a ``job_submit`` body (called by ``bodies.check_job_submit``)."""
    required = {"bits", "key", "deposit", "settle_window"}
    if type(spec) is not dict or not required <= spec.keys() <= required | {"second_price"}:
        raise _bad("job_submit.sealed must be {bits, key, deposit, settle_window[, second_price]}")
    if "second_price" in spec and type(spec["second_price"]) is not bool:
        raise _bad("job_submit.sealed.second_price must be a boolean")
    bits, key, deposit, window = spec["bits"], spec["key"], spec["deposit"], spec["settle_window"]
    if type(bits) is not int or not auction.MIN_BITS <= bits <= auction.MAX_BITS:
        raise _bad(f"job_submit.sealed.bits must be an integer in [{auction.MIN_BITS}, {auction.MAX_BITS}]")
    if type(deposit) is not int or not 0 <= deposit < 2**64:
        raise _bad("job_submit.sealed.deposit must be a u64 amount of base units")
    if type(window) is not int or not 1 <= window <= MAX_SETTLE_WINDOW:
        raise _bad(f"job_submit.sealed.settle_window must be in [1, {MAX_SETTLE_WINDOW}] blocks")
    try:
        zk_group.point(key, "job_submit.sealed.key")
    except ProofError as exc:
        raise _bad(str(exc)) from None
    if key == zk_group.IDENTITY:
        raise _bad("job_submit.sealed.key must not be the identity")


def _bytes(body: dict, key: str, what: str, lo: int, hi: int) -> bytes:
    v = body[key]
    if type(v) is not bytes or not lo <= len(v) <= hi:
        raise _bad(f"{what}.{key} must be {lo}..{hi} bytes")
    return v


def check_sealed_bid(body: dict) -> None:
    if type(body) is not dict or body.keys() != {"job_id", "commitment", "proof", "sealed"}:
        raise _bad("sealed_bid body must be exactly {job_id, commitment, proof, sealed}")
    _bytes(body, "job_id", "sealed_bid", 32, 32)
    _bytes(body, "commitment", "sealed_bid", zk_g1.POINT_BYTES, zk_g1.POINT_BYTES)
    _bytes(body, "proof", "sealed_bid", range_proof.proof_size(auction.MIN_BITS), _MAX_PROOF)
    _bytes(body, "sealed", "sealed_bid", seal.SIZE, seal.SIZE)


def check_sealed_award(body: dict) -> None:
    required = {"job_id", "winner", "tick", "blinding", "entries"}
    if type(body) is not dict or not required <= body.keys() <= required | {"second"}:
        raise _bad("sealed_award body must be {job_id, winner, tick, blinding, entries[, second]}")
    if "second" in body:
        s = body["second"]
        if type(s) is not list or len(s) != 3 or not all(type(x) is int and 0 <= x < 2**32 for x in s[:2]) \
                or type(s[2]) is not bytes or len(s[2]) != 32:
            raise _bad("sealed_award.second must be [index u32, tick u32, blinding32]")
    _bytes(body, "job_id", "sealed_award", 32, 32)
    _bytes(body, "blinding", "sealed_award", 32, 32)
    for k in ("winner", "tick"):
        if type(body[k]) is not int or not 0 <= body[k] < 2**32:
            raise _bad(f"sealed_award.{k} must be a u32")
    entries = body["entries"]
    if type(entries) is not list or not 1 <= len(entries) <= MAX_SEALED_BIDS:
        raise _bad(f"sealed_award.entries must be a list of 1..{MAX_SEALED_BIDS}")
    for e in entries:
        if e is None or e == auction.SKIP:
            continue
        if type(e) is bytes and len(e) <= _MAX_PROOF:
            continue
        if type(e) is list and len(e) == 2 and type(e[0]) is bytes and len(e[0]) == 32 and type(e[1]) is bytes \
                and len(e[1]) <= 128:
            continue
        raise _bad('sealed_award.entries: each is null, "skip", a comparison proof or [shared32, dleq]')


def sealed_award_body(job_id: bytes, award: auction.Award) -> dict:
    entries: list = []
    for e in award.entries:
        entries.append([e.shared, e.proof] if isinstance(e, auction.Fault) else e)
    body = {"job_id": job_id, "winner": award.winner, "tick": award.opening.value,
            "blinding": award.opening.blinding, "entries": entries}
    if award.second is not None:
        idx, o = award.second
        body["second"] = [idx, o.value, o.blinding]
    return body


def sealed_bid_body(job_id: bytes, bid: auction.SealedBid) -> dict:
    return {"job_id": job_id, "commitment": bid.commitment, "proof": bid.proof, "sealed": bid.sealed}


# -------------------------------------------------------------------------------------------- records
def get(ex: Execution, job_id: bytes) -> SealedAuction | None:
    raw = ex.get_object(sealed_key(job_id))
    return None if raw is None else SealedAuction.decode(raw)


def put(ex: Execution, job_id: bytes, sa: SealedAuction) -> None:
    ex.put_object(sealed_key(job_id), sa.encode())


def open_auction(mk: Market, job: Job, spec: dict) -> None:
    """``job_submit`` with a ``sealed`` spec (the spec passed its static check)."""
    put(mk.ex, job.job_id, SealedAuction(spec["bits"], spec["key"], spec["deposit"], spec["settle_window"],
                                         second_price=spec.get("second_price", False)))


def _zk_failure(exc: ProofError) -> ExecFailure:
    return ExecFailure(exc.reason, str(exc))


def _return_deposits(mk: Market, sa: SealedAuction, forfeit_to: bytes | None, faulty: set[bytes]) -> int:
    """Give every held deposit back to its bidder, except those of ``faulty`` bidders (to ``forfeit_to``).
    Returns the forfeited amount."""
    forfeited = 0
    for bidder, *_ in sa.bids:
        if sa.deposit == 0:
            break
        if bidder in faulty and forfeit_to is not None:
            mk.ex.credit(forfeit_to, sa.deposit)
            forfeited += sa.deposit
        else:
            mk.ex.credit(bidder, sa.deposit)
    mk.stats.sealed_deposits -= sa.deposits
    if sa.deposits != sa.deposit * len(sa.bids):
        raise InvariantError("sealed deposits out of balance")
    sa.deposits = 0
    return forfeited


# -------------------------------------------------------------------------------------------- bids
def bid_work(ex: Execution, tx: Transaction) -> int:
    sa = get(ex, tx.body["job_id"])
    return BID_BASE_WORK + (RANGE_WORK_PER_BIT * sa.bits if sa is not None else 0)


@market_tx
def apply_sealed_bid(mk: Market, tx: Transaction) -> None:
    from . import rules as R  # rules registers this module's kinds

    body = tx.body
    job = mk.need_job(body["job_id"])
    sa = get(mk.ex, job.job_id)
    if sa is None:
        raise ExecFailure("not_sealed", "the job takes open bids (bid), not sealed ones")
    if job.state != QUEUED or mk.h > job.bid_close_height:
        raise ExecFailure("bid_window_closed", f"cannot bid: the job is {job.state}, bids closed at height "
                          f"{job.bid_close_height}")
    m = mk.miner(tx.sender)
    bad = R._miner_ineligible(mk, m)
    if bad is not None or m is None:
        raise ExecFailure(*(bad or ("not_registered", "sender is not a registered miner")))
    if tx.sender == job.client:
        raise ExecFailure("self_bid", "a client cannot bid on its own job")
    bad = R._requirement_failure(job, m)
    if bad is not None:
        raise ExecFailure(*bad)
    if any(b[0] == tx.sender for b in sa.bids):
        raise ExecFailure("duplicate_bid", "this miner already bid on the job")
    if len(sa.bids) >= min(MAX_SEALED_BIDS, mk.p.max_bids_per_job):
        raise ExecFailure("too_many_bids", f"the job already has the maximum of {len(sa.bids)} sealed bids")
    bid = auction.SealedBid(tx.sender, body["commitment"], body["proof"], body["sealed"])
    try:
        auction.verify_bid(mk.ex.env.chain_id, job.job_id, sa.bits, bid)
    except ProofError as exc:
        raise _zk_failure(exc) from None
    bal = mk.ex.account(tx.sender).balance
    if bal < sa.deposit:
        raise ExecFailure("insufficient_balance", f"the sealed-bid deposit {sa.deposit} exceeds the balance {bal}")
    mk.ex.debit(tx.sender, sa.deposit)
    sa.deposits += sa.deposit
    mk.stats.sealed_deposits += sa.deposit
    sa.bids.append([tx.sender, bid.commitment, bid.sealed, mk.h])
    put(mk.ex, job.job_id, sa)
    mk.ex.emit("sealed_bid_placed", job_id=_hex(job.job_id), miner=_addr(tx.sender), bids=len(sa.bids))


# -------------------------------------------------------------------------------------------- award
def close_bidding(mk: Market, job: Job, sa: SealedAuction) -> None:
    """End of the bid window (from the award due entry): no bid expires the job; otherwise the client's
    award window opens."""
    from . import rules as R

    mk.ex.put_object(open_key(job.seq), None)
    if not sa.bids:
        R.expire_job(mk, job, 0)
        return
    sa.settle_height = mk.h + sa.settle_window
    put(mk.ex, job.job_id, sa)
    mk.schedule(sa.settle_height, DUE_SEALED_SETTLE, job.job_id)
    mk.ex.emit("sealed_bidding_closed", job_id=_hex(job.job_id), bids=len(sa.bids),
               settle_height=sa.settle_height)


def award_work(ex: Execution, tx: Transaction) -> int:
    sa = get(ex, tx.body["job_id"])
    if sa is None:
        return BID_BASE_WORK
    work = BID_BASE_WORK
    for e in tx.body["entries"]:
        if type(e) is bytes:
            work += RANGE_WORK_PER_BIT * sa.bits
        elif type(e) is list:
            work += FAULT_WORK
    return work


def _award_of(body: dict) -> auction.Award:
    entries: list = []
    for e in body["entries"]:
        entries.append(auction.Fault(e[0], e[1]) if type(e) is list else e)
    second = None
    if "second" in body:
        idx, tick, blinding = body["second"]
        second = (idx, Opening(tick, blinding))
    return auction.Award(body["winner"], Opening(body["tick"], body["blinding"]), tuple(entries), second)


@market_tx
def apply_sealed_award(mk: Market, tx: Transaction) -> None:
    from . import rules as R

    job = mk.need_job(tx.body["job_id"])
    sa = get(mk.ex, job.job_id)
    if sa is None:
        raise ExecFailure("not_sealed", "the job is not a sealed-bid job")
    if tx.sender != job.client:
        raise ExecFailure("not_job_client", "only the job's client may award a sealed-bid job")
    if job.state != QUEUED:
        reason = {CANCELED: "job_canceled", EXPIRED: "award_window_closed"}.get(job.state, "already_awarded")
        raise ExecFailure(reason, f"the job is {job.state}")
    if mk.h <= job.bid_close_height:
        raise ExecFailure("bid_window_open", f"bids are open until height {job.bid_close_height}")
    bidders = [b[0] for b in sa.bids]
    award = _award_of(tx.body)
    if len(award.entries) != len(bidders):
        raise ExecFailure("zk_malformed", f"award has {len(award.entries)} entries for {len(bidders)} bids")
    if not 0 <= award.winner < len(bidders):
        raise ExecFailure("zk_malformed", f"winner index {award.winner} out of range")
    miners = {pk: mk.miner(pk) for pk in bidders}
    for j, e in enumerate(award.entries):
        if e == auction.SKIP and R._can_win(mk, job, miners[bidders[j]]):
            raise ExecFailure("bidder_can_win", f"bid {j} was skipped but its miner can still win")
    winner_pk = bidders[award.winner]
    if not R._can_win(mk, job, miners[winner_pk]):
        raise ExecFailure("winner_ineligible", "the named winner can no longer take the job (skip it)")
    zbids = [auction.SealedBid(b[0], b[1], b"", b[2]) for b in sa.bids]
    try:
        out = auction.verify_award(mk.ex.env.chain_id, job.job_id, job.client, sa.key, sa.bits, zbids, award)
    except ProofError as exc:
        raise _zk_failure(exc) from None
    if award.second is not None and not sa.second_price:
        raise ExecFailure("zk_malformed", "a first-price auction opens no runner-up")
    if sa.second_price and award.second is None and any(type(e) is bytes for e in award.entries):
        raise ExecFailure("zk_malformed", "a second-price award with other valid bids must open the runner-up")
    faulty = {bidders[j] for j in out.faulty}
    forfeited = _return_deposits(mk, sa, job.client, faulty)
    if not sa.second_price:
        price = auction.tick_price(out.tick, job.max_price, sa.bits)
    elif out.second_tick is not None:  # Vickrey: the runner-up's price
        price = auction.tick_price(out.second_tick, job.max_price, sa.bits)
    else:  # no other valid bid: the client's ceiling
        price = job.max_price
    sa.winner, sa.tick, sa.faulty, sa.second_tick = winner_pk, out.tick, sorted(faulty), out.second_tick
    put(mk.ex, job.job_id, sa)
    mk.ex.emit("sealed_awarded", job_id=_hex(job.job_id), miner=_addr(winner_pk), price=str(price),
               tick=out.tick, bids=len(bidders), faulty=len(faulty), forfeited=str(forfeited))
    R.award_to(mk, job, winner_pk, price)


def due_settle(mk: Market, job_id: bytes) -> None:
    """End of the award window: a job the client did not award expires; every deposit goes back."""
    job = mk.job(job_id)
    sa = get(mk.ex, job_id)
    if job is None or sa is None or job.state != QUEUED:
        return
    from . import rules as R

    _return_deposits(mk, sa, None, set())
    put(mk.ex, job_id, sa)
    R.expire_job(mk, job, len(sa.bids))


def on_cancel(mk: Market, job: Job) -> None:
    """The client canceled a sealed job before its award: every deposit goes back."""
    sa = get(mk.ex, job.job_id)
    if sa is not None and sa.deposits:
        _return_deposits(mk, sa, None, set())
        put(mk.ex, job.job_id, sa)


def _cost(tx: Transaction) -> int:
    return 0  # the deposit is the job's term: checked against the balance when the bid executes


TX_KINDS = (
    TxKind(TX_SEALED_BID, check_sealed_bid, _cost, apply_sealed_bid, work=bid_work),
    TxKind(TX_SEALED_AWARD, check_sealed_award, _cost, apply_sealed_award, work=award_work),
)
DUE = {DUE_SEALED_SETTLE: due_settle}
