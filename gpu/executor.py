"""Runs jobs off the trio event loop and packages their results for receipts.

:class:`Executor` validates a job, refuses it up front when its result would exceed
``max_result_bytes`` or its memory estimate exceeds the limit or the free memory, then runs it in ONE
worker thread (``trio.to_thread.run_sync`` with a ``CapacityLimiter(1)``; the PyCUDA backend
forwards from there to its own GPU thread). The worker computes the result, its canonical encoding,
hash and Merkle root, so the event loop never does heavy work.

Time limits: the NumPy backend checks a :class:`~gpu.kinds.base.Deadline` between chunks, so a long
job is abandoned soon after its limit; GPU kernels cannot be interrupted, so a GPU job is checked after
it ran. Either way an over-time job raises ``JobExecutionError("timeout", ...)``. Cancelling the
awaiting trio task abandons the thread and signals the job to stop at its next check.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from state.codec import sha256

from .backend import BackendInfo, ComputeBackend, NumpyBackend, numpy_info, open_backend, open_selected
from .encoding import encode_array, result_root
from .kinds import get_kind
from .kinds.base import Deadline, JobExecutionError, JobKind, JobParamError

__all__ = ["ExecResult", "Executor", "JobExecutionError", "JobParamError"]


@dataclass(frozen=True, slots=True)
class ExecResult:
    """A finished job. ``encoded`` is the result blob (``encode_array``), ``result_hash`` its SHA-256
    (the blob id), ``result_root`` the Merkle root of its rows, ``result_size`` ``len(encoded)``.
    ``gpu_seconds`` is the measured compute time (CUDA events on the GPU, wall time of the NumPy
    computation on the CPU); ``started_at_ms``/``completed_at_ms`` are Unix wall-clock milliseconds."""

    array: np.ndarray = field(repr=False)
    encoded: bytes = field(repr=False)
    result_hash: bytes
    result_root: bytes
    result_size: int
    units: int
    unit_type: str
    gpu_seconds: float
    started_at_ms: int
    completed_at_ms: int
    backend: str
    device: str


class Executor:
    """Executes jobs on one backend, one job at a time.

    ``backend``: a :class:`BackendInfo` (opened here), an already opened compute backend, or None to
    select and open one (:func:`~gpu.backend.open_selected`: PyCUDA when usable, else NumPy).
    Opening the PyCUDA backend blocks while the kernels compile or load (seconds the first time on a
    machine, then milliseconds from PyCUDA's cache). ``memory_limit_bytes`` caps the memory one job may need
    (None: only the backend's free memory).
    """

    def __init__(
        self, backend: BackendInfo | ComputeBackend | None = None, *, memory_limit_bytes: int | None = None
    ) -> None:
        if backend is None:
            self._backend: ComputeBackend = open_selected()
        elif isinstance(backend, BackendInfo):
            self._backend = open_backend(backend)
        else:
            self._backend = backend
        self.memory_limit_bytes = memory_limit_bytes
        self._limiter = trio.CapacityLimiter(1)
        self._cpu: ComputeBackend | None = None  # kinds the backend has no kernels for run on NumPy

    def backend_for(self, kind: JobKind) -> ComputeBackend:
        """The backend that runs ``kind``: this executor's, or NumPy when that one has no kernels for it
        (a backend with a ``runs(kind)`` method says so: PyCUDA runs ``llm-generate`` only once its self-test passed)."""
        runs = getattr(self._backend, "runs", None)
        if runs is None or runs(kind):
            return self._backend
        if self._cpu is None:
            self._cpu = NumpyBackend(numpy_info(f"no {self.info.name} kernels for this kind"))
        return self._cpu

    @property
    def backend(self) -> BackendInfo:
        """Which backend runs the jobs (name, reason, device, memory_bytes, compute_capability)."""
        return self._backend.info

    info = backend

    @property
    def compute(self) -> ComputeBackend:
        """The opened compute backend itself."""
        return self._backend

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- admission -----------------------------------------------------------------------------------
    def admit(self, kind_name: str, params: dict, input: bytes | None, *, max_result_bytes: int) -> JobKind:
        """Raise unless the job is valid and fits the result-size and memory limits; returns its kind.
        Cheap and non-blocking (the backend's free memory is checked in the worker, see run_sync)."""
        kind = get_kind(kind_name)
        kind.validate(params, None if input is None else len(input))
        size = kind.result_encoded_size(params)
        if size > max_result_bytes:
            raise JobExecutionError("result_too_large", f"result would be {size} bytes > limit {max_result_bytes}")
        need = self.backend_for(kind).memory_needed(kind, params)
        if self.memory_limit_bytes is not None and need > self.memory_limit_bytes:
            raise JobExecutionError("memory", f"job needs ~{need} bytes > memory limit {self.memory_limit_bytes}")
        return kind

    def _check_free_memory(self, kind: JobKind, params: dict) -> None:
        backend = self.backend_for(kind)
        need = backend.memory_needed(kind, params)
        free = backend.free_memory()
        if free and need > free:
            raise JobExecutionError("memory", f"job needs ~{need} bytes > {free} bytes free on {backend.info.name}")

    # -- execution -----------------------------------------------------------------------------------
    def run_sync(
        self,
        kind_name: str,
        params: dict,
        input: bytes | None,
        *,
        time_limit_s: float,
        max_result_bytes: int,
        cancel: threading.Event | None = None,
    ) -> ExecResult:
        """Run a job in the calling thread (never call this on the trio loop; see :meth:`run`)."""
        kind = self.admit(kind_name, params, input, max_result_bytes=max_result_bytes)
        self._check_free_memory(kind, params)
        deadline = Deadline(time_limit_s, cancel)
        started_at_ms = int(time.time() * 1000)
        backend = self.backend_for(kind)
        array, seconds = backend.execute(kind, params, input, deadline)
        deadline.check()  # a GPU job cannot be interrupted: it is judged after it ran
        encoded = encode_array(array)
        if len(encoded) > max_result_bytes:  # cannot happen for a correct kind; checked anyway
            raise JobExecutionError("result_too_large", f"result is {len(encoded)} bytes > {max_result_bytes}")
        root = result_root(array)
        return ExecResult(
            array=array,
            encoded=encoded,
            result_hash=sha256(encoded),
            result_root=root,
            result_size=len(encoded),
            units=kind.work_units(params),
            unit_type=kind.unit_type,
            gpu_seconds=seconds,
            started_at_ms=started_at_ms,
            completed_at_ms=int(time.time() * 1000),
            backend=backend.info.name,
            device=backend.info.device,
        )

    async def run(
        self,
        kind_name: str,
        params: dict,
        input: bytes | None,
        *,
        time_limit_s: float,
        max_result_bytes: int,
    ) -> ExecResult:
        """Run a job in the executor's worker thread without blocking the trio loop.

        Raises :class:`JobParamError` for an invalid job and :class:`JobExecutionError` (``timeout``,
        ``memory``, ``result_too_large``, ``backend``, ``canceled``) when it cannot be completed.
        """
        self.admit(kind_name, params, input, max_result_bytes=max_result_bytes)
        cancel = threading.Event()

        def work() -> ExecResult:
            return self.run_sync(
                kind_name, params, input, time_limit_s=time_limit_s, max_result_bytes=max_result_bytes, cancel=cancel
            )

        try:
            return await trio.to_thread.run_sync(
                work, limiter=self._limiter, abandon_on_cancel=True, thread_name="aitbc-gpu-job"
            )
        finally:
            cancel.set()  # a no-op after completion; stops an abandoned NumPy job at its next check
