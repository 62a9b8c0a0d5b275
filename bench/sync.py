"""Sync speed: a fresh node joins a network that already finalized N blocks and catches up by range
sync over libp2p; reports blocks/s and tx/s of the replay against the rate the chain produced them.

    .venv/bin/python -m bench.sync [--blocks 2000] [--txs-per-block 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from testnet.load import run_load
from testnet.network import create

from .common import free_base_port, machine


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=2000)
    ap.add_argument("--block-interval-ms", type=int, default=50)
    ap.add_argument("--tps", type=float, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        net = create(Path(tmp) / "net", nodes=4, base_port=free_base_port(4),
                     block_interval_ms=args.block_interval_ms,
                     params={"timeout_propose_ms": 1000, "timeout_vote_ms": 500, "timeout_delta_ms": 250})
        late = net.nodes[3]
        try:
            for n in net.nodes[:3]:
                net.start(n, ["--log-level", "warning"])
            net.wait_finalized(1, timeout=120, nodes=net.nodes[:3])
            t0 = time.time()
            h0 = net.rpc(net.nodes[0], "chain_getHead")["finalized_height"]
            txs = 0
            while net.rpc(net.nodes[0], "chain_getHead")["finalized_height"] < args.blocks:
                rep = run_load(net, tps=args.tps, seconds=5, settle=10, node_indices=[0, 1, 2])
                txs += rep.committed
            produce_s = time.time() - t0
            target = net.rpc(net.nodes[0], "chain_getHead")["finalized_height"]
            produced = target - h0
            t1 = time.time()
            net.start(late, ["--log-level", "info"])
            net.wait_finalized(target, timeout=1800, nodes=[late])
            sync_s = time.time() - t1
        finally:
            for n in net.nodes:
                net.stop(n)
    prod_rate = produced / produce_s
    sync_rate = target / sync_s
    print(f"machine: {machine()}")
    print(f"produced: {produced} blocks, {txs} txs in {produce_s:.1f} s ({prod_rate:.1f} blocks/s)")
    print(f"synced:   {target} blocks, {txs} txs in {sync_s:.1f} s incl. start-up "
          f"({sync_rate:.1f} blocks/s, {txs / sync_s:.0f} tx/s)")
    print(f"sync / production speed: {sync_rate / prod_rate:.1f}x (goal >= 3x) -> "
          f"{'PASS' if sync_rate >= 3 * prod_rate else 'MISS'}")


if __name__ == "__main__":
    main()
