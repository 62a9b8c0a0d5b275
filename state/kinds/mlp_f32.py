"""``mlp-f32`` v1 rules: a two-layer perceptron ``Y = relu(X·W1 + b1)·W2 + b2`` in float32.

Params ``{"batch", "d_in", "d_hidden", "d_out", "seed"}`` (seed: 32 bytes). The weights come from the
counter generator (``state/kinds/counter.py``), values in [-1, 1): W1 (d_in×d_hidden) stream 1,
b1 (d_hidden) stream 2, W2 (d_hidden×d_out) stream 3, b2 (d_out) stream 4. X (batch×d_in) is stream 0,
unless the job has an input: then the input is ``encode_array(X)``, float32 of shape (batch, d_in),
finite, every |x| <= 65536. Leaf i is output row i (d_out little-endian float32).

Floating-point results differ between backends (summation order, FMA), so the kind is checked within
a tolerance: an output element ``y`` is accepted iff

    |y - ref| <= ATOL + RTOL * mag,   RTOL = 1e-3, ATOL = 1e-4,

where ``ref`` is the exact-as-possible value and ``mag`` the same expression evaluated on absolute
values (``mag_j = |b2_j| + sum_k |W2_kj| * (|b1_k| + sum_i |x_i W1_ik|)``), which bounds the rounding
error any float32 evaluation order can make. On chain (``check_leaf``) both are computed
deterministically: products of float32 values are exact in float64, every sum is ``math.fsum``
(correctly rounded), and all other operations are single IEEE-754 float64 operations — never BLAS or
NumPy reductions, whose order depends on the CPU — so every node decides identically.
Execution and the off-chain whole-result check: ``gpu/kinds/mlp_f32.py``.
"""

from __future__ import annotations

import math
from itertools import chain

import numpy as np

from . import counter
from .base import JobParamError, KindRules, bytes_param, ceil_div, check_keys, int_param, limit
from .encoding import ArrayError, decode_array, encoded_size

MAX_BATCH = 4096
MAX_WIDTH = 1024
MAX_RESULT_ELEMS = 1 << 18  # batch*d_out*4 <= 1 MiB
MAX_WEIGHTS = 1 << 18  # d_in*d_hidden + d_hidden*d_out: one leaf check stays ~30 ms in Python
MAX_ABS_INPUT = 65536.0
RTOL = 1e-3
ATOL = 1e-4
MFLOP = 1 << 20
_KEYS = frozenset({"batch", "d_in", "d_hidden", "d_out", "seed"})
S_X, S_W1, S_B1, S_W2, S_B2 = range(5)


class MlpF32Rules(KindRules):
    """Two-layer MLP inference, float32, tolerance-checked."""

    name = "mlp-f32"
    version = 1
    unit_type = "mflop"  # 2**20 floating-point operations (a multiply-add counts 2)
    deterministic = False
    tolerance = (RTOL, ATOL)
    result_dtype = "float32"

    # -- parameters ----------------------------------------------------------------------------------
    def _check_params(self, params: dict) -> None:
        check_keys(params, _KEYS)
        batch = int_param(params, "batch", 1, MAX_BATCH)
        d_in, d_hidden, d_out = (int_param(params, x, 1, MAX_WIDTH) for x in ("d_in", "d_hidden", "d_out"))
        bytes_param(params, "seed", 32)
        limit("result elements batch*d_out", batch * d_out, MAX_RESULT_ELEMS)
        limit("weights d_in*d_hidden + d_hidden*d_out", d_in * d_hidden + d_hidden * d_out, MAX_WEIGHTS)

    def expected_input_size(self, params: dict) -> int | None:
        return encoded_size("float32", (params["batch"], params["d_in"]))

    def result_shape(self, params: dict) -> tuple[int, ...]:
        return (params["batch"], params["d_out"])

    def work_units(self, params: dict) -> int:
        self.validate_params(params)
        p = params
        flops = 2 * p["batch"] * (p["d_in"] * p["d_hidden"] + p["d_hidden"] * p["d_out"])
        return max(1, ceil_div(flops, MFLOP))

    def leaf_check_work(self, params: dict, input_size: int | None) -> int:
        """Weights generated, then ``math.fsum`` over every product of one row (~200 ns per weight in
        Python, plus ~300 µs of set-up), plus decoding an input. Calibrated by ``bench/disputes.py``."""
        self.validate_params(params)
        i, h, o = params["d_in"], params["d_hidden"], params["d_out"]
        return 300 + ceil_div(200 * (i * h + h * o + h + o), 1000) + ceil_div(input_size or 0, 1024)

    # -- operands ------------------------------------------------------------------------------------
    def key(self, params: dict) -> int:
        """The counter generator's key for these params."""
        return counter.derive_key(self.name, self.version, params["seed"])

    def weights(self, params: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(W1, b1, W2, b2) as float32 arrays (b1, b2 one-dimensional)."""
        key, i, h, o = self.key(params), params["d_in"], params["d_hidden"], params["d_out"]
        return (
            counter.f32_matrix(key, S_W1, i, h),
            counter.f32_matrix(key, S_B1, 1, h)[0],
            counter.f32_matrix(key, S_W2, h, o),
            counter.f32_matrix(key, S_B2, 1, o)[0],
        )

    def inputs(self, params: dict, input: bytes | None) -> np.ndarray:
        """X as a float32 (batch, d_in) array: generated, or decoded from the input and checked."""
        self.validate(params, None if input is None else len(input))
        shape = (params["batch"], params["d_in"])
        if input is None:
            return counter.f32_matrix(self.key(params), S_X, *shape)
        try:
            x = decode_array(input, max_bytes=len(input))
        except ArrayError as exc:
            raise JobParamError("bad_input", f"{self.name}: input is not an encoded array: {exc}") from None
        if x.dtype != np.float32 or x.shape != shape:
            raise JobParamError("bad_input", f"{self.name}: input must be float32{shape}, got {x.dtype}{x.shape}")
        if not np.all(np.abs(x) <= np.float32(MAX_ABS_INPUT)):  # NaN fails this too
            raise JobParamError("bad_input", f"{self.name}: input values must be finite with |x| <= {MAX_ABS_INPUT:g}")
        return x

    def _input_row(self, params: dict, input: bytes | None, i: int) -> np.ndarray:
        if input is None:
            self.validate(params, None)
            return counter.to_f32(counter.u32_range(self.key(params), S_X, i * params["d_in"], params["d_in"]))
        return self.inputs(params, input)[i]

    # -- verification --------------------------------------------------------------------------------
    def reference_row(self, params: dict, input: bytes | None, index: int) -> tuple[list[float], list[float]]:
        """(ref, mag) of output row ``index``, computed deterministically (see module docstring)."""
        x = self._input_row(params, input, index).astype(np.float64)
        w1, b1, w2, b2 = self.weights(params)
        fsum = math.fsum
        cols = (x[:, None] * w1).T.tolist()  # exact products, one list per hidden unit
        b1l = b1.tolist()
        pre = [fsum(chain(c, (b,))) for c, b in zip(cols, b1l, strict=True)]
        hidden = np.array([p if p > 0.0 else 0.0 for p in pre])
        amag = np.array([fsum(chain(map(abs, c), (abs(b),))) for c, b in zip(cols, b1l, strict=True)])
        w2d = w2.astype(np.float64)
        b2l = b2.tolist()
        ys = (hidden[:, None] * w2d).T.tolist()
        ms = (amag[:, None] * np.abs(w2d)).T.tolist()
        ref = [fsum(chain(c, (b,))) for c, b in zip(ys, b2l, strict=True)]
        mag = [fsum(chain(c, (abs(b),))) for c, b in zip(ms, b2l, strict=True)]
        return ref, mag

    @staticmethod
    def within(got: float, ref: float, mag: float) -> bool:
        """The tolerance rule for one element (False for NaN and infinities)."""
        return abs(got - ref) <= ATOL + RTOL * mag

    def check_leaf(self, params: dict, input: bytes | None, index: int, leaf: bytes) -> bool:
        """Every element of the leaf within tolerance of the deterministic reference row."""
        self.validate_params(params)
        if type(index) is not int or not 0 <= index < params["batch"]:
            return False
        if not isinstance(leaf, bytes) or len(leaf) != 4 * params["d_out"]:
            return False
        got = np.frombuffer(leaf, dtype="<f4").astype(np.float64).tolist()
        ref, mag = self.reference_row(params, input, index)
        return all(self.within(g, r, m) for g, r, m in zip(got, ref, mag, strict=True))
