"""Shared helpers of the multi-process network tests: free ports, a network fixture that stops every
node it started (by pid), bounded waits and the no-fork check."""

from __future__ import annotations

import random
import socket
import time

from testnet.network import Network, NodeInfo

FAST = {"timeout_propose_ms": 800, "timeout_vote_ms": 300, "timeout_delta_ms": 200}


def free_base_port(nodes: int) -> int:
    """A base port such that base+10i and base+10i+2 are free for every node."""
    for _ in range(200):
        base = random.randrange(30_000, 60_000, 10)
        ok = True
        for i in range(nodes):
            for off in (0, 2):
                with socket.socket() as s:
                    try:
                        s.bind(("127.0.0.1", base + 10 * i + off))
                    except OSError:
                        ok = False
        if ok:
            return base
    raise RuntimeError("no free port range")


def head(net: Network, n: NodeInfo) -> int:
    try:
        return net.rpc(n, "chain_getHead", timeout=3)["finalized_height"]
    except Exception:
        return -1


def wait_heights(net: Network, nodes: list[NodeInfo], height: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(head(net, n) >= height for n in nodes):
            return
        time.sleep(0.1)
    raise AssertionError(f"not all of {[n.index for n in nodes]} reached {height}: "
                         f"{[head(net, n) for n in nodes]}")


def assert_no_fork(net: Network, nodes: list[NodeInfo] | None = None) -> int:
    """Every height finalized by two nodes has the same block hash on both. Returns the common height."""
    nodes = [n for n in (nodes or net.nodes) if head(net, n) >= 0]
    top = min(head(net, n) for n in nodes)
    for h in range(1, top + 1):
        hashes = {net.rpc(n, "chain_getBlock", height=h)["hash"] for n in nodes}
        assert len(hashes) == 1, f"fork at height {h}: {hashes}"
    return top


