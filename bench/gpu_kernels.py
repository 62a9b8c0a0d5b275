"""Benchmark: job-kind throughput on NumPy, on our PyCUDA kernels, and on the fastest library at hand.

For each kind and size it reports:
* ``numpy`` — the reference backend (``execute_numpy``), wall seconds per job and units/s;
* ``pycuda`` — when PyCUDA and a device work: a whole job through the backend (device generation or
  upload, kernels, download; CUDA-event time) and the core kernels alone (``time_core``: inputs already
  on the device), with an exactness check against NumPy (bit-exact for integer kinds, the kind's
  tolerance rule for mlp-f32);
* ``library`` — on a GPU, in the same run, the same core computation through CuPy / PyTorch (cuBLAS
  for float32; CuPy's integer matmul for uint32 — PyTorch has no CUDA uint32/int32 matmul), also
  checked for exactness, and ``ours/lib`` = our core kernel time divided by the library's (below 1:
  ours is faster). For matmul-u32 the cuBLAS float32 SGEMM of the same shape is given as the
  speed reference for a tuned GEMM (not comparable for exactness). TF32 is disabled in PyTorch.

    .venv/bin/python -m bench.gpu_kernels [--sizes small,medium[,large]] [--kinds ...] [--repeat N] [--json]

Runs on a machine without a GPU (NumPy only; prints ``pycuda: unavailable (reason)``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from gpu.backend import probe_pycuda
from gpu.kinds import KINDS, JobExecutionError
from gpu.kinds.base import Deadline

if TYPE_CHECKING:
    from gpu.pycuda_backend import PyCudaBackend

SEED = b"\x01" * 32
SIZES: dict[str, dict[str, dict]] = {
    "small": {
        "matmul-u32": {"m": 256, "n": 256, "k": 256},
        "hash-chain": {"chains": 1024, "iterations": 256},
        "mlp-f32": {"batch": 256, "d_in": 256, "d_hidden": 256, "d_out": 64},
    },
    "medium": {
        "matmul-u32": {"m": 512, "n": 512, "k": 512},
        "hash-chain": {"chains": 4096, "iterations": 1024},
        "mlp-f32": {"batch": 1024, "d_in": 512, "d_hidden": 256, "d_out": 256},
    },
    "large": {
        "matmul-u32": {"m": 256, "n": 1024, "k": 1024},
        "hash-chain": {"chains": 32768, "iterations": 2048},
        "mlp-f32": {"batch": 4096, "d_in": 256, "d_hidden": 512, "d_out": 64},
    },
}


def _median_time(fn: Callable[[], np.ndarray], repeat: int, budget_s: float) -> tuple[float, np.ndarray]:
    """(median wall seconds, last result) of ``fn`` over up to ``repeat`` runs (at least one; no new
    run starts after ``budget_s``)."""
    times: list[float] = []
    t_end = time.perf_counter() + budget_s
    while True:
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= repeat or time.perf_counter() > t_end:
            return statistics.median(times), out


def _exact(name: str, params: dict, got: np.ndarray, ref: np.ndarray | None) -> bool:
    """Bit-exact (integer kinds) or within the kind's tolerance rule (mlp-f32)."""
    kind = KINDS[name]
    if kind.tolerance is None:
        return ref is not None and got.dtype == ref.dtype and np.array_equal(got, ref)
    return kind.verify_full(params, None, np.asarray(got, dtype=np.float32), b"")


# -- libraries (GPU only) -------------------------------------------------------------------------------


def _cuda_timer(lib: str) -> Callable[[Callable[[], object], int], float]:
    """Median seconds of a GPU callable with the library's own CUDA events."""

    def timed(fn: Callable[[], object], repeat: int) -> float:
        if lib == "cupy":
            import cupy

            ev = cupy.cuda.Event
            sync = cupy.cuda.Device().synchronize
            elapsed = cupy.cuda.get_elapsed_time
        else:
            import torch

            def ev() -> object:
                return torch.cuda.Event(enable_timing=True)

            sync = torch.cuda.synchronize

            def elapsed(a: object, b: object) -> float:
                return a.elapsed_time(b)  # type: ignore[attr-defined]

        fn()
        sync()
        times = []
        for _ in range(repeat):
            start, end = ev(), ev()
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(elapsed(start, end) / 1e3)
        return statistics.median(times)

    return timed


def _library_rows(name: str, params: dict, ref: np.ndarray | None, repeat: int) -> list[dict]:
    """Library timings for the kind's core computation (each entry may carry an ``error``)."""
    kind = KINDS[name]
    rows: list[dict] = []

    def attempt(label: str, run: Callable[[], dict]) -> None:
        try:
            rows.append({"library": label, **run()})
        except Exception as exc:  # a missing or failing library is reported, not fatal
            rows.append({"library": label, "error": f"{type(exc).__name__}: {exc}"})

    if name == "matmul-u32":
        a, b = kind.operands(params, None)

        def cupy_u32() -> dict:
            import cupy

            da, db = cupy.asarray(a), cupy.asarray(b)
            secs = _cuda_timer("cupy")(lambda: cupy.matmul(da, db), repeat)
            out = cupy.asnumpy(cupy.matmul(da, db))
            return {"seconds": secs, "exact": bool(ref is not None and np.array_equal(out, ref))}

        def torch_sgemm() -> dict:
            import torch

            torch.backends.cuda.matmul.allow_tf32 = False
            fa = torch.from_numpy(a.astype(np.float32)).cuda()
            fb = torch.from_numpy(b.astype(np.float32)).cuda()
            return {"seconds": _cuda_timer("torch")(lambda: fa @ fb, repeat), "exact": None}

        attempt("cupy.matmul uint32", cupy_u32)
        attempt("torch.matmul float32 (cuBLAS SGEMM, speed reference)", torch_sgemm)
    elif name == "mlp-f32":
        x = kind.inputs(params, None)
        w1, b1, w2, b2 = kind.weights(params)

        def torch_mlp() -> dict:
            import torch

            torch.backends.cuda.matmul.allow_tf32 = False
            tx, tw1, tb1, tw2, tb2 = (torch.from_numpy(np.array(v)).cuda() for v in (x, w1, b1, w2, b2))

            def fwd() -> object:
                return torch.relu(tx @ tw1 + tb1) @ tw2 + tb2

            secs = _cuda_timer("torch")(fwd, repeat)
            out = fwd().cpu().numpy()
            return {"seconds": secs, "exact": _exact(name, params, out, ref)}

        def cupy_mlp() -> dict:
            import cupy

            cx, cw1, cb1, cw2, cb2 = (cupy.asarray(v) for v in (x, w1, b1, w2, b2))

            def fwd() -> object:
                return cupy.maximum(cx @ cw1 + cb1, 0) @ cw2 + cb2

            secs = _cuda_timer("cupy")(fwd, repeat)
            return {"seconds": secs, "exact": _exact(name, params, cupy.asnumpy(fwd()), ref)}

        attempt("torch (cuBLAS SGEMM, TF32 off)", torch_mlp)
        attempt("cupy (cuBLAS SGEMM)", cupy_mlp)
    return rows


# -- main -----------------------------------------------------------------------------------------------


def bench_one(
    name: str, size: str, params: dict, gpu: PyCudaBackend | None, repeat: int, cpu_limit_s: float
) -> dict:
    kind = KINDS[name]
    units = kind.work_units(params)
    row: dict = {"kind": name, "size": size, "params": {k: v for k, v in params.items() if k != "seed"},
                 "units": units, "unit_type": kind.unit_type}
    ref: np.ndarray | None = None
    try:
        secs, ref = _median_time(
            lambda: kind.execute_numpy(params, None, deadline=Deadline(cpu_limit_s)), repeat, cpu_limit_s
        )
        row["numpy"] = {"seconds": secs, "units_per_s": units / secs}
    except JobExecutionError as exc:
        row["numpy"] = {"error": f"{exc.reason}: {exc}"}
    if gpu is not None:
        try:
            out, job_s = gpu.execute(kind, params, None, Deadline(600))
            core_s = gpu.time_core(kind, params, repeat)
            row["pycuda"] = {
                "job_seconds": job_s,
                "core_seconds": core_s,
                "units_per_s": units / core_s,
                "exact": _exact(name, params, out, ref),
            }
            if ref is None and kind.tolerance is None:  # NumPy timed out: fall back to the kind's own check
                row["pycuda"]["exact"] = kind.verify_full(params, None, out, b"bench")
            if ref is None:
                ref = out if kind.tolerance is None else None
        except Exception as exc:
            row["pycuda"] = {"error": f"{type(exc).__name__}: {exc}"}
        libs = _library_rows(name, params, ref, repeat)
        core = row["pycuda"].get("core_seconds")
        for lib in libs:
            if core and lib.get("seconds"):
                lib["ours_over_lib_time"] = core / lib["seconds"]
        row["library"] = libs
    return row


def _fmt(row: dict) -> list[str]:
    p = ", ".join(f"{k}={v}" for k, v in row["params"].items())
    head = f"{row['kind']:<11} {row['size']:<6} {p}  ({row['units']} {row['unit_type']})"
    out = [head]
    n = row["numpy"]
    out.append(
        f"    numpy   : {n['error']}" if "error" in n
        else f"    numpy   : {n['seconds'] * 1e3:10.2f} ms/job  {n['units_per_s']:12.1f} {row['unit_type']}/s"
    )
    if "pycuda" in row:
        g = row["pycuda"]
        out.append(
            f"    pycuda  : {g['error']}" if "error" in g
            else f"    pycuda  : {g['core_seconds'] * 1e3:10.3f} ms core, {g['job_seconds'] * 1e3:.3f} ms job  "
            f"{g['units_per_s']:12.1f} {row['unit_type']}/s  exact={g['exact']}"
        )
        for lib in row.get("library", []):
            if "error" in lib:
                out.append(f"    library : {lib['library']}: {lib['error']}")
            else:
                ratio = f"  ours/lib time={lib['ours_over_lib_time']:.2f}" if "ours_over_lib_time" in lib else ""
                out.append(
                    f"    library : {lib['seconds'] * 1e3:10.3f} ms  {lib['library']}  exact={lib['exact']}{ratio}"
                )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="small,medium", help="comma list of: small, medium, large")
    sized = [k for k in KINDS if all(k in per_kind for per_kind in SIZES.values())]
    ap.add_argument("--kinds", default=",".join(sized),
                    help="comma list of kinds (default: every kind with sizes here; llm-generate: bench.gpu_llm)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (median)")
    ap.add_argument("--cpu-limit", type=float, default=30.0, help="NumPy time limit per job in seconds")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    args = ap.parse_args(argv)
    sizes = [s for s in args.sizes.split(",") if s]
    kinds = [k for k in args.kinds.split(",") if k]
    for s in sizes:
        if s not in SIZES:
            ap.error(f"unknown size {s!r}")
    for k in kinds:
        if k not in KINDS:
            ap.error(f"unknown kind {k!r}")
        if k not in sized:
            ap.error(f"kind {k!r} has no sizes here (llm-generate runs a model: python -m bench.gpu_llm)")

    from bench.common import machine

    info, why = probe_pycuda()
    gpu = None
    if info is not None:
        try:
            from gpu.pycuda_backend import PyCudaBackend

            gpu = PyCudaBackend(info)  # compiles (or loads) the kernels
        except Exception as exc:
            why, gpu = f"{type(exc).__name__}: {exc}", None
    header = {
        "machine": machine(),
        "pycuda": None if gpu is None else {"device": info.device, "compute_capability": info.compute_capability},
        "pycuda_unavailable": why if gpu is None else None,
    }
    if not args.json:
        print(f"# {header['machine']}")
        print(f"# pycuda: {info.device} (cc {info.compute_capability})" if gpu is not None
              else f"# pycuda: unavailable ({why})", flush=True)
    rows = []
    try:
        for size in sizes:
            for name in kinds:
                params = {**SIZES[size][name], "seed": SEED}
                row = bench_one(name, size, params, gpu, args.repeat, args.cpu_limit)
                rows.append(row)
                if not args.json:
                    print("\n".join(_fmt(row)), flush=True)
    finally:
        if gpu is not None:
            gpu.close()
    if args.json:
        json.dump({**header, "rows": rows}, sys.stdout, indent=1)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
