"""``testnet/chaos``: a local network under load while faults from a seeded schedule hit it.

Every node runs in its own network namespace on a bridge (``10.<a>.<b>.<i+1>``), so partitions are real:
blackhole routes between the namespaces of two groups (the harness on the bridge still reaches every
node). Faults, one at a time, each held for a random time and then healed:

* ``kill``: SIGKILL, then restart; ``stop``: SIGSTOP, then SIGCONT; ``restart``: SIGTERM, then start;
* ``partition``: the nodes split into two random groups, then healed;
* ``skew``: restart with the wall clock shifted by up to ±``max_skew_ms``, then restart with the real one;
* static, for the whole run (``--byzantine``, ``--lying-miner``): the last validator double-signs its
  prevotes; node 1 is a miner whose results are wrong, node 2 a verifier that challenges them, and the
  load also submits jobs with a challenge window.

Byzantine behaviour comes from ``testnet/faults.py`` (the node has no fault switches). Checked throughout
and at the end: the same block hash at every finalized height on every node (forks = 0); every
transaction the harness saw committed is committed at the same height on every node (lost = 0); supply
conserved (balances of every account the run touches == circulating supply, and the total only changes
by what the market burned); finality back within ``resume_limit_blocks`` block intervals of every heal.
Prints a report and exits non-zero on any violation.

Needs root for the namespaces (``--no-netns`` runs on loopback without partitions).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from state import market
from state.address import decode_address, encode_address
from state.crypto import SigningKey
from state.genesis import Genesis
from state.types import Transaction, transfer

from . import faults as F
from .network import Network, NodeInfo, TestnetError, create

FAULT_KINDS = ("kill", "stop", "restart", "partition", "skew")
FEE = 1000
JOB_PARAMS = {"m": 8, "n": 8, "k": 8}


@dataclass
class ChaosConfig:
    nodes: int = 4
    duration_s: float = 120.0
    seed: int = 1
    block_interval_ms: int = 1000
    tps: float = 4.0
    consensus: str = "poa"
    faults: tuple[str, ...] = FAULT_KINDS
    byzantine: bool = False
    lying_miner: bool = False
    hold_s: tuple[float, float] = (1.0, 4.0)
    gap_s: tuple[float, float] = (0.5, 2.0)
    max_skew_ms: int = 1500
    resume_limit_blocks: int = 10
    start_allowance_s: float = 15.0  # a restarted process needs this long to load before it can vote
    netns: bool = True
    directory: Path | None = None
    base_port: int = 27600


@dataclass
class Report:
    seed: int
    duration_s: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    faults_total: int = 0
    txs_submitted: int = 0
    txs_accepted: int = 0
    txs_committed: int = 0
    txs_lost: int = 0
    jobs_submitted: int = 0
    final_height: int = 0
    heights_checked: int = 0
    forks: int = 0
    longest_stall_s: float = 0.0
    max_resume_s: float = 0.0
    max_resume_blocks: float = 0.0
    resume_s_by_fault: dict[str, float] = field(default_factory=dict)  # slowest recovery per fault kind
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def text(self) -> str:
        lines = [
            f"chaos seed {self.seed}: {self.duration_s:.0f} s, {self.faults_total} faults "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())),
            f"txs: {self.txs_submitted} submitted, {self.txs_accepted} accepted, {self.txs_committed} committed, "
            f"lost {self.txs_lost}; jobs {self.jobs_submitted}",
            f"height {self.final_height}, {self.heights_checked} heights compared on every node, forks {self.forks}",
            f"longest stall {self.longest_stall_s:.1f} s; slowest recovery after a heal {self.max_resume_s:.1f} s "
            f"({self.max_resume_blocks:.1f} block intervals); by fault: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(self.resume_s_by_fault.items())),
            "OK" if self.ok else "VIOLATIONS:\n  " + "\n  ".join(self.violations),
        ]
        return "\n".join(lines)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Namespaces:
    """One network namespace per node on a private bridge; partitions by blackhole routes."""

    def __init__(self, count: int) -> None:
        self.tag = secrets.token_hex(2)
        a, b = 100 + secrets.randbelow(100), secrets.randbelow(250)
        self.prefix = f"10.{a}.{b}"
        self.bridge = f"ab{self.tag}br"
        self.names = [f"aitbc-{self.tag}-n{i}" for i in range(count)]
        self.hosts = [f"{self.prefix}.{i + 1}" for i in range(count)]
        self.blocked: list[tuple[int, int]] = []

    def up(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.prefix}.254/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, (ns, host) in enumerate(zip(self.names, self.hosts, strict=True)):
            outer, inner = f"ab{self.tag}h{i}", f"ab{self.tag}n{i}"
            _ip("netns", "add", ns)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", ns)
            _ip("link", "set", outer, "master", self.bridge)
            _ip("link", "set", outer, "up")
            _ip("-n", ns, "addr", "add", f"{host}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def partition(self, groups: list[list[int]]) -> None:
        for ga in groups:
            for gb in groups:
                if ga is gb:
                    continue
                for i in ga:
                    for j in gb:
                        _ip("-n", self.names[i], "route", "add", "blackhole", f"{self.hosts[j]}/32")
                        self.blocked.append((i, j))

    def heal(self) -> None:
        for i, j in self.blocked:
            subprocess.run(["ip", "-n", self.names[i], "route", "del", "blackhole", f"{self.hosts[j]}/32"],
                           capture_output=True, timeout=10)
        self.blocked.clear()

    def down(self) -> None:
        self.heal()
        for ns in self.names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=10)


class Chaos:
    """One chaos run (see the module docstring)."""

    def __init__(self, cfg: ChaosConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)  # the fault schedule: drawn only by the fault loop
        self.load_rng = random.Random(cfg.seed + 1)  # which node gets each transaction
        self.report = Report(cfg.seed)
        self.lock = threading.Lock()
        self.local = threading.local()  # per-thread RPC clients
        self.stop_event = threading.Event()
        self.ns: Namespaces | None = None
        self.net: Network | None = None
        self.wrappers: dict[int, list[str]] = {}
        self.down: set[int] = set()  # killed or stopped: not polled, not sent load
        self.pending: dict[str, float] = {}  # accepted tx hash -> when
        self.committed: dict[str, int] = {}  # tx hash -> height seen
        self.canonical: dict[int, str] = {}  # height -> block hash first seen finalized
        self.checked: dict[int, int] = {}  # node -> highest height compared
        self.finalized = 0  # highest finalized height seen on any node
        self.last_progress = time.monotonic()
        self.genesis_total = 0
        self.senders: list[SigningKey] = []

    # rpc ------------------------------------------------------------------------------------------------
    def rpc(self, node: NodeInfo, method: str, timeout: float = 3.0, **params):
        """One call over this thread's kept-alive connection to ``node`` (re-opened once if it died)."""
        clients = self.local.__dict__.setdefault("clients", {})
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        for attempt in (0, 1):
            c = clients.get(node.rpc_url) or clients.setdefault(node.rpc_url, httpx.Client())
            try:
                r = c.post(node.rpc_url, json=body, timeout=timeout)
                break
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.ConnectError):
                clients.pop(node.rpc_url).close()
                if attempt:
                    raise
        obj = r.json()
        if "error" in obj:
            raise TestnetError(f"node{node.index} {method}: {obj['error'].get('message')}")
        return obj["result"]

    def live(self) -> list[NodeInfo]:
        return [n for n in self.net.nodes if n.index not in self.down]  # type: ignore[union-attr]

    def violation(self, msg: str) -> None:
        with self.lock:
            if msg not in self.report.violations:
                self.report.violations.append(msg)
        print(f"VIOLATION: {msg}", flush=True)

    # set-up -------------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        d = cfg.directory or Path(tempfile.mkdtemp(prefix="aitbc-chaos-"))
        if cfg.netns:
            if os.geteuid() != 0 or shutil.which("ip") is None:
                raise TestnetError("network namespaces need root and iproute2 (or run with --no-netns)")
            self.ns = Namespaces(cfg.nodes)
            self.ns.up()
        miners, verifiers = ([1], [2]) if cfg.lying_miner else ((), ())
        params = {"market": {"availability_response_blocks": 5}} if cfg.lying_miner else None
        self.net = create(
            d, nodes=cfg.nodes, base_port=cfg.base_port, block_interval_ms=cfg.block_interval_ms,
            consensus=cfg.consensus, validator_power=1 if cfg.consensus == "poa" else 100,
            miners=miners, verifiers=verifiers, params=params,
            hosts=self.ns.hosts if self.ns else None, netns=self.ns.names if self.ns else None,
            config_overrides={"rpc": {"rate_limit": 0, "max_connections_per_ip": 1024, "max_ws_per_ip": 256}},
        )
        self.genesis_total = Genesis.load(self.net.nodes[0].home / "genesis.json").total_supply
        if cfg.byzantine:
            self.wrappers[cfg.nodes - 1] = F.wrapper_args(double_sign=True)
        if cfg.lying_miner:
            F.write_faults(self.net.nodes[1].home / "faults.json", corrupt=True)
            self.wrappers[1] = F.wrapper_args(faults_file=self.net.nodes[1].home / "faults.json")
        for n in self.net.nodes:
            self.net.start(n, wrapper_args=self.wrappers.get(n.index))
        self.net.wait_finalized(2, timeout=120)
        self.senders = self.net.faucet_keys()[:32]

    def start_node(self, n: NodeInfo, skew_ms: int = 0) -> None:
        args = list(self.wrappers.get(n.index) or [])
        if skew_ms:
            args += ["--clock-skew-ms", str(skew_ms)]
        self.net.start(n, wrapper_args=args or None)  # type: ignore[union-attr]

    # background: load and monitoring -------------------------------------------------------------------
    def load_loop(self) -> None:
        period = 1.0 / self.cfg.tps if self.cfg.tps > 0 else None
        i = 0
        next_job = time.monotonic() + 10
        while period and not self.stop_event.wait(period):
            i += 1
            live = self.live()
            if not live:
                continue
            node = self.load_rng.choice(live)
            key = self.senders[i % len(self.senders)]
            to = self.senders[(i * 7 + 3) % len(self.senders)].public_key
            try:
                acc = self.rpc(node, "state_getAccount", address=encode_address(key.public_key))
                tx = transfer(key, self.net.chain_id, to, 1 + i % 5, acc["pending_nonce"], FEE)  # type: ignore[union-attr]
                if self.cfg.lying_miner and time.monotonic() > next_job:
                    next_job = time.monotonic() + 15
                    body = market.job_submit_body("matmul-u32", 1, {**JOB_PARAMS, "seed": secrets.token_bytes(32)},
                                                  max_price=5000, max_units=1, bid_window=4, deadline=30,
                                                  verify_rate_bps=10_000, challenge_window=20)
                    tx = Transaction.create(key, self.net.chain_id, "job_submit", acc["pending_nonce"], FEE, body)  # type: ignore[union-attr]
                    self.report.jobs_submitted += 1
                self.report.txs_submitted += 1
                res = self.rpc(node, "tx_submit", tx="0x" + tx.raw.hex())
                with self.lock:
                    self.pending[res["hash"]] = time.monotonic()
                    self.report.txs_accepted += 1
            except (httpx.HTTPError, TestnetError, ValueError, KeyError):
                continue

    def monitor_loop(self) -> None:
        while not self.stop_event.wait(0.5):
            self.poll_once()

    def poll_once(self) -> None:
        best = 0
        for n in self.live():
            try:
                head = self.rpc(n, "chain_getHead", timeout=2)
            except (httpx.HTTPError, TestnetError, ValueError):
                continue
            best = max(best, head["finalized_height"])
            self.compare_heights(n, head["finalized_height"], limit=20)
        now = time.monotonic()
        with self.lock:
            if best > self.finalized:
                self.report.longest_stall_s = max(self.report.longest_stall_s, now - self.last_progress)
                self.finalized, self.last_progress = best, now
        self.track_txs()

    def compare_heights(self, n: NodeInfo, upto: int, limit: int | None = None) -> None:
        """Compare the block hashes node ``n`` finalized since the last call with the first ones seen."""
        start = self.checked.get(n.index, 0) + 1
        stop = upto if limit is None else min(upto, start + limit - 1)
        for h in range(start, stop + 1):
            try:
                bh = self.rpc(n, "chain_getBlock", height=h)["hash"]
            except (httpx.HTTPError, TestnetError, ValueError):
                return
            with self.lock:
                first = self.canonical.setdefault(h, bh)
                if first != bh:
                    self.report.forks += 1
            if first != bh:
                self.violation(f"fork at height {h}: node{n.index} has {bh[:18]}, another node {first[:18]}")
            self.checked[n.index] = h

    def track_txs(self, limit: int = 40) -> None:
        live = self.live()
        if not live:
            return
        with self.lock:
            hashes = list(self.pending)[:limit]
        for h in hashes:
            try:
                st = self.rpc(live[hash(h) % len(live)], "chain_getTransaction", hash=h, timeout=2)
            except (httpx.HTTPError, TestnetError, ValueError):
                continue
            if st["status"] in ("committed", "failed"):
                with self.lock:
                    self.pending.pop(h, None)
                    self.committed[h] = st["block_height"]

    # faults --------------------------------------------------------------------------------------------
    def inject(self, kind: str) -> None:
        net, rng, cfg = self.net, self.rng, self.cfg
        nodes = net.nodes  # type: ignore[union-attr]
        victim = rng.choice(nodes)
        hold = rng.uniform(*cfg.hold_s)
        print(f"[{time.strftime('%H:%M:%S')}] {kind} " + (f"node{victim.index}" if kind != "partition" else ""),
              flush=True)
        if kind == "kill":
            self.down.add(victim.index)
            net.stop(victim, sig=signal.SIGKILL, timeout=5)  # type: ignore[union-attr]
            time.sleep(hold)
            self.start_node(victim)
            self.down.discard(victim.index)
        elif kind == "stop":
            pid = victim.pid()
            if pid is None:
                return
            self.down.add(victim.index)
            os.kill(pid, signal.SIGSTOP)
            time.sleep(hold)
            os.kill(pid, signal.SIGCONT)
            self.down.discard(victim.index)
        elif kind == "restart":
            self.down.add(victim.index)
            net.stop(victim, timeout=20)  # type: ignore[union-attr]
            self.start_node(victim)
            self.down.discard(victim.index)
        elif kind == "skew":
            skew = rng.choice((-1, 1)) * rng.randint(100, cfg.max_skew_ms)
            self.down.add(victim.index)
            net.stop(victim, timeout=20)  # type: ignore[union-attr]
            self.start_node(victim, skew_ms=skew)
            self.down.discard(victim.index)
            time.sleep(hold)
            net.stop(victim, timeout=20)  # type: ignore[union-attr]
            self.start_node(victim)
        elif kind == "partition":
            if self.ns is None:
                return
            order = list(range(len(nodes)))
            rng.shuffle(order)
            cut = rng.randint(1, len(order) // 2)
            groups = [sorted(order[:cut]), sorted(order[cut:])]
            print(f"    groups {groups}", flush=True)
            self.ns.partition(groups)
            time.sleep(hold)
            self.ns.heal()
        self.report.faults[kind] = self.report.faults.get(kind, 0) + 1
        self.report.faults_total += 1
        took = self.wait_resume()
        by = self.report.resume_s_by_fault
        by[kind] = max(by.get(kind, 0.0), took)

    def wait_resume(self) -> float:
        """After a heal: finality must advance again within resume_limit_blocks block intervals (plus
        the time a restarted process needs to load). Returns how long it took."""
        interval = self.cfg.block_interval_ms / 1000
        limit = self.cfg.resume_limit_blocks * interval + self.cfg.start_allowance_s
        healed, base = time.monotonic(), self.finalized
        while time.monotonic() - healed < limit:
            if self.finalized > base:
                took = time.monotonic() - healed
                self.report.max_resume_s = max(self.report.max_resume_s, took)
                self.report.max_resume_blocks = max(self.report.max_resume_blocks, took / interval)
                return took
            time.sleep(0.1)
        self.violation(f"finality did not resume within {limit:.0f} s of a heal (stuck at {base})")
        return limit

    # end checks ---------------------------------------------------------------------------------------
    def final_checks(self) -> None:
        net = self.net
        for n in net.nodes:  # type: ignore[union-attr]
            if n.pid() is None:
                self.start_node(n)
        self.down.clear()
        try:
            target = max(self.finalized, 1) + 2
            net.wait_finalized(target, timeout=120)  # type: ignore[union-attr]
        except TestnetError as exc:
            self.violation(f"not every node caught up after the run: {exc}")
        heads = {n.index: self.rpc(n, "chain_getHead")["finalized_height"] for n in net.nodes}  # type: ignore[union-attr]
        top = min(heads.values())
        self.report.final_height = top
        for n in net.nodes:  # type: ignore[union-attr]
            self.compare_heights(n, top)
        self.report.heights_checked = top
        # every committed tx, on every node, at the same height
        deadline = time.monotonic() + 30
        while self.pending and time.monotonic() < deadline:
            self.track_txs(limit=200)
            time.sleep(0.2)
        self.report.txs_committed = len(self.committed)
        lost = 0
        for h, height in self.committed.items():
            for n in net.nodes:  # type: ignore[union-attr]
                st = self.rpc(n, "chain_getTransaction", hash=h)
                if st["status"] not in ("committed", "failed") or st["block_height"] != height:
                    lost += 1
                    self.violation(f"tx {h[:18]} committed at {height} is {st['status']} on node{n.index}")
                    break
        self.report.txs_lost = lost
        self.check_supply()

    def check_supply(self) -> None:
        """On every node: the accounts the run touches hold exactly the circulating supply, and the total
        is the genesis total less what the market burned (PoA mints nothing)."""
        net = self.net
        accounts = [k.public_key for k in net.faucet_keys()]  # type: ignore[union-attr]
        for m in net.meta["nodes"]:  # type: ignore[union-attr]
            accounts.append(decode_address(m["validator"]))
            if m.get("miner"):
                accounts.append(decode_address(m["miner"]))
        for n in net.nodes:  # type: ignore[union-attr]
            # no load runs now, so balances only move while the last transactions commit: read until two
            # snapshots (supply, every account, supply) agree
            last = None
            for _attempt in range(10):
                sup = self.rpc(n, "chain_getSupply")
                stats = self.rpc(n, "market_stats")
                accs = [int(self.rpc(n, "state_getAccount", address=encode_address(pk))["balance"]) for pk in accounts]
                snap = (sup["total"], sup["circulating"], stats["burned_total"], accs)
                if snap == last:
                    break
                last = snap
            else:
                self.violation(f"node{n.index}: could not read a consistent supply snapshot")
                continue
            held = sum(accs)
            if held != int(sup["circulating"]):
                self.violation(f"node{n.index}: accounts hold {held}, circulating supply is {sup['circulating']}")
            if self.cfg.consensus == "poa" and int(sup["total"]) != self.genesis_total - int(stats["burned_total"]):
                self.violation(f"node{n.index}: total {sup['total']} != genesis {self.genesis_total} - burned "
                               f"{stats['burned_total']}")

    # the run ------------------------------------------------------------------------------------------
    def run(self) -> Report:
        t0 = time.monotonic()
        threads = []
        try:
            self.setup()
            threads = [threading.Thread(target=self.load_loop, daemon=True),
                       threading.Thread(target=self.monitor_loop, daemon=True)]
            for t in threads:
                t.start()
            end = t0 + self.cfg.duration_s
            kinds = [k for k in self.cfg.faults if k != "partition" or self.ns is not None]
            while time.monotonic() < end and kinds:
                self.inject(self.rng.choice(kinds))
                time.sleep(self.rng.uniform(*self.cfg.gap_s))
            self.stop_event.set()
            for t in threads:
                t.join(timeout=10)
            if self.ns is not None:
                self.ns.heal()
            self.final_checks()
        finally:
            self.stop_event.set()
            if self.net is not None:
                for n in self.net.nodes:
                    pid = n.pid()
                    if pid is not None:
                        try:
                            os.kill(pid, signal.SIGCONT)
                        except OSError:
                            pass
                        self.net.stop(n, timeout=15)
            if self.ns is not None:
                self.ns.down()
        self.report.duration_s = time.monotonic() - t0
        return self.report


def run(cfg: ChaosConfig) -> Report:
    return Chaos(cfg).run()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="testnet/chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--duration", type=float, default=120.0, help="seconds of faults")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tps", type=float, default=4.0, help="transfers per second")
    p.add_argument("--block-interval", type=float, default=1.0, help="seconds")
    p.add_argument("--consensus", choices=["poa", "pos"], default="poa")
    p.add_argument("--faults", default=",".join(FAULT_KINDS), help="comma-separated subset of " + ",".join(FAULT_KINDS))
    p.add_argument("--byzantine", action="store_true", help="the last validator double-signs")
    p.add_argument("--lying-miner", action="store_true", help="node1 mines wrong results, node2 verifies")
    p.add_argument("--no-netns", action="store_true", help="loopback only (no partitions; no root needed)")
    p.add_argument("--dir", type=Path, help="keep the network here (default: a temporary directory)")
    p.add_argument("--base-port", type=int, default=27600)
    p.add_argument("--hold", default="1,4", help="MIN,MAX seconds a fault is held before it is healed")
    p.add_argument("--gap", default="0.5,2", help="MIN,MAX seconds between faults")
    p.add_argument("--report", type=Path, help="also write the report as JSON here")
    a = p.parse_args(argv)
    kinds = tuple(k for k in a.faults.split(",") if k)
    bad = sorted(set(kinds) - set(FAULT_KINDS))
    if bad:
        p.error(f"unknown faults {bad}")
    try:
        hold = tuple(float(x) for x in a.hold.split(","))
        gap = tuple(float(x) for x in a.gap.split(","))
        if len(hold) != 2 or len(gap) != 2 or not 0 <= hold[0] <= hold[1] or not 0 <= gap[0] <= gap[1]:
            raise ValueError
    except ValueError:
        p.error("--hold and --gap take MIN,MAX seconds")
    cfg = ChaosConfig(nodes=a.nodes, hold_s=hold, gap_s=gap, duration_s=a.duration, seed=a.seed, tps=a.tps,  # type: ignore[arg-type]
                      block_interval_ms=int(a.block_interval * 1000), consensus=a.consensus, faults=kinds,
                      byzantine=a.byzantine, lying_miner=a.lying_miner, netns=not a.no_netns, directory=a.dir,
                      base_port=a.base_port)
    try:
        rep = run(cfg)
    except TestnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(rep.text(), flush=True)
    if a.report:
        a.report.write_text(json.dumps({**asdict(rep), "ok": rep.ok, "config": {**asdict(cfg), "directory": str(cfg.directory)}},
                                       indent=2, default=str))
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
