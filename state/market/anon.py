"""Anonymous bonded bidders: bids that prove they come from *some* registered miner whose bond and memory
satisfy the job, one per miner per job, and only the winner ever says who it is.

* ``anon_identity {commitment}``: a registered miner puts ``Poseidon(id_secret)`` in the chain's bidder
  tree (``zk/bt/``, depth 20). Its leaf (zk/anon_bid.py) carries the miner's address, bond and memory
  and is rewritten whenever they change (:func:`refresh`, from ``Market.flush``): zeroed while the
  miner cannot take jobs. Tree writes go through tree_queue.py (bounded per block). Proofs are accepted against the current root or one replaced less
  than ``ROOT_WINDOW`` blocks ago (``zk/br/<root>`` → the height it was replaced).
* ``job_submit.anonymous = {max_bids, bid_fee, accept_window, min_bond}`` opts a job in. The client
  escrows ``max_bids × bid_fee`` on top of the price: it pays the fees of the anonymous bids, so a bidder
  sends its ``anon_bid`` from a throwaway key that holds nothing and is linked to nothing.
* ``anon_bid {job_id, price, root, nullifier, claim, min_bond, min_memory, proof}`` is *sponsored*
  (``state.machine.TxKind.sponsor``): the proof is verified with the body (so an invalid one never enters
  a mempool or a block), everything else by :func:`sponsor_check` before anything is written; a bid that
  does not hold is invalid, not failed, so nobody pays for it and the job's fee pool cannot be drained.
  Metered: ``ANON_BID_WORK`` dispute work units.
* At the end of the bid window the lowest price (earliest on a tie) becomes *pending*: its bidder has
  ``accept_window`` blocks to send ``anon_accept {job_id, blind}`` from its miner account, opening
  ``claim = Poseidon(addr, blind)``; the chain checks it and the miner's eligibility (now public) and
  awards the job. A pending bidder that does not accept (or can no longer win) is passed over for the
  next price; with none left the job expires and the escrow, fee pool included, goes back.

What is revealed: the prices, the number of bidders, and the winner once it accepts. Not revealed:
which registered miners bid, or who any losing bidder is.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from zk import anon_bid, anon_bid_vkey, groth16
from zk.errors import ProofError

from .. import codec
from ..crypto import SigningKey
from ..errors import InvariantError
from ..machine import ExecFailure, Execution, TxError, TxKind
from ..types import Transaction
from . import zk_trees
from .ledger import Market, address, hex_id, market_tx
from .records import ACTIVE, QUEUED, Job, Miner, _Record, open_key
from .tree_queue import HANDLERS, enqueue

TX_ANON_IDENTITY = "anon_identity"
TX_ANON_BID = "anon_bid"
TX_ANON_ACCEPT = "anon_accept"
DUE_ANON_ACCEPT = "anon_accept"
IDENTITY_PREFIX = b"mkt/i/"  # + miner -> Identity
AUCTION_PREFIX = b"mkt/y/"  # + job id -> AnonAuction
TREE_PREFIX = b"zk/bt/"
ROOT_PREFIX = b"zk/br/"  # + replaced root -> the height it was replaced
ROOT_WINDOW = 16  # blocks a replaced root stays usable (a bid proven just before a bond change lands)
MAX_ANON_BIDS = 16
MAX_ACCEPT_WINDOW = 1_000
#: Dispute work units of one anon_bid (bench/zk: a Groth16 verification of 7 public inputs ~2 ms).
ANON_BID_WORK = 3_000


@dataclass(slots=True)
class AnonAuction(_Record):
    """The anonymous side of a job: its terms, the bids (``[nullifier, claim, price, height]``), the
    pending winner (an index into bids) and its accept deadline, the bids passed over, the winner."""

    max_bids: int
    bid_fee: int
    accept_window: int
    min_bond: int
    bids: list = field(default_factory=list)
    fees_paid: int = 0
    pending: int | None = None
    accept_deadline: int = 0
    passed: list = field(default_factory=list)
    winner: bytes | None = None


def auction_key(job_id: bytes) -> bytes:
    return AUCTION_PREFIX + job_id


def get(get_object, job_id: bytes) -> AnonAuction | None:  # noqa: ANN001
    raw = get_object(auction_key(job_id))
    return None if raw is None else AnonAuction.decode(raw)


def _put(ex: Execution, job_id: bytes, a: AnonAuction) -> None:
    ex.put_object(auction_key(job_id), a.encode())


# ------------------------------------------------------------------------------------------ the tree
def tree_size(get_object) -> int:  # noqa: ANN001
    return zk_trees.size(get_object, TREE_PREFIX)


def leaf_at(get_object, index: int) -> int | None:  # noqa: ANN001
    return zk_trees.leaf(get_object, TREE_PREFIX, index)


def root_of(get_object) -> int:  # noqa: ANN001
    return zk_trees.root(get_object, TREE_PREFIX, anon_bid.DEPTH)


def root_usable(get_object, root: int, height: int) -> bool:  # noqa: ANN001
    """The current root, or one replaced within the last ``ROOT_WINDOW`` blocks."""
    if root == root_of(get_object):
        return True
    raw = get_object(ROOT_PREFIX + root.to_bytes(32, "big"))
    return raw is not None and int.from_bytes(raw, "big") + ROOT_WINDOW >= height


def _set_leaf(ex: Execution, index: int | None, leaf: int, height: int) -> int:
    old = root_of(ex.get_object)
    t = zk_trees.tree(ex, TREE_PREFIX, anon_bid.DEPTH)
    if index is None:
        index = t.append(leaf)
    else:
        t.update(index, leaf)
    if t.root() != old:
        ex.put_object(ROOT_PREFIX + old.to_bytes(32, "big"), height.to_bytes(8, "big"))
    return index


#: Bits of the job kinds in a leaf's kind mask (consensus: a new kind gets the next bit; a kind without
#: a bit cannot be asked for anonymously).
KIND_BITS = {"matmul-u32": 0, "hash-chain": 1, "mlp-f32": 2, "llm-generate": 3}


@dataclass(slots=True)
class Identity(_Record):
    """A miner's bidding identity: its commitment, its leaf (None until the queue writes it), the standing
    the leaf carries (``[bond, memory, kinds, backend]``), whether it is in standing (else the leaf is 0),
    and whether a rewrite is queued."""

    commitment: bytes
    index: int | None = None
    standing: list | None = None
    active: bool = False
    queued: bool = True


def kind_mask(kinds: object) -> int:
    return sum(1 << KIND_BITS[k] for k in kinds if k in KIND_BITS)  # type: ignore[attr-defined]


def _standing(mk: Market, m: Miner) -> tuple[list, bool]:
    caps = m.capabilities
    standing = [m.bond, int(caps.get("memory", 0)), kind_mask(caps.get("throughput", {})),
                anon_bid.backend_field(str(caps.get("backend", "")))]
    return standing, m.status == ACTIVE and m.bond >= mk.p.min_miner_bond


def identity_of(get_object, pk: bytes) -> Identity | None:  # noqa: ANN001
    raw = get_object(IDENTITY_PREFIX + pk)
    return None if raw is None else Identity.decode(raw)


def refresh(mk: Market, m: Miner) -> None:
    """Queue a rewrite of a miner's leaf when its bond, memory, kinds, backend or standing changed (called
    for every miner record written; a miner without an identity costs one read)."""
    ident = identity_of(mk.ex.get_object, m.miner)
    if ident is None or ident.queued or (ident.standing, ident.active) == _standing(mk, m):
        return
    ident.queued = True
    mk.ex.put_object(IDENTITY_PREFIX + m.miner, ident.encode())
    enqueue(mk.ex, "bidder", m.miner)


def _sync(mk: Market, pk: bytes) -> None:
    """Write a miner's leaf from its current record (a tree_queue handler): appended the first time."""
    ident = identity_of(mk.ex.get_object, pk)
    m = mk.miner(pk)
    if ident is None or m is None:
        raise InvariantError("queued bidder leaf of a miner without an identity")
    standing, active = _standing(mk, m)
    leaf = anon_bid.leaf(int.from_bytes(ident.commitment, "big"), pk, *standing) if active else 0
    first = ident.index is None
    if first and tree_size(mk.ex.get_object) >= 1 << anon_bid.DEPTH:
        mk.ex.emit("anon_identity_refused", miner=address(pk), reason="identity_tree_full")
        mk.ex.put_object(IDENTITY_PREFIX + pk, None)
        return
    ident.index = _set_leaf(mk.ex, ident.index, leaf, mk.h)
    ident.standing, ident.active, ident.queued = standing, active, False
    mk.ex.put_object(IDENTITY_PREFIX + pk, ident.encode())
    if first:
        mk.ex.emit("anon_identity_registered", miner=address(pk), index=ident.index)


HANDLERS["bidder"] = _sync


# ------------------------------------------------------------------------------------- anon_identity
def check_anon_identity(body: dict) -> None:
    if type(body) is not dict or set(body) != {"commitment"}:
        raise TxError("anon_identity body must be exactly {commitment}", "invalid_body")
    try:
        v = anon_bid.field_of(body["commitment"], "anon_identity.commitment")
    except ProofError as exc:
        raise TxError(str(exc), "invalid_body") from None
    if v == 0:
        raise TxError("anon_identity.commitment must not be zero", "invalid_body")


@market_tx
def apply_anon_identity(mk: Market, tx: Transaction) -> None:
    m = mk.miner(tx.sender)
    if m is None or m.status != ACTIVE:
        raise ExecFailure("not_registered", "only an active registered miner can register a bidding identity")
    if identity_of(mk.ex.get_object, tx.sender) is not None:
        raise ExecFailure("identity_exists", "this miner already registered a bidding identity")
    if tree_size(mk.ex.get_object) >= 1 << anon_bid.DEPTH:
        raise ExecFailure("identity_tree_full", "the bidder tree is full")
    # the leaf is written by the tree queue (at the end of this block unless it is busy)
    mk.ex.put_object(IDENTITY_PREFIX + tx.sender, Identity(tx.body["commitment"]).encode())
    enqueue(mk.ex, "bidder", tx.sender)


# ------------------------------------------------------------------------------------ job side
def check_anon_spec(spec: object) -> None:
    keys = {"max_bids", "bid_fee", "accept_window", "min_bond"}
    if type(spec) is not dict or set(spec) != keys:
        raise TxError(f"job_submit.anonymous must have exactly the fields {sorted(keys)}", "invalid_body")
    for k in keys:
        if type(spec[k]) is not int or not 0 <= spec[k] < 2**64:
            raise TxError(f"job_submit.anonymous.{k} must be an integer in [0, 2^64)", "invalid_body")
    if not 1 <= spec["max_bids"] <= MAX_ANON_BIDS:
        raise TxError(f"job_submit.anonymous.max_bids must be in [1, {MAX_ANON_BIDS}]", "invalid_body")
    if not 1 <= spec["accept_window"] <= MAX_ACCEPT_WINDOW:
        raise TxError(f"job_submit.anonymous.accept_window must be in [1, {MAX_ACCEPT_WINDOW}]", "invalid_body")


def pool(spec: dict) -> int:
    """What the client escrows for the bids' fees."""
    return spec["max_bids"] * spec["bid_fee"]


def required_kinds(job: Job) -> int:
    return 1 << KIND_BITS[job.kind]


def required_backend(job: Job) -> int:
    backend = job.requirements.get("backend")
    return anon_bid.backend_field(backend) if backend else 0


def open_auction(mk: Market, job: Job, spec: dict) -> None:
    if job.kind not in KIND_BITS:
        raise ExecFailure("anon_kind_unsupported", f"job kind '{job.kind}' has no bit in anonymous bidders' kind masks")
    if spec["bid_fee"] < mk.ex.env.params.min_fee:
        raise ExecFailure("anon_fee_too_low",
                          f"anonymous.bid_fee {spec['bid_fee']} is below the chain's minimum fee {mk.ex.env.params.min_fee}")
    _put(mk.ex, job.job_id, AnonAuction(spec["max_bids"], spec["bid_fee"], spec["accept_window"], spec["min_bond"]))


# ------------------------------------------------------------------------------------------ anon_bid
_BID_KEYS = {"job_id", "price", "root", "nullifier", "claim", "min_bond", "min_memory", "required_kinds",
             "required_backend", "proof"}


def anon_bid_body(st: anon_bid.Statement, proof: groth16.Proof) -> dict:
    return {"job_id": st.job_id, "price": st.price, "root": anon_bid.field_bytes(st.root),
            "nullifier": anon_bid.field_bytes(st.nullifier), "claim": anon_bid.field_bytes(st.claim),
            "min_bond": st.min_bond, "min_memory": st.min_memory, "required_kinds": st.required_kinds,
            "required_backend": anon_bid.field_bytes(st.required_backend), "proof": proof.encode()}


def statement_of(body: dict) -> anon_bid.Statement:
    return anon_bid.Statement(body["job_id"], body["price"], anon_bid.field_of(body["root"], "root"),
                              anon_bid.field_of(body["nullifier"], "nullifier"),
                              anon_bid.field_of(body["claim"], "claim"), body["min_bond"], body["min_memory"],
                              body["required_kinds"], anon_bid.field_of(body["required_backend"], "required_backend"))


#: Bodies whose proof verified (sha256 of the encoded body), newest last: a replayed bid (same body,
#: another envelope) costs a lookup, not a pairing. Memoises a pure function: results are the same.
_VERIFIED: OrderedDict[bytes, None] = OrderedDict()
_VERIFIED_MAX = 4096
_VERIFIED_LOCK = threading.Lock()  # the node checks bodies in worker threads too


def sender_key(job_id: bytes, nullifier: bytes) -> SigningKey:
    """The key an anonymous bid is sent from: derived from the job and the bid's nullifier (public), so
    every envelope of one bid has the same sender and nonce 0 — a pool holds one, a chain includes one.
    Anyone can sign with it, which gains nothing: the body is bound by the proof, the fee by the job."""
    return SigningKey.from_seed(hashlib.sha256(b"aitbc/anon-bid-sender/v1" + job_id + nullifier).digest())


def check_anon_bid_tx(tx: Transaction) -> None:
    body = tx.body
    if type(body) is not dict or not all(type(body.get(k)) is bytes and len(body[k]) == 32
                                         for k in ("job_id", "nullifier")):
        raise TxError("anon_bid body must carry a 32-byte job_id and nullifier", "invalid_body")
    if tx.nonce != 0 or tx.sender != sender_key(body["job_id"], body["nullifier"]).public_key:
        raise TxError("anon_bid must be sent with nonce 0 from the key derived from its job and nullifier "
                      "(state.market.anon.sender_key)", "wrong_sender")


def check_anon_bid(body: dict) -> None:
    """Shape, then the proof itself (it depends on the body only): an invalid bid never gets further."""
    if type(body) is not dict or set(body) != _BID_KEYS:
        raise TxError(f"anon_bid body must have exactly the fields {sorted(_BID_KEYS)}", "invalid_body")
    if type(body["job_id"]) is not bytes or len(body["job_id"]) != 32:
        raise TxError("anon_bid.job_id must be 32 bytes", "invalid_body")
    for k in ("price", "min_bond", "min_memory", "required_kinds"):
        if type(body[k]) is not int or not 0 <= body[k] < 2**64:
            raise TxError(f"anon_bid.{k} must be an integer in [0, 2^64)", "invalid_body")
    if type(body["proof"]) is not bytes or len(body["proof"]) != groth16.PROOF_SIZE:
        raise TxError(f"anon_bid.proof must be {groth16.PROOF_SIZE} bytes", "invalid_body")
    if type(body["required_backend"]) is not bytes or len(body["required_backend"]) != 32:
        raise TxError("anon_bid.required_backend must be 32 bytes", "invalid_body")
    digest = hashlib.sha256(codec.encode(body)).digest()
    with _VERIFIED_LOCK:
        if digest in _VERIFIED:
            _VERIFIED.move_to_end(digest)
            return
    try:
        st = statement_of(body)
        anon_bid.verify(anon_bid_vkey.VKEY, st, groth16.Proof.decode(body["proof"]))
    except ProofError as exc:
        raise TxError(f"anon_bid refused: {exc}", exc.reason) from None
    with _VERIFIED_LOCK:
        _VERIFIED[digest] = None
        if len(_VERIFIED) > _VERIFIED_MAX:
            _VERIFIED.popitem(last=False)


def _open_auction(ex: Execution, job_id: bytes) -> tuple[Job, AnonAuction]:
    mk = Market(ex)
    job = mk.job(job_id)
    a = get(ex.get_object, job_id)
    if job is None or a is None:
        raise TxError("anon_bid: no anonymous job with this id", "unknown_job")
    return job, a


def sponsor_check(ex: Execution, tx: Transaction) -> None:
    """Everything an anon_bid needs besides its proof, read-only (TxError: the bid is invalid)."""
    body, h = tx.body, ex.env.height
    job, a = _open_auction(ex, body["job_id"])
    if job.state != QUEUED or h > job.bid_close_height:
        raise TxError("anon_bid: the job's bid window is closed", "bid_window_closed")
    if body["price"] > job.max_price:
        raise TxError(f"anon_bid: price {body['price']} exceeds max_price {job.max_price}", "price_above_max")
    if body["min_bond"] != max(a.min_bond, ex.env.params.market.min_miner_bond) or \
            body["min_memory"] != job.requirements.get("min_memory", 0) or \
            body["required_kinds"] != required_kinds(job) or \
            body["required_backend"] != anon_bid.field_bytes(required_backend(job)):
        raise TxError("anon_bid: min_bond, min_memory, required_kinds or required_backend are not the job's",
                      "requirements_mismatch")
    if not root_usable(ex.get_object, anon_bid.field_of(body["root"], "root"), h):
        raise TxError("anon_bid: the proof's root is not a recent root of the bidder tree", "stale_root")
    if any(b[0] == body["nullifier"] for b in a.bids):
        raise TxError("anon_bid: this miner already bid on the job (nullifier used)", "nullifier_used")
    if len(a.bids) >= a.max_bids:
        raise TxError(f"anon_bid: the job already has its {a.max_bids} anonymous bids", "too_many_bids")
    if tx.fee > a.bid_fee:
        raise TxError(f"anon_bid: fee {tx.fee} above the job's bid_fee {a.bid_fee}", "fee_above_bid_fee")


@market_tx
def apply_anon_bid(mk: Market, tx: Transaction) -> None:
    body = tx.body
    job = mk.need_job(body["job_id"])
    a = get(mk.ex.get_object, job.job_id)
    if a is None:
        raise InvariantError("anon_bid applied to a job without an anonymous auction (sponsor_check)")
    job.escrow -= tx.fee  # the fee (already in the block's fees) comes out of the job's escrow
    mk.stats.escrow -= tx.fee
    mk.put_job(job)
    a.fees_paid += tx.fee
    a.bids.append([body["nullifier"], body["claim"], body["price"], mk.h])
    _put(mk.ex, job.job_id, a)
    mk.ex.emit("anon_bid_placed", job_id=hex_id(job.job_id), price=str(body["price"]), bids=len(a.bids))


def _bid_work(ex: Execution, tx: Transaction) -> int:
    return ANON_BID_WORK


# -------------------------------------------------------------------------------- award and accept
def _order(a: AnonAuction) -> list[int]:
    return sorted(range(len(a.bids)), key=lambda i: (a.bids[i][2], i))


def _next_pending(mk: Market, job: Job, a: AnonAuction) -> None:
    """Make the next bid not yet passed over pending, or expire the job when none is left."""
    from .rules import expire_job

    left = [i for i in _order(a) if i not in a.passed]
    if not left:
        a.pending = None
        _put(mk.ex, job.job_id, a)
        expire_job(mk, job, len(a.bids))
        return
    a.pending = left[0]
    a.accept_deadline = mk.h + a.accept_window
    _put(mk.ex, job.job_id, a)
    mk.schedule(a.accept_deadline, DUE_ANON_ACCEPT, job.job_id)
    mk.ex.emit("anon_bid_pending", job_id=hex_id(job.job_id), price=str(a.bids[a.pending][2]),
               claim="0x" + a.bids[a.pending][1].hex(), accept_deadline=a.accept_deadline)


def close_bidding(mk: Market, job: Job, a: AnonAuction) -> None:
    """End of the bid window of an anonymous job: the lowest bid becomes pending."""
    mk.ex.put_object(open_key(job.seq), None)
    _next_pending(mk, job, a)


def due_accept(mk: Market, job_id: bytes) -> None:
    job = mk.job(job_id)
    a = get(mk.ex.get_object, job_id)
    if job is None or a is None or job.state != QUEUED or a.pending is None or a.accept_deadline != mk.h:
        return  # accepted, canceled, or a later deadline is scheduled
    a.passed.append(a.pending)
    mk.ex.emit("anon_bid_passed", job_id=hex_id(job_id), price=str(a.bids[a.pending][2]))
    _next_pending(mk, job, a)


def check_anon_accept(body: dict) -> None:
    if type(body) is not dict or set(body) != {"job_id", "blind"}:
        raise TxError("anon_accept body must be exactly {job_id, blind}", "invalid_body")
    if type(body["job_id"]) is not bytes or len(body["job_id"]) != 32:
        raise TxError("anon_accept.job_id must be 32 bytes", "invalid_body")
    try:
        anon_bid.field_of(body["blind"], "anon_accept.blind")
    except ProofError as exc:
        raise TxError(str(exc), "invalid_body") from None


@market_tx
def apply_anon_accept(mk: Market, tx: Transaction) -> None:
    from .rules import _miner_ineligible, _requirement_failure, award_to

    job = mk.need_job(tx.body["job_id"])
    a = get(mk.ex.get_object, job.job_id)
    if a is None:
        raise ExecFailure("not_anonymous", "the job does not take anonymous bids")
    if job.state != QUEUED or a.pending is None:
        raise ExecFailure("nothing_pending", "no anonymous bid of this job is waiting to be accepted")
    bid = a.bids[a.pending]
    if anon_bid.field_bytes(anon_bid.claim(tx.sender, int.from_bytes(tx.body["blind"], "big"))) != bid[1]:
        raise ExecFailure("claim_mismatch", "this account and blind do not open the pending bid's claim")
    m = mk.miner(tx.sender)
    bad = _miner_ineligible(mk, m) or (_requirement_failure(job, m) if m is not None else None)
    if bad is None and m is not None and m.bond < a.min_bond:
        bad = ("bond_too_low", f"miner bond {m.bond} is below the job's min_bond {a.min_bond}")
    if bad is not None:
        raise ExecFailure(*bad)
    if tx.sender == job.client:
        raise ExecFailure("self_bid", "a client cannot take its own job")
    a.winner = tx.sender
    _put(mk.ex, job.job_id, a)
    award_to(mk, job, tx.sender, bid[2])


def _zero_cost(tx: Transaction) -> int:
    return 0


TX_KINDS = (
    TxKind(TX_ANON_IDENTITY, check_anon_identity, _zero_cost, apply_anon_identity),
    TxKind(TX_ANON_BID, check_anon_bid, _zero_cost, apply_anon_bid, work=_bid_work, sponsor=sponsor_check,
           check_tx=check_anon_bid_tx),
    TxKind(TX_ANON_ACCEPT, check_anon_accept, _zero_cost, apply_anon_accept),
)
DUE = {DUE_ANON_ACCEPT: due_accept}


def anon_json(a: AnonAuction) -> dict:
    """The RPC view of a job's anonymous auction (never a bidder's identity until it accepts)."""
    return {
        "max_bids": a.max_bids, "bid_fee": str(a.bid_fee), "accept_window": a.accept_window,
        "min_bond": str(a.min_bond), "fees_paid": str(a.fees_paid),
        "bids": [{"nullifier": "0x" + b[0].hex(), "claim": "0x" + b[1].hex(), "price": str(b[2]), "height": b[3]}
                 for b in a.bids],
        "pending": a.pending, "accept_deadline": a.accept_deadline if a.pending is not None else None,
        "passed": list(a.passed), "winner": address(a.winner) if a.winner is not None else None,
    }
