"""The market's ledger: the records one market transaction or hook run reads and writes, and the money
moves every rule shares (escrow, bonds, slashes, settlement, failing a job).

Money moves only between account balances and two market pools recorded in ``mkt/stats``: job escrow
and miner bonds. Slashes that are not paid to a challenger are burned (``ex.burn``). So at every point
``sum(balances) + stats.escrow + stats.bonds == ex.supply()`` (checked by the tests). Broken internal
invariants raise :class:`state.errors.InvariantError` (never ``assert``: ``python -O`` removes those).
"""

from __future__ import annotations

from typing import Any

from .. import codec
from ..address import encode_address
from ..errors import InvariantError
from ..machine import ExecFailure, Execution
from ..params import MarketParams
from ..slashing import settle_slash, slash_cut
from ..types import Transaction
from .records import (
    DUE_UNBOND,
    EXITING,
    FAIL_TIMEOUT,
    FAIL_UNAVAILABLE,
    FAILED,
    REFUNDED,
    RELEASED,
    STATS_KEY,
    Job,
    Miner,
    Stats,
    availability_key,
    due_entry_key,
    due_key,
    job_key,
    miner_key,
)


def hex_id(b: bytes) -> str:
    return "0x" + b.hex()


def address(pk: bytes) -> str:
    return encode_address(pk)


_hex, _addr = hex_id, address


class Market:
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

    def job_miner(self, job: Job) -> Miner:
        """The miner an awarded job was given to (its record always exists)."""
        m = self.miner(job.miner) if job.miner is not None else None
        if m is None:
            raise InvariantError(f"awarded job {_hex(job.job_id)} has no miner record")
        return m

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
        from .anon import refresh  # a miner's anonymous-bidder leaf follows its record

        for pk in sorted(self._dirty_miners):
            self.ex.put_object(miner_key(pk), self._miners[pk].encode())  # type: ignore[union-attr]
            refresh(self, self._miners[pk])  # type: ignore[arg-type]
        if self._stats is not None:
            self.ex.put_object(STATS_KEY, self._stats.encode())
        self._dirty_jobs.clear()
        self._dirty_miners.clear()

    # due lists ----------------------------------------------------------------------------------------
    def schedule(self, height: int, tag: str, ident: bytes) -> None:
        """Handle ``ident`` under ``tag`` at the end of block ``height`` (after what is already due then).
        One small object per entry plus a count, so a block of N submits schedules in O(N)."""
        key = due_key(height)
        raw = self.ex.get_object(key)
        n = codec.decode(raw) if raw is not None else 0
        self.ex.put_object(due_entry_key(height, n), codec.encode([tag, ident]))
        self.ex.put_object(key, codec.encode(n + 1))

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
        if amount > job.escrow:
            raise InvariantError(f"escrow underflow: paying {amount} from {job.escrow}")
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



def market_tx(fn: Any) -> Any:
    def apply(ex: Execution, tx: Transaction) -> None:
        mk = Market(ex)
        fn(mk, tx)
        mk.flush()

    apply.__name__ = fn.__name__
    return apply



def settle(mk: Market, job: Job, m: Miner) -> None:
    """Release the payment to the miner (receipt accepted, challenge window over or none)."""
    amount = job.escrow
    mk.pay_from_escrow(job, m.miner, amount)
    job.payment = RELEASED
    job.settle_height = mk.h
    mk.put_job(job)
    m.reputation += mk.p.reputation_success
    m.completed += 1
    mk.close_open_job(m)
    from .attest import on_settle  # (attest builds on this module)

    on_settle(mk, job.job_id, job.kind, job.receipt["units"] if job.receipt else 0)
    mk.ex.emit(
        "payment_released",
        job_id=_hex(job.job_id),
        miner=_addr(m.miner),
        amount=str(amount),
        client=_addr(job.client),
    )



def fail_job(
    mk: Market, job: Job, m: Miner, failure: str, index_key: bytes, challenger: bytes | None = None
) -> tuple[int, int, int, int]:
    """The miner failed ``job`` (no receipt by the deadline, a proven wrong result, or a result it did not
    make available): refund the client,
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
    elif failure == FAIL_UNAVAILABLE:
        penalty, bps = mk.p.reputation_wrong_result_penalty, mk.p.slash_unavailable_bps
    else:
        penalty, bps = mk.p.reputation_wrong_result_penalty, mk.p.slash_wrong_result_bps
    m.reputation -= penalty
    m.failed += 1
    slashed, reward, burned = mk.slash(m, bps, failure, job.job_id, challenger)
    mk.close_open_job(m)
    return refunded, slashed, reward, burned


def emit_job_failed(mk: Market, job: Job, m: Miner, reason: str, refunded: int) -> None:
    mk.ex.emit(
        "job_failed",
        job_id=_hex(job.job_id),
        client=_addr(job.client),
        miner=_addr(m.miner),
        reason=reason,
        refunded=str(refunded),
    )


def close_availability(mk: Market, job: Job, *, returned_to_challenger: bool) -> dict:
    """Close the job's open availability challenge; its bond goes back to the challenger or, when the
    miner answered, to the miner. Returns the closed challenge."""
    da = job.availability
    if da is None or job.miner is None:
        raise InvariantError(f"job {hex_id(job.job_id)} has no open availability challenge")
    job.availability = None
    mk.put_job(job)
    mk.ex.put_object(availability_key(job.miner, job.seq), None)
    mk.stats.availability_bonds -= da["bond"]
    mk.ex.credit(da["challenger"] if returned_to_challenger else job.miner, da["bond"])
    return da


def reject_challenge(mk: Market, job: Job, challenger: bytes, bond: int) -> tuple[int, int]:
    """A challenge of ``job`` proved false: ``slash_false_challenge_bps`` of the ``bond`` is burned, the
    rest goes back to ``challenger``, and the job counts one more false challenge. Returns ``(burned,
    returned)`` (``returned`` as the events report it: the bond less what was burned)."""
    cut = slash_cut(bond, mk.p.slash_false_challenge_bps)
    mk.ex.credit(challenger, bond - cut)
    _, burned = settle_slash(mk.ex, cut)
    mk.stats.burned += burned
    job.false_challenges += 1
    mk.put_job(job)
    return burned, bond - burned
