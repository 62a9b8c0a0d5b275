"""The forward pass as a DAG of small steps; ``run_step`` is the single implementation of each.

A step is named by :class:`StepId` ``(token, layer, op, block)`` (``layer`` is 0 for the per-token ops
EMBED, FINAL_NORM, LOGITS and SAMPLE). Every step output is a 1-D (LOGITS: 2-D) int32 array whose shape
follows from the config and the step id alone (:func:`output_shape`). For a step,
:func:`dependencies` lists the earlier steps whose outputs are its inputs (in that order) and
:func:`weight_needs` the tensor rows it reads, so a verifier can be handed exactly those.

Ops per position ``t`` (the position is the token index) and layer ``l``:

* EMBED(t): token -> Q16 embedding row. Input: the token as a ``[1]`` array (from the prompt for
  ``t < n_prompt``, else the output of SAMPLE(t-1)).
* ATTN_NORM / FFN_NORM(t, l), FINAL_NORM(t): RMSNorm with the layer's gains.
* Q(t, l, h): query head ``h`` (its ``head_dim`` rows of ``attn_q``) with RoPE at position ``t``;
  K(t, l, g): key head ``g`` with RoPE; V(t, l, g): value head ``g``.
* ATTN(t, l, g): the ``group`` query heads of KV head ``g`` attend over K(s, l, g), V(s, l, g), s <= t.
* O(t, l, b), SWIGLU(t, l, b) = silu(gate_b x) * (up_b x), DOWN(t, l, b): row blocks of at most
  ``WEIGHT_BUDGET`` bytes of weights; RESID_ATTN / RESID_FFN(t, l): residual adds (saturating).
* LOGITS(t, c): vocabulary rows block ``c`` of the LM head; output ``[[values], [indices]]`` of its
  top ``min(TOPK, rows)`` logits (value descending, ties: lowest index first).
* SAMPLE(t): merges the LOGITS blocks and picks token t+1 (greedy, or seeded integer sampling).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from typing import Any

import numpy as np

from . import fixed as fx
from .config import LlamaConfig, LlmError
from .modelfile import WRows, q8_row_bytes, tensor_spec

WEIGHT_BUDGET = 256 * 1024  # max weight bytes of one row-block step (q8r rows incl. their scales)
TOPK = 64  # candidates each LOGITS block outputs; also the largest sampling top_k
SAMPLE_DOMAIN = b"aitbc-llm-sample-v1"
MAX_TEMP_TERM = 1 << 16
MAX_SEED_BYTES = 32


class Op(IntEnum):
    EMBED = 0
    ATTN_NORM = 1
    Q = 2
    K = 3
    V = 4
    ATTN = 5
    O = 6  # noqa: E741 - the o-projection
    RESID_ATTN = 7
    FFN_NORM = 8
    SWIGLU = 9
    DOWN = 10
    RESID_FFN = 11
    FINAL_NORM = 12
    LOGITS = 13
    SAMPLE = 14


#: The ops of one layer in step order (``generate.step_order``, the trace's leaf order).
LAYER_OPS = (Op.ATTN_NORM, Op.Q, Op.K, Op.V, Op.ATTN, Op.O, Op.RESID_ATTN, Op.FFN_NORM, Op.SWIGLU, Op.DOWN,
             Op.RESID_FFN)


@dataclass(frozen=True, slots=True, order=True)
class StepId:
    """One step: position ``token``, ``layer`` (0 for per-token ops), ``op`` and ``block``."""

    token: int
    layer: int
    op: int
    block: int = 0

    def key(self) -> list[int]:
        """The canonical list form ``[token, layer, op, block]`` used in trace leaves."""
        return [self.token, self.layer, int(self.op), self.block]

    def __repr__(self) -> str:
        return f"StepId(t={self.token}, l={self.layer}, {Op(self.op).name}, b={self.block})"


@dataclass(frozen=True, slots=True)
class Sampling:
    """Greedy when ``temperature_num == 0``; else temperature ``num/den`` over the ``top_k`` best logits
    with randomness ``sha256(SAMPLE_DOMAIN || seed || position)``."""

    temperature_num: int = 0
    temperature_den: int = 1
    top_k: int = 1
    seed: bytes = b""

    def __post_init__(self) -> None:
        ok = (
            type(self.temperature_num) is int
            and type(self.temperature_den) is int
            and type(self.top_k) is int
            and 0 <= self.temperature_num <= MAX_TEMP_TERM
            and 1 <= self.temperature_den <= MAX_TEMP_TERM
            and 1 <= self.top_k <= TOPK
            and isinstance(self.seed, bytes)
            and len(self.seed) <= MAX_SEED_BYTES
        )
        if not ok:
            raise LlmError(f"bad sampling parameters {self!r}", "llm_sampling")

    def to_map(self) -> dict[str, Any]:
        return {"temp": [self.temperature_num, self.temperature_den], "top_k": self.top_k, "seed": self.seed}

    @classmethod
    def from_map(cls, m: Any) -> Sampling:
        if not isinstance(m, dict) or set(m) != {"temp", "top_k", "seed"}:
            raise LlmError("sampling must be a map with keys temp, top_k, seed", "llm_sampling")
        t = m["temp"]
        if not isinstance(t, list | tuple) or len(t) != 2:
            raise LlmError("sampling temp must be [num, den]", "llm_sampling")
        return cls(t[0], t[1], m["top_k"], m["seed"])


# --------------------------------------------------------------------------------------------------
# Blocks


def row_blocks(rows: int, row_bytes: int, n_mats: int = 1) -> list[tuple[int, int]]:
    """Split ``rows`` into near-equal contiguous blocks of at most ``WEIGHT_BUDGET`` weight bytes."""
    per_row = row_bytes * n_mats
    nb = max(1, -(-rows * per_row // WEIGHT_BUDGET))
    size = -(-rows // nb)
    return [(r, min(r + size, rows)) for r in range(0, rows, size)]


@lru_cache(maxsize=16)
def _plan(cfg: LlamaConfig) -> dict[int, list[tuple[int, int]]]:
    hd = cfg.head_dim
    return {
        Op.Q: [(h * hd, (h + 1) * hd) for h in range(cfg.n_heads)],
        Op.K: [(g * hd, (g + 1) * hd) for g in range(cfg.n_kv_heads)],
        Op.V: [(g * hd, (g + 1) * hd) for g in range(cfg.n_kv_heads)],
        Op.ATTN: [(g * cfg.group * hd, (g + 1) * cfg.group * hd) for g in range(cfg.n_kv_heads)],
        Op.O: row_blocks(cfg.dim, q8_row_bytes(cfg.q_dim)),
        Op.SWIGLU: row_blocks(cfg.ffn_dim, q8_row_bytes(cfg.dim), 2),
        Op.DOWN: row_blocks(cfg.dim, q8_row_bytes(cfg.ffn_dim)),
        Op.LOGITS: row_blocks(cfg.vocab, q8_row_bytes(cfg.dim)),
    }


def blocks(cfg: LlamaConfig, op: int) -> list[tuple[int, int]]:
    """Output row ranges of the blocks of ``op`` (one block ``(0, n)`` for unsplit ops)."""
    plan = _plan(cfg)
    if op in plan:
        return plan[op]
    return [(0, 1)] if op == Op.SAMPLE else [(0, cfg.dim)]


def output_shape(cfg: LlamaConfig, step: StepId) -> tuple[int, ...]:
    r0, r1 = blocks(cfg, step.op)[step.block]
    if step.op == Op.LOGITS:
        return (2, min(TOPK, r1 - r0))
    return (r1 - r0,)


def _check_step(cfg: LlamaConfig, step: StepId) -> None:
    ok = (
        isinstance(step, StepId)
        and all(type(v) is int for v in (step.token, step.layer, step.block))
        and int(step.op) in Op._value2member_map_
        and 0 <= step.token < cfg.max_ctx
        and 0 <= step.layer < cfg.n_layers
        and 0 <= step.block < len(blocks(cfg, step.op))
    )
    per_token = step.op in (Op.EMBED, Op.FINAL_NORM, Op.LOGITS, Op.SAMPLE)
    if not ok or (per_token and step.layer != 0):
        raise LlmError(f"no such step {step!r}", "llm_step")


def _h_in(cfg: LlamaConfig, t: int, layer: int) -> StepId:
    return StepId(t, 0, Op.EMBED) if layer == 0 else StepId(t, layer - 1, Op.RESID_FFN)


def dependencies(cfg: LlamaConfig, step: StepId, n_prompt: int) -> list[StepId]:
    """The steps whose outputs are ``step``'s inputs, in input order (EMBED of a prompt position has
    none: its input is the prompt token itself)."""
    _check_step(cfg, step)
    t, ly, op = step.token, step.layer, step.op
    nb = lambda o: len(blocks(cfg, o))  # noqa: E731
    if op == Op.EMBED:
        return [] if t < n_prompt else [StepId(t - 1, 0, Op.SAMPLE)]
    if op == Op.ATTN_NORM:
        return [_h_in(cfg, t, ly)]
    if op in (Op.Q, Op.K, Op.V):
        return [StepId(t, ly, Op.ATTN_NORM)]
    if op == Op.ATTN:
        g = step.block
        qs = [StepId(t, ly, Op.Q, g * cfg.group + i) for i in range(cfg.group)]
        ks = [StepId(s, ly, Op.K, g) for s in range(t + 1)]
        vs = [StepId(s, ly, Op.V, g) for s in range(t + 1)]
        return qs + ks + vs
    if op == Op.O:
        return [StepId(t, ly, Op.ATTN, g) for g in range(cfg.n_kv_heads)]
    if op == Op.RESID_ATTN:
        return [_h_in(cfg, t, ly)] + [StepId(t, ly, Op.O, b) for b in range(nb(Op.O))]
    if op == Op.FFN_NORM:
        return [StepId(t, ly, Op.RESID_ATTN)]
    if op == Op.SWIGLU:
        return [StepId(t, ly, Op.FFN_NORM)]
    if op == Op.DOWN:
        return [StepId(t, ly, Op.SWIGLU, b) for b in range(nb(Op.SWIGLU))]
    if op == Op.RESID_FFN:
        return [StepId(t, ly, Op.RESID_ATTN)] + [StepId(t, ly, Op.DOWN, b) for b in range(nb(Op.DOWN))]
    if op == Op.FINAL_NORM:
        return [StepId(t, cfg.n_layers - 1, Op.RESID_FFN)]
    if op == Op.LOGITS:
        return [StepId(t, 0, Op.FINAL_NORM)]
    return [StepId(t, 0, Op.LOGITS, c) for c in range(nb(Op.LOGITS))]  # SAMPLE


def weight_needs(cfg: LlamaConfig, step: StepId, token: int | None = None) -> list[tuple[str, int, int]]:
    """``(tensor, row0, row1)`` of every weight block ``step`` reads, in the order ``run_step`` takes them.

    EMBED needs the row of its input ``token``.
    """
    _check_step(cfg, step)
    p = f"blk.{step.layer}."
    op = step.op
    if op == Op.EMBED:
        if type(token) is not int or not 0 <= token < cfg.vocab:
            raise LlmError(f"EMBED needs a token id in [0, {cfg.vocab}), got {token!r}", "llm_step")
        return [("tok_embd", token, token + 1)]
    norm = {Op.ATTN_NORM: p + "attn_norm", Op.FFN_NORM: p + "ffn_norm", Op.FINAL_NORM: "output_norm"}
    if op in norm:
        return [(norm[op], 0, 1)]
    r0, r1 = blocks(cfg, op)[step.block]
    mats = {
        Op.Q: [p + "attn_q"],
        Op.K: [p + "attn_k"],
        Op.V: [p + "attn_v"],
        Op.O: [p + "attn_output"],
        Op.SWIGLU: [p + "ffn_gate", p + "ffn_up"],
        Op.DOWN: [p + "ffn_down"],
        Op.LOGITS: ["output"],
    }
    if op in mats:
        return [(tensor_spec(cfg, name).name, r0, r1) for name in mats[op]]
    return []


# --------------------------------------------------------------------------------------------------
# Batched kernels shared by run_step and the fast path (rows = positions)


def k_embed(w: WRows) -> np.ndarray:
    return fx.dequant_rows_q16(w.scale, w.q)


def k_norm(cfg: LlamaConfig, h: np.ndarray, gain: np.ndarray) -> np.ndarray:
    return fx.rmsnorm_q16(h, gain, cfg.norm_eps_num, cfg.norm_eps_den)


def k_proj_rope(cfg: LlamaConfig, x: np.ndarray, pos: np.ndarray, scale: np.ndarray, wq: np.ndarray) -> np.ndarray:
    """Project Q16 rows ``x`` [T, dim] on head-aligned rows and rotate each head at its position."""
    y = fx.sat32(fx.matmul_q8(x, scale, wq)).astype(np.int64)
    t = y.shape[0]
    heads = y.reshape(t, -1, cfg.head_dim)
    cos, sin = fx.rope_tables(cfg.head_dim, cfg.rope_base, cfg.max_ctx)
    return fx.rope_q16(heads, np.asarray(pos)[:, None], cos, sin).reshape(t, -1)


def k_swiglu(x: np.ndarray, gs: np.ndarray, gq: np.ndarray, us: np.ndarray, uq: np.ndarray) -> np.ndarray:
    g = fx.sat32(fx.matmul_q8(x, gs, gq)).astype(np.int64)
    u = fx.sat32(fx.matmul_q8(x, us, uq)).astype(np.int64)
    return fx.round_shift(fx.silu_q16(g) * u, fx.ACT_FRAC)


def k_logits_topk(logits: np.ndarray, r0: int) -> np.ndarray:
    vals, idx = fx.topk_desc(logits, min(TOPK, logits.shape[0]), r0)
    return np.stack([vals, idx])


def sample_from(cand: np.ndarray, sampling: Sampling, position: int) -> int:
    """Pick the next token from merged candidates ``[[values], [indices]]`` (already sorted)."""
    vals, idx = cand[0], cand[1]
    if sampling.temperature_num == 0:
        return int(idx[0])
    k = min(sampling.top_k, vals.shape[0])
    v = vals[:k].astype(np.int64)
    z = ((v - v[0]) * sampling.temperature_den) // sampling.temperature_num
    e = fx.exp_q30(z)
    cum = np.cumsum(e)
    seed = hashlib.sha256(SAMPLE_DOMAIN + len(sampling.seed).to_bytes(1, "big") + sampling.seed).digest()
    rnd = hashlib.sha256(seed + position.to_bytes(8, "big")).digest()
    r = int.from_bytes(rnd, "big") % int(cum[-1])
    return int(idx[int(np.searchsorted(cum, r, side="right"))])


# --------------------------------------------------------------------------------------------------
# run_step


def _vec(a: Any, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.dtype != np.int32 or a.shape != shape:
        got = (getattr(a, "dtype", type(a).__name__), getattr(a, "shape", None))
        raise LlmError(f"step input must be int32 {shape}, got {got}", "llm_step")
    return a.astype(np.int64)


def _weights(cfg: LlamaConfig, step: StepId, weights: list[WRows], token: int | None) -> list[WRows]:
    need = weight_needs(cfg, step, token)
    if len(weights) != len(need):
        raise LlmError(f"{step!r} takes {len(need)} weight blocks, got {len(weights)}", "llm_step")
    for w, (name, r0, r1) in zip(weights, need, strict=True):
        spec = tensor_spec(cfg, name)
        if not isinstance(w, WRows) or w.name != spec.name:
            raise LlmError(f"{step!r}: expected rows of {name}", "llm_step")
        if spec.dtype == "q8r":
            ok = w.row0 == r0 and w.q.shape == (r1 - r0, spec.shape[1]) and w.scale.shape == (r1 - r0,)
        else:
            ok = w.q.shape == (spec.shape[0],)
        if not ok:
            raise LlmError(f"{step!r}: {name} rows [{r0}, {r1}) have the wrong shape", "llm_step")
    return weights


def run_step(
    cfg: LlamaConfig,
    step: StepId,
    inputs: list[np.ndarray],
    weights: list[WRows],
    sampling: Sampling | None = None,
) -> np.ndarray:
    """Compute ``step``'s int32 output from its inputs (outputs of :func:`dependencies`, or the prompt
    token for a prompt EMBED) and the weight rows of :func:`weight_needs`. Raises :class:`LlmError`."""
    _check_step(cfg, step)
    t, op = step.token, step.op
    n_dep = len(dependencies(cfg, step, n_prompt=t + 1)) if op != Op.EMBED else 1
    if not isinstance(inputs, list | tuple) or len(inputs) != n_dep:
        raise LlmError(f"{step!r} takes {n_dep} inputs, got {len(inputs) if isinstance(inputs, list | tuple) else '?'}", "llm_step")
    d, hd = cfg.dim, cfg.head_dim
    r0, r1 = blocks(cfg, op)[step.block]
    pos = np.array([t], dtype=np.int64)
    if op == Op.EMBED:
        tok = int(_vec(inputs[0], (1,))[0])
        w = _weights(cfg, step, weights, tok)
        out = k_embed(w[0])[0]
    elif op in (Op.ATTN_NORM, Op.FFN_NORM, Op.FINAL_NORM):
        (g,) = _weights(cfg, step, weights, None)
        out = k_norm(cfg, _vec(inputs[0], (d,))[None, :], g.q)[0]
    elif op in (Op.Q, Op.K):
        (w,) = _weights(cfg, step, weights, None)
        out = k_proj_rope(cfg, _vec(inputs[0], (d,))[None, :], pos, w.scale, w.q)[0]
    elif op == Op.V:
        (w,) = _weights(cfg, step, weights, None)
        out = fx.matmul_q8(_vec(inputs[0], (d,))[None, :], w.scale, w.q)[0]
    elif op == Op.ATTN:
        _weights(cfg, step, weights, None)
        grp = cfg.group
        q = np.stack([_vec(x, (hd,)) for x in inputs[:grp]])[None, :, :]
        k = np.stack([_vec(x, (hd,)) for x in inputs[grp : grp + t + 1]])
        v = np.stack([_vec(x, (hd,)) for x in inputs[grp + t + 1 :]])
        out = fx.attention_q16(q, pos, k, v, hd)[0]
    elif op == Op.O:
        (w,) = _weights(cfg, step, weights, None)
        x = np.concatenate([_vec(a, (b1 - b0,)) for a, (b0, b1) in zip(inputs, blocks(cfg, Op.ATTN), strict=True)])
        out = fx.matmul_q8(x[None, :], w.scale, w.q)[0]
    elif op in (Op.RESID_ATTN, Op.RESID_FFN):
        _weights(cfg, step, weights, None)
        sub = Op.O if op == Op.RESID_ATTN else Op.DOWN
        delta = np.concatenate(
            [_vec(a, (b1 - b0,)) for a, (b0, b1) in zip(inputs[1:], blocks(cfg, sub), strict=True)]
        )
        out = _vec(inputs[0], (d,)) + delta
    elif op == Op.SWIGLU:
        gw, uw = _weights(cfg, step, weights, None)
        out = k_swiglu(_vec(inputs[0], (d,))[None, :], gw.scale, gw.q, uw.scale, uw.q)[0]
    elif op == Op.DOWN:
        (w,) = _weights(cfg, step, weights, None)
        x = np.concatenate(
            [_vec(a, (b1 - b0,)) for a, (b0, b1) in zip(inputs, blocks(cfg, Op.SWIGLU), strict=True)]
        )
        out = fx.matmul_q8(x[None, :], w.scale, w.q)[0]
    elif op == Op.LOGITS:
        (w,) = _weights(cfg, step, weights, None)
        logits = fx.sat32(fx.matmul_q8(_vec(inputs[0], (d,))[None, :], w.scale, w.q)[0])
        return k_logits_topk(logits, r0).astype(np.int32)
    else:  # SAMPLE
        _weights(cfg, step, weights, None)
        if sampling is None:
            raise LlmError("SAMPLE needs the sampling parameters", "llm_step")
        cand = merge_candidates(cfg, inputs)
        return np.array([sample_from(cand, sampling, t)], dtype=np.int32)
    return fx.sat32(out)


def merge_candidates(cfg: LlamaConfig, inputs: list[np.ndarray]) -> np.ndarray:
    """Concatenate the LOGITS blocks' candidates and sort them (value descending, index ascending)."""
    parts = []
    for c, a in enumerate(inputs):
        b0, b1 = blocks(cfg, Op.LOGITS)[c]
        arr = _vec(a, (2, min(TOPK, b1 - b0)))
        if arr[1].min() < b0 or arr[1].max() >= b1:
            raise LlmError("LOGITS candidate index outside its block", "llm_step")
        parts.append(arr)
    cat = np.concatenate(parts, axis=1)
    order = np.lexsort((cat[1], -cat[0]))[:TOPK]
    return cat[:, order]
