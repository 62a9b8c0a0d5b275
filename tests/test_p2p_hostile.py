"""Hostile peers against real libp2p hosts on 127.0.0.1 (issue 10): connection churn, idle identities,
peers that never finish the status exchange, request-stream hoarding, forged/duplicated consensus
gossip and floods. Every wait is bounded; waits on peer tables poll (there is no event for them)."""

from __future__ import annotations

import gc
import logging
import time
import warnings
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from p2p_helpers import CHAIN, FakeChain, fast_config, handshaken, in_mesh, make_service, wait_until
from prometheus_client import CollectorRegistry

from consensus.bft import Proposal
from node.network import P2PConsensusTransport, consensus_topic_bounds
from p2p import P2PService, Verdict
from p2p.identity import peer_id_from_ed25519
from state import codec
from state.crypto import SigningKey
from state.types import EMPTY_HASH, PREVOTE, Block, BlockHeader, Vote

VALIDATOR = SigningKey.from_seed(b"\x31" * 32)
VALIDATOR2 = SigningKey.from_seed(b"\x32" * 32)
OUTSIDER = SigningKey.from_seed(b"\x39" * 32)


@pytest.fixture(autouse=True)
def no_errors(caplog: pytest.LogCaptureFixture):
    """As in test_p2p.py: no ERROR records, no 'Nursery is closed', no unclosed sockets."""
    caplog.set_level(logging.WARNING)
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, "unclosed resources:\n" + "\n".join(leaks)
    records = caplog.get_records("setup") + caplog.get_records("call") + caplog.get_records("teardown")
    bad = [r for r in records if r.levelno >= logging.ERROR or "Nursery is closed" in r.getMessage()]
    assert not bad, "unexpected log records:\n" + "\n".join(f"{r.name}: {r.getMessage()}" for r in bad)


def counter(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@asynccontextmanager
async def bare_host(seed: int, *, status_handler: Any = None):
    """A stock libp2p host with no protocol of ours (optionally a status handler of the test's)."""
    import libp2p
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.custom_types import TProtocol
    from multiaddr import Multiaddr

    from p2p.config import protocol_name

    host = libp2p.new_host(key_pair=create_new_key_pair(bytes([seed]) * 32))
    if status_handler is not None:
        host.set_stream_handler(TProtocol(protocol_name(CHAIN, "status")), status_handler)
    async with host.run(listen_addrs=[Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        await host.get_network().auto_connector.stop()  # it would redial on its own
        try:
            yield host
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                for pid in list(host.get_connected_peers()):
                    await host.disconnect(pid)


async def connect(host: Any, svc: P2PService) -> None:
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    host.get_network().unblock_peer(svc._id)  # libp2p's 60 s negative dial cache
    with trio.fail_after(10):
        await host.connect(info_from_p2p_addr(Multiaddr(svc.listen_addrs()[0])))


def peer_ids(svc: P2PService) -> dict[str, Any]:
    return {p.peer_id: p for p in svc.peers()}


# ---------------------------------------------------------------------------------------- slots


async def test_connections_that_come_and_go_leave_the_node_accepting_peers() -> None:
    # max_peers 4 -> the swarm admits 2 * 4 + 8 = 16 inbound connections at once; py-libp2p 0.8.1 kept
    # each one's slot until the swarm stopped, so the 17th connection ever was refused.
    a, _ = make_service(1, max_peers=4, target_peers=1)
    async with trio.open_nursery() as n:
        await n.start(a.run)
        cap = int(a._host.get_network()._inbound_limiter.total_tokens)
        rounds = 32  # two hosts: 64 connections, four times the cap

        async def churn(seed: int) -> None:
            async with bare_host(seed) as host:
                me = host.get_id()
                for _ in range(rounds):
                    await connect(host, a)
                    await wait_until(lambda: a._live_connections(me), what="A holds the connection")
                    await host.disconnect(a._id)
                    await wait_until(lambda: not a._live_connections(me), what="A sees it closed")

        async with trio.open_nursery() as inner:
            inner.start_soon(churn, 0x70)
            inner.start_soon(churn, 0x71)
        assert 2 * rounds > cap
        await wait_until(
            lambda: a._host.get_network()._inbound_limiter.borrowed_tokens == 0, what="slots released"
        )
        b, _ = make_service(2, bootstrap=a.listen_addrs())
        await n.start(b.run)
        await wait_until(lambda: handshaken(a, b) and handshaken(b, a), what="a new peer after the churn")
        n.cancel_scope.cancel()


async def test_idle_identities_cannot_take_outbound_or_persistent_slots() -> None:
    p_key = SigningKey.from_seed(b"\x44" * 32)
    p_id = peer_id_from_ed25519(p_key.public_key)
    # A keeps P as a persistent peer (at an address where A cannot reach it: P has to dial in) and
    # has 4 slots, 2 of them for its own dials: inbound strangers get 2.
    a, _ = make_service(
        1,
        max_peers=4,
        outbound_slots=2,
        target_peers=2,
        persistent_peers=[f"/ip4/127.0.0.1/tcp/1/p2p/{p_id}"],
    )
    async with trio.open_nursery() as n:
        await n.start(a.run)
        async with bare_host(0x60) as i1, bare_host(0x61) as i2, bare_host(0x62) as i3:
            ids = [h.get_id().to_base58() for h in (i1, i2, i3)]
            await connect(i1, a)
            await connect(i2, a)
            await wait_until(lambda: all(s in peer_ids(a) for s in ids[:2]), what="two idle strangers in")
            await connect(i3, a)  # the third one finds the inbound slots taken
            await wait_until(lambda: not i3.get_network().get_connections(a._id), what="stranger 3 dropped")
            assert ids[2] not in peer_ids(a) and ids[2] not in a.banned_peers()

            # P (persistent) dials in; O is learned through P and dialed by A (an outbound slot)
            o, _ = make_service(5, peer_exchange=False)
            await n.start(o.run)
            p = P2PService(
                fast_config(bootstrap=a.listen_addrs() + o.listen_addrs()),
                p_key,
                CHAIN,
                FakeChain().genesis,
                status_provider=FakeChain().status,
                blocks_provider=FakeChain().blocks,
            )
            await n.start(p.run)
            await wait_until(lambda: handshaken(a, p), what="persistent peer admitted", limit=15)
            await wait_until(lambda: handshaken(a, o), what="A dials O into an outbound slot", limit=20)
            table = peer_ids(a)
            assert table[p_id].protected and table[p_id].direction == "inbound"
            assert table[o.peer_id].direction == "outbound" and not table[o.peer_id].protected
            assert ids[0] in table and ids[1] in table
            # still no room for another stranger
            await connect(i3, a)
            await wait_until(lambda: not i3.get_network().get_connections(a._id), what="stranger 3 again")
            assert ids[2] not in peer_ids(a)
        n.cancel_scope.cancel()


async def test_validators_prove_their_key_for_a_protected_slot() -> None:
    """A keeps one inbound slot; a stranger holds it. A validator's node still gets in (probation) and,
    having proven its key in its status, a protected slot. A node replaying that proof (it names another
    peer id) is penalised and dropped; a node proving a key outside the set is dropped, not penalised. When
    the key leaves the set, the validator's next status unprotects it."""
    members = {VALIDATOR.public_key}
    a, _ = make_service(1, max_peers=2, outbound_slots=1, target_peers=0, peer_exchange=False,
                        is_validator=lambda pk: pk in members, validator_probation_slots=1)
    s_, _ = make_service(2, peer_exchange=False)
    v, _ = make_service(3, peer_exchange=False, validator_key=VALIDATOR)
    f, _ = make_service(4, peer_exchange=False)
    o, _ = make_service(5, peer_exchange=False, validator_key=OUTSIDER)
    f._validator_proof = v._validator_proof  # a hostile peer replays V's proof as its own
    async with trio.open_nursery() as n:
        for svc in (a, s_, v, f, o):
            await n.start(svc.run)
        await connect(s_._host, a)
        await wait_until(lambda: handshaken(a, s_), what="the stranger in the inbound slot")
        await connect(v._host, a)
        await wait_until(lambda: handshaken(a, v) and peer_ids(a)[v.peer_id].protected, what="validator protected")
        assert not peer_ids(a)[s_.peer_id].protected

        await connect(f._host, a)  # on probation (the slot is A's only one), then dropped at its status
        await wait_until(lambda: a.score(f.peer_id) < 0 and f.peer_id not in peer_ids(a), what="replayer dropped")
        await connect(o._host, a)
        await wait_until(lambda: o.peer_id not in peer_ids(a) and not o._host.get_network().get_connections(a._id),
                         what="outsider dropped")
        assert a.score(o.peer_id) == 0 and o.peer_id not in a.banned_peers()
        async with bare_host(0x63) as idle:  # speaks no status protocol: cannot keep a probation slot
            await connect(idle, a)
            await wait_until(lambda: not idle.get_network().get_connections(a._id), what="idle identity dropped")
        assert set(peer_ids(a)) == {s_.peer_id, v.peer_id}

        members.clear()  # VALIDATOR leaves the set: unprotected at its next status (it keeps its connection)
        await wait_until(lambda: not peer_ids(a)[v.peer_id].protected, what="validator unprotected", limit=15)
        n.cancel_scope.cancel()


async def test_peer_that_never_completes_the_status_exchange_is_dropped() -> None:
    async def stall(stream: Any) -> None:  # accepts the status stream, never answers
        with trio.move_on_after(30):
            await stream.read(1024)
            await trio.sleep_forever()

    a, _ = make_service(1, handshake_timeout=2.0)
    async with trio.open_nursery() as n:
        await n.start(a.run)
        async with bare_host(0x63, status_handler=stall) as x:
            me = x.get_id().to_base58()
            await connect(x, a)
            info = await wait_until(lambda: peer_ids(a).get(me), what="admitted")
            assert info.handshake == "pending"
            await wait_until(lambda: not x.get_network().get_connections(a._id), what="dropped", limit=10)
            assert time.time() - info.connected_since < 2.0 + 4.0  # the timeout, plus slack for a busy machine
            assert me not in peer_ids(a) and me not in a.banned_peers()  # dropped, not banned
        n.cancel_scope.cancel()


async def test_one_peer_holding_request_streams_does_not_starve_others() -> None:
    from libp2p.custom_types import TProtocol
    from libp2p.io.msgio import VarIntLengthMsgReadWriter

    from p2p.config import protocol_name

    reg = CollectorRegistry()
    a, ca = make_service(
        1, chain=FakeChain(height=50), registry=reg, max_inbound_requests=6, max_requests_per_peer=3, request_timeout=30.0
    )
    async with trio.open_nursery() as n:
        await n.start(a.run)
        async with bare_host(0x64) as x:
            await connect(x, a)
            me = x.get_id().to_base58()
            await wait_until(lambda: peer_ids(a).get(me) and peer_ids(a)[me].handshake == "observer")
            proto = TProtocol(protocol_name(CHAIN, "blocks"))
            held = []
            with trio.fail_after(10):
                for _ in range(3):  # opened and never written: each holds a handler until request_timeout
                    held.append(await x.new_stream(a._id, [proto]))
            await wait_until(lambda: a._inflight.get((me, "data")) == 3, what="3 requests in flight")
            with trio.fail_after(10):
                for _ in range(5):  # more than the global cap: all refused as this peer's excess
                    s = await x.new_stream(a._id, [proto])
                    resp = codec.decode(await VarIntLengthMsgReadWriter(s, max_msg_size=4096).read_msg())
                    assert resp["error"]["code"] == "busy" and "per peer" in resp["error"]["message"]
                    await s.close()
            b, _ = make_service(2, bootstrap=a.listen_addrs())
            await n.start(b.run)
            await wait_until(lambda: handshaken(b, a), what="B handshake")
            assert await b.request_blocks(a.peer_id, 1, 5) == ca.blocks(1, 5)  # served meanwhile
            assert a._inflight.get((me, "data")) == 3
            assert counter(reg, "p2p_reqresp_requests_total", protocol="blocks", result="busy") == 5
            for s in held:
                await s.reset()
        n.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------- consensus gossip


class FakeView:
    """The consensus view of a node deciding ``height`` with one validator set for every height."""

    def __init__(self, height: int, *keys: SigningKey) -> None:
        self.h = height
        self.keys = {k.public_key for k in keys}
        self.behind_signals = []

    def height(self) -> int | None:
        return self.h

    def validators(self, height: int) -> set[bytes]:
        return self.keys

    def behind(self, height: int) -> None:
        self.behind_signals.append(height)



def vote(key: SigningKey, height: int = 5, tag: bytes = b"b") -> Vote:
    return Vote.create(key, CHAIN, height, 0, PREVOTE, tag * 32)


def consensus_service(seed: int, bootstrap: list[str], registry: Any = None, **cfg: Any) -> tuple[P2PService, P2PConsensusTransport]:
    """A P2PService with the node's consensus transport (bounds from a 64 KiB max_block_bytes genesis)."""
    chain = FakeChain()
    svc = P2PService(
        fast_config(bootstrap=bootstrap, peer_exchange=False, **cfg),
        SigningKey.from_seed(bytes([seed]) * 32),
        CHAIN,
        chain.genesis,
        status_provider=chain.status,
        blocks_provider=chain.blocks,
        metrics_registry=registry,
    )
    transport = P2PConsensusTransport(
        svc, CHAIN, view=FakeView(5, VALIDATOR, VALIDATOR2), max_block_bytes=64 << 10, static_set=True, dedupe_s=60.0
    )
    return svc, transport


def raw_sender(seed: int, bootstrap: list[str]) -> P2PService:
    """A peer that publishes whatever it is given on the consensus topics (its own checks off)."""
    chain = FakeChain()
    svc = P2PService(
        fast_config(bootstrap=bootstrap, peer_exchange=False),
        SigningKey.from_seed(bytes([seed]) * 32),
        CHAIN,
        chain.genesis,
        status_provider=chain.status,
        blocks_provider=chain.blocks,
    )
    for topic in ("vote", "block", "evidence"):
        svc.register_topic(topic, None, 1 << 20, require_cbor=False)
    return svc


async def receive(ch: Any, limit: float = 10.0) -> Any:
    with trio.fail_after(limit):
        return await ch.receive()


@asynccontextmanager
async def line_s_b_c():
    """S -- B -- C: C hears S only through B. B and C run the consensus transport."""
    async with trio.open_nursery() as n:
        b, tb = consensus_service(0x21, [])
        await n.start(b.run)
        await n.start(tb.run)
        c, tc = consensus_service(0x22, b.listen_addrs())
        await n.start(c.run)
        await n.start(tc.run)
        s = raw_sender(0x23, b.listen_addrs())
        await n.start(s.run)
        await wait_until(lambda: handshaken(b, s, c), what="S-B-C line")
        assert not c.connected(s.peer_id)
        for kind in ("vote", "block"):
            await in_mesh(s, kind, b)
            await in_mesh(b, kind, c)
        yield n, s, b, tb, c, tc
        n.cancel_scope.cancel()


@pytest.mark.parametrize(
    "crime",
    ["non_validator_vote", "bad_signature", "malformed_envelope", "oversized", "non_validator_proposal"],
)
async def test_forged_consensus_gossip_is_dropped_and_the_sender_banned(crime: str) -> None:
    async with line_s_b_c() as (_n, s, b, tb, c, tc):
        topic = "vote"
        if crime == "non_validator_vote":
            data = codec.encode([vote(OUTSIDER).encode(), 1])
        elif crime == "bad_signature":
            v = vote(VALIDATOR)
            data = codec.encode([Vote(v.height, v.round, v.type, v.block_hash, v.validator, b"\x00" * 64).encode(), 1])
        elif crime == "malformed_envelope":
            data = codec.encode([vote(VALIDATOR).encode()])  # no nonce
        elif crime == "oversized":
            data = codec.encode([vote(VALIDATOR).encode(), 1, b"x" * 1000])  # over the 576-byte vote bound
        else:
            topic = "block"
            data = codec.encode([Proposal.create(OUTSIDER, CHAIN, 5, 0, -1, small_block(OUTSIDER)).encode(), 1])
        assert await s.publish(topic, data)
        await wait_until(lambda: s.peer_id in b.banned_peers(), what="sender banned")
        assert not b.connected(s.peer_id)
        # nothing reached B's engine; C gets B's next (valid) message first: the forgery was not forwarded
        good = vote(VALIDATOR, tag=b"g")
        await tb.broadcast_vote(good)
        assert await receive(tc.incoming) == (b.peer_id, good)
        with pytest.raises(trio.WouldBlock):
            tb.incoming.receive_nowait()
        assert tb.stats.get("ban", 0) >= (0 if crime == "oversized" else 1)


def small_block(proposer: SigningKey, height: int = 5) -> Block:
    header = BlockHeader(
        chain_id=CHAIN,
        height=height,
        time=1_000 + height,
        prev_hash=EMPTY_HASH,
        tx_root=EMPTY_HASH,
        state_root=EMPTY_HASH,
        results_hash=EMPTY_HASH,
        proposer=proposer.public_key,
        validators_hash=EMPTY_HASH,
        next_validators_hash=EMPTY_HASH,
        last_commit_hash=EMPTY_HASH,
        evidence_hash=EMPTY_HASH,
    )
    return Block(header, (), None, ())


async def test_reenveloped_duplicate_vote_is_forwarded_once_and_costs_nothing() -> None:
    async with line_s_b_c() as (_n, s, b, tb, c, tc):
        v = vote(VALIDATOR)
        for nonce in (1, 2, 3):  # the same signed vote under three envelopes
            assert await s.publish("vote", codec.encode([v.encode(), nonce]))
        assert await receive(tb.incoming) == (s.peer_id, v)
        assert await receive(tc.incoming) == (s.peer_id, v)
        await wait_until(lambda: tb.stats.get("duplicate", 0) == 2, what="two copies ignored by B")
        v2 = vote(VALIDATOR2)
        assert await s.publish("vote", codec.encode([v2.encode(), 4]))
        assert await receive(tc.incoming) == (s.peer_id, v2)  # not a second copy of v
        assert await receive(tb.incoming) == (s.peer_id, v2)
        assert b.score(s.peer_id) == 0.0 and b.connected(s.peer_id)
        # votes out of the window of heights B judges: ignored (not forwarded), no penalty
        assert await s.publish("vote", codec.encode([vote(VALIDATOR, height=50).encode(), 5]))
        await wait_until(lambda: tb.stats.get("ignore", 0) == 1, what="far-future vote ignored")
        v3 = vote(VALIDATOR2, tag=b"3")
        assert await s.publish("vote", codec.encode([v3.encode(), 6]))
        assert await receive(tc.incoming) == (s.peer_id, v3)
        assert b.score(s.peer_id) == 0.0


async def test_per_peer_gossip_budget_penalises_a_flooder() -> None:
    reg = CollectorRegistry()
    # buckets of 10 messages refilled at 2/s: however slowly the flood below goes out, most is over budget
    a, _ = make_service(1, registry=reg, peer_gossip_msgs_per_s=2.0, peer_gossip_burst=5.0, over_budget_penalty=5.0)
    async with trio.open_nursery() as n:
        await n.start(a.run)
        f, _ = make_service(2, bootstrap=a.listen_addrs(), peer_exchange=False)
        g, _ = make_service(3, bootstrap=a.listen_addrs(), peer_exchange=False)
        await n.start(f.run)
        await n.start(g.run)
        await wait_until(lambda: handshaken(a, f, g), what="handshakes")
        ra = a.subscribe("tx")
        await in_mesh(f, "tx", a)
        await in_mesh(g, "tx", a)
        honest = codec.encode({"from": "g"})
        await g.publish("tx", honest)
        assert await receive(ra) == (g.peer_id, honest)
        for i in range(60):
            await f.publish("tx", codec.encode({"flood": i}))
        await wait_until(lambda: f.peer_id in a.banned_peers(), what="flooder banned", limit=20)
        assert "gossip budget" in a.banned_peers()[f.peer_id]
        assert counter(reg, "p2p_gossip_messages_total", topic="tx", direction="in", result="over_budget") >= 10
        assert a.connected(g.peer_id) and a.score(g.peer_id) == 0.0
        n.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------- unit: verdicts


class _FakeP2P:
    peer_id = "12D3KooWself"

    def __init__(self) -> None:
        self.topics: dict[str, tuple] = {}

    def register_topic(self, kind: str, validator: Any, max_bytes: Any = None, **kw: Any) -> None:
        self.topics[kind] = (validator, max_bytes, kw)

    def subscribe(self, kind: str) -> Any:
        return trio.open_memory_channel(1)[1]


def test_window_and_membership_verdicts() -> None:
    view = FakeView(10, VALIDATOR)
    pos = P2PConsensusTransport(_FakeP2P(), CHAIN, view=view, max_block_bytes=1 << 20, static_set=False, dedupe_s=60)
    poa = P2PConsensusTransport(_FakeP2P(), CHAIN, view=view, max_block_bytes=1 << 20, static_set=True, dedupe_s=60)

    def env(v: Vote, nonce: int = 1) -> bytes:
        return codec.encode([v.encode(), nonce])

    def judge(t: P2PConsensusTransport, v: Vote, nonce: int = 1) -> Verdict:
        out = t.judge("vote", "someone", env(v, nonce))
        return out if isinstance(out, Verdict) else out[0]

    assert judge(poa, vote(VALIDATOR, 10)) is Verdict.ACCEPT
    assert judge(poa, vote(VALIDATOR, 10), 2) is Verdict.IGNORE  # same vote, fresh envelope
    assert judge(poa, vote(VALIDATOR, 8)) is Verdict.IGNORE  # too old
    assert judge(poa, vote(VALIDATOR, 13)) is Verdict.IGNORE  # too far ahead (a validator: sync starts)
    assert view.behind_signals == [13]
    view.behind_signals.clear()
    assert judge(poa, vote(OUTSIDER, 10)) is Verdict.BAN
    assert judge(poa, vote(OUTSIDER, 12)) is Verdict.BAN  # PoA: the set of later heights is known
    assert judge(pos, vote(OUTSIDER, 12)) is Verdict.IGNORE  # staked: it may join at an epoch change
    assert judge(pos, vote(OUTSIDER, 10)) is Verdict.BAN
    # far ahead: ignored, but a validator's signature there starts block sync (an outsider's does not)
    assert judge(poa, vote(OUTSIDER, 40)) is Verdict.IGNORE and view.behind_signals == []
    assert judge(poa, vote(VALIDATOR, 40)) is Verdict.IGNORE and view.behind_signals == [40]
    view.h = None  # type: ignore[assignment]  # consensus not running yet
    assert judge(poa, vote(VALIDATOR2, 10)) is Verdict.IGNORE
    # topics: bounded from genesis and strict
    bounds = consensus_topic_bounds(1 << 20)
    fake = poa.p2p
    assert fake.topics["vote"][1] == bounds["vote"] and fake.topics["vote"][2]["strict"] is True
    assert fake.topics["block"][1] == bounds["block"] > 1 << 20


async def test_large_consensus_messages_are_decoded_in_a_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    t = P2PConsensusTransport(_FakeP2P(), CHAIN, view=FakeView(5, VALIDATOR), max_block_bytes=1 << 20, static_set=True, dedupe_s=60)
    calls: list[Any] = []
    real = trio.to_thread.run_sync

    async def counting(fn: Any, *args: Any, **kw: Any) -> Any:
        calls.append(fn)
        return await real(fn, *args, **kw)

    monkeypatch.setattr(trio.to_thread, "run_sync", counting)
    small = codec.encode([Proposal.create(VALIDATOR, CHAIN, 5, 0, -1, small_block(VALIDATOR)).encode(), 1])
    assert await t.judge_async("proposal", "x", small) is Verdict.ACCEPT and not calls
    big = codec.encode([b"\xa0" + b"\x00" * (200 << 10), 1])  # a 200 KiB message that is no proposal
    verdict = await t.judge_async("proposal", "x", big)
    assert verdict[0] is Verdict.BAN and len(calls) == 2  # envelope + hashes, then the decode
    assert await t.judge_async("proposal", "x", big) == verdict and len(calls) == 4  # not cached
