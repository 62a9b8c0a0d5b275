"""Convert a Llama GGUF into the integer model file of ``aitbc-llm-int8-v1`` (not consensus code).

The conversion is deterministic for a given GGUF: weights are dequantised with ``gguf.quants`` (float32),
then each matrix row is quantised to int8 weights with a uint8 sub-scale per 32 weights and a row
scale ``m / 2**36`` (:func:`quantize_q8r`; float64 arithmetic, IEEE-exact operations only), and norm gains to Q16. The tokenizer section is the
canonical CBOR of the GGUF tokenizer metadata (:func:`tokenizer_section`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from state import codec
from state.llm.config import LlamaConfig, LlmError
from state.llm.modelfile import (
    GAIN_FRAC,
    GROUP,
    I32,
    MAX_SCALE,
    SCALE_FRAC,
    encode_i32,
    encode_q8r,
    layout,
    weights_size,
)

TOKENIZER_FORMAT = "aitbc-llm-tokenizer-v1"
LICENCE_KEY = "general.license"

# GGUF tensor name of each model-file tensor (per-layer names take the layer prefix)
_GGUF_NAMES = {
    "tok_embd": "token_embd.weight",
    "output_norm": "output_norm.weight",
    "output": "output.weight",
    "attn_norm": "attn_norm.weight",
    "attn_q": "attn_q.weight",
    "attn_k": "attn_k.weight",
    "attn_v": "attn_v.weight",
    "attn_output": "attn_output.weight",
    "ffn_norm": "ffn_norm.weight",
    "ffn_gate": "ffn_gate.weight",
    "ffn_up": "ffn_up.weight",
    "ffn_down": "ffn_down.weight",
}


def gguf_name(name: str) -> str:
    """GGUF tensor name of model-file tensor ``name`` (``blk.3.attn_q`` -> ``blk.3.attn_q.weight``)."""
    if name.startswith("blk."):
        _, layer, base = name.split(".", 2)
        return f"blk.{layer}.{_GGUF_NAMES[base]}"
    return _GGUF_NAMES[name]


def quantize_q8r(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row + group quantisation of a float matrix [out, in] -> (int64 row scales m in Q36, uint8
    sub-scales u [out, ceil(in/32)], int8 q): weight ~= q * u * m / 2**36, |q| <= 127, 1 <= u <= 255."""
    w64 = np.asarray(w, dtype=np.float64)
    n, k = w64.shape
    ng = -(-k // GROUP)
    amax = np.abs(w64).max(axis=1)
    m = np.rint(amax / (127.0 * 255.0) * 2.0**SCALE_FRAC).astype(np.int64)
    if m.max() > MAX_SCALE:
        raise LlmError("a weight row has max |w| > 126: rescale the model", "llm_import")
    m = np.where((amax > 0) & (m == 0), 1, m)
    unit = np.where(m > 0, m.astype(np.float64) / 2.0**SCALE_FRAC, 1.0)
    pad = np.zeros((n, ng * GROUP), dtype=np.float64)
    pad[:, :k] = w64
    gmax = np.abs(pad.reshape(n, ng, GROUP)).max(axis=2)
    u = np.clip(np.ceil(gmax / (127.0 * unit[:, None])), 1, 255).astype(np.uint8)
    step = np.repeat(u.astype(np.float64), GROUP, axis=1)[:, :k] * unit[:, None]
    q = np.clip(np.rint(w64 / step), -127, 127).astype(np.int8)
    return m, u, q


def quantize_gain(g: np.ndarray) -> np.ndarray:
    """Norm gains -> Q16 int64."""
    return np.rint(np.asarray(g, dtype=np.float64) * (1 << GAIN_FRAC)).astype(np.int64)


def build_weights(cfg: LlamaConfig, tensors: dict[str, np.ndarray]) -> bytes:
    """The weights section from float tensors keyed by model-file name (matrices as [out, in])."""
    parts = []
    for spec in layout(cfg):
        w = tensors[spec.name]
        if spec.dtype == I32:
            if w.shape != spec.shape:
                raise LlmError(f"{spec.name}: shape {w.shape} != {spec.shape}", "llm_import")
            parts.append(encode_i32(quantize_gain(w)))
        else:
            if w.shape != spec.shape:
                raise LlmError(f"{spec.name}: shape {w.shape} != {spec.shape}", "llm_import")
            parts.append(encode_q8r(*quantize_q8r(w)))
    data = b"".join(parts)
    if len(data) != weights_size(cfg):
        raise LlmError("weights section size mismatch", "llm_import")
    return data


def build_model_file(cfg: LlamaConfig, tensors: dict[str, np.ndarray], tokenizer: bytes = b"") -> bytes:
    """Weights section followed by the tokenizer section bytes."""
    return build_weights(cfg, tensors) + tokenizer


def _field(reader: Any, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def config_from_gguf(reader: Any, max_ctx: int = 1024) -> LlamaConfig:
    """The :class:`LlamaConfig` of an opened ``gguf.GGUFReader`` (Llama architecture only)."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise LlmError(f"architecture {arch!r} is not llama", "llm_import")
    a = "llama."
    dim = int(_field(reader, a + "embedding_length"))
    nh = int(_field(reader, a + "attention.head_count"))
    names = {t.name for t in reader.tensors}
    eps = float(_field(reader, a + "attention.layer_norm_rms_epsilon"))
    den = 10 ** max(0, round(-np.log10(eps)))  # 9.9999997e-06 -> (1, 100000)
    vocab = int(_field(reader, a + "vocab_size", len(_field(reader, "tokenizer.ggml.tokens"))))
    return LlamaConfig(
        vocab=vocab,
        dim=dim,
        n_layers=int(_field(reader, a + "block_count")),
        n_heads=nh,
        n_kv_heads=int(_field(reader, a + "attention.head_count_kv", nh)),
        head_dim=int(_field(reader, a + "rope.dimension_count", dim // nh)),
        ffn_dim=int(_field(reader, a + "feed_forward_length")),
        max_ctx=min(max_ctx, int(_field(reader, a + "context_length"))),
        rope_base=int(round(float(_field(reader, a + "rope.freq_base", 10000.0)))),
        norm_eps_num=max(1, round(eps * den)),
        norm_eps_den=den,
        tied_embeddings="output.weight" not in names,
        bos_id=int(_field(reader, "tokenizer.ggml.bos_token_id", 1)),
        eos_id=int(_field(reader, "tokenizer.ggml.eos_token_id", 2)),
    )


def gguf_float_tensors(reader: Any) -> dict[str, np.ndarray]:
    """Every GGUF tensor dequantised to float32, keyed by GGUF name, matrices as [out, in]."""
    from gguf.quants import dequantize

    out = {}
    for t in reader.tensors:
        arr = dequantize(t.data, t.tensor_type)
        out[t.name] = np.asarray(arr, dtype=np.float32).reshape([int(x) for x in reversed(t.shape)])
    return out


def tokenizer_meta(reader: Any) -> dict[str, Any]:
    """The tokenizer metadata as a CBOR-ready map."""
    return {
        "format": TOKENIZER_FORMAT,
        "model": str(_field(reader, "tokenizer.ggml.model")),
        "pre": str(_field(reader, "tokenizer.ggml.pre", "")),
        "tokens": [str(x) for x in _field(reader, "tokenizer.ggml.tokens")],
        "token_types": [int(x) for x in _field(reader, "tokenizer.ggml.token_type")],
        "merges": [str(x) for x in _field(reader, "tokenizer.ggml.merges")],
        "bos": int(_field(reader, "tokenizer.ggml.bos_token_id", 1)),
        "eos": int(_field(reader, "tokenizer.ggml.eos_token_id", 2)),
        "unk": int(_field(reader, "tokenizer.ggml.unknown_token_id", 0)),
        "pad": int(_field(reader, "tokenizer.ggml.padding_token_id", 0)),
        "add_bos": bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
        "chat_template": str(_field(reader, "tokenizer.chat_template", "")),
    }


def tokenizer_section(meta: dict[str, Any]) -> bytes:
    """Canonical CBOR of the tokenizer metadata (the model file's tokenizer section)."""
    return codec.encode(meta)


@dataclass
class ImportedModel:
    cfg: LlamaConfig
    file_bytes: bytes
    tokenizer: dict[str, Any]
    tokenizer_offset: int
    tokenizer_size: int
    licence: str
    name: str
    float_tensors: dict[str, np.ndarray] | None = None  # model-file names, kept when asked (reference)


def import_gguf(path: str | Path, max_ctx: int = 1024, keep_float: bool = False) -> ImportedModel:
    """Read a Llama GGUF and return the integer model file with its config and tokenizer (and, with
    ``keep_float``, the dequantised float32 tensors for :class:`gpu.llm.float_reference.FloatLlama`)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    cfg = config_from_gguf(reader, max_ctx)
    ft = gguf_float_tensors(reader)
    tensors = {spec.name: ft[gguf_name(spec.name)] for spec in layout(cfg)}
    meta = tokenizer_meta(reader)
    tok = tokenizer_section(meta)
    weights = build_weights(cfg, tensors)
    return ImportedModel(
        cfg=cfg,
        file_bytes=weights + tok,
        tokenizer=meta,
        tokenizer_offset=len(weights),
        tokenizer_size=len(tok),
        licence=str(_field(reader, LICENCE_KEY, "")),
        name=str(_field(reader, "general.name", "")),
        float_tensors=tensors if keep_float else None,
    )


def convert_gguf(path: str | Path, max_ctx: int = 1024) -> tuple[bytes, dict[str, Any]]:
    """What ``aitbc-peer model import`` registers: the model file bytes and the manifest fields it
    cannot compute from the bytes alone (``name``, ``arch``, ``licence``, ``tokenizer`` offset/size)."""
    m = import_gguf(path, max_ctx=max_ctx)
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in m.name.lower()).strip("-")[:64]
    return m.file_bytes, {
        "name": name or None,
        "arch": m.cfg.to_map(),
        "licence": m.licence[:4096],
        "tokenizer": {"offset": m.tokenizer_offset, "size": m.tokenizer_size},
    }
