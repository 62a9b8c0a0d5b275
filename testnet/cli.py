"""``testnet/<command>``: run a local multi-node network on loopback (see README)."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from pathlib import Path

from .load import format_report, run_load
from .network import DEFAULT_DIR, Network, TestnetError, create


def _params(args: argparse.Namespace) -> dict:
    """Genesis params from --params JSON, plus --switch-height for hybrid networks."""
    try:
        params = json.loads(args.params) if args.params else {}
    except json.JSONDecodeError as exc:
        raise TestnetError(f"--params must be JSON: {exc}") from None
    if not isinstance(params, dict):
        raise TestnetError("--params must be a JSON object, e.g. '{\"staking\": {\"epoch_blocks\": 20}}'")
    if args.switch_height is not None:
        params.setdefault("staking", {})["hybrid_switch_height"] = args.switch_height
    return params


def cmd_up(args: argparse.Namespace) -> int:
    d = Path(args.dir)
    net = Network(d) if (d / "network.json").exists() else create(
        d, nodes=args.nodes, base_port=args.base_port, block_interval_ms=int(args.block_interval * 1000),
        consensus=args.consensus, validators=args.validators, params=_params(args),
        # staked genesis validators get 100 AIT each, so a slash shows in their power
        validator_power=1 if args.consensus == "poa" else 100,
        miners=[int(x) for x in args.miners.split(",")] if args.miners else (),
    )
    for n in net.nodes:
        net.start(n)
    print(f"started {len(net.nodes)} nodes of chain {net.chain_id} in {d}; waiting for finality…", flush=True)
    try:
        net.wait_finalized(2, timeout=args.timeout)
    except TestnetError as exc:
        print(f"error: {exc}; see the node logs in {d}/node*/node.log", file=sys.stderr)
        return 1
    for n in net.nodes:
        print(f"node{n.index}: {n.rpc_url}  (p2p {n.multiaddr})")
    if args.monitoring:
        return _start_monitoring(net, d, args.monitoring_port)
    return 0


def _start_monitoring(net: Network, d: Path, port: int) -> int:
    """Prometheus scraping every node's /metrics with the alert rules (testnet/monitoring)."""
    from . import monitoring

    pidfile = d / "prometheus.pid"
    url = f"http://127.0.0.1:{port}"
    pid = monitoring.read_pid(pidfile)
    if pid is None:
        try:
            pid = monitoring.start(d / "monitoring", [f"{n.host}:{n.rpc_port}" for n in net.nodes], port=port,
                                   pidfile=pidfile)
            monitoring.wait_ready(url, pid)
        except monitoring.MonitoringError as exc:
            print(f"error: {exc} ({d}/monitoring/prometheus.log)", file=sys.stderr)
            monitoring.stop(pidfile)
            return 1
    (d / "monitoring" / "url").write_text(url + "\n")
    print(f"prometheus (pid {pid}): {url}  alerts {url}/alerts  targets {url}/targets")
    print(f"  grafana: add {url} as a Prometheus data source, import {monitoring.DASHBOARDS_DIR}/*.json")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    net = Network(Path(args.dir))
    print(f"{'node':<7} {'pid':>7} {'height':>7} {'finalized':>9} {'peers':>5}  head hash")
    for r in net.status_rows():
        fmt = lambda v: "-" if v is None else str(v)  # noqa: E731
        print(f"{r['node']:<7} {fmt(r['pid']):>7} {fmt(r['height']):>7} {fmt(r['finalized']):>9} "
              f"{fmt(r['peers']):>5}  {fmt(r['hash'])}")
    from . import monitoring

    d = Path(args.dir)
    pid = monitoring.read_pid(d / "prometheus.pid")
    if pid is not None:
        try:
            url = (d / "monitoring" / "url").read_text().strip()
        except OSError:
            url = "?"
        print(f"prometheus: {url} (pid {pid})")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    d = Path(args.dir)
    if (d / "network.json").exists():
        net = Network(d)
        for n in net.nodes:
            net.stop(n)
        print(f"stopped {len(net.nodes)} nodes")
    from . import monitoring

    if monitoring.stop(d / "prometheus.pid"):
        print("stopped prometheus")
    if args.clean and d.exists():
        shutil.rmtree(d)
        print(f"removed {d}")
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    net = Network(Path(args.dir))
    n = net.node(args.node)
    net.stop(n, sig=signal.SIGKILL, timeout=5)
    print(f"killed node{n.index}")
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    net = Network(Path(args.dir))
    n = net.node(args.node)
    net.stop(n)
    wrapper: list[str] = []
    if args.double_sign or args.faults_file:
        from .faults import wrapper_args

        wrapper = wrapper_args(double_sign=args.double_sign, faults_file=args.faults_file)
    pid = net.start(n, wrapper_args=wrapper)
    print(f"restarted node{n.index} (pid {pid}){' with faults ' + ' '.join(wrapper) if wrapper else ''}")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    net = Network(Path(args.dir))
    t0 = time.time()
    rep = run_load(net, tps=args.tps, seconds=args.seconds,
                   progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_report(rep))
    print(f"(ran {time.time() - t0:.1f} s)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="testnet", description="local multi-node aitbc network")
    sub = p.add_subparsers(dest="cmd", required=True)

    def dir_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--dir", default=str(DEFAULT_DIR), help="network directory (default ./testnet-data)")

    sp = sub.add_parser("up", help="create (if needed) and start the network")
    dir_arg(sp)
    sp.add_argument("--nodes", type=int, default=4)
    sp.add_argument("--base-port", type=int, default=26600, help="node i uses P2P base+10i, RPC base+10i+2")
    sp.add_argument("--block-interval", type=float, default=1.0, help="seconds")
    sp.add_argument("--consensus", choices=["poa", "pos", "hybrid"], default="poa")
    sp.add_argument("--validators", type=int, help="how many of the nodes are genesis validators (default all)")
    sp.add_argument("--miners", help="comma-separated node indexes that run the miner role, e.g. 2,3")
    sp.add_argument("--params", help='genesis params as JSON, e.g. \'{"staking": {"epoch_blocks": 20}}\'')
    sp.add_argument("--switch-height", type=int, help="hybrid: height at which the authorities leave")
    sp.add_argument("--timeout", type=float, default=90.0)
    sp.add_argument("--monitoring", action="store_true",
                    help="also start Prometheus scraping the nodes, with the alert rules (testnet/monitoring)")
    sp.add_argument("--monitoring-port", type=int, default=9090, help="Prometheus web port (default 9090)")
    sp.set_defaults(func=cmd_up)
    sp = sub.add_parser("status", help="height, finalized height, peers and head hash of every node")
    dir_arg(sp)
    sp.set_defaults(func=cmd_status)
    sp = sub.add_parser("down", help="stop every node")
    dir_arg(sp)
    sp.add_argument("--clean", action="store_true", help="also delete the network directory")
    sp.set_defaults(func=cmd_down)
    for name, fn, helptext in (("kill", cmd_kill, "SIGKILL one node"), ("restart", cmd_restart, "stop and start one node")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("node", help="node0, node1, … or an index")
        dir_arg(sp)
        if name == "restart":  # byzantine behaviour, injected from outside the node (testnet/faults.py)
            sp.add_argument("--double-sign", action="store_true", help="the validator double-signs prevotes")
            sp.add_argument("--faults-file", help="JSON faults file of the miner: corrupt, silent, "
                            "false_challenge, withhold (read before each action)")
        sp.set_defaults(func=fn)
    sp = sub.add_parser("load", help="submit transfers at a rate and report commits and latency")
    dir_arg(sp)
    sp.add_argument("--tps", type=float, required=True)
    sp.add_argument("--seconds", type=float, required=True)
    sp.set_defaults(func=cmd_load)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except TestnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
