"""Generation with a KV cache, the step trace and its root, and the one-step check.

``generate`` computes whole matrices at once (all prompt positions in one pass, whole weight matrices
as cached float64 copies for BLAS) through the same batched kernels that :func:`state.llm.steps.run_step`
calls, so every recorded step output is bit-identical to the step function (``tests/test_llm_steps.py``
re-checks every step of a run).

Trace (format ``TRACE_FORMAT``): the steps of :func:`step_order` in that order; leaf ``i`` is
``codec.encode([token, layer, op, block, sha256(output bytes)])`` where the output bytes are the int32
little-endian bytes of the step output (row-major; shape from :func:`steps.output_shape`);
``trace_root = state.types.merkle_root(leaves)`` (RFC 6962, see :mod:`state.merkle` for proofs).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from .. import codec
from ..types import merkle_root
from . import fixed as fx
from .config import LlamaConfig, LlmError
from .modelfile import ModelWeights, WRows
from .steps import (
    Op,
    Sampling,
    StepId,
    blocks,
    dependencies,
    k_embed,
    k_logits_topk,
    k_norm,
    k_proj_rope,
    k_swiglu,
    merge_candidates,
    output_shape,
    run_step,
    sample_from,
    weight_needs,
)

TRACE_FORMAT = "aitbc-llm-trace-v1"
MAX_STOP_IDS = 16


class IntModel:
    """An integer model in memory: config, parsed weights and lazily built float64 copies for BLAS."""

    def __init__(self, cfg: LlamaConfig, file_bytes: bytes) -> None:
        self.cfg = cfg
        self.weights = ModelWeights(cfg, file_bytes)
        self._f64: dict[str, np.ndarray] = {}

    def fw(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(scale, q as float64)`` of a whole q8r tensor (the float64 copy is cached)."""
        w = self.weights.tensor(name)
        if w.name not in self._f64:
            self._f64[w.name] = w.q.astype(np.float64)
        return w.scale, self._f64[w.name]

    def gain(self, name: str) -> np.ndarray:
        return self.weights.tensor(name).q

    def step_weights(self, step: StepId, token: int | None = None) -> list[WRows]:
        """The weight rows ``step`` reads (prover side; a verifier gets them from verified slices)."""
        return [self.weights.rows(n, r0, r1) for n, r0, r1 in weight_needs(self.cfg, step, token)]


def output_bytes(arr: np.ndarray) -> bytes:
    """Canonical bytes of a step output: int32 little-endian, row-major."""
    return np.ascontiguousarray(arr, dtype="<i4").tobytes()


def output_from_bytes(cfg: LlamaConfig, step: StepId, data: bytes) -> np.ndarray:
    shape = output_shape(cfg, step)
    n = int(np.prod(shape))
    if len(data) != 4 * n:
        raise LlmError(f"{step!r}: output must be {4 * n} bytes", "llm_step")
    return np.frombuffer(data, dtype="<i4").astype(np.int32).reshape(shape)


def trace_leaf(step: StepId, out: bytes) -> bytes:
    """Leaf of the trace tree: canonical CBOR ``[token, layer, op, block, sha256(output bytes)]``."""
    return codec.encode([*step.key(), hashlib.sha256(out).digest()])


def step_order(cfg: LlamaConfig, n_prompt: int, n_positions: int) -> list[StepId]:
    """Canonical order of the steps for positions ``0..n_positions-1`` (LM head and SAMPLE only from
    position ``n_prompt - 1`` on)."""
    order: list[StepId] = []
    per_layer = (Op.ATTN_NORM, Op.Q, Op.K, Op.V, Op.ATTN, Op.O, Op.RESID_ATTN, Op.FFN_NORM, Op.SWIGLU, Op.DOWN)
    for t in range(n_positions):
        order.append(StepId(t, 0, Op.EMBED))
        for ly in range(cfg.n_layers):
            for op in (*per_layer, Op.RESID_FFN):
                order.extend(StepId(t, ly, op, b) for b in range(len(blocks(cfg, op))))
        if t >= n_prompt - 1:
            order.append(StepId(t, 0, Op.FINAL_NORM))
            order.extend(StepId(t, 0, Op.LOGITS, c) for c in range(len(blocks(cfg, Op.LOGITS))))
            order.append(StepId(t, 0, Op.SAMPLE))
    return order


@dataclass
class Trace:
    """Every step output of a run, in :func:`step_order` order."""

    cfg: LlamaConfig
    n_prompt: int
    outputs: dict[StepId, np.ndarray] = field(default_factory=dict)
    n_positions: int = 0

    def order(self) -> list[StepId]:
        return step_order(self.cfg, self.n_prompt, self.n_positions)

    def leaves(self) -> list[bytes]:
        return [trace_leaf(s, output_bytes(self.outputs[s])) for s in self.order()]

    def root(self) -> bytes:
        """``merkle_root(leaves)``: the miner's commitment to the whole computation."""
        return merkle_root(self.leaves())

    def items(self) -> list[tuple[StepId, bytes]]:
        return [(s, output_bytes(self.outputs[s])) for s in self.order()]


class _Cache:
    def __init__(self, cfg: LlamaConfig) -> None:
        z = np.zeros((cfg.n_kv_heads, 0, cfg.head_dim), dtype=np.int64)
        self.k = [z for _ in range(cfg.n_layers)]
        self.v = [z for _ in range(cfg.n_layers)]


def _split(
    rec: dict[StepId, np.ndarray] | None, cfg: LlamaConfig, pos: np.ndarray, layer: int, op: int, y: np.ndarray
) -> None:
    if rec is None:
        return
    bl = blocks(cfg, op)
    for i, t in enumerate(pos.tolist()):
        for b, (r0, r1) in enumerate(bl):
            rec[StepId(t, layer, op, b)] = y[i, r0:r1].astype(np.int32)


def _forward(
    model: IntModel,
    tokens: np.ndarray,
    pos: np.ndarray,
    cache: _Cache,
    rec: dict[StepId, np.ndarray] | None,
) -> np.ndarray:
    """Run positions ``pos`` (contiguous, after those in ``cache``); returns the final residual [T, dim]."""
    cfg = model.cfg
    emb = model.weights.tensor("tok_embd")
    h = fx.sat32(k_embed(WRows("tok_embd", 0, emb.scale[tokens], emb.q[tokens]))).astype(np.int64)
    if rec is not None:
        for i, t in enumerate(pos.tolist()):
            rec[StepId(t, 0, Op.EMBED)] = h[i].astype(np.int32)
    hd, grp = cfg.head_dim, cfg.group
    for ly in range(cfg.n_layers):
        p = f"blk.{ly}."
        x = fx.sat32(k_norm(cfg, h, model.gain(p + "attn_norm"))).astype(np.int64)
        q = fx.sat32(k_proj_rope(cfg, x, pos, *model.fw(p + "attn_q"))).astype(np.int64)
        k = fx.sat32(k_proj_rope(cfg, x, pos, *model.fw(p + "attn_k"))).astype(np.int64)
        v = fx.sat32(fx.matmul_q8(x, *model.fw(p + "attn_v"))).astype(np.int64)
        t_n = x.shape[0]
        cache.k[ly] = np.concatenate([cache.k[ly], k.reshape(t_n, cfg.n_kv_heads, hd).transpose(1, 0, 2)], axis=1)
        cache.v[ly] = np.concatenate([cache.v[ly], v.reshape(t_n, cfg.n_kv_heads, hd).transpose(1, 0, 2)], axis=1)
        qh = q.reshape(t_n, cfg.n_heads, hd)
        att = np.concatenate(
            [
                fx.sat32(fx.attention_q16(qh[:, g * grp : (g + 1) * grp], pos, cache.k[ly][g], cache.v[ly][g], hd))
                for g in range(cfg.n_kv_heads)
            ],
            axis=1,
        ).astype(np.int64)
        o = fx.sat32(fx.matmul_q8(att, *model.fw(p + "attn_output"))).astype(np.int64)
        h1 = fx.sat32(h + o).astype(np.int64)
        x2 = fx.sat32(k_norm(cfg, h1, model.gain(p + "ffn_norm"))).astype(np.int64)
        gs, gq = model.fw(p + "ffn_gate")
        us, uq = model.fw(p + "ffn_up")
        sw = fx.sat32(k_swiglu(x2, gs, gq, us, uq)).astype(np.int64)
        dn = fx.sat32(fx.matmul_q8(sw, *model.fw(p + "ffn_down"))).astype(np.int64)
        h2 = fx.sat32(h1 + dn).astype(np.int64)
        if rec is not None:
            for op, y in (
                (Op.ATTN_NORM, x),
                (Op.Q, q),
                (Op.K, k),
                (Op.V, v),
                (Op.ATTN, att),
                (Op.O, o),
                (Op.RESID_ATTN, h1),
                (Op.FFN_NORM, x2),
                (Op.SWIGLU, sw),
                (Op.DOWN, dn),
                (Op.RESID_FFN, h2),
            ):
                _split(rec, cfg, pos, ly, op, y)
        h = h2
    return h


def _logits(model: IntModel, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Final norm (Q16 int64) and full-vocabulary saturated Q16 logits of residual rows ``h``."""
    cfg = model.cfg
    xf = fx.sat32(k_norm(cfg, h, model.gain("output_norm"))).astype(np.int64)
    return xf, fx.sat32(fx.matmul_q8(xf, *model.fw("output")))


def _head(
    model: IntModel, h_last: np.ndarray, t: int, sampling: Sampling, rec: dict[StepId, np.ndarray] | None
) -> int:
    cfg = model.cfg
    xf, logits = _logits(model, h_last[None, :])
    parts = []
    for c, (r0, r1) in enumerate(blocks(cfg, Op.LOGITS)):
        part = k_logits_topk(logits[0, r0:r1], r0).astype(np.int32)
        parts.append(part)
        if rec is not None:
            rec[StepId(t, 0, Op.LOGITS, c)] = part
    tok = sample_from(merge_candidates(cfg, parts), sampling, t)
    if rec is not None:
        rec[StepId(t, 0, Op.FINAL_NORM)] = xf[0].astype(np.int32)
        rec[StepId(t, 0, Op.SAMPLE)] = np.array([tok], dtype=np.int32)
    return tok


def _check_prompt(cfg: LlamaConfig, prompt_ids: list[int], max_new_tokens: int) -> None:
    if not isinstance(prompt_ids, list | tuple) or not 1 <= len(prompt_ids) <= cfg.max_ctx:
        raise LlmError(f"prompt must hold 1..{cfg.max_ctx} tokens", "llm_prompt")
    if not all(type(x) is int and 0 <= x < cfg.vocab for x in prompt_ids):
        raise LlmError("prompt token outside the vocabulary", "llm_prompt")
    if type(max_new_tokens) is not int or max_new_tokens < 1 or len(prompt_ids) + max_new_tokens - 1 > cfg.max_ctx:
        raise LlmError(f"max_new_tokens must be >= 1 with prompt + new - 1 <= {cfg.max_ctx}", "llm_prompt")


def generate(
    model: IntModel,
    prompt_ids: list[int],
    max_new_tokens: int,
    sampling: Sampling | None = None,
    stop_ids: frozenset[int] | set[int] | tuple[int, ...] = (),
    record: bool = True,
) -> tuple[list[int], Trace]:
    """Generate up to ``max_new_tokens`` tokens after ``prompt_ids`` (stopping after a token of
    ``stop_ids``); returns ``(new tokens, trace)``. With ``record=False`` the trace stays empty."""
    cfg = model.cfg
    sampling = sampling or Sampling()
    _check_prompt(cfg, list(prompt_ids), max_new_tokens)
    stops = frozenset(stop_ids)
    if len(stops) > MAX_STOP_IDS or not all(type(x) is int and 0 <= x < cfg.vocab for x in stops):
        raise LlmError(f"at most {MAX_STOP_IDS} stop ids, each in the vocabulary", "llm_prompt")
    n = len(prompt_ids)
    trace = Trace(cfg, n)
    rec = trace.outputs if record else None
    cache = _Cache(cfg)
    h = _forward(model, np.array(prompt_ids, dtype=np.int64), np.arange(n, dtype=np.int64), cache, rec)
    t = n - 1
    out: list[int] = []
    while True:
        tok = _head(model, h[-1], t, sampling, rec)
        out.append(tok)
        if tok in stops or len(out) >= max_new_tokens:
            break
        t += 1
        h = _forward(model, np.array([tok], dtype=np.int64), np.array([t], dtype=np.int64), cache, rec)
    trace.n_positions = t + 1
    return out, trace


def forward_logits(model: IntModel, tokens: list[int]) -> np.ndarray:
    """Saturated Q16 logits [T, vocab] (int32) at every position of ``tokens`` (teacher forcing)."""
    _check_prompt(model.cfg, list(tokens), 1)
    cache = _Cache(model.cfg)
    h = _forward(model, np.array(tokens, dtype=np.int64), np.arange(len(tokens), dtype=np.int64), cache, None)
    return _logits(model, h)[1]


def step_inputs(model: IntModel, trace: Trace, step: StepId, prompt_ids: list[int]) -> list[np.ndarray]:
    """The inputs of ``step`` taken from ``trace`` (a prompt EMBED takes the prompt token)."""
    if step.op == Op.EMBED and step.token < trace.n_prompt:
        return [np.array([prompt_ids[step.token]], dtype=np.int32)]
    return [trace.outputs[d] for d in dependencies(model.cfg, step, trace.n_prompt)]


def check_step(
    cfg: LlamaConfig,
    step: StepId,
    inputs: list[np.ndarray],
    weights: list[WRows],
    claimed_output: np.ndarray | bytes,
    sampling: Sampling | None = None,
) -> bool:
    """True iff re-executing ``step`` on ``inputs`` and ``weights`` gives exactly ``claimed_output``
    (an int32 array or its :func:`output_bytes`). Malformed inputs or weights give False."""
    if isinstance(claimed_output, np.ndarray) and claimed_output.dtype != np.int32:
        return False
    try:
        got = output_bytes(run_step(cfg, step, list(inputs), list(weights), sampling))
        claim = claimed_output if isinstance(claimed_output, bytes) else output_bytes(claimed_output)
    except (LlmError, ValueError, TypeError, IndexError):
        return False
    return got == claim
