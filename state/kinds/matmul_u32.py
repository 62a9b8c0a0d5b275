"""``matmul-u32`` v1 rules: C = A·B mod 2**32 over uint32 matrices (exact, bit-identical on every backend).

Params ``{"m", "n", "k", "seed"}`` generate A (m×k, stream 0) and B (k×n, stream 1) with the counter
generator (``state/kinds/counter.py``) and take no input. Params ``{"m", "n", "k"}`` (no seed) need an
input ``encode_array(A) + encode_array(B)``: two canonical array encodings concatenated, A uint32 of
shape (m, k) then B uint32 of shape (k, n). Leaf i is row i of C (n little-endian uint32).
Execution: ``gpu/kinds/matmul_u32.py``.
"""

from __future__ import annotations

import numpy as np

from . import counter
from .base import JobParamError, KindRules, bytes_param, ceil_div, check_keys, int_param, limit
from .encoding import ArrayError, decode_arrays, encoded_size

MAX_DIM = 1024
MAX_RESULT_ELEMS = 1 << 18  # m*n*4 <= 1 MiB
MMAC = 1 << 20
_KEYS = frozenset({"m", "n", "k"})
_OPTIONAL = frozenset({"seed"})


class MatmulU32Rules(KindRules):
    """Integer matrix product modulo 2**32."""

    name = "matmul-u32"
    version = 1
    unit_type = "mmac"  # 2**20 multiply-accumulates
    deterministic = True
    tolerance = None
    result_dtype = "uint32"

    # -- parameters ----------------------------------------------------------------------------------
    def _check_params(self, params: dict) -> None:
        check_keys(params, _KEYS, _OPTIONAL)
        m, n, k = (int_param(params, x, 1, MAX_DIM) for x in ("m", "n", "k"))
        if "seed" in params:
            bytes_param(params, "seed", 32)
        limit("result elements m*n", m * n, MAX_RESULT_ELEMS)

    def input_required(self, params: dict) -> bool:
        return "seed" not in params

    def expected_input_size(self, params: dict) -> int | None:
        if "seed" in params:
            return None
        m, n, k = params["m"], params["n"], params["k"]
        return encoded_size("uint32", (m, k)) + encoded_size("uint32", (k, n))

    def result_shape(self, params: dict) -> tuple[int, ...]:
        return (params["m"], params["n"])

    def work_units(self, params: dict) -> int:
        self.validate_params(params)
        return max(1, ceil_div(params["m"] * params["n"] * params["k"], MMAC))

    def leaf_check_work(self, params: dict, input_size: int | None) -> int:
        """One row product (k*n multiply-adds, ~3 ns each) after B and a row of A are generated from the
        seed (~16 ns per element with the counter generator, plus ~75 µs of set-up) or decoded from the
        input (~1 ns per element, plus hashing it). Calibrated by ``bench/disputes.py``."""
        self.validate_params(params)
        m, n, k = params["m"], params["n"], params["k"]
        if "seed" in params:
            return 100 + ceil_div(20 * (k * n + k), 1000)
        return 10 + ceil_div(4 * (k * n + m * k), 1000) + ceil_div(input_size or 0, 1024)

    # -- operands ------------------------------------------------------------------------------------
    def key(self, params: dict) -> int:
        """The counter generator's key for these (seeded) params."""
        return counter.derive_key(self.name, self.version, params["seed"])

    def operands(self, params: dict, input: bytes | None) -> tuple[np.ndarray, np.ndarray]:
        """(A, B) as uint32 arrays (validates params and input)."""
        self.validate(params, None if input is None else len(input))
        m, n, k = params["m"], params["n"], params["k"]
        if "seed" in params:
            key = self.key(params)
            return counter.u32_matrix(key, 0, m, k), counter.u32_matrix(key, 1, k, n)
        try:
            a, b = decode_arrays(input, 2, max_bytes=len(input))
        except ArrayError as exc:
            raise JobParamError("bad_input", f"{self.name}: input is not A‖B: {exc}") from None
        if a.dtype != np.uint32 or a.shape != (m, k) or b.dtype != np.uint32 or b.shape != (k, n):
            raise JobParamError(
                "bad_input",
                f"{self.name}: input must be uint32 A{(m, k)} then uint32 B{(k, n)}, "
                f"got {a.dtype}{a.shape} and {b.dtype}{b.shape}",
            )
        return a, b

    def _row_of_a(self, params: dict, input: bytes | None, i: int) -> tuple[np.ndarray, np.ndarray]:
        if "seed" in params:
            self.validate(params, None if input is None else len(input))
            key, n, k = self.key(params), params["n"], params["k"]
            return counter.u32_range(key, 0, i * k, k), counter.u32_matrix(key, 1, k, n)
        a, b = self.operands(params, input)
        return a[i], b

    # -- verification --------------------------------------------------------------------------------
    def check_leaf(self, params: dict, input: bytes | None, index: int, leaf: bytes) -> bool:
        """Bit-exact comparison with row ``index`` of C, recomputed (one row: n*k MACs)."""
        self.validate_params(params)
        if type(index) is not int or not 0 <= index < params["m"]:
            return False
        if not isinstance(leaf, bytes) or len(leaf) != 4 * params["n"]:
            return False
        a_row, b = self._row_of_a(params, input, index)
        row = np.matmul(a_row, b)
        return row.astype("<u4").tobytes() == leaf
