"""Seeded random-weight Llama models with a byte-level BPE tokenizer and a ChatML template: what tests,
benchmarks and golden vectors run when no real model may be downloaded. Not consensus code."""

from __future__ import annotations

import numpy as np

from state.llm.config import LlamaConfig
from state.llm.modelfile import layout

from .gguf_import import TOKENIZER_FORMAT, build_model_file, tokenizer_section

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
#: 256 byte tokens, the three specials (bos 256, eos 258) and one merge ("he"): vocab 260.
TINY = LlamaConfig(vocab=260, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, ffn_dim=64, max_ctx=128,
                   rope_base=10000, norm_eps_num=1, norm_eps_den=100000, tied_embeddings=True, bos_id=256,
                   eos_id=258)


def byte_chars() -> list[str]:
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
    """The tokenizer metadata of :data:`TINY` (the shape :func:`gguf_import.tokenizer_meta` reads)."""
    chars = byte_chars()
    return {
        "format": TOKENIZER_FORMAT,
        "model": "gpt2",
        "pre": "smollm",
        "tokens": chars + SPECIALS + [chars[ord("h")] + chars[ord("e")]],
        "token_types": [1] * 256 + [3, 3, 3] + [1],
        "merges": [chars[ord("h")] + " " + chars[ord("e")]],
        "bos": 256,
        "eos": 258,
        "unk": 256,
        "pad": 256,
        "add_bos": False,
        "chat_template": CHATML,
    }


def random_tensors(cfg: LlamaConfig, seed: int = 11) -> dict[str, np.ndarray]:
    """Float32 tensors of every layout entry: gains ~ U(0.5, 1.5), embeddings and the LM head ~ N(0, 1),
    other matrices ~ N(0, 1/fan_in)."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in layout(cfg):
        if spec.dtype == "i32":
            out[spec.name] = rng.uniform(0.5, 1.5, spec.shape).astype(np.float32)
        else:
            sd = 1.0 if spec.name in ("tok_embd", "output") else 1.0 / np.sqrt(spec.shape[1])
            out[spec.name] = rng.normal(0.0, sd, spec.shape).astype(np.float32)
    return out


def tiny_model_file(seed: int = 11) -> bytes:
    """The model file of :data:`TINY` with seeded random weights and its tokenizer section."""
    return build_model_file(TINY, random_tensors(TINY, seed), tokenizer_section(tokenizer_meta()))
