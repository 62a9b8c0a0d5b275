"""BftEngine with real components: ChainState on LevelDB, real signatures, SignState, WAL, the mempool,
and an InMemoryNetwork between N engines in one trio process.

Most tests run on trio's autojump clock (virtual time: timeouts and block intervals cost no real time)
with chain work done inline (``offload``), so virtual time never jumps while a block is being executed;
the first test runs on the real clock with worker threads, as in production."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from consensus.bft import Proposal, Step
from consensus.bft_engine import BftEngine, BftParams
from consensus.evidence import DuplicateVote
from consensus.schedule import ProposerSchedule
from consensus.signstate import SignState
from consensus.transport import InMemoryNetwork, NullTransport
from consensus.validators import Validator, ValidatorSet
from consensus.wal import WAL
from state.chain import ChainState, PendingBlock
from state.codec import sha256
from state.crypto import SigningKey
from state.errors import FatalWriteError
from state.genesis import ChainParams, Genesis, GenesisValidator
from state.machine import check_body, tx_cost
from state.mempool import Mempool, MempoolConfig
from state.store import Store
from state.types import EMPTY_HASH, PRECOMMIT, PREVOTE, Block, BlockHeader, Commit, Vote, transfer
from testnet.faults import DoubleSigningEngine

GENESIS_TIME = 1_700_000_000_000
KEYS = [SigningKey.from_seed(bytes([0x40 + i]) * 32) for i in range(4)]
ALICE = SigningKey.from_seed(b"\x5a" * 32)
BOB = SigningKey.from_seed(b"\x5b" * 32)
OUTSIDER = SigningKey.from_seed(b"\x5c" * 32)


def make_genesis(
    powers=(1, 1, 1, 1), *, interval: int = 50, propose: int = 400, vote: int = 200, delta: int = 100, empty: bool = True
) -> Genesis:
    return Genesis(
        chain_id="bft-engine-test",
        genesis_time=GENESIS_TIME,
        consensus="poa",
        params=ChainParams(
            block_interval_ms=interval,
            min_fee=10,
            timeout_propose_ms=propose,
            timeout_vote_ms=vote,
            timeout_delta_ms=delta,
            create_empty_blocks=empty,
        ),
        accounts=((ALICE.public_key, 10**9),),
        validators=tuple(GenesisValidator(k.public_key, p, f"v{i}") for i, (k, p) in enumerate(zip(KEYS, powers, strict=False))),
    )


def genesis_set(g: Genesis) -> ValidatorSet:
    return ValidatorSet([Validator(v.public_key, v.power, v.name) for v in g.validators])


def virtual_ms() -> int:
    # round, not truncate: virtual time sums float sleeps, and 0.39999… s must read as 400 ms
    return GENESIS_TIME + round(trio.current_time() * 1000)


async def inline(fn, *args):
    return fn(*args)


class _View:
    def __init__(self, chain: ChainState) -> None:
        self.chain = chain

    def get_account(self, pk: bytes):
        return self.chain.account(pk)


class TNode:
    """One node: its own LevelDB, mempool, sign state, WAL and engine; can crash and restart. Tests pass
    subclasses of the WAL, SignState or Store (``wal_class``, ...) to inject write failures from outside.
    An engine stopped by a failed write leaves its error in ``fatal``."""

    def __init__(
        self,
        cluster: Cluster,
        name: str,
        key: SigningKey | None,
        *,
        byzantine: bool = False,
        wal_class: type[WAL] = WAL,
        sign_state_class: type[SignState] = SignState,
        store_class: type[Store] = Store,
    ) -> None:
        self.cluster = cluster
        self.name = name
        self.home: Path = cluster.tmp / name
        self.home.mkdir(parents=True, exist_ok=True)
        self.wal_class = wal_class
        self.sign_state_class = sign_state_class
        self.store_class = store_class
        self._open_db()
        self.key = key
        self.fatal: FatalWriteError | None = None
        self.byzantine = byzantine
        self.decided: dict[int, bytes] = {}
        self.commits: dict[int, Commit] = {}
        self.evidence_seen: list[DuplicateVote] = []
        self.behind: list[int] = []
        self.syncing = False
        self.engine: BftEngine | None = None
        self.wal: WAL | None = None
        self.scope: trio.CancelScope | None = None
        self.stopped = trio.Event()

    def _open_db(self) -> None:
        g = self.cluster.genesis
        self.store = self.store_class(self.home / "db")
        self.chain = ChainState(self.store, g)
        self.mempool = Mempool(
            g.chain_id, _View(self.chain), MempoolConfig(min_fee=g.params.min_fee), cost=tx_cost, check_body=check_body
        )

    def reopen_db(self) -> None:
        """What a process restart does to the database: close it and open it again (chain, mempool)."""
        self.store.close()
        self._open_db()

    def make_engine(self) -> BftEngine:
        c = self.cluster
        self.schedule = ProposerSchedule(genesis_set(c.genesis))
        self.wal = self.wal_class(self.home / "cs.wal")
        self.sign_state = self.sign_state_class(self.home / "pv.json", self.key) if self.key is not None else None
        self.transport = NullTransport() if c.null_transport else c.net.join(self.name)
        engine_class = DoubleSigningEngine if self.byzantine else BftEngine  # byzantine: from testnet tooling
        self.engine = engine_class(
            self.chain,
            self.mempool,
            self.schedule,
            self.key,
            self.sign_state,
            self.transport,
            self.on_commit,
            self.wal,
            c.params,
            on_behind=self.on_behind,
            now_ms=virtual_ms if c.virtual else None,
            offload=inline if c.virtual else None,
        )
        self.engine.add_evidence_listener(self.evidence_seen.append)
        return self.engine

    async def on_commit(self, pending: PendingBlock, commit: Commit) -> None:
        b = pending.block
        assert b.height not in self.decided, "committed a height twice"
        self.decided[b.height] = b.hash
        self.commits[b.height] = commit
        self.mempool.update(b.txs, _View(self.chain))

    def on_behind(self, target: int) -> None:
        self.behind.append(target)
        if not self.syncing and self.cluster.nursery is not None:
            self.syncing = True
            self.cluster.nursery.start_soon(self.cluster.sync, self)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.stopped = trio.Event()
        self.fatal = None
        engine = self.make_engine()
        try:
            with trio.CancelScope() as cs:
                self.scope = cs
                await engine.run(task_status=task_status)
        except FatalWriteError as exc:  # what stops the node process; the test restarts it
            self.fatal = exc
        finally:
            self.stopped.set()

    async def crash(self) -> None:
        """Stop the engine abruptly (the process dying): nothing is flushed or closed by the engine."""
        assert self.scope is not None
        self.scope.cancel()
        await self.stopped.wait()
        assert self.wal is not None
        self.wal.close()

    @property
    def height(self) -> int:
        return self.chain.head.height

    def close(self) -> None:
        if self.wal is not None:
            self.wal.close()
        self.store.close()


class Cluster:
    def __init__(self, tmp: Path, genesis: Genesis, *, virtual: bool = True, params: BftParams | None = None) -> None:
        self.tmp = tmp
        self.genesis = genesis
        self.virtual = virtual
        self.params = params
        self.net = InMemoryNetwork()
        self.null_transport = False
        self.nodes: list[TNode] = []
        self.nursery: trio.Nursery | None = None

    def add(self, key: SigningKey | None, **kw: Any) -> TNode:
        n = TNode(self, f"n{len(self.nodes)}", key, **kw)
        self.nodes.append(n)
        return n

    async def start(self, nursery: trio.Nursery, nodes: list[TNode] | None = None) -> None:
        self.nursery = nursery
        self.net.nursery = nursery
        for n in nodes if nodes is not None else self.nodes:
            await nursery.start(n.run)

    async def sync(self, node: TNode) -> None:
        """What the node's block sync would do: fetch missing blocks + commits from the best peer."""
        try:
            while True:
                src = max((n for n in self.nodes if n is not node), key=lambda n: n.height)
                if src.height <= node.height:
                    return
                h = node.height + 1
                assert node.engine is not None
                if node.stopped.is_set():  # crashed or stopped by a failed write
                    return
                await node.engine.submit_block(src.chain.block_at(h), src.chain.commit_at(h))
        finally:
            node.syncing = False

    async def wait_all(self, height: int, nodes: list[TNode] | None = None) -> None:
        for n in nodes if nodes is not None else self.nodes:
            assert n.engine is not None
            await n.engine.wait_for_height(height)

    def check_agreement(self) -> int:
        """No two nodes ever finalized different blocks at a height; returns the highest height."""
        top = 0
        heights = {h for n in self.nodes for h in n.decided} | {n.height for n in self.nodes}
        for h in sorted(heights):
            if h == 0:
                continue
            hashes = {n.chain.store.block_hash(h) for n in self.nodes if n.height >= h}
            hashes |= {n.decided[h] for n in self.nodes if h in n.decided}
            assert len(hashes) <= 1, f"conflicting blocks at height {h}"
            top = max(top, h)
        return top

    def close(self) -> None:
        for n in self.nodes:
            n.close()


def check_chain(node: TNode, genesis: Genesis, upto: int) -> None:
    """Commits verify with 2/3+ of the power, proposers follow the schedule, blocks come no faster
    than the configured interval. (Tests that need the exact round-0 / round-1 proposer check it.)"""
    vs = genesis_set(genesis)
    sched = ProposerSchedule(vs)
    prev_time = genesis.genesis_time
    for h in range(1, upto + 1):
        b = node.chain.block_at(h)
        c = node.chain.commit_at(h)
        assert vs.verify_commit(genesis.chain_id, c, b.hash, h) >= vs.quorum()
        # the header names the block's builder: the proposer of the decision round, or of an earlier
        # round whose block was re-proposed as the valid value
        builders = {sched.proposer(h, r).public_key for r in range(c.round + 1)}
        assert b.header.proposer in builders, f"height {h} round {c.round}"
        if h > 1:
            assert b.header.time - prev_time >= genesis.params.block_interval_ms
        prev_time = b.header.time


async def settle_until(engine: BftEngine, predicate: Callable[[], bool], seconds: float = 60) -> None:
    with trio.fail_after(seconds):
        await engine.wait_until(predicate)


# --------------------------------------------------------------------------------------------------


async def test_four_validators_and_a_follower_finalize_identical_blocks_real_clock(tmp_path) -> None:
    """Real clock, worker threads: 4 validators and a non-validator finalize the same 20+ blocks."""
    g = make_genesis(interval=50, propose=2000, vote=1000, delta=500)
    cl = Cluster(tmp_path, g, virtual=False)
    for k in KEYS:
        cl.add(k)
    follower = cl.add(None)
    txs = [transfer(ALICE, g.chain_id, BOB.public_key, 1000 + i, i, 10) for i in range(5)]
    for n in cl.nodes:
        for tx in txs:
            n.mempool.add(tx)
    try:
        async with trio.open_nursery() as nursery:
            await cl.start(nursery)
            with trio.fail_after(40):
                await cl.wait_all(20)
            nursery.cancel_scope.cancel()
        top = cl.check_agreement()
        assert top >= 20
        for n in cl.nodes:
            check_chain(n, g, 20)
            assert n.chain.account(BOB.public_key).balance == sum(1000 + i for i in range(5))
            assert n.chain.block_at(20).header.state_root == cl.nodes[0].chain.block_at(20).header.state_root
            assert len(n.mempool) == 0
        assert follower.engine.status()["is_validator"] is False and follower.sign_state is None
        st = cl.nodes[0].engine.status()
        assert st["mode"] == "bft" and st["validators"] == 4 and len(st["proposer"]) == 32
    finally:
        cl.close()


async def test_dead_proposer_round_times_out_to_the_next_proposer(tmp_path, autojump_clock) -> None:
    g = make_genesis()
    cl = Cluster(tmp_path, g)
    for k in KEYS:
        cl.add(k)
    dead = cl.nodes[3]
    live = cl.nodes[:3]
    try:
        async with trio.open_nursery() as nursery:
            await cl.start(nursery, live)  # validator 3 never starts
            with trio.fail_after(120):
                await cl.wait_all(9, live)
            nursery.cancel_scope.cancel()
        cl.check_agreement()
        sched = ProposerSchedule(genesis_set(g))
        dead_heights = 0
        for h in range(1, 10):
            rnd = live[0].commits[h].round
            if sched.proposer(h, 0).public_key == dead.key.public_key:
                dead_heights += 1
                assert rnd == 1, f"height {h}: the dead proposer's round 0 must time out"
            else:
                assert rnd == 0
            assert live[0].chain.block_at(h).header.proposer == sched.proposer(h, rnd).public_key
        assert dead_heights >= 2
        for n in live:
            check_chain(n, g, 9)
    finally:
        cl.close()


async def test_one_of_four_stopped_keeps_finalizing_then_catches_up(tmp_path, autojump_clock) -> None:
    g = make_genesis()
    cl = Cluster(tmp_path, g)
    for k in KEYS:
        cl.add(k)
    n3 = cl.nodes[3]
    try:
        async with trio.open_nursery() as nursery:
            await cl.start(nursery)
            with trio.fail_after(60):
                await cl.wait_all(3)
            cl.net.isolate(n3.name)
            h0 = max(n.height for n in cl.nodes)
            with trio.fail_after(120):
                await cl.wait_all(h0 + 8, cl.nodes[:3])
            assert n3.height <= h0 + 1
            cl.net.reconnect(n3.name)
            target = max(n.height for n in cl.nodes) + 3
            with trio.fail_after(120):
                await cl.wait_all(target)
            nursery.cancel_scope.cancel()
        assert n3.behind, "the lagging node must have signalled on_behind"
        top = cl.check_agreement()
        for n in cl.nodes:
            check_chain(n, g, target)
        assert top >= target
    finally:
        cl.close()


async def test_two_of_four_stopped_halts_without_conflicts_then_resumes(tmp_path, autojump_clock) -> None:
    g = make_genesis()
    cl = Cluster(tmp_path, g)
    for k in KEYS:
        cl.add(k)
    try:
        async with trio.open_nursery() as nursery:
            await cl.start(nursery)
            with trio.fail_after(60):
                await cl.wait_all(3)
            cl.net.isolate(cl.nodes[2].name, cl.nodes[3].name)
            await trio.sleep(2)  # let messages already delivered be processed (one height may complete)
            frozen = [n.height for n in cl.nodes]
            await trio.sleep(40)  # many round timeouts (the first rounds' are < 1 s)
            assert [n.height for n in cl.nodes] == frozen, "finality must stop without 2/3+ of the power"
            cl.check_agreement()
            cl.net.heal()
            target = max(frozen) + 3
            with trio.fail_after(180):
                await cl.wait_all(target)
            nursery.cancel_scope.cancel()
        cl.check_agreement()
        for n in cl.nodes:
            check_chain(n, g, target)
    finally:
        cl.close()


async def test_lossy_network_with_random_delays_still_agrees_and_progresses(tmp_path, autojump_clock) -> None:
    """Every message is delayed 0-150 ms and 15% are lost: votes are re-sent when a round stalls."""
    g = make_genesis()
    cl = Cluster(tmp_path, g)
    for k in KEYS:
        cl.add(k)
    rnd = random.Random(7)
    cl.net.delay_fn = lambda src, dst, m: rnd.random() * 0.15
    cl.net.drop_fn = lambda src, dst, m: rnd.random() < 0.15
    try:
        async with trio.open_nursery() as nursery:
            await cl.start(nursery)
            with trio.fail_after(300):
                await cl.wait_all(8)
            nursery.cancel_scope.cancel()
        cl.check_agreement()
        assert cl.net.stats["dropped"] > 0
        assert sum(n.engine.stats["rebroadcasts"] for n in cl.nodes) > 0
        for n in cl.nodes:
            check_chain(n, g, 8)
    finally:
        cl.close()


async def test_weighted_power_quorums(tmp_path, autojump_clock) -> None:
    """Powers 1,1,1,3: quorum 5 of 6. The big validator with two small ones finalizes; without the big
    one (3 of 6) nothing is final."""
    g = make_genesis(powers=(1, 1, 1, 3))
    cl = Cluster(tmp_path, g)
    for k in KEYS:
        cl.add(k)
    small, big = cl.nodes[0], cl.nodes[3]
    try:
        async with trio.open_nursery() as nursery:
            await cl.start(nursery)
            with trio.fail_after(60):
                await cl.wait_all(3)
            cl.net.isolate(small.name)  # 5 of 6 left: still final
            h0 = max(n.height for n in cl.nodes)
            with trio.fail_after(120):
                await cl.wait_all(h0 + 4, cl.nodes[1:])
            cl.net.heal()
            with trio.fail_after(120):
                await cl.wait_all(max(n.height for n in cl.nodes) + 1)
            cl.net.isolate(big.name)  # 3 of 6 left: not final
            await trio.sleep(2)
            frozen = [n.height for n in cl.nodes]
            await trio.sleep(30)
            assert [n.height for n in cl.nodes] == frozen
            cl.net.heal()
            target = max(frozen) + 3
            with trio.fail_after(180):
                await cl.wait_all(target)
            nursery.cancel_scope.cancel()
        cl.check_agreement()
        vs = genesis_set(g)
        assert vs.quorum() == 5
        for n in cl.nodes:
            check_chain(n, g, target)
        signed = {s.validator for h in range(1, target + 1) for s in big.chain.commit_at(h).signatures}
        assert big.key.public_key in signed
        # every commit needs the big validator: the three small ones hold only half the power
        for h in range(1, target + 1):
            assert big.key.public_key in {s.validator for s in big.chain.commit_at(h).signatures}
    finally:
        cl.close()


async def test_byzantine_double_signer_produces_identical_verifiable_evidence(tmp_path, autojump_clock) -> None:
    g = make_genesis()
    cl = Cluster(tmp_path, g)
    byz = cl.add(KEYS[0], byzantine=True)
    honest = [cl.add(k) for k in KEYS[1:]]
    try:
        async with trio.open_nursery() as nursery:
            await cl.start(nursery)
            with trio.fail_after(60):
                await cl.wait_all(5)
                for n in honest:
                    await n.engine.wait_until(lambda n=n: len(n.evidence_seen) >= 3)
            nursery.cancel_scope.cancel()
        cl.check_agreement()
        vs = genesis_set(g)
        by_key: dict[tuple[int, int, int], set[bytes]] = {}
        for n in honest:
            assert n.evidence_seen, "the evidence listener must be called"
            for ev in n.evidence_seen:
                assert ev.validator == byz.key.public_key and ev.type == PREVOTE
                ev.verify(g.chain_id, vs)
                assert DuplicateVote.decode(ev.encode()) == ev
                by_key.setdefault((ev.height, ev.round, ev.type), set()).add(ev.encode())
        # every honest node holds byte-identical evidence for the same equivocation
        assert by_key and all(len(v) == 1 for v in by_key.values())
        common = set.intersection(*({ev.hash() for ev in n.evidence_seen} for n in honest))
        assert common
        # evidence is carried by blocks (once each) and leaves the pending pool when included
        chain = honest[0].chain
        included = [raw for h in range(1, chain.head.height + 1) for raw in chain.block_at(h).evidence]
        assert included and len(included) == len(set(included))
        assert all(DuplicateVote.decode(raw).validator == byz.key.public_key for raw in included)
        assert not {sha256(r) for r in included} & {ev.hash() for ev in honest[0].engine.pending_evidence()}
    finally:
        cl.close()


async def test_wal_replay_after_crash_keeps_the_lock_and_rejoins(tmp_path, autojump_clock) -> None:
    g = make_genesis()
    cl = Cluster(tmp_path, g)
    for k in KEYS:
        cl.add(k)
    victim = cl.nodes[1]
    try:
        async with trio.open_nursery() as nursery:
            await cl.start(nursery)
            with trio.fail_after(60):
                await cl.wait_all(2)
            stuck = max(n.height for n in cl.nodes) + 2
            # Precommits of height `stuck` are lost: every validator prevotes the proposal, sees the
            # polka, locks and precommits, but nobody sees 2/3+ precommits: all stay locked in round 0.
            cl.net.drop_fn = lambda src, dst, m: isinstance(m, Vote) and m.type == PRECOMMIT and m.height >= stuck
            with trio.fail_after(120):
                for n in cl.nodes:
                    await n.engine.wait_until(
                        lambda n=n: n.engine.core.height == stuck and n.engine.core.step == Step.PRECOMMIT
                    )
            before = victim.engine.core.summary()
            assert before["locked_round"] == 0 and before["locked_hash"] is not None
            await victim.crash()
            # restart: a fresh engine, core, SignState and WAL object on the same files
            await nursery.start(victim.run)
            after = victim.engine.core.summary()
            for k in ("height", "round", "step", "locked_round", "locked_hash", "valid_round"):
                assert after[k] == before[k], k
            assert after["sign_failures"] == 0  # the replay reuses the WAL's signatures: nothing refused
            cl.net.drop_fn = None  # the network recovers: re-sent precommits finalize the locked block
            with trio.fail_after(120):
                await cl.wait_all(stuck + 3)
            nursery.cancel_scope.cancel()
        cl.check_agreement()
        assert victim.chain.store.block_hash(stuck) == before["locked_hash"]
        assert all(n.commits[stuck].round == 0 for n in cl.nodes if stuck in n.commits)
        for n in cl.nodes:
            check_chain(n, g, stuck + 3)
    finally:
        cl.close()


async def test_bad_messages_are_rejected_and_penalised(tmp_path, autojump_clock) -> None:
    g = make_genesis()
    cl = Cluster(tmp_path, g)
    n0 = cl.add(KEYS[0])
    for k in KEYS[1:]:
        cl.add(k)
    evil = cl.net.join("evil")
    try:
        async with trio.open_nursery() as nursery:
            await cl.start(nursery, [n0])  # alone: stays at height 1
            e = n0.engine
            with trio.fail_after(10):
                await e.wait_until(lambda: e.core.height == 1)
            sched = ProposerSchedule(genesis_set(g))
            not_proposer = next(k for k in KEYS if k.public_key != sched.proposer(1, 0).public_key)
            good = Vote.create(KEYS[1], g.chain_id, 1, 0, PREVOTE, b"")
            hdr = BlockHeader(g.chain_id, 1, GENESIS_TIME + 1, EMPTY_HASH, EMPTY_HASH, EMPTY_HASH, EMPTY_HASH,
                              not_proposer.public_key, EMPTY_HASH, EMPTY_HASH, EMPTY_HASH, EMPTY_HASH)
            msgs = [
                Vote.create(OUTSIDER, g.chain_id, 1, 0, PREVOTE, b""),  # unknown validator
                Vote(1, 0, PREVOTE, b"", KEYS[1].public_key, bytes(64)),  # bad signature
                Vote.create(KEYS[1], "another-chain", 1, 0, PREVOTE, b""),  # signed for another chain
                Proposal.create(not_proposer, g.chain_id, 1, 0, -1, Block(hdr, (), None)),  # not the proposer
                Vote.create(KEYS[2], g.chain_id, 0, 0, PREVOTE, b""),  # old height: ignored
                Vote.create(OUTSIDER, g.chain_id, 9, 0, PREVOTE, b""),  # far ahead, not a validator: ignored
                good,
            ]
            for m in msgs:
                await evil.send_to(n0.name, m)
            with trio.fail_after(10):
                await e.wait_until(lambda: e.core.has_vote(good))
            assert e.rejected == {"unknown_validator": 1, "bad_signature": 2, "not_proposer": 1}
            assert cl.net.reports == {
                ("evil", "unknown_validator"): 1, ("evil", "bad_signature"): 2, ("evil", "not_proposer"): 1
            }
            assert n0.behind == [] and e.stats["old"] == 1
            # a validator's signed vote from far ahead means this node is behind
            await evil.send_to(n0.name, Vote.create(KEYS[2], g.chain_id, 7, 0, PRECOMMIT, sha256(b"x")))
            with trio.fail_after(10):
                await e.wait_until(lambda: n0.behind == [7])
            st = e.status()
            assert st["height"] == 1 and st["votes"]["prevote"] >= 1
            nursery.cancel_scope.cancel()
    finally:
        cl.close()


async def test_no_empty_blocks_waits_for_transactions(tmp_path, autojump_clock) -> None:
    g = make_genesis(empty=False)
    cl = Cluster(tmp_path, g, params=BftParams(empty_block_heartbeat_ms=600_000))
    for k in KEYS:
        cl.add(k)
    try:
        async with trio.open_nursery() as nursery:
            await cl.start(nursery)
            await trio.sleep(20)
            assert all(n.height == 0 for n in cl.nodes)
            assert cl.nodes[0].engine.status()["step"] == "waiting_for_txs"
            tx = transfer(ALICE, g.chain_id, BOB.public_key, 5, 0, 10)
            for n in cl.nodes:  # what tx gossip does
                n.mempool.add(tx)
                n.engine.notify_tx()
            with trio.fail_after(30):
                await cl.wait_all(1)
            nursery.cancel_scope.cancel()
        cl.check_agreement()
        assert [t.hash for t in cl.nodes[0].chain.block_at(1).txs] == [tx.hash]
    finally:
        cl.close()


async def test_single_validator_is_the_same_engine(tmp_path, autojump_clock) -> None:
    """A dev chain: one validator, no peers (NullTransport), the same engine."""
    g = Genesis(
        chain_id="bft-solo",
        genesis_time=GENESIS_TIME,
        consensus="poa",
        params=ChainParams(block_interval_ms=100, min_fee=10),
        accounts=((ALICE.public_key, 10**9),),
        validators=(GenesisValidator(KEYS[0].public_key, 1, "solo"),),
    )
    cl = Cluster(tmp_path, g)
    cl.null_transport = True
    cl.add(KEYS[0])
    try:
        async with trio.open_nursery() as nursery:
            await cl.start(nursery)
            with trio.fail_after(30):
                await cl.wait_all(5)
            nursery.cancel_scope.cancel()
        check_chain(cl.nodes[0], g, 5)
        assert all(cl.nodes[0].commits[h].round == 0 for h in range(1, 6))
    finally:
        cl.close()


async def test_late_precommits_top_up_the_next_blocks_last_commit(tmp_path, autojump_clock) -> None:
    """One validator's precommits always arrive late (after the other three decided): the commit each
    node stored lacks it, but the next proposer adds it to the block's last_commit, so the staking rules
    see that it signed (rewards, downtime) even though it never makes the quorum in time."""
    g = make_genesis(interval=300)
    cl = Cluster(tmp_path, g)
    for k in KEYS:
        cl.add(k)
    slow = KEYS[3].public_key
    cl.net.delay_fn = lambda src, dst, m: 0.08 if isinstance(m, Vote) and m.type == PRECOMMIT and m.validator == slow else 0
    try:
        async with trio.open_nursery() as nursery:
            await cl.start(nursery)
            with trio.fail_after(120):
                await cl.wait_all(10)
            nursery.cancel_scope.cancel()
        cl.check_agreement()
        chain = cl.nodes[0].chain
        late = topped = 0
        for h in range(2, 10):
            seen = {s.validator for s in chain.commit_at(h - 1).signatures}
            carried = {s.validator for s in chain.block_at(h).last_commit.signatures}
            assert seen <= carried or chain.block_at(h).header.proposer != cl.nodes[0].key.public_key
            if slow not in seen:
                late += 1
                topped += slow in carried
        assert late >= 4, "the slow validator's precommits should miss the decision"
        assert topped >= late - 1, (topped, late)  # carried by the next block (the proposer had it)
        for h in range(2, 10):  # every carried commit is valid for its block
            b = chain.block_at(h)
            genesis_set(g).verify_commit(g.chain_id, b.last_commit, b.header.prev_hash, h - 1)
    finally:
        cl.close()
