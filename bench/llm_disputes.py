"""``llm-generate`` disputes at SmolLM2-135M dimensions: CPU and witness bytes of one step check.

    .venv/bin/python -m bench.llm_disputes [--reps 5] [--positions 0,255,511,MAX] [--json out.json]

A random model with SmolLM2-135M's shape (dim 576, 9 heads / 3 KV heads of 64, ffn 1536, 30 layers,
vocab 49152, tied embeddings, max_ctx 1024: about 136 MB) is built in memory as a canonical model file
(random int8 weights, random row scales) with its chunk root. For each measured step a witness is
fabricated the way a challenger builds it (``state.market.llm_disputes.step_proof_body``): the step's
inputs are random int32 outputs of the right shapes, every other step digest of the positions involved
is random, the rows carry the step roots of those digests, and the weights are the real model chunks
with their proofs. Measured (``time.thread_time`` of the measuring thread, median and worst of
``--reps``): the signed transaction's decode + signature check + static body check, and the chain's
judgement (``judge_step_proof``: every Merkle proof, the chunk proofs, ``run_step``). Printed next to
the dispute work units the chain charges for it (``step_check_bounds``: the goal is <= 1 µs per DWU)
and the witness bound it sizes by. Goals: <= 50 ms of CPU and <= 1 MiB of witness per transaction.

Attention is measured at the last position a challengeable job can have (``MAX``: its costliest step
check within ``MAX_LLM_DISPUTE_WORK`` and 1 MiB; a longer job takes no challenge window) and at the last
position the 1 MiB witness bound alone would allow (``WIT``), the weight steps at their largest blocks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time

import numpy as np

from state.crypto import SigningKey
from state.kinds import llm_generate as lg
from state.kinds import llm_trace as lt
from state.llm.config import LlamaConfig
from state.llm.generate import output_bytes
from state.llm.modelfile import GROUP, encode_i32, encode_q8r, layout, split_chunks
from state.llm.steps import TOPK, Op, StepId, blocks, dependencies, output_shape
from state.market import llm_disputes as ld
from state.types import Transaction, merkle_root

SMOL = LlamaConfig(
    vocab=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64, ffn_dim=1536, max_ctx=1024,
    rope_base=100000, norm_eps_num=1, norm_eps_den=100000, tied_embeddings=True, bos_id=1, eos_id=2,
)
N_PROMPT = 16


def model_file(cfg: LlamaConfig, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    parts = []
    for spec in layout(cfg):
        if spec.dtype == "i32":
            parts.append(encode_i32(np.full(spec.shape, 1 << 16, dtype=np.int64)))
            continue
        rows, k = spec.shape
        scale = rng.integers(1 << 16, 1 << 20, rows, dtype=np.int64)
        sub = rng.integers(1, 256, (rows, -(-k // GROUP)), dtype=np.uint8)
        q = rng.integers(-127, 128, (rows, k), dtype=np.int8)
        parts.append(encode_q8r(scale, sub, q))
    return b"".join(parts) + b"tokenizer"


class Fake:
    """Random committed digests and outputs for the positions a step proof touches."""

    def __init__(self, cfg: LlamaConfig, step: StepId, rows: int, rng: np.random.Generator) -> None:
        self.cfg, self.rng = cfg, rng
        deps = dependencies(cfg, step, N_PROMPT)
        self.outputs: dict[StepId, bytes] = {}
        for d in deps:
            self.outputs[d] = self._output(d)
        self.special = {d: lt.output_digest(b) for d, b in self.outputs.items()}
        self.special[step] = hashlib.sha256(b"claimed").digest()
        self._digests: dict[int, list[bytes]] = {}
        need = {d.token for d in deps} | {step.token}
        first = min(need)
        self.rows = []
        for s in range(rows):
            if first <= s <= step.token:
                root = lt.step_root(cfg, N_PROMPT, s, self.digests(s))
            else:
                root = hashlib.sha256(b"row%d" % s).digest()
            self.rows.append(lt.Row(s, 1, 2 if s >= N_PROMPT - 1 else -1, root).encode())

    def _output(self, d: StepId) -> bytes:
        shape = output_shape(self.cfg, d)
        if d.op == Op.LOGITS:
            r0, r1 = blocks(self.cfg, Op.LOGITS)[d.block]
            vals = np.sort(self.rng.integers(-(1 << 20), 1 << 20, shape[1]))[::-1]
            idx = np.sort(self.rng.choice(np.arange(r0, r1), shape[1], replace=False))
            return output_bytes(np.stack([vals, idx]).astype(np.int32))
        if d.op == Op.SAMPLE:
            return output_bytes(np.array([7], dtype=np.int32))
        return output_bytes(self.rng.integers(-(1 << 18), 1 << 18, shape).astype(np.int32))

    def digests(self, s: int) -> list[bytes]:
        if s not in self._digests:
            steps = lt.position_steps(self.cfg, N_PROMPT, s)
            rnd = self.rng.bytes(32 * len(steps))
            self._digests[s] = [self.special.get(st, rnd[32 * i : 32 * i + 32]) for i, st in enumerate(steps)]
        return self._digests[s]


def measure(cfg, mv, chunks, leaf_hashes, step: StepId, rows: int, reps: int, key: SigningKey) -> dict:
    rng = np.random.default_rng(step.token * 1000 + int(step.op))
    fake = Fake(cfg, step, rows, rng)
    body = ld.step_proof_body(
        b"\x11" * 32, 0, cfg, N_PROMPT, fake.rows, fake.digests, fake.outputs.__getitem__, step, chunks,
        chunk_leaf_hashes=leaf_hashes,
    )
    tx = Transaction.create(key, "bench", "llm_step_proof", 0, 1, body)
    result_root = merkle_root(fake.rows)
    params = {"model": b"\x00" * 32, "prompt": [1] * N_PROMPT, "max_new_tokens": rows - N_PROMPT + 1,
              "sampling": {"mode": "greedy"}}
    witness, work = lg.step_check_bounds(mv, N_PROMPT, rows, step)
    times_decode, times_judge = [], []
    verdict = None
    for _ in range(reps):
        c0 = time.thread_time()
        t2 = Transaction.decode(tx.raw)
        if not t2.verify_signature():
            raise SystemExit("signature")
        ld.check_llm_step_proof(t2.body)
        c1 = time.thread_time()
        verdict = ld.judge_step_proof(mv, params, rows, result_root, fake.rows[step.token], t2.body)
        c2 = time.thread_time()
        times_decode.append((c1 - c0) * 1e3)
        times_judge.append((c2 - c1) * 1e3)
    total = [a + b for a, b in zip(times_decode, times_judge, strict=True)]
    return {
        "step": repr(step),
        "tx_bytes": len(tx.raw),
        "witness_bound": witness,
        "work_dwu": work,
        "decode_ms": round(statistics.median(times_decode), 2),
        "judge_ms": round(statistics.median(times_judge), 2),
        "total_ms": round(statistics.median(total), 2),
        "worst_ms": round(max(total), 2),
        "us_per_dwu": round(statistics.median(total) * 1e3 / work, 3),
        "verdict": verdict,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--positions", default="16,255,MAX,WIT")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    cfg = SMOL
    t0 = time.time()
    data = model_file(cfg)
    chunks = split_chunks(data)
    leaf_hashes = [lt.leaf_hash(c) for c in chunks]
    root = merkle_root(chunks)
    mv = lg.ModelView(cfg, len(data), root)
    print(f"model: {len(data) / 2**20:.1f} MiB, {len(chunks)} chunks, built in {time.time() - t0:.1f} s; "
          f"steps per position: {lt.step_count(cfg, N_PROMPT, 0)} (prompt) / {lt.max_step_count(cfg)} (with head)")
    # the last position whose costliest step proof stays within MAX_LLM_WITNESS
    rows_max = cfg.max_ctx
    while True:
        w, work = lg.position_bounds(mv, N_PROMPT, rows_max, rows_max - 1)
        if w <= lg.MAX_LLM_WITNESS and work <= lg.MAX_LLM_DISPUTE_WORK:
            break
        rows_max -= 1
    wit_rows = cfg.max_ctx
    while lg.position_bounds(mv, N_PROMPT, wit_rows, wit_rows - 1)[0] > lg.MAX_LLM_WITNESS:
        wit_rows -= 1
    print(f"largest challengeable job: {rows_max} rows = prompt + max_new_tokens - 1 (work <= "
          f"{lg.MAX_LLM_DISPUTE_WORK} DWU; the witness bound alone would allow {wit_rows}); llm_steps "
          f"witness {lg.steps_witness(cfg)} bytes, {lg.steps_work(cfg)} DWU")
    key = SigningKey.from_seed(b"\x01" * 32)
    out = []
    named = {"MAX": rows_max - 1, "WIT": wit_rows - 1}
    positions = [named[p] if p in named else int(p) for p in a.positions.split(",")]
    last = cfg.n_layers - 1
    for t in positions:
        rows = max(rows_max, t + 1)  # (the WIT case is beyond the work cap: measured to show why)
        cases = [StepId(t, last, Op.ATTN, cfg.n_kv_heads - 1)]
        if t == positions[0]:
            cases += [
                StepId(t, 0, Op.EMBED),
                StepId(t, last, Op.Q, 0),
                StepId(t, last, Op.O, 0),
                StepId(t, last, Op.RESID_ATTN),
                StepId(t, last, Op.FFN_NORM),
                StepId(t, last, Op.SWIGLU, 0),
                StepId(t, last, Op.DOWN, 0),
                StepId(t, 0, Op.FINAL_NORM),
                StepId(t, 0, Op.LOGITS, 0),
                StepId(t, 0, Op.SAMPLE),
            ]
        for s in cases:
            r = measure(cfg, mv, chunks, leaf_hashes, s, rows, a.reps, key)
            r["position"] = t
            out.append(r)
            print(f"{r['step']:<34} tx {r['tx_bytes']:>9,} B (bound {r['witness_bound']:>9,})  "
                  f"decode {r['decode_ms']:6.2f} ms  judge {r['judge_ms']:6.2f} ms  total {r['total_ms']:6.2f} "
                  f"(worst {r['worst_ms']:6.2f}) ms  {r['work_dwu']:>7,} DWU  {r['us_per_dwu']:.3f} µs/DWU")
    worst = max(out, key=lambda r: r["total_ms"])
    big = max(out, key=lambda r: r["tx_bytes"])
    print(f"worst step check: {worst['step']} {worst['total_ms']} ms (goal <= 50 ms); largest transaction: "
          f"{big['step']} {big['tx_bytes']:,} bytes (goal <= {lg.MAX_LLM_WITNESS:,}); TOPK {TOPK}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"cases": out, "rows_max": rows_max}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
