"""Monitoring (testnet/monitoring): alert rules, their promtool unit tests, the Grafana dashboards, and a
real Prometheus scraping a real network that runs every dashboard query and every alert expression.

The live test starts a 2-validator PoS network whose node1 also mines (``make_net``: processes stopped by
pid), a Prometheus on a free port with its own data directory (stopped by pid), makes the network do what
the dashboards show (a job from submission to payment, a rejected transaction, a failed and a refused
RPC call), then queries ``/api/v1/query``: every panel query must succeed and return at least one series;
every alert expression must succeed, and the series behind it (the expression without its final
comparison) must exist. Every wait polls with a deadline.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from net_helpers import FAST, log_tails, wait_heights

from gpu.kinds import get_kind
from state import market
from state.types import Transaction
from testnet import monitoring
from testnet.monitoring import dashboards
from testnet.network import Network, TestnetError
from testnet.ports import free_port

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus; `make test` installs it)"
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (Debian: apt-get install prometheus; `make test` installs it)"
)

#: a trailing comparison with a constant: what the live test drops to read the series behind an alert
THRESHOLD = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*-?[0-9.]+\s*$")
#: Grafana's variables, as a dashboard with the default selection ("All" nodes) fills them in
GRAFANA_VARS = {"$instance": ".*", "$__rate_interval": "1m", "$__range": "1h"}


def alert_rules() -> list[dict]:
    rules = []
    for path in monitoring.rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [r for r in group["rules"] if "alert" in r]
    return rules


def rule_test_files() -> list[Path]:
    return sorted(monitoring.RULE_TESTS_DIR.glob("*.yml"))


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) of every target of every panel."""
    out = []
    for path in sorted(monitoring.DASHBOARDS_DIR.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for t in panel["targets"]:
                out.append((path.name, panel["title"], t["expr"]))
    return out


def grafana_expr(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


# ------------------------------------------------------------------------------------------ static


@needs_promtool
def test_promtool_check_rules() -> None:
    files = monitoring.rule_files()
    assert files
    r = subprocess.run([PROMTOOL, "check", "rules", *map(str, files)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_promtool_rule_unit_tests() -> None:
    files = rule_test_files()
    assert files
    r = subprocess.run([PROMTOOL, "test", "rules", *map(str, files)], capture_output=True, text=True, timeout=60,
                       cwd=monitoring.RULE_TESTS_DIR)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in rule_test_files():
        for case in yaml.safe_load(path.read_text())["tests"]:
            for t in case.get("alert_rule_test", []):
                (firing if t.get("exp_alerts") else quiet).add(t["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names >= {"AitbcChainStalled", "AitbcNoFinality", "AitbcFewPeers", "AitbcMempoolNearCapacity",
                     "AitbcRpcErrorSpike", "AitbcValidatorMissingBlocks", "AitbcValidatorJailed",
                     "AitbcMinerFailingJobs"}
    assert names - firing == set(), "alerts without a unit test where they fire"
    assert names - quiet == set(), "alerts without a unit test where they stay quiet"
    assert (firing | quiet) - names == set(), "unit tests of alerts that do not exist"


def test_alert_expressions_end_in_a_threshold() -> None:
    for r in alert_rules():
        assert THRESHOLD.search(r["expr"]), f"{r['alert']}: expr must end in a comparison with a constant"
        assert r["labels"]["severity"] in ("warning", "critical"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


def test_dashboards_are_generated_and_well_formed() -> None:
    assert dashboards.main(["--check"]) == 0, "run python -m testnet.monitoring.dashboards --write"
    files = sorted(monitoring.DASHBOARDS_DIR.glob("*.json"))
    assert {p.stem for p in files} == {"consensus", "network", "mempool", "rpc", "market", "staking"}
    uids = set()
    for path in files:
        d = json.loads(path.read_text())
        uids.add(d["uid"])
        assert {v["name"] for v in d["templating"]["list"]} == {"datasource", "instance"}
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)) and d["panels"], path.name
        for p in d["panels"]:
            assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), (path.name, p["title"])
            assert p["datasource"]["uid"] == "${datasource}"
    assert len(uids) == len(files)
    for sub in ("datasources", "dashboards"):
        (prov,) = (monitoring.PROVISIONING_DIR / sub).glob("*.yaml")
        doc = yaml.safe_load(prov.read_text())
        assert doc["apiVersion"] == 1 and (doc.get("datasources") or doc.get("providers")), prov


# ------------------------------------------------------------------------------------------ live


def _submit(net: Network, key, nonce: int, tx_type: str, body: dict) -> str:
    tx = Transaction.create(key, net.chain_id, tx_type, nonce, 1000, body)
    return net.rpc(net.nodes[0], "tx_submit", tx="0x" + tx.raw.hex())["hash"]


def _poll(what: str, fn, timeout: float, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@needs_prometheus
def test_prometheus_runs_every_panel_query_and_alert_against_a_network(make_net, tmp_path: Path) -> None:
    net = make_net(2, block_interval_ms=250, consensus="pos", validators=2, validator_power=10, miners=[1],
                   params={**FAST, "market": {"miner_unbonding_blocks": 5}})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    pidfile = tmp_path / "prometheus.pid"
    pid = monitoring.start(tmp_path / "prometheus", [f"127.0.0.1:{n.rpc_port}" for n in net.nodes], port=port,
                           pidfile=pidfile, scrape_interval_s=1.0)
    try:
        monitoring.wait_ready(url, pid, timeout=30)
        wait_heights(net, net.nodes, 2, 60)

        # the market: node1's miner registers, a client's job is bid on, awarded, executed and paid
        _poll("the miner's registration", lambda: net.rpc(net.nodes[0], "market_listMiners")["miners"], 45)
        key = net.faucet_keys()[0]
        kind = "matmul-u32"
        params = {"m": 8, "n": 8, "k": 8, "seed": b"\x01" * 32}
        body = market.job_submit_body(kind, get_kind(kind).version, params, max_price=5000,
                                      max_units=get_kind(kind).work_units(params), bid_window=3, deadline=20)
        job_id = _submit(net, key, 0, "job_submit", body)

        def paid() -> bool:
            try:
                job = net.rpc(net.nodes[0], "market_getJob", job_id=job_id)
            except TestnetError:
                return False
            return job["payment"] == "released"

        try:
            _poll("the job's payment", paid, 60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log_tails(net.nodes)}") from None

        # what the error panels show: a rejected transaction, an unknown method, a refused call
        with pytest.raises(TestnetError, match="rejected"):
            net.rpc(net.nodes[0], "tx_submit", tx="0x00")
        with pytest.raises(TestnetError):
            net.rpc(net.nodes[0], "no_such_method")
        r = httpx.post(net.nodes[0].rpc_url, content=json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "tx_submit", "params": {"tx": "0x00"}}),
            headers={"content-type": "text/plain"}, timeout=5)
        assert "error" in r.json()

        # Prometheus has scraped all of it (and the staking figures, written every 10 heights)
        for expr, n in (('market_job_settlement_seconds_count{outcome="completed"} > 0', 2),
                        ('miner_jobs_total{outcome="completed"} > 0', 1),
                        ('miner_jobs_settled_total{outcome="paid"} > 0', 1),
                        ('tx_rejected_total{reason="malformed"} > 0', 1),
                        ('rpc_requests_total{method="unknown", outcome="error"} > 0', 1),
                        ("rpc_refusals_total > 0", 1),
                        ("staking_missed_blocks", 4),
                        ('p2p_gossip_messages_total{direction="in", result="accepted"} > 0', 2),
                        ("chain_head_height > 2", 2)):
            _poll(f"{n} series of {expr}", lambda e=expr, k=n: len(monitoring.query(url, e)) >= k, 30)
        # rule groups loaded and evaluated without errors
        def rules_evaluated() -> list[dict]:
            groups = httpx.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return rules if rules and all(not r["lastEvaluation"].startswith("0001") for r in rules) else []

        loaded = _poll("an evaluation of every rule", rules_evaluated, 30)
        assert {r["name"] for r in loaded} == {r["alert"] for r in alert_rules()}
        assert [r for r in loaded if r["health"] != "ok"] == [], "rules that failed to evaluate"

        # the node variable: label_values(chain_head_height, instance)
        assert len(monitoring.query(url, "chain_head_height")) == 2

        def check(dash: str, title: str, expr: str, alert: bool) -> str | None:
            """None when the query evaluates and has series behind it, else the problem."""
            try:
                if alert:
                    monitoring.query(url, expr)  # whether it fires or not, it must evaluate
                    expr = THRESHOLD.sub("", expr)
                if not monitoring.query(url, grafana_expr(expr)):
                    return f"{dash} / {title}: no series: {expr}"
            except monitoring.MonitoringError as exc:
                return f"{dash} / {title}: {exc}"
            return None

        pending = [(d, t, e, False) for d, t, e in panel_queries()]
        pending += [("alert", r["alert"], " ".join(r["expr"].split()), True) for r in alert_rules()]
        # An error fails at once; a query without series yet (a rate needs two scrapes inside its window,
        # and a loaded machine can miss scrapes) is asked again until a bounded deadline.
        deadline = time.monotonic() + 30
        while True:
            results = [(q, check(*q)) for q in pending]
            errors = [p for _, p in results if p and "no series" not in p]
            assert errors == [], "\n".join(errors)
            pending = [q for q, p in results if p]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert pending == [], "\n".join(p for _, p in results if p)

        # the figures are real, not only zero-valued series
        assert monitoring.query(url, "sum(max by (proposer) (consensus_blocks_proposed_total)) > 2")
        latency = 'histogram_quantile(0.5, sum by (le) (rate(rpc_request_seconds_bucket[1m]))) > 0'
        # a rate needs calls between two scrapes: keep calling while waiting
        _poll(latency, lambda: net.rpc(net.nodes[0], "chain_getHead") and monitoring.query(url, latency), 30)
        assert monitoring.query(url, "mempool_capacity_txs > 0")
        assert len(monitoring.query(url, "consensus_is_validator == 1")) == 2
    finally:
        stopped = monitoring.stop(pidfile, timeout=10)
    assert stopped and monitoring.read_pid(pidfile) is None
