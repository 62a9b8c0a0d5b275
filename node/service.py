"""The node: wires store, chain state, mempool, consensus engine and RPC, and owns their tasks.

``Node.run`` opens everything, starts the services in one trio nursery and closes the store when
they stop (cancellation = clean shutdown: a block being written finishes first, because the worker
thread doing it is not abandoned). A failed write of the store, WAL or sign state
(:class:`FatalWriteError`) stops the consensus engine, which cancels every other service; ``run`` then
raises that error alone, and the CLI prints it as one line (with its reason code) and exits with 1.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from consensus.bft_engine import BftEngine, fatal_write_error
from consensus.schedule import ProposerSchedule
from consensus.signstate import SignState
from consensus.transport import ConsensusTransport, NullTransport
from consensus.validators import Validator, ValidatorSet
from consensus.wal import WAL
from p2p.identity import peer_id_from_ed25519
from state.chain import ChainState, PendingBlock
from state.errors import AitbcError, DecodeError, InvariantError, TxError
from state.genesis import Genesis
from state.machine import TX_KINDS, check_body, tx_cost
from state.mempool import Mempool, MempoolConfig, MempoolError
from state.store import P_OBJECT, Store
from state.types import Commit, Transaction

from .blobs import BlobLimits, BlobStore, run_blob_gc
from .config import Config
from .home import Home, load_node_keys, remove_rpc_url, write_rpc_url
from .metrics import MINER_SLASH_REASONS, SETTLE_EVENTS, NodeMetrics
from .stem import StemRelay, is_stemmed

log = logging.getLogger("aitbc.node")

VERSION = "0.1.0"
PARALLEL_VERIFY_MIN = 64  # batches at least this large are verified in worker threads


# State-machine events -> WebSocket topics (market events carry a job_id or concern a miner).
_EVENT_TOPICS = {
    "validator_set": "validatorSet",
    "hybrid_switch": "validatorSet",
    "hybrid_switch_deferred": "validatorSet",
    "slash": "slashes",
    "jail": "slashes",
    "unjail": "slashes",
    "evidence": "slashes",
    "model_registered": "jobs",
}


def _event_topic(event: str, fields: dict) -> str:
    topic = _EVENT_TOPICS.get(event)
    if topic is not None:
        return topic
    if "job_id" in fields or event.startswith(("miner_", "job_", "challenge_", "payment_")):
        return "jobs"
    return "staking"


class NodeError(AitbcError):
    reason = "node"


class _CommittedAccounts:
    """The mempool's view of committed accounts (unknown accounts read as zero)."""

    __slots__ = ("chain",)

    def __init__(self, chain: ChainState) -> None:
        self.chain = chain

    def get_account(self, pubkey: bytes):
        return self.chain.account(pubkey)


@dataclass
class SubmitResult:
    hash: bytes | None
    error: TxError | None = None


class Node:
    """One aitbc-peer."""

    def __init__(self, home: Home, cfg: Config) -> None:
        self.home = home
        self.cfg = cfg
        self.genesis = Genesis.load(home.genesis_path)
        self.node_key, self.validator_key = load_node_keys(home)
        self.peer_id = peer_id_from_ed25519(self.node_key.public_key)
        self.metrics = NodeMetrics()
        self.metrics.attach_node(self)  # scrape-time figures: round, stall, sync distance, mempool capacity
        self._job_submit_ms: dict[bytes, int] = {}  # job id -> submission block time (settlement metric)
        self._metrics_valset: bytes | None = None  # hash of the validator set the metrics have labels for
        self.validators = ValidatorSet(
            [Validator(v.public_key, v.power, v.name) for v in self.genesis.validators]
        )
        self.store: Store | None = None
        self.chain: ChainState | None = None
        self.mempool: Mempool | None = None
        self.engine: BftEngine | None = None
        self.p2p = None  # p2p.P2PService when [p2p] enabled
        self.sync = None  # node.sync.BlockSync when p2p is enabled
        self.tx_gossip = None  # node.network.TxGossip when p2p is enabled
        self.stem = None  # node.stem.StemRelay when p2p is enabled (sponsored transactions)
        self.wal: WAL | None = None
        self.rpc_port: int | None = None
        self.started_at = time.time()
        self._last_block_time: int | None = None
        self._last_commit_mono = time.monotonic()  # local clock of the last head change (or of the start)
        self._last_proposer: bytes | None = None
        self.hub = None  # rpc.subscriptions.SubscriptionHub, set in run()
        self.blobs: BlobStore | None = None  # job inputs and results, served to peers
        self.miner = None  # node.miner.MinerService with the miner role
        self.models = None  # node.models.ModelService: registered models, pins (set in open())
        self.openai = None  # rpc.openai.OpenAIService with [openai] enabled
        self._commit_listeners: list[trio.MemorySendChannel] = []

    # lifecycle ------------------------------------------------------------------------------------
    def open(self) -> None:
        data = self.home.data_dir(self.cfg)
        data.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(data / "blobs", limits=BlobLimits.from_config(self.cfg.blobs))
        from .models import ModelService

        self.models = ModelService(self, data / "models")
        self.store = Store(data / "db")
        try:
            self.chain = ChainState(self.store, self.genesis)
        except Exception:
            self.store.close()
            raise
        m = self.cfg.mempool
        self.mempool = Mempool(
            self.genesis.chain_id,
            _CommittedAccounts(self.chain),
            MempoolConfig(
                max_txs=m.max_txs,
                max_bytes=m.max_bytes,
                nonce_window=m.nonce_window,
                max_per_sender=m.max_per_sender,
                replace_bump_percent=m.replace_bump_percent,
                min_fee=self.genesis.params.min_fee,
                max_queued=m.max_queued,
                max_queued_bytes=m.max_queued_bytes,
                max_queued_per_sender=m.max_queued_per_sender,
                queued_lifetime_s=m.queued_lifetime_s,
            ),
            cost=tx_cost,
            check_body=check_body,
        )
        head = self.chain.head
        self.metrics.head_height.set(head.height)
        self.metrics.finalized_height.set(head.height)
        self.metrics.head_time.set(head.time / 1000)
        self._last_block_time = head.time
        log.info(
            "chain %s at height %d (%s), genesis %s",
            self.genesis.chain_id, head.height, head.hash.hex()[:16], self.genesis.hash.hex()[:16],
        )

    def close(self) -> None:
        if self.wal is not None:
            self.wal.close()
        if self.store is not None:
            self.store.close()

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        from rpc.admin_methods import install_node_extras
        from rpc.limits import RpcLimits
        from rpc.methods import build_rpc
        from rpc.server import RpcServer

        from .fdlimits import setup_fd_limits

        self.fd_budget = setup_fd_limits(self.cfg.rpc.fd_reserve)  # raise RLIMIT_NOFILE; keep a reserve
        self.open()
        if self.chain is None or self.mempool is None:
            raise InvariantError("node not opened")
        try:
            from rpc.simulate_methods import register_simulate_methods

            from .rpc_adapter import NodeRpcAdapter

            api = NodeRpcAdapter(self)  # what rpc/ sees of this node (rpc/node_api.py)
            registry, self.hub = build_rpc(api)
            install_node_extras(registry, self.hub, api)  # admin_* methods, topic indexes, subscription caps
            register_simulate_methods(registry, api)  # tx_simulate: dry-run a signed tx on the head state
            async with trio.open_nursery() as nursery:
                transport: ConsensusTransport = NullTransport()
                if self.cfg.p2p.enabled:
                    transport = await self._start_p2p(nursery)
                elif self.validators.power_of(self.validator_key.public_key) < self.validators.quorum():
                    raise NodeError(
                        "this genesis has several validators: enable the p2p network ([p2p] enabled = true "
                        "and bootstrap peers) so this node can reach them"
                    )
                if self.cfg.rpc.enabled:
                    server = RpcServer(
                        registry,
                        self.hub,
                        host=self.cfg.rpc.host,
                        port=self.cfg.rpc.port,
                        max_body_bytes=self.cfg.rpc.max_body_bytes,
                        max_batch=self.cfg.rpc.max_batch,
                        admin_enabled=self.cfg.rpc.admin,
                        admin_token=self.cfg.rpc.admin_token or None,
                        metrics_registry=self.metrics.registry,
                        version=VERSION,
                        limits=RpcLimits.from_config(self.cfg.rpc, fd_budget=self.fd_budget),
                    )
                    server.health = self.health  # GET /health: 200 ok, 503 stalled/syncing
                    if self.cfg.web.enabled:  # the explorer and market web app at / (rpc/web)
                        from rpc.web import attach as attach_web

                        attach_web(server)
                    if self.cfg.openai.enabled:  # the OpenAI-compatible endpoint (rpc/openai.py)
                        from rpc.openai import OpenAIService

                        from .rpc_adapter import unlock_key

                        key = await trio.to_thread.run_sync(unlock_key, self.home, self.cfg.openai.key)
                        self.openai = OpenAIService(api, self.cfg.openai, key)
                        self.openai.attach(server)
                    try:
                        self.rpc_port = await nursery.start(server.serve)
                    except OSError as exc:
                        raise NodeError(
                            f"cannot listen for JSON-RPC on {self.cfg.rpc.host}:{self.cfg.rpc.port}: "
                            f"{exc.strerror or exc} (another node running? choose --rpc-port)",
                            reason="rpc_port_in_use" if exc.errno == errno.EADDRINUSE else "rpc_listen",
                        ) from None
                    log.info("JSON-RPC on http://%s:%d/rpc (WebSocket /ws, metrics /metrics)",
                             self.cfg.rpc.host, self.rpc_port)
                    if self.cfg.web.enabled:
                        log.info("web explorer on http://%s:%d/", self.cfg.rpc.host, self.rpc_port)
                    try:  # for client commands on this home (`aitbc-peer status --home H`)
                        write_rpc_url(self.home, self.cfg.rpc.host, self.rpc_port)
                    except OSError as exc:
                        log.warning("cannot write %s: %s", self.home.rpc_url_path, exc)
                self.engine = self._make_engine(transport)
                await nursery.start(self.engine.run)
                if self.p2p is not None:
                    from .sync import BlockSync

                    self.sync = BlockSync(self, self.p2p, self.engine)
                    await nursery.start(self.sync.run)
                if self.cfg.miner.enabled:
                    from .miner import load_miner

                    self.miner = load_miner(self)
                    self.metrics.miner_started()
                    await nursery.start(self.miner.run)
                nursery.start_soon(run_blob_gc, self)  # expire unreferenced blobs (node/blobs.py)
                if self.models is not None:
                    await nursery.start(self.models.run)  # fetch the chunks of pinned models (node/models.py)
                nursery.start_soon(self._expire_queued_txs)
                task_status.started(self)
        except BaseExceptionGroup as group:
            # A failed write of the store, WAL or sign state stopped the engine (FatalWriteError): every
            # other service was cancelled with it. Raise it alone, so the process prints one line with
            # its reason code and exits non-zero; the store is closed below (LevelDB batches are atomic).
            fatal = fatal_write_error(group)
            if fatal is None:
                raise
            raise fatal from None
        finally:
            remove_rpc_url(self.home)
            self.close()

    async def _expire_queued_txs(self) -> None:
        """Drop queued (gapped) transactions past their lifetime even when no block commits."""
        while True:
            await trio.sleep(10)
            if self.mempool is not None:
                self.mempool.expire()
                self.metrics.mempool_size.set(len(self.mempool))
                self.metrics.mempool_bytes.set(self.mempool.size_bytes)

    async def _start_p2p(self, nursery: trio.Nursery) -> ConsensusTransport:
        from p2p import ChainStatus, P2PService

        from .network import P2PConsensusTransport, TxGossip, p2p_config
        from .sync import serve_blocks

        c = self.cfg.p2p
        chain = self.chain
        if chain is None or self.mempool is None:
            raise InvariantError("node not opened")

        def status() -> ChainStatus:
            head = chain.head
            return ChainStatus(self.genesis.chain_id, self.genesis.hash, head.height, head.hash, head.height)

        self.p2p = P2PService(
            p2p_config(c),
            self.node_key,
            self.genesis.chain_id,
            self.genesis.hash,
            status_provider=status,
            blocks_provider=lambda start, count: serve_blocks(chain, start, count),
            metrics_registry=self.metrics.registry,
            blob_provider=self.blobs.aget if self.blobs is not None else None,
            validator_key=self.validator_key if c.prove_validator and self.cfg.validator.enabled else None,
            is_validator=self.is_current_validator,
            stem_provider=self._on_stem,
        )
        transport = P2PConsensusTransport(self.p2p, self.genesis.chain_id, node=self)
        self.tx_gossip = TxGossip(self.p2p, lambda raws: self.submit_raw(raws, gossip=False),
                                  on_batch=lambda raws: self.stem.seen(raws) if self.stem is not None else None)
        pool = self.mempool  # opened with the chain, never replaced
        self.stem = StemRelay(self.p2p, lambda raws: self.submit_raw(raws, gossip=False), self.tx_gossip.queue,
                              pool.__contains__, self.metrics, hold=pool.hold, release=pool.release)
        await nursery.start(self.p2p.run)
        await nursery.start(transport.run)
        await nursery.start(self.tx_gossip.run)
        await nursery.start(self.stem.run)
        log.info("p2p: peer id %s listening on %s", self.p2p.peer_id, ", ".join(self.p2p.listen_addrs()))
        return transport

    def _make_engine(self, transport: ConsensusTransport) -> BftEngine:
        """The BFT engine: as a validator when this node's validator key is in the set (and
        validating is enabled), else as a follower that verifies and applies decisions."""
        if self.chain is None or self.mempool is None:
            raise InvariantError("node not opened")
        data = self.home.data_dir(self.cfg)
        vk = self.validator_key
        self.wal = WAL(data / "cs.wal")
        key, sign_state = None, None
        # Under PoS a key outside the genesis set may join later: the engine votes whenever it is in the
        # set of a height.
        staked = self.genesis.consensus != "poa"
        if self.cfg.validator.enabled and (vk.public_key in self.validators or staked):
            key, sign_state = vk, SignState(data / "priv_validator_state.json", vk)
        else:
            log.info("not a validator of this chain: following consensus only")
        return BftEngine(
            self.chain,
            self.mempool,
            ProposerSchedule(self.validators),
            key,
            sign_state,
            transport,
            self._on_commit,
            self.wal,
            on_behind=lambda height: self.sync.behind(height) if self.sync is not None else None,
        )

    # events -------------------------------------------------------------------------------------
    async def _on_commit(self, pending: PendingBlock, commit: Commit) -> None:
        if self.mempool is None or self.chain is None:
            raise InvariantError("node not opened")
        block = pending.block
        h = block.header
        m = self.metrics
        # Senders of txs left out of the block (should not happen for mempool txs) are re-checked too.
        skipped_senders = {tx.sender for tx, _ in pending.outcome.skipped}
        self.mempool.update(block.txs, _CommittedAccounts(self.chain), touched=skipped_senders)
        m.head_height.set(h.height)
        m.finalized_height.set(h.height)
        m.head_time.set(h.time / 1000)
        m.block_txs.observe(len(block.txs))
        m.block_build.observe(pending.build_seconds)
        m.block_commit.observe(pending.commit_seconds)
        m.txs_committed.inc(len(block.txs))
        failed = sum(1 for r in pending.outcome.results if not r.ok)
        if failed:
            m.txs_failed.inc(failed)
        interval = 0.0
        if self._last_block_time is not None:
            interval = max(0.0, (h.time - self._last_block_time) / 1000)
            m.block_interval.observe(interval)
            m.poa_last_interval.set(interval)
        self._last_commit_mono = time.monotonic()
        # One INFO line per block (DEBUG while syncing: `sync:` progress lines cover those).
        log.log(logging.DEBUG if self.sync is not None and self.sync.syncing else logging.INFO,
                "committed block %d %s: %d txs, round %d, %.2f s after the previous one",
                h.height, block.hash.hex()[:12], len(block.txs), commit.round, interval)
        self._last_block_time = h.time
        m.rounds_per_height.observe(commit.round + 1)
        from state.address import encode_address

        if self.engine is not None:
            vs = self.engine.schedule.validators(h.height + 1)
            if vs.hash != self._metrics_valset:  # series at zero for every validator of a new set
                self._metrics_valset = vs.hash
                m.known_validators([encode_address(v.public_key) for v in vs.validators])
        m.blocks_proposed.labels(encode_address(h.proposer)).inc()
        if commit.round > 0 and self.engine is not None:
            for r in range(commit.round):  # proposers of the rounds that did not decide
                m.missed_proposals.labels(encode_address(self.engine.schedule.proposer(h.height, r).public_key)).inc()
        if self._last_proposer is not None and self._last_proposer != h.proposer:
            m.proposer_switches.inc()
        self._last_proposer = h.proposer
        m.mempool_size.set(len(self.mempool))
        m.mempool_bytes.set(self.mempool.size_bytes)
        self._notify_commit_listeners(pending, commit)
        self._update_market_staking_metrics(pending, h.height)
        hub = self.hub
        if hub is not None:
            from rpc.views import header_json, tx_status_json

            for event, fields in pending.outcome.events:
                topic = _event_topic(event, fields)
                if hub.subscriber_count(topic):
                    key = fields.get("job_id")
                    hub.publish(topic, {"event": event, **fields, "block_height": h.height},
                                key=key.lower() if isinstance(key, str) else None)

            if hub.subscriber_count("newHeads"):
                hub.publish("newHeads", header_json(block, len(block.txs)))
            if hub.subscriber_count("tx"):
                for i, (tx, res) in enumerate(zip(block.txs, pending.outcome.results, strict=True)):
                    hub.publish("tx", tx_status_json(tx.hash, h.height, i, res), key="0x" + tx.hash.hex())

    def _update_market_staking_metrics(self, pending: PendingBlock, height: int) -> None:
        from state import market_views, staking_views

        m = self.metrics
        chain = self.chain
        if chain is None:
            raise InvariantError("node not opened")
        from state.address import encode_address

        block_ms = pending.block.header.time
        my_miner = encode_address(self.miner.pk) if self.miner is not None else None
        for event, fields in pending.outcome.events:
            if event == "slash":
                m.staking_slashes.labels(str(fields.get("reason", ""))).inc()
            elif "job_id" in fields or event.startswith("miner_"):
                m.market_events.labels(event).inc()
            if event == "miner_slashed":
                m.market_slashes.labels(str(fields.get("reason", ""))).inc()
            elif event == "job_submitted":
                if len(self._job_submit_ms) < 100_000:  # bounded; beyond it settlement reads the block
                    try:
                        self._job_submit_ms[bytes.fromhex(str(fields.get("job_id")).removeprefix("0x"))] = block_ms
                    except ValueError:
                        pass
            elif event in SETTLE_EVENTS:
                self._observe_settlement(fields, SETTLE_EVENTS[event], block_ms)
                if my_miner is not None and fields.get("miner") == my_miner and event != "job_expired":
                    outcome = "paid" if event == "payment_released" else str(fields.get("reason", ""))
                    if outcome in ("paid", *MINER_SLASH_REASONS):
                        m.miner_jobs_settled.labels(outcome).inc()
        st = market_views.load_stats(chain.get_object)
        for state_name in ("QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELED", "EXPIRED"):
            m.market_jobs.labels(state_name).set(st.by_state.get(state_name, 0))
        m.market_escrow.set(st.escrow)
        m.market_bonds.set(st.bonds)
        from state.market import anon, attest, tree_queue

        m.zk_tree_leaves.labels("receipt").set(attest.tree_size(chain.get_object))
        m.zk_tree_leaves.labels("bidder").set(anon.tree_size(chain.get_object))
        m.zk_tree_queue.set(tree_queue.pending(chain.get_object))
        m.supply_total.set(chain.supply())
        if self.genesis.consensus != "poa" and (height % 10 == 0 or pending.outcome.valset_update is not None):
            sv = staking_views.metrics_view(chain.get_object, params=self.genesis.params.staking, height=height)
            m.staking_bonded.set(int(sv["bonded"]))
            m.staking_active.set(sv["active_validators"])
            m.staking_jailed.set(sv["jailed"])
            m.set_staking_validators(sv["missed_blocks"], sv["jailed_validators"])
            p = self.genesis.params.staking
            m.staking_jail_threshold.set(p.signed_blocks_window * (10_000 - p.min_signed_bps) // 10_000)

    def _observe_settlement(self, fields: dict, outcome: str, block_ms: int) -> None:
        """``market_job_settlement_seconds``: from the job's submission block to this block."""
        from state import market_views

        try:
            job_id = bytes.fromhex(str(fields["job_id"]).removeprefix("0x"))
        except (KeyError, ValueError):
            return
        submitted = self._job_submit_ms.pop(job_id, None)
        chain = self.chain
        if submitted is None and chain is not None:  # submitted before this process started
            job = market_views.load_job(chain.get_object, job_id)
            block = chain.block_at(job.submitted_height) if job is not None else None
            submitted = block.header.time if block is not None else None
        if submitted is not None:
            self.metrics.market_settlement.labels(outcome).observe(max(0.0, (block_ms - submitted) / 1000))

    def expected_block_interval_s(self) -> float:
        """Seconds between blocks on a live chain: the block interval, or the empty-block heartbeat when
        the chain makes no empty blocks."""
        params = self.genesis.params
        ms = params.block_interval_ms
        if not params.create_empty_blocks:
            beat = self.engine.params.empty_block_heartbeat_ms if self.engine is not None else 30_000
            ms = max(ms, beat)
        return ms / 1000

    def health(self) -> dict:
        """Liveness as a load balancer should see it: ``status`` "ok", or the first of ``reasons``
        ("syncing": catching up with peers; "stalled": no block for ``node.stall_intervals`` intervals).
        Finality is instant (a committed block is final), so there is no "not_finalizing" state."""
        if self.chain is None:
            raise InvariantError("node not opened")
        head = self.chain.head
        now = time.time()
        # Since the last block: by its own timestamp, or since this process last moved its head (or
        # started), whichever is shorter — a restarted node is not stalled before it had a chance.
        since = max(0.0, min(now - head.time / 1000, time.monotonic() - self._last_commit_mono))
        interval = self.expected_block_interval_s()
        stall_after = interval * self.cfg.node.stall_intervals
        peers = len(self.p2p.peers()) if self.p2p is not None else 0
        sync = self.sync
        best = max(head.height, sync.status()["target_height"]) if sync is not None else head.height
        syncing = bool(sync is not None and sync.syncing)
        reasons = []
        if syncing:
            reasons.append("syncing")
        if since > stall_after:
            reasons.append("stalled")
        return {
            "status": reasons[0] if reasons else "ok",
            "reasons": reasons,
            "height": head.height,
            "hash": "0x" + head.hash.hex(),
            "finalized_height": head.height,
            "seconds_since_last_block": round(since, 3),
            "block_interval_s": interval,
            "stall_after_s": stall_after,
            "peers": peers,
            "sync": {"syncing": syncing, "height": head.height, "best_height": best,
                     "behind": max(0, best - head.height)},
        }

    def is_validator(self) -> bool:
        """Whether this node's validator key votes on the next height."""
        return self.is_current_validator(self.validator_key.public_key)

    def is_current_validator(self, public_key: bytes) -> bool:
        """Whether ``public_key`` votes on the next height (p2p: peers proving it get a protected slot)."""
        if self.engine is not None and self.chain is not None:
            return public_key in self.engine.schedule.validators(self.chain.head.height + 1)
        return public_key in self.validators

    def scan_objects(self, prefix: bytes):
        """(key, value) of committed state objects whose key starts with ``prefix``, in key order."""
        if self.store is None:
            raise InvariantError("node not opened")
        start = len(P_OBJECT)
        with self.store.db.iterator(prefix=P_OBJECT + prefix) as it:
            for k, v in it:
                yield k[start:], v

    def commit_events(self, size: int = 64) -> trio.MemoryReceiveChannel:
        """A channel receiving ``(pending, commit)`` after every committed block (slow readers drop)."""
        send, recv = trio.open_memory_channel(size)
        self._commit_listeners.append(send)
        return recv

    def _notify_commit_listeners(self, pending: PendingBlock, commit: Commit) -> None:
        for ch in list(self._commit_listeners):
            try:
                ch.send_nowait((pending, commit))
            except trio.WouldBlock:
                pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._commit_listeners.remove(ch)

    # blobs --------------------------------------------------------------------------------------
    async def fetch_blob(self, blob_hash: bytes, *, timeout_s: float = 30.0) -> bytes | None:
        """A blob from the local store, else from connected peers (verified, then stored locally)."""
        if self.blobs is None:
            raise InvariantError("node not opened")
        data = await self.blobs.aget(blob_hash)
        if data is not None or self.p2p is None:
            return data
        with trio.move_on_after(timeout_s):
            for peer in self.p2p.peers():
                try:
                    data = await self.p2p.request_blob(peer.peer_id, blob_hash)
                except Exception as exc:  # unreachable peer, refusal, bad content: try the next one
                    log.debug("blob %s from %s: %s", blob_hash.hex()[:16], peer.peer_id, exc)
                    continue
                if data is not None:
                    await self.blobs.aput(data, cache=True)
                    return data
        return None

    # transactions -------------------------------------------------------------------------------
    async def submit_raw(self, raws: Sequence[bytes], *, gossip: bool = True) -> list[SubmitResult]:
        """Decode, verify (in worker threads for big batches) and add transactions to the mempool;
        with ``gossip`` (local clients) the accepted ones are also batched out to peers."""
        if self.mempool is None:
            raise InvariantError("node not opened")
        results: list[SubmitResult] = [SubmitResult(None) for _ in raws]
        txs: list[tuple[int, Transaction]] = []
        for i, raw in enumerate(raws):
            try:
                txs.append((i, Transaction.decode(raw)))
            except DecodeError as exc:
                reason = exc.reason if exc.reason in ("too_large", "non_canonical") else "malformed"
                results[i] = SubmitResult(None, TxError(f"malformed transaction: {exc}", reason))
        ok = await self._verify_signatures([t for _, t in txs])
        # Sponsored kinds (anonymous bids: nobody pays for a refused one) are checked in a worker thread
        # first, body (their proof) and sponsor against the head state: what could not go in the next
        # block never takes a pool slot. The mempool's own body check then hits the verified-proof cache.
        heavy = [(j, t) for j, ((_, t), good) in enumerate(zip(txs, ok, strict=True))
                 if good and (k := TX_KINDS.get(t.type)) is not None and k.sponsor is not None]
        if heavy:
            refused = await trio.to_thread.run_sync(_precheck_sponsored, self.chain, [t for _, t in heavy])
            for (j, t), err in zip(heavy, refused, strict=True):
                if err is not None:
                    ok[j] = False
                    results[txs[j][0]] = SubmitResult(t.hash, err)
        m = self.metrics
        accepted = 0
        for (i, tx), good in zip(txs, ok, strict=True):
            if not good:
                if results[i].error is None:
                    results[i] = SubmitResult(tx.hash, TxError("invalid transaction signature", "bad_signature"))
                continue
            try:
                self.mempool.add(tx, verified=True)
            except TxError as exc:
                results[i] = SubmitResult(tx.hash, exc)
                continue
            results[i] = SubmitResult(tx.hash)
            accepted += 1
        for r in results:
            if r.error is not None:
                m.tx_rejected.labels(r.error.reason).inc()
        if gossip and accepted and self.tx_gossip is not None:
            # sponsored transactions (anonymous bids) leave by the stem, not under our peer id (node/stem.py)
            stemmed = {i for i, t in txs if is_stemmed(t)} if self.stem is not None else set()
            self.tx_gossip.queue([raws[i] for i, r in enumerate(results) if r.error is None and i not in stemmed])
            if stemmed:
                self.stem.send_own([raws[i] for i in sorted(stemmed) if results[i].error is None])
        if accepted:
            m.tx_accepted.inc(accepted)
            m.mempool_size.set(len(self.mempool))
            m.mempool_bytes.set(self.mempool.size_bytes)
            if self.engine is not None:
                self.engine.notify_tx()
        return results

    async def _on_stem(self, peer_id: str, raw: bytes) -> str | None:
        """The p2p layer's stem provider (a peer hands us a sponsored transaction)."""
        if self.stem is None:
            return "unavailable"
        return await self.stem.on_stem(peer_id, raw)

    async def _verify_signatures(self, txs: list[Transaction]) -> list[bool]:
        if len(txs) < PARALLEL_VERIFY_MIN:
            return [t.verify_signature() for t in txs]
        out: list[bool] = [False] * len(txs)
        half = len(txs) // 2

        def work(lo: int, hi: int) -> None:
            for j in range(lo, hi):
                out[j] = txs[j].verify_signature()

        async with trio.open_nursery() as n:
            n.start_soon(trio.to_thread.run_sync, work, 0, half)
            n.start_soon(trio.to_thread.run_sync, work, half, len(txs))
        return out


def _precheck_sponsored(chain: ChainState, txs: list[Transaction]) -> list[TxError | None]:
    """For each transaction (run in a worker thread): its body check, then its sponsor check on an
    overlay of the head state at the next height; the refusal, or None. Refusals are reported as the
    mempool reports its own: ``invalid_body`` or ``sponsor_refused``, the rule's reason in ``detail``."""
    from state.machine import BlockEnv, Execution

    out: list[TxError | None] = []
    with chain.lane:  # a consistent head while the overlay reads
        h = chain.head
        env = BlockEnv(chain.chain_id, h.height + 1, max(int(time.time() * 1000), h.time + 1), b"\x00" * 32,
                       chain.params, frozenset(), (), chain.genesis.consensus)
        for tx in txs:
            try:
                check_body(tx)
            except TxError as exc:  # as the mempool reports a body check: the rule's reason in detail
                detail = exc.reason if exc.reason != "invalid_body" else None
                out.append(MempoolError(f"invalid body: {exc}", "invalid_body", detail))
                continue
            except (KeyError, TypeError, ValueError) as exc:
                out.append(MempoolError(f"invalid body: {type(exc).__name__}: {exc}", "invalid_body"))
                continue
            try:
                TX_KINDS[tx.type].sponsor(Execution(chain, env), tx)  # type: ignore[misc]
                out.append(None)
            except TxError as exc:
                out.append(MempoolError(f"{tx.type} refused by its sponsor check: {exc}", "sponsor_refused",
                                        exc.reason))
            except (KeyError, TypeError, ValueError) as exc:
                out.append(MempoolError(f"{tx.type} refused by its sponsor check: {type(exc).__name__}: {exc}",
                                        "sponsor_refused"))
    return out
