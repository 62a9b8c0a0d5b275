"""Registry of job kinds: ``KINDS[name]`` and :func:`get_kind`.

Each kind (``gpu.kinds.base.JobKind``) fixes its parameters and bounds, its metering unit, a NumPy
reference, a cheap per-leaf check for on-chain challenges and an off-chain whole-result check.
See ``docs/gpu.md``.
"""

from __future__ import annotations

from .base import Deadline, JobExecutionError, JobKind, JobParamError
from .hash_chain import HashChain
from .matmul_u32 import MatmulU32
from .mlp_f32 import MlpF32

KINDS: dict[str, JobKind] = {k.name: k for k in (MatmulU32(), HashChain(), MlpF32())}


def get_kind(name: str) -> JobKind:
    """The kind called ``name``; raises :class:`JobParamError` (reason ``unknown_kind``) otherwise."""
    kind = KINDS.get(name) if type(name) is str else None
    if kind is None:
        raise JobParamError("unknown_kind", f"unknown job kind {name!r}; known: {sorted(KINDS)}")
    return kind


__all__ = ["KINDS", "Deadline", "JobExecutionError", "JobKind", "JobParamError", "get_kind"]
