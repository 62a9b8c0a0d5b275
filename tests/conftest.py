"""Fixtures that run real node processes (see nodeproc.py); every process is killed by pid in teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from net_helpers import FAST, free_base_port
from nodeproc import NodeProcess, init_home

from testnet.network import Network, create


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """``make(home, init=True, start=True)``: a NodeProcess on ``home`` (a fast-block dev home is created
    first unless ``init`` is false or it exists), started and ready unless ``start`` is false."""
    procs: list[NodeProcess] = []

    def make(home: Path | None = None, *, init: bool = True, start: bool = True, **kw) -> NodeProcess:
        home = home or tmp_path / "home"
        if init and not (home / "genesis.json").exists():
            init_home(home)
        node = NodeProcess(home, **kw)
        procs.append(node)
        if start:
            node.start()
            node.wait_ready()
        return node

    try:
        yield make
    finally:
        for p in procs:
            p.close()


def _started(home, extra_args: list[str] | None = None) -> Iterator[NodeProcess]:
    node = NodeProcess(home, extra_args=extra_args)
    try:
        node.start()
        node.wait_ready()
        yield node
    finally:
        node.close()


@pytest.fixture(scope="module")
def dev_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One started dev node (200 ms blocks) shared by a test module."""
    yield from _started(init_home(tmp_path_factory.mktemp("devnode") / "home"))


@pytest.fixture(scope="module")
def dev_miner_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One started dev node that also runs the miner role (``--miner``), shared by a test module."""
    yield from _started(init_home(tmp_path_factory.mktemp("devminer") / "home"), ["--miner"])


@pytest.fixture
def make_net(tmp_path: Path) -> Iterator:
    nets: list[Network] = []

    def make(
        nodes: int = 4,
        *,
        block_interval_ms: int = 250,
        start: bool = True,
        params: dict | None = None,
        env: dict[int, dict[str, str]] | None = None,
        **create_args: Any,
    ) -> Network:
        net = create(tmp_path / f"net{len(nets)}", nodes=nodes, base_port=free_base_port(nodes),
                     block_interval_ms=block_interval_ms, params=params or FAST, **create_args)
        nets.append(net)
        if start:
            for n in net.nodes:
                net.start(n, env=(env or {}).get(n.index))
        return net

    yield make
    for net in nets:
        for n in net.nodes:
            net.stop(n, timeout=5)
