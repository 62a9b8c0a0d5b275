"""Registry of executable job kinds: ``KINDS[name]`` and :func:`get_kind`.

Each kind here (:class:`gpu.kinds.base.JobKind`) subclasses its consensus rules from
:mod:`state.kinds` (params, metering, leaf check) and adds execution: a NumPy reference, the device
memory estimate and an off-chain whole-result check (the CUDA kernels are ``gpu/pycuda_backend.py``).
See ``docs/gpu.md`` ("Where a kind lives").
"""

from __future__ import annotations

from .base import Deadline, JobExecutionError, JobKind, JobParamError
from .hash_chain import HashChain
from .llm_generate import LlmGenerate
from .matmul_u32 import MatmulU32
from .mlp_f32 import MlpF32

#: The kinds this peer can run, by name: each is a kind of ``state.kinds.KINDS`` with execution added.
KINDS: dict[str, JobKind] = {k.name: k for k in (MatmulU32(), HashChain(), MlpF32(), LlmGenerate())}


def get_kind(name: str) -> JobKind:
    """The executable kind called ``name``; raises :class:`JobParamError` (reason ``unknown_kind``)
    otherwise. For the consensus rules alone, use :func:`state.kinds.get_kind`."""
    kind = KINDS.get(name) if type(name) is str else None
    if kind is None:
        raise JobParamError("unknown_kind", f"unknown job kind {name!r}; known: {sorted(KINDS)}")
    return kind


__all__ = ["KINDS", "Deadline", "JobExecutionError", "JobKind", "JobParamError", "get_kind"]
