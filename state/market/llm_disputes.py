"""Disputes of ``llm-generate`` results: one step of the forward pass re-executed on chain.

A result (``state/kinds/llm_trace.py``) is one token row per position with ``step_root_t``, the Merkle
root of the output digests of that position's steps. If a miner's trace is wrong anywhere, some step
has an output digest that differs from re-running the step on the miner's OWN committed inputs (by
induction over the step DAG: if every step matched its committed inputs, the whole trace would be the
honest one). A challenger that recomputed the run finds the first position whose step root differs,
then, from the miner's digests, the first differing step: its inputs are honest, its output is not.
Three transactions (the same guarantee as a bisection game, in a fixed number of rounds):

1. ``llm_challenge`` (anyone but the miner, while the payment is escrowed): position ``t``, its row
   and (``t >= 1``) row ``t - 1``, with Merkle proofs against the receipt's ``result_root``. A pair of
   rows that is inconsistent by itself (:func:`state.kinds.llm_trace.row_fault`: wrong prompt token,
   token_in != previous token_out, a stop ignored or invented, …) fails the job at once. Otherwise the
   challenger locks ``challenge_bond + work × dispute_work_price`` (``work``: the costliest step check
   at that position) and the payment stays held.
2. ``llm_steps`` (the miner, within ``availability_response_blocks``): every step output digest of
   position ``t``; the chain checks that they give the row's ``step_root_t``. Silence fails the job as
   ``unavailable`` (client refunded, miner slashed ``slash_unavailable_bps``, challenger rewarded).
3. ``llm_step_proof`` (the challenger, within ``llm_proof_blocks``): one step of position ``t``, the
   miner's digest of it, and the WITNESS: every input (the dependency outputs) with Merkle multiproofs
   against the step roots (earlier positions' roots through their rows, proven against
   ``result_root``) and the weight rows as model-file chunks proven against the model's registered
   ``root``. The chain re-runs the step with ``state.llm.steps.run_step``: another output (or, for
   SAMPLE, another token than the row's token_out) fails the job as ``wrong_result`` (slash
   ``slash_wrong_result_bps``, challenger rewarded, bond returned); the same output costs the
   challenger ``slash_false_challenge_bps`` of its bond (burned). Silence costs the same.

Every transaction is metered (``TxKind.work``) from the job, the model and the body before it runs;
``job_submit`` refuses a challenge window for a job whose costliest dispute transaction would exceed
``max_challenge_work`` or carry more than ``MAX_LLM_WITNESS`` bytes (``LlmGenerateRules.dispute_work``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from .. import codec
from ..errors import AitbcError, TxError
from ..kinds import JobParamError, KindContext, get_kind
from ..kinds import llm_generate as lg
from ..kinds import llm_trace as lt
from ..kinds.base import ceil_div
from ..llm.generate import output_bytes, output_from_bytes
from ..llm.modelfile import CHUNK_SIZE, WeightSlice, chunks_covering, tensor_rows_range
from ..llm.steps import Op, StepId, dependencies, output_shape, run_step, weight_needs
from ..machine import ExecFailure, Execution, TxKind
from ..merkle import MAX_PROOF_LEN, merkle_multiproof, verify_merkle_proof, verify_multiproof
from ..types import U64_MAX, Transaction
from . import bodies as B
from . import models
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
    DUE_LLM_PROOF,
    DUE_LLM_STEPS,
    ESCROWED,
    FAIL_UNAVAILABLE,
    FAIL_WRONG_RESULT,
    LLM_DISPUTE_PREFIX,
    Job,
    _Record,
    job_key,
    window_key,
)

_hex, _addr = hex_id, address
KIND = "llm-generate"
LlmErrorTypes = (AitbcError, ValueError, TypeError, IndexError)  # what a malformed step or slice raises
STEPS, PROOF, CLOSED = "steps", "proof", "closed"

# Static bounds of the bodies (the transaction size bounds them all anyway).
MAX_DISPUTES = 255
MAX_STEP_DIGESTS = 1 << 15  # digests of one position (1 MiB)
MAX_INPUTS = 1 << 14  # dependencies of one step (attention: group + 2 x positions; SAMPLE: LOGITS blocks)
MAX_HASHES = 1 << 16  # hashes of one multiproof
MAX_POSITIONS = 1 << 13
MAX_SLICES = 2
MAX_SLICE_CHUNKS = 8


def index_key(job_id: bytes) -> bytes:
    return LLM_DISPUTE_PREFIX + job_id


def dispute_key(job_id: bytes, i: int) -> bytes:
    return LLM_DISPUTE_PREFIX + job_id + bytes([i])


@dataclass(slots=True)
class Dispute(_Record):
    """One ``llm_challenge`` of a job and where it stands."""

    job_id: bytes
    index: int
    challenger: bytes
    position: int
    row: bytes  # the challenged token row (proven against result_root)
    bond: int
    stage: str  # STEPS (awaiting llm_steps), PROOF (awaiting llm_step_proof), CLOSED
    deadline: int  # last height of the current stage
    opened: int
    steps_tx: bytes | None = None  # hash of the miner's llm_steps (its digests are in that transaction)
    outcome: str | None = None  # upheld | rejected | unanswered | abandoned | job_closed
    fault: str | None = None  # the miner's fault when upheld


def _load_index(ex: Execution, job_id: bytes) -> list[int]:
    raw = ex.get_object(index_key(job_id))
    return codec.decode(raw) if raw is not None else [0, 0]


def _load(ex: Execution, job_id: bytes, i: object) -> Dispute | None:
    if type(i) is not int or not 0 <= i < MAX_DISPUTES:
        return None
    raw = ex.get_object(dispute_key(job_id, i))
    return Dispute.decode(raw) if raw is not None else None


def _put(mk: Market, d: Dispute) -> None:
    mk.ex.put_object(dispute_key(d.job_id, d.index), d.encode())


def load_disputes(get_object, job_id: bytes) -> list[Dispute]:  # noqa: ANN001 - read side (RPC, tests)
    """Every llm dispute of a job, open or closed, in order."""
    raw = get_object(index_key(job_id))
    rounds = codec.decode(raw)[0] if raw is not None else 0
    out = []
    for i in range(rounds):
        d = get_object(dispute_key(job_id, i))
        if d is not None:
            out.append(Dispute.decode(d))
    return out


def kind_context(ex: Execution) -> KindContext:
    """The :class:`KindContext` of a block: registered models by id (``state/market/models.py``)."""

    def resolve(mid: bytes) -> dict | None:
        if type(mid) is not bytes or len(mid) != 32:
            return None
        m = models.load_model(ex.get_object, mid)
        return m.manifest if m is not None else None

    return KindContext(resolve_model=resolve)


def has_open(mk: Market, job: Job) -> bool:
    """Whether an llm dispute of ``job`` is open (the payment stays held meanwhile)."""
    return job.kind == KIND and _load_index(mk.ex, job.job_id)[1] > 0


def close_all(mk: Market, job: Job) -> None:
    """The job failed for another reason: every open llm dispute closes and returns its bond."""
    if job.kind != KIND:
        return
    idx = _load_index(mk.ex, job.job_id)
    if idx[1] == 0:
        return
    for i in range(idx[0]):
        d = _load(mk.ex, job.job_id, i)
        if d is not None and d.stage != CLOSED:
            _close(mk, d, "job_closed")
            mk.ex.credit(d.challenger, d.bond)


def _close(mk: Market, d: Dispute, outcome: str, fault: str | None = None) -> None:
    d.stage, d.outcome, d.fault = CLOSED, outcome, fault
    _put(mk, d)
    idx = _load_index(mk.ex, d.job_id)
    idx[1] -= 1
    mk.ex.put_object(index_key(d.job_id), codec.encode(idx))
    mk.stats.dispute_bonds -= d.bond


def _maybe_settle(mk: Market, job: Job) -> None:
    """After a dispute closed in the miner's favour: release the payment if the challenge window is
    over and nothing else holds it."""
    if job.state != COMPLETED or job.payment != ESCROWED or mk.h < job.release_height:
        return
    if job.availability is not None or has_open(mk, job):
        return
    mk.ex.put_object(window_key(job.seq), None)
    settle(mk, job, mk.job_miner(job))


def _miner_loses(mk: Market, job: Job, challenger: bytes, failure: str, fault: str, position: int) -> None:
    """Fail ``job`` for the miner's fault (bond slashed, a share to ``challenger``, client refunded);
    every other open llm dispute and an open availability challenge return their bonds."""
    close_all(mk, job)
    if job.availability is not None:
        close_availability(mk, job, returned_to_challenger=True)
    m = mk.job_miner(job)
    refunded, slashed, reward, burned = fail_job(mk, job, m, failure, window_key(job.seq), challenger)
    mk.ex.emit(
        "llm_challenge_upheld",
        job_id=_hex(job.job_id),
        challenger=_addr(challenger),
        miner=_addr(m.miner),
        position=position,
        fault=fault,
        slashed=str(slashed),
        reward=str(reward),
        burned=str(burned),
        refunded=str(refunded),
    )
    emit_job_failed(mk, job, m, failure, refunded)


def _challenger_loses(mk: Market, job: Job, d: Dispute, outcome: str) -> None:
    _close(mk, d, outcome)
    burned, returned = reject_challenge(mk, job, d.challenger, d.bond)
    mk.ex.emit(
        "llm_challenge_rejected",
        job_id=_hex(job.job_id),
        challenger=_addr(d.challenger),
        position=d.position,
        outcome=outcome,
        burned=str(burned),
        returned=str(returned),
    )
    _maybe_settle(mk, job)


def _model(mk: Market, job: Job) -> lg.ModelView:
    try:
        return get_kind(KIND).model(job.params, kind_context(mk.ex))  # type: ignore[attr-defined]
    except JobParamError as exc:  # the model was checked at job_submit and records are never removed
        raise ExecFailure(exc.reason, str(exc)) from None


def _need_llm_job(mk: Market, job_id: bytes) -> Job:
    job = mk.need_job(job_id)
    if job.kind != KIND:
        raise ExecFailure("not_llm_job", f"job {_hex(job_id)} is a {job.kind} job, not {KIND}")
    return job


def _receipt_root(job: Job) -> bytes:
    if job.receipt is None:
        raise ExecFailure("not_in_challenge_window", "the job has no receipt")
    return job.receipt["result_root"]


def challenge_bond(mk: Market, mv: lg.ModelView, job: Job, position: int) -> int:
    p = len(job.params["prompt"])
    rows = lt.n_rows(p, job.params["max_new_tokens"])
    _, work = lg.position_bounds(mv, p, rows, position)
    return mk.p.challenge_bond + work * mk.p.dispute_work_price


# --------------------------------------------------------------------------------------------------
# llm_challenge


@market_tx
def apply_llm_challenge(mk: Market, tx: Transaction) -> None:
    body = tx.body
    job = _need_llm_job(mk, body["job_id"])
    if job.state != COMPLETED or job.payment != ESCROWED:
        raise ExecFailure(
            "not_in_challenge_window",
            f"only a completed job whose payment is still escrowed can be challenged (job is {job.state}, "
            f"payment {job.payment})",
        )
    if tx.sender == job.miner:
        raise ExecFailure("self_challenge", "a miner cannot challenge its own result")
    idx = _load_index(mk.ex, job.job_id)
    if idx[0] >= min(mk.p.max_llm_challenges_per_job, MAX_DISPUTES):
        raise ExecFailure(
            "too_many_llm_challenges",
            f"the job already had the maximum of {mk.p.max_llm_challenges_per_job} llm challenges",
        )
    mv = _model(mk, job)
    prompt = job.params["prompt"]
    rows = lt.n_rows(len(prompt), job.params["max_new_tokens"])
    t = body["position"]
    if t >= rows:
        raise ExecFailure("bad_position", f"position {t} out of range: the result has {rows} rows")
    root = _receipt_root(job)
    if not verify_merkle_proof(root, body["row"], t, rows, list(body["proof"])):
        raise ExecFailure("bad_proof", f"the Merkle proof does not show row {t} under the receipt's result_root")
    prev = None
    if t >= 1:
        if "prev" not in body:
            raise ExecFailure("prev_row_required", f"challenging position {t} needs row {t - 1} with its proof")
        prev, prev_proof = body["prev"]
        if not verify_merkle_proof(root, prev, t - 1, rows, list(prev_proof)):
            raise ExecFailure(
                "bad_proof", f"the Merkle proof does not show row {t - 1} under the receipt's result_root"
            )
    elif "prev" in body:
        raise ExecFailure("unexpected_prev_row", "position 0 has no previous row")
    fault = lt.row_fault(mv.cfg, prompt, job.params.get("stop", []), t, body["row"], prev)
    if fault is not None:  # the miner's own rows contradict each other: no step needs checking
        mk.stats.challenges += 1
        _miner_loses(mk, job, tx.sender, FAIL_WRONG_RESULT, fault, t)
        return
    if lt.is_zero(body["row"]):
        raise ExecFailure("unused_position", f"position {t} comes after a stop token: it was rightly not run")
    bond = challenge_bond(mk, mv, job, t)
    bal = mk.ex.account(tx.sender).balance
    if bal < bond:
        raise ExecFailure(
            "insufficient_balance",
            f"llm challenge bond {bond} (challenge_bond + step-check work × dispute_work_price) exceeds the "
            f"balance {bal}",
        )
    mk.ex.debit(tx.sender, bond)
    mk.stats.dispute_bonds += bond
    i = idx[0]
    deadline = mk.h + mk.p.availability_response_blocks
    d = Dispute(job.job_id, i, tx.sender, t, body["row"], bond, STEPS, deadline, mk.h)
    _put(mk, d)
    mk.ex.put_object(index_key(job.job_id), codec.encode([idx[0] + 1, idx[1] + 1]))
    mk.schedule(deadline, DUE_LLM_STEPS, job.job_id + bytes([i]))
    mk.ex.emit(
        "llm_challenged",
        job_id=_hex(job.job_id),
        dispute=i,
        challenger=_addr(tx.sender),
        miner=_addr(job.miner or b""),
        position=t,
        bond=str(bond),
        deadline=deadline,
    )


# --------------------------------------------------------------------------------------------------
# llm_steps


def _open_dispute(mk: Market, body: dict, stage: str) -> tuple[Job, Dispute]:
    job = _need_llm_job(mk, body["job_id"])
    d = _load(mk.ex, job.job_id, body["dispute"])
    if d is None:
        raise ExecFailure("unknown_dispute", f"job {_hex(job.job_id)} has no llm dispute {body['dispute']}")
    if d.stage != stage:
        what = {STEPS: "awaiting_steps", PROOF: "awaiting_proof"}[stage]
        raise ExecFailure(f"not_{what}", f"llm dispute {d.index} is {d.stage}{' (' + d.outcome + ')' if d.outcome else ''}")
    return job, d


@market_tx
def apply_llm_steps(mk: Market, tx: Transaction) -> None:
    body = tx.body
    job, d = _open_dispute(mk, body, STEPS)
    if tx.sender != job.miner:
        raise ExecFailure("not_awarded_miner", "only the job's miner answers an llm challenge")
    cfg = _model(mk, job).cfg
    p = len(job.params["prompt"])
    want = lt.step_count(cfg, p, d.position)
    digests = body["digests"]
    if len(digests) != want:
        raise ExecFailure("wrong_step_count", f"position {d.position} has {want} steps, got {len(digests)} digests")
    if lt.step_root(cfg, p, d.position, digests) != lt.Row.decode(d.row).step_root:
        raise ExecFailure("bad_steps", f"the digests do not give the step root of row {d.position}")
    d.stage = PROOF
    d.deadline = mk.h + mk.p.llm_proof_blocks
    d.steps_tx = tx.hash
    _put(mk, d)
    mk.schedule(d.deadline, DUE_LLM_PROOF, job.job_id + bytes([d.index]))
    mk.ex.emit(
        "llm_steps_posted", job_id=_hex(job.job_id), dispute=d.index, position=d.position, deadline=d.deadline
    )


def _due_steps(mk: Market, ident: bytes) -> None:
    """End of the miner's answer window: an unanswered llm challenge fails the job as unavailable."""
    job_id, i = ident[:32], ident[32]
    job = mk.job(job_id)
    d = _load(mk.ex, job_id, i)
    if job is None or d is None or d.stage != STEPS or d.deadline != mk.h:
        return
    _close(mk, d, "unanswered", "no_steps")
    mk.ex.credit(d.challenger, d.bond)
    mk.stats.challenges += 1
    _miner_loses(mk, job, d.challenger, FAIL_UNAVAILABLE, "no_steps", d.position)


def _due_proof(mk: Market, ident: bytes) -> None:
    """End of the challenger's proof window: an abandoned llm challenge costs the challenger."""
    job_id, i = ident[:32], ident[32]
    job = mk.job(job_id)
    d = _load(mk.ex, job_id, i)
    if job is None or d is None or d.stage != PROOF or d.deadline != mk.h:
        return
    mk.stats.challenges += 1
    _challenger_loses(mk, job, d, "abandoned")


# --------------------------------------------------------------------------------------------------
# llm_step_proof: the pure judgement


def _fail(reason: str, msg: str) -> ExecFailure:
    return ExecFailure(reason, msg)


def judge_step_proof(
    mv: lg.ModelView, params: dict, rows: int, result_root: bytes, row_raw: bytes, body: dict
) -> str | None:
    """Judge the step proof ``body`` of the position of ``row_raw`` (the disputed row): the miner's
    fault as a stable code (``wrong_step_output``, ``wrong_token``, ``inconsistent_tokens``,
    ``bad_row``, ``invalid_step_input``), or None when the step's output is the miner's digest. A
    witness that does not prove what it must raises :class:`ExecFailure` (the transaction fails and the
    challenger may send a correct one before its deadline). Pure: what every node runs."""
    cfg = mv.cfg
    prompt = params["prompt"]
    p = len(prompt)
    row = lt.Row.decode(row_raw)
    t = row.t
    try:
        step = StepId(*body["step"])
        deps = dependencies(cfg, step, p)
    except LlmErrorTypes as exc:
        raise _fail("bad_step", f"no such step {body['step']}: {exc}") from None
    if step.token != t:
        raise _fail("wrong_position", f"the disputed position is {t}, the step is at {step.token}")
    i = lt.step_index(cfg, p, step)
    if i is None:
        raise _fail("bad_step", f"position {t} has no step {step!r}")
    inputs = body["inputs"]
    if len(inputs) != len(deps):
        raise _fail("wrong_inputs", f"{step!r} takes {len(deps)} inputs, got {len(inputs)}")
    groups: dict[int, dict[int, bytes]] = {t: {i: lt.step_leaf(step, body["digest"])}}
    for dep, data in zip(deps, inputs, strict=True):
        n = 4 * math.prod(output_shape(cfg, dep))
        if len(data) != n:
            raise _fail("wrong_input_size", f"input {dep!r} must be {n} bytes, got {len(data)}")
        groups.setdefault(dep.token, {})[lt.step_index(cfg, p, dep)] = lt.step_leaf(dep, hashlib.sha256(data).digest())  # type: ignore[index]
    proofs = body["proofs"]
    if [s for s, _ in proofs] != sorted(groups):
        raise _fail("wrong_proofs", f"the step needs one multiproof per position {sorted(groups)}")
    roots = {t: row.step_root}
    others = [s for s in groups if s != t]
    if others:
        if "rows" not in body:
            raise _fail("rows_required", "inputs of earlier positions need their rows")
        first, wrows, hashes = body["rows"]
        if first != min(others) or len(wrows) != t - first:
            raise _fail("wrong_rows", f"the witness must carry rows {min(others)}..{t - 1}")
        if not verify_multiproof(result_root, rows, {first + k: r for k, r in enumerate(wrows)}, list(hashes)):
            raise _fail("bad_row_proof", "the rows do not verify against the receipt's result_root")
        for k, r in enumerate(wrows):
            if lt.is_zero(r) or lt.Row.decode(r).t != first + k:
                return "bad_row"  # a position before a processed one must be processed: the miner's rows
            roots[first + k] = lt.Row.decode(r).step_root
    elif "rows" in body:
        raise _fail("unexpected_rows", "this step has no input from an earlier position")
    for s, hashes in proofs:
        if not verify_multiproof(roots[s], lt.step_count(cfg, p, s), groups[s], list(hashes)):
            raise _fail("bad_proof", f"the step digests of position {s} do not verify against its step root")
    arrays = _input_arrays(cfg, deps, inputs)
    token = None
    if step.op == Op.EMBED:
        if t < p:
            token = prompt[t]
            arrays = [np.array([token], dtype=np.int32)]
        else:
            token = int(arrays[0][0])
            if token != row.token_in:
                return "inconsistent_tokens"  # the sampled token is not the row's token_in
    try:
        needs = weight_needs(cfg, step, token)
    except LlmErrorTypes:
        return "invalid_step_input"  # a sampled token outside the vocabulary
    slices = body["weights"]
    if len(slices) != len(needs):
        raise _fail("wrong_weights", f"{step!r} reads {len(needs)} weight slices, got {len(slices)}")
    wrows = []
    for (name, r0, r1), (first_chunk, chunks, chunk_proofs) in zip(needs, slices, strict=True):
        ws = WeightSlice(name, r0, r1, first_chunk, tuple(chunks), tuple(tuple(x) for x in chunk_proofs))
        try:
            wrows.append(ws.verify(cfg, mv.root, mv.size))
        except LlmErrorTypes as exc:
            reason = "bad_model_weights" if getattr(exc, "reason", "") == "llm_weights" else "bad_weights"
            raise _fail(reason, f"weights {name}[{r0}:{r1}]: {exc}") from None
    try:
        out = run_step(cfg, step, arrays, wrows, lg.sampling_of(params))
    except (AitbcError, ValueError, IndexError):
        return "invalid_step_input"  # the miner's committed inputs are not a valid input of the step
    if hashlib.sha256(output_bytes(out)).digest() != body["digest"]:
        return "wrong_step_output"
    if step.op == Op.SAMPLE and int(out[0]) != row.token_out:
        return "wrong_token"
    return None


def _input_arrays(cfg, deps: list[StepId], inputs: list[bytes]) -> list[np.ndarray]:  # noqa: ANN001
    """The step's inputs as int32 arrays (lengths already checked). Runs of 1-D inputs of one shape (the
    K/V rows of attention) are decoded in one piece."""
    shapes = [output_shape(cfg, d) for d in deps]
    if shapes and all(len(s) == 1 and s == shapes[0] for s in shapes):
        mat = np.frombuffer(b"".join(inputs), dtype="<i4").astype(np.int32, copy=False)
        return list(mat.reshape(len(inputs), shapes[0][0]))
    return [output_from_bytes(cfg, d, data) for d, data in zip(deps, inputs, strict=True)]


@market_tx
def apply_llm_step_proof(mk: Market, tx: Transaction) -> None:
    body = tx.body
    job, d = _open_dispute(mk, body, PROOF)
    if tx.sender != d.challenger:
        raise ExecFailure("not_challenger", "only the challenger of this llm dispute sends its step proof")
    mv = _model(mk, job)
    rows = lt.n_rows(len(job.params["prompt"]), job.params["max_new_tokens"])
    fault = judge_step_proof(mv, job.params, rows, _receipt_root(job), d.row, body)
    mk.stats.challenges += 1
    if fault is None:
        _challenger_loses(mk, job, d, "rejected")
        return
    _close(mk, d, "upheld", fault)
    mk.ex.credit(d.challenger, d.bond)
    _miner_loses(mk, job, d.challenger, FAIL_WRONG_RESULT, fault, d.position)


# --------------------------------------------------------------------------------------------------
# Metering (dispute work units, known before the transaction runs)


def _job_and_model(ex: Execution, job_id: object) -> tuple[Job, lg.ModelView] | None:
    if type(job_id) is not bytes:
        return None
    raw = ex.get_object(job_key(job_id))
    if raw is None:
        return None
    job = Job.decode(raw)
    if job.kind != KIND:
        return None
    try:
        return job, get_kind(KIND).model(job.params, kind_context(ex))  # type: ignore[attr-defined]
    except JobParamError:
        return None


def _bytes_work(tx: Transaction, hashes: int) -> int:
    return lg.BASE_WORK + lg.WITNESS_KB_WORK * ceil_div(len(tx.raw), 1024) + lg.HASH_WORK * hashes


def challenge_work(ex: Execution, tx: Transaction) -> int:
    """Two row proofs and the structural row check; the bond computation (closed-form bounds)."""
    b = tx.body
    hashes = len(b["proof"]) + (len(b["prev"][1]) if "prev" in b else 0) + 2
    found = _job_and_model(ex, b["job_id"])
    extra = 0 if found is None else found[1].cfg.n_layers * found[1].cfg.n_kv_heads * 2
    return _bytes_work(tx, hashes) + extra


def steps_work(ex: Execution, tx: Transaction) -> int:
    """One leaf encoding and about two hashes per digest."""
    return _bytes_work(tx, 3 * len(tx.body["digests"]))


def step_proof_work(ex: Execution, tx: Transaction) -> int:
    """The bound of the declared step (its witness and computation, from the job and model) or the
    bytes and hashes actually carried, whichever is larger."""
    b = tx.body
    hashes = sum(len(h) for _, h in b["proofs"]) + (len(b["rows"][2]) + len(b["rows"][1]) if "rows" in b else 0)
    hashes += sum(len(p) for s in b["weights"] for p in s[2]) + len(b["inputs"])
    work = _bytes_work(tx, 2 * hashes) + lg.DEP_WORK * len(b["inputs"])
    found = _job_and_model(ex, b["job_id"])
    if found is None:
        return work
    job, mv = found
    p = len(job.params["prompt"])
    try:
        step = StepId(*b["step"])
        dependencies(mv.cfg, step, p)  # validates the step id
        if lt.step_index(mv.cfg, p, step) is None:
            return work
    except LlmErrorTypes:
        return work
    rows = lt.n_rows(p, job.params["max_new_tokens"])
    try:
        return max(work, lg.step_check_bounds(mv, p, rows, step)[1])
    except LlmErrorTypes:  # unreachable for a valid step; metering never raises
        return work


# --------------------------------------------------------------------------------------------------
# Bodies: static checks and builders


def _bad(msg: str) -> TxError:
    return TxError(msg, "invalid_body")


def _b32(v: object, what: str) -> bytes:
    if type(v) is not bytes or len(v) != 32:
        raise _bad(f"{what} must be 32 bytes")
    return v


def _uint(v: object, what: str, hi: int = U64_MAX) -> int:
    if type(v) is not int or not 0 <= v <= hi:
        raise _bad(f"{what} must be an integer in [0, {hi}]")
    return v


def _hashes(v: object, what: str, hi: int = MAX_HASHES) -> list:
    if type(v) is not list or len(v) > hi or not all(type(h) is bytes and len(h) == 32 for h in v):
        raise _bad(f"{what} must be a list of at most {hi} 32-byte hashes")
    return v


def _row(v: object, what: str) -> bytes:
    if type(v) is not bytes or len(v) != lt.ROW_BYTES:
        raise _bad(f"{what} must be a {lt.ROW_BYTES}-byte token row")
    return v


def _keys(body: object, what: str, required: set[str], optional: set[str] = set()) -> dict:  # noqa: B006
    if type(body) is not dict or not required <= body.keys() or not body.keys() <= required | optional:
        raise _bad(f"{what} body must have the keys {sorted(required)} (optional {sorted(optional)})")
    return body


def check_llm_challenge(body: dict) -> None:
    w = "llm_challenge"
    _keys(body, w, {"job_id", "position", "row", "proof"}, {"prev"})
    _b32(body["job_id"], f"{w}.job_id")
    _uint(body["position"], f"{w}.position", 1 << 32)
    _row(body["row"], f"{w}.row")
    _hashes(body["proof"], f"{w}.proof", MAX_PROOF_LEN)
    if "prev" in body:
        prev = body["prev"]
        if type(prev) is not list or len(prev) != 2:
            raise _bad(f"{w}.prev must be [row, proof]")
        _row(prev[0], f"{w}.prev row")
        _hashes(prev[1], f"{w}.prev proof", MAX_PROOF_LEN)


def check_llm_steps(body: dict) -> None:
    w = "llm_steps"
    _keys(body, w, {"job_id", "dispute", "digests"})
    _b32(body["job_id"], f"{w}.job_id")
    _uint(body["dispute"], f"{w}.dispute", MAX_DISPUTES - 1)
    d = body["digests"]
    if type(d) is not list or not 1 <= len(d) <= MAX_STEP_DIGESTS:
        raise _bad(f"{w}.digests must be a list of 1..{MAX_STEP_DIGESTS} digests")
    _hashes(d, f"{w}.digests", MAX_STEP_DIGESTS)


def check_llm_step_proof(body: dict) -> None:
    w = "llm_step_proof"
    _keys(body, w, {"job_id", "dispute", "step", "digest", "inputs", "proofs", "weights"}, {"rows"})
    _b32(body["job_id"], f"{w}.job_id")
    _uint(body["dispute"], f"{w}.dispute", MAX_DISPUTES - 1)
    st = body["step"]
    if type(st) is not list or len(st) != 4 or not all(type(x) is int and 0 <= x < 1 << 32 for x in st):
        raise _bad(f"{w}.step must be [token, layer, op, block] (integers below 2^32)")
    _b32(body["digest"], f"{w}.digest")
    inputs = body["inputs"]
    if type(inputs) is not list or len(inputs) > MAX_INPUTS or not all(type(x) is bytes for x in inputs):
        raise _bad(f"{w}.inputs must be a list of at most {MAX_INPUTS} byte strings")
    proofs = body["proofs"]
    if type(proofs) is not list or not 1 <= len(proofs) <= MAX_POSITIONS:
        raise _bad(f"{w}.proofs must be a list of 1..{MAX_POSITIONS} [position, hashes]")
    last = -1
    for pr in proofs:
        if type(pr) is not list or len(pr) != 2 or type(pr[0]) is not int or not last < pr[0] < 1 << 32:
            raise _bad(f"{w}.proofs entries must be [position, hashes] in ascending position order")
        last = pr[0]
        _hashes(pr[1], f"{w}.proofs hashes")
    if "rows" in body:
        r = body["rows"]
        if type(r) is not list or len(r) != 3:
            raise _bad(f"{w}.rows must be [first, rows, hashes]")
        _uint(r[0], f"{w}.rows first", 1 << 32)
        if type(r[1]) is not list or not 1 <= len(r[1]) <= MAX_POSITIONS:
            raise _bad(f"{w}.rows must carry 1..{MAX_POSITIONS} rows")
        for x in r[1]:
            _row(x, f"{w}.rows row")
        _hashes(r[2], f"{w}.rows hashes")
    sl = body["weights"]
    if type(sl) is not list or len(sl) > MAX_SLICES:
        raise _bad(f"{w}.weights must be a list of at most {MAX_SLICES} [first_chunk, chunks, proofs]")
    for s in sl:
        if type(s) is not list or len(s) != 3:
            raise _bad(f"{w}.weights entries must be [first_chunk, chunks, proofs]")
        _uint(s[0], f"{w}.weights first_chunk", 1 << 32)
        chunks, cproofs = s[1], s[2]
        if type(chunks) is not list or not 1 <= len(chunks) <= MAX_SLICE_CHUNKS or type(cproofs) is not list:
            raise _bad(f"{w}.weights must carry 1..{MAX_SLICE_CHUNKS} chunks and their proofs")
        if len(cproofs) != len(chunks):
            raise _bad(f"{w}.weights needs one proof per chunk")
        for c in chunks:
            if type(c) is not bytes or not 1 <= len(c) <= CHUNK_SIZE:
                raise _bad(f"{w}.weights chunks must be 1..{CHUNK_SIZE} bytes")
        for pr in cproofs:
            _hashes(pr, f"{w}.weights proof", MAX_PROOF_LEN)


def llm_challenge_body(job_id: bytes, position: int, row: bytes, proof: list[bytes],
                       prev: tuple[bytes, list[bytes]] | None = None) -> dict:
    body: dict = {"job_id": job_id, "position": position, "row": bytes(row), "proof": [bytes(h) for h in proof]}
    if prev is not None:
        body["prev"] = [bytes(prev[0]), [bytes(h) for h in prev[1]]]
    return body


def llm_steps_body(job_id: bytes, dispute: int, digests: list[bytes]) -> dict:
    return {"job_id": job_id, "dispute": dispute, "digests": [bytes(x) for x in digests]}


def _cost(tx: Transaction) -> int:
    return B.body_cost(tx.type, tx.body)


TX_KINDS = (
    TxKind(B.TX_LLM_CHALLENGE, check_llm_challenge, _cost, apply_llm_challenge, challenge_work),
    TxKind(B.TX_LLM_STEPS, check_llm_steps, _cost, apply_llm_steps, steps_work),
    TxKind(B.TX_LLM_STEP_PROOF, check_llm_step_proof, _cost, apply_llm_step_proof, step_proof_work),
)
DUE = {DUE_LLM_STEPS: _due_steps, DUE_LLM_PROOF: _due_proof}


# --------------------------------------------------------------------------------------------------
# The prover side (challenger): building a step proof from a run. Not consensus.


def step_proof_body(
    job_id: bytes,
    dispute: int,
    cfg,  # noqa: ANN001 - LlamaConfig
    n_prompt: int,
    rows: list[bytes],
    digests_of,  # noqa: ANN001 - Callable[[int], list[bytes]]: the committed digests of a position
    output_of,  # noqa: ANN001 - Callable[[StepId], bytes]: a dependency's output bytes
    step: StepId,
    model_chunks: list[bytes],
    digest: bytes | None = None,
    chunk_leaf_hashes: list[bytes] | None = None,
) -> dict:
    """The ``llm_step_proof`` body of ``step``: ``rows`` are the result's rows (what the receipt's
    ``result_root`` commits to), ``digests_of(s)`` the miner's step digests of position ``s`` (its
    ``llm_steps`` for the disputed position, the honest ones elsewhere: they match up to the first
    differing position), ``output_of`` the output bytes of a dependency, ``model_chunks`` the model
    file's chunks (``chunk_leaf_hashes``, their ``sha256(0x00 || chunk)``, may be passed to save
    hashing). ``digest`` (default: the committed one) is the miner's digest of ``step``."""
    if chunk_leaf_hashes is None:
        chunk_leaf_hashes = [lt.leaf_hash(c) for c in model_chunks]

    t = step.token
    deps = dependencies(cfg, step, n_prompt)
    want: dict[int, set[int]] = {t: {lt.step_index(cfg, n_prompt, step)}}  # type: ignore[set-item]
    for d in deps:
        want.setdefault(d.token, set()).add(lt.step_index(cfg, n_prompt, d))  # type: ignore[arg-type]
    own = digests_of(t)
    if digest is None:
        digest = own[lt.step_index(cfg, n_prompt, step)]  # type: ignore[index]
    proofs = [[s, lt.step_multiproof(cfg, n_prompt, s, digests_of(s), sorted(idx))] for s, idx in sorted(want.items())]
    token = None  # EMBED reads the row of its token: the sampled one, or the prompt's (the row's token_in)
    if step.op == Op.EMBED:
        token = int(np.frombuffer(output_of(deps[0]), "<i4")[0]) if deps else lt.Row.decode(rows[t]).token_in
    body: dict = {
        "job_id": job_id,
        "dispute": dispute,
        "step": step.key(),
        "digest": digest,
        "inputs": [output_of(d) for d in deps],
        "proofs": proofs,
        "weights": [],
    }
    others = [s for s in want if s != t]
    if others:
        first = min(others)
        hashes = [lt.leaf_hash(r) for r in rows]
        body["rows"] = [first, [rows[s] for s in range(first, t)], merkle_multiproof(hashes, range(first, t))]
    for name, r0, r1 in weight_needs(cfg, step, token):
        need = chunks_covering(*tensor_rows_range(cfg, name, r0, r1))
        body["weights"].append([
            need.start,
            [model_chunks[i] for i in need],
            [models.proof_from_leaf_hashes(chunk_leaf_hashes, i) for i in need],
        ])
    return body

