"""Free loopback ports for test and benchmark networks, chosen below the kernel's ephemeral range.

A port found free by binding port 0 comes from the ephemeral range, where any outgoing connection
(a libp2p dial, an HTTP client) may take it before the node binds it. Ports below that range are only
ever taken by an explicit bind, so a range found free here stays free unless another test picks it.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 20_000


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (32768 where it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port(nodes: int = 1, *, stride: int = 10, offsets: tuple[int, ...] = (0, 2)) -> int:
    """A base port such that ``base + stride*i + off`` is free for every node ``i`` and offset ``off``
    (the testnet layout: p2p at +0, RPC at +2), below the ephemeral range where it can be."""
    span = stride * nodes
    top = ephemeral_low() - span
    for _ in range(500):
        base = random.randrange(LOWEST, top, stride) if top > LOWEST + 10 * span else \
            _ephemeral_port() // stride * stride
        if all(_free(base + stride * i + off) for i in range(nodes) for off in offsets):
            return base
    raise RuntimeError("no free port range")


def free_port() -> int:
    """One free loopback TCP port, below the ephemeral range where it can be."""
    return free_base_port(1, stride=1, offsets=(0,))


def _ephemeral_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
