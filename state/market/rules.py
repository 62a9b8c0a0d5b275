"""Market rules: how each market transaction and the per-block hook change state.

Money moves only between account balances and two market pools recorded in ``mkt/stats``: job escrow
and miner bonds. Slashes that are not paid to a challenger are burned (``ex.burn``). So at every point
``sum(balances) + stats.escrow + stats.bonds == ex.supply()`` (checked by the tests).

Heights are inclusive: a bid is accepted up to and including the job's ``bid_close_height`` and the award
happens at the end of that block; a receipt up to ``deadline_height`` (a miss is handled at the end of
that block); a challenge up to ``release_height`` (payment is released at the end of that block).
"""

from __future__ import annotations

from typing import Any

from .. import codec
from ..codec import sha256
from ..crypto import KIND_RECEIPT, verify
from ..machine import BlockHook, ExecFailure, Execution, TxKind, register_block_hook, register_tx_kind
from ..merkle import verify_merkle_proof
from ..params import MarketParams
from ..slashing import settle_slash, slash_cut
from ..types import Transaction
from . import bodies as B
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
    FAIL_WRONG_RESULT,
    FAILED,
    QUEUED,
    REFUNDED,
    RELEASED,
    RUNNING,
    STATS_KEY,
    Job,
    Miner,
    Stats,
    awarded_key,
    client_key,
    due_key,
    job_key,
    miner_key,
    open_key,
    running_key,
    seq_key,
    window_key,
)


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _addr(pk: bytes) -> str:
    from ..address import encode_address

    return encode_address(pk)


class _Market:
    """Records read and written while applying one market transaction or hook run.

    Jobs, miners and the totals are cached and written back by :meth:`flush`; balance moves go straight
    to the execution (journaled, so a failed body is rolled back as a whole)."""

    def __init__(self, ex: Execution) -> None:
        self.ex = ex
        self.p: MarketParams = ex.env.params.market
        self.h = ex.env.height
        self._jobs: dict[bytes, Job | None] = {}
        self._miners: dict[bytes, Miner | None] = {}
        self._stats: Stats | None = None
        self._dirty_jobs: set[bytes] = set()
        self._dirty_miners: set[bytes] = set()

    # records ------------------------------------------------------------------------------------------
    def job(self, job_id: bytes) -> Job | None:
        if job_id not in self._jobs:
            raw = self.ex.get_object(job_key(job_id))
            self._jobs[job_id] = Job.decode(raw) if raw is not None else None
        return self._jobs[job_id]

    def need_job(self, job_id: bytes) -> Job:
        job = self.job(job_id)
        if job is None:
            raise ExecFailure("unknown_job", f"no job {_hex(job_id)}")
        return job

    def put_job(self, job: Job) -> None:
        self._jobs[job.job_id] = job
        self._dirty_jobs.add(job.job_id)

    def miner(self, pk: bytes) -> Miner | None:
        if pk not in self._miners:
            raw = self.ex.get_object(miner_key(pk))
            self._miners[pk] = Miner.decode(raw) if raw is not None else None
        return self._miners[pk]

    def put_miner(self, m: Miner) -> None:
        self._miners[m.miner] = m
        self._dirty_miners.add(m.miner)

    @property
    def stats(self) -> Stats:
        if self._stats is None:
            self._stats = Stats.decode_or_new(self.ex.get_object(STATS_KEY))
        return self._stats

    def flush(self) -> None:
        for job_id in sorted(self._dirty_jobs):
            self.ex.put_object(job_key(job_id), self._jobs[job_id].encode())  # type: ignore[union-attr]
        for pk in sorted(self._dirty_miners):
            self.ex.put_object(miner_key(pk), self._miners[pk].encode())  # type: ignore[union-attr]
        if self._stats is not None:
            self.ex.put_object(STATS_KEY, self._stats.encode())
        self._dirty_jobs.clear()
        self._dirty_miners.clear()

    # due lists ----------------------------------------------------------------------------------------
    def schedule(self, height: int, tag: str, ident: bytes) -> None:
        key = due_key(height)
        raw = self.ex.get_object(key)
        items = codec.decode(raw) if raw is not None else []
        items.append([tag, ident])
        self.ex.put_object(key, codec.encode(items))

    # state and money ----------------------------------------------------------------------------------
    def set_state(self, job: Job, state: str) -> None:
        by = self.stats.by_state
        if job.state in by:
            by[job.state] -= 1
            if by[job.state] == 0:
                del by[job.state]
        by[state] = by.get(state, 0) + 1
        job.state = state

    def lock_escrow(self, job: Job, amount: int) -> None:
        bal = self.ex.account(job.client).balance
        if bal < amount:
            raise ExecFailure(
                "insufficient_balance",
                f"job escrow max_price × max_units = {amount} exceeds the balance {bal} (after the fee)",
            )
        self.ex.debit(job.client, amount)
        job.escrow += amount
        self.stats.escrow += amount

    def pay_from_escrow(self, job: Job, to: bytes, amount: int) -> None:
        if amount <= 0:
            return
        assert amount <= job.escrow, "escrow underflow"
        job.escrow -= amount
        self.stats.escrow -= amount
        self.ex.credit(to, amount)
        if to == job.client:
            job.refunded += amount
        else:
            job.paid += amount
            self.stats.paid += amount

    def refund_all(self, job: Job) -> int:
        amount = job.escrow
        self.pay_from_escrow(job, job.client, amount)
        return amount

    def lock_bond(self, m: Miner, payer: bytes, amount: int, what: str) -> None:
        bal = self.ex.account(payer).balance
        if bal < amount:
            raise ExecFailure(
                "insufficient_balance", f"{what} of {amount} exceeds the balance {bal} (after the fee)"
            )
        self.ex.debit(payer, amount)
        m.bond += amount
        self.stats.bonds += amount

    def slash(
        self, m: Miner, bps: int, reason: str, job_id: bytes, beneficiary: bytes | None = None
    ) -> tuple[int, int, int]:
        """Take ``bps`` of the miner's bond: ``challenger_reward_bps`` of it to ``beneficiary`` (if any),
        the rest burned. Returns (slashed, rewarded, burned)."""
        amount = slash_cut(m.bond, bps)
        m.bond -= amount
        m.slashed += amount
        self.stats.bonds -= amount
        reward, burned = settle_slash(
            self.ex, amount, beneficiary=beneficiary, reward_bps=self.p.challenger_reward_bps
        )
        self.stats.burned += burned
        self.put_miner(m)
        self.ex.emit(
            "miner_slashed",
            miner=_addr(m.miner),
            job_id=_hex(job_id),
            reason=reason,
            amount=str(amount),
            reward=str(reward),
            burned=str(burned),
            bond=str(m.bond),
        )
        return amount, reward, burned

    # miner bookkeeping ---------------------------------------------------------------------------------
    def close_open_job(self, m: Miner) -> None:
        """One of the miner's awarded jobs reached its final state; an exiting miner past its exit
        height with nothing left open gets its bond back at the end of the next block."""
        m.open_jobs -= 1
        self.put_miner(m)
        if m.status == EXITING and m.open_jobs == 0 and self.h >= m.exit_height:
            self.schedule(self.h + 1, DUE_UNBOND, m.miner)


def _market_tx(fn: Any) -> Any:
    def apply(ex: Execution, tx: Transaction) -> None:
        mk = _Market(ex)
        fn(mk, tx)
        mk.flush()

    apply.__name__ = fn.__name__
    return apply


# --------------------------------------------------------------------------------------------------
# Miners


def _miner_fields(m: Miner) -> dict:
    return {"miner": _addr(m.miner), "bond": str(m.bond), "status": m.status}


@_market_tx
def apply_miner_register(mk: _Market, tx: Transaction) -> None:
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


def _need_miner(mk: _Market, pk: bytes) -> Miner:
    m = mk.miner(pk)
    if m is None or m.status == EXITED:
        raise ExecFailure("not_registered", "sender is not a registered miner")
    return m


@_market_tx
def apply_miner_update(mk: _Market, tx: Transaction) -> None:
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


@_market_tx
def apply_miner_exit(mk: _Market, tx: Transaction) -> None:
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


def _due_unbond(mk: _Market, pk: bytes) -> None:
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


@_market_tx
def apply_job_submit(mk: _Market, tx: Transaction) -> None:
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
    mk.lock_escrow(job, job.max_price * job.max_units)
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


@_market_tx
def apply_job_cancel(mk: _Market, tx: Transaction) -> None:
    job = mk.need_job(tx.body["job_id"])
    if tx.sender != job.client:
        raise ExecFailure("not_job_client", "only the job's client may cancel it")
    if job.state != QUEUED:
        reason, msg = _NOT_OPEN[job.state]
        raise ExecFailure(reason, f"cannot cancel: {msg} (state {job.state})")
    mk.stats.open_bids -= len(job.bids)
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


def _miner_ineligible(mk: _Market, m: Miner | None) -> tuple[str, str] | None:
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


@_market_tx
def apply_bid(mk: _Market, tx: Transaction) -> None:
    job = mk.need_job(tx.body["job_id"])
    price = tx.body["price"]
    if job.state != QUEUED:
        reason, msg = _NOT_OPEN[job.state]
        if job.state != CANCELED:
            reason = "bid_window_closed"
        raise ExecFailure(reason, f"cannot bid: {msg} (state {job.state})")
    if mk.h > job.bid_close_height:  # unreachable: the award runs at the end of bid_close_height
        raise ExecFailure("bid_window_closed", f"bid window closed at height {job.bid_close_height}")
    m = mk.miner(tx.sender)
    bad = _miner_ineligible(mk, m)
    if bad is not None:
        raise ExecFailure(*bad)
    assert m is not None
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


def _can_win(mk: _Market, job: Job, m: Miner | None) -> bool:
    return _miner_ineligible(mk, m) is None and m is not None and _requirement_failure(job, m) is None


def _due_award(mk: _Market, job_id: bytes) -> None:
    job = mk.job(job_id)
    if job is None or job.state != QUEUED:
        return  # canceled
    mk.stats.open_bids -= len(job.bids)
    mk.ex.put_object(open_key(job.seq), None)
    miners = {b[0]: mk.miner(b[0]) for b in job.bids}
    # A bidder that left, fell below the bond minimum, filled up or changed capabilities since it bid
    # is passed over.
    eligible = [b for b in job.bids if _can_win(mk, job, miners[b[0]])]
    if not eligible:
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
            bids=len(job.bids),
        )
        return
    reps = {pk: m.reputation for pk, m in miners.items() if m is not None}
    winner_pk, price, _ = eligible[award_order(eligible, reps)[0]]
    m = miners[winner_pk]
    assert m is not None
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


def _settle(mk: _Market, job: Job, m: Miner) -> None:
    """Release the payment to the miner (receipt accepted, challenge window over or none)."""
    amount = job.escrow
    mk.pay_from_escrow(job, m.miner, amount)
    job.payment = RELEASED
    job.settle_height = mk.h
    mk.put_job(job)
    m.reputation += mk.p.reputation_success
    m.completed += 1
    mk.close_open_job(m)
    mk.ex.emit(
        "payment_released",
        job_id=_hex(job.job_id),
        miner=_addr(m.miner),
        amount=str(amount),
        client=_addr(job.client),
    )


@_market_tx
def apply_receipt(mk: _Market, tx: Transaction) -> None:
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
    from gpu.kinds import get_kind

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
    m = mk.miner(job.miner)  # type: ignore[arg-type]
    assert m is not None
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
        _settle(mk, job, m)


def _due_release(mk: _Market, job_id: bytes) -> None:
    job = mk.job(job_id)
    if job is None or job.state != COMPLETED or job.payment != ESCROWED:
        return  # a challenge failed the job
    m = mk.miner(job.miner)  # type: ignore[arg-type]
    assert m is not None
    mk.ex.put_object(window_key(job.seq), None)
    _settle(mk, job, m)


def _due_deadline(mk: _Market, job_id: bytes) -> None:
    job = mk.job(job_id)
    if job is None or job.state != RUNNING:
        return  # receipted in time
    m = mk.miner(job.miner)  # type: ignore[arg-type]
    assert m is not None
    refunded, *_ = _fail_job(mk, job, m, FAIL_TIMEOUT, running_key(m.miner, job.seq))
    _emit_job_failed(mk, job, m, FAIL_TIMEOUT, refunded)


def _fail_job(
    mk: _Market, job: Job, m: Miner, failure: str, index_key: bytes, challenger: bytes | None = None
) -> tuple[int, int, int, int]:
    """The miner failed ``job`` (no receipt by the deadline, or a proven wrong result): refund the client,
    penalise the miner's reputation and bond (a share to the ``challenger``, if any). ``index_key`` is
    the job's state index entry to drop. Returns (refunded, slashed, rewarded, burned)."""
    refunded = mk.refund_all(job)
    mk.set_state(job, FAILED)
    job.payment = REFUNDED
    job.failure = failure
    job.settle_height = mk.h
    mk.put_job(job)
    mk.ex.put_object(index_key, None)
    if failure == FAIL_TIMEOUT:
        m.running -= 1
        penalty, bps = mk.p.reputation_timeout_penalty, mk.p.slash_timeout_bps
    else:
        penalty, bps = mk.p.reputation_wrong_result_penalty, mk.p.slash_wrong_result_bps
    m.reputation -= penalty
    m.failed += 1
    slashed, reward, burned = mk.slash(m, bps, failure, job.job_id, challenger)
    mk.close_open_job(m)
    return refunded, slashed, reward, burned


def _emit_job_failed(mk: _Market, job: Job, m: Miner, reason: str, refunded: int) -> None:
    mk.ex.emit(
        "job_failed",
        job_id=_hex(job.job_id),
        client=_addr(job.client),
        miner=_addr(m.miner),
        reason=reason,
        refunded=str(refunded),
    )


# --------------------------------------------------------------------------------------------------
# Challenges


@_market_tx
def apply_challenge(mk: _Market, tx: Transaction) -> None:
    body = tx.body
    job = mk.need_job(body["job_id"])
    if job.state != COMPLETED or job.payment != ESCROWED:
        raise ExecFailure(
            "not_in_challenge_window",
            f"only a completed job whose payment is still escrowed can be challenged (job is {job.state}, "
            f"payment {job.payment})",
        )
    if tx.sender == job.miner:
        raise ExecFailure("self_challenge", "a miner cannot challenge its own result")
    from gpu.kinds import get_kind

    kind = get_kind(job.kind)
    if not B.challengeable(kind):  # job_submit refuses challenge windows for these; kept for safety
        raise ExecFailure("not_challengeable", f"results of job kind '{job.kind}' cannot be challenged")
    blob = job.input_blob
    given = body.get("input")
    if blob is not None:
        if given is None:
            raise ExecFailure(
                "input_required", "the job's input is a blob: the challenge must carry its bytes"
            )
        if len(given) != blob[1] or sha256(given) != blob[0]:
            raise ExecFailure(
                "input_mismatch", "the challenge's input bytes do not match the job's input blob hash"
            )
        input_bytes: bytes | None = given
    else:
        if given is not None:
            raise ExecFailure(
                "unexpected_input", "the job has no blob input: the challenge must not carry one"
            )
        input_bytes = job.input_bytes
    count = kind.leaf_count(job.params)
    index, leaf = body["index"], body["leaf"]
    if index >= count:
        raise ExecFailure("bad_proof", f"leaf index {index} out of range: the result has {count} leaves")
    assert job.receipt is not None
    if not verify_merkle_proof(job.receipt["result_root"], leaf, index, count, list(body["proof"])):
        raise ExecFailure(
            "bad_proof", "the Merkle proof does not show this leaf under the receipt's result_root"
        )
    p = mk.p
    bal = mk.ex.account(tx.sender).balance
    if bal < p.challenge_bond:
        raise ExecFailure(
            "insufficient_balance", f"challenge bond {p.challenge_bond} exceeds the balance {bal}"
        )
    mk.ex.debit(tx.sender, p.challenge_bond)  # locked while the chain re-checks the leaf
    from gpu.kinds import JobParamError

    try:
        correct = bool(kind.check_leaf(job.params, input_bytes, index, leaf))
    except JobParamError as exc:  # e.g. a blob input that matches its hash but does not decode
        raise ExecFailure(
            "bad_input", f"the job's input cannot be re-checked ({exc.reason}): {exc}"
        ) from None
    mk.stats.challenges += 1
    if correct:
        cut = slash_cut(p.challenge_bond, p.slash_false_challenge_bps)
        mk.ex.credit(tx.sender, p.challenge_bond - cut)
        _, burned = settle_slash(mk.ex, cut)
        mk.stats.burned += burned
        job.false_challenges += 1
        mk.put_job(job)
        mk.ex.emit(
            "challenge_rejected",
            job_id=_hex(job.job_id),
            challenger=_addr(tx.sender),
            index=index,
            burned=str(burned),
            returned=str(p.challenge_bond - burned),
        )
        return
    mk.ex.credit(tx.sender, p.challenge_bond)
    m = mk.miner(job.miner)  # type: ignore[arg-type]
    assert m is not None
    refunded, slashed, reward, burned = _fail_job(mk, job, m, FAIL_WRONG_RESULT, window_key(job.seq), tx.sender)
    mk.ex.emit(
        "challenge_upheld",
        job_id=_hex(job.job_id),
        challenger=_addr(tx.sender),
        miner=_addr(m.miner),
        index=index,
        slashed=str(slashed),
        reward=str(reward),
        burned=str(burned),
        refunded=str(refunded),
    )
    _emit_job_failed(mk, job, m, FAIL_WRONG_RESULT, refunded)


# --------------------------------------------------------------------------------------------------
# The block hook

_DUE = {
    DUE_AWARD: _due_award,
    DUE_DEADLINE: _due_deadline,
    DUE_RELEASE: _due_release,
    DUE_UNBOND: _due_unbond,
}


def market_end_block(ex: Execution) -> None:
    """Handle everything due at this height (awards, missed deadlines, releases, unbonds), in the order
    it was scheduled, then drop the due list."""
    key = due_key(ex.env.height)
    raw = ex.get_object(key)
    if raw is None:
        return
    mk = _Market(ex)
    for tag, ident in codec.decode(raw):
        _DUE[tag](mk, ident)
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
    TxKind(B.TX_CHALLENGE, B.check_challenge, _cost, apply_challenge),
)
MARKET_HOOK = BlockHook("market", order=50, end=market_end_block)


def register() -> None:
    """Register the market transaction kinds and block hook (idempotent; done on import)."""
    for k in TX_KINDS:
        register_tx_kind(k)
    register_block_hook(MARKET_HOOK)
