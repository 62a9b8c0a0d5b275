"""Market disputes: challenges of a wrong result and availability challenges, metered.

Every dispute transaction costs dispute work units (DWU, about 1 µs of one core) that the chain computes
from the job record *before* the transaction runs (:func:`challenge_work`, :func:`availability_work`);
``state.machine.apply_tx`` counts them against ``max_dispute_work_per_block``, so a block full of
disputes validates within a known time (``bench/disputes.py``). A job whose leaf check would cost more
than ``max_challenge_work`` takes no challenge window, so every admissible challenge fits in a block.

**Wrong result** (``challenge``): the challenger names one leaf of the result with its Merkle proof
against the receipt's ``result_root``; the chain re-checks that leaf. The challenger locks
``challenge_bond + work × dispute_work_price``: a false challenge loses ``slash_false_challenge_bps`` of
it (burned), so it pays for the work it made every validator do.

**Availability** (``availability_challenge`` → ``availability_response``): a client or verifier that
cannot fetch a result names up to ``max_availability_chunks`` leaves while the payment is escrowed,
locking ``availability_bond``. The payment is not released while the challenge is open. The miner
answers by publishing those leaves with Merkle proofs against its receipt within
``availability_response_blocks`` (the bond is then paid to the miner for publishing); otherwise the job
FAILS as ``unavailable`` at the end of the deadline block: the client is refunded in full, the miner's
bond is slashed by ``slash_unavailable_bps`` (``challenger_reward_bps`` of it to the challenger) and the
challenger's bond is returned.
"""

from __future__ import annotations

from ..codec import sha256
from ..errors import InvariantError
from ..kinds import JobParamError, get_kind
from ..machine import ExecFailure, Execution, TxKind
from ..merkle import verify_merkle_proof
from ..types import Transaction
from . import bodies as B
from . import llm_disputes
from .ledger import (
    Market,
    address,
    close_availability,
    emit_job_failed,
    fail_job,
    hex_id,
    market_tx,
    reject_challenge,
    settle,
)
from .records import (
    COMPLETED,
    DUE_AVAILABILITY,
    ESCROWED,
    FAIL_UNAVAILABLE,
    FAIL_WRONG_RESULT,
    Job,
    availability_key,
    job_key,
    window_key,
)

_hex, _addr = hex_id, address

# Work of the parts every dispute transaction has: signature, decoding and re-encoding the job and the
# totals records (canonical CBOR), Merkle proofs. Measured at 350-640 µs per transaction on a loaded
# 2-core machine (bench/disputes.py), so a block holds at most ~400 disputes.
BASE_WORK = 600
PROOF_HASH_WORK = 1  # per proof hash checked
BYTES_PER_WORK = 1024  # hashing / copying carried bytes


def _escrowed_job(ex: Execution, job_id: object) -> Job | None:
    """The job record as this block sees it when it is completed with its payment still escrowed."""
    if type(job_id) is not bytes:
        return None
    raw = ex.get_object(job_key(job_id))
    if raw is None:
        return None
    job = Job.decode(raw)
    return job if job.state == COMPLETED and job.payment == ESCROWED else None


def leaf_check_work(job: Job) -> int:
    """DWU of re-checking one leaf of ``job`` on chain (0 for a kind the chain cannot re-check)."""
    try:
        kind = get_kind(job.kind)
        if not B.challengeable(kind) or not kind.leaf_disputes:
            return 0
        return kind.leaf_check_work(job.params, job.input_size)
    except JobParamError:
        return 0


def challenge_work(ex: Execution, tx: Transaction) -> int:
    """DWU of a ``challenge``: the base, its proof, the carried input and the leaf check itself (only
    when the job can be challenged right now; otherwise the transaction fails after the lookup)."""
    body = tx.body
    work = BASE_WORK + PROOF_HASH_WORK * len(body["proof"]) + len(body.get("input", b"")) // BYTES_PER_WORK
    job = _escrowed_job(ex, body["job_id"])
    if job is not None:
        work += leaf_check_work(job)
    return work


def availability_work(ex: Execution, tx: Transaction) -> int:
    """DWU of an availability challenge or answer: the base plus every proof hash and chunk byte."""
    work = BASE_WORK
    for _index, leaf, proof in tx.body.get("chunks", ()):
        work += PROOF_HASH_WORK * (len(proof) + 1) + len(leaf) // BYTES_PER_WORK
    return work


def challenge_bond(mk: Market, job: Job) -> int:
    """What a challenge of ``job`` locks: the fixed bond plus the work it makes every node do."""
    return mk.p.challenge_bond + leaf_check_work(job) * mk.p.dispute_work_price


def _need_escrowed(job: Job, what: str) -> None:
    if job.state != COMPLETED or job.payment != ESCROWED:
        raise ExecFailure(
            "not_in_challenge_window",
            f"only a completed job whose payment is still escrowed can be {what} (job is {job.state}, "
            f"payment {job.payment})",
        )


def _receipt(job: Job) -> dict:
    if job.receipt is None:
        raise InvariantError(f"completed job {_hex(job.job_id)} has no receipt")
    return job.receipt


# --------------------------------------------------------------------------------------------------
# Wrong results


@market_tx
def apply_challenge(mk: Market, tx: Transaction) -> None:
    body = tx.body
    job = mk.need_job(body["job_id"])
    _need_escrowed(job, "challenged")
    if tx.sender == job.miner:
        raise ExecFailure("self_challenge", "a miner cannot challenge its own result")
    kind = get_kind(job.kind)
    if not B.challengeable(kind):  # job_submit refuses challenge windows for these; kept for safety
        raise ExecFailure("not_challengeable", f"results of job kind '{job.kind}' cannot be challenged")
    if not kind.leaf_disputes:  # llm-generate: llm_challenge (state/market/llm_disputes.py)
        raise ExecFailure(
            "not_challengeable", f"results of job kind '{job.kind}' are disputed with llm_challenge, not challenge"
        )
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
    if not verify_merkle_proof(_receipt(job)["result_root"], leaf, index, count, list(body["proof"])):
        raise ExecFailure(
            "bad_proof", "the Merkle proof does not show this leaf under the receipt's result_root"
        )
    bond = challenge_bond(mk, job)
    bal = mk.ex.account(tx.sender).balance
    if bal < bond:
        raise ExecFailure(
            "insufficient_balance",
            f"challenge bond {bond} (challenge_bond + leaf-check work × dispute_work_price) exceeds the "
            f"balance {bal}",
        )
    mk.ex.debit(tx.sender, bond)  # locked while the chain re-checks the leaf
    try:
        correct = bool(kind.check_leaf(job.params, input_bytes, index, leaf))
    except JobParamError as exc:  # e.g. a blob input that matches its hash but does not decode
        raise ExecFailure(
            "bad_input", f"the job's input cannot be re-checked ({exc.reason}): {exc}"
        ) from None
    mk.stats.challenges += 1
    if correct:
        burned, returned = reject_challenge(mk, job, tx.sender, bond)
        mk.ex.emit(
            "challenge_rejected",
            job_id=_hex(job.job_id),
            challenger=_addr(tx.sender),
            index=index,
            burned=str(burned),
            returned=str(returned),
        )
        return
    mk.ex.credit(tx.sender, bond)
    m = mk.job_miner(job)
    if job.availability is not None:
        close_availability(mk, job, returned_to_challenger=True)
    refunded, slashed, reward, burned = fail_job(mk, job, m, FAIL_WRONG_RESULT, window_key(job.seq), tx.sender)
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
    emit_job_failed(mk, job, m, FAIL_WRONG_RESULT, refunded)


# --------------------------------------------------------------------------------------------------
# Availability


@market_tx
def apply_availability_challenge(mk: Market, tx: Transaction) -> None:
    job = mk.need_job(tx.body["job_id"])
    _need_escrowed(job, "challenged for availability")
    if tx.sender == job.miner:
        raise ExecFailure("self_challenge", "a miner cannot challenge its own result")
    if job.availability is not None:
        raise ExecFailure(
            "availability_challenge_open",
            f"the job already has an open availability challenge (answer due by height "
            f"{job.availability['deadline']})",
        )
    p = mk.p
    if job.availability_rounds >= p.max_availability_challenges_per_job:
        raise ExecFailure(
            "too_many_availability_challenges",
            f"the job already had the maximum of {p.max_availability_challenges_per_job} availability challenges",
        )
    indices = list(tx.body["indices"])
    if len(indices) > p.max_availability_chunks:
        raise ExecFailure(
            "too_many_chunks", f"{len(indices)} chunks named; at most {p.max_availability_chunks} per challenge"
        )
    kind = get_kind(job.kind)
    count = kind.leaf_count(job.params)
    if indices[-1] >= count:
        raise ExecFailure("bad_index", f"leaf index {indices[-1]} out of range: the result has {count} leaves")
    size = len(indices) * kind.leaf_bytes(job.params)
    if size > p.max_availability_bytes:
        raise ExecFailure(
            "chunks_too_large",
            f"the named chunks hold {size} bytes; one answer carries at most {p.max_availability_bytes}",
        )
    bal = mk.ex.account(tx.sender).balance
    if bal < p.availability_bond:
        raise ExecFailure(
            "insufficient_balance", f"availability bond {p.availability_bond} exceeds the balance {bal}"
        )
    mk.ex.debit(tx.sender, p.availability_bond)
    deadline = mk.h + p.availability_response_blocks
    job.availability = {
        "challenger": tx.sender,
        "indices": indices,
        "deadline": deadline,
        "bond": p.availability_bond,
    }
    job.availability_rounds += 1
    mk.stats.availability_challenges += 1
    mk.stats.availability_bonds += p.availability_bond
    mk.put_job(job)
    m = mk.job_miner(job)
    mk.ex.put_object(availability_key(m.miner, job.seq), job.job_id)
    mk.schedule(deadline, DUE_AVAILABILITY, job.job_id)
    mk.ex.emit(
        "availability_challenged",
        job_id=_hex(job.job_id),
        challenger=_addr(tx.sender),
        miner=_addr(m.miner),
        indices=indices,
        deadline=deadline,
    )


@market_tx
def apply_availability_response(mk: Market, tx: Transaction) -> None:
    job = mk.need_job(tx.body["job_id"])
    da = job.availability
    if da is None:
        raise ExecFailure("no_availability_challenge", "the job has no open availability challenge")
    if tx.sender != job.miner:
        raise ExecFailure("not_awarded_miner", "only the job's miner answers an availability challenge")
    chunks = tx.body["chunks"]
    if [c[0] for c in chunks] != da["indices"]:
        raise ExecFailure(
            "wrong_chunks", f"the answer must carry exactly the challenged leaves {da['indices']}"
        )
    kind = get_kind(job.kind)
    count, leaf_len = kind.leaf_count(job.params), kind.leaf_bytes(job.params)
    root = _receipt(job)["result_root"]
    for index, leaf, proof in chunks:
        if len(leaf) != leaf_len:
            raise ExecFailure("bad_chunk", f"leaf {index} must be {leaf_len} bytes, got {len(leaf)}")
        if not verify_merkle_proof(root, leaf, index, count, list(proof)):
            raise ExecFailure(
                "bad_proof", f"the Merkle proof does not show leaf {index} under the receipt's result_root"
            )
    close_availability(mk, job, returned_to_challenger=False)
    job.availability_answers.append(tx.hash)
    mk.put_job(job)
    mk.ex.emit(
        "availability_answered",
        job_id=_hex(job.job_id),
        miner=_addr(tx.sender),
        indices=da["indices"],
        bond=str(da["bond"]),
    )
    if mk.h >= job.release_height and not llm_disputes.has_open(mk, job):  # the window closed meanwhile
        mk.ex.put_object(window_key(job.seq), None)
        settle(mk, job, mk.job_miner(job))


def due_availability(mk: Market, job_id: bytes) -> None:
    """End of an availability challenge's answer window: an unanswered challenge fails the job."""
    job = mk.job(job_id)
    if job is None or job.availability is None or job.availability["deadline"] != mk.h:
        return  # answered, or the job failed for another reason
    m = mk.job_miner(job)
    da = close_availability(mk, job, returned_to_challenger=True)
    llm_disputes.close_all(mk, job)  # open llm disputes of the job end: their bonds go back
    refunded, slashed, reward, burned = fail_job(
        mk, job, m, FAIL_UNAVAILABLE, window_key(job.seq), da["challenger"]
    )
    mk.ex.emit(
        "availability_failed",
        job_id=_hex(job.job_id),
        challenger=_addr(da["challenger"]),
        miner=_addr(m.miner),
        indices=da["indices"],
        slashed=str(slashed),
        reward=str(reward),
        burned=str(burned),
        refunded=str(refunded),
    )
    emit_job_failed(mk, job, m, FAIL_UNAVAILABLE, refunded)


def _cost(tx: Transaction) -> int:
    return B.body_cost(tx.type, tx.body)


TX_KINDS = (
    TxKind(B.TX_CHALLENGE, B.check_challenge, _cost, apply_challenge, challenge_work),
    TxKind(
        B.TX_AVAILABILITY_CHALLENGE,
        B.check_availability_challenge,
        _cost,
        apply_availability_challenge,
        availability_work,
    ),
    TxKind(
        B.TX_AVAILABILITY_RESPONSE,
        B.check_availability_response,
        _cost,
        apply_availability_response,
        availability_work,
    ),
)
DUE = {DUE_AVAILABILITY: due_availability}
