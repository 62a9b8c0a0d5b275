"""``aitbc-peer gpu probe``: which backend this node would use, why, and a short measured throughput
per job kind (a small fixed job run repeatedly through the executor path for ``duration_s`` in all)."""

from __future__ import annotations

import time

from .backend import BackendInfo
from .executor import Executor
from .kinds import KINDS

PROBE_SEED = bytes(range(32))
PROBE_JOBS: dict[str, dict] = {
    "matmul-u32": {"m": 256, "n": 256, "k": 256, "seed": PROBE_SEED},
    "hash-chain": {"chains": 256, "iterations": 255, "seed": PROBE_SEED},
    "mlp-f32": {"batch": 256, "d_in": 256, "d_hidden": 256, "d_out": 64, "seed": PROBE_SEED},
}
MAX_RESULT_BYTES = 2 << 20


def _jsonable(params: dict) -> dict:
    return {k: ("0x" + v.hex() if isinstance(v, bytes) else v) for k, v in params.items()}


def _measure(ex: Executor, name: str, params: dict, budget_s: float) -> dict:
    kind = KINDS[name]
    units = kind.work_units(params)
    entry: dict = {"params": _jsonable(params), "unit_type": kind.unit_type, "units_per_job": units,
                   "jobs": 0, "jobs_per_s": 0.0, "units_per_s": 0.0}
    try:
        ex.run_sync(name, params, None, time_limit_s=60.0, max_result_bytes=MAX_RESULT_BYTES)  # warm-up
        jobs, compute = 0, 0.0
        t0 = time.perf_counter()
        while True:
            r = ex.run_sync(name, params, None, time_limit_s=60.0, max_result_bytes=MAX_RESULT_BYTES)
            jobs += 1
            compute += r.gpu_seconds
            elapsed = time.perf_counter() - t0
            if elapsed >= budget_s:
                break
    except Exception as exc:  # report, never crash the probe
        entry["error"] = f"{type(exc).__name__}: {exc}"
        return entry
    entry.update(
        jobs=jobs,
        seconds=round(elapsed, 4),
        compute_seconds=round(compute, 4),
        jobs_per_s=round(jobs / elapsed, 3),
        units_per_s=round(jobs * units / elapsed, 3),
    )
    return entry


def probe(
    duration_s: float = 0.5, *, backend: BackendInfo | None = None, executor: Executor | None = None
) -> dict:
    """Backend facts plus, per kind, jobs/s and units/s of a small fixed job (JSON-friendly dict).

    Without ``backend`` it opens what the node would use (``AITBC_GPU_BACKEND`` honoured; PyCUDA that
    cannot start falls back to NumPy, with the reason). A backend that cannot be had at all is
    reported with ``backend: "none"`` and an ``error``. With ``executor`` it measures that executor's
    backend (the one jobs run on; no second GPU context) and leaves it open.
    """
    if executor is not None:
        return _probe_with(executor, duration_s)
    try:
        ex = Executor(backend)
    except Exception as exc:
        return {
            "backend": "none", "reason": str(exc), "device": backend.device if backend else "",
            "memory_bytes": 0, "compute_capability": "", "duration_s": duration_s, "kinds": {},
            "error": f"{type(exc).__name__}: {exc}",
        }
    with ex:
        return _probe_with(ex, duration_s)


def _probe_with(ex: Executor, duration_s: float) -> dict:
    info = ex.info
    out: dict = {"backend": info.name, **info.to_dict(), "duration_s": duration_s, "kinds": {}}
    del out["name"]
    budget = max(duration_s, 0.0) / len(PROBE_JOBS)
    for name, params in PROBE_JOBS.items():
        out["kinds"][name] = _measure(ex, name, params, budget)
    return out


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n else "unknown"


def format_probe(d: dict) -> str:
    """Human-readable text of a :func:`probe` result."""
    lines = [
        f"backend: {d['backend']} ({d['reason']})",
        f"device:  {d['device']}",
        f"memory:  {_gib(d.get('memory_bytes', 0))}"
        + (f", compute capability {d['compute_capability']}" if d.get("compute_capability") else ""),
    ]
    if "error" in d:
        lines.append(f"error:   {d['error']}")
    if d.get("kinds"):
        lines.append(f"{'kind':<12} {'unit':<6} {'units/job':>9} {'jobs/s':>10} {'units/s':>12}  job")
        for name, k in d["kinds"].items():
            job = ", ".join(f"{p}={v}" for p, v in k["params"].items() if p != "seed")
            if "error" in k:
                lines.append(f"{name:<12} {k['unit_type']:<6} {k['units_per_job']:>9}  error: {k['error']}")
            else:
                lines.append(
                    f"{name:<12} {k['unit_type']:<6} {k['units_per_job']:>9} {k['jobs_per_s']:>10.2f}"
                    f" {k['units_per_s']:>12.1f}  {job}"
                )
    return "\n".join(lines)
