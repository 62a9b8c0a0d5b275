"""GPU compute for the market: backend selection, job kinds, canonical results, executor, probe.

* :mod:`gpu.backend` — ``select_backend()`` (PyCUDA when a device works, else NumPy; DESIGN §7).
* :mod:`gpu.kinds` — the executable job kinds (``KINDS``, ``get_kind``): the consensus rules of
  :mod:`state.kinds` (params, metering, per-leaf check) plus NumPy reference and whole-result check.
* :mod:`gpu.encoding` — canonical array encoding, result hash and Merkle root (from
  :mod:`state.kinds.encoding`).
* :mod:`gpu.executor` — ``Executor.run(...)`` off the trio loop, returning an ``ExecResult``.
* :mod:`gpu.pycuda_backend` / :mod:`gpu.kernels` — our CUDA kernels, driven from one GPU thread.
* :mod:`gpu.probe` — ``probe()`` / ``format_probe()`` for ``aitbc-peer gpu probe``.

See ``docs/gpu.md``.
"""

from __future__ import annotations

from .backend import BackendInfo, BackendUnavailable, select_backend
from .encoding import ArrayError, array_hash, decode_array, encode_array, result_leaves, result_root
from .executor import ExecResult, Executor
from .kinds import KINDS, JobExecutionError, JobKind, JobParamError, get_kind

__all__ = [
    "KINDS",
    "ArrayError",
    "BackendInfo",
    "BackendUnavailable",
    "ExecResult",
    "Executor",
    "JobExecutionError",
    "JobKind",
    "JobParamError",
    "array_hash",
    "decode_array",
    "encode_array",
    "get_kind",
    "result_leaves",
    "result_root",
    "select_backend",
]
