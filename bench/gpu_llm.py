"""Benchmark: ``llm-generate`` tokens/s on NumPy, on the PyCUDA path (integer matmuls on the GPU, the rest on
the host; ``gpu/llm_cuda.py``), and the same model dequantized to float16/float32 in PyTorch or CuPy on the
same GPU (whichever imports; a plain eager Llama with a KV cache, greedy).

The model is a seeded random one with real shapes (``--preset smol``: SmolLM2-135M's config; ``tiny``: the
self-test model). For each path: prefill seconds of the prompt and decode tokens/s (``--new`` tokens after the
first). The PyCUDA run is checked bit for bit against NumPy (trace root). One command:

    .venv/bin/python -m bench.gpu_llm [--preset smol|tiny] [--prompt 32] [--new 32] [--dtype float16|float32]

prints a table, then one JSON line. Without a GPU it prints NumPy only and says why the others are skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from gpu.backend import probe_pycuda
from gpu.llm_cuda import SELFTEST_CFG, random_model_bytes
from state.llm import fixed as fx
from state.llm.config import LlamaConfig
from state.llm.generate import IntModel, generate

PRESETS = {
    "tiny": SELFTEST_CFG,
    "smol": LlamaConfig(vocab=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64, ffn_dim=1536,
                        max_ctx=1024, rope_base=100000, norm_eps_num=1, norm_eps_den=100000, tied_embeddings=True,
                        bos_id=1, eos_id=2),
}


def _timed_generate(gen: Any, model: IntModel, prompt: list[int], n_new: int) -> dict:
    """Prefill seconds (generation of 1 token) and decode tokens/s (the ``n_new - 1`` tokens after it),
    after a warm-up run (lazy weight layouts, device upload, kernel load)."""
    gen(model, prompt, 2, record=False)
    t0 = time.perf_counter()
    gen(model, prompt, 1, record=False)
    t1 = time.perf_counter()
    toks, _ = gen(model, prompt, n_new, record=False)
    t2 = time.perf_counter()
    prefill = t1 - t0
    decode = max(t2 - t1 - prefill, 1e-9)
    return {"prefill_s": prefill, "decode_tok_s": (n_new - 1) / decode, "total_s": t2 - t1, "tokens": toks}


def _dequant(model: IntModel, name: str) -> np.ndarray:
    w = model.weights.tensor(name)
    return (w.q.astype(np.float64) * (w.scale.astype(np.float64)[:, None] / 2.0**fx.W_FRAC)).astype(np.float32)


def _float_weights(model: IntModel) -> dict[str, np.ndarray]:
    cfg = model.cfg
    out = {"tok_embd": _dequant(model, "tok_embd"), "output": _dequant(model, "output")}
    out["output_norm"] = model.gain("output_norm").astype(np.float32) / 65536
    for ly in range(cfg.n_layers):
        p = f"blk.{ly}."
        for n in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
            out[p + n] = _dequant(model, p + n)
        for n in ("attn_norm", "ffn_norm"):
            out[p + n] = model.gain(p + n).astype(np.float32) / 65536
    return out


def _time_greedy(forward: Any, prompt: list[int], n_new: int, sync: Any) -> dict:
    """Greedy decoding with a library's ``forward(tokens, first_position)`` (logits of the last position):
    a warm-up, then prefill (the first token) and the whole run timed apart, the device synchronised."""

    def run(n: int) -> list[int]:
        toks = [int(forward(prompt, 0).argmax())]
        while len(toks) < n:
            toks.append(int(forward([toks[-1]], len(prompt) + len(toks) - 1).argmax()))
        return toks

    run(2)  # warm-up
    sync()
    t0 = time.perf_counter()
    run(1)
    sync()
    t1 = time.perf_counter()
    run(n_new)
    sync()
    t2 = time.perf_counter()
    prefill = t1 - t0
    return {"prefill_s": prefill, "decode_tok_s": (n_new - 1) / max(t2 - t1 - prefill, 1e-9), "total_s": t2 - t1}


def _torch_run(model: IntModel, prompt: list[int], n_new: int, dtype: str) -> dict:
    """Eager PyTorch Llama (the dequantized weights on the GPU, KV cache, greedy)."""
    import torch

    cfg = model.cfg
    dt = getattr(torch, dtype)
    dev = torch.device("cuda")
    w = {k: torch.from_numpy(v).to(dev, dt) for k, v in _float_weights(model).items()}
    hd, nh, nkv = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
    eps = cfg.norm_eps_num / cfg.norm_eps_den
    inv = 1.0 / (cfg.rope_base ** (torch.arange(0, hd, 2, device=dev, dtype=torch.float32) / hd))
    ang = torch.arange(cfg.max_ctx, device=dev, dtype=torch.float32)[:, None] * inv[None, :]
    cos, sin = ang.cos().to(dt), ang.sin().to(dt)

    def norm(x: Any, g: Any) -> Any:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(dt) * g

    def rope(x: Any, pos: Any) -> Any:  # x [T, H, hd], adjacent pairs as in the integer model
        c, s = cos[pos][:, None, :], sin[pos][:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1).flatten(-2)

    kc = [torch.zeros(nkv, cfg.max_ctx, hd, device=dev, dtype=dt) for _ in range(cfg.n_layers)]
    vc = [torch.zeros(nkv, cfg.max_ctx, hd, device=dev, dtype=dt) for _ in range(cfg.n_layers)]

    def forward(tokens: list[int], p0: int) -> Any:
        t = len(tokens)
        pos = torch.arange(p0, p0 + t, device=dev)
        h = w["tok_embd"][torch.tensor(tokens, device=dev)]
        for ly in range(cfg.n_layers):
            p = f"blk.{ly}."
            x = norm(h, w[p + "attn_norm"])
            q = rope((x @ w[p + "attn_q"].T).view(t, nh, hd), pos)
            k = rope((x @ w[p + "attn_k"].T).view(t, nkv, hd), pos)
            v = (x @ w[p + "attn_v"].T).view(t, nkv, hd)
            kc[ly][:, p0 : p0 + t] = k.transpose(0, 1)
            vc[ly][:, p0 : p0 + t] = v.transpose(0, 1)
            n_s = p0 + t
            kk = kc[ly][:, :n_s].repeat_interleave(nh // nkv, 0)
            vv = vc[ly][:, :n_s].repeat_interleave(nh // nkv, 0)
            sc = (q.transpose(0, 1) @ kk.transpose(1, 2)).float() / hd**0.5  # [nh, t, S]
            mask = torch.arange(n_s, device=dev)[None, :] > pos[:, None]
            sc = sc.masked_fill(mask[None], float("-inf")).softmax(-1).to(dt)
            att = (sc @ vv).transpose(0, 1).reshape(t, nh * hd)
            h = h + att @ w[p + "attn_output"].T
            x2 = norm(h, w[p + "ffn_norm"])
            h = h + (torch.nn.functional.silu(x2 @ w[p + "ffn_gate"].T) * (x2 @ w[p + "ffn_up"].T)) @ w[p + "ffn_down"].T
        return norm(h[-1:], w["output_norm"]) @ w["output"].T

    with torch.inference_mode():
        return _time_greedy(forward, prompt, n_new, torch.cuda.synchronize)


def _cupy_run(model: IntModel, prompt: list[int], n_new: int, dtype: str) -> dict:
    """The same eager Llama in CuPy."""
    import cupy as cp

    cfg = model.cfg
    w = {k: cp.asarray(v, dtype=dtype) for k, v in _float_weights(model).items()}
    hd, nh, nkv = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
    eps = cfg.norm_eps_num / cfg.norm_eps_den
    inv = 1.0 / (cfg.rope_base ** (cp.arange(0, hd, 2, dtype=cp.float32) / hd))
    ang = cp.arange(cfg.max_ctx, dtype=cp.float32)[:, None] * inv[None, :]
    cos, sin = cp.cos(ang).astype(dtype), cp.sin(ang).astype(dtype)

    def norm(x: Any, g: Any) -> Any:
        xf = x.astype(cp.float32)
        return (xf / cp.sqrt((xf * xf).mean(-1, keepdims=True) + eps)).astype(dtype) * g

    def rope(x: Any, pos: Any) -> Any:
        c, s = cos[pos][:, None, :], sin[pos][:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return cp.stack([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1).reshape(x.shape)

    kc = [cp.zeros((nkv, cfg.max_ctx, hd), dtype=dtype) for _ in range(cfg.n_layers)]
    vc = [cp.zeros((nkv, cfg.max_ctx, hd), dtype=dtype) for _ in range(cfg.n_layers)]

    def forward(tokens: list[int], p0: int) -> Any:
        t = len(tokens)
        pos = cp.arange(p0, p0 + t)
        h = w["tok_embd"][cp.asarray(tokens)]
        for ly in range(cfg.n_layers):
            p = f"blk.{ly}."
            x = norm(h, w[p + "attn_norm"])
            q = rope((x @ w[p + "attn_q"].T).reshape(t, nh, hd), pos)
            k = rope((x @ w[p + "attn_k"].T).reshape(t, nkv, hd), pos)
            v = (x @ w[p + "attn_v"].T).reshape(t, nkv, hd)
            kc[ly][:, p0 : p0 + t] = k.transpose(1, 0, 2)
            vc[ly][:, p0 : p0 + t] = v.transpose(1, 0, 2)
            n_s = p0 + t
            kk = cp.repeat(kc[ly][:, :n_s], nh // nkv, axis=0)
            vv = cp.repeat(vc[ly][:, :n_s], nh // nkv, axis=0)
            sc = cp.matmul(q.transpose(1, 0, 2), kk.transpose(0, 2, 1)).astype(cp.float32) / hd**0.5
            mask = cp.arange(n_s)[None, :] > pos[:, None]
            sc = cp.where(mask[None], -cp.inf, sc)
            e = cp.exp(sc - sc.max(-1, keepdims=True))
            pr = (e / e.sum(-1, keepdims=True)).astype(dtype)
            att = cp.matmul(pr, vv).transpose(1, 0, 2).reshape(t, nh * hd)
            h = h + att @ w[p + "attn_output"].T
            x2 = norm(h, w[p + "ffn_norm"])
            g = x2 @ w[p + "ffn_gate"].T
            h = h + ((g / (1 + cp.exp(-g))) * (x2 @ w[p + "ffn_up"].T)) @ w[p + "ffn_down"].T
        return norm(h[-1:], w["output_norm"]) @ w["output"].T

    return _time_greedy(forward, prompt, n_new, cp.cuda.Device().synchronize)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="smol", choices=sorted(PRESETS))
    ap.add_argument("--prompt", type=int, default=32, help="prompt tokens")
    ap.add_argument("--new", type=int, default=32, help="generated tokens (>= 2)")
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="library model dtype")
    ap.add_argument("--skip-numpy", action="store_true", help="skip the NumPy run (slow for big presets)")
    args = ap.parse_args(argv)
    cfg = PRESETS[args.preset]
    n_new = max(2, args.new)
    if args.prompt < 1 or args.prompt + n_new > cfg.max_ctx:
        ap.error(f"need 1 <= prompt and prompt + new <= {cfg.max_ctx}")

    from bench.common import machine

    model = IntModel(cfg, random_model_bytes(cfg, 7))
    prompt = [int(t) for t in np.random.default_rng(1).integers(0, cfg.vocab, args.prompt)]
    rows: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    ref_tokens: list[int] | None = None
    if not args.skip_numpy:
        rows["numpy"] = _timed_generate(generate, model, prompt, n_new)
        ref_tokens = rows["numpy"].pop("tokens")

    info, why = probe_pycuda()
    gpu = None
    if info is not None:
        try:
            from gpu.pycuda_backend import PyCudaBackend

            gpu = PyCudaBackend(info)
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
    try:
        if gpu is None:
            skipped["pycuda"] = why
        else:
            ok = gpu.enable_llm()
            if not ok:
                skipped["pycuda"] = gpu.llm_reason
            else:
                engine = gpu.llm
                engine.timings.update(matmul_s=0.0, calls=0, attention_s=0.0)
                r = _timed_generate(engine.generate, model, prompt, n_new)
                # wall time inside the device calls (upload, launches, download) over the warm-up and timed
                # runs; the rest of the pass is host NumPy (norms, RoPE, residuals, sampling, the trace)
                r["device_call_s"] = {"products_and_swiglu": round(engine.timings["matmul_s"], 4),
                                      "attention": round(engine.timings["attention_s"], 4),
                                      "product_calls": int(engine.timings["calls"])}
                toks = r.pop("tokens")
                r["tokens_equal_numpy"] = None if ref_tokens is None else toks == ref_tokens
                _, want = generate(model, prompt, min(n_new, 4))
                _, got = engine.generate(model, prompt, min(n_new, 4))
                r["trace_root_equal"] = want.root() == got.root()
                r["weights_on_device_bytes"] = engine.device_bytes
                rows["pycuda"] = r
    finally:
        if gpu is not None:
            gpu.close()

    lib_done = False
    for lib, fn in (("torch", _torch_run), ("cupy", _cupy_run)):
        if info is None:
            skipped[lib] = f"no GPU: {why}"
            continue
        try:
            rows[f"{lib}-{args.dtype}"] = fn(model, prompt, n_new, args.dtype)
            lib_done = True
            break
        except ImportError as exc:
            skipped[lib] = f"not importable: {exc}"
        except Exception as exc:
            skipped[lib] = f"{type(exc).__name__}: {exc}"
    ratio = None
    lib_row = next((v for k, v in rows.items() if k.startswith(("torch", "cupy"))), None)
    if lib_done and "pycuda" in rows and lib_row is not None:
        ratio = rows["pycuda"]["decode_tok_s"] / lib_row["decode_tok_s"]

    print(f"# {machine()}")
    print(f"# gpu: {info.device} (cc {info.compute_capability})" if info is not None else f"# gpu: none ({why})")
    print(f"# model: {args.preset} random weights, prompt {args.prompt}, new {n_new}")
    print(f"{'path':<18} {'prefill ms':>11} {'decode tok/s':>13}  notes")
    for name, r in rows.items():
        notes = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("prefill_s", "decode_tok_s", "total_s"))
        print(f"{name:<18} {r['prefill_s'] * 1e3:11.1f} {r['decode_tok_s']:13.1f}  {notes}")
    for name, reason in skipped.items():
        print(f"{name:<18} skipped: {reason}")
    if ratio is not None:
        print(f"pycuda / library decode tokens/s: {ratio:.2f} (goal >= 0.5)")
    print(json.dumps({"preset": args.preset, "prompt": args.prompt, "new": n_new, "dtype": args.dtype,
                      "device": None if info is None else info.device, "rows": rows, "skipped": skipped,
                      "pycuda_over_library": ratio}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
