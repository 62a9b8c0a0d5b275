"""Local multi-node networks on loopback: generate homes with one shared genesis, start/stop nodes
as separate processes, report status, and generate load. Used by the ``testnet/*`` scripts, tests and
benchmarks.

Layout of ``--dir`` (default ``./testnet-data``)::

    network.json            nodes, ports, peer ids, chain id, faucet seeds
    node<i>/                a full node home (config.toml, genesis.json, keys/, data/)
    node<i>/node.log        the node's log
    node<i>/node.pid        pid while running
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from node.config import load_config, render_default_toml
from node.home import AIT, Home, init_home
from p2p.identity import peer_id_from_ed25519
from state.address import encode_address
from state.crypto import SigningKey
from state.genesis import ChainParams, Genesis, GenesisError, GenesisValidator, now_ms

DEFAULT_DIR = Path("testnet-data")
FAUCET_ACCOUNTS = 64
FAUCET_FUNDS = 1_000_000 * AIT


class TestnetError(Exception):
    __test__ = False  # not a pytest test class
    pass


@dataclass
class NodeInfo:
    index: int
    home: Path
    p2p_port: int
    rpc_port: int
    peer_id: str
    host: str = "127.0.0.1"  # the address it listens on (another one in its own network namespace)
    netns: str | None = None  # network namespace it runs in (testnet/chaos partitions), or None

    @property
    def rpc_url(self) -> str:
        return f"http://{self.host}:{self.rpc_port}/rpc"

    @property
    def multiaddr(self) -> str:
        return f"/ip4/{self.host}/tcp/{self.p2p_port}/p2p/{self.peer_id}"

    @property
    def log(self) -> Path:
        return self.home / "node.log"

    @property
    def pidfile(self) -> Path:
        return self.home / "node.pid"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return pid


class Network:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        meta_path = directory / "network.json"
        if not meta_path.exists():
            raise TestnetError(f"no network in {directory} (run testnet/up first)")
        self.meta = json.loads(meta_path.read_text())
        self.nodes = [
            NodeInfo(n["index"], directory / n["home"], n["p2p_port"], n["rpc_port"], n["peer_id"],
                     n.get("host", "127.0.0.1"), n.get("netns"))
            for n in self.meta["nodes"]
        ]
        self.chain_id: str = self.meta["chain_id"]
        self._clients: dict[str, httpx.Client] = {}  # kept-alive RPC connections, by node URL

    def node(self, which: str | int) -> NodeInfo:
        s = str(which).removeprefix("node")
        if not s.isdigit() or int(s) >= len(self.nodes):
            raise TestnetError(f"unknown node {which!r}: have node0..node{len(self.nodes) - 1}")
        return self.nodes[int(s)]

    def faucet_keys(self) -> list[SigningKey]:
        return [SigningKey.from_seed(bytes.fromhex(s)) for s in self.meta["faucet_seeds"]]

    # processes ----------------------------------------------------------------------------------
    def start(
        self, node: NodeInfo, extra_args: list[str] | None = None, env: dict[str, str] | None = None,
        *, wrapper_args: list[str] | None = None,
    ) -> int:
        """Start ``node`` (``env`` adds environment variables). With ``wrapper_args`` (options of
        ``testnet/faults.py``, e.g. ``faults.wrapper_args(double_sign=True)``) the node runs behind
        ``python -m testnet.faults``: a byzantine node."""
        if node.pid() is not None:
            return node.pid()  # already running
        entry = ["testnet.faults", *wrapper_args, "--"] if wrapper_args else ["node.cli"]
        prefix = ["ip", "netns", "exec", node.netns] if node.netns else []  # exec: the pid stays the node's
        logf = open(node.log, "ab")
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", *entry, "run", "--home", str(node.home), *(extra_args or [])],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, **env} if env else None,
        )
        logf.close()
        node.pidfile.write_text(str(proc.pid))
        return proc.pid

    def stop(self, node: NodeInfo, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        pid = node.pid()
        if pid is None:
            node.pidfile.unlink(missing_ok=True)
            return
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and node.pid() is not None:
            _reap(pid)
            time.sleep(0.05)
        if node.pid() is not None:
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
        node.pidfile.unlink(missing_ok=True)

    def _client(self, node: NodeInfo) -> httpx.Client:
        c = self._clients.get(node.rpc_url)
        if c is None:
            c = self._clients[node.rpc_url] = httpx.Client()
        return c

    def rpc(self, node: NodeInfo, method: str, timeout: float = 5.0, **params):
        """One JSON-RPC call over a kept-alive connection to ``node`` (re-opened once if the node closed
        it, e.g. after an idle timeout or a restart)."""
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        try:
            r = self._client(node).post(node.rpc_url, json=body, timeout=timeout)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.ConnectError):
            self._clients.pop(node.rpc_url).close()
            r = self._client(node).post(node.rpc_url, json=body, timeout=timeout)
        obj = r.json()
        if "error" in obj:
            raise TestnetError(f"node{node.index} {method}: {obj['error'].get('message')}")
        return obj["result"]

    def status_rows(self) -> list[dict]:
        rows = []
        for n in self.nodes:
            row: dict = {"node": f"node{n.index}", "pid": n.pid(), "rpc": n.rpc_url}
            try:
                head = self.rpc(n, "chain_getHead", timeout=2)
                net = self.rpc(n, "net_info", timeout=2)
                row.update(height=head["height"], hash=head["hash"], finalized=head["finalized_height"],
                           peers=net["peers"])
            except (httpx.HTTPError, TestnetError, ValueError):
                row.update(height=None, hash=None, finalized=None, peers=None)
            rows.append(row)
        return rows

    def wait_finalized(self, min_height: int, timeout: float, nodes: list[NodeInfo] | None = None) -> None:
        deadline = time.monotonic() + timeout
        targets = nodes or self.nodes
        while time.monotonic() < deadline:
            ok = 0
            for n in targets:
                try:
                    if self.rpc(n, "chain_getHead", timeout=2)["finalized_height"] >= min_height:
                        ok += 1
                except (httpx.HTTPError, TestnetError, ValueError):
                    pass
            if ok == len(targets):
                return
            time.sleep(0.2)
        raise TestnetError(f"nodes did not reach finalized height {min_height} within {timeout:.0f} s")


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def create(
    directory: Path, *, nodes: int, base_port: int = 26600, block_interval_ms: int = 1000,
    consensus: str = "poa", chain_id: str | None = None, params: dict | None = None,
    validators: int | None = None, miners: list[int] | tuple[int, ...] = (), verifiers: list[int] | tuple[int, ...] = (),
    miner_prices: dict[int, list[str]] | None = None, validator_power: int = 1,
    hosts: list[str] | None = None, netns: list[str] | None = None, config_overrides: dict | None = None,
) -> Network:
    """Generate homes for ``nodes`` nodes sharing one genesis. The first ``validators`` (default: all)
    are genesis validators with power ``validator_power`` (PoA authorities, PoS validators with power × power_unit staked,
    or hybrid authorities); nodes listed in ``miners`` run the miner role (``verifiers`` also re-check
    other miners' results). ``params`` is the genesis ``params`` JSON (sections ``market``/``staking``
    allowed). ``hosts``/``netns`` put node *i* on address ``hosts[i]`` in network namespace ``netns[i]``
    (made by the caller, e.g. testnet/chaos); ``config_overrides`` sets ``{section: {key: value}}`` in
    every node's config.toml."""
    if (directory / "network.json").exists():
        raise TestnetError(f"{directory} already holds a network (testnet/down --clean removes it)")
    if nodes < 1:
        raise TestnetError("--nodes must be at least 1")
    try:
        chain_params = ChainParams.from_json({"block_interval_ms": block_interval_ms, **(params or {})})
    except GenesisError as exc:
        raise TestnetError(str(exc)) from None
    directory.mkdir(parents=True, exist_ok=True)
    infos: list[NodeInfo] = []
    val_list: list[GenesisValidator] = []
    val_keys: list[bytes] = []
    funded: list[bytes] = []
    for i in range(nodes):
        home = directory / f"node{i}"
        init_home(home, moniker=f"node{i}")
        h = Home(home)
        from node.keystore import read_plain_key_file

        node_key = read_plain_key_file(h.node_key_path)
        val_key = read_plain_key_file(h.validator_key_path)
        if validators is None or i < validators:
            val_list.append(GenesisValidator(val_key.public_key, validator_power, f"node{i}"))
        val_keys.append(val_key.public_key)
        if i in miners or i in verifiers:  # miner accounts are funded in genesis so they can bond at once
            funded.append(h.miner_key().public_key)
        infos.append(NodeInfo(i, home, base_port + 10 * i, base_port + 10 * i + 2, peer_id_from_ed25519(node_key.public_key),
                              hosts[i] if hosts else "127.0.0.1", netns[i] if netns else None))
    faucet = [secrets.token_bytes(32) for _ in range(FAUCET_ACCOUNTS)]
    genesis = Genesis(
        chain_id=chain_id or f"aitbc-testnet-{secrets.token_hex(3)}",
        genesis_time=now_ms(),
        consensus=consensus,
        params=chain_params,
        accounts=tuple(sorted([(SigningKey.from_seed(s).public_key, FAUCET_FUNDS) for s in faucet]
                              + [(pk, FAUCET_FUNDS) for pk in funded])),
        validators=tuple(val_list),
    )
    for info in infos:
        h = Home(info.home)
        genesis.save(h.genesis_path)
        cfg = load_config(h.config_path, env={})
        cfg.node.moniker = f"node{info.index}"
        cfg.rpc.port = info.rpc_port
        cfg.rpc.host = info.host
        cfg.p2p.enabled = True
        cfg.p2p.host = info.host
        cfg.p2p.port = info.p2p_port
        cfg.p2p.bootstrap = [o.multiaddr for o in infos if o.index != info.index]
        if info.index in miners or info.index in verifiers:
            cfg.miner.enabled = True
            cfg.miner.verify = info.index in verifiers
            cfg.miner.prices = list((miner_prices or {}).get(info.index, []))
        for section, values in (config_overrides or {}).items():
            for key, value in values.items():
                if hasattr(getattr(cfg, section), key):  # keys an older node does not know are skipped
                    setattr(getattr(cfg, section), key, value)
        h.config_path.write_text(render_default_toml(cfg))
    meta = {
        "chain_id": genesis.chain_id,
        "genesis_hash": genesis.hash.hex(),
        "nodes": [
            {"index": n.index, "home": n.home.name, "p2p_port": n.p2p_port, "rpc_port": n.rpc_port,
             "peer_id": n.peer_id, "host": n.host, "netns": n.netns, "validator": encode_address(v),
             "miner": encode_address(Home(n.home).miner_key().public_key) if n.index in miners or n.index in verifiers
             else None}
            for n, v in zip(infos, val_keys, strict=True)
        ],
        "faucet_seeds": [s.hex() for s in faucet],
    }
    (directory / "network.json").write_text(json.dumps(meta, indent=2))
    return Network(directory)
