"""4 validators on this machine (separate processes, libp2p on loopback): finalized transfer
throughput, submit-to-finalized latency and block interval under `testnet/load`; the single-node
figure of the same load in the same run for the ratio.

    .venv/bin/python -m bench.testnet_throughput [--nodes 4] [--tps 2000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from testnet.load import run_load
from testnet.network import create

from .common import free_base_port, machine


def measure(nodes: int, tps: float, seconds: float, interval_ms: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        net = create(Path(tmp) / "net", nodes=nodes, base_port=free_base_port(nodes), block_interval_ms=interval_ms)
        try:
            for n in net.nodes:
                net.start(n, ["--log-level", "warning"])
            net.wait_finalized(2, timeout=120)
            rep = run_load(net, tps=tps, seconds=seconds, settle=60)
            return rep.to_dict()
        finally:
            for n in net.nodes:
                net.stop(n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--tps", type=float, default=2000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--block-interval-ms", type=int, default=1000)
    args = ap.parse_args()
    single = measure(1, args.tps, args.seconds, args.block_interval_ms)
    multi = measure(args.nodes, args.tps, args.seconds, args.block_interval_ms)
    print(f"machine: {machine()}; offered load {args.tps:.0f} tx/s for {args.seconds:.0f} s, "
          f"block interval {args.block_interval_ms} ms")
    print(f"{'network':<14} {'committed':>9} {'tx/s':>8} {'p50 s':>7} {'p99 s':>7} {'interval s':>10} {'rejected':>8}")
    for name, r in (("1 node", single), (f"{args.nodes} validators", multi)):
        print(f"{name:<14} {r['committed']:>9} {r['committed_tps']:>8.0f} {r['latency_p50_s']:>7.2f} "
              f"{r['latency_p99_s']:>7.2f} {r['block_interval_s']:>10.2f} {r['rejected']:>8}")
    ratio = multi["committed_tps"] / single["committed_tps"] if single["committed_tps"] else 0
    print(f"ratio {args.nodes} validators / 1 node: {ratio:.2f}")
    ok = multi["committed_tps"] >= 1500 and multi["latency_p50_s"] <= 2 * args.block_interval_ms / 1000
    print(f"goal: >= 1,500 finalized tx/s and median latency <= 2 x block interval -> {'PASS' if ok else 'MISS'}")


if __name__ == "__main__":
    main()
