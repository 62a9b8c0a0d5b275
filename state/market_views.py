"""Read side of the compute market: JSON views for RPC and typed queries for the miner and verifier roles.

Every function reads committed state through ``get_object(key) -> bytes | None`` and/or
``scan(prefix) -> Iterator[(key, value)]`` (object keys in ascending order), so it works on the node's
store as well as on a test's dict. JSON conventions (DESIGN §1, §8): snake_case fields, ids 0x-hex,
accounts ``ait1…`` addresses, amounts decimal strings, heights and counts numbers.

Cursors are opaque strings returned as ``next_cursor`` (None at the end of the list).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .address import encode_address
from .market.bodies import receipt_json
from .market.records import (
    ACTIVE,
    AVAILABILITY_PREFIX,
    AWARDED_PREFIX,
    CLIENT_PREFIX,
    COMPLETED,
    ESCROWED,
    JOB_STATES,
    MINER_PREFIX,
    OPEN_PREFIX,
    QUEUED,
    RUNNING,
    RUNNING_PREFIX,
    SEQ_PREFIX,
    STATS_KEY,
    WINDOW_PREFIX,
    Job,
    Miner,
    Stats,
    job_key,
    miner_key,
)

GetObject = Callable[[bytes], "bytes | None"]
Scan = Callable[[bytes], Iterator[tuple[bytes, bytes]]]
MAX_LIMIT = 500


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _jsonable(v: Any) -> Any:
    """Job params and similar free-form CBOR values: bytes become 0x-hex, the rest stays."""
    if isinstance(v, bytes):
        return _hex(v)
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


def _get_via_scan(scan: Scan, key: bytes) -> bytes | None:
    for k, v in scan(key):
        if k == key:
            return v
        break
    return None


# --------------------------------------------------------------------------------------------------
# Raw records


def load_job(get_object: GetObject, job_id: bytes) -> Job | None:
    """The decoded job record (params, input descriptor, bids, receipt...), or None."""
    raw = get_object(job_key(job_id))
    return Job.decode(raw) if raw is not None else None


def load_miner(get_object: GetObject, pk: bytes) -> Miner | None:
    raw = get_object(miner_key(pk))
    return Miner.decode(raw) if raw is not None else None


def load_stats(get_object: GetObject) -> Stats:
    return Stats.decode_or_new(get_object(STATS_KEY))


# --------------------------------------------------------------------------------------------------
# JSON views


def input_json(job: Job) -> dict | None:
    if job.input is None:
        return None
    if "inline" in job.input:
        data = job.input["inline"]
        return {"type": "inline", "size": len(data), "data": _hex(data)}
    return {"type": "blob", "hash": _hex(job.input["blob"]), "size": job.input["size"]}


def bids_json(job: Job) -> list[dict]:
    return [{"miner": encode_address(m), "price": str(p), "height": h} for m, p, h in job.bids]


def availability_json(job: Job) -> dict | None:
    """The open availability challenge: who raised it, the leaves named and the answer deadline."""
    da = job.availability
    if da is None:
        return None
    return {
        "challenger": encode_address(da["challenger"]),
        "indices": list(da["indices"]),
        "deadline": da["deadline"],
        "bond": str(da["bond"]),
    }


def job_json(job: Job, chain_id: str | None = None) -> dict:
    """The RPC view of a job."""
    return {
        "job_id": _hex(job.job_id),
        "seq": job.seq,
        "client": encode_address(job.client),
        "kind": job.kind,
        "version": job.version,
        "params": _jsonable(job.params),
        "input": input_json(job),
        "max_price": str(job.max_price),
        "max_units": job.max_units,
        "bid_window": job.bid_window,
        "deadline": job.deadline,
        "verify": dict(job.verify) if job.verify else None,
        "requirements": _jsonable(job.requirements),
        "state": job.state,
        "payment": job.payment,
        "escrow": str(job.escrow),
        "submitted_height": job.submitted_height,
        "bid_close_height": job.bid_close_height,
        "bids": bids_json(job),
        "miner": encode_address(job.miner) if job.miner is not None else None,
        "price": str(job.price) if job.miner is not None else None,
        "award_height": job.award_height or None,
        "deadline_height": job.deadline_height or None,
        "receipt_height": job.receipt_height or None,
        "release_height": job.release_height or None,
        "settle_height": job.settle_height or None,
        "paid": str(job.paid),
        "refunded": str(job.refunded),
        "failure": job.failure,
        "false_challenges": job.false_challenges,
        "availability": availability_json(job),
        "availability_rounds": job.availability_rounds,
        "availability_answers": [_hex(h) for h in job.availability_answers],
        "receipt": receipt_json(job.receipt, job.receipt_sig, chain_id)
        if job.receipt is not None and job.receipt_sig is not None
        else None,
    }


def get_job(get_object: GetObject, job_id: bytes, *, chain_id: str | None = None) -> dict | None:
    """The job's RPC view; a sealed-bid job also carries ``sealed`` (terms, commitments and sealed
    openings of its bids, and the outcome — never a losing price)."""
    job = load_job(get_object, job_id)
    if job is None:
        return None
    out = job_json(job, chain_id)
    sa = load_sealed(get_object, job_id)
    if sa is not None:
        out["sealed"] = sealed_json(sa)
    from .market.anon import anon_json
    from .market.anon import get as get_anon
    from .market.attest import attest_info

    aa = get_anon(get_object, job_id)
    if aa is not None:
        out["anonymous"] = anon_json(aa)

    att = attest_info(get_object, job_id)
    if att is not None:
        out["attest"] = att
    return out


def load_sealed(get_object: GetObject, job_id: bytes):  # noqa: ANN201
    """The job's sealed auction record (:class:`state.market.sealed.SealedAuction`), or None."""
    from .market.sealed import SealedAuction, sealed_key

    raw = get_object(sealed_key(job_id))
    return None if raw is None else SealedAuction.decode(raw)


def sealed_json(sa: Any) -> dict:
    return {
        "bits": sa.bits,
        "key": _hex(sa.key),
        "deposit": str(sa.deposit),
        "settle_window": sa.settle_window,
        "settle_height": sa.settle_height,
        "bids": [
            {"miner": encode_address(b[0]), "commitment": _hex(b[1]), "sealed": _hex(b[2]), "height": b[3]}
            for b in sa.bids
        ],
        "winner": encode_address(sa.winner) if sa.winner else None,
        "winning_tick": sa.tick if sa.winner else None,
        "faulty": [encode_address(pk) for pk in sa.faulty],
        "second_price": sa.second_price,
        "second_tick": sa.second_tick,
    }


def get_bids(get_object: GetObject, job_id: bytes) -> list[dict] | None:
    """Bids in arrival order, or None for an unknown job."""
    job = load_job(get_object, job_id)
    return bids_json(job) if job is not None else None


def get_receipt(get_object: GetObject, job_id: bytes, *, chain_id: str | None = None) -> dict | None:
    """The job's receipt in its DESIGN §6 JSON shape, or None (unknown job or no receipt yet)."""
    job = load_job(get_object, job_id)
    if job is None or job.receipt is None or job.receipt_sig is None:
        return None
    return receipt_json(job.receipt, job.receipt_sig, chain_id)


def miner_json(m: Miner) -> dict:
    caps = m.capabilities
    return {
        "address": encode_address(m.miner),
        "status": m.status,
        "bond": str(m.bond),
        "capabilities": {
            "backend": caps["backend"],
            "device": caps["device"],
            "memory": caps["memory"],
            "compute_capability": caps["compute_capability"],
            "throughput": dict(caps["throughput"]),
        },
        "prices": {k: str(v) for k, v in m.prices.items()},
        "reputation": m.reputation,
        "registered_height": m.registered_height,
        "exit_height": m.exit_height or None,
        "running_jobs": m.running,
        "open_jobs": m.open_jobs,
        "jobs_completed": m.completed,
        "jobs_failed": m.failed,
        "slashed": str(m.slashed),
    }


def get_miner(get_object: GetObject, pk: bytes) -> dict | None:
    m = load_miner(get_object, pk)
    return miner_json(m) if m is not None else None


def _limit(limit: int) -> int:
    if type(limit) is not int or limit < 1:
        raise ValueError("limit must be a positive integer")
    return min(limit, MAX_LIMIT)


def list_miners(
    scan: Scan, cursor: str | None = None, limit: int = 50, *, status: str | None = None
) -> tuple[list[dict], str | None]:
    """Miners in public-key order. ``cursor``: the ``next_cursor`` of the previous page."""
    limit = _limit(limit)
    after = _parse_miner_cursor(cursor)
    items: list[dict] = []
    last_pk = b""
    for key, raw in scan(MINER_PREFIX):
        pk = key[len(MINER_PREFIX) :]
        if after is not None and pk <= after:
            continue
        m = Miner.decode(raw)
        if status is not None and m.status != status:
            continue
        if len(items) == limit:
            return items, _hex(last_pk)
        items.append(miner_json(m))
        last_pk = pk
    return items, None


def _parse_miner_cursor(cursor: str | None) -> bytes | None:
    if cursor is None:
        return None
    if type(cursor) is not str or not cursor.startswith("0x") or len(cursor) != 66:
        raise ValueError("cursor must be the next_cursor of a previous page")
    try:
        return bytes.fromhex(cursor[2:])
    except ValueError:
        raise ValueError("cursor must be the next_cursor of a previous page") from None


# --------------------------------------------------------------------------------------------------
# Job lists


def _index_job_ids(scan: Scan, prefix: bytes) -> Iterator[tuple[int, bytes]]:
    """(seq, job_id) from an index whose keys end in <seq8> and whose values are job ids."""
    for key, value in scan(prefix):
        yield int.from_bytes(key[-8:], "big"), value


def _jobs_from_index(
    scan: Scan, get_object: GetObject | None, prefix: bytes, after_seq: int = -1
) -> Iterator[Job]:
    get = get_object if get_object is not None else (lambda k: _get_via_scan(scan, k))
    for seq, job_id in _index_job_ids(scan, prefix):
        if seq <= after_seq:
            continue
        raw = get(job_key(job_id))
        if raw is not None:
            yield Job.decode(raw)


def list_jobs(
    scan: Scan,
    *,
    state: str | None = None,
    client: bytes | None = None,
    miner: bytes | None = None,
    kind: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
    get_object: GetObject | None = None,
    chain_id: str | None = None,
) -> tuple[list[dict], str | None]:
    """Jobs in submission order, filtered; returns (job views, next_cursor). ``client``/``miner`` are
    public keys. Uses the narrowest index (client's jobs, miner's jobs, open jobs, running jobs).
    ``get_object`` (optional) makes record lookups direct instead of through ``scan``."""
    limit = _limit(limit)
    if state is not None and state not in JOB_STATES:
        raise ValueError(f"state must be one of {list(JOB_STATES)}")
    after = -1
    if cursor is not None:
        if type(cursor) is not str or not cursor.isdigit():
            raise ValueError("cursor must be the next_cursor of a previous page")
        after = int(cursor) - 1
    if client is not None:
        prefix = CLIENT_PREFIX + client
    elif miner is not None and state == RUNNING:
        prefix = RUNNING_PREFIX + miner
    elif miner is not None:
        prefix = AWARDED_PREFIX + miner
    elif state == QUEUED:
        prefix = OPEN_PREFIX
    else:
        prefix = SEQ_PREFIX
    items: list[dict] = []
    for job in _jobs_from_index(scan, get_object, prefix, after):
        if state is not None and job.state != state:
            continue
        if client is not None and job.client != client:
            continue
        if miner is not None and job.miner != miner:
            continue
        if kind is not None and job.kind != kind:
            continue
        if len(items) == limit:
            return items, str(job.seq)
        items.append(job_json(job, chain_id))
    return items, None


def market_stats(scan: Scan) -> dict:
    """Totals for metrics and ``market_stats`` RPC: jobs by state, escrow and bonds locked, open bids."""
    raw = _get_via_scan(scan, STATS_KEY)
    st = Stats.decode_or_new(raw)
    return {
        "jobs_total": st.jobs,
        "jobs_by_state": {s: st.by_state.get(s, 0) for s in JOB_STATES},
        "escrow_locked": str(st.escrow),
        "bonds_locked": str(st.bonds),
        "open_bids": st.open_bids,
        "miners_active": st.miners,
        "paid_total": str(st.paid),
        "burned_total": str(st.burned),
        "challenges_decided": st.challenges,
        "availability_challenges": st.availability_challenges,
        "availability_bonds_locked": str(st.availability_bonds),
        "dispute_bonds_locked": str(st.dispute_bonds),  # open llm-generate disputes
        "sealed_deposits_locked": str(st.sealed_deposits),  # sealed bids of jobs not yet awarded
    }


# --------------------------------------------------------------------------------------------------
# Miner and verifier roles (typed records)


def bid_blocker(job: Job, miner: Miner, height: int | None = None) -> str | None:
    """Why ``miner`` may not bid on ``job`` now (a reason code as the chain would give), or None.
    Chain-parameter checks (bond minimum, open-job limit) are left to the chain."""
    if job.state != QUEUED:
        return "bid_window_closed"
    if height is not None and height > job.bid_close_height:
        return "bid_window_closed"
    if miner.status != ACTIVE:
        return "miner_exiting" if miner.status == "exiting" else "not_registered"
    if miner.miner == job.client:
        return "self_bid"
    caps, req = miner.capabilities, job.requirements
    if job.kind not in caps["throughput"]:
        return "kind_not_supported"
    if "min_memory" in req and caps["memory"] < req["min_memory"]:
        return "insufficient_memory"
    if "backend" in req and caps["backend"] != req["backend"]:
        return "backend_mismatch"
    if any(b[0] == miner.miner for b in job.bids):
        return "duplicate_bid"
    return None


def biddable_jobs(
    scan: Scan, get_object: GetObject, miner_pk: bytes, *, height: int | None = None, limit: int = 100
) -> list[Job]:
    """QUEUED jobs this miner could bid on (requirements met, not its own, not already bid on), oldest
    first. ``height``: the height the bid would land in (jobs whose window closes before are left out)."""
    m = load_miner(get_object, miner_pk)
    if m is None:
        return []
    out: list[Job] = []
    for job in _jobs_from_index(scan, get_object, OPEN_PREFIX):
        if bid_blocker(job, m, height) is None:
            out.append(job)
            if len(out) >= limit:
                break
    return out


def assigned_jobs(scan: Scan, get_object: GetObject, miner_pk: bytes) -> list[Job]:
    """Jobs awarded to this miner that still need a receipt (RUNNING), oldest first; each has
    ``deadline_height`` (last height a receipt is accepted) and ``price``."""
    return [j for j in _jobs_from_index(scan, get_object, RUNNING_PREFIX + miner_pk) if j.state == RUNNING]


def challengeable_jobs(scan: Scan, get_object: GetObject, *, kind: str | None = None) -> list[Job]:
    """Jobs in their challenge window (COMPLETED, payment escrowed; challenges accepted up to and
    including ``release_height``), oldest first: what verifiers re-execute."""
    return [
        j
        for j in _jobs_from_index(scan, get_object, WINDOW_PREFIX)
        if j.state == COMPLETED and j.payment == ESCROWED and (kind is None or j.kind == kind)
    ]


def availability_challenged_jobs(scan: Scan, get_object: GetObject, miner_pk: bytes) -> list[Job]:
    """Jobs of this miner with an open availability challenge, oldest first: what the miner must
    answer (publish ``job.availability["indices"]`` with Merkle proofs) by ``availability["deadline"]``."""
    return [
        j for j in _jobs_from_index(scan, get_object, AVAILABILITY_PREFIX + miner_pk) if j.availability is not None
    ]


def should_verify(job: Job, verifier: bytes) -> bool:
    """Deterministic sampling of the job's ``verify.rate_bps``: whether ``verifier`` should re-execute
    it (the same answer every time for the same verifier and job)."""
    from .codec import sha256

    rate = job.verify["rate_bps"] if job.verify else 0
    if rate <= 0:
        return False
    return int.from_bytes(sha256(job.job_id + verifier)[:8], "big") % 10_000 < rate
