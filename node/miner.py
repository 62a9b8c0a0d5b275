"""The miner role: register, bid, execute awarded jobs, serve results, sign receipts; optionally verify
other miners' results and challenge wrong ones.

Driven by committed blocks (``Node.commit_events``): after each block the role looks at the market state
and acts. Every action is a transaction signed by the miner key and submitted through the node's own
mempool (and gossiped), so it goes through exactly the checks any peer applies.

The verifier (``verify``) re-checks every kind whose results the chain can judge
(``state.market.challengeable``): exact kinds are re-executed and compared leaf by leaf; floating-point
kinds (``mlp-f32``) are checked with the kind's tolerance rule (``verify_full``) and, when that fails, the
leaves furthest from this node's own result are tried with the kind's deterministic ``check_leaf`` — the
check every node runs on the challenge — so only a leaf the chain will find wrong is ever challenged.

Data availability: the miner answers every availability challenge against its jobs by publishing the
named result rows with their Merkle proofs (``availability_response``) from its blob store. A verifier
that cannot fetch a sampled result raises an availability challenge on a random sample of rows, and
once the miner has published them it checks each published row with the kind's ``check_leaf`` and
challenges a wrong one — so withholding the blob neither hides a wrong result nor gets the miner paid.

llm-generate (``node/llm.py``): the miner serves the models of ``[miner] models`` (pinned at start, bid on
once complete, at their price per token) and answers an ``llm_challenge`` against its job with the step
digests of the disputed position (``llm_steps``); a verifier with the model re-runs a sampled llm job,
challenges the first token row that differs from its run and, once the miner answered, proves the first
step whose output differs (``llm_step_proof``; SAMPLE when only the token differs).

Seams: the role's decisions are small methods that a subclass may override — whether to answer an awarded
job (:meth:`MinerService.answers_job`), the result it commits to (:meth:`~MinerService.produce_result`),
whether it serves a result blob (:meth:`~MinerService.serves_blob`) and answers availability challenges
(:meth:`~MinerService.answers_availability`), which leaf it finds wrong
(:meth:`~MinerService.find_wrong_leaf`), how it challenges (:meth:`~MinerService.submit_challenge`), whether
it answers an llm challenge (:meth:`~MinerService.answers_llm_challenge`) and with which step digests
(:meth:`~MinerService.llm_step_digests`).
The node has no fault switches: byzantine miners for tests and testnets (lying, silent, withholding,
false challengers) are subclasses in ``testnet/faults.py``, installed from outside by its entry point.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import trio

from state import codec
from state.address import encode_address
from state.crypto import SigningKey
from state.errors import AitbcError, InvariantError
from state.types import Transaction

if TYPE_CHECKING:
    from .config import MinerSection
    from .service import Node

log = logging.getLogger("aitbc.miner")

MAX_RESULT_BYTES = 1 << 20


class ResultUnavailable(AitbcError):
    """A job's result blob could not be fetched from this node or any peer."""

    reason = "unavailable"
MAX_BACKLOG_PER_SLOT = 4  # awarded-but-unanswered jobs per execution slot before the miner stops bidding
LLM_TOKENS_PER_S_GUESS = 10  # llm-generate throughput in the capabilities (the probe runs no model)


MAX_LLM_DISPUTES = 4  # llm challenges this verifier keeps open at once (each holds a whole trace)
LLM_FETCH_TRIES = 3  # fetches of an llm result before this verifier challenges its availability


class LlmDispute:
    """An llm challenge this verifier raised: the position, the miner's rows and this node's run."""

    def __init__(self, position: int, leaves: list[bytes], run: Any) -> None:
        self.position, self.leaves, self.run = position, leaves, run
        self.proving = False


def parse_price_list(items: list[str]) -> dict[str, int]:
    """``["matmul-u32=1000", ...]`` -> {kind: unit price in base units}."""
    out: dict[str, int] = {}
    for item in items:
        kind, sep, price = item.partition("=")
        if not sep or not price.strip().isdigit():
            raise AitbcError(f"miner.prices: expected KIND=BASE_UNITS, got {item!r}")
        out[kind.strip()] = int(price)
    return out


class MinerService:
    """One node's miner (and optional verifier)."""

    def __init__(self, node: Node, key: SigningKey, cfg: MinerSection, executor: Any = None) -> None:
        from gpu.executor import Executor
        from gpu.kinds import KINDS

        self.node = node
        self.key = key
        self.pk = key.public_key
        self.cfg = cfg
        self.executor = executor or Executor()
        prices = parse_price_list(cfg.prices)
        self.prices = prices or {k: 1000 for k in KINDS}
        # llm-generate: the models served and their prices per token (node/llm.py); the kind loads them
        # from this node's pinned chunks
        from gpu.kinds.llm_generate import LlmGenerate

        from .llm import LLM_KIND, MinerModels, NodeModelSource, parse_model_prices

        self.llm = MinerModels(node, parse_model_prices(getattr(cfg, "models", [])))
        llm_kind = KINDS.get(LLM_KIND)
        if isinstance(llm_kind, LlmGenerate):
            llm_kind.install(NodeModelSource(node), cache_bytes=getattr(cfg, "model_cache_bytes", None))
        if self.llm:
            self.prices[LLM_KIND] = self.llm.max_price
        else:
            self.prices.pop(LLM_KIND, None)  # no model configured: this miner runs no llm jobs
        self._caps_update_at = -100
        self._llm_answered: set[tuple[bytes, int]] = set()  # (job, dispute) llm_steps sent
        self._llm_disputes: dict[bytes, LlmDispute] = {}  # verifier: jobs this node challenged, by id
        self._submit_lock = trio.Lock()
        self._bid: set[bytes] = set()
        self._running: set[bytes] = set()
        self._checked: set[bytes] = set()
        self._answered: set[tuple[bytes, int]] = set()  # (job, deadline) of availability answers sent
        self._da_raised: dict[bytes, int] = {}  # job -> answers seen when this verifier raised one
        self._limiter = trio.CapacityLimiter(max(1, cfg.max_concurrent))
        self._nursery: trio.Nursery | None = None
        self._registering_since = -1
        self._topup_at = -100
        self.stats: dict[str, int] = {"bids": 0, "receipts": 0, "challenges": 0, "executed": 0, "failed": 0}
        from .miner_anon import AnonBidder

        self.anon = AnonBidder(self)

    # plumbing -------------------------------------------------------------------------------------
    @property
    def chain(self):
        if self.node.chain is None:
            raise InvariantError("miner: the node is not opened")
        return self.node.chain

    @property
    def nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise InvariantError("miner: not running")
        return self._nursery

    def _scan(self, prefix: bytes):
        return self.node.scan_objects(prefix)

    async def _submit(self, tx_type: str, body: dict) -> bytes | None:
        """Sign and submit a transaction from the miner key; None (logged) if the mempool refused it."""
        async with self._submit_lock:
            mp = self.node.mempool
            if mp is None:
                raise InvariantError("miner: the node is not opened")
            nonce = max(self.chain.account(self.pk).nonce, mp.pending_nonce(self.pk))
            fee = self.node.genesis.params.min_fee
            tx = Transaction.create(self.key, self.node.genesis.chain_id, tx_type, nonce, fee, body)
            (res,) = await self.node.submit_raw([tx.raw])
        if res.error is not None:
            log.warning("%s refused by the mempool: %s (%s)", tx_type, res.error, res.error.reason)
            return None
        return tx.hash

    # lifecycle ------------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        events = self.node.commit_events()
        log.info("miner %s: backend %s, prices %s", encode_address(self.pk), self.executor.backend.name, self.prices)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await self._on_block()
            async for _pending, _commit in events:
                try:
                    await self._on_block()
                except Exception:
                    log.exception("miner: handling block %d failed", self.chain.head.height)

    async def _on_block(self) -> None:
        from state import market_views as mv

        get = self.chain.get_object
        me = mv.load_miner(get, self.pk)
        height = self.chain.head.height
        if me is None:
            if self._registering_since < 0 or height - self._registering_since > 10:
                await self._register()
                self._registering_since = height
            return
        # awarded jobs are always finished (also while exiting: a missed deadline costs bond)
        for job in mv.assigned_jobs(self._scan, get, self.pk):
            if job.job_id not in self._running and self.answers_job(job):
                self._running.add(job.job_id)
                self.nursery.start_soon(self._execute, job)
        for job in mv.availability_challenged_jobs(self._scan, get, self.pk):
            key = (job.job_id, job.availability["deadline"])
            if key not in self._answered and self.answers_availability(job):
                self._answered.add(key)
                self.nursery.start_soon(self._answer_availability, job)
        if self.cfg.verify:
            self._check_published_rows(get)
        await self._on_block_llm(me, height)
        if self.llm or self.cfg.verify:
            self._check_llm_disputes(get)
        if me.status != "active":
            return
        if self.cfg.anonymous:
            await self.anon.on_block(height)
        target = max(self.cfg.bond, self.node.genesis.params.market.min_miner_bond)
        if me.bond < target and height - self._topup_at > 5:  # slashed below target: top the bond up
            self._topup_at = height
            if await self._submit("miner_update", {"add_bond": target - me.bond}) is not None:
                log.info("miner: bond %d below %d after a slash: adding %d", me.bond, target, target - me.bond)
        # capacity: no new bids while the awarded backlog would not finish in time
        if me.running < MAX_BACKLOG_PER_SLOT * max(1, self.cfg.max_concurrent):
            for job in mv.biddable_jobs(self._scan, get, self.pk, height=height + 1):
                if job.job_id not in self._bid:
                    await self._maybe_bid(job)
        if self.cfg.verify:
            for job in mv.challengeable_jobs(self._scan, get):
                if job.job_id not in self._checked and job.miner != self.pk and mv.should_verify(job, self.pk):
                    self._checked.add(job.job_id)
                    self.nursery.start_soon(self._verify, job)

    # llm-generate ----------------------------------------------------------------------------------
    def _with_llm_caps(self, caps: dict) -> dict:
        """``caps`` with an ``llm-generate`` throughput when this miner serves models (the chain lets a
        miner bid only on kinds its capabilities list)."""
        from .llm import LLM_KIND

        if not self.llm:
            return caps
        return {**caps, "throughput": {**caps["throughput"], LLM_KIND: LLM_TOKENS_PER_S_GUESS}}

    async def _on_block_llm(self, me: Any, height: int) -> None:
        """Pin and check the configured models; a registration made without llm-generate in its
        capabilities (models configured later) is updated."""
        from state import market

        from .llm import LLM_KIND

        if not self.llm:
            return
        await self.llm.refresh()
        if me.status == "active" and LLM_KIND not in me.capabilities["throughput"] and height - self._caps_update_at > 10:
            self._caps_update_at = height
            body = market.miner_update_body(capabilities=self._with_llm_caps(me.capabilities), prices=self.prices)
            if await self._submit("miner_update", body) is not None:
                log.info("miner: adding llm-generate to the capabilities")

    # registration and bids --------------------------------------------------------------------------
    async def _register(self) -> None:
        from state import market

        caps = await trio.to_thread.run_sync(lambda: probe_capabilities(0.1, executor=self.executor))
        caps = self._with_llm_caps(caps)
        body = market.miner_register_body(bond=self.cfg.bond, capabilities=caps, prices=self.prices)
        if await self._submit("miner_register", body) is not None:
            log.info("miner %s: registering with a bond of %d", encode_address(self.pk), self.cfg.bond)

    async def _maybe_bid(self, job: Any) -> None:
        from state import market

        self._bid.add(job.job_id)
        price = self.prices.get(job.kind)
        if job.kind == "llm-generate":  # priced per model; only models complete on this node
            price = self.llm.price(job.params.get("model"))
            if price is None:
                self._bid.discard(job.job_id)  # the model may become ready before the window closes
                return
        if price is None or price > job.max_price:
            return
        req = job.requirements or {}
        if req.get("backend") and req["backend"] != self.executor.backend.name:
            return
        if req.get("min_memory") and req["min_memory"] > self.executor.backend.memory_bytes:
            return
        from state.market_views import load_sealed

        sa = load_sealed(self.chain.get_object, job.job_id)
        if sa is not None:
            await self._sealed_bid(job, sa, price)
            return
        from state.market import anon

        aa = anon.get(self.chain.get_object, job.job_id)
        if aa is not None:  # anonymous bids only: proven in the background (snarkjs, seconds)
            if self.cfg.anonymous:
                self.nursery.start_soon(self._anon_bid, job, aa, price)
            return
        if await self._submit("bid", market.bid_body(job.job_id, price)) is not None:
            self.stats["bids"] += 1
            self.node.metrics.market_bids.inc()
            log.info("bid %d on job %s", price, job.job_id.hex()[:16])

    async def _anon_bid(self, job: Any, aa: Any, price: int) -> None:
        """An anonymous-bid job (node/miner_anon.py); tried again next block when it could not bid yet."""
        if await self.anon.bid(job, aa, price):
            self.stats["bids"] += 1
            self.node.metrics.market_bids.inc()
        else:
            self._bid.discard(job.job_id)

    async def _sealed_bid(self, job: Any, sa: Any, price: int) -> None:
        """A sealed-bid job (state/market/sealed.py): commit to the tick of ``price``, prove its range and
        seal the opening to the client; the deposit is locked until the award."""
        from state.market import sealed
        from zk import auction

        if any(b[0] == self.pk for b in sa.bids) or len(sa.bids) >= min(
            sealed.MAX_SEALED_BIDS, self.node.genesis.params.market.max_bids_per_job
        ):
            return  # already in, or full: the chain would refuse it and keep the fee
        if self.chain.account(self.pk).balance < sa.deposit + self.node.genesis.params.min_fee:
            log.warning("sealed bid on job %s skipped: the deposit %d exceeds the balance", job.job_id.hex()[:16],
                        sa.deposit)
            return
        tick = auction.price_tick(price, job.max_price, sa.bits)
        chain_id = self.node.genesis.chain_id
        bid, _ = await trio.to_thread.run_sync(
            lambda: auction.make_bid(chain_id, job.job_id, self.pk, sa.key, sa.bits, tick)
        )
        if await self._submit(sealed.TX_SEALED_BID, sealed.sealed_bid_body(job.job_id, bid)) is not None:
            self.stats["bids"] += 1
            self.node.metrics.market_bids.inc()
            log.info("sealed bid on job %s (price kept sealed)", job.job_id.hex()[:16])

    # seams: the role's decisions (overridden by test tooling, see the module docstring) ---------------
    def answers_job(self, job: Any) -> bool:
        """Whether to execute ``job``, awarded to this miner (always: a missed deadline costs bond)."""
        return True

    def produce_result(self, job: Any, res: Any) -> tuple[bytes, bytes, bytes]:
        """The result this miner commits to for ``job`` from the executor's ``res``: (encoded blob,
        result_hash, result_root) — the receipt signs the last two."""
        return res.encoded, res.result_hash, res.result_root

    def serves_blob(self, job_id: bytes) -> bool:
        """Whether this miner serves the result blob of its job ``job_id`` to others (always)."""
        return True

    def answers_availability(self, job: Any) -> bool:
        """Whether to answer an availability challenge against ``job`` (whenever the blob is served)."""
        return self.serves_blob(job.job_id)

    async def publish_result(self, job: Any, encoded: bytes) -> None:
        """Make a result available to clients and verifiers: it goes into the node's blob store, which
        serves it over the blob protocol and ``blob_get`` — unless :meth:`serves_blob` says no."""
        if self.node.blobs is None:
            raise InvariantError("miner: the node is not opened")
        if self.serves_blob(job.job_id):
            await self.node.blobs.aput(encoded)

    # execution -------------------------------------------------------------------------------------
    async def _job_input(self, job: Any) -> bytes | None:
        inp = job.input
        if inp is None:
            return None
        if "inline" in inp:
            return inp["inline"]
        data = await self.node.fetch_blob(inp["blob"])
        if data is None:
            raise AitbcError(f"input blob {inp['blob'].hex()[:16]} is not available from any peer")
        return data

    async def _execute(self, job: Any) -> None:
        from state import market

        try:
            async with self._limiter:
                data = await self._job_input(job)
                t0 = time.perf_counter()
                res = await self.executor.run(
                    job.kind, job.params, data, time_limit_s=self.cfg.job_time_limit_s, max_result_bytes=MAX_RESULT_BYTES
                )
                elapsed = time.perf_counter() - t0
            self.node.metrics.gpu_busy.inc(res.gpu_seconds)
            self.node.metrics.job_exec.labels(job.kind).observe(elapsed)
            encoded, rhash, rroot = self.produce_result(job, res)
            await self.publish_result(job, encoded)
            units = min(res.units, job.max_units)
            receipt, sig = market.make_receipt(
                self.key,
                self.node.genesis.chain_id,
                job,
                units=units,
                started_at=res.started_at_ms,
                completed_at=res.completed_at_ms,
                result_hash=rhash,
                result_root=rroot,
                result_size=len(encoded),
                backend=res.backend,
                device=res.device,
            )
            if await self._submit("receipt", {"receipt": receipt, "sig": sig}) is not None:
                self.stats["receipts"] += 1
                self.stats["executed"] += 1
                self.node.metrics.market_receipts.inc()
                self.node.metrics.miner_jobs.labels("completed").inc()
                log.info("job %s done in %.3f s: %d %s, result %s", job.job_id.hex()[:16], elapsed, units,
                         res.unit_type, rhash.hex()[:16])
            else:  # the receipt was refused by the mempool (logged by _submit)
                self.node.metrics.miner_jobs.labels("failed").inc()
        except Exception as exc:
            self.stats["failed"] += 1
            self.node.metrics.miner_jobs.labels("failed").inc()
            log.warning("job %s failed: %s", job.job_id.hex()[:16], exc)

    # availability ----------------------------------------------------------------------------------
    async def _answer_availability(self, job: Any) -> None:
        """Publish the rows an availability challenge names, with Merkle proofs, from the blob store."""
        from gpu.encoding import decode_array, result_leaves
        from state import market
        from state.merkle import merkle_proof

        da = job.availability
        try:
            blob = await self.node.fetch_blob(job.receipt["result_hash"])
            if blob is None:
                raise ResultUnavailable("the result blob is not in this node's store")

            def build() -> dict:
                leaves = result_leaves(decode_array(blob, max_bytes=MAX_RESULT_BYTES))
                chunks = [(i, leaves[i], merkle_proof(leaves, i)) for i in da["indices"]]
                return market.availability_response_body(job.job_id, chunks)

            body = await trio.to_thread.run_sync(build)
        except Exception as exc:
            log.error("job %s: cannot answer the availability challenge of rows %s: %s",
                      job.job_id.hex()[:16], da["indices"], exc)
            return
        if await self._submit("availability_response", body) is not None:
            log.info("job %s: published rows %s for an availability challenge (due by height %d)",
                     job.job_id.hex()[:16], da["indices"], da["deadline"])

    def availability_sample(self, job: Any) -> list[int]:
        """Rows to name in an availability challenge of ``job``: a random sample the miner cannot
        predict, as many as the chain allows for one answer."""
        import secrets

        from gpu.kinds import get_kind

        p = self.node.genesis.params.market
        kind = get_kind(job.kind)
        count = kind.leaf_count(job.params)
        n = min(p.max_availability_chunks, count, max(1, p.max_availability_bytes // kind.leaf_bytes(job.params)))
        return sorted(secrets.SystemRandom().sample(range(count), n))

    async def submit_availability_challenge(self, job: Any) -> bool:
        """Challenge the availability of ``job``'s result (it could not be fetched)."""
        from state import market

        if job.availability is not None:
            return False  # someone already did; this verifier checks the rows once they are published
        p = self.node.genesis.params.market
        if job.availability_rounds >= p.max_availability_challenges_per_job:
            return False
        indices = self.availability_sample(job)
        if await self._submit("availability_challenge", market.availability_challenge_body(job.job_id, indices)) is None:
            return False
        self._da_raised[job.job_id] = len(job.availability_answers)
        log.warning("job %s: result unavailable; availability challenge of rows %s", job.job_id.hex()[:16], indices)
        return True

    def _check_published_rows(self, get: Any) -> None:
        """Jobs this verifier challenged for availability whose rows are now published: check them."""
        from state import market_views as mv

        for job_id, seen in list(self._da_raised.items()):
            job = mv.load_job(get, job_id)
            if job is None or job.state != "COMPLETED" or job.payment != "escrowed":
                del self._da_raised[job_id]
            elif len(job.availability_answers) > seen:
                del self._da_raised[job_id]
                self.nursery.start_soon(self._verify_published_rows, job)

    async def _verify_published_rows(self, job: Any) -> None:
        """Check the rows the miner published on chain with the kind's ``check_leaf``; challenge a wrong one."""
        from gpu.kinds import get_kind
        from state import market

        kind = get_kind(job.kind)
        if not getattr(kind, "leaf_disputes", True):  # llm-generate: rows are disputed from a whole run
            try:
                await self._verify_llm(job)  # the miner has just served rows: the blob may be fetchable now
            except Exception as exc:
                log.warning("job %s: verifying after the availability answer failed: %s", job.job_id.hex()[:16], exc)
            return
        try:
            data = await self._job_input(job)
            rows = []
            for tx_hash in job.availability_answers:
                found = self.chain.tx_lookup(tx_hash)
                if found is not None:
                    rows.extend(found[0].body["chunks"])

            def first_wrong() -> list | None:
                return next((c for c in rows if not kind.check_leaf(job.params, data, c[0], c[1])), None)

            wrong = await trio.to_thread.run_sync(first_wrong)
        except Exception as exc:
            log.warning("job %s: checking the published rows failed: %s", job.job_id.hex()[:16], exc)
            return
        if wrong is None:
            log.info("job %s: the %d published rows are correct", job.job_id.hex()[:16], len(rows))
            return
        index, leaf, proof = wrong
        blob_input = data if job.input is not None and "blob" in job.input else None
        await self.submit_challenge(job, market.challenge_body(job.job_id, index, leaf, list(proof), blob_input))

    # llm-generate disputes -------------------------------------------------------------------------
    def answers_llm_challenge(self, job: Any) -> bool:
        """Whether to answer an ``llm_challenge`` against this miner's ``job`` with ``llm_steps`` (always)."""
        return True

    def llm_step_digests(self, job: Any, t: int) -> list[bytes]:
        """The output digests of position ``t``'s steps of this miner's ``job`` (what its row's step root
        commits to): kept from the run, else recomputed. Blocking: called in a worker thread."""
        from gpu.kinds import get_kind

        return get_kind(job.kind).position_digests(job.params, t)

    def _check_llm_disputes(self, get: Any) -> None:
        """Answer llm challenges against this miner's jobs; move this verifier's own disputes on."""
        from state import market_views as mv
        from state.market import llm_disputes as ld

        from .llm import LLM_KIND

        live: set[bytes] = set()
        for job in mv.challengeable_jobs(self._scan, get, kind=LLM_KIND):
            if job.miner != self.pk:
                continue
            live.add(job.job_id)
            for d in ld.load_disputes(get, job.job_id):
                key = (job.job_id, d.index)
                if d.stage == ld.STEPS and key not in self._llm_answered and self.answers_llm_challenge(job):
                    self._llm_answered.add(key)
                    self.nursery.start_soon(self._answer_llm_challenge, job, d)
        self._llm_answered = {k for k in self._llm_answered if k[0] in live}  # bounded by jobs in their window
        for job_id, st in list(self._llm_disputes.items()):
            job = mv.load_job(get, job_id)
            mine = [d for d in ld.load_disputes(get, job_id) if d.challenger == self.pk and d.position == st.position]
            d = mine[-1] if mine else None
            if job is None or job.state != "COMPLETED" or job.payment != "escrowed" or (
                    d is not None and d.stage == ld.CLOSED):
                del self._llm_disputes[job_id]
                log.info("job %s: llm dispute %s closed: %s %s (job %s, %s)", job_id.hex()[:16],
                         d.index if d else "-", d.outcome if d else "-", (d.fault if d else None) or "",
                         job.state if job else "-", (job.failure or job.payment) if job else "-")
                continue
            if d is not None and d.stage == ld.PROOF and not st.proving:
                st.proving = True
                self.nursery.start_soon(self._prove_llm_step, job, d, st)

    async def _answer_llm_challenge(self, job: Any, d: Any) -> None:
        from state.market import llm_disputes as ld

        try:
            digests = await trio.to_thread.run_sync(self.llm_step_digests, job, d.position)
        except Exception as exc:
            log.error("job %s: cannot recompute the steps of position %d for llm challenge %d: %s",
                      job.job_id.hex()[:16], d.position, d.index, exc)
            return
        if await self._submit("llm_steps", ld.llm_steps_body(job.job_id, d.index, digests)) is not None:
            log.info("job %s: posted the %d step digests of position %d (llm challenge %d)", job.job_id.hex()[:16],
                     len(digests), d.position, d.index)

    async def _verify_llm(self, job: Any) -> None:
        """Re-run an llm job (when this node has its model), compare the token rows, and challenge the
        first differing position (``llm_challenge``); the step proof follows once the miner answered."""
        from gpu.encoding import result_leaves
        from gpu.kinds import get_kind
        from state.market import llm_disputes as ld
        from state.merkle import merkle_proof

        if len(self._llm_disputes) >= MAX_LLM_DISPUTES:
            log.warning("job %s: %d llm disputes open already; not verified", job.job_id.hex()[:16],
                        len(self._llm_disputes))
            return
        if not await self._has_model(job.params["model"]):
            log.info("job %s: its model is not complete on this node; not verified", job.job_id.hex()[:16])
            return
        kind = get_kind(job.kind)
        for attempt in range(LLM_FETCH_TRIES):  # a peer busy for a moment is no reason to raise availability
            try:
                theirs, _ = await self.fetch_result(job)
                break
            except ResultUnavailable:
                if attempt == LLM_FETCH_TRIES - 1:
                    raise
                await trio.sleep(1.0)
        ours = await trio.to_thread.run_sync(lambda: kind.run(job.params, keep_trace=True))
        if theirs.dtype != ours.rows.dtype or theirs.shape != ours.rows.shape:
            # its rows cannot be proven against the row count the chain expects: nothing to challenge
            log.warning("job %s: the result has the wrong shape %s", job.job_id.hex()[:16], theirs.shape)
            return
        leaves = result_leaves(theirs)
        honest = result_leaves(ours.rows)
        t = next((i for i, (a, b) in enumerate(zip(leaves, honest, strict=True)) if a != b), None)
        if t is None:
            log.info("job %s verified: token rows correct", job.job_id.hex()[:16])
            return
        prev = (leaves[t - 1], merkle_proof(leaves, t - 1)) if t else None
        body = ld.llm_challenge_body(job.job_id, t, leaves[t], merkle_proof(leaves, t), prev)
        self._llm_disputes[job.job_id] = LlmDispute(t, leaves, ours)
        if await self._submit("llm_challenge", body) is None:
            del self._llm_disputes[job.job_id]
            return
        self.stats["challenges"] += 1
        self.node.metrics.market_challenges.inc()
        log.warning("job %s: token row %d differs from this node's run: llm challenge against miner %s",
                    job.job_id.hex()[:16], t, encode_address(job.miner))

    async def _has_model(self, model_id: Any) -> bool:
        svc = self.node.models
        if svc is None or not isinstance(model_id, bytes):
            return False
        m = svc.find("0x" + model_id.hex())
        if m is None or m.model_id not in svc.pins.pins:  # only models this node keeps (miner.models, pins)
            return False
        st = await trio.to_thread.run_sync(svc.status, m)
        return bool(st["complete"])

    async def _prove_llm_step(self, job: Any, d: Any, st: LlmDispute) -> None:
        """The miner posted its step digests of the disputed position: prove its first step that differs
        from this node's run (SAMPLE when only the row's token differs) with ``llm_step_proof``."""
        from state.kinds import llm_trace as lt
        from state.llm.config import LlamaConfig
        from state.llm.generate import output_bytes
        from state.llm.modelfile import split_chunks
        from state.llm.steps import Op, StepId
        from state.market import llm_disputes as ld

        from .llm import NodeModelSource

        found = self.chain.tx_lookup(d.steps_tx) if d.steps_tx is not None else None
        if found is None:
            log.error("job %s: the miner's llm_steps transaction is not found", job.job_id.hex()[:16])
            return
        theirs = list(found[0].body["digests"])
        svc = self.node.models
        m = svc.find("0x" + job.params["model"].hex()) if svc is not None else None
        if m is None or svc is None:
            return
        cfg = LlamaConfig.from_map(m.manifest["arch"])
        p = len(job.params["prompt"])
        t = st.position
        honest = st.run.digests
        trace = st.run.trace

        def build() -> dict:
            steps = lt.position_steps(cfg, p, t)
            i = next((i for i, (a, b) in enumerate(zip(theirs, honest[t], strict=True)) if a != b), None)
            step = steps[i] if i is not None else StepId(t, 0, Op.SAMPLE)
            idx = svc.local_index(m)
            chunks = split_chunks(NodeModelSource(self.node).model_file(m.model_id))
            return ld.step_proof_body(
                job.job_id, d.index, cfg, p, st.leaves, lambda s: theirs if s == t else honest[s],
                lambda s: output_bytes(trace.outputs[s]), step, chunks,
                chunk_leaf_hashes=list(idx.leaves) if idx is not None else None,
            )

        try:
            body = await trio.to_thread.run_sync(build)
        except Exception as exc:
            log.error("job %s: cannot build the step proof of position %d: %s", job.job_id.hex()[:16], t, exc)
            return
        if await self._submit("llm_step_proof", body) is not None:
            log.warning("job %s: step proof of %s sent for llm dispute %d", job.job_id.hex()[:16],
                        StepId(*body["step"]), d.index)

    # verification ----------------------------------------------------------------------------------
    async def _verify(self, job: Any) -> None:
        if job.kind == "llm-generate":
            try:
                await self._verify_llm(job)
            except ResultUnavailable as exc:
                log.warning("verifying job %s: %s", job.job_id.hex()[:16], exc)
                await self.submit_availability_challenge(job)
            except Exception as exc:
                log.warning("verifying llm job %s failed: %s", job.job_id.hex()[:16], exc)
            return
        try:
            body = await self.find_wrong_leaf(job)
        except ResultUnavailable as exc:
            log.warning("verifying job %s: %s", job.job_id.hex()[:16], exc)
            await self.submit_availability_challenge(job)
            return
        except Exception as exc:
            log.warning("verifying job %s failed: %s", job.job_id.hex()[:16], exc)
            return
        if body is None:
            log.info("job %s verified: result correct", job.job_id.hex()[:16])
            return
        await self.submit_challenge(job, body)

    async def submit_challenge(self, job: Any, body: dict) -> bool:
        """Submit the challenge ``body`` against ``job``'s result; whether the mempool took it."""
        if await self._submit("challenge", body) is None:
            return False
        self.stats["challenges"] += 1
        self.node.metrics.market_challenges.inc()
        log.warning("job %s: challenged leaf %d of miner %s", job.job_id.hex()[:16], body["index"],
                    encode_address(job.miner))
        return True

    async def fetch_result(self, job: Any) -> tuple[np.ndarray, bytes | None]:
        """``job``'s result array (the blob its receipt names, fetched from peers) and its input bytes."""
        from gpu.encoding import decode_array

        rec = job.receipt
        if rec is None:
            raise AitbcError("the job has no receipt")
        blob = await self.node.fetch_blob(rec["result_hash"])
        if blob is None:
            raise ResultUnavailable("the result blob is not available from any peer")
        return decode_array(blob, max_bytes=MAX_RESULT_BYTES), await self._job_input(job)

    @staticmethod
    def challenge_body(job: Any, leaves: list[bytes], index: int, data: bytes | None) -> dict:
        """The ``challenge`` body disputing leaf ``index`` of ``leaves`` (the miner's result rows)."""
        from state import market
        from state.merkle import merkle_proof

        blob_input = data if job.input is not None and "blob" in job.input else None  # travels with it
        return market.challenge_body(job.job_id, index, leaves[index], merkle_proof(leaves, index), blob_input)

    async def find_wrong_leaf(self, job: Any) -> dict | None:
        """The challenge body for a wrong leaf of ``job``'s result (one the chain's ``check_leaf`` refuses),
        or None if the result is correct or the kind's results cannot be challenged on chain."""
        from gpu.encoding import result_leaves
        from gpu.kinds import get_kind
        from state import market

        kind = get_kind(job.kind)
        if not market.challengeable(kind) or not getattr(kind, "leaf_disputes", True):
            log.info("job %s: kind %s has no on-chain leaf check; not verified", job.job_id.hex()[:16], job.kind)
            return None
        theirs, data = await self.fetch_result(job)
        leaves = result_leaves(theirs)
        find = _first_wrong_exact if kind.deterministic else _first_wrong_within_tolerance
        i = await trio.to_thread.run_sync(find, kind, job, data, theirs, leaves)
        return self.challenge_body(job, leaves, i, data) if i is not None else None


def _first_wrong_exact(kind: Any, job: Any, data: bytes | None, theirs: np.ndarray, leaves: list[bytes]) -> int | None:
    """Exact kinds: re-execute, compare leaf by leaf; the first differing leaf the chain refuses."""
    from gpu.encoding import result_leaves

    ours = result_leaves(kind.execute_numpy(job.params, data))
    if len(ours) != len(leaves):
        return 0
    for i, (a, b) in enumerate(zip(ours, leaves, strict=True)):
        if a != b and not kind.check_leaf(job.params, data, i, b):
            return i
    return None


def _first_wrong_within_tolerance(
    kind: Any, job: Any, data: bytes | None, theirs: np.ndarray, leaves: list[bytes]
) -> int | None:
    """Floating-point kinds: no two backends agree bit for bit, so the result is checked with the kind's
    tolerance rule (``verify_full``). If it fails, the leaves are tried with the kind's deterministic
    ``check_leaf`` (what the chain runs on a challenge), furthest from this node's own result first
    (deviation beyond ``atol + rtol·|ours|``); the first one it refuses is the one to challenge."""
    params = job.params
    if theirs.dtype != np.dtype(kind.result_dtype) or theirs.shape != kind.result_shape(params):
        return 0  # the wrong shape or type: no leaf can be right (check_leaf refuses it)
    if kind.verify_full(params, data, theirs, job.job_id):
        return None
    rtol, atol = kind.tolerance
    ours = kind.execute_numpy(params, data).astype(np.float64).reshape(len(leaves), -1)
    got = theirs.astype(np.float64).reshape(len(leaves), -1)
    with np.errstate(invalid="ignore", over="ignore"):
        excess = np.abs(got - ours) - (atol + rtol * np.abs(ours))
    excess = np.where(np.isnan(excess), np.inf, excess).max(axis=1)
    for i in np.argsort(-excess, kind="stable"):
        if excess[i] <= 0:
            break  # within tolerance of this node's result: the chain accepts these leaves
        if not kind.check_leaf(params, data, int(i), leaves[i]):
            return int(i)
    log.warning("job %s: the result fails %s's tolerance check but no leaf is provably wrong on chain",
                job.job_id.hex()[:16], kind.name)
    return None


def probe_capabilities(duration_s: float, *, executor: Any = None) -> dict:
    """The ``capabilities`` of a ``miner_register`` body, measured by the GPU probe (blocking); with
    ``executor``, of the backend that executor runs jobs on."""
    from gpu.probe import probe
    from state import market

    p = probe(duration_s=duration_s, executor=executor)
    return market.capabilities(
        p["backend"],
        str(p["device"])[:64],
        int(p["memory_bytes"]),
        str(p.get("compute_capability") or "")[:16],
        {k: int(v["units_per_s"]) for k, v in p["kinds"].items()},
    )


def load_miner(node: Node) -> MinerService:
    """The miner role for ``node`` from its config (``[miner]``) and the home's miner key."""
    return MinerService(node, node.home.miner_key(), node.cfg.miner)


__all__ = ["MinerService", "ResultUnavailable", "load_miner", "parse_price_list", "codec"]
