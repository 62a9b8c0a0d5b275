"""The miner's anonymous bidding (state/market/anon.py): its identity, its proofs, and the accept.

The identity secret lives in ``<home>/keys/anon/identity.key`` (mode 0600); the miner registers its
commitment once (``anon_identity``). For an anonymous-bid job it reads its Merkle path from the local
state (depth reads, no hashing), proves with snarkjs (an optional tool, node/zk_prover.py; without it
anonymous jobs are skipped and the log says what to install) and sends the ``anon_bid`` from a key derived from the bid's nullifier: the job's
escrow pays its fee, so nothing links the bid to this miner's account. When its bid is the pending one
after the bid window, it opens the claim with ``anon_accept`` from the miner key and runs the job as any
other. A claim's blind is derived from the identity secret and the job (``anon_bid.claim_blind``), and
the jobs with an open anonymous bid are listed in ``<home>/keys/anon/open_bids`` (mode 0600, written
atomically before the bid is sent), so a miner restarted — or killed — between its bid and the accept
still accepts.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import trio

from state.market import zk_trees
from state.types import Transaction
from zk import anon_bid

if TYPE_CHECKING:
    from .miner import MinerService

log = logging.getLogger("aitbc.miner")


class AnonBidder:
    def __init__(self, miner: MinerService) -> None:
        self.miner = miner
        self._secret: int | None = None
        self._registered_at = -100
        self._open: set[bytes] | None = None  # jobs with an open anonymous bid of this miner (loaded lazily)
        self._accepted: set[tuple[bytes, int]] = set()  # (job, accept deadline) anon_accept sent
        self._unavailable: str | None = None

    @property
    def node(self) -> Any:
        return self.miner.node

    def available(self) -> bool:
        """Whether this miner can prove (snarkjs found); logs once why not."""
        if self._unavailable is None:
            from .zk_prover import ProverMissing, snarkjs_command

            try:
                snarkjs_command()
                self._unavailable = ""
            except ProverMissing as exc:
                self._unavailable = str(exc)
                log.warning("miner: anonymous-bid jobs are skipped: %s", exc)
        return not self._unavailable

    def _identity_secret(self) -> int:
        if self._secret is None:
            path = self.node.home.keys_dir / "anon" / "identity.key"
            if path.exists():
                self._secret = int(path.read_text().strip(), 16)
            else:
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                secret = anon_bid.new_secret()
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(f"{secret:064x}\n")
                self._secret = secret
        return self._secret

    def _open_path(self) -> Any:
        return self.node.home.keys_dir / "anon" / "open_bids"

    def _open_jobs(self) -> set[bytes]:
        if self._open is None:
            path = self._open_path()
            jobs: set[bytes] = set()
            if path.exists():
                for line in path.read_text().split():
                    try:
                        job = bytes.fromhex(line)
                    except ValueError:
                        continue
                    if len(job) == 32:
                        jobs.add(job)
            self._open = jobs
        return self._open

    def _save_open(self, jobs: list[bytes]) -> None:
        """Replace the list atomically (mode 0600, fsynced with its directory): a crash leaves the old
        list or the new one."""
        from .keystore import atomic_write

        path = self._open_path()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(path, "".join(j.hex() + "\n" for j in sorted(jobs)).encode(), overwrite=True)

    async def _set_open(self, job_id: bytes, is_open: bool) -> None:
        jobs = self._open_jobs()
        if (job_id in jobs) == is_open:
            return
        (jobs.add if is_open else jobs.discard)(job_id)
        await trio.to_thread.run_sync(self._save_open, sorted(jobs))

    async def on_block(self, height: int) -> None:
        """Register the identity when missing; accept the jobs whose pending bid is ours."""
        from state.market import anon
        from state.market_views import load_job

        get = self.miner.chain.get_object
        if self.available() and anon.identity_of(get, self.miner.pk) is None and height - self._registered_at > 10:
            self._registered_at = height
            commitment = anon_bid.field_bytes(anon_bid.identity(self._identity_secret()))
            if await self.miner._submit(anon.TX_ANON_IDENTITY, {"commitment": commitment}) is not None:
                log.info("miner: registering an anonymous bidding identity")
        for job_id in sorted(self._open_jobs()):
            a = anon.get(get, job_id)
            job = load_job(get, job_id)
            if a is None or job is None or job.state != "QUEUED" or a.winner is not None:
                await self._set_open(job_id, False)  # awarded, expired or canceled
                continue
            if a.pending is None:
                continue
            blind = anon_bid.claim_blind(self._identity_secret(), job_id)
            mine = anon_bid.field_bytes(anon_bid.claim(self.miner.pk, blind))
            key = (job_id, a.accept_deadline)
            if a.bids[a.pending][1] == mine and key not in self._accepted:
                self._accepted.add(key)
                body = {"job_id": job_id, "blind": anon_bid.field_bytes(blind)}
                if await self.miner._submit(anon.TX_ANON_ACCEPT, body) is not None:
                    log.info("miner: accepting the award of anonymous job %s", job_id.hex()[:16])
                await self._set_open(job_id, False)

    async def bid(self, job: Any, a: Any, price: int) -> bool:
        """Prove and send an anonymous bid on ``job``; False when this miner cannot (yet)."""
        from state.market import anon

        from .zk_prover import ProverFailed, ProverMissing, prove

        if not self.available() or job.job_id in self._open_jobs():
            return False
        get = self.miner.chain.get_object
        ident = anon.identity_of(get, self.miner.pk)
        if ident is None or ident.index is None or not ident.active or ident.standing is None:
            return False  # not in the tree yet (registration queued), or not in standing
        params = self.node.genesis.params
        if job.kind not in anon.KIND_BITS:
            return False
        min_bond = max(a.min_bond, params.market.min_miner_bond)
        min_memory = job.requirements.get("min_memory", 0)
        kinds, backend = anon.required_kinds(job), anon.required_backend(job)
        bond, memory, my_kinds, my_backend = ident.standing
        if bond < min_bond or memory < min_memory or my_kinds & kinds != kinds or backend not in (0, my_backend) \
                or len(a.bids) >= a.max_bids:
            return False
        # this node's own state: read the path (the node learns nothing it did not know)
        root = anon.root_of(get)
        siblings, bits = zk_trees.path(get, anon.TREE_PREFIX, anon_bid.DEPTH, ident.index)
        secret = self._identity_secret()
        blind = anon_bid.claim_blind(secret, job.job_id)
        st = anon_bid.Statement(job.job_id, price, root, anon_bid.nullifier(job.job_id, secret),
                                anon_bid.claim(self.miner.pk, blind), min_bond, min_memory, kinds, backend)
        inputs = anon_bid.witness_inputs(st, secret, self.miner.pk, tuple(ident.standing), blind, siblings, bits)
        try:
            proof, public = await trio.to_thread.run_sync(lambda: prove(anon_bid.CIRCUIT, inputs))
        except (ProverMissing, ProverFailed) as exc:
            log.warning("miner: anonymous bid on job %s not proven: %s", job.job_id.hex()[:16], exc)
            return False
        if public != st.public_inputs():
            log.warning("miner: snarkjs proved other public signals than asked (circuit artifacts?)")
            return False
        body = anon.anon_bid_body(st, proof)
        sender = anon.sender_key(job.job_id, body["nullifier"])  # holds nothing, linked to nothing
        tx = Transaction.create(sender, self.node.genesis.chain_id, anon.TX_ANON_BID, 0, params.min_fee, body)
        await self._set_open(job.job_id, True)  # before it can be on chain: a crash after the send still accepts
        (res,) = await self.node.submit_raw([tx.raw])
        if res.error is not None:
            log.warning("anon_bid refused by the mempool: %s (%s)", res.error, res.error.reason)
            await self._set_open(job.job_id, False)
            return False
        log.info("anonymous bid on job %s", job.job_id.hex()[:16])
        return True
