"""Integer primitives of state.llm.fixed: pinned constant tables, accuracy against float math, exactness
of the float64-BLAS matmul, rounding rules."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from gpu.llm.gguf_import import quantize_q8r
from state.llm import fixed as fx

EXP_SHA = "9ebf09778f4e4567d725e492b189f0c67fe86acb54e10d473cea75c342d5bb38"
ROPE_SHA = {
    (64, 100000, 1024): "6954a66fd1c0fc6c8c283df73b3e0a5c0641de3cea423b3dad657dddf64fd055",  # SmolLM2
    (12, 10000, 64): "0c4f179cf3ee8e5bb0640b9ec5a964e8a3fb6de87af8d8feac4eff9783aaa7d9",  # the tiny test model
}


def test_exp_table_pinned():
    hi, lo, ln2 = fx.exp_tables()
    digest = hashlib.sha256(hi.astype("<i8").tobytes() + lo.astype("<i8").tobytes() + ln2.to_bytes(8, "little"))
    assert digest.hexdigest() == EXP_SHA
    assert hi[0] == lo[0] == 1 << 30 and ln2 == 2977044472


@pytest.mark.parametrize("args", sorted(ROPE_SHA))
def test_rope_tables_pinned(args):
    c, s = fx.rope_tables(*args)
    digest = hashlib.sha256(c.astype("<i8").tobytes() + s.astype("<i8").tobytes()).hexdigest()
    assert digest == ROPE_SHA[args]
    hd, base, n = args
    ang = np.arange(n)[:, None] * base ** (-np.arange(0, hd, 2) / hd)[None, :]
    assert np.abs(c / 2**30 - np.cos(ang)).max() < 1e-8 and np.abs(s / 2**30 - np.sin(ang)).max() < 1e-8


def test_round_shift_and_div():
    x = np.array([5, 6, 7, -5, -6, -7, 0], dtype=np.int64)
    assert fx.round_shift(x, 1).tolist() == [3, 3, 4, -2, -3, -3, 0]  # half up: 2.5 -> 3, -2.5 -> -2
    assert fx.round_shift(x, -2).tolist() == (x * 4).tolist()
    assert fx.round_shift(x, np.array([1, 0, -1, 1, 0, -1, 3])).tolist() == [3, 6, 14, -2, -6, -14, 0]
    assert fx.round_div(np.array([5, -5, 7]), 2).tolist() == [3, -2, 4]
    assert fx.sat32(np.array([1 << 40, -(1 << 40), 3])).tolist() == [2**31 - 1, -(2**31), 3]
    v = np.array([0, 1, 2, 3, 255, 256, (1 << 40) + 5, (1 << 62)], dtype=np.int64)
    assert fx.bit_length(v).tolist() == [int(x).bit_length() for x in v.tolist()]
    assert fx.isqrt_array(np.array([0, 1, 15, 16, 10**15])).tolist() == [math.isqrt(x) for x in [0, 1, 15, 16, 10**15]]


def test_quant_shift_bounds():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.integers(-(2**31), 2**31, (50, 33)), rng.integers(-50, 50, (50, 33))])
    a, s = fx.quant_shift(x, 14)
    assert np.abs(a).max() <= 2**14
    assert (np.abs(a).max(axis=1) >= 2**13).all()  # at least 14 significant bits kept
    err = np.abs(a * np.exp2(s[:, None].astype(np.float64)) - x)
    assert (err <= np.exp2(np.maximum(s, 0) - 1)[:, None] + 1e-9).all()


def test_exp_sigmoid_silu_softmax_accuracy():
    z = -np.arange(0, 30 * 65536, 11, dtype=np.int64)
    ref = np.exp(z / 65536)
    got = fx.exp_q30(z) / 2**30
    assert (np.abs(got - ref) <= 1e-5 * ref + 2**-30).all()  # range-reduced argument rounded to Q16
    x = np.arange(-25 * 65536, 25 * 65536, 97, dtype=np.int64)
    xf = x / 65536
    assert np.abs(fx.sigmoid_q30(x) / 2**30 - 1 / (1 + np.exp(-xf))).max() < 2e-6
    assert np.abs(fx.silu_q16(x) / 65536 - xf / (1 + np.exp(-xf))).max() < 2e-5
    s = np.random.default_rng(1).normal(0, 4, (5, 50))
    p = fx.softmax_q16(np.round(s * 65536).astype(np.int64)) / 65536
    ref = np.exp(s - s.max(1, keepdims=True))
    assert np.abs(p - ref / ref.sum(1, keepdims=True)).max() < 1e-4
    with pytest.raises(Exception):  # noqa: B017 - InvariantError
        fx.exp_q30(np.array([1]))


def test_rmsnorm_and_rope_accuracy():
    rng = np.random.default_rng(2)
    for sd in (1e-3, 1.0, 300.0):
        hi = np.round(rng.normal(0, sd, (3, 576)) * 65536).astype(np.int64)
        gi = np.round(rng.uniform(-2, 3, 576) * 65536).astype(np.int64)
        out = fx.rmsnorm_q16(hi, gi, 1, 10**5)
        h, g = hi / 65536, gi / 65536  # compare with the exact norm of the same (quantised) inputs
        ref = h / np.sqrt((h * h).mean(1, keepdims=True) + 1e-5) * g
        assert np.abs(out / 65536 - ref).max() < 1e-3 * np.abs(ref).max()
    c, s = fx.rope_tables(64, 100000, 1024)
    x = rng.normal(0, 5, (4, 64))
    pos = np.array([0, 1, 500, 1023])
    got = fx.rope_q16(np.round(x * 65536).astype(np.int64), pos[:, None][:, 0], c, s) / 65536
    ang = pos[:, None] * 100000.0 ** (-np.arange(0, 64, 2) / 64)[None, :]
    ref = np.empty_like(x)
    ref[:, 0::2] = x[:, 0::2] * np.cos(ang) - x[:, 1::2] * np.sin(ang)
    ref[:, 1::2] = x[:, 0::2] * np.sin(ang) + x[:, 1::2] * np.cos(ang)
    assert np.abs(got - ref).max() < 1e-4


def test_float64_blas_matmul_is_exact():
    """int16-range x (int8 * uint8 sub-scale) products summed by BLAS in float64 equal the int64 result,
    at the bounds (|a| <= 2**14, |w| <= 127 * 255, K = 8192)."""
    rng = np.random.default_rng(3)
    for k in (576, 1536, 8192):
        a = rng.integers(-(2**14), 2**14 + 1, (7, k))
        a[0] = 2**14  # worst case: every product at its maximum
        w = rng.integers(-127 * 255, 127 * 255 + 1, (33, k)).astype(np.int16)
        w[0] = 127 * 255
        w[1] = -127 * 255
        exact = a.astype(np.int64) @ w.astype(np.int64).T
        assert np.array_equal(fx.exact_dot(a, w), exact)
        assert np.array_equal(fx.exact_dot(a, w.astype(np.float64)), exact)
        assert exact[0, 0] == k * 2**14 * 127 * 255
        # any summation order: row blocks and a reversed inner order give the same integers
        assert np.array_equal(fx.exact_dot(a[:, ::-1], w[:, ::-1]), exact)
        assert np.array_equal(np.concatenate([fx.exact_dot(a, w[:10]), fx.exact_dot(a, w[10:])], 1), exact)


def test_matmul_q8_rows_independent_and_accurate():
    rng = np.random.default_rng(4)
    x = rng.normal(0, 2, (5, 96))
    w = rng.normal(0, 0.1, (40, 96))
    m, u, q8 = quantize_q8r(w)
    q = q8.astype(np.int64) * np.repeat(u, 32, axis=1)[:, :96]
    assert np.abs(q * m[:, None] / 2**36 - w).max() < 0.1 * 0.02
    xi = np.round(x * 65536).astype(np.int64)
    y = fx.matmul_q8(xi, m, q)
    assert np.array_equal(np.concatenate([fx.matmul_q8(xi, m[:17], q[:17]), fx.matmul_q8(xi, m[17:], q[17:])], 1), y)
    assert np.array_equal(np.concatenate([fx.matmul_q8(xi[i : i + 1], m, q) for i in range(5)]), y)
    ref = x @ w.T
    assert np.abs(y / 65536 - ref).max() < 0.02 * np.abs(ref).max()


def test_attention_masking_equals_truncation():
    """Causal masking in a batch equals attending over the prefix only (what a step does)."""
    rng = np.random.default_rng(5)
    t, g, hd = 9, 3, 16
    q = rng.integers(-(2**20), 2**20, (t, g, hd))
    k = rng.integers(-(2**20), 2**20, (t, hd))
    v = rng.integers(-(2**20), 2**20, (t, hd))
    full = fx.attention_q16(q, np.arange(t), k, v, hd)
    for i in range(t):
        one = fx.attention_q16(q[i : i + 1], np.array([i]), k[: i + 1], v[: i + 1], hd)
        assert np.array_equal(one[0], full[i])
    qf, kf, vf = q / 65536, k / 65536, v / 65536
    sc = np.einsum("tgd,sd->tgs", qf, kf) / 4
    sc = np.where(np.arange(t)[None, None, :] > np.arange(t)[:, None, None], -np.inf, sc)
    p = np.exp(sc - sc.max(-1, keepdims=True))
    ref = np.einsum("tgs,sd->tgd", p / p.sum(-1, keepdims=True), vf).reshape(t, g * hd)
    assert np.abs(full / 65536 - ref).max() < 1e-2
