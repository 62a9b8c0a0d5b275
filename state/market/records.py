"""Stored records of the compute market: jobs, miners, the totals record, object keys and due lists.

Every record is a canonical CBOR map with text keys, stored as a generic state object (so it is part of
the state root). Keys (``<seq8>`` and ``<height8>`` are 8-byte big-endian integers, so a prefix scan
yields them in order):

=====================================  ===========================================================
``mkt/j/<job_id32>``                   the job record (:class:`Job`)
``mkt/m/<pubkey32>``                   the miner record (:class:`Miner`)
``mkt/stats``                          market totals (:class:`Stats`): escrow, bonds, counts
``mkt/d/<height8>``                    due count: how many entries are due at the end of that block
``mkt/d/<height8><i4>``                due entry ``i``: ``[tag, id]`` (one object each: scheduling is O(1))
``mkt/n/<seq8>``                       job id, every job in submission order
``mkt/c/<client32><seq8>``             job id, jobs of a client
``mkt/a/<miner32><seq8>``              job id, jobs awarded to a miner (kept)
``mkt/q/<seq8>``                       job id while the job is QUEUED (open for bids)
``mkt/r/<miner32><seq8>``              job id while awarded to the miner and not receipted (RUNNING)
``mkt/w/<seq8>``                       job id while COMPLETED with payment escrowed (challenge window)
``mkt/v/<miner32><seq8>``              job id while an availability challenge against the miner is open
``mkt/L/<job_id32>``                   llm-generate disputes of a job: ``[rounds, open]``
``mkt/L/<job_id32><i1>``               llm-generate dispute ``i`` of the job (``llm_disputes.Dispute``)
``mkt/s/<job_id32>``                   the sealed auction of a sealed-bid job (``sealed.SealedAuction``)
=====================================  ===========================================================

Due tags: ``award`` (end of a bid window), ``deadline`` (receipt deadline), ``release`` (end of a
challenge window), ``unbond`` (a miner's exit height), ``availability`` (an availability challenge's
answer deadline), ``llm_steps`` / ``llm_proof`` (an llm-generate dispute's answer deadlines),
``sealed_settle`` (the end of a sealed-bid job's award window).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .. import codec
from ..errors import DecodeError

# Job states and payment states (DESIGN §6).
QUEUED = "QUEUED"
RUNNING = "RUNNING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELED = "CANCELED"
EXPIRED = "EXPIRED"
JOB_STATES = (QUEUED, RUNNING, COMPLETED, FAILED, CANCELED, EXPIRED)
ESCROWED = "escrowed"
RELEASED = "released"
REFUNDED = "refunded"

# Miner states.
ACTIVE = "active"
EXITING = "exiting"
EXITED = "exited"

# Failure causes recorded on FAILED jobs.
FAIL_TIMEOUT = "timeout"
FAIL_WRONG_RESULT = "wrong_result"
FAIL_UNAVAILABLE = "unavailable"

PREFIX = b"mkt/"
JOB_PREFIX = b"mkt/j/"
MINER_PREFIX = b"mkt/m/"
STATS_KEY = b"mkt/stats"
DUE_PREFIX = b"mkt/d/"
SEQ_PREFIX = b"mkt/n/"
CLIENT_PREFIX = b"mkt/c/"
AWARDED_PREFIX = b"mkt/a/"
OPEN_PREFIX = b"mkt/q/"
RUNNING_PREFIX = b"mkt/r/"
WINDOW_PREFIX = b"mkt/w/"
AVAILABILITY_PREFIX = b"mkt/v/"
LLM_DISPUTE_PREFIX = b"mkt/L/"
SEALED_PREFIX = b"mkt/s/"

DUE_AWARD = "award"
DUE_DEADLINE = "deadline"
DUE_RELEASE = "release"
DUE_UNBOND = "unbond"
DUE_AVAILABILITY = "availability"
DUE_LLM_STEPS = "llm_steps"
DUE_LLM_PROOF = "llm_proof"
DUE_SEALED_SETTLE = "sealed_settle"

MAX_RECORD_BYTES = 256 * 1024


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def job_key(job_id: bytes) -> bytes:
    return JOB_PREFIX + job_id


def miner_key(pk: bytes) -> bytes:
    return MINER_PREFIX + pk


def due_key(height: int) -> bytes:
    """The count of entries due at the end of block ``height``."""
    return DUE_PREFIX + u64(height)


def due_entry_key(height: int, index: int) -> bytes:
    return DUE_PREFIX + u64(height) + index.to_bytes(4, "big")


def seq_key(seq: int) -> bytes:
    return SEQ_PREFIX + u64(seq)


def client_key(client: bytes, seq: int) -> bytes:
    return CLIENT_PREFIX + client + u64(seq)


def awarded_key(miner: bytes, seq: int) -> bytes:
    return AWARDED_PREFIX + miner + u64(seq)


def open_key(seq: int) -> bytes:
    return OPEN_PREFIX + u64(seq)


def running_key(miner: bytes, seq: int) -> bytes:
    return RUNNING_PREFIX + miner + u64(seq)


def window_key(seq: int) -> bytes:
    return WINDOW_PREFIX + u64(seq)


def availability_key(miner: bytes, seq: int) -> bytes:
    return AVAILABILITY_PREFIX + miner + u64(seq)


class _Record:
    """Encode/decode a dataclass as a canonical CBOR map of its fields (exact key set)."""

    def to_obj(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    def encode(self) -> bytes:
        return codec.encode(self.to_obj())

    @classmethod
    def from_obj(cls, obj: Any):  # noqa: ANN206
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        if type(obj) is not dict or obj.keys() != names:
            raise DecodeError(f"{cls.__name__.lower()} record: unexpected fields")
        return cls(**obj)

    @classmethod
    def decode(cls, raw: bytes):  # noqa: ANN206
        return cls.from_obj(codec.decode(raw, max_bytes=MAX_RECORD_BYTES))


@dataclass(slots=True)
class Bid(_Record):
    miner: bytes
    price: int
    height: int


@dataclass(slots=True)
class Job(_Record):
    """A job: the client's order, its bids, the award, the receipt and the settlement."""

    job_id: bytes  # the job_submit transaction's hash
    seq: int  # submission order (0, 1, ...)
    client: bytes
    kind: str
    version: int
    params: dict
    input: dict | None  # {"inline": bytes} | {"blob": bytes32, "size": int} | None
    max_price: int
    max_units: int
    bid_window: int
    deadline: int  # blocks from award to the receipt deadline
    verify: dict | None  # {"rate_bps", "challenge_window"} | None
    requirements: dict  # {"min_memory"?, "backend"?}
    submitted_height: int
    bid_close_height: int  # last height at which bids are accepted; awarded at its end
    state: str = QUEUED
    payment: str = ESCROWED
    escrow: int = 0  # base units still locked for this job
    bids: list = field(default_factory=list)  # [[miner, price, height], ...] in arrival order
    miner: bytes | None = None
    price: int = 0  # awarded unit price
    award_height: int = 0
    deadline_height: int = 0  # last height at which the receipt is accepted
    receipt: dict | None = None
    receipt_sig: bytes | None = None
    receipt_height: int = 0
    release_height: int = 0  # last height of the challenge window; payment released at its end
    settle_height: int = 0  # height at which the job reached its final payment state
    paid: int = 0  # paid to the miner
    refunded: int = 0  # returned to the client
    failure: str | None = None  # FAIL_TIMEOUT | FAIL_WRONG_RESULT | FAIL_UNAVAILABLE
    false_challenges: int = 0
    # The open availability challenge: {"challenger", "indices", "deadline", "bond"} | None. While it is
    # open the payment stays escrowed.
    availability: dict | None = None
    availability_rounds: int = 0  # availability challenges raised (bounded per job)
    availability_answers: list = field(default_factory=list)  # hashes of the miner's answering txs
    @property
    def challenge_window(self) -> int:
        return self.verify["challenge_window"] if self.verify else 0

    @property
    def input_bytes(self) -> bytes | None:
        """The inline input, or None (no input, or a blob the caller fetches by ``input_blob``)."""
        return self.input["inline"] if self.input and "inline" in self.input else None

    @property
    def input_blob(self) -> tuple[bytes, int] | None:
        """(blob hash, size) when the input is a blob."""
        return (self.input["blob"], self.input["size"]) if self.input and "blob" in self.input else None

    @property
    def input_size(self) -> int | None:
        if self.input is None:
            return None
        return len(self.input["inline"]) if "inline" in self.input else self.input["size"]

    def bid_list(self) -> list[Bid]:
        return [Bid(m, p, h) for m, p, h in self.bids]


@dataclass(slots=True)
class Miner(_Record):
    """A registered miner: bond, capabilities, advertised prices and track record."""

    miner: bytes
    status: str
    bond: int
    capabilities: dict
    prices: dict
    reputation: int = 0
    registered_height: int = 0
    exit_height: int = 0  # bond returned at the end of this height (or later, once no job is open)
    running: int = 0  # awarded jobs without a receipt
    open_jobs: int = 0  # awarded jobs not yet settled (running + in a challenge window)
    completed: int = 0
    failed: int = 0
    slashed: int = 0  # total slashed from the bond


@dataclass(slots=True)
class Stats(_Record):
    """Market totals, kept up to date by every market transaction and hook."""

    jobs: int = 0  # jobs ever submitted (= next seq)
    by_state: dict = field(default_factory=dict)  # state -> count
    escrow: int = 0  # locked in job escrow
    bonds: int = 0  # locked in miner bonds (active, exiting)
    open_bids: int = 0  # bids on QUEUED jobs
    miners: int = 0  # registered and active
    paid: int = 0  # total paid to miners
    burned: int = 0  # total destroyed by slashes
    challenges: int = 0  # challenges decided (upheld + rejected)
    availability_challenges: int = 0  # availability challenges raised
    availability_bonds: int = 0  # locked by open availability challenges
    dispute_bonds: int = 0  # locked by open llm-generate disputes (state/market/llm_disputes.py)
    sealed_deposits: int = 0  # locked by sealed bids of jobs not yet awarded (state/market/sealed.py)

    @classmethod
    def decode_or_new(cls, raw: bytes | None) -> Stats:
        return cls() if raw is None else cls.decode(raw)

    def locked(self) -> int:
        """Everything the market holds outside account balances (part of the total supply)."""
        return self.escrow + self.bonds + self.availability_bonds + self.dispute_bonds + self.sealed_deposits


def decode_job(raw: bytes) -> Job:
    return Job.decode(raw)


def decode_miner(raw: bytes) -> Miner:
    return Miner.decode(raw)
