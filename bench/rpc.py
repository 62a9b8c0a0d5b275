"""RPC overhead: requests/s of read methods against the trivial ``system_health`` on the same server.

    .venv/bin/python -m bench.rpc [--seconds 5] [--clients 4]

Each client is its own process with one keep-alive connection sending requests back to back.
The node's own overhead is 1 - rate(method) / rate(system_health); the goal is <= 20 %.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

from node.home import Home, init_home

from .common import RawHttp, machine, running_node


def _client(port: int, body: bytes, seconds: float, q) -> None:
    http = RawHttp(port)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        out = http.post("/rpc", body)
        if b'"result"' not in out:
            raise RuntimeError(out[:200])
        n += 1
    q.put(n / (time.perf_counter() - t0))
    http.close()


def measure(port: int, method: str, params: dict, seconds: float, clients: int) -> float:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    q: mp.Queue = mp.Queue()
    procs = [mp.Process(target=_client, args=(port, body, seconds, q)) for _ in range(clients)]
    for p in procs:
        p.start()
    rates = [q.get(timeout=seconds + 30) for _ in procs]
    for p in procs:
        p.join(10)
    return sum(rates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "home"
        init_home(root, dev=True)
        dev = Home(root).keystore.info("dev").address
        with running_node(root, Path(tmp) / "node.log") as node:
            cases = [
                ("system_health", {}),
                ("chain_getHead", {}),
                ("state_getAccount", {"address": dev}),
                ("chain_getBlock", {"height": 1}),
                ("system_health", {}),
            ]
            rates = [(m, measure(node.rpc_port, m, p, args.seconds, args.clients)) for m, p in cases]
    base = (rates[0][1] + rates[-1][1]) / 2
    print(f"machine: {machine()}; {args.clients} client processes, {args.seconds:.0f} s per method")
    print(f"{'method':<20} {'req/s':>10} {'vs health':>10}")
    for m, r in rates[1:-1]:
        print(f"{m:<20} {r:10,.0f} {r / base:10.2f}")
    print(f"{'system_health':<20} {base:10,.0f} {1.0:10.2f}   (mean of first and last run)")
    worst = min(r for _, r in rates[1:-1]) / base
    print(f"worst overhead: {(1 - worst) * 100:.1f} %  (goal <= 20 %) -> {'PASS' if worst >= 0.8 else 'MISS'}")


if __name__ == "__main__":
    main()
