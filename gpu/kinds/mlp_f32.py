"""``mlp-f32`` v1 execution: float32 NumPy reference and the off-chain whole-result check. The rules
(params, weights, inputs, the deterministic per-leaf reference and tolerance rule) are
:mod:`state.kinds.mlp_f32`; the CUDA kernel is ``gpu/kernels/gemm.cu: sgemm_bias_act``."""

from __future__ import annotations

import numpy as np

from state.kinds.mlp_f32 import ATOL, RTOL, MlpF32Rules

from .base import Deadline, JobKind, check_deadline

_CHUNK_FLOPS = 1 << 24


class MlpF32(MlpF32Rules, JobKind):
    """Two-layer MLP inference, float32, tolerance-checked."""

    def device_bytes(self, params: dict) -> int:
        b, i, h, o = params["batch"], params["d_in"], params["d_hidden"], params["d_out"]
        return 4 * (b * i + i * h + h + b * h + h * o + o + b * o)

    def execute_numpy(self, params: dict, input: bytes | None, *, deadline: Deadline | None = None) -> np.ndarray:
        """float32 NumPy (BLAS sgemm) in chunks of rows."""
        x = self.inputs(params, input)
        w1, b1, w2, b2 = self.weights(params)
        batch, d_out = params["batch"], params["d_out"]
        y = np.empty((batch, d_out), dtype=np.float32)
        per_row = 2 * (w1.size + w2.size)
        step = max(1, _CHUNK_FLOPS // per_row)
        for r0 in range(0, batch, step):
            check_deadline(deadline)
            h = x[r0 : r0 + step] @ w1
            h += b1
            np.maximum(h, np.float32(0), out=h)
            out = h @ w2
            out += b2
            y[r0 : r0 + step] = out
        return y

    def reference(self, params: dict, input: bytes | None) -> tuple[np.ndarray, np.ndarray]:
        """(ref, mag) for the whole result in float64 NumPy (off-chain; BLAS is fine here)."""
        x = self.inputs(params, input).astype(np.float64)
        w1, b1, w2, b2 = (a.astype(np.float64) for a in self.weights(params))
        ref = np.maximum(x @ w1 + b1, 0.0) @ w2 + b2
        mag = (np.abs(x) @ np.abs(w1) + np.abs(b1)) @ np.abs(w2) + np.abs(b2)
        return ref, mag

    def verify_full(self, params: dict, input: bytes | None, result: np.ndarray, rng_seed: bytes) -> bool:
        """Whole result against the float64 reference under the tolerance rule (``rng_seed`` unused)."""
        self.validate(params, None if input is None else len(input))
        if not self._result_ok(params, result):
            return False
        ref, mag = self.reference(params, input)
        with np.errstate(invalid="ignore", over="ignore"):
            ok = np.abs(result.astype(np.float64) - ref) <= ATOL + RTOL * mag
        return bool(np.all(ok))
