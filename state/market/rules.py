"""Market rules: how miner, job, bid and receipt transactions and the per-block hook change state.

Disputes (challenges of a wrong result, availability challenges) are in :mod:`state.market.disputes`;
the records and money moves all rules share in :mod:`state.market.ledger`.

Heights are inclusive: a bid is accepted up to and including the job's ``bid_close_height`` and the award
happens at the end of that block; a receipt up to ``deadline_height`` (a miss is handled at the end of
that block); a challenge up to ``release_height`` (payment is released at the end of that block, or
once an availability challenge open then is answered).
"""

from __future__ import annotations

from .. import codec
from ..crypto import KIND_RECEIPT, verify
from ..errors import InvariantError
from ..kinds import JobParamError, get_kind
from ..machine import BlockHook, ExecFailure, Execution, TxKind, register_block_hook, register_tx_kind
from ..types import Transaction
from . import anon, attest, disputes, llm_disputes, models, sealed, tree_queue
from . import bodies as B
from .ledger import Market, address, emit_job_failed, fail_job, hex_id, market_tx, settle
from .records import (
    ACTIVE,
    CANCELED,
    COMPLETED,
    DUE_AWARD,
    DUE_DEADLINE,
    DUE_RELEASE,
    DUE_UNBOND,
    ESCROWED,
    EXITED,
    EXITING,
    EXPIRED,
    FAIL_TIMEOUT,
    FAILED,
    QUEUED,
    REFUNDED,
    RUNNING,
    Job,
    Miner,
    awarded_key,
    client_key,
    due_entry_key,
    due_key,
    open_key,
    running_key,
    seq_key,
    window_key,
)

_hex, _addr = hex_id, address

# --------------------------------------------------------------------------------------------------
# Miners


def _miner_fields(m: Miner) -> dict:
    return {"miner": _addr(m.miner), "bond": str(m.bond), "status": m.status}


@market_tx
def apply_miner_register(mk: Market, tx: Transaction) -> None:
    body = tx.body
    if body["bond"] < mk.p.min_miner_bond:
        raise ExecFailure(
            "bond_too_low", f"miner bond {body['bond']} is below the minimum {mk.p.min_miner_bond}"
        )
    old = mk.miner(tx.sender)
    if old is not None and old.status != EXITED:
        raise ExecFailure("already_registered", f"miner is already registered ({old.status})")
    m = Miner(tx.sender, ACTIVE, 0, body["capabilities"], body["prices"], registered_height=mk.h)
    if old is not None:  # a returning miner keeps its track record
        m.reputation, m.completed, m.failed, m.slashed = (
            old.reputation,
            old.completed,
            old.failed,
            old.slashed,
        )
    mk.lock_bond(m, tx.sender, body["bond"], "miner bond")
    mk.stats.miners += 1
    mk.put_miner(m)
    caps = body["capabilities"]
    mk.ex.emit("miner_registered", **_miner_fields(m), backend=caps["backend"], device=caps["device"])


def _need_miner(mk: Market, pk: bytes) -> Miner:
    m = mk.miner(pk)
    if m is None or m.status == EXITED:
        raise ExecFailure("not_registered", "sender is not a registered miner")
    return m


@market_tx
def apply_miner_update(mk: Market, tx: Transaction) -> None:
    m = _need_miner(mk, tx.sender)
    if m.status != ACTIVE:
        raise ExecFailure("miner_exiting", f"miner is exiting (bond returned after height {m.exit_height})")
    if "capabilities" in tx.body:
        m.capabilities = tx.body["capabilities"]
    if "prices" in tx.body:
        m.prices = tx.body["prices"]
    if "add_bond" in tx.body:
        mk.lock_bond(m, tx.sender, tx.body["add_bond"], "added bond")
    mk.put_miner(m)
    mk.ex.emit("miner_updated", **_miner_fields(m))


@market_tx
def apply_miner_exit(mk: Market, tx: Transaction) -> None:
    m = _need_miner(mk, tx.sender)
    if m.status != ACTIVE:
        raise ExecFailure(
            "already_exiting", f"miner is already exiting (bond returned after height {m.exit_height})"
        )
    m.status = EXITING
    m.exit_height = mk.h + mk.p.miner_unbonding_blocks
    mk.stats.miners -= 1
    mk.put_miner(m)
    mk.schedule(m.exit_height, DUE_UNBOND, m.miner)
    mk.ex.emit("miner_exiting", **_miner_fields(m), exit_height=m.exit_height, open_jobs=m.open_jobs)


def _due_unbond(mk: Market, pk: bytes) -> None:
    m = mk.miner(pk)
    if m is None or m.status != EXITING or m.open_jobs > 0 or mk.h < m.exit_height:
        return  # re-scheduled by close_open_job once the last open job ends
    amount = m.bond
    m.bond = 0
    m.status = EXITED
    mk.stats.bonds -= amount
    if amount:
        mk.ex.credit(pk, amount)
    mk.put_miner(m)
    mk.ex.emit("miner_unbonded", miner=_addr(pk), amount=str(amount))


# --------------------------------------------------------------------------------------------------
# Jobs


def _input_size(inp: dict | None) -> int | None:
    if inp is None:
        return None
    return len(inp["inline"]) if "inline" in inp else inp["size"]


@market_tx
def apply_job_submit(mk: Market, tx: Transaction) -> None:
    body, p = tx.body, mk.p
    if not p.min_bid_window <= body["bid_window"] <= p.max_bid_window:
        raise ExecFailure(
            "bid_window_out_of_range",
            f"bid_window {body['bid_window']} outside [{p.min_bid_window}, {p.max_bid_window}] blocks",
        )
    if body["deadline"] > p.max_deadline_blocks:
        raise ExecFailure(
            "deadline_out_of_range",
            f"deadline {body['deadline']} exceeds the maximum {p.max_deadline_blocks} blocks",
        )
    inp = body.get("input")
    if inp is not None and "inline" in inp and len(inp["inline"]) > p.max_inline_input:
        raise ExecFailure(
            "input_too_large",
            f"inline input of {len(inp['inline'])} bytes exceeds max_inline_input {p.max_inline_input}",
        )
    if inp is not None and "blob" in inp and inp["size"] > p.max_blob_input:
        raise ExecFailure(
            "input_too_large", f"blob input of {inp['size']} bytes exceeds max_blob_input {p.max_blob_input}"
        )
    verify_policy = body.get("verify")
    window = verify_policy["challenge_window"] if verify_policy else 0
    if window > p.max_challenge_window:
        raise ExecFailure(
            "challenge_window_out_of_range",
            f"challenge_window {window} exceeds the maximum {p.max_challenge_window} blocks",
        )
    kind = get_kind(body["kind"])
    ctx = llm_disputes.kind_context(mk.ex)
    try:  # state-dependent checks of the params (e.g. llm-generate: the model is registered)
        kind.check_context(body["params"], ctx)
        work = kind.dispute_work(body["params"], _input_size(inp), ctx) if window else 0
    except JobParamError as exc:
        raise ExecFailure(exc.reason, f"job params refused by kind '{kind.name}': {exc}") from None
    if window:
        if work > p.max_challenge_work:
            raise ExecFailure(
                "challenge_work_too_large",
                f"re-checking one leaf of this job costs {work} dispute work units, more than "
                f"max_challenge_work {p.max_challenge_work}: such a job takes no challenge window",
            )
    if window and inp is not None and "blob" in inp and inp["size"] > p.max_challenge_input:
        raise ExecFailure(
            "input_too_large_for_challenge",
            "a challenge must carry the job's blob input, so a job with a challenge window takes a blob of "
            f"at most {p.max_challenge_input} bytes (got {inp['size']})",
        )
    if mk.job(tx.hash) is not None:  # cannot happen: a tx hash is unique
        raise ExecFailure("duplicate_job", "job already exists")
    st = mk.stats
    job = Job(
        job_id=tx.hash,
        seq=st.jobs,
        client=tx.sender,
        kind=body["kind"],
        version=body["version"],
        params=body["params"],
        input=inp,
        max_price=body["max_price"],
        max_units=body["max_units"],
        bid_window=body["bid_window"],
        deadline=body["deadline"],
        verify=verify_policy,
        requirements=body.get("requirements", {}),
        submitted_height=mk.h,
        bid_close_height=mk.h + body["bid_window"],
        state="",
    )
    mk.lock_escrow(job, job.max_price * job.max_units + (anon.pool(body["anonymous"]) if "anonymous" in body else 0))
    if "anonymous" in body:
        anon.open_auction(mk, job, body["anonymous"])
    if "sealed" in body:
        sealed.open_auction(mk, job, body["sealed"])
    if "attest" in body:
        attest.on_submit(mk.ex, job.job_id, body["attest"])
    st.jobs += 1
    mk.set_state(job, QUEUED)
    mk.put_job(job)
    ex = mk.ex
    ex.put_object(seq_key(job.seq), job.job_id)
    ex.put_object(client_key(job.client, job.seq), job.job_id)
    ex.put_object(open_key(job.seq), job.job_id)
    mk.schedule(job.bid_close_height, DUE_AWARD, job.job_id)
    ex.emit(
        "job_submitted",
        job_id=_hex(job.job_id),
        client=_addr(job.client),
        kind=job.kind,
        max_price=str(job.max_price),
        max_units=job.max_units,
        escrow=str(job.escrow),
        bid_close_height=job.bid_close_height,
    )


_NOT_OPEN = {
    RUNNING: ("already_awarded", "the job was already awarded"),
    EXPIRED: ("bid_window_closed", "the job's bid window closed without an award"),
    CANCELED: ("job_canceled", "the job was canceled"),
    COMPLETED: ("already_awarded", "the job was already awarded and completed"),
    FAILED: ("already_awarded", "the job was already awarded and failed"),
}


@market_tx
def apply_job_cancel(mk: Market, tx: Transaction) -> None:
    job = mk.need_job(tx.body["job_id"])
    if tx.sender != job.client:
        raise ExecFailure("not_job_client", "only the job's client may cancel it")
    if job.state != QUEUED:
        reason, msg = _NOT_OPEN[job.state]
        raise ExecFailure(reason, f"cannot cancel: {msg} (state {job.state})")
    mk.stats.open_bids -= len(job.bids)
    sealed.on_cancel(mk, job)
    refunded = mk.refund_all(job)
    mk.set_state(job, CANCELED)
    job.payment = REFUNDED
    job.settle_height = mk.h
    mk.put_job(job)
    mk.ex.put_object(open_key(job.seq), None)
    mk.ex.emit("job_canceled", job_id=_hex(job.job_id), client=_addr(job.client), refunded=str(refunded))


def _requirement_failure(job: Job, m: Miner) -> tuple[str, str] | None:
    caps = m.capabilities
    req = job.requirements
    if job.kind not in caps["throughput"]:
        return "kind_not_supported", f"miner capabilities list no throughput for kind '{job.kind}'"
    if "min_memory" in req and caps["memory"] < req["min_memory"]:
        return "insufficient_memory", f"miner memory {caps['memory']} < required {req['min_memory']} bytes"
    if "backend" in req and caps["backend"] != req["backend"]:
        return "backend_mismatch", f"miner backend '{caps['backend']}' != required '{req['backend']}'"
    return None


def _miner_ineligible(mk: Market, m: Miner | None) -> tuple[str, str] | None:
    if m is None or m.status == EXITED:
        return "not_registered", "sender is not a registered miner"
    if m.status != ACTIVE:
        return "miner_exiting", "an exiting miner cannot take jobs"
    if m.bond < mk.p.min_miner_bond:
        return "bond_too_low", f"miner bond {m.bond} is below the minimum {mk.p.min_miner_bond} (add bond)"
    if m.running >= mk.p.max_open_jobs_per_miner:
        return (
            "too_many_open_jobs",
            f"miner already runs {m.running} jobs (max {mk.p.max_open_jobs_per_miner})",
        )
    return None


@market_tx
def apply_bid(mk: Market, tx: Transaction) -> None:
    job = mk.need_job(tx.body["job_id"])
    price = tx.body["price"]
    if job.state != QUEUED:
        reason, msg = _NOT_OPEN[job.state]
        if job.state != CANCELED:
            reason = "bid_window_closed"
        raise ExecFailure(reason, f"cannot bid: {msg} (state {job.state})")
    if mk.h > job.bid_close_height:  # unreachable: the award runs at the end of bid_close_height
        raise ExecFailure("bid_window_closed", f"bid window closed at height {job.bid_close_height}")
    if sealed.get(mk.ex, job.job_id) is not None:
        raise ExecFailure("sealed_job", "the job takes sealed bids only (sealed_bid)")
    if anon.get(mk.ex.get_object, job.job_id) is not None:
        raise ExecFailure("anonymous_job", "the job takes anonymous bids only (anon_bid)")
    m = mk.miner(tx.sender)
    bad = _miner_ineligible(mk, m)
    if bad is not None or m is None:
        raise ExecFailure(*(bad or ("not_registered", "sender is not a registered miner")))
    if tx.sender == job.client:
        raise ExecFailure("self_bid", "a client cannot bid on its own job")
    if price > job.max_price:
        raise ExecFailure("price_above_max", f"bid price {price} exceeds the job's max_price {job.max_price}")
    bad = _requirement_failure(job, m)
    if bad is not None:
        raise ExecFailure(*bad)
    if any(b[0] == tx.sender for b in job.bids):
        raise ExecFailure("duplicate_bid", "this miner already bid on the job")
    if len(job.bids) >= mk.p.max_bids_per_job:
        raise ExecFailure("too_many_bids", f"the job already has the maximum of {mk.p.max_bids_per_job} bids")
    job.bids.append([tx.sender, price, mk.h])
    mk.stats.open_bids += 1
    mk.put_job(job)
    mk.ex.emit(
        "bid_placed", job_id=_hex(job.job_id), miner=_addr(tx.sender), price=str(price), bids=len(job.bids)
    )


def award_order(bids: list, reputation: dict[bytes, int]) -> list[int]:
    """Indices of ``bids`` ([miner, price, height] in arrival order) best first: lowest price, then
    higher reputation, then earliest."""
    return sorted(range(len(bids)), key=lambda i: (bids[i][1], -reputation.get(bids[i][0], 0), i))


def _can_win(mk: Market, job: Job, m: Miner | None) -> bool:
    return _miner_ineligible(mk, m) is None and m is not None and _requirement_failure(job, m) is None


def _due_award(mk: Market, job_id: bytes) -> None:
    job = mk.job(job_id)
    if job is None or job.state != QUEUED:
        return  # canceled
    sa = sealed.get(mk.ex, job_id)
    if sa is not None:
        sealed.close_bidding(mk, job, sa)  # the client awards with proofs (state/market/sealed.py)
        return
    aa = anon.get(mk.ex.get_object, job_id)
    if aa is not None:
        anon.close_bidding(mk, job, aa)  # the lowest bidder opens its claim (state/market/anon.py)
        return
    mk.stats.open_bids -= len(job.bids)
    mk.ex.put_object(open_key(job.seq), None)
    miners = {b[0]: mk.miner(b[0]) for b in job.bids}
    # A bidder that left, fell below the bond minimum, filled up or changed capabilities since it bid
    # is passed over.
    eligible = [b for b in job.bids if _can_win(mk, job, miners[b[0]])]
    if not eligible:
        expire_job(mk, job, len(job.bids))
        return
    reps = {pk: m.reputation for pk, m in miners.items() if m is not None}
    winner_pk, price, _ = eligible[award_order(eligible, reps)[0]]
    award_to(mk, job, winner_pk, price)


def expire_job(mk: Market, job: Job, bids: int) -> None:
    """No bid can win: the job EXPIRES and the client gets the whole escrow back."""
    refunded = mk.refund_all(job)
    mk.set_state(job, EXPIRED)
    job.payment = REFUNDED
    job.settle_height = mk.h
    mk.put_job(job)
    mk.ex.emit(
        "job_expired",
        job_id=_hex(job.job_id),
        client=_addr(job.client),
        refunded=str(refunded),
        bids=bids,
    )


def award_to(mk: Market, job: Job, winner_pk: bytes, price: int) -> None:
    """Award ``job`` to the miner ``winner_pk`` at unit ``price`` (RUNNING) and refund the escrow above
    ``price × max_units``."""
    m = mk.miner(winner_pk)
    if m is None:  # _can_win refused missing records
        raise InvariantError("award winner has no miner record")
    job.miner = winner_pk
    job.price = price
    job.award_height = mk.h
    job.deadline_height = mk.h + job.deadline
    # Only price × max_units can ever be paid: the rest of the escrow goes back now.
    excess = job.escrow - price * job.max_units
    mk.pay_from_escrow(job, job.client, excess)
    mk.set_state(job, RUNNING)
    mk.put_job(job)
    m.running += 1
    m.open_jobs += 1
    mk.put_miner(m)
    mk.ex.put_object(awarded_key(winner_pk, job.seq), job.job_id)
    mk.ex.put_object(running_key(winner_pk, job.seq), job.job_id)
    mk.schedule(job.deadline_height, DUE_DEADLINE, job.job_id)
    mk.ex.emit(
        "job_awarded",
        job_id=_hex(job.job_id),
        client=_addr(job.client),
        miner=_addr(winner_pk),
        price=str(price),
        deadline_height=job.deadline_height,
        refunded=str(excess),
        bids=len(job.bids),
    )


@market_tx
def apply_receipt(mk: Market, tx: Transaction) -> None:
    r, sig = tx.body["receipt"], tx.body["sig"]
    if tx.sender != r["provider"]:
        raise ExecFailure("sender_not_provider", "a receipt must be sent by its provider")
    if not verify(KIND_RECEIPT, mk.ex.env.chain_id, r["provider"], B.receipt_encoding(r), sig):
        raise ExecFailure("bad_receipt_signature", "the receipt signature does not verify for its provider")
    job = mk.need_job(r["job_id"])
    if job.receipt is not None:
        raise ExecFailure("duplicate_receipt", "the job already has a receipt")
    if job.state == FAILED and job.failure == FAIL_TIMEOUT:
        raise ExecFailure(
            "deadline_passed", f"the receipt deadline (height {job.deadline_height}) has passed"
        )
    if job.state != RUNNING:
        raise ExecFailure("job_not_running", f"the job is {job.state}, not RUNNING")
    if r["provider"] != job.miner:
        raise ExecFailure(
            "not_awarded_miner", "the receipt's provider is not the miner the job was awarded to"
        )
    if mk.h > job.deadline_height:  # unreachable: the deadline runs at the end of deadline_height
        raise ExecFailure(
            "deadline_passed", f"the receipt deadline (height {job.deadline_height}) has passed"
        )
    if r["client"] != job.client:
        raise ExecFailure("wrong_client", "the receipt names another client than the job's")
    kind = get_kind(job.kind)
    if r["unit_type"] != kind.unit_type:
        raise ExecFailure("wrong_unit_type", f"unit_type must be '{kind.unit_type}', got '{r['unit_type']}'")
    if r["units"] > job.max_units:
        raise ExecFailure(
            "units_exceed_max", f"units {r['units']} exceed the job's max_units {job.max_units}"
        )
    metered = kind.work_units(job.params)
    if r["units"] > metered:
        raise ExecFailure(
            "units_exceed_metered", f"units {r['units']} exceed the kind's metered work {metered}"
        )
    if r["unit_price"] != job.price:
        raise ExecFailure("wrong_unit_price", f"unit_price {r['unit_price']} != awarded price {job.price}")
    if r["price"] != job.price * r["units"]:  # also checked statically
        raise ExecFailure("wrong_price", f"price {r['price']} != unit_price × units")
    m = mk.job_miner(job)
    job.receipt = r
    job.receipt_sig = sig
    job.receipt_height = mk.h
    m.running -= 1
    mk.put_miner(m)
    mk.ex.put_object(running_key(m.miner, job.seq), None)
    unused = job.escrow - r["price"]
    mk.pay_from_escrow(job, job.client, unused)
    mk.set_state(job, COMPLETED)
    mk.put_job(job)
    mk.ex.emit(
        "receipt_accepted",
        job_id=_hex(job.job_id),
        receipt_id=_hex(B.receipt_id(r)),
        miner=_addr(m.miner),
        client=_addr(job.client),
        units=r["units"],
        price=str(r["price"]),
        refunded=str(unused),
        result_hash=_hex(r["result_hash"]),
    )
    if job.challenge_window:
        job.release_height = mk.h + job.challenge_window
        mk.ex.put_object(window_key(job.seq), job.job_id)
        mk.schedule(job.release_height, DUE_RELEASE, job.job_id)
    else:
        settle(mk, job, m)


def _due_release(mk: Market, job_id: bytes) -> None:
    job = mk.job(job_id)
    if job is None or job.state != COMPLETED or job.payment != ESCROWED:
        return  # a challenge failed the job
    if job.availability is not None or llm_disputes.has_open(mk, job):
        return  # settled when the open availability challenge or llm dispute closes (or failed)
    mk.ex.put_object(window_key(job.seq), None)
    settle(mk, job, mk.job_miner(job))


def _due_deadline(mk: Market, job_id: bytes) -> None:
    job = mk.job(job_id)
    if job is None or job.state != RUNNING:
        return  # receipted in time
    m = mk.job_miner(job)
    refunded, *_ = fail_job(mk, job, m, FAIL_TIMEOUT, running_key(m.miner, job.seq))
    emit_job_failed(mk, job, m, FAIL_TIMEOUT, refunded)


# --------------------------------------------------------------------------------------------------
# The block hook

_DUE = {
    DUE_AWARD: _due_award,
    DUE_DEADLINE: _due_deadline,
    DUE_RELEASE: _due_release,
    DUE_UNBOND: _due_unbond,
    **disputes.DUE,
    **llm_disputes.DUE,
    **sealed.DUE,
    **anon.DUE,
}


def market_end_block(ex: Execution) -> None:
    """Handle everything due at this height (awards, missed deadlines, releases, unbonds, availability
    deadlines) in the order it was scheduled, including entries a handler schedules for this very
    height, then drop the entries and the count."""
    key = due_key(ex.env.height)
    if ex.get_object(key) is None:
        return
    mk = Market(ex)
    i = 0
    while i < codec.decode(ex.get_object(key)):
        entry = due_entry_key(ex.env.height, i)
        tag, ident = codec.decode(ex.get_object(entry))
        _DUE[tag](mk, ident)
        ex.put_object(entry, None)
        i += 1
    mk.flush()
    ex.put_object(key, None)


def _cost(tx: Transaction) -> int:
    return B.body_cost(tx.type, tx.body)


TX_KINDS = (
    TxKind(B.TX_MINER_REGISTER, B.check_miner_register, _cost, apply_miner_register),
    TxKind(B.TX_MINER_UPDATE, B.check_miner_update, _cost, apply_miner_update),
    TxKind(B.TX_MINER_EXIT, B.check_miner_exit, _cost, apply_miner_exit),
    TxKind(B.TX_JOB_SUBMIT, B.check_job_submit, _cost, apply_job_submit),
    TxKind(B.TX_JOB_CANCEL, B.check_job_cancel, _cost, apply_job_cancel),
    TxKind(B.TX_BID, B.check_bid, _cost, apply_bid),
    TxKind(B.TX_RECEIPT, B.check_receipt, _cost, apply_receipt),
    *disputes.TX_KINDS,
    *models.TX_KINDS,
    *llm_disputes.TX_KINDS,
    *sealed.TX_KINDS,
    *attest.TX_KINDS,
    *anon.TX_KINDS,
)
MARKET_HOOK = BlockHook("market", order=50, end=market_end_block)


def register() -> None:
    """Register the market transaction kinds and block hook (idempotent; done on import)."""
    for k in TX_KINDS:
        register_tx_kind(k)
    register_block_hook(MARKET_HOOK)
    register_block_hook(tree_queue.HOOK)
