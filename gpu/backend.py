"""Backend selection (DESIGN §7) and the NumPy compute backend.

:func:`select_backend` decides once at start-up: PyCUDA when ``pycuda.driver`` imports and
``driver.init()`` and ``Device(0)`` succeed, otherwise NumPy, and says why. ``AITBC_GPU_BACKEND``
overrides: ``cpu``/``numpy`` forces NumPy, ``cuda``/``pycuda`` requires PyCUDA (raising
:class:`BackendUnavailable` when it cannot be had), ``auto`` (the default) chooses.
``pycuda.autoinit`` is never imported: the PyCUDA backend makes its own context in its own thread
(``gpu/pycuda_backend.py``).

A compute backend runs one job synchronously: ``execute(kind, params, input, deadline)`` returns the
result array and the measured compute seconds. :func:`open_backend` builds one from a
:class:`BackendInfo`.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import time
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from state.errors import AitbcError

from .kinds.base import Deadline, JobKind

ENV_VAR = "AITBC_GPU_BACKEND"
_FORCE_CPU = {"cpu", "numpy"}
_FORCE_CUDA = {"cuda", "pycuda"}
_AUTO = {"", "auto"}


class BackendUnavailable(AitbcError, RuntimeError):
    """The requested backend cannot be used (e.g. ``AITBC_GPU_BACKEND=cuda`` without a device)."""

    reason = "backend_unavailable"


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """Which backend runs jobs and why. ``memory_bytes`` is the device's total memory (host RAM for
    NumPy); ``compute_capability`` is e.g. ``"9.0"`` (empty for NumPy)."""

    name: str  # "pycuda" | "numpy"
    reason: str
    device: str
    memory_bytes: int
    compute_capability: str

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Host facts


def _meminfo(field: str) -> int:
    """A /proc/meminfo field in bytes (0 where unavailable)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cpu_name() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores)"


def numpy_info(reason: str) -> BackendInfo:
    return BackendInfo("numpy", reason, f"cpu: {cpu_name()}", _meminfo("MemTotal"), "")


# --------------------------------------------------------------------------------------------------
# Selection


def probe_pycuda() -> tuple[BackendInfo | None, str]:
    """(info, "") when PyCUDA can drive device 0, else (None, why not). Creates no context."""
    if importlib.util.find_spec("pycuda") is None:
        return None, "pycuda not installed"
    try:
        import pycuda.driver as drv
    except ImportError as exc:  # no libcuda.so.1 (no NVIDIA driver) or a broken install
        return None, f"pycuda cannot load the CUDA driver: {exc}"
    except Exception as exc:
        return None, f"pycuda import failed: {type(exc).__name__}: {exc}"
    try:
        drv.init()
        if drv.Device.count() < 1:
            return None, "no CUDA device: the driver reports 0 devices"
        dev = drv.Device(0)
        major, minor = dev.compute_capability()
        info = BackendInfo(
            "pycuda",
            "pycuda imported and CUDA device 0 initialised",
            str(dev.name()),
            int(dev.total_memory()),
            f"{major}.{minor}",
        )
    except Exception as exc:  # pycuda.driver.Error (not a RuntimeError) and anything odd
        return None, f"no CUDA device: {type(exc).__name__}: {exc}"
    return info, ""


def select_backend(preference: str | None = None) -> BackendInfo:
    """Choose the backend: ``preference`` (else ``$AITBC_GPU_BACKEND``, else ``auto``).

    ``cpu``/``numpy`` → NumPy; ``cuda``/``pycuda`` → PyCUDA or :class:`BackendUnavailable`;
    ``auto`` → PyCUDA when usable, else NumPy with the reason.
    """
    source = "argument" if preference is not None else ENV_VAR
    pref = (preference if preference is not None else os.environ.get(ENV_VAR, "")).strip().lower()
    if pref in _FORCE_CPU:
        return numpy_info(f"forced by {source}={pref}")
    if pref not in _FORCE_CUDA and pref not in _AUTO:
        raise BackendUnavailable(f"{source}={pref!r}: expected one of auto, cpu, numpy, cuda, pycuda")
    info, why = probe_pycuda()
    if info is not None:
        return info
    if pref in _FORCE_CUDA:
        raise BackendUnavailable(f"{source}={pref} requires PyCUDA with a CUDA device, but {why}")
    return numpy_info(why)


# --------------------------------------------------------------------------------------------------
# Compute backends


class ComputeBackend(Protocol):
    """What the executor needs from a backend."""

    info: BackendInfo

    def execute(
        self, kind: JobKind, params: dict, input: bytes | None, deadline: Deadline
    ) -> tuple[np.ndarray, float]:
        """Run one validated job; returns (result, compute seconds)."""
        ...

    def free_memory(self) -> int:
        """Bytes that a job may use now (0 when unknown)."""
        ...

    def memory_needed(self, kind: JobKind, params: dict) -> int:
        """Estimated bytes the job needs on this backend."""
        ...

    def close(self) -> None: ...


class NumpyBackend:
    """The CPU reference backend: each kind's ``execute_numpy`` (chunked, honouring the deadline)."""

    HOST_OVERHEAD = 3  # temporaries beyond the device-equivalent footprint

    def __init__(self, info: BackendInfo | None = None) -> None:
        self.info = info or numpy_info("chosen explicitly")

    def execute(
        self, kind: JobKind, params: dict, input: bytes | None, deadline: Deadline
    ) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        out = kind.execute_numpy(params, input, deadline=deadline)
        return out, time.perf_counter() - t0

    def free_memory(self) -> int:
        return _meminfo("MemAvailable")

    def memory_needed(self, kind: JobKind, params: dict) -> int:
        return self.HOST_OVERHEAD * kind.device_bytes(params)

    def close(self) -> None:
        pass


def open_selected(preference: str | None = None) -> ComputeBackend:
    """:func:`select_backend` then :func:`open_backend`, then a self-test of a GPU backend against the
    NumPy references (``gpu/selftest.py``). When PyCUDA was chosen automatically but cannot start (no
    context, kernels that do not compile, a failed self-test), falls back to NumPy with that reason;
    when it was required (``cuda``), raises :class:`BackendUnavailable`."""
    info = select_backend(preference)
    try:
        backend = open_backend(info)
        if info.name != "numpy":
            _self_test_or_close(backend)
        return backend
    except BackendUnavailable as exc:
        pref = (preference if preference is not None else os.environ.get(ENV_VAR, "")).strip().lower()
        if pref in _FORCE_CUDA:
            raise
        return NumpyBackend(numpy_info(f"pycuda found {info.device} but cannot use it: {exc}"))


def _self_test_or_close(backend: ComputeBackend) -> None:
    from .selftest import self_test

    try:
        self_test(backend)
    except Exception as exc:  # a kernel that fails or disagrees with the reference: never mine with it
        backend.close()
        raise BackendUnavailable(f"self-test against the NumPy reference failed: {exc}") from None


def open_backend(info: BackendInfo) -> ComputeBackend:
    """A compute backend for ``info`` (the PyCUDA one starts its GPU thread and context)."""
    if info.name == "numpy":
        return NumpyBackend(info)
    if info.name == "pycuda":
        from .pycuda_backend import PyCudaBackend

        return PyCudaBackend(info)
    raise BackendUnavailable(f"unknown backend {info.name!r}")
