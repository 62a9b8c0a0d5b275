"""Start-up self-test of a compute backend: small jobs of every kind, with awkward sizes (not multiples
of the kernels' tiles), must give exactly the NumPy reference result (integer kinds) or pass the kind's
own on-chain leaf check (float kinds). A miner whose GPU path disagrees would be slashed for every job,
so a failing backend is refused and the node falls back to NumPy, saying why. ``llm-generate`` is checked
by the backend's ``enable_llm`` (``gpu/llm_cuda.py::llm_self_test``): a mismatch disables only its CUDA path."""

from __future__ import annotations

from .encoding import result_leaves
from .kinds import KINDS, Deadline

#: Small jobs per kind: sizes chosen to hit partial tiles and odd lengths.
SELF_TEST_JOBS: dict[str, dict] = {
    "matmul-u32": {"m": 67, "n": 33, "k": 129, "seed": b"\x5e" * 32},
    "hash-chain": {"chains": 37, "iterations": 3, "seed": b"\x5f" * 32},
    "mlp-f32": {"batch": 9, "d_in": 70, "d_hidden": 33, "d_out": 5, "seed": b"\x60" * 32},
}


class SelfTestError(Exception):
    """The backend's result for a self-test job differs from the reference."""


def self_test(backend, *, time_limit_s: float = 60.0) -> None:
    """Run every self-test job on ``backend`` (a ``ComputeBackend``); raise :class:`SelfTestError` naming
    the first kind that disagrees with the NumPy reference."""
    for name, params in SELF_TEST_JOBS.items():
        kind = KINDS[name]
        kind.validate(params, None)
        got, _ = backend.execute(kind, params, None, Deadline(time_limit_s))
        want = kind.execute_numpy(params, None)
        if got.shape != want.shape or got.dtype != want.dtype:
            raise SelfTestError(f"{name}: result {got.dtype}{list(got.shape)}, expected {want.dtype}{list(want.shape)}")
        leaves = result_leaves(got)
        if kind.tolerance is None:
            bad = [i for i, (a, b) in enumerate(zip(leaves, result_leaves(want), strict=True)) if a != b]
        else:
            bad = [i for i, leaf in enumerate(leaves) if not kind.check_leaf(params, None, i, leaf)]
        if bad:
            raise SelfTestError(f"{name}: {len(bad)} of {len(leaves)} rows differ from the reference (first: row {bad[0]})")
    # llm-generate (no self-contained job: it needs a model) has its own check on a seeded tiny model; a
    # mismatch there only keeps that kind on NumPy (logged by the backend), the other kinds stay on the GPU
    enable_llm = getattr(backend, "enable_llm", None)
    if enable_llm is not None:
        enable_llm()
