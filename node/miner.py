"""The miner role: register, bid, execute awarded jobs, serve results, sign receipts; optionally verify
other miners' results and challenge wrong ones.

Driven by committed blocks (``Node.commit_events``): after each block the role looks at the market state
and acts. Every action is a transaction signed by the miner key and submitted through the node's own
mempool (and gossiped), so it goes through exactly the checks any peer applies.

Test-only fault injection: ``AITBC_TEST_FAULTS_FILE=<path>`` names a JSON file read before each action,
``{"corrupt": bool, "silent": bool, "false_challenge": bool}``: ``corrupt`` flips one bit of every result
(a lying miner), ``silent`` bids but never answers, ``false_challenge`` makes the verifier challenge a
correct leaf. Tests rewrite the file to change a running miner's behaviour.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import trio

from state import codec
from state.address import encode_address
from state.crypto import SigningKey
from state.errors import AitbcError
from state.types import Transaction

if TYPE_CHECKING:
    from .config import MinerSection
    from .service import Node

log = logging.getLogger("aitbc.miner")

MAX_RESULT_BYTES = 1 << 20
MAX_BACKLOG_PER_SLOT = 4  # awarded-but-unanswered jobs per execution slot before the miner stops bidding


def _fault(name: str) -> bool:
    """A test-only fault switch (see the module docstring)."""
    path = os.environ.get("AITBC_TEST_FAULTS_FILE")
    if not path:
        return False
    try:
        with open(path) as f:
            return bool(json.load(f).get(name))
    except (OSError, ValueError, AttributeError):
        return False


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
        self._submit_lock = trio.Lock()
        self._bid: set[bytes] = set()
        self._running: set[bytes] = set()
        self._checked: set[bytes] = set()
        self._limiter = trio.CapacityLimiter(max(1, cfg.max_concurrent))
        self._nursery: trio.Nursery | None = None
        self._registering_since = -1
        self._topup_at = -100
        self.stats: dict[str, int] = {"bids": 0, "receipts": 0, "challenges": 0, "executed": 0, "failed": 0}

    # plumbing -------------------------------------------------------------------------------------
    @property
    def chain(self):
        assert self.node.chain is not None
        return self.node.chain

    def _scan(self, prefix: bytes):
        return self.node.scan_objects(prefix)

    async def _submit(self, tx_type: str, body: dict) -> bytes | None:
        """Sign and submit a transaction from the miner key; None (logged) if the mempool refused it."""
        async with self._submit_lock:
            mp = self.node.mempool
            assert mp is not None
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
            if job.job_id not in self._running and not _fault("silent"):
                self._running.add(job.job_id)
                assert self._nursery is not None
                self._nursery.start_soon(self._execute, job)
        if me.status != "active":
            return
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
                    assert self._nursery is not None
                    self._nursery.start_soon(self._verify, job)

    # registration and bids --------------------------------------------------------------------------
    async def _register(self) -> None:
        from state import market

        caps = await trio.to_thread.run_sync(lambda: probe_capabilities(0.1, executor=self.executor))
        body = market.miner_register_body(bond=self.cfg.bond, capabilities=caps, prices=self.prices)
        if await self._submit("miner_register", body) is not None:
            log.info("miner %s: registering with a bond of %d", encode_address(self.pk), self.cfg.bond)

    async def _maybe_bid(self, job: Any) -> None:
        from state import market

        self._bid.add(job.job_id)
        price = self.prices.get(job.kind)
        if price is None or price > job.max_price:
            return
        req = job.requirements or {}
        if req.get("backend") and req["backend"] != self.executor.backend.name:
            return
        if req.get("min_memory") and req["min_memory"] > self.executor.backend.memory_bytes:
            return
        if await self._submit("bid", market.bid_body(job.job_id, price)) is not None:
            self.stats["bids"] += 1
            self.node.metrics.market_bids.inc()
            log.info("bid %d on job %s", price, job.job_id.hex()[:16])

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
        from gpu.encoding import encode_array, result_root
        from state import market
        from state.codec import sha256

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
            encoded, rhash, rroot = res.encoded, res.result_hash, res.result_root
            if _fault("corrupt"):  # test fault: a consistent but wrong result (one flipped bit in row 0)
                arr = np.array(res.array, copy=True)
                flat = arr.reshape(-1).view(np.uint8)
                flat[0] ^= 1
                encoded = encode_array(arr)
                rhash, rroot = sha256(encoded), result_root(arr)
            assert self.node.blobs is not None
            await self.node.blobs.aput(encoded)
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
                log.info("job %s done in %.3f s: %d %s, result %s", job.job_id.hex()[:16], elapsed, units,
                         res.unit_type, rhash.hex()[:16])
        except Exception as exc:
            self.stats["failed"] += 1
            log.warning("job %s failed: %s", job.job_id.hex()[:16], exc)

    # verification ----------------------------------------------------------------------------------
    async def _verify(self, job: Any) -> None:
        try:
            body = await self._find_wrong_leaf(job)
        except Exception as exc:
            log.warning("verifying job %s failed: %s", job.job_id.hex()[:16], exc)
            return
        if body is None:
            log.info("job %s verified: result correct", job.job_id.hex()[:16])
            return
        if await self._submit("challenge", body) is not None:
            self.stats["challenges"] += 1
            self.node.metrics.market_challenges.inc()
            log.warning("job %s: challenged leaf %d of miner %s", job.job_id.hex()[:16], body["index"],
                        encode_address(job.miner))

    async def _find_wrong_leaf(self, job: Any) -> dict | None:
        """The challenge body for the first wrong leaf of ``job``'s result, or None if it is correct."""
        from gpu.encoding import decode_array, result_leaves
        from gpu.kinds import get_kind
        from state.merkle import merkle_proof

        kind = get_kind(job.kind)
        if not kind.deterministic:
            return None
        rec = job.receipt
        assert rec is not None
        blob = await self.node.fetch_blob(rec["result_hash"])
        if blob is None:
            raise AitbcError("the result blob is not available from any peer")
        theirs = result_leaves(decode_array(blob, max_bytes=MAX_RESULT_BYTES))
        data = await self._job_input(job)
        blob_input = data if job.input is not None and "blob" in job.input else None

        def body(i: int) -> dict:
            b: dict = {"job_id": job.job_id, "index": i, "leaf": theirs[i], "proof": merkle_proof(theirs, i)}
            if blob_input is not None:
                b["input"] = blob_input
            return b

        if _fault("false_challenge"):
            return body(0)

        def find() -> int | None:
            ours = result_leaves(kind.execute_numpy(job.params, data))
            if len(ours) != len(theirs):
                return 0
            for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
                if a != b and not kind.check_leaf(job.params, data, i, b):
                    return i
            return None

        i = await trio.to_thread.run_sync(find)
        return body(i) if i is not None else None


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


__all__ = ["MinerService", "load_miner", "parse_price_list", "codec"]
