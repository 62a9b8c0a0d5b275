"""Integer primitives of ``aitbc-llm-int8-v1``: every result is a pure function of integer inputs.

Number formats (``Qn`` = signed integer with ``n`` fractional bits):

* activations between steps: int32 Q16 (``ACT_FRAC``), saturated to the int32 range;
* matmul inputs: each vector is re-expressed as ``a * 2**(s - 16)`` with ``|a| <= 2**14`` and a
  per-vector power-of-two exponent ``s`` (:func:`quant_shift`); weights are integers ``|w| < 2**15``
  (int8 times a uint8 group sub-scale) with a per-row scale ``m / 2**36``; the accumulator
  ``sum(a * w)`` is exact (``|acc| <= 2**42`` for inner size <= 8192);
* ``exp`` returns Q30; probabilities inside attention are Q16; RoPE cos/sin are Q30;
* rounding: :func:`round_shift` (add half, arithmetic shift = round half up) and :func:`round_div`
  (floor division of ``n + d // 2``), defined once here.

Constant tables (exp, RoPE) are computed with :mod:`decimal` at fixed precision and Python integers,
never with the platform ``libm``; ``tests/test_llm_fixed.py`` pins their sha256.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from functools import lru_cache

import numpy as np

from ..errors import InvariantError

ACT_FRAC = 16
EXP_FRAC = 30
ROPE_FRAC = 30
QBITS = 14  # matmul / attention operands are re-expressed with |a| <= 2**QBITS
NORM_BITS = 15  # RMSNorm sums squares of |a| <= 2**15
I32_MIN = -(1 << 31)
I32_MAX = (1 << 31) - 1
_I32_MIN64 = np.int64(I32_MIN)
_I32_MAX64 = np.int64(I32_MAX)
_F64_EXACT = 1 << 53
_S_MIN, _S_MAX = np.int64(-16), np.int64(48)  # quant_shift exponent range
_DEC_PREC = 60


# --------------------------------------------------------------------------------------------------
# Rounding and shifts


def round_shift(x: np.ndarray, s: np.ndarray | int) -> np.ndarray:
    """``x / 2**s`` rounded half up (``(x + 2**(s-1)) >> s``) for ``s > 0``; ``x * 2**-s`` for ``s <= 0``.

    ``s`` may be an array broadcast against ``x``; the caller keeps ``|x| + 2**(s-1) < 2**63``.
    """
    x = np.asarray(x, dtype=np.int64)
    nd = s.ndim if isinstance(s, np.ndarray) else np.ndim(s)
    if nd == 0 or (nd <= x.ndim and np.size(s) == 1):  # one shift: broadcasting it is a no-op
        si = int(s) if nd == 0 else int(np.asarray(s).reshape(-1)[0])
        if si > 0:
            return (x + np.int64(1 << (si - 1))) >> np.int64(si)
        return x << np.int64(-si)
    sa = np.asarray(s, dtype=np.int64)
    pos = np.maximum(sa, 0)
    if sa.size and int(pos.max()) < 63:  # (1 << pos) >> 1 is 2**(pos-1), and 0 for pos == 0
        half = (np.int64(1) << pos) >> np.int64(1)
    else:
        half = np.where(pos > 0, np.left_shift(np.int64(1), np.maximum(pos - 1, 0)), 0)
    return ((x + half) >> pos) << np.maximum(-sa, 0)


def round_div(n: np.ndarray, d: np.ndarray | int) -> np.ndarray:
    """``n / d`` rounded half up, for ``d > 0`` (floor division of ``n + d // 2``)."""
    n = np.asarray(n, dtype=np.int64)
    d = np.asarray(d, dtype=np.int64)
    return (n + d // 2) // d


def sat32(x: np.ndarray) -> np.ndarray:
    """Saturate to the int32 range and return an int32 array."""
    return np.minimum(np.maximum(np.asarray(x, dtype=np.int64), _I32_MIN64), _I32_MAX64).astype(np.int32)


def bit_length(x: np.ndarray) -> np.ndarray:
    """Elementwise ``int.bit_length`` of a non-negative int64 array."""
    v = np.asarray(x, dtype=np.int64)
    if v.size and 0 <= int(v.min()) and int(v.max()) < _F64_EXACT:
        # exact in float64, so the binary exponent of frexp (v = m * 2**e, 1/2 <= m < 1; e = 0 for 0) is it
        return np.frexp(v.astype(np.float64))[1].astype(np.int64)
    v = v.copy()
    n = np.zeros_like(v)
    for k in (32, 16, 8, 4, 2, 1):
        m = v >= (np.int64(1) << np.int64(k))
        n += m * k
        v = np.where(m, v >> np.int64(k), v)
    return n + (v > 0)


def quant_shift(x: np.ndarray, bits: int = QBITS) -> tuple[np.ndarray, np.ndarray]:
    """Per-row power-of-two rescaling along the last axis: ``a = round_shift(x, s)``, ``|a| <= 2**bits``.

    ``s = bit_length(max |x|) - bits`` clamped to ``[-16, 48]`` (a left shift for small vectors keeps
    ``bits`` bits of precision). Returns ``(a, s)`` with ``s`` of shape ``x.shape[:-1]``.
    """
    x = np.asarray(x, dtype=np.int64)
    mx = np.abs(x).max(axis=-1) if x.shape[-1] else np.zeros(x.shape[:-1], np.int64)
    s = np.minimum(np.maximum(bit_length(mx) - bits, _S_MIN), _S_MAX)
    return round_shift(x, s[..., None]), s


def isqrt(n: int) -> int:
    """Integer square root (floor) of a non-negative Python int."""
    return math.isqrt(n)


def isqrt_array(n: np.ndarray) -> np.ndarray:
    """Elementwise floor square root of a non-negative int64 array (exact, via Python ints)."""
    flat = [math.isqrt(int(v)) for v in np.asarray(n, dtype=np.int64).reshape(-1)]
    return np.array(flat, dtype=np.int64).reshape(np.shape(n))


# --------------------------------------------------------------------------------------------------
# Constant tables (decimal / integer arithmetic only)


def _dec_to_fixed(v: Decimal, frac: int) -> int:
    return int((v * (1 << frac)).to_integral_value())  # ROUND_HALF_EVEN of the context; v irrational


@lru_cache(maxsize=1)
def exp_tables() -> tuple[np.ndarray, np.ndarray, int]:
    """``(EXP_HI, EXP_LO, LN2_Q32)``: ``EXP_HI[i] = exp(-i/256)``, ``EXP_LO[j] = exp(-j/65536)`` in Q30
    for ``i, j < 256``, and ``ln 2`` in Q32."""
    with localcontext() as ctx:
        ctx.prec = _DEC_PREC
        hi = [_dec_to_fixed((Decimal(-i) / 256).exp(), EXP_FRAC) for i in range(256)]
        lo = [_dec_to_fixed((Decimal(-j) / 65536).exp(), EXP_FRAC) for j in range(256)]
        ln2 = _dec_to_fixed(Decimal(2).ln(), 32)
    return np.array(hi, dtype=np.int64), np.array(lo, dtype=np.int64), ln2


def exp_q30(z: np.ndarray) -> np.ndarray:
    """``exp(z / 2**16)`` in Q30 for Q16 ``z <= 0`` (positive ``z`` is an invariant error).

    Range reduction ``z = -k ln2 - r`` with ``ln2`` in Q32, then ``exp(-r) = EXP_HI[r >> 8] *
    EXP_LO[r & 255]`` (Q16 ``r``), then ``>> k`` rounded. Relative error about 2**-16.
    """
    z = np.asarray(z, dtype=np.int64)
    if z.size and int(z.max()) > 0:
        raise InvariantError("exp_q30 takes z <= 0")
    return exp_q30_nonpos(z)


def exp_q30_nonpos(z: np.ndarray) -> np.ndarray:
    """:func:`exp_q30` of an int64 ``z`` that is ``<= 0`` by construction (not checked)."""
    ln2 = np.int64(exp_tables()[2])
    n32 = np.minimum(-z, np.int64(1 << 40)) << np.int64(16)
    k = n32 // ln2
    r16 = (n32 - k * ln2 + np.int64(1 << 15)) >> np.int64(16)  # round_shift(., 16); 0 <= r16 < 2**16
    e = _exp_r16_table()[r16]  # round_shift(EXP_HI[r16 >> 8] * EXP_LO[r16 & 255], EXP_FRAC)
    # round_shift(e, kk) for 0 <= kk = min(k, 40): ((2e >> kk) + 1) >> 1 = floor((e + 2**(kk-1)) / 2**kk)
    return (((e << np.int64(1)) >> np.minimum(k, np.int64(40))) + np.int64(1)) >> np.int64(1)


@lru_cache(maxsize=1)
def _exp_r16_table() -> np.ndarray:
    """``round_shift(EXP_HI[r >> 8] * EXP_LO[r & 255], EXP_FRAC)`` for every ``r < 2**16`` (int64)."""
    hi, lo, _ = exp_tables()
    r = np.arange(1 << 16, dtype=np.int64)
    t = round_shift(hi[r >> 8] * lo[r & 255], EXP_FRAC)
    t.flags.writeable = False
    return t


def softmax_q16(x: np.ndarray) -> np.ndarray:
    """Softmax along the last axis of Q16 scores; probabilities in Q16 (rounded, may not sum exactly)."""
    x = np.asarray(x, dtype=np.int64)
    e = exp_q30(x - x.max(axis=-1, keepdims=True))
    return round_div(e << np.int64(16), e.sum(axis=-1, keepdims=True))


def sigmoid_q30(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` in Q30 for Q16 ``x`` (through ``exp`` of ``-|x|`` only)."""
    x = np.asarray(x, dtype=np.int64)
    e = exp_q30_nonpos(-np.abs(x))  # -|x| <= 0 (also -2**63, its own absolute value)
    den = np.int64(1 << EXP_FRAC) + e
    num = np.where(x >= 0, np.int64(1 << 60), e << np.int64(EXP_FRAC))  # one division per element
    return (num + den // np.int64(2)) // den  # round_div(num, den)


def silu_q16(x: np.ndarray) -> np.ndarray:
    """``x * sigmoid(x)`` for Q16 ``x`` with ``|x| < 2**31``; Q16 result."""
    x = np.asarray(x, dtype=np.int64)
    return round_shift(x * sigmoid_q30(x), EXP_FRAC)


@lru_cache(maxsize=8)
def rope_tables(head_dim: int, base: int, n_pos: int) -> tuple[np.ndarray, np.ndarray]:
    """``(COS, SIN)`` int64 [n_pos, head_dim // 2] in Q30 of ``pos * base**(-2i/head_dim)``.

    Frequencies come from :mod:`decimal` (``exp(-2i/d * ln base)``, 60 digits), their cos/sin from a
    Decimal Taylor series; positions by exact rotation of 2**-120 fixed-point integers.
    """
    if head_dim % 2 or head_dim <= 0 or base < 2 or n_pos <= 0:
        raise InvariantError("rope_tables: bad arguments")
    half = head_dim // 2
    big = 120
    rot: list[tuple[int, int]] = []
    with localcontext() as ctx:
        ctx.prec = _DEC_PREC
        ln_base = Decimal(base).ln()
        for i in range(half):
            theta = (-(Decimal(2 * i) / head_dim) * ln_base).exp()
            c, s, term, k = Decimal(0), Decimal(0), Decimal(1), 0
            while True:  # cos = sum (-1)^j t^2j/(2j)!, sin = sum (-1)^j t^(2j+1)/(2j+1)!
                if k % 4 == 0:
                    c += term
                elif k % 4 == 1:
                    s += term
                elif k % 4 == 2:
                    c -= term
                else:
                    s -= term
                k += 1
                term = term * theta / k
                if term < Decimal(10) ** -(_DEC_PREC + 2):
                    break
            rot.append((_dec_to_fixed(c, big), _dec_to_fixed(s, big)))
    cos = np.empty((n_pos, half), dtype=np.int64)
    sin = np.empty((n_pos, half), dtype=np.int64)
    shift = big - ROPE_FRAC
    half_unit = 1 << (shift - 1)
    for i, (rc, rs) in enumerate(rot):
        c, s = 1 << big, 0
        for p in range(n_pos):
            cos[p, i] = (c + half_unit) >> shift
            sin[p, i] = (s + half_unit) >> shift
            c, s = (c * rc - s * rs) >> big, (s * rc + c * rs) >> big
    return cos, sin


def rope_q16(x: np.ndarray, pos: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate adjacent pairs ``(x[2i], x[2i+1])`` of Q16 ``x`` [..., head_dim] by angle ``pos * theta_i``.

    ``pos`` has shape ``x.shape[:-1]`` (broadcastable); result Q16 int64.
    """
    x = np.asarray(x, dtype=np.int64)
    p = np.asarray(pos, dtype=np.int64)
    c = cos[p]
    s = sin[p]
    x0 = x[..., 0::2]
    x1 = x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = round_shift(x0 * c - x1 * s, ROPE_FRAC)
    out[..., 1::2] = round_shift(x0 * s + x1 * c, ROPE_FRAC)
    return out


# --------------------------------------------------------------------------------------------------
# Linear algebra


def exact_dot(a: np.ndarray, wq: np.ndarray) -> np.ndarray:
    """``a @ wq.T`` exactly, for int ``a`` [T, K] with ``|a| <= 2**14`` and integer (or float64 holding
    integers) ``wq`` [O, K] with ``|wq| < 2**15``, K <= 8192.

    Computed in float64 BLAS: every product and every partial sum is an integer of magnitude
    <= K * 2**14 * 2**15 <= 2**42 < 2**53, so it is exact in any summation order.
    """
    wf = wq if wq.dtype == np.float64 else wq.astype(np.float64)
    return (np.asarray(a, dtype=np.float64) @ wf.T).astype(np.int64)


W_FRAC = 36  # q8r row scales are Q36 (modelfile.SCALE_FRAC)
ACC_DROP = 14  # bits dropped from the exact accumulator before the row scale (keeps acc * m < 2**57)


def matmul_q8(x: np.ndarray, scale: np.ndarray, wq: np.ndarray) -> np.ndarray:
    """Q16 ``x`` [T, K] times a q8r matrix (``scale`` [O] in Q36, integer ``wq`` [O, K]) -> Q16 int64 [T, O].

    ``y = round_shift(round_shift(acc, 14) * m, 36 - 14 - s)`` where ``x = a * 2**(s-16)``
    (:func:`quant_shift`) and ``acc = a @ wq.T`` exact. Each output row depends only on its own weight
    row, so splitting the rows into blocks never changes a result.
    """
    a, s = quant_shift(x, QBITS)
    acc = round_shift(exact_dot(a, wq), ACC_DROP)
    return round_shift(acc * np.asarray(scale, dtype=np.int64)[None, :], W_FRAC - ACC_DROP - s[:, None])


def dequant_rows_q16(scale: np.ndarray, wq: np.ndarray) -> np.ndarray:
    """Rows of a q8r matrix as Q16 values (used for the embedding lookup)."""
    return round_shift(wq.astype(np.int64) * np.asarray(scale, dtype=np.int64)[:, None], W_FRAC - ACT_FRAC)


def rmsnorm_q16(h: np.ndarray, gain: np.ndarray, eps_num: int, eps_den: int) -> np.ndarray:
    """RMSNorm of Q16 rows ``h`` [T, d] (``|h| < 2**31``) with Q16 gains; Q16 int64 result.

    Per row: ``a = round_shift(h, s)`` with ``|a| <= 2**15``; ``V = den * sum(a^2) + num * d * 4**(16-s)``
    (the epsilon in the same units); ``r = isqrt(V * 2**32 // (d * den))`` (rms * 2**16);
    ``out = round_div(a * gain * 2**16, r)``.
    """
    h = np.asarray(h, dtype=np.int64)
    d = h.shape[-1]
    a, s = quant_shift(h, NORM_BITS)
    if s.size and int(s.max()) > 16:
        raise InvariantError("rmsnorm input outside int32")
    sumsq = (a * a).sum(axis=-1)
    r = np.empty(h.shape[0], dtype=np.int64)
    for i in range(h.shape[0]):
        v = int(sumsq[i]) * eps_den + eps_num * d * 4 ** (16 - int(s[i]))
        r[i] = math.isqrt((v << 32) // (d * eps_den))
    return round_div(a * np.asarray(gain, dtype=np.int64)[None, :] << np.int64(16), r[:, None])


def attention_q16(
    q: np.ndarray, qpos: np.ndarray, k: np.ndarray, v: np.ndarray, head_dim: int
) -> np.ndarray:
    """Causal attention of Q16 queries ``q`` [T, G, hd] (at positions ``qpos`` [T]) over Q16 keys and
    values ``k``, ``v`` [S, hd] at positions ``0..S-1``; returns Q16 int64 [T, G * hd].

    Scores ``q.k / sqrt(hd)`` in Q16 via per-vector :func:`quant_shift` of ``q`` and of each key; keys
    after a query's position are masked; weights ``e = exp_q30(score - max) >> 14`` (Q16);
    ``out = round_div(sum e * v, sum e)``.
    """
    ka, sk = quant_shift(k, QBITS)
    return attention_q16_keys(q, qpos, ka, sk, v, head_dim)


def attention_q16_keys(
    q: np.ndarray, qpos: np.ndarray, ka: np.ndarray, sk: np.ndarray, v: np.ndarray, head_dim: int
) -> np.ndarray:
    """:func:`attention_q16` given the keys already through :func:`quant_shift` (``ka`` [S, hd], integer
    or float64 holding the integers, and ``sk`` [S]): each key's rescaling depends on that key alone, so
    a KV cache can keep them."""
    t, g, hd = q.shape
    qa, sq = quant_shift(q.reshape(t * g, hd), QBITS)
    dot = (qa.astype(np.float64) @ np.asarray(ka, dtype=np.float64).T).astype(np.int64)  # |dot| <= 256 * 2**28
    c = np.int64(math.isqrt((1 << 32) // head_dim))  # 2**16 / sqrt(hd)
    shift = np.minimum(32 - sq[:, None] - sk[None, :], 62)
    score = round_shift(dot * c, shift)  # [T*G, S], |score| < 2**55
    mask = np.arange(ka.shape[0])[None, :] > np.repeat(np.asarray(qpos, dtype=np.int64), g)[:, None]
    mx = np.where(mask, np.iinfo(np.int64).min, score).max(axis=1, keepdims=True)
    z = np.where(mask, np.int64(-(1 << 40)), score - mx)
    e = np.where(mask, 0, round_shift(exp_q30(z), EXP_FRAC - 16))
    num = e @ np.asarray(v, dtype=np.int64)  # exact int64: sum e <= S * 2**16, |v| < 2**31
    out = round_div(num, e.sum(axis=1, keepdims=True))
    return out.reshape(t, g * hd)


def topk_desc(values: np.ndarray, k: int, base_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest ``values`` (ties: lowest index first) and their indices ``+ base_index``."""
    idx = np.arange(values.shape[0], dtype=np.int64)
    order = np.lexsort((idx, -np.asarray(values, dtype=np.int64)))[:k]
    return np.asarray(values, dtype=np.int64)[order], idx[order] + base_index
