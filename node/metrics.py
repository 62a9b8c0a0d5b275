"""Prometheus metrics of the node (one CollectorRegistry per node, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BLOCK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class NodeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.head_height = Gauge("chain_head_height", "Height of the latest committed block", registry=r)
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
        # market ---------------------------------------------------------------------------------
        self.market_jobs = Gauge("market_jobs", "Jobs on chain by state", ["state"], registry=r)
        self.market_escrow = Gauge("market_escrow_locked", "Base units locked in job escrow", registry=r)
        self.market_bonds = Gauge("market_miner_bonds_locked", "Base units locked in miner bonds", registry=r)
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
        # staking --------------------------------------------------------------------------------
        self.staking_bonded = Gauge("staking_bonded_total", "Base units bonded to validators", registry=r)
        self.staking_active = Gauge("staking_active_validators", "Validators in the active set", registry=r)
        self.staking_jailed = Gauge("staking_jailed_validators", "Jailed validators", registry=r)
        self.staking_slashes = Counter("staking_slashes_total", "Slashes by reason", ["reason"], registry=r)
        self.staking_missed = Gauge(
            "staking_missed_blocks", "Missed commits in the window, by validator", ["validator"], registry=r
        )
        self.supply_total = Gauge("chain_supply_total", "Total supply in base units", registry=r)
