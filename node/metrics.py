"""Prometheus metrics of the node (one CollectorRegistry per node, so tests can run several).

Labels are bounded: ``validator``/``proposer`` are validator addresses of the (bounded) validator set,
``reason``/``outcome``/``state``/``kind`` come from fixed sets, never from client input. Label values
known in advance are created at zero, so a dashboard or alert sees a series before the first event.
The figures read from node state at scrape time (consensus round, seconds since the last block, sync
distance, mempool capacity) come from :class:`NodeStateCollector`; the dashboards and alert rules that
use all of these are in ``testnet/monitoring/``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from .service import Node

log = logging.getLogger("aitbc.metrics")

_BLOCK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
_SETTLE_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200)
#: Outcomes of ``market_job_settlement_seconds``: the event that settled the job -> outcome.
SETTLE_EVENTS = {"payment_released": "completed", "job_failed": "failed", "job_expired": "expired",
                 "job_canceled": "canceled"}
MINER_SLASH_REASONS = ("timeout", "wrong_result", "unavailable")  # state/market/records.py FAIL_*
STAKING_SLASH_REASONS = ("double_sign", "downtime")


class NodeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.head_height = Gauge("chain_head_height", "Height of the latest committed block", registry=r)
        self.head_time = Gauge(
            "chain_head_timestamp_seconds", "Timestamp of the latest committed block (unix seconds)", registry=r
        )
        self.finalized_height = Gauge("chain_finalized_height", "Height of the latest finalized block", registry=r)
        self.block_interval = Histogram(
            "block_interval_seconds", "Time between consecutive committed blocks", buckets=_BLOCK_BUCKETS, registry=r
        )
        self.poa_last_interval = Gauge(
            "poa_last_block_interval_seconds", "Interval before the latest committed block", registry=r
        )
        self.block_txs = Histogram(
            "block_txs", "Transactions per committed block",
            buckets=(0, 1, 10, 100, 500, 1000, 2500, 5000, 10000, 20000), registry=r,
        )
        self.block_build = Histogram(
            "block_build_seconds", "Time to build or validate a block (execution + state root)",
            buckets=_BLOCK_BUCKETS, registry=r,
        )
        self.block_commit = Histogram(
            "block_commit_seconds", "Time to persist a block (one synced WriteBatch)", buckets=_BLOCK_BUCKETS,
            registry=r,
        )
        self.txs_committed = Counter("txs_committed_total", "Transactions committed in blocks", registry=r)
        self.txs_failed = Counter("txs_failed_total", "Committed transactions whose body failed", registry=r)
        self.mempool_size = Gauge("mempool_size", "Transactions in the mempool", registry=r)
        self.mempool_bytes = Gauge("mempool_bytes", "Bytes of transactions in the mempool", registry=r)
        self.tx_accepted = Counter("tx_accepted_total", "Transactions accepted into the mempool", registry=r)
        self.tx_rejected = Counter(
            "tx_rejected_total", "Transactions rejected on submission, by reason", ["reason"], registry=r
        )
        self.tx_stem = Counter(
            "tx_stem_total", "Sponsored transactions on the stem path (node/stem.py), by event", ["event"], registry=r
        )
        for event in ("sent", "received", "relayed", "fluffed", "embargo", "refused"):
            self.tx_stem.labels(event)
        self.sync_blocks = Counter("sync_blocks_received_total", "Blocks applied by block sync", registry=r)
        self.sync_target = Gauge("sync_target_height", "Highest finalized height reported by peers", registry=r)
        self.rounds_per_height = Histogram(
            "consensus_rounds_per_height", "Rounds needed to decide a height (1 = decided in round 0)",
            buckets=(1, 2, 3, 4, 6, 8, 16), registry=r,
        )
        self.missed_proposals = Counter(
            "consensus_missed_proposals_total", "Rounds whose proposer's block was not decided, by validator",
            ["validator"], registry=r,
        )
        self.proposer_switches = Counter(
            "poa_proposer_switches_total", "Times the block proposer changed between heights", registry=r
        )
        self.blocks_proposed = Counter(
            "consensus_blocks_proposed_total", "Committed blocks by proposer (validator address)", ["proposer"],
            registry=r,
        )
        self._known_validators: set[str] = set()
        # market ---------------------------------------------------------------------------------
        self.market_jobs = Gauge("market_jobs", "Jobs on chain by state", ["state"], registry=r)
        self.market_escrow = Gauge("market_escrow_locked", "Base units locked in job escrow", registry=r)
        self.market_bonds = Gauge("market_miner_bonds_locked", "Base units locked in miner bonds", registry=r)
        self.zk_tree_leaves = Gauge(
            "zk_tree_leaves", "Leaves of the chain's Poseidon trees (receipt: attestable paid jobs; bidder: "
            "anonymous bidding identities)", ["tree"], registry=r,
        )
        self.zk_tree_queue = Gauge(
            "zk_tree_queue", "Poseidon tree writes queued for the next blocks (at most 16 run per block)", registry=r
        )
        self.market_bids = Counter("market_bids_submitted_total", "Bids this node's miner submitted", registry=r)
        self.market_receipts = Counter(
            "market_receipts_submitted_total", "Receipts this node's miner submitted", registry=r
        )
        self.market_challenges = Counter(
            "market_challenges_submitted_total", "Challenges this node's verifier submitted", registry=r
        )
        self.market_events = Counter("market_events_total", "Market events in committed blocks", ["event"], registry=r)
        self.gpu_busy = Counter("gpu_busy_seconds_total", "Seconds this node's executor spent running jobs", registry=r)
        self.job_exec = Histogram(
            "job_execution_seconds", "Job execution time by kind", ["kind"], registry=r,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300),
        )
        self.market_settlement = Histogram(
            "market_job_settlement_seconds",
            "Time from a job's submission to its settlement (block timestamps), by outcome "
            "(completed: paid, failed, expired, canceled)",
            ["outcome"], buckets=_SETTLE_BUCKETS, registry=r,
        )
        self.market_slashes = Counter(
            "market_miner_slashes_total", "Miner bond slashes in committed blocks, by reason", ["reason"], registry=r
        )
        self.miner_jobs = Counter(
            "miner_jobs_total",
            "Awarded jobs this node's miner worked on, by outcome (completed: receipt submitted; failed: the "
            "execution or the receipt submission failed)",
            ["outcome"], registry=r,
        )
        self.miner_jobs_settled = Counter(
            "miner_jobs_settled_total",
            "This node's miner's jobs settled on chain, by outcome (paid, or the failure: timeout, wrong_result, "
            "unavailable)",
            ["outcome"], registry=r,
        )
        for outcome in SETTLE_EVENTS.values():
            self.market_settlement.labels(outcome)
        for reason in MINER_SLASH_REASONS:
            self.market_slashes.labels(reason)
        # staking --------------------------------------------------------------------------------
        self.staking_bonded = Gauge("staking_bonded_total", "Base units bonded to validators", registry=r)
        self.staking_active = Gauge("staking_active_validators", "Validators in the active set", registry=r)
        self.staking_jailed = Gauge("staking_jailed_validators", "Jailed validators", registry=r)
        self.staking_slashes = Counter("staking_slashes_total", "Slashes by reason", ["reason"], registry=r)
        self.staking_missed = Gauge(
            "staking_missed_blocks", "Missed commits in the window, by validator", ["validator"], registry=r
        )
        self.staking_jail_threshold = Gauge(
            "staking_missed_blocks_jail_threshold",
            "Missed commits in the signing window above which a validator is jailed", registry=r,
        )
        self.staking_validator_jailed = Gauge(
            "staking_validator_jailed", "1 if the validator is jailed (active and jailed validators), by validator",
            ["validator"], registry=r,
        )
        for reason in STAKING_SLASH_REASONS:
            self.staking_slashes.labels(reason)
        self.supply_total = Gauge("chain_supply_total", "Total supply in base units", registry=r)
        # this node's miner: created at zero only on a miner node (see miner_started)

    # helpers ------------------------------------------------------------------------------------
    def attach_node(self, node: Node) -> None:
        """Register the scrape-time collector of ``node``'s state."""
        self.registry.register(NodeStateCollector(node))

    def miner_started(self) -> None:
        """Create the miner series at zero (only a miner node exports them)."""
        for outcome in ("completed", "failed"):
            self.miner_jobs.labels(outcome)
        for outcome in ("paid", *MINER_SLASH_REASONS):
            self.miner_jobs_settled.labels(outcome)

    def known_validators(self, addresses: list[str]) -> None:
        """Create the per-validator consensus series at zero for validators not seen before (the set is
        bounded by the chain's validator limit)."""
        for a in addresses:
            if a not in self._known_validators:
                self._known_validators.add(a)
                self.blocks_proposed.labels(a)
                self.missed_proposals.labels(a)

    def set_staking_validators(self, missed: dict[str, int], jailed: dict[str, bool]) -> None:
        """Per-validator staking gauges; series of validators that left both lists are removed."""
        _replace_children(self.staking_missed, missed)
        _replace_children(self.staking_validator_jailed, {a: int(j) for a, j in jailed.items()})


def _replace_children(gauge: Gauge, values: dict[str, int]) -> None:
    for labels in list(gauge._metrics):  # noqa: SLF001 (prometheus_client has no public listing)
        if labels[0] not in values:
            gauge.remove(*labels)
    for a, v in values.items():
        gauge.labels(a).set(v)


class NodeStateCollector:
    """Figures read from the node at scrape time (on the trio thread that serves ``/metrics``):

    ``consensus_round`` (round of the height being decided; climbs while a height cannot be decided),
    ``consensus_validators``, ``consensus_is_validator``, ``chain_seconds_since_last_block`` and
    ``chain_stall_threshold_seconds`` (the figures of ``GET /health``: stalled when the first exceeds the
    second), ``sync_syncing``, ``sync_best_height``, ``sync_behind_blocks``, ``mempool_capacity_txs``,
    ``mempool_capacity_bytes``, ``mempool_pending``, ``mempool_queued``, and
    ``aitbc_node_info{version,chain_id,consensus,moniker}`` = 1.
    """

    def __init__(self, node: Node) -> None:
        self.node = node

    def describe(self) -> list:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], value)
            return g

        node = self.node
        out: list = []
        try:
            from .service import VERSION

            info = GaugeMetricFamily("aitbc_node_info", "Node software and chain (value 1)",
                                     labels=["version", "chain_id", "consensus", "moniker"])
            info.add_metric([VERSION, node.genesis.chain_id, node.genesis.consensus, node.cfg.node.moniker or ""], 1)
            out.append(info)
            if node.chain is not None:
                h = node.health()
                out.append(gauge("chain_seconds_since_last_block",
                                 "Seconds since the head last moved (as GET /health computes it)",
                                 h["seconds_since_last_block"]))
                out.append(gauge("chain_stall_threshold_seconds",
                                 "Seconds without a block after which GET /health reports stalled", h["stall_after_s"]))
                s = h["sync"]
                out.append(gauge("sync_syncing", "1 while block sync is catching up with peers", int(s["syncing"])))
                out.append(gauge("sync_best_height", "Highest height known: own head or reported by peers",
                                 s["best_height"]))
                out.append(gauge("sync_behind_blocks", "Blocks this node is behind the best known height",
                                 s["behind"]))
            engine = node.engine
            if engine is not None:
                st = engine.status()
                out.append(gauge("consensus_round", "Round of the height being decided (0 = first round)",
                                 st["round"]))
                out.append(gauge("consensus_validators", "Validators in the set of the height being decided",
                                 st["validators"]))
                out.append(gauge("consensus_is_validator", "1 if this node votes on the height being decided",
                                 int(st["is_validator"])))
            mp = node.mempool
            if mp is not None:
                ms = mp.stats()
                out.append(gauge("mempool_capacity_txs", "Transactions the mempool holds at most", ms["max_txs"]))
                out.append(gauge("mempool_capacity_bytes", "Bytes of transactions the mempool holds at most",
                                 ms["max_bytes"]))
                out.append(gauge("mempool_pending", "Pooled transactions that are executable", ms["pending"]))
                out.append(gauge("mempool_queued", "Pooled transactions behind a nonce gap", ms["queued"]))
        except Exception:  # a scrape must never fail because of one figure
            log.exception("collecting node metrics failed")
        yield from out
