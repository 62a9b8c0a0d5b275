"""Float32 NumPy forward pass of a Llama model (the standard math; quality yardstick, not consensus).

Tensors are keyed by model-file names (:mod:`state.llm.modelfile`), matrices [out, in], as GGUF stores
them (so RoPE rotates adjacent pairs, llama.cpp's "normal" mode, matching the integer path).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from state.llm.config import LlamaConfig
from state.llm.modelfile import layout


class FloatLlama:
    """A float32 Llama with a batched teacher-forced forward and a greedy generator."""

    def __init__(self, cfg: LlamaConfig, tensors: dict[str, np.ndarray]) -> None:
        self.cfg = cfg
        self.t = {s.name: np.asarray(tensors[s.name], dtype=np.float32) for s in layout(cfg)}
        self.out = self.t["tok_embd"] if cfg.tied_embeddings else self.t["output"]
        hd = cfg.head_dim
        inv = cfg.rope_base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
        ang = np.arange(cfg.max_ctx, dtype=np.float64)[:, None] * inv[None, :]
        self.cos = np.cos(ang).astype(np.float32)
        self.sin = np.sin(ang).astype(np.float32)
        self.eps = np.float32(cfg.norm_eps_num / cfg.norm_eps_den)

    @classmethod
    def from_gguf(cls, path: str, max_ctx: int = 1024) -> FloatLlama:
        import gguf

        from .gguf_import import config_from_gguf, gguf_float_tensors, gguf_name

        reader = gguf.GGUFReader(path)
        cfg = config_from_gguf(reader, max_ctx)
        ft = gguf_float_tensors(reader)
        return cls(cfg, {s.name: ft[gguf_name(s.name)] for s in layout(cfg)})

    def _norm(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * g

    def _rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        c, s = self.cos[pos][:, None, :], self.sin[pos][:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * c - x1 * s
        out[..., 1::2] = x0 * s + x1 * c
        return out

    def forward(self, tokens: list[int], cache: dict[str, Any] | None = None) -> np.ndarray:
        """Logits [T, vocab] for ``tokens`` following those already in ``cache`` (a dict, filled in)."""
        cfg, t = self.cfg, self.t
        cache = {} if cache is None else cache
        p0 = cache.get("n", 0)
        n = len(tokens)
        pos = np.arange(p0, p0 + n)
        hd, nh, nkv = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
        h = t["tok_embd"][np.asarray(tokens)]
        for ly in range(cfg.n_layers):
            p = f"blk.{ly}."
            x = self._norm(h, t[p + "attn_norm"])
            q = self._rope((x @ t[p + "attn_q"].T).reshape(n, nh, hd), pos)
            k = self._rope((x @ t[p + "attn_k"].T).reshape(n, nkv, hd), pos)
            v = (x @ t[p + "attn_v"].T).reshape(n, nkv, hd)
            ks = cache[f"k{ly}"] = np.concatenate([cache.get(f"k{ly}", k[:0]), k])
            vs = cache[f"v{ly}"] = np.concatenate([cache.get(f"v{ly}", v[:0]), v])
            kk = np.repeat(ks, cfg.group, axis=1).transpose(1, 0, 2)  # [nh, S, hd]
            vv = np.repeat(vs, cfg.group, axis=1).transpose(1, 0, 2)
            sc = np.einsum("thd,hsd->hts", q, kk) / np.float32(np.sqrt(hd))
            mask = np.arange(ks.shape[0])[None, :] > pos[:, None]
            sc = np.where(mask[None], -np.inf, sc)
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            sc /= sc.sum(-1, keepdims=True)
            att = np.einsum("hts,hsd->thd", sc, vv).reshape(n, nh * hd)
            h = h + att @ t[p + "attn_output"].T
            x = self._norm(h, t[p + "ffn_norm"])
            g = x @ t[p + "ffn_gate"].T
            h = h + ((g / (1 + np.exp(-g))) * (x @ t[p + "ffn_up"].T)) @ t[p + "ffn_down"].T
        cache["n"] = p0 + n
        return self._norm(h, t["output_norm"]) @ self.out.T

    def generate(self, prompt: list[int], max_new: int, stop: set[int] | frozenset[int] = frozenset()) -> list[int]:
        """Greedy generation."""
        cache: dict[str, Any] = {}
        logits = self.forward(prompt, cache)[-1]
        out: list[int] = []
        while True:
            tok = int(np.argmax(logits))
            out.append(tok)
            if tok in stop or len(out) >= max_new:
                return out
            logits = self.forward([tok], cache)[-1]
