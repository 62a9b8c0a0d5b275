"""A tiny seeded random-weight Llama with a real byte-level BPE tokenizer and a ChatML template, for the
llm-generate node and network tests (built with ``gpu.llm.gguf_import.build_model_file``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gpu.llm.gguf_import import TOKENIZER_FORMAT, build_model_file, tokenizer_section
from state.llm.config import LlamaConfig
from state.llm.modelfile import layout

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY = LlamaConfig(vocab=260, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, ffn_dim=64, max_ctx=128,
                   rope_base=10000, norm_eps_num=1, norm_eps_den=100000, tied_embeddings=True, bos_id=256,
                   eos_id=258)


def _byte_chars() -> list[str]:
    """GPT-2's bytes_to_unicode: the printable stand-in character of every byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs, strict=True))
    return [chr(table[b]) for b in range(256)]


def tokenizer_meta() -> dict:
    chars = _byte_chars()
    tokens = chars + SPECIALS + [chars[ord("h")] + chars[ord("e")]]  # one merge: "he"
    return {
        "format": TOKENIZER_FORMAT,
        "model": "gpt2",
        "pre": "smollm",
        "tokens": tokens,
        "token_types": [1] * 256 + [3, 3, 3] + [1],
        "merges": [chars[ord("h")] + " " + chars[ord("e")]],
        "bos": 256,
        "eos": 258,
        "unk": 256,
        "pad": 256,
        "add_bos": False,
        "chat_template": CHATML,
    }


def tiny_model_file(seed: int = 11) -> bytes:
    rng = np.random.default_rng(seed)
    tensors = {}
    for spec in layout(TINY):
        if spec.dtype == "i32":
            tensors[spec.name] = rng.uniform(0.5, 1.5, spec.shape).astype(np.float32)
        else:
            sd = 1.0 if spec.name in ("tok_embd", "output") else 1.0 / np.sqrt(spec.shape[1])
            tensors[spec.name] = rng.normal(0.0, sd, spec.shape).astype(np.float32)
    return build_model_file(TINY, tensors, tokenizer_section(tokenizer_meta()))


def write_model(dirpath: Path, seed: int = 11) -> tuple[Path, Path, bytes]:
    """(model file, arch JSON file, file bytes) in ``dirpath``."""
    data = tiny_model_file(seed)
    path, arch = dirpath / "tiny.bin", dirpath / "arch.json"
    path.write_bytes(data)
    arch.write_text(json.dumps(TINY.to_map()))
    return path, arch, data
