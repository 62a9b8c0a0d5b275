"""Shared helpers of the multi-process network tests: free ports, a network fixture that stops every
node it started (by pid), bounded waits and the no-fork check."""

from __future__ import annotations

import time

from testnet.network import Network, NodeInfo
from testnet.ports import free_base_port

__all__ = ["FAST", "assert_no_fork", "free_base_port", "head", "log_tails", "wait_heights"]

FAST = {"timeout_propose_ms": 800, "timeout_vote_ms": 300, "timeout_delta_ms": 200}


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
    heights = [head(net, n) for n in nodes]
    raise AssertionError(f"not all of {[n.index for n in nodes]} reached {height}: {heights}\n"
                         + log_tails([n for n, h in zip(nodes, heights, strict=True) if h < height]))


def log_tails(nodes: list[NodeInfo], lines: int = 25) -> str:
    """The last ``lines`` lines of each node's log (and whether it is still running): what a failed wait
    prints so that a CI failure says why a node fell behind."""
    out = []
    for n in nodes:
        try:
            tail = n.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError as e:
            tail = [f"(no log: {e})"]
        out.append(f"--- node {n.index} (pid {n.pid()}) log tail:\n" + "\n".join(tail))
    return "\n".join(out)


def assert_no_fork(net: Network, nodes: list[NodeInfo] | None = None) -> int:
    """Every height finalized by two nodes has the same block hash on both. Returns the common height."""
    nodes = [n for n in (nodes or net.nodes) if head(net, n) >= 0]
    top = min(head(net, n) for n in nodes)
    for h in range(1, top + 1):
        hashes = {net.rpc(n, "chain_getBlock", height=h)["hash"] for n in nodes}
        assert len(hashes) == 1, f"fork at height {h}: {hashes}"
    return top


