"""Generation with a KV cache, the step trace and its root, and the one-step check.

``generate`` computes whole matrices at once (all prompt positions in one pass; Q, K, V and gate, up
as one product of their stacked rows; the keys' rescaling kept in the KV cache) with the integer
primitives of :mod:`state.llm.fixed` that :func:`state.llm.steps.run_step` uses, so every recorded step
output is bit-identical to the step function (``tests/test_llm_steps.py`` re-checks every step of a
run). Exact BLAS: a pass of at most ``GROUPED_MAX_T`` positions (decode) reads the int8 weights as
float32 per 32-column group (:func:`group_dot`, 4 bytes per weight); a longer pass (prefill) multiplies
in float64 (:func:`fixed.exact_dot`, converted per pass, not kept).

Trace (format ``TRACE_FORMAT``): the steps of :func:`step_order` in that order; leaf ``i`` is
``codec.encode([token, layer, op, block, sha256(output bytes)])`` where the output bytes are the int32
little-endian bytes of the step output (row-major; shape from :func:`steps.output_shape`);
``trace_root = state.types.merkle_root(leaves)`` (RFC 6962, see :mod:`state.merkle` for proofs).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .. import codec
from ..types import merkle_root
from . import fixed as fx
from .config import LlamaConfig, LlmError
from .modelfile import GROUP, ModelWeights, WRows, tensor_spec
from .steps import (
    LAYER_OPS,
    TOPK,
    Op,
    Sampling,
    StepId,
    blocks,
    dependencies,
    k_embed,
    k_norm,
    output_shape,
    run_step,
    sample_from,
    weight_needs,
)

TRACE_FORMAT = "aitbc-llm-trace-v1"
MAX_STOP_IDS = 16


GROUPED_MAX_T = 8  # passes of at most this many positions multiply with the float32 group layout
_ROW_CHUNK = 8192  # output rows per block of a one-position product (:func:`group_dot`)


class _Mat:
    """One q8r matrix (or several with the same input, rows stacked) laid out for exact BLAS.

    ``scale`` int64 [O] (Q36) and ``q16`` int16 [O, K] (``w = q8 * u``) as parsed; ``qg`` float32
    [G, O, 32], the int8 weights of each 32-column group (zero padded), and ``ut`` float64 [G, O] the group
    sub-scales. Rows stacked from several tensors give the same outputs as separate products: every
    output row depends only on its own weight row.
    """

    __slots__ = ("k", "q16", "qg", "scale", "ut")

    def __init__(self, scale: np.ndarray, q16: np.ndarray, qg: np.ndarray, ut: np.ndarray) -> None:
        self.scale, self.q16, self.qg, self.ut = scale, q16, qg, ut
        self.k = int(q16.shape[1])


def _group_layout(cfg: LlamaConfig, data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(qg, ut)`` of a whole q8r tensor, straight from its bytes in the model file (already checked by
    :class:`ModelWeights`)."""
    spec = tensor_spec(cfg, name)
    rows, k = spec.shape
    ng = -(-k // GROUP)
    raw = np.frombuffer(data, dtype=np.uint8, count=spec.nbytes, offset=spec.offset).reshape(rows, spec.row_bytes)
    q8 = raw[:, 4 + ng :].view(np.int8)
    qg = np.zeros((ng, rows, GROUP), dtype=np.float32)
    full = k // GROUP
    qg[:full] = q8[:, : full * GROUP].reshape(rows, full, GROUP).transpose(1, 0, 2)
    if full < ng:
        qg[full, :, : k - full * GROUP] = q8[:, full * GROUP :]
    ut = np.ascontiguousarray(raw[:, 4 : 4 + ng].T, dtype=np.float64)
    return qg, ut


def group_dot(a: np.ndarray, m: _Mat) -> np.ndarray:
    """``a @ w.T`` exactly (as :func:`fixed.exact_dot`) for int ``a`` [T, K] with ``|a| <= 2**14``, reading
    the weights as float32 int8 groups (half the bytes of float64 ``w``).

    ``a = 128 * hi + lo`` with ``|hi| <= 128``, ``0 <= lo < 128``; per 32-column group ``g`` float32 BLAS
    gives ``Y = q_g @ [128 * hi_g | lo_g]``: every product and partial sum is an integer of magnitude
    <= 32 * 2**14 * 127 < 2**26 that is a multiple of 128 (the ``hi`` half) or < 2**19 (the ``lo`` half),
    so exact in float32 in any order. Then in float64 ``acc = sum_g u_g * (Y_hi + Y_lo)``: integers
    below ``K/32 * 255 * 2**26 < 2**42``, exact in any order.
    """
    t = a.shape[0]
    g = m.qg.shape[0]
    pad = g * GROUP - m.k
    if pad:
        a = np.concatenate([a, np.zeros((t, pad), dtype=np.int64)], axis=1)
    if t == 1:  # the same products; the float64 sums are exact in any order
        a0 = a[0]
        ag1 = np.empty((g, GROUP, 2), dtype=np.float32)
        ag1[:, :, 0] = ((a0 >> 7) << 7).reshape(g, GROUP)
        ag1[:, :, 1] = (a0 & 127).reshape(g, GROUP)
        o_n = m.qg.shape[1]
        out = np.empty((1, o_n), dtype=np.int64)
        for o0 in range(0, o_n, _ROW_CHUNK):  # row blocks keep the partial sums in cache (LM head)
            o1 = min(o0 + _ROW_CHUNK, o_n)
            y = np.matmul(m.qg[:, o0:o1], ag1).astype(np.float64)  # [G, rows, 2]
            c1 = y[:, :, 0]
            c1 += y[:, :, 1]
            out[0, o0:o1] = np.einsum("go,go->o", m.ut[:, o0:o1], c1)
        return out
    ag = np.empty((g, GROUP, 2 * t), dtype=np.float32)
    ag[:, :, :t] = ((a >> 7) << 7).reshape(t, g, GROUP).transpose(1, 2, 0)
    ag[:, :, t:] = (a & 127).reshape(t, g, GROUP).transpose(1, 2, 0)
    y = np.matmul(m.qg, ag)  # [G, O, 2T]
    c = np.add(y[:, :, :t], y[:, :, t:], dtype=np.float64)  # [G, O, T]
    if t == 1:
        return np.einsum("go,go->o", m.ut, c[:, :, 0])[None, :].astype(np.int64)
    c *= m.ut[:, :, None]
    return c.sum(axis=0).T.astype(np.int64)


_I32_LO, _I32_HI = np.int64(fx.I32_MIN), np.int64(fx.I32_MAX)
_ONE, _ROUND14, _ROUND13 = np.int64(1), np.int64(1 << (fx.ACC_DROP - 1)), np.int64(1 << 13)


def _sat(x: np.ndarray) -> np.ndarray:
    """``fixed.sat32(x).astype(np.int64)`` of an int64 array (the same values, int64 throughout)."""
    y = np.maximum(x, _I32_LO)
    return np.minimum(y, _I32_HI, out=y)


def _sat_inplace(x: np.ndarray) -> np.ndarray:
    """:func:`_sat` of a fresh int64 array, written into it."""
    np.maximum(x, _I32_LO, out=x)
    return np.minimum(x, _I32_HI, out=x)


def _shift1(mx: int, bits: int) -> int:
    """The exponent ``s`` of :func:`fixed.quant_shift` for a vector of largest magnitude ``mx >= 0``."""
    return min(max(mx.bit_length() - bits, -16), 48)


def _rs1(x: np.ndarray, s: int) -> np.ndarray:
    """:func:`fixed.round_shift` of int64 ``x`` by one Python int ``s``."""
    return (x + np.int64(1 << (s - 1))) >> np.int64(s) if s > 0 else x << np.int64(-s)


def _qshift(x: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fixed.quant_shift` (same ``a`` and ``s``) of int64 ``x`` with ``|x| < 2**53``."""
    mx = np.abs(x).max(axis=-1)
    s = np.clip(np.frexp(mx.astype(np.float64))[1] - bits, -16, 48).astype(np.int64)  # bit_length, exact
    ss = s[..., None]
    pos = np.maximum(ss, 0)
    return ((x + ((_ONE << pos) >> _ONE)) >> pos) << np.maximum(-ss, 0), s


def mat_q8(x: np.ndarray, m: _Mat) -> np.ndarray:
    """:func:`fixed.matmul_q8` of Q16 rows ``x`` [T, K] with ``m`` (same result, faster BLAS layout)."""
    mx = int(np.abs(x).max()) if x.shape[0] == 1 and x.dtype == np.int64 and x.size else -1
    if mx >= 0:  # one position (decode); np.abs overflows (mx < 0) only at -2**63
        s = _shift1(mx, fx.QBITS)
        acc = group_dot(_rs1(x, s), m)  # a fresh array: the rest in place
        acc += _ROUND14
        acc >>= np.int64(fx.ACC_DROP)
        acc *= m.scale
        s = fx.W_FRAC - fx.ACC_DROP - s
        if s > 0:
            acc += np.int64(1 << (s - 1))
            acc >>= np.int64(s)
        else:
            acc <<= np.int64(-s)
        return acc
    a, s = fx.quant_shift(x, fx.QBITS)
    acc = group_dot(a, m) if a.shape[0] <= GROUPED_MAX_T else fx.exact_dot(a, m.q16)
    acc = fx.round_shift(acc, fx.ACC_DROP)
    return fx.round_shift(acc * m.scale[None, :], fx.W_FRAC - fx.ACC_DROP - s[:, None])


class IntModel:
    """An integer model in memory: config, parsed weights and lazily built BLAS layouts of them."""

    def __init__(self, cfg: LlamaConfig, file_bytes: bytes) -> None:
        self.cfg = cfg
        self.weights = ModelWeights(cfg, file_bytes)
        self._data = file_bytes
        self._mats: dict[tuple[str, ...], _Mat] = {}
        self._gains: dict[str, np.ndarray] = {}

    def mat(self, *names: str) -> _Mat:
        """The q8r tensors ``names`` (same input size), rows stacked in that order (cached)."""
        if names not in self._mats:
            ws = [self.weights.tensor(n) for n in names]
            lays = [_group_layout(self.cfg, self._data, w.name) for w in ws]
            if len(ws) == 1:
                self._mats[names] = _Mat(ws[0].scale, ws[0].q, *lays[0])
            else:
                self._mats[names] = _Mat(
                    np.concatenate([w.scale for w in ws]),
                    np.concatenate([w.q for w in ws]),
                    np.concatenate([lay[0] for lay in lays], axis=1),
                    np.concatenate([lay[1] for lay in lays], axis=1),
                )
        return self._mats[names]

    def gain(self, name: str) -> np.ndarray:
        return self.weights.tensor(name).q

    def gain64(self, name: str) -> np.ndarray:
        """``gain(name)`` as int64 (cached)."""
        g = self._gains.get(name)
        if g is None:
            g = self._gains[name] = np.asarray(self.gain(name), dtype=np.int64)
        return g

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
    for t in range(n_positions):
        order.append(StepId(t, 0, Op.EMBED))
        for ly in range(cfg.n_layers):
            for op in LAYER_OPS:
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
    """Per layer and KV head: keys and values (int64) and the keys through ``quant_shift`` (float64
    integers and shifts) of the positions done so far, in buffers grown by doubling."""

    def __init__(self, cfg: LlamaConfig) -> None:
        self.cfg = cfg
        self.n = 0
        self.cap = 0
        self.k: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.ka: list[np.ndarray] = []
        self.sk: list[np.ndarray] = []

    def _grow(self, need: int) -> None:
        cfg = self.cfg
        cap = max(need, 2 * self.cap, 16)
        shape = (cfg.n_kv_heads, cap, cfg.head_dim)
        for buf, dt in ((self.k, np.int64), (self.v, np.int64), (self.ka, np.float64)):
            old = list(buf) or [None] * cfg.n_layers
            buf.clear()
            for o in old:
                nb = np.zeros(shape, dtype=dt)
                if o is not None:
                    nb[:, : self.n] = o[:, : self.n]
                buf.append(nb)
        old_sk = list(self.sk) or [None] * cfg.n_layers
        self.sk.clear()
        for o in old_sk:
            nb = np.zeros((cfg.n_kv_heads, cap), dtype=np.int64)
            if o is not None:
                nb[:, : self.n] = o[:, : self.n]
            self.sk.append(nb)
        self.cap = cap

    def append(self, layer: int, k: np.ndarray, v: np.ndarray) -> int:
        """Store ``k``, ``v`` [T, n_kv_heads, hd] of the next T positions of ``layer``; returns S, the number
        of positions held for this layer afterwards."""
        t_n = k.shape[0]
        if self.n + t_n > self.cap:
            self._grow(self.n + t_n)
        s0, s1 = self.n, self.n + t_n
        kt = k.transpose(1, 0, 2)
        self.k[layer][:, s0:s1] = kt
        self.v[layer][:, s0:s1] = v.transpose(1, 0, 2)
        ka, sk = _qshift(kt, fx.QBITS) if t_n == 1 else fx.quant_shift(kt, fx.QBITS)  # |k| < 2**31
        self.ka[layer][:, s0:s1] = ka
        self.sk[layer][:, s0:s1] = sk
        return s1


def _split(
    rec: dict[StepId, np.ndarray] | None, cfg: LlamaConfig, pos: list[int], layer: int, op: int, y: np.ndarray
) -> None:
    if rec is None:
        return
    bl = blocks(cfg, op)
    y32 = y.astype(np.int32)  # a fresh array: each block is a (contiguous, disjoint) view of one of its rows
    nb = range(len(bl))
    for i, t in enumerate(pos):
        row = y32[i]
        rec.update(zip([StepId(t, layer, op, b) for b in nb], [row[r0:r1] for r0, r1 in bl], strict=True))


@lru_cache(maxsize=16)
def _layer_blocks(cfg: LlamaConfig) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...], int]:
    """``(op, block)`` of the steps of one layer of one position in step order, each one's columns in the
    concatenation of the layer's op outputs (in ``LAYER_OPS`` order, each as wide as its blocks reach), and
    the width of that concatenation."""
    keys: list[tuple[int, int]] = []
    spans: list[tuple[int, int]] = []
    base = 0
    for op in LAYER_OPS:
        bl = blocks(cfg, op)
        keys.extend((op, b) for b in range(len(bl)))
        spans.extend((base + r0, base + r1) for r0, r1 in bl)
        base += bl[-1][1]
    return tuple(keys), tuple(spans), base


def _record_layer(rec: dict[StepId, np.ndarray], cfg: LlamaConfig, t: int, layer: int, ys: tuple[np.ndarray, ...]) -> None:
    """:func:`_split` of the outputs ``ys`` [1, n] (``LAYER_OPS`` order, int32-range values) of one layer of
    one position ``t``: one int32 copy of them all, each block a (contiguous, disjoint) view of it."""
    keys, spans, width = _layer_blocks(cfg)
    row = np.concatenate(ys, axis=1, dtype=np.int32, casting="unsafe")[0]  # as .astype(np.int32) of each
    if row.shape[0] != width:  # an output wider than its blocks reach: one op at a time
        for op, y in zip(LAYER_OPS, ys, strict=True):
            _split(rec, cfg, [t], layer, op, y)
        return
    rec.update(zip([StepId(t, layer, op, b) for op, b in keys], [row[r0:r1] for r0, r1 in spans], strict=True))


def _i64(x: np.ndarray) -> np.ndarray:
    return fx.sat32(x).astype(np.int64)


#: A matrix product of the forward pass: Q16 rows ``x`` [T, K] times the stacked rows of the named
#: tensors, as ``sat32(fixed.matmul_q8(...))`` in int64. Another backend (``gpu/llm_cuda.py``) passes its
#: own, which must give the same bits.
MatMul = Callable[[np.ndarray, tuple[str, ...]], np.ndarray]

#: Attention over the KV cache in the forward pass: ``(layer, q, pos, cache, n_s)`` with ``q`` int64
#: [T, n_heads, hd] (roped, int32-range) at positions ``pos`` [T], after ``cache.append`` of those positions
#: (``n_s`` held): Q16 int64 [T, n_heads * hd], as :func:`_attention_heads`. Another backend
#: (``gpu/llm_cuda.py``) passes its own, which must give the same bits.
Attention = Callable[[int, np.ndarray, np.ndarray, "_Cache", int], np.ndarray]

#: The gate/up product of a layer followed by SwiGLU: ``(x [T, dim], (gate, up) tensor names)`` -> int64
#: [T, ffn_dim], as :func:`_swiglu` of the two halves of ``mm(x, names)``. Another backend passes its own.
GateUpSwiGLU = Callable[[np.ndarray, tuple[str, ...]], np.ndarray]


def numpy_matmul(model: IntModel) -> MatMul:
    """The NumPy :data:`MatMul` of ``model`` (:func:`mat_q8` on its cached BLAS layouts)."""

    def mm(x: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        y = mat_q8(x, model.mat(*names))
        if x.shape[0] == 1 and y.dtype == np.int64:  # a fresh array of one position: saturated in place
            return _sat_inplace(y)
        return _i64(y)

    return mm


def _attention_heads(cfg: LlamaConfig, qh: np.ndarray, pos: np.ndarray, cache: _Cache, ly: int, n_s: int) -> np.ndarray:
    """:func:`fixed.attention_q16_keys` of every KV head at once (the same operations with a leading head
    axis), over the ``n_s`` cached positions of layer ``ly``; Q16 int64 [T, n_heads * hd], heads in order."""
    t, _, hd = qh.shape
    nkv, grp = cfg.n_kv_heads, cfg.group
    q = qh.reshape(t, nkv, grp, hd).transpose(1, 0, 2, 3).reshape(nkv, t * grp, hd)
    qa, sq = fx.quant_shift(q, fx.QBITS) if t > 1 else _qshift(q, fx.QBITS)  # |q| < 2**31
    ka = cache.ka[ly][:, :n_s]
    dot = np.matmul(qa.astype(np.float64), ka.transpose(0, 2, 1)).astype(np.int64)  # exact, |dot| <= 2**34
    c = np.int64(math.isqrt((1 << 32) // hd))
    shift = np.minimum(32 - sq[:, :, None] - cache.sk[ly][:, None, :n_s], 62)
    if t == 1 and int(pos[0]) == n_s - 1:  # one query after every cached key: nothing masked
        dot *= c
        if int(shift.min()) > 0:  # fixed.round_shift with every shift in 1..62
            dot += (_ONE << shift) >> _ONE
            dot >>= shift
        else:
            dot = fx.round_shift(dot, shift)
        dot -= dot.max(axis=2, keepdims=True)  # score - max <= 0
        e = fx.exp_q30_nonpos(dot)
        e += _ROUND13
        e >>= np.int64(fx.EXP_FRAC - 16)
        num = np.matmul(e, cache.v[ly][:, :n_s])
        d = e.sum(axis=2, keepdims=True)
        num += d // 2
        num //= d  # fixed.round_div
        return num.reshape(1, nkv * grp * hd)  # [nkv, grp, hd] with t == 1: heads in order
    score = fx.round_shift(dot * c, shift)
    mask = np.arange(n_s)[None, :] > np.repeat(np.asarray(pos, dtype=np.int64), grp)[:, None]
    mx = np.where(mask, np.iinfo(np.int64).min, score).max(axis=2, keepdims=True)
    z = np.where(mask, np.int64(-(1 << 40)), score - mx)
    e = np.where(mask, 0, fx.round_shift(fx.exp_q30(z), fx.EXP_FRAC - 16))
    num = np.matmul(e, cache.v[ly][:, :n_s])  # exact int64
    out = fx.round_div(num, e.sum(axis=2, keepdims=True))  # [nkv, T*grp, hd]
    return out.reshape(nkv, t, grp * hd).transpose(1, 0, 2).reshape(t, nkv * grp * hd)


_ONE60, _ROUND29, _ROUND15 = np.int64(1 << 60), np.int64(1 << 29), np.int64(1 << 15)
_ONE30 = np.int64(1 << fx.EXP_FRAC)


def _swiglu(g: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``sat32(round_shift(silu_q16(g) * u, 16))`` (int64) of int64 gate and up rows: the operations of
    :func:`fixed.silu_q16` (through :func:`fixed.sigmoid_q30`), on one buffer in place."""
    e = fx.exp_q30_nonpos(-np.abs(g))
    den = e + _ONE30
    e <<= np.int64(fx.EXP_FRAC)
    num = np.where(g >= 0, _ONE60, e)
    num += den >> _ONE  # den // 2 (den > 0)
    num //= den  # sigmoid_q30
    num *= g
    num += _ROUND29
    num >>= np.int64(fx.EXP_FRAC)  # silu_q16
    num *= u
    num += _ROUND15
    num >>= np.int64(fx.ACT_FRAC)
    return _sat_inplace(num)


def swiglu_halves(gu: np.ndarray) -> np.ndarray:
    """:func:`_swiglu` of a stacked gate/up product ``gu`` int64 [T, 2 * ffn_dim] (gate first)."""
    f = gu.shape[1] // 2
    return _swiglu(gu[:, :f], gu[:, f:])


def _norm1(cfg: LlamaConfig, h: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """``sat32(k_norm(cfg, h, gain))`` (int64) of one row ``h`` [1, d] in the int32 range: the operations
    of :func:`fixed.rmsnorm_q16` with Python-int scalars."""
    h0 = h[0]
    d = h0.shape[0]
    s = _shift1(int(np.abs(h0).max()) if d else 0, fx.NORM_BITS)
    if s > 16:
        raise fx.InvariantError("rmsnorm input outside int32")
    a = _rs1(h0, s)
    v = int(np.dot(a, a)) * cfg.norm_eps_den + cfg.norm_eps_num * d * 4 ** (16 - s)
    r = math.isqrt((v << 32) // (d * cfg.norm_eps_den))
    n = (a * gain) << np.int64(16)
    n += np.int64(r // 2)
    n //= np.int64(r)
    return _sat(n)[None, :]


def _rope1(x: np.ndarray, c: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``sat32(rope_q16(x))`` (int64) of heads ``x`` [H, hd] of one position whose table rows are ``c``, ``s``."""
    x0 = x[:, 0::2]
    x1 = x[:, 1::2]
    half = np.int64(1 << (fx.ROPE_FRAC - 1))
    sh = np.int64(fx.ROPE_FRAC)
    out = np.empty_like(x)
    y = x0 * c
    y -= x1 * s
    y += half
    out[:, 0::2] = y >> sh
    y = x0 * s
    y += x1 * c
    y += half
    out[:, 1::2] = y >> sh
    return _sat_inplace(out)


def _forward(
    model: IntModel,
    tokens: np.ndarray,
    pos: np.ndarray,
    cache: _Cache,
    rec: dict[StepId, np.ndarray] | None,
    mm: MatMul,
    attn: Attention | None = None,
    gate_up: GateUpSwiGLU | None = None,
) -> np.ndarray:
    """Run positions ``pos`` (contiguous, after those in ``cache``); returns the final residual [T, dim]."""
    cfg = model.cfg
    emb = model.weights.tensor("tok_embd")
    h = _i64(k_embed(WRows("tok_embd", 0, emb.scale[tokens], emb.q[tokens])))
    plist = pos.tolist()
    if rec is not None:
        for i, t in enumerate(plist):
            rec[StepId(t, 0, Op.EMBED)] = h[i].astype(np.int32)
    hd, nkv = cfg.head_dim, cfg.n_kv_heads
    qd, kvd = cfg.n_heads * hd, nkv * hd
    t_n = len(plist)
    cos, sin = fx.rope_tables(hd, cfg.rope_base, cfg.max_ctx)
    rpos = pos[:, None]
    one = t_n == 1
    if one:
        rc, rs = cos[plist[0]], sin[plist[0]]
    for ly in range(cfg.n_layers):
        p = f"blk.{ly}."
        x = _norm1(cfg, h, model.gain64(p + "attn_norm")) if one else _i64(k_norm(cfg, h, model.gain(p + "attn_norm")))
        # q, k, v from one product of the stacked rows (k_proj_rope / matmul_q8 per row block)
        qkv = mm(x, (p + "attn_q", p + "attn_k", p + "attn_v"))
        if one:  # rope_q16 of q and k heads at once (elementwise the same)
            qk = _rope1(qkv[0, : qd + kvd].reshape(-1, hd), rc, rs).reshape(1, -1)
            q, k = qk[:, :qd], qk[:, qd:]
        else:
            q = fx.rope_q16(qkv[:, :qd].reshape(t_n, -1, hd), rpos, cos, sin).reshape(t_n, -1)
            q = _i64(q)
            k = _i64(fx.rope_q16(qkv[:, qd : qd + kvd].reshape(t_n, -1, hd), rpos, cos, sin).reshape(t_n, -1))
        v = qkv[:, qd + kvd :]
        n_s = cache.append(ly, k.reshape(t_n, nkv, hd), v.reshape(t_n, nkv, hd))
        qh = q.reshape(t_n, cfg.n_heads, hd)
        att = _attention_heads(cfg, qh, pos, cache, ly, n_s) if attn is None else attn(ly, qh, pos, cache, n_s)
        att = _sat(att)
        o = mm(att, (p + "attn_output",))
        h1 = _sat(h + o)
        x2 = _norm1(cfg, h1, model.gain64(p + "ffn_norm")) if one else _i64(k_norm(cfg, h1, model.gain(p + "ffn_norm")))
        gate_up_names = (p + "ffn_gate", p + "ffn_up")
        sw = swiglu_halves(mm(x2, gate_up_names)) if gate_up is None else gate_up(x2, gate_up_names)
        dn = mm(sw, (p + "ffn_down",))
        h2 = _sat(h1 + dn)
        if rec is not None:
            ys = (x, q, k, v, att, o, h1, x2, sw, dn, h2)
            if one:
                _record_layer(rec, cfg, plist[0], ly, ys)
            else:
                for op, y in zip(LAYER_OPS, ys, strict=True):
                    _split(rec, cfg, plist, ly, op, y)
        h = h2
    cache.n += t_n
    return h


def _logits(model: IntModel, h: np.ndarray, mm: MatMul) -> tuple[np.ndarray, np.ndarray]:
    """Final norm (Q16 int64) and full-vocabulary saturated Q16 logits (int64) of residual rows ``h``."""
    cfg = model.cfg
    xf = _i64(k_norm(cfg, h, model.gain("output_norm")))
    return xf, mm(xf, ("output",))


def _topk_keys(keys: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` smallest of each row of distinct int64 ``keys``, ascending."""
    if keys.shape[-1] > k:
        keys = np.partition(keys, k - 1, axis=-1)[..., :k]
    return np.sort(keys, axis=-1)


def _head(
    model: IntModel, h_last: np.ndarray, t: int, sampling: Sampling, rec: dict[StepId, np.ndarray] | None,
    mm: MatMul,
) -> int:
    """LOGITS blocks and SAMPLE of position ``t``: as :func:`steps.k_logits_topk` per block and
    :func:`steps.merge_candidates`, with one sort key ``(-value) * 2**b + index`` (value descending,
    index ascending, as their ``lexsort``): the merged top ``TOPK`` is the top ``TOPK`` of the vocabulary."""
    cfg = model.cfg
    xf, logits = _logits(model, h_last[None, :], mm)
    lg = logits[0].astype(np.int64)
    bits = max(cfg.vocab - 1, 1).bit_length()
    mask = np.int64((1 << bits) - 1)
    key = ((-lg) << np.int64(bits)) + np.arange(cfg.vocab, dtype=np.int64)  # |key| < 2**(32 + 18)
    top = _topk_keys(key, min(TOPK, cfg.vocab))
    cand = np.stack([-(top >> np.int64(bits)), top & mask])
    tok = sample_from(cand, sampling, t)
    if rec is not None:
        bl = blocks(cfg, Op.LOGITS)
        size = bl[0][1] - bl[0][0]
        tops = None
        if all(r1 - r0 == size for r0, r1 in bl[:-1]):  # row_blocks: equal blocks, the last one shorter
            pad = np.full(len(bl) * size, np.iinfo(np.int64).max, dtype=np.int64)  # pads sort last
            pad[: cfg.vocab] = key
            tops = _topk_keys(pad.reshape(len(bl), size), min(TOPK, size))
        if tops is not None and all(min(TOPK, r1 - r0) == tops.shape[1] for r0, r1 in bl):
            both = np.stack([-(tops >> np.int64(bits)), tops & mask], axis=1).astype(np.int32)  # [blocks, 2, n]
            rec.update((StepId(t, 0, Op.LOGITS, c), both[c]) for c in range(len(bl)))  # contiguous views
        else:
            for c, (r0, r1) in enumerate(bl):
                n = min(TOPK, r1 - r0)
                kc = tops[c] if tops is not None and n == tops.shape[1] else _topk_keys(key[r0:r1], n)
                rec[StepId(t, 0, Op.LOGITS, c)] = np.stack([-(kc >> np.int64(bits)), kc & mask]).astype(np.int32)
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
    mm: MatMul | None = None,
    on_token: Callable[[int], None] | None = None,
    attn: Attention | None = None,
    gate_up: GateUpSwiGLU | None = None,
) -> tuple[list[int], Trace]:
    """Generate up to ``max_new_tokens`` tokens after ``prompt_ids`` (stopping after a token of
    ``stop_ids``); returns ``(new tokens, trace)``. With ``record=False`` the trace stays empty. ``mm``
    replaces the NumPy matrix products, ``attn`` the attention and ``gate_up`` the gate/up product with its
    SwiGLU (same bits required: see :data:`MatMul`, :data:`Attention`, :data:`GateUpSwiGLU`). ``on_token`` is called
    with each new token before the next forward pass; whatever it raises stops the generation (a
    miner's deadline)."""
    cfg = model.cfg
    mm = mm or numpy_matmul(model)
    sampling = sampling or Sampling()
    _check_prompt(cfg, list(prompt_ids), max_new_tokens)
    stops = frozenset(stop_ids)
    if len(stops) > MAX_STOP_IDS or not all(type(x) is int and 0 <= x < cfg.vocab for x in stops):
        raise LlmError(f"at most {MAX_STOP_IDS} stop ids, each in the vocabulary", "llm_prompt")
    n = len(prompt_ids)
    trace = Trace(cfg, n)
    rec = trace.outputs if record else None
    cache = _Cache(cfg)
    h = _forward(model, np.array(prompt_ids, dtype=np.int64), np.arange(n, dtype=np.int64), cache, rec, mm, attn, gate_up)
    t = n - 1
    out: list[int] = []
    while True:
        tok = _head(model, h[-1], t, sampling, rec, mm)
        out.append(tok)
        if tok in stops or len(out) >= max_new_tokens:
            break
        if on_token is not None:
            on_token(tok)
        t += 1
        h = _forward(model, np.array([tok], dtype=np.int64), np.array([t], dtype=np.int64), cache, rec, mm, attn, gate_up)
    trace.n_positions = t + 1
    return out, trace


def forward_logits(model: IntModel, tokens: list[int]) -> np.ndarray:
    """Saturated Q16 logits [T, vocab] (int32) at every position of ``tokens`` (teacher forcing)."""
    _check_prompt(model.cfg, list(tokens), 1)
    cache = _Cache(model.cfg)
    mm = numpy_matmul(model)
    h = _forward(model, np.array(tokens, dtype=np.int64), np.arange(len(tokens), dtype=np.int64), cache, None, mm)
    return fx.sat32(_logits(model, h, mm)[1])


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
