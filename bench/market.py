"""The compute market on a 4-node testnet (separate processes, libp2p on loopback): jobs/s from submit to
settled and the median blocks from submit to settled, for small jobs.

Nodes: node0 and node1 are validators, node2 and node3 run the miner role (NumPy backend). Clients
(faucet accounts) submit small `matmul-u32` / `hash-chain` jobs through node0 at a fixed rate; each job is
followed until its payment is released.

    .venv/bin/python -m bench.market [--jobs 60] [--rate 4] [--block-interval-ms 500]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from gpu.kinds import get_kind
from state import market
from state.types import Transaction
from testnet.network import create

from .common import free_base_port, machine

SMALL = {
    "matmul-u32": {"m": 32, "n": 32, "k": 32},
    "hash-chain": {"chains": 64, "iterations": 100},
}


def run(jobs: int, rate: float, interval_ms: int, bid_window: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        base = free_base_port(4)
        net = create(Path(tmp) / "net", nodes=4, base_port=base, block_interval_ms=interval_ms, validators=2,
                     miners=[2, 3], miner_prices={2: ["matmul-u32=1000", "hash-chain=1000"],
                                                  3: ["matmul-u32=1200", "hash-chain=1200"]})
        try:
            for n in net.nodes:
                net.start(n, ["--log-level", "warning"])
            net.wait_finalized(2, timeout=120)
            node0 = net.nodes[0]
            deadline = time.monotonic() + 60
            while len(net.rpc(node0, "market_listMiners")["miners"]) < 2 and time.monotonic() < deadline:
                time.sleep(0.3)
            keys = net.faucet_keys()
            submitted: dict[str, tuple[float, int]] = {}
            t0 = time.monotonic()
            for i in range(jobs):
                key = keys[i % len(keys)]
                kind = "matmul-u32" if i % 2 == 0 else "hash-chain"
                params = {**SMALL[kind], "seed": i.to_bytes(32, "big")}
                body = market.job_submit_body(kind, 1, params, max_price=2000,
                                              max_units=get_kind(kind).work_units(params),
                                              bid_window=bid_window, deadline=30)
                tx = Transaction.create(key, net.chain_id, "job_submit", i // len(keys), 1000, body)
                res = net.rpc(node0, "tx_submit", tx="0x" + tx.raw.hex())
                submitted[res["hash"]] = (time.monotonic(), net.rpc(node0, "chain_getHead")["height"])
                wait = t0 + (i + 1) / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            settled: dict[str, tuple[float, int, str]] = {}
            deadline = time.monotonic() + 180
            while len(settled) < jobs and time.monotonic() < deadline:
                for job_id in list(submitted):
                    if job_id in settled:
                        continue
                    try:
                        job = net.rpc(node0, "market_getJob", job_id=job_id)
                    except Exception:
                        continue  # not included yet
                    if job["payment"] != "escrowed" and job["state"] in ("COMPLETED", "FAILED", "EXPIRED"):
                        settled[job_id] = (time.monotonic(), job["settle_height"], job["state"])
                time.sleep(0.25)
            done = [j for j, s in settled.items() if s[2] == "COMPLETED"]
            secs = [settled[j][0] - submitted[j][0] for j in done]
            blocks = [settled[j][1] - submitted[j][1] for j in done]
            span = max(settled[j][0] for j in done) - t0 if done else 0
            return {
                "jobs": jobs,
                "completed": len(done),
                "other": {s[2] for s in settled.values()} - {"COMPLETED"},
                "jobs_per_s": len(done) / span if span else 0,
                "median_s": statistics.median(secs) if secs else 0,
                "median_blocks": statistics.median(blocks) if blocks else 0,
            }
        finally:
            for n in net.nodes:
                net.stop(n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=60)
    ap.add_argument("--rate", type=float, default=4.0, help="jobs submitted per second")
    ap.add_argument("--block-interval-ms", type=int, default=500)
    ap.add_argument("--bid-window", type=int, default=3)
    args = ap.parse_args()
    r = run(args.jobs, args.rate, args.block_interval_ms, args.bid_window)
    print(f"machine: {machine()}; 4 nodes (2 validators, 2 NumPy miners), block interval {args.block_interval_ms} ms,"
          f" bid window {args.bid_window} blocks")
    print(f"jobs {r['jobs']}  completed {r['completed']}  other final states {sorted(r['other']) or '-'}")
    print(f"throughput {r['jobs_per_s']:.2f} jobs/s submit->settled; median {r['median_s']:.2f} s = "
          f"{r['median_blocks']:.0f} blocks from submit to settled")


if __name__ == "__main__":
    main()
