"""``matmul-u32`` v1 execution: NumPy reference and Freivalds' whole-result check. The rules (params,
operands, leaf check) are :mod:`state.kinds.matmul_u32`; the CUDA kernel is ``gpu/kernels/gemm.cu``."""

from __future__ import annotations

import numpy as np

from state.kinds import counter
from state.kinds.matmul_u32 import MatmulU32Rules

from .base import Deadline, JobKind, check_deadline

FREIVALDS_VECTORS = 24  # each random vector misses a wrong result with probability <= 1/2 (mod 2**32)
_CHUNK_MACS = 1 << 22


class MatmulU32(MatmulU32Rules, JobKind):
    """Integer matrix product modulo 2**32."""

    def device_bytes(self, params: dict) -> int:
        m, n, k = params["m"], params["n"], params["k"]
        return 4 * (m * k + k * n + m * n)

    def execute_numpy(self, params: dict, input: bytes | None, *, deadline: Deadline | None = None) -> np.ndarray:
        """C = A @ B in uint32: NumPy's integer matmul wraps mod 2**32 (no BLAS, exact)."""
        a, b = self.operands(params, input)
        m, n, k = params["m"], params["n"], params["k"]
        c = np.empty((m, n), dtype=np.uint32)
        step = max(1, _CHUNK_MACS // (n * k))
        for r0 in range(0, m, step):
            check_deadline(deadline)
            np.matmul(a[r0 : r0 + step], b, out=c[r0 : r0 + step])
        return c

    def verify_full(self, params: dict, input: bytes | None, result: np.ndarray, rng_seed: bytes) -> bool:
        """Freivalds' check mod 2**32 with 24 random vectors: A(BR) == CR. A wrong C passes with
        probability at most 2**-24 (a nonzero error survives each uniform vector w.p. <= 1/2)."""
        a, b = self.operands(params, input)
        if not self._result_ok(params, result):
            return False
        rkey = counter.derive_key("freivalds", 1, bytes(rng_seed))
        r = counter.u32_range(rkey, 0, 0, params["n"] * FREIVALDS_VECTORS).reshape(params["n"], FREIVALDS_VECTORS)
        return bool(np.array_equal(np.matmul(a, np.matmul(b, r)), np.matmul(result, r)))
