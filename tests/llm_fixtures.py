"""A tiny seeded random-weight Llama with a real byte-level BPE tokenizer and a ChatML template, for the
llm-generate node and network tests (built with ``gpu.llm.gguf_import.build_model_file``)."""

from __future__ import annotations

import json
from pathlib import Path

from gpu.llm.tiny import CHATML, SPECIALS, TINY, tiny_model_file, tokenizer_meta

__all__ = ["CHATML", "SPECIALS", "TINY", "tiny_model_file", "tokenizer_meta", "write_model"]


def write_model(dirpath: Path, seed: int = 11) -> tuple[Path, Path, bytes]:
    """(model file, arch JSON file, file bytes) in ``dirpath``."""
    data = tiny_model_file(seed)
    path, arch = dirpath / "tiny.bin", dirpath / "arch.json"
    path.write_bytes(data)
    arch.write_text(json.dumps(TINY.to_map()))
    return path, arch, data
