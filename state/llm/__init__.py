"""Integer-only Llama inference split into small, independently checkable steps (``aitbc-llm-int8-v1``).

Pure (NumPy + stdlib): :mod:`.config` (``LlamaConfig``), :mod:`.modelfile` (canonical model file, chunk
root, verified weight slices), :mod:`.fixed` (integer primitives and constant tables), :mod:`.steps`
(step ids, dependencies, ``run_step``) and :mod:`.generate` (``generate``, trace root, ``check_step``).
See ``docs/inference.md``.
"""

from __future__ import annotations

from .config import FORMAT, LlamaConfig, LlmError
from .modelfile import CHUNK_SIZE, chunk_root, layout, weights_size

__all__ = ["CHUNK_SIZE", "FORMAT", "LlamaConfig", "LlmError", "chunk_root", "layout", "weights_size"]
