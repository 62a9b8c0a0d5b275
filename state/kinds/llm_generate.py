"""``llm-generate`` v1 rules: text generation with a registered Llama model, integer-only
(``state/llm``, format ``aitbc-llm-int8-v1``), bit-exact on every machine.

Params (canonical CBOR map):

* ``model``: 32-byte model id of a ``model_register`` record (``state/market/models.py``);
* ``prompt``: 1..:data:`MAX_PROMPT` token ids;
* ``max_new_tokens``: 1..:data:`MAX_NEW_TOKENS`;
* ``sampling``: ``{"mode": "greedy"}`` or ``{"mode": "sample", "seed": bytes32, "temperature": [num,
  den], "top_k": k}`` (1 <= num, den <= 65536; 1 <= k <= 64);
* ``stop`` (optional): at most :data:`MAX_STOP` distinct token ids; generation ends after one of them.

Against the model (``check_context``, at ``job_submit``): the model is registered (``unknown_model``)
in this format (``unsupported_model_format``), every token id is below its vocabulary
(``out_of_bounds``) and ``len(prompt) + max_new_tokens <= max_ctx`` (``context_too_long``).

Unit ``token``: ``units = len(prompt) + max_new_tokens`` (known before the run). The result is the
token-row matrix of :mod:`state.kinds.llm_trace`. Its disputes are not leaf checks but the
``llm_challenge`` → ``llm_steps`` → ``llm_step_proof`` protocol (``state/market/llm_disputes.py``):
this module also gives what the chain must know before such a transaction runs — the witness bound and
the dispute work of one step check (:func:`step_witness_bound`, :func:`step_check_work`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from ..llm.config import FORMAT, MAX_VOCAB, LlamaConfig, LlmError
from ..llm.config import MAX_CTX as LLM_MAX_CTX
from ..llm.modelfile import CHUNK_SIZE, chunk_count, chunks_covering, tensor_rows_range
from ..llm.steps import (
    LAYER_OPS,
    TOPK,
    Op,
    Sampling,
    StepId,
    blocks,
    dependencies,
    output_shape,
    weight_needs,
)
from . import llm_trace as lt
from .base import (
    JobParamError,
    KindContext,
    KindRules,
    bytes_param,
    ceil_div,
    check_keys,
    int_param,
)

MAX_PROMPT = 512  # params encode to at most 4 KiB (5 bytes per token id at most)
MAX_NEW_TOKENS = 256
MAX_STOP = 8
MAX_TEMP_TERM = 1 << 16
#: The largest witness one dispute transaction may carry (llm_steps, llm_step_proof); the decode bound of
#: such a transaction (``state.types.MAX_WITNESS_TX_BYTES``) leaves room for the envelope.
MAX_LLM_WITNESS = 1 << 20
#: The most dispute work units one llm dispute transaction may cost (DWU are calibrated at <= 1 µs, so
#: <= 50 ms of one core): a job whose costliest step check is above takes no challenge window.
MAX_LLM_DISPUTE_WORK = 50_000
_KEYS = frozenset({"model", "prompt", "max_new_tokens", "sampling"})
_OPTIONAL = frozenset({"stop"})

# Dispute work units (DWU, ~1 µs of one core) of the parts of a step check, calibrated by
# bench/llm_disputes.py on a 2-core machine (measured costs x ~2).
BASE_WORK = 600  # signature, decode, job/model/dispute records (as state.market.disputes.BASE_WORK)
HASH_WORK = 2  # one Merkle node or leaf hash, with the Python around it
WITNESS_KB_WORK = 6  # per KiB carried: decoding, hashing chunks, copying
DEP_WORK = 12  # per dependency input turned into an array and checked
MAC_WORK_PER_K = 2  # per 1000 multiply-accumulates of a matmul step (float64 BLAS, exact)
STEP_WORK = 400  # fixed cost of one run_step (quantisation, numpy set-up, RoPE tables are cached)


def _ids(params: dict, key: str, lo: int, hi: int) -> list[int]:
    v = params[key]
    if type(v) is not list or not lo <= len(v) <= hi:
        raise JobParamError("out_of_bounds" if type(v) is list else "bad_type",
                            f"param '{key}' must be a list of {lo}..{hi} token ids")
    for x in v:
        if type(x) is not int:
            raise JobParamError("bad_type", f"param '{key}' holds a non-integer token id")
        if not 0 <= x < MAX_VOCAB:
            raise JobParamError("out_of_bounds", f"param '{key}' holds a token id outside [0, {MAX_VOCAB})")
    return v


def sampling_of(params: dict) -> Sampling:
    """The :class:`state.llm.steps.Sampling` of validated params."""
    s = params["sampling"]
    if s["mode"] == "greedy":
        return Sampling()
    num, den = s["temperature"]
    return Sampling(num, den, s["top_k"], s["seed"])


def _check_sampling(s: object) -> None:
    if type(s) is not dict or not all(type(k) is str for k in s) or s.get("mode") not in ("greedy", "sample"):
        raise JobParamError("bad_type", 'param \'sampling\' must be {"mode": "greedy"} or {"mode": "sample", ...}')
    if s["mode"] == "greedy":
        check_keys(s, frozenset({"mode"}))
        return
    check_keys(s, frozenset({"mode", "seed", "temperature", "top_k"}))
    bytes_param(s, "seed", 32)
    int_param(s, "top_k", 1, TOPK)
    t = s["temperature"]
    if type(t) is not list or len(t) != 2 or not all(type(x) is int for x in t):
        raise JobParamError("bad_type", "sampling 'temperature' must be [num, den] integers")
    if not all(1 <= x <= MAX_TEMP_TERM for x in t):
        raise JobParamError("out_of_bounds", f"sampling 'temperature' terms must be in [1, {MAX_TEMP_TERM}]")


@dataclass(frozen=True)
class ModelView:
    """What a dispute needs of a registered model: its config, file size and chunk root."""

    cfg: LlamaConfig
    size: int
    root: bytes


def model_view(manifest: dict | None) -> ModelView:
    """The :class:`ModelView` of a registered manifest; :class:`JobParamError` ``unknown_model``,
    ``unsupported_model_format`` or ``bad_model``."""
    if manifest is None:
        raise JobParamError("unknown_model", "no model is registered under this id")
    if manifest.get("format") != FORMAT:
        raise JobParamError(
            "unsupported_model_format", f"llm-generate runs models of format {FORMAT}, not {manifest.get('format')!r}"
        )
    try:
        cfg = LlamaConfig.from_map(manifest["arch"])
    except LlmError as exc:  # model_register checked it; kept for safety
        raise JobParamError("bad_model", f"the model's arch is not a valid config: {exc}") from None
    return ModelView(cfg, manifest["size"], manifest["root"])


class LlmGenerateRules(KindRules):
    """Integer-only Llama generation over a registered model."""

    name = "llm-generate"
    version = 1
    unit_type = "token"
    deterministic = True
    tolerance = None
    result_dtype = "uint8"
    leaf_disputes = False  # disputed by llm_challenge / llm_steps / llm_step_proof

    # -- parameters ----------------------------------------------------------------------------------
    def _check_params(self, params: dict) -> None:
        check_keys(params, _KEYS, _OPTIONAL)
        bytes_param(params, "model", 32)
        prompt = _ids(params, "prompt", 1, MAX_PROMPT)
        n = int_param(params, "max_new_tokens", 1, MAX_NEW_TOKENS)
        _check_sampling(params["sampling"])
        if "stop" in params:
            stop = _ids(params, "stop", 0, MAX_STOP)
            if len(set(stop)) != len(stop):
                raise JobParamError("out_of_bounds", "param 'stop' must not repeat a token id")
        if len(prompt) + n > LLM_MAX_CTX:
            raise JobParamError("context_too_long", f"prompt + max_new_tokens exceeds {LLM_MAX_CTX}")

    def check_context(self, params: dict, ctx: KindContext) -> None:
        self.validate_params(params)
        self.model(params, ctx)

    def model(self, params: dict, ctx: KindContext) -> ModelView:
        """The job's model, checked against the params (see the module doc for the reasons)."""
        mv = model_view(ctx.resolve_model(params["model"]))
        cfg = mv.cfg
        for key in ("prompt", "stop"):
            if any(x >= cfg.vocab for x in params.get(key, ())):
                raise JobParamError("out_of_bounds", f"param '{key}' holds a token id >= the model's vocab {cfg.vocab}")
        need = len(params["prompt"]) + params["max_new_tokens"]
        if need > cfg.max_ctx:
            raise JobParamError(
                "context_too_long", f"prompt + max_new_tokens = {need} exceeds the model's max_ctx {cfg.max_ctx}"
            )
        return mv

    def result_shape(self, params: dict) -> tuple[int, ...]:
        return (lt.n_rows(len(params["prompt"]), params["max_new_tokens"]), lt.ROW_BYTES)

    def work_units(self, params: dict) -> int:
        self.validate_params(params)
        return len(params["prompt"]) + params["max_new_tokens"]

    def leaf_check_work(self, params: dict, input_size: int | None) -> int:
        return 0  # no leaf check: see dispute_work

    def dispute_work(self, params: dict, input_size: int | None, ctx: KindContext) -> int:
        """The dispute work of the most expensive transaction of this job's disputes: a step check at
        the last position (attention grows with the position) or the miner's ``llm_steps``. Raises
        ``challenge_witness_too_large`` when one of them would carry more than :data:`MAX_LLM_WITNESS`."""
        self.validate_params(params)
        mv = self.model(params, ctx)
        p = len(params["prompt"])
        rows = lt.n_rows(p, params["max_new_tokens"])
        worst_w, worst_work = position_bounds(mv, p, rows, rows - 1)
        steps_bytes = steps_witness(mv.cfg)
        work = max(worst_work, steps_work(mv.cfg))
        if work > MAX_LLM_DISPUTE_WORK:
            raise JobParamError(
                "challenge_work_too_large",
                f"a step check of this job costs up to {work} dispute work units, more than {MAX_LLM_DISPUTE_WORK} "
                "(50 ms): such a job takes no challenge window (shorten it)",
            )
        if max(worst_w, steps_bytes) > MAX_LLM_WITNESS:
            raise JobParamError(
                "challenge_witness_too_large",
                f"a dispute of this job would carry up to {max(worst_w, steps_bytes)} bytes of witness, more "
                f"than {MAX_LLM_WITNESS}: such a job takes no challenge window (shorten it)",
            )
        return work

    # -- verification --------------------------------------------------------------------------------
    def check_leaf(self, params: dict, input: bytes | None, index: int, leaf: bytes) -> bool:
        raise JobParamError("not_leaf_checkable", "llm-generate results are disputed with llm_challenge")


# --------------------------------------------------------------------------------------------------
# Witness bounds and dispute work (known before a transaction runs)


def multiproof_size(count: int, indices: set[int] | list[int]) -> int:
    """Hashes in the multiproof of ``indices`` of a ``count``-leaf tree (``state.merkle``)."""
    known = set(indices)
    n, size = count, 0
    while n > 1:
        size += sum(1 for i in known if (i ^ 1) < n and (i ^ 1) not in known)
        known = {i >> 1 for i in known}
        n = (n + 1) // 2
    return size


@lru_cache(maxsize=1024)
def range_proof_size(count: int, first: int, end: int) -> int:
    """:func:`multiproof_size` of the leaves ``[first, end)`` of a ``count``-leaf tree, in O(log count)
    (a contiguous range stays contiguous level by level: only its two ends can need a sibling)."""
    lo, hi, n, size = first, end - 1, count, 0
    while n > 1:
        if lo & 1:  # the range starts on a right child: its left sibling is outside
            size += 1
        if not hi & 1 and hi + 1 < n:  # it ends on a left child with a right sibling outside
            size += 1
        lo, hi, n = lo >> 1, hi >> 1, (n + 1) // 2
    return size


def _depth(count: int) -> int:
    return max(1, math.ceil(math.log2(max(count, 2))))


def _out_bytes(cfg: LlamaConfig, s: StepId) -> int:
    return 4 * math.prod(output_shape(cfg, s))


def _weights_bytes(mv: ModelView, needs: list[tuple[str, int, int]]) -> tuple[int, int]:
    """(bytes, proof hashes) of the model chunks holding ``needs``."""
    total = hashes = 0
    d = _depth(chunk_count(mv.size))
    for name, r0, r1 in needs:
        off, length = tensor_rows_range(mv.cfg, name, r0, r1)
        rng = chunks_covering(off, length)
        total += sum(min(CHUNK_SIZE, mv.size - i * CHUNK_SIZE) + 5 for i in rng)
        hashes += len(rng) * d
    return total, hashes


def _matmul_macs(cfg: LlamaConfig, step: StepId) -> int:
    op = step.op
    r0, r1 = blocks(cfg, op)[step.block]
    rows = r1 - r0
    k = {Op.Q: cfg.dim, Op.K: cfg.dim, Op.V: cfg.dim, Op.O: cfg.q_dim, Op.SWIGLU: 2 * cfg.dim,
         Op.DOWN: cfg.ffn_dim, Op.LOGITS: cfg.dim}.get(op, 0)
    if op == Op.ATTN:
        return 2 * (step.token + 1) * cfg.group * cfg.head_dim
    return rows * k


def step_bounds(mv: ModelView, n_prompt: int, rows: int, step: StepId) -> tuple[int, int]:
    """``(witness bytes, dispute work)`` upper bounds of the ``llm_step_proof`` of ``step`` for a job of
    ``rows`` token rows: inputs, Merkle multiproofs (computed exactly from the leaf positions), rows,
    model chunks and their proofs, and the step's own computation."""
    cfg, t = mv.cfg, step.token
    deps = dependencies(cfg, step, n_prompt)
    by_pos: dict[int, set[int]] = {}
    for d in deps:
        by_pos.setdefault(d.token, set()).add(lt.step_index(cfg, n_prompt, d))  # type: ignore[arg-type]
    by_pos.setdefault(t, set()).add(lt.step_index(cfg, n_prompt, step))  # type: ignore[arg-type]
    inputs = sum(_out_bytes(cfg, d) + 5 for d in deps)
    hashes = 0
    leaves = 0
    for s, idx in by_pos.items():
        hashes += multiproof_size(lt.step_count(cfg, n_prompt, s), idx)
        leaves += len(idx) * (_depth(lt.step_count(cfg, n_prompt, s)) + 1)
    others = [s for s in by_pos if s != t]
    row_bytes = 0
    if others:
        first = min(others)
        row_bytes = (t - first) * (lt.ROW_BYTES + 2)
        hashes += range_proof_size(rows, first, t)
        leaves += (t - first) * (_depth(rows) + 1)
    token = 0 if step.op == Op.EMBED else None  # EMBED reads one vocabulary row (any: same size)
    w_bytes, w_hashes = _weights_bytes(mv, weight_needs(cfg, step, token))
    witness = 512 + inputs + row_bytes + 34 * hashes + w_bytes + 34 * w_hashes + 8 * len(by_pos)
    work = (
        BASE_WORK
        + STEP_WORK
        + HASH_WORK * (hashes + leaves + w_hashes + len(deps))
        + WITNESS_KB_WORK * ceil_div(witness, 1024)
        + DEP_WORK * len(deps)
        + MAC_WORK_PER_K * ceil_div(_matmul_macs(cfg, step), 1000)
    )
    if step.op == Op.SAMPLE:
        work += 2 * TOPK * len(deps)  # merging candidates and the integer exp of top_k
    return witness, work


def position_bounds(mv: ModelView, n_prompt: int, rows: int, t: int) -> tuple[int, int]:
    """Upper bounds of ``(witness bytes, dispute work)`` of any step proof at position ``t``: the largest
    of every op's largest and last blocks (first and last layer) and of attention over every KV head and
    layer (:func:`_attn_max`). O(1) once the model's tables are cached (job_submit and llm_challenge
    call it; it is not metered by itself)."""
    head = lt.has_head(n_prompt, t)
    w, work = _static_bounds(mv, head)
    a, b = step_bounds(mv, n_prompt, rows, StepId(t, 0, Op.EMBED))
    w, work = max(w, a), max(work, b)
    a, b = _attn_max(mv, n_prompt, rows, t)
    return max(w, a), max(work, b)


@lru_cache(maxsize=64)
def _static_bounds(mv: ModelView, head: bool) -> tuple[int, int]:
    """The largest bounds of the steps other than EMBED and ATTN at a position with (or without) the LM
    head: they do not depend on the position (a position-0 stand-in with a prompt of 1 or 2 tokens)."""
    cfg = mv.cfg
    n_prompt = 1 if head else 2
    cand: list[StepId] = []
    for ly in {0, cfg.n_layers - 1}:
        for op in LAYER_OPS:
            if op == Op.ATTN:
                continue
            bl = blocks(cfg, op)
            big = max(range(len(bl)), key=lambda b: (bl[b][1] - bl[b][0], b))
            cand += [StepId(0, ly, op, big), StepId(0, ly, op, len(bl) - 1)]
    if head:
        bl = blocks(cfg, Op.LOGITS)
        cand += [StepId(0, 0, Op.FINAL_NORM), StepId(0, 0, Op.SAMPLE)]
        cand += [StepId(0, 0, Op.LOGITS, 0), StepId(0, 0, Op.LOGITS, len(bl) - 1)]
    w = work = 0
    for s in cand:
        a, b = step_bounds(mv, n_prompt, 1, s)
        w, work = max(w, a), max(work, b)
    return w, work


@lru_cache(maxsize=64)
def _kv_tables(cfg: LlamaConfig) -> tuple[int, int, int, int]:
    """Over every layer and KV head: the largest K/V multiproof of a position without and with the LM
    head, and the largest own-position multiproof (the step, its Q heads, K and V) without and with it.
    The leaf indices of the layers do not depend on the position, only the tree sizes do."""
    plain, head = lt.step_count(cfg, 2, 0), lt.max_step_count(cfg)
    kv_p = kv_h = own_p = own_h = 0
    for ly in range(cfg.n_layers):
        for g in range(cfg.n_kv_heads):
            kv = {lt.step_index(cfg, 1, StepId(0, ly, Op.K, g)), lt.step_index(cfg, 1, StepId(0, ly, Op.V, g))}
            q = {lt.step_index(cfg, 1, StepId(0, ly, Op.Q, g * cfg.group + i)) for i in range(cfg.group)}
            own = kv | q | {lt.step_index(cfg, 1, StepId(0, ly, Op.ATTN, g))}
            kv_p = max(kv_p, multiproof_size(plain, kv))  # type: ignore[arg-type]
            kv_h = max(kv_h, multiproof_size(head, kv))  # type: ignore[arg-type]
            own_p = max(own_p, multiproof_size(plain, own))  # type: ignore[arg-type]
            own_h = max(own_h, multiproof_size(head, own))  # type: ignore[arg-type]
    return kv_p, kv_h, own_p, own_h


def _attn_max(mv: ModelView, n_prompt: int, rows: int, t: int) -> tuple[int, int]:
    """Upper bounds of an ATTN step proof at position ``t`` over every layer and KV head (each term at
    its own maximum over them, so at least :func:`attn_bounds` of any of them)."""
    cfg = mv.cfg
    kv_p, kv_h, own_p, own_h = _kv_tables(cfg)
    head = lt.has_head(n_prompt, t)
    c_t = lt.step_count(cfg, n_prompt, t)
    hashes = own_h if head else own_p
    leaves = (cfg.group + 3) * (_depth(c_t) + 1)
    head_from = max(0, n_prompt - 1)
    n_head = max(0, t - head_from)
    n_plain = t - n_head
    for n, is_head in ((n_plain, False), (n_head, True)):
        if n:
            c = lt.max_step_count(cfg) if is_head else lt.step_count(cfg, 2, 0)
            hashes += n * (kv_h if is_head else kv_p)
            leaves += n * 2 * (_depth(c) + 1)
    return _attn_totals(cfg, t, rows, hashes, leaves, StepId(t, 0, Op.ATTN, 0))


def _attn_totals(cfg: LlamaConfig, t: int, rows: int, hashes: int, leaves: int, step: StepId) -> tuple[int, int]:
    if t:
        hashes += range_proof_size(rows, 0, t)
        leaves += t * (_depth(rows) + 1)
    n_deps = cfg.group + 2 * (t + 1)
    inputs = cfg.group * (4 * cfg.head_dim + 5) + 2 * (t + 1) * (4 * cfg.head_dim + 5)
    witness = 512 + inputs + t * (lt.ROW_BYTES + 2) + 34 * hashes + 8 * (t + 1)  # + [position, [...]] heads
    work = (
        BASE_WORK
        + STEP_WORK
        + HASH_WORK * (hashes + leaves + n_deps)
        + WITNESS_KB_WORK * ceil_div(witness, 1024)
        + DEP_WORK * n_deps
        + MAC_WORK_PER_K * ceil_div(_matmul_macs(cfg, step), 1000)
    )
    return witness, work


def attn_bounds(mv: ModelView, n_prompt: int, rows: int, step: StepId) -> tuple[int, int]:
    """:func:`step_bounds` of one ATTN step in closed form: the K/V multiproof of every earlier position
    is one of two sizes (positions with and without the LM head), so this costs O(log) not O(t)."""
    cfg, t, ly, g = mv.cfg, step.token, step.layer, step.block
    kv = {lt.step_index(cfg, n_prompt, StepId(t, ly, Op.K, g)), lt.step_index(cfg, n_prompt, StepId(t, ly, Op.V, g))}
    q = {lt.step_index(cfg, n_prompt, StepId(t, ly, Op.Q, g * cfg.group + i)) for i in range(cfg.group)}
    own = q | kv | {lt.step_index(cfg, n_prompt, step)}
    c_t = lt.step_count(cfg, n_prompt, t)
    hashes = multiproof_size(c_t, own)  # type: ignore[arg-type]
    leaves = len(own) * (_depth(c_t) + 1)
    head_from = max(0, n_prompt - 1)
    n_head = max(0, t - head_from)  # earlier positions with the LM head
    n_plain = t - n_head
    for n, head in ((n_plain, False), (n_head, True)):
        if n:
            c = lt.step_count(cfg, n_prompt, head_from if head else 0)
            hashes += n * multiproof_size(c, kv)  # type: ignore[arg-type]
            leaves += n * 2 * (_depth(c) + 1)
    return _attn_totals(cfg, t, rows, hashes, leaves, step)


def step_check_bounds(mv: ModelView, n_prompt: int, rows: int, step: StepId) -> tuple[int, int]:
    """Witness and work bounds of the step proof of ``step`` (closed form for ATTN)."""
    if step.op == Op.ATTN:
        return attn_bounds(mv, n_prompt, rows, step)
    return step_bounds(mv, n_prompt, rows, step)


def steps_witness(cfg: LlamaConfig) -> int:
    """Bytes of the miner's ``llm_steps`` for a position with the most steps."""
    return 512 + 34 * lt.max_step_count(cfg)


def steps_work(cfg: LlamaConfig) -> int:
    """Dispute work of checking an ``llm_steps`` (one leaf encoding and ~2 hashes per step)."""
    n = lt.max_step_count(cfg)
    return BASE_WORK + 3 * HASH_WORK * n + WITNESS_KB_WORK * ceil_div(steps_witness(cfg), 1024)
