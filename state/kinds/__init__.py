"""The consensus rules of job kinds: registry ``KINDS[name]`` and :func:`get_kind`.

Each kind (:class:`~state.kinds.base.KindRules`) fixes its parameters and bounds, its metering unit,
its result shape and the deterministic per-leaf check that on-chain challenges run. This package is
pure (no I/O, no device), so ``state.market`` imports it directly. Running jobs (NumPy reference,
CUDA kernels, whole-result checks) is ``gpu.kinds``: each executable kind there subclasses its rules
class here. See ``docs/gpu.md`` ("Where a kind lives").

Adding a kind: write ``state/kinds/<kind>.py`` (a :class:`KindRules` subclass) and list it in
:data:`KINDS` below; that is what the chain accepts. Its execution goes in ``gpu/kinds/<kind>.py``.
"""

from __future__ import annotations

from .base import JobParamError, KindContext, KindRules
from .hash_chain import HashChainRules
from .llm_generate import LlmGenerateRules
from .matmul_u32 import MatmulU32Rules
from .mlp_f32 import MlpF32Rules

#: Every job kind the chain accepts, by name (the one list to extend when adding a kind).
KINDS: dict[str, KindRules] = {
    k.name: k for k in (MatmulU32Rules(), HashChainRules(), MlpF32Rules(), LlmGenerateRules())
}


def get_kind(name: str) -> KindRules:
    """The rules of kind ``name``; raises :class:`JobParamError` (reason ``unknown_kind``) otherwise."""
    kind = KINDS.get(name) if type(name) is str else None
    if kind is None:
        raise JobParamError("unknown_kind", f"unknown job kind {name!r}; known: {sorted(KINDS)}")
    return kind


__all__ = ["KINDS", "JobParamError", "KindContext", "KindRules", "get_kind"]
