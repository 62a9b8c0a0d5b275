"""Grafana dashboards of aitbc-peer, generated: ``python -m testnet.monitoring.dashboards --write`` rewrites
``testnet/monitoring/grafana/dashboards/*.json`` (``--check`` exits 1 when a file differs; the tests run it).

Plain dicts, no Grafana library. Every panel queries the metrics of ``node/metrics.py``,
``p2p/metrics.py`` and ``rpc/`` through two template variables: ``datasource`` (any Prometheus data
source, so the files import as they are) and ``instance`` (the scraped nodes, default all).
tests/test_monitoring.py runs every query below against a live Prometheus scraping a real network.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

DASHBOARDS_DIR = Path(__file__).resolve().parent / "grafana" / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
I = '{instance=~"$instance"}'  # noqa: E741 (the selector every panel uses)
RI = "$__rate_interval"
IN = '{instance=~"$instance", direction="in"}'
OUT = '{instance=~"$instance", direction="out"}'
ERR = '{instance=~"$instance", outcome="error"}'


def sel(extra: str = "") -> str:
    """The instance selector, with more matchers: ``sel('outcome="error"')``."""
    return '{instance=~"$instance"' + (", " + extra if extra else "") + "}"


@dataclass
class Panel:
    title: str
    targets: list[tuple[str, str]]  # (expr, legend)
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat | table
    description: str = ""
    width: int = 12
    extra: dict = field(default_factory=dict)


def q(p: float, metric: str, by: str, matchers: str = "") -> str:
    """histogram_quantile ``p`` of ``metric`` (a histogram) over the rate interval, grouped ``by``."""
    return f"histogram_quantile({p}, sum by (le{', ' + by if by else ''}) (rate({metric}_bucket{sel(matchers)}[{RI}])))"


DASHBOARDS: dict[str, tuple[str, list[Panel]]] = {
    "consensus": ("Consensus", [
        Panel("Head height", [(f"chain_head_height{I}", "{{instance}}")], "none"),
        Panel("Finalized height", [(f"chain_finalized_height{I}", "{{instance}}")], "none",
              description="Finality is instant: a committed block is final."),
        Panel("Blocks per minute", [(f"rate(block_interval_seconds_count{I}[{RI}]) * 60", "{{instance}}")], "none"),
        Panel("Seconds since the last block", [
            (f"chain_seconds_since_last_block{I}", "{{instance}}"),
            (f"max(chain_stall_threshold_seconds{I})", "stall threshold"),
        ], "s", description="As GET /health computes it; above the threshold the node reports stalled."),
        Panel("Block interval", [
            (q(0.5, "block_interval_seconds", "instance"), "p50 {{instance}}"),
            (q(0.95, "block_interval_seconds", "instance"), "p95 {{instance}}"),
        ], "s"),
        Panel("Rounds per height", [
            (f"rate(consensus_rounds_per_height_sum{I}[{RI}]) / rate(consensus_rounds_per_height_count{I}[{RI}])",
             "mean {{instance}}"),
            (f"consensus_round{I}", "current round {{instance}}"),
        ], "none", description="1 = decided in the first round; the current round climbs while a height fails."),
        Panel("Blocks by proposer (per minute)", [
            (f"max by (proposer) (rate(consensus_blocks_proposed_total{I}[{RI}])) * 60", "{{proposer}}"),
        ], "none"),
        Panel("Missed proposals by validator", [
            (f"max by (validator) (increase(consensus_missed_proposals_total{I}[$__range]))", "{{validator}}"),
        ], "none", kind="stat", description="Rounds whose proposer's block was not decided, in the time range."),
        Panel("Transactions committed per second", [
            (f"rate(txs_committed_total{I}[{RI}])", "committed {{instance}}"),
            (f"rate(txs_failed_total{I}[{RI}])", "failed {{instance}}"),
        ], "ops"),
        Panel("Block build and commit time (p95)", [
            (q(0.95, "block_build_seconds", "instance"), "build {{instance}}"),
            (q(0.95, "block_commit_seconds", "instance"), "commit {{instance}}"),
        ], "s"),
        Panel("Validators", [
            (f"consensus_validators{I}", "validators {{instance}}"),
            (f"consensus_is_validator{I}", "votes {{instance}}"),
        ], "none", kind="stat"),
        Panel("Nodes", [(f"aitbc_node_info{I}", "")], kind="table",
              extra={"format": "table", "instant": True}),
    ]),
    "network": ("Network", [
        Panel("Connected peers", [(f"p2p_peers{I}", "{{instance}}")], "none"),
        Panel("Scrape health", [('up{job="aitbc", instance=~"$instance"}', "{{instance}}")], "none",
              description="1 = /metrics answered."),
        Panel("Gossip received by topic and result", [
            (f"sum by (topic, result) (rate(p2p_gossip_messages_total{IN}[{RI}]))",
             "{{topic}} {{result}}"),
        ], "pps", description="accepted, rejected (invalid), ignored, oversize, malformed, over_budget, dropped."),
        Panel("Gossip sent by topic and result", [
            (f"sum by (topic, result) (rate(p2p_gossip_messages_total{OUT}[{RI}]))",
             "{{topic}} {{result}}"),
        ], "pps"),
        Panel("Gossip bytes by topic", [
            (f"sum by (topic, direction) (rate(p2p_gossip_bytes_total{I}[{RI}]))", "{{topic}} {{direction}}"),
        ], "Bps"),
        Panel("Request/response by protocol and result", [
            (f"sum by (protocol, result) (rate(p2p_reqresp_requests_total{I}[{RI}]))", "{{protocol}} {{result}}"),
        ], "reqps"),
        Panel("Sync: blocks behind", [(f"sync_behind_blocks{I}", "{{instance}}")], "none"),
        Panel("Sync: head and best known height", [
            (f"chain_head_height{I}", "head {{instance}}"),
            (f"sync_best_height{I}", "best {{instance}}"),
        ], "none"),
        Panel("Sync: blocks applied per second", [
            (f"rate(sync_blocks_received_total{I}[{RI}])", "{{instance}}"),
            (f"sync_syncing{I}", "syncing {{instance}}"),
        ], "none"),
    ]),
    "mempool": ("Mempool", [
        Panel("Transactions vs capacity", [
            (f"mempool_size{I}", "size {{instance}}"),
            (f"max(mempool_capacity_txs{I})", "capacity"),
        ], "none"),
        Panel("Bytes vs capacity", [
            (f"mempool_bytes{I}", "bytes {{instance}}"),
            (f"max(mempool_capacity_bytes{I})", "capacity"),
        ], "bytes"),
        Panel("Fill ratio", [
            (f"mempool_size{I} / mempool_capacity_txs{I}", "txs {{instance}}"),
            (f"mempool_bytes{I} / mempool_capacity_bytes{I}", "bytes {{instance}}"),
        ], "percentunit", description="AitbcMempoolNearCapacity fires above 0.9 for 5 minutes."),
        Panel("Pending and queued", [
            (f"mempool_pending{I}", "pending {{instance}}"),
            (f"mempool_queued{I}", "queued {{instance}}"),
        ], "none", description="queued: behind a nonce gap, not executable yet."),
        Panel("Accepted per second", [(f"rate(tx_accepted_total{I}[{RI}])", "{{instance}}")], "ops"),
        Panel("Rejected by reason", [
            (f"sum by (reason) (increase(tx_rejected_total{I}[$__range]))", "{{reason}}"),
        ], "none", kind="stat"),
    ]),
    "rpc": ("JSON-RPC", [
        Panel("Requests per second by method", [
            (f"sum by (method) (rate(rpc_requests_total{I}[{RI}]))", "{{method}}"),
        ], "reqps"),
        Panel("Errors per second by method", [
            (f"sum by (method) (rate(rpc_requests_total{ERR}[{RI}]))",
             "{{method}}"),
        ], "reqps", description='Unknown methods, malformed and refused requests count as method "unknown".'),
        Panel("Error ratio", [
            (f"sum by (instance) (rate(rpc_requests_total{ERR}[{RI}]))"
             f" / sum by (instance) (rate(rpc_requests_total{I}[{RI}]))", "{{instance}}"),
        ], "percentunit"),
        Panel("Latency p95 by method", [(q(0.95, "rpc_request_seconds", "method"), "{{method}}")], "s"),
        Panel("Latency p50 / p99", [
            (q(0.5, "rpc_request_seconds", "instance"), "p50 {{instance}}"),
            (q(0.99, "rpc_request_seconds", "instance"), "p99 {{instance}}"),
        ], "s"),
        Panel("Connections and subscriptions", [
            (f"rpc_connections{I}", "tcp {{instance}}"),
            (f"rpc_ws_connections{I}", "ws {{instance}}"),
            (f"rpc_ws_subscriptions{I}", "subscriptions {{instance}}"),
        ], "none"),
        Panel("Refusals by reason", [
            (f"sum by (reason) (rate(rpc_refusals_total{I}[{RI}]))", "{{reason}}"),
        ], "reqps", description="Connection and call limits (rate, size, connections, timeouts)."),
    ]),
    "market": ("Compute market", [
        Panel("Jobs by state", [(f"max by (state) (market_jobs{I})", "{{state}}")], "none"),
        Panel("Escrow and miner bonds locked", [
            (f"max(market_escrow_locked{I})", "escrow"),
            (f"max(market_miner_bonds_locked{I})", "miner bonds"),
        ], "none", description="Base units."),
        Panel("Settlement time (submit to settled)", [
            (q(0.5, "market_job_settlement_seconds", "outcome"), "p50 {{outcome}}"),
            (q(0.95, "market_job_settlement_seconds", "outcome"), "p95 {{outcome}}"),
        ], "s", description="Block timestamps of the job_submit and of the settling block."),
        Panel("Jobs settled by outcome", [
            (f"max by (outcome) (increase(market_job_settlement_seconds_count{I}[$__range]))", "{{outcome}}"),
        ], "none", kind="stat"),
        Panel("Miner slashes by reason", [
            (f"max by (reason) (increase(market_miner_slashes_total{I}[$__range]))", "{{reason}}"),
        ], "none", kind="stat"),
        Panel("Market events per minute", [
            (f"max by (event) (rate(market_events_total{I}[{RI}])) * 60", "{{event}}"),
        ], "none"),
        Panel("This node's miner: jobs by outcome", [
            (f"sum by (instance, outcome) (increase(miner_jobs_total{I}[$__range]))", "{{instance}} {{outcome}}"),
        ], "none", kind="stat", description="completed: receipt submitted; failed: execution or submission failed."),
        Panel("This node's miner: jobs settled on chain", [
            (f"sum by (instance, outcome) (increase(miner_jobs_settled_total{I}[$__range]))",
             "{{instance}} {{outcome}}"),
        ], "none", kind="stat"),
        Panel("Miner activity per minute", [
            (f"rate(market_bids_submitted_total{I}[{RI}]) * 60", "bids {{instance}}"),
            (f"rate(market_receipts_submitted_total{I}[{RI}]) * 60", "receipts {{instance}}"),
            (f"rate(market_challenges_submitted_total{I}[{RI}]) * 60", "challenges {{instance}}"),
        ], "none"),
        Panel("GPU busy", [(f"rate(gpu_busy_seconds_total{I}[{RI}])", "{{instance}}")], "percentunit"),
        Panel("Job execution time p95 by kind", [(q(0.95, "job_execution_seconds", "kind"), "{{kind}}")], "s"),
        Panel("zk trees", [
            (f"max by (tree) (zk_tree_leaves{I})", "{{tree}} leaves"),
            (f"max(zk_tree_queue{I})", "queued writes"),
        ], "none", description="Receipt tree: attestable paid jobs; bidder tree: anonymous bidding identities. "
           "Queued writes drain at 16 per block."),
    ]),
    "staking": ("Staking", [
        Panel("Bonded", [(f"max(staking_bonded_total{I})", "bonded")], "none", description="Base units."),
        Panel("Validators", [
            (f"max(staking_active_validators{I})", "active"),
            (f"max(staking_jailed_validators{I})", "jailed"),
        ], "none"),
        Panel("Missed blocks in the window by validator", [
            (f"max by (validator) (staking_missed_blocks{I})", "{{validator}}"),
            (f"max(staking_missed_blocks_jail_threshold{I})", "jailed above"),
        ], "none", description="PoS/hybrid: missed commits in the signing window (updated every 10 blocks)."),
        Panel("Jailed validators", [(f"max by (validator) (staking_validator_jailed{I})", "{{validator}}")], "none"),
        Panel("Validator slashes by reason", [
            (f"max by (reason) (increase(staking_slashes_total{I}[$__range]))", "{{reason}}"),
        ], "none", kind="stat"),
        Panel("Total supply", [(f"max(chain_supply_total{I})", "supply")], "none", description="Base units."),
        Panel("Block share by proposer", [
            (f"max by (proposer) (increase(consensus_blocks_proposed_total{I}[$__range]))", "{{proposer}}"),
        ], "none", kind="stat"),
    ]),
}


def _panel(p: Panel, pid: int, x: int, y: int) -> dict:
    targets = []
    for i, (expr, legend) in enumerate(p.targets):
        t = {"datasource": DS, "refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, **p.extra}
        if p.kind == "stat":
            t["instant"] = True
        targets.append(t)
    out: dict = {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DS,
        "gridPos": {"h": 8, "w": p.width, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
    }
    if p.kind == "timeseries":
        out["options"] = {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}
    elif p.kind == "stat":
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "textMode": "value_and_name"}
    return out


def dashboard(name: str) -> dict:
    title, panels = DASHBOARDS[name]
    out = []
    x = y = 0
    for i, p in enumerate(panels, start=1):
        if x + p.width > 24:
            x, y = 0, y + 8
        out.append(_panel(p, i, x, y))
        x += p.width
    return {
        "uid": f"aitbc-{name}",
        "title": f"aitbc / {title}",
        "tags": ["aitbc"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "links": [{"type": "dashboards", "tags": ["aitbc"], "asDropdown": True, "title": "aitbc"}],
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1},
            {"name": "instance", "label": "Node", "type": "query", "datasource": DS,
             "query": {"query": "label_values(chain_head_height, instance)", "refId": "instance"},
             "definition": "label_values(chain_head_height, instance)", "multi": True, "includeAll": True,
             "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "refresh": 2, "sort": 1, "hide": 0},
        ]},
        "annotations": {"list": []},
        "panels": out,
    }


def render(name: str) -> str:
    return json.dumps(dashboard(name), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite the JSON files")
    ap.add_argument("--check", action="store_true", help="exit 1 if a file differs from the generated one")
    args = ap.parse_args(argv)
    stale = []
    for name in DASHBOARDS:
        path = DASHBOARDS_DIR / f"{name}.json"
        text = render(name)
        if args.write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        elif not path.exists() or path.read_text() != text:
            stale.append(path.name)
    if stale:
        print(f"out of date: {', '.join(stale)} (python -m testnet.monitoring.dashboards --write)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
