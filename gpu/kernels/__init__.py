"""CUDA C sources of the PyCUDA backend (``*.cu`` package data), loaded with importlib.resources.

``counter.cu``: the counter-based input generator (twin of ``state/kinds/counter.py``);
``gemm.cu``: tiled shared-memory GEMM — ``matmul_u32`` (mod 2**32) and ``sgemm_bias_act`` (float32 with
bias and optional ReLU); ``sha256.cu``: ``hash_chain``, one thread per chain; ``llm.cu``: the integer
matmul of ``llm-generate`` (``llm_quant_rows``, ``llm_matmul_q8``; compiled on demand by ``gpu/llm_cuda.py``,
not at backend start, so a failure there only disables that kind's CUDA path). Every kernel is declared
``extern "C"`` in the source (compile with ``no_extern_c=True``).
"""

from __future__ import annotations

import functools
from importlib.resources import files

NAMES = ("counter", "gemm", "sha256")  # compiled when the PyCUDA backend starts
OPTIONAL = ("llm",)  # compiled on first use


@functools.cache
def source(name: str) -> str:
    """The CUDA C source ``<name>.cu``."""
    if name not in NAMES and name not in OPTIONAL:
        raise KeyError(f"no kernel source {name!r}; known: {NAMES + OPTIONAL}")
    return files(__package__).joinpath(f"{name}.cu").read_text(encoding="utf-8")
