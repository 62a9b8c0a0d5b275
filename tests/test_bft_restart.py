"""Restarts and failed writes of BftEngine validators, on the in-process cluster of test_bft_engine.py
(real LevelDB, SignState and WAL files in tmp dirs; trio's autojump clock):

* a validator that crashed while locked on a block of round r > 0 comes back in round r with the same
  lock and votes, and never votes for another block at that height;
* a validator restarted in a late round waits only for what was left of its timeout, not for the whole
  (round-escalated) timeout again;
* a failed write of the sign state, the WAL or the store (injected by test subclasses) stops the engine
  with FatalWriteError and nothing is sent after it; a restart on a working disk resumes and the chain
  goes on.
"""

from __future__ import annotations

import errno
import os

import plyvel
import pytest
import trio
from test_bft_engine import KEYS, Cluster, TNode, check_chain, genesis_set, make_genesis, virtual_ms

from consensus.bft import NIL, Proposal, Step
from consensus.schedule import ProposerSchedule
from consensus.signstate import SignState
from consensus.transport import ConsensusMessage
from consensus.wal import WAL
from state.errors import FatalWriteError
from state.genesis import Genesis
from state.store import Store
from state.types import PRECOMMIT, PREVOTE, Vote


class Recorder:
    """Every broadcast on the in-memory network (delivered or not) and every injected write failure,
    in the order they happened."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float, str, ConsensusMessage | None]] = []

    def sent(self, src: str, msg: ConsensusMessage) -> None:
        self.events.append(("sent", trio.current_time(), src, msg))

    def failed(self, what: str) -> None:
        self.events.append(("fail", trio.current_time(), what, None))

    def votes_by(self, node: TNode, height: int) -> list[tuple[float, Vote]]:
        """The votes ``node`` signed for ``height`` and sent (each time it sent one: re-broadcasts too)."""
        return [
            (t, m) for kind, t, src, m in self.events
            if kind == "sent" and src == node.name and isinstance(m, Vote) and m.height == height
            and m.validator == node.key.public_key
        ]


def proposer_index(g: Genesis, height: int, round_: int) -> int:
    pk = ProposerSchedule(genesis_set(g)).proposer(height, round_).public_key
    return [k.public_key for k in KEYS].index(pk)


def all_votes(node: TNode, rounds: range) -> set[Vote]:
    core = node.engine.core
    out: set[Vote] = set()
    for r in rounds:
        for t in (PREVOTE, PRECOMMIT):
            vs = core.vote_set(r, t)
            if vs is not None:
                out.update(vs.all_votes())
    return out


def own_vote(node: TNode, round_: int, type_: int) -> Vote | None:
    vs = node.engine.core.vote_set(round_, type_)
    return vs.get(node.key.public_key) if vs is not None else None


# --------------------------------------------------------------------------------------------------


async def test_lock_of_a_later_round_survives_a_restart_and_is_kept(tmp_path, autojump_clock) -> None:
    g = make_genesis()
    cl = Cluster(tmp_path, g)
    for k in KEYS:
        cl.add(k)
    rec = Recorder()
    cl.net.on_broadcast = rec.sent
    try:
        async with trio.open_nursery() as nursery:
            await cl.start(nursery)
            with trio.fail_after(60):
                await cl.wait_all(2)
            stuck = max(n.height for n in cl.nodes) + 2
            props = [proposer_index(g, stuck, r) for r in range(3)]
            victim = next(n for i, n in enumerate(cl.nodes) if i not in props)
            p2 = props[2]

            # Round 0 of `stuck` loses its proposal and times out to round 1, whose block every validator
            # prevotes, locks on and precommits; the round-1 precommits are lost: all stay locked in round 1.
            def drop(src: str, dst: str, m: ConsensusMessage) -> bool:
                if isinstance(m, Proposal):
                    return m.height == stuck and m.round == 0
                return isinstance(m, Vote) and m.type == PRECOMMIT and m.height == stuck and m.round >= 1

            cl.net.drop_fn = drop
            with trio.fail_after(120):
                for n in cl.nodes:
                    await n.engine.wait_until(
                        lambda n=n: n.engine.core.height == stuck
                        and n.engine.core.locked_round == 1
                        and n.engine.core.step == Step.PRECOMMIT
                    )
            before = victim.engine.core.summary()
            assert before["round"] == 1 and before["locked_hash"] is not None
            locked = before["locked_hash"]
            votes_before = all_votes(victim, range(2))
            await victim.crash()

            await nursery.start(victim.run)  # a fresh engine, core, SignState and WAL on the same files
            core = victim.engine.core
            after = core.summary()
            for k in ("height", "round", "step", "locked_round", "locked_hash", "valid_round"):
                assert after[k] == before[k], k
            assert core.valid_value is not None and core.valid_value.hash == locked
            assert votes_before <= all_votes(victim, range(2))  # the votes it had received (and maybe more since)
            # the replay re-signed only what the WAL holds (stored signatures): the sign state refused
            # nothing, so the validator does not leave round 1 on its own
            assert after["sign_failures"] == 0
            await trio.sleep(5)  # ticks and re-broadcasts; no round 1 timeout is due (no 2/3+ precommits)
            assert (core.round, core.locked_round, core.step) == (1, 1, Step.PRECOMMIT)

            # Two validators' nil prevotes of round 2 (more than 1/3) move it to round 2, where the round-2
            # proposer proposes another valid block without a POL: locked on round 1's block, it must
            # prevote nil. (Forged with the test's keys; only the restarted validator ever sees them.)
            evil = cl.net.join("evil")
            vs = genesis_set(g)
            alt = victim.chain.build_block(
                [],
                proposer=KEYS[p2].public_key,
                time_ms=virtual_ms(),
                last_commit=victim.chain.commit_at(stuck - 1),
                validators_hash=vs.hash,
                next_validators_hash=vs.hash,
            ).block
            assert alt.hash != locked
            forgers = [i for i in range(len(KEYS)) if cl.nodes[i] is not victim][:2]
            forged = [Vote.create(KEYS[i], g.chain_id, stuck, 2, PREVOTE, NIL) for i in forgers]
            for v in forged:
                await evil.send_to(victim.name, v)
            await evil.send_to(victim.name, Proposal.create(KEYS[p2], g.chain_id, stuck, 2, -1, alt))
            sent_at = trio.current_time()
            with trio.fail_after(30):
                await victim.engine.wait_until(lambda: own_vote(victim, 2, PREVOTE) is not None)
            assert core.round == 2 and core.proposal(2) is not None and core.proposal(2).block.hash == alt.hash
            assert own_vote(victim, 2, PREVOTE).block_hash == NIL
            # it voted on the proposal (refusing it for its lock), not at the end of the propose timeout
            assert trio.current_time() - sent_at < g.params.timeout_propose_ms / 1000

            # the network recovers (the forged votes stay with the victim): round 1's precommits decide
            forged_by = {v.validator for v in forged}
            cl.net.drop_fn = lambda src, dst, m: (
                isinstance(m, Vote) and m.height == stuck and m.round == 2 and m.validator in forged_by
            )
            with trio.fail_after(120):
                await cl.wait_all(stuck + 3)
            nursery.cancel_scope.cancel()
        cl.check_agreement()
        assert victim.chain.store.block_hash(stuck) == locked
        mine = rec.votes_by(victim, stuck)
        assert any(v.type == PRECOMMIT and v.block_hash == locked for _, v in mine)
        assert {v.block_hash for _, v in mine} <= {NIL, locked}, "voted for another block than its lock"
        for n in cl.nodes:
            check_chain(n, g, stuck + 3)
    finally:
        cl.close()


async def test_restart_in_a_late_round_waits_only_for_the_rest_of_the_timeout(tmp_path, autojump_clock) -> None:
    g = make_genesis()  # propose timeout 400 + 100 r ms, vote timeouts 200 + 100 r ms
    late = 8
    timeout_s = (g.params.timeout_propose_ms + late * g.params.timeout_delta_ms) / 1000
    cl = Cluster(tmp_path, g)
    for k in KEYS:
        cl.add(k)
    rec = Recorder()
    cl.net.on_broadcast = rec.sent
    try:
        async with trio.open_nursery() as nursery:
            await cl.start(nursery)
            with trio.fail_after(60):
                await cl.wait_all(2)
            stuck = max(n.height for n in cl.nodes) + 2
            victim = next(n for i, n in enumerate(cl.nodes) if i != proposer_index(g, stuck, late))
            # every proposal of `stuck` is lost: each round times out (propose, then precommit) to the next
            cl.net.drop_fn = lambda src, dst, m: isinstance(m, Proposal) and m.height == stuck
            with trio.fail_after(300):
                await victim.engine.wait_until(
                    lambda: victim.engine.core.height == stuck and victim.engine.core.round == late
                )
            entered = trio.current_time()  # its propose timeout of round `late` is due at entered + timeout_s
            assert victim.engine.core.step == Step.PROPOSE
            cl.net.isolate(victim.name)  # from now on only its own timeouts move it
            await trio.sleep(0.5)
            await victim.crash()
            await trio.sleep(0.3)
            await nursery.start(victim.run)
            restarted = trio.current_time()
            core = victim.engine.core
            assert (core.height, core.round, core.step) == (stuck, late, Step.PROPOSE)  # not back in round 0
            assert core.sign_failures == 0
            with trio.fail_after(30):
                await victim.engine.wait_until(lambda: own_vote(victim, late, PREVOTE) is not None)
            voted = trio.current_time()
            assert own_vote(victim, late, PREVOTE).block_hash == NIL
            # at the deadline armed before the crash: 0.4 s after the restart, not timeout_s (1.2 s)
            assert abs(voted - (entered + timeout_s)) < 0.02, (voted - entered, timeout_s)
            assert voted - restarted < timeout_s - 0.5
            sent = [t for t, v in rec.votes_by(victim, stuck) if v.round == late and v.type == PREVOTE]
            assert sent and abs(sent[0] - voted) < 1e-6

            # a second restart after that round's timeouts expired: nothing is waited for again
            await victim.crash()
            await trio.sleep(3)
            await nursery.start(victim.run)
            core = victim.engine.core
            assert (core.round, core.step) == (late, Step.PREVOTE) and core.sign_failures == 0

            cl.net.reconnect(victim.name)
            cl.net.drop_fn = None
            with trio.fail_after(300):
                await cl.wait_all(stuck + 2)
            nursery.cancel_scope.cancel()
        cl.check_agreement()
        assert cl.nodes[0].commits[stuck].round >= late
        for n in cl.nodes:
            check_chain(n, g, stuck + 2)
    finally:
        cl.close()


# --------------------------------------------------------------------------------------------------
# failed writes


ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class Disk:
    """The test's hand on one node's disk: ``armed = kind`` makes the next write of that kind fail —
    ``signstate``, ``wal`` (a synced WAL write: a message this node signed, or an end marker) or
    ``store`` (a block commit)."""

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.armed: str | None = None

    def trip(self, kind: str) -> bool:
        if self.armed != kind:
            return False
        self.armed = None
        self.rec.failed(kind)
        return True


def failing_disk(disk: Disk) -> dict:
    """TNode keyword arguments: SignState, WAL and Store subclasses whose writes fail when ``disk`` says so
    (the way a full disk fails them; the production classes are unchanged)."""

    class FailingSignState(SignState):
        def _write_file(self, data: bytes) -> None:
            if disk.trip("signstate"):
                raise ENOSPC
            super()._write_file(data)

    class FailingWAL(WAL):
        def _append(self, rec: bytes, *, sync: bool) -> None:
            if sync and disk.trip("wal"):
                os.write(self._fd, rec[: len(rec) // 2])  # a torn record, as a full disk leaves it
                raise ENOSPC
            super()._append(rec, sync=sync)

    class FailingStore(Store):
        def _apply(self, puts: dict, *, sync: bool) -> None:
            if disk.trip("store"):
                raise plyvel.IOError(b"IO error: No space left on device")
            super()._apply(puts, sync=sync)

    return {"sign_state_class": FailingSignState, "wal_class": FailingWAL, "store_class": FailingStore}


@pytest.mark.parametrize("kind", ["signstate", "wal", "store"])
async def test_failed_write_stops_the_validator_and_a_restart_resumes(tmp_path, autojump_clock, kind) -> None:
    g = make_genesis()
    cl = Cluster(tmp_path, g)
    rec = Recorder()
    cl.net.on_broadcast = rec.sent
    disk = Disk(rec)
    for i, k in enumerate(KEYS):
        cl.add(k, **(failing_disk(disk) if i == 1 else {}))
    victim = cl.nodes[1]
    others = [n for n in cl.nodes if n is not victim]
    try:
        async with trio.open_nursery() as nursery:
            await cl.start(nursery)
            with trio.fail_after(60):
                await cl.wait_all(3)
            disk.armed = kind
            with trio.fail_after(60):
                await victim.stopped.wait()
            err = victim.fatal
            assert isinstance(err, FatalWriteError) and err.reason == f"{kind}_write", err
            assert f"fatal [{kind}_write]" in str(err) and "No space left on device" in str(err)
            # nothing left the validator after the failed write (the message it was for included)
            failed_at = next(i for i, e in enumerate(rec.events) if e[0] == "fail")
            assert [e for e in rec.events[failed_at:] if e[0] == "sent" and e[2] == victim.name] == []
            head = victim.chain.head.height
            assert victim.store.head().height == head  # the store holds whole blocks only
            assert victim.store.block_hash(head + 1) is None and head + 1 not in victim.decided
            if kind == "signstate":  # the file still holds the last state written
                assert SignState(victim.home / "pv.json", victim.key).last == victim.sign_state.last
            victim.wal.close()

            with trio.fail_after(120):  # the other three go on
                await cl.wait_all(head + 3, others)
            if kind == "store":  # the process restarts: the database is opened again
                victim.reopen_db()
            await nursery.start(victim.run)  # on a working disk
            assert victim.fatal is None
            restarted_at = max(n.height for n in cl.nodes)
            target = restarted_at + 3
            with trio.fail_after(120):
                await cl.wait_all(target)
            nursery.cancel_scope.cancel()
        cl.check_agreement()
        for n in cl.nodes:
            check_chain(n, g, target)
        assert victim.height >= target
        # it votes again after the restart
        assert any(v.height > restarted_at for h in range(restarted_at + 1, target + 1) for _, v in rec.votes_by(victim, h))
    finally:
        cl.close()
