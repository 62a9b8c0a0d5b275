"""The libp2p layer with real hosts on 127.0.0.1 (one trio process), plus one test with two OS processes.

Every wait is bounded. Waiting on a peer table or a score polls (there is no event for those); message
delivery is awaited on the subscription channels.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import trio
from p2p_helpers import (
    CHAIN,
    GENESIS,
    FakeChain,
    handshaken,
    in_mesh,
    make_service,
    plain_libp2p_host,
    raw_request,
    wait_until,
)
from prometheus_client import CollectorRegistry

from p2p import P2PConfig, P2PService, RemoteError
from p2p.batch import GossipBatcher, decode_batch
from p2p.identity import peer_id_from_ed25519
from p2p.service import parse_peer_id
from state import codec
from state.crypto import SigningKey

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def no_errors(caplog: pytest.LogCaptureFixture):
    """Every test: no ERROR records (libp2p or ours), no 'Nursery is closed' anywhere, and no socket left
    open once every service has stopped (ResourceWarning at garbage collection)."""
    caplog.set_level(logging.WARNING)
    gc.collect()  # whatever earlier tests left behind is not ours
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, "unclosed resources:\n" + "\n".join(leaks)
    records = caplog.get_records("setup") + caplog.get_records("call") + caplog.get_records("teardown")
    bad = [
        r
        for r in records
        if r.levelno >= logging.ERROR
        or "Nursery is closed" in r.getMessage()
        or "Traceback" in r.getMessage()
    ]
    assert not bad, "unexpected log records:\n" + "\n".join(f"{r.name}: {r.getMessage()}" for r in bad)


def counter(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def receive(ch: trio.MemoryReceiveChannel, limit: float = 10.0) -> tuple[str, bytes]:
    with trio.fail_after(limit):
        return await ch.receive()


# ---------------------------------------------------------------------------------------- identity


def test_a_cancelled_connection_setup_is_not_reported_as_a_failure() -> None:
    """py-libp2p logs a connection cancelled while it is being added (our stop, a dial given up) as a
    WARNING with a traceback; the service's filter demotes exactly that, not other add_conn failures."""
    import trio

    from p2p.service import _DemoteBenignErrors

    def record(exc: BaseException) -> logging.LogRecord:
        return logging.LogRecord("libp2p.network.swarm", logging.WARNING, __file__, 1,
                                 "[ADDCONN_FAIL] add_conn failed for peer %s: %r\n%s", ("12D3Koo", exc, "Traceback…"),
                                 None)

    f = _DemoteBenignErrors()
    cancelled = record(trio.Cancelled._create(source="explicit"))
    assert f.filter(cancelled) is False and cancelled.levelno == logging.DEBUG  # dropped unless p2p logs DEBUG
    other = record(RuntimeError("handshake failed"))
    assert f.filter(other) is True and other.levelno == logging.WARNING


def test_peer_id_is_the_node_key_identity_and_config_is_checked() -> None:
    key = SigningKey.from_seed(b"\x07" * 32)
    svc = P2PService(
        P2PConfig(),
        key,
        CHAIN,
        GENESIS,
        status_provider=FakeChain().status,
        blocks_provider=FakeChain().blocks,
    )
    assert svc.peer_id == peer_id_from_ed25519(key.public_key)
    assert svc.peer_id.startswith("12D3KooW")
    with pytest.raises(ValueError, match="p2p"):
        P2PService(
            P2PConfig(bootstrap=["/ip4/127.0.0.1/tcp/1"]),
            key,
            CHAIN,
            GENESIS,
            status_provider=FakeChain().status,
            blocks_provider=FakeChain().blocks,
        )
    with pytest.raises(ValueError):
        P2PConfig(degree_low=5, gossip_degree=4).validate()
    with pytest.raises(ValueError):
        svc.register_topic("Bad Kind", None)
    svc.register_topic("tx", None)
    with pytest.raises(ValueError):
        svc.register_topic("tx", None)
    with pytest.raises(ValueError):
        svc.register_topic("custom", None)  # no max_bytes configured for an unknown kind


# ---------------------------------------------------------------------------------------- connect + gossip


async def test_two_then_three_hosts_connect_handshake_and_gossip() -> None:
    a, ca = make_service(1)
    seen: list[tuple[str, int]] = []
    a.on_peer_status(lambda pid, st: seen.append((pid, st.height)))
    async with trio.open_nursery() as n:
        await n.start(a.run)
        b, cb = make_service(2, bootstrap=a.listen_addrs(), chain=FakeChain(height=42))
        await n.start(b.run)
        await wait_until(lambda: handshaken(a, b) and handshaken(b, a), what="A-B handshake")
        pb = {p.peer_id: p for p in a.peers()}[b.peer_id]
        assert pb.status is not None and pb.status.height == 42 and pb.status.genesis_hash == GENESIS
        assert pb.direction == "inbound" and pb.connected_since <= time.time()
        assert (b.peer_id, 42) in seen
        assert a.listen_addrs()[0].endswith("/p2p/" + a.peer_id)

        # the sync engine learns head changes through the periodic status refresh
        cb.height = 50
        await wait_until(lambda: (b.peer_id, 50) in seen, what="status refresh")
        st = await a.request_status(b.peer_id)
        assert st.height == 50 and st.chain_id == CHAIN

        c, _ = make_service(3, bootstrap=a.listen_addrs())
        await n.start(c.run)
        await wait_until(lambda: handshaken(a, b, c) and handshaken(c, a), what="three hosts")

        ra, rb, rc = a.subscribe("vote"), b.subscribe("vote"), c.subscribe("vote")
        await in_mesh(a, "vote", c)
        await in_mesh(c, "vote", a)
        msg = codec.encode({"vote": 1})
        assert await c.publish("vote", msg) is True
        assert await receive(ra) == (c.peer_id, msg)
        assert await receive(rb) == (c.peer_id, msg)
        assert await c.publish("vote", msg) is False  # the same bytes again: deduplicated by content id
        msg2 = codec.encode({"vote": 2})
        await a.publish("vote", msg2)
        assert await receive(rc) == (a.peer_id, msg2)
        assert await receive(rb) == (a.peer_id, msg2)
        # no copy of our own messages, and nothing else queued
        with pytest.raises(trio.WouldBlock):
            rc.receive_nowait()
        with pytest.raises(trio.WouldBlock):
            ra.receive_nowait()
        with pytest.raises(ValueError, match="not canonical CBOR"):
            await a.publish("vote", b"\xff\x00")
        with pytest.raises(ValueError, match="exceeds"):
            await a.publish("vote", codec.encode(b"x" * 5000))
        n.cancel_scope.cancel()


async def test_validator_rejection_is_not_delivered_nor_forwarded_and_scores_the_sender() -> None:
    def reject_bad(origin: str, data: bytes) -> bool:
        return codec.decode(data) != {"bad": True}

    reg_b = CollectorRegistry()
    # A -- B -- C in a line (no peer exchange): C can only get A's messages through B.
    b, _ = make_service(2, validators={"tx": reject_bad}, registry=reg_b, peer_exchange=False)
    async with trio.open_nursery() as n:
        await n.start(b.run)
        a, _ = make_service(1, bootstrap=b.listen_addrs(), peer_exchange=False)  # A's validator accepts all
        c, _ = make_service(3, bootstrap=b.listen_addrs(), peer_exchange=False)  # C would accept it
        await n.start(a.run)
        await n.start(c.run)
        await wait_until(lambda: handshaken(b, a, c), what="A-B-C line")
        assert not c.connected(a.peer_id)
        rb, rc = b.subscribe("tx"), c.subscribe("tx")
        await in_mesh(a, "tx", b)
        await in_mesh(b, "tx", c)

        bad, good = codec.encode({"bad": True}), codec.encode({"good": 1})
        await a.publish("tx", bad)
        await wait_until(
            lambda: (
                counter(reg_b, "p2p_gossip_messages_total", topic="tx", direction="in", result="rejected")
                == 1
            )
        )
        await a.publish("tx", good)
        assert await receive(rb) == (a.peer_id, good)
        assert await receive(rc) == (a.peer_id, good)  # forwarded by B, with A as the origin
        with pytest.raises(trio.WouldBlock):
            rb.receive_nowait()
        with pytest.raises(trio.WouldBlock):
            rc.receive_nowait()
        assert b.score(a.peer_id) < -9  # one invalid message: -invalid_message_penalty (decaying)
        assert b.score(c.peer_id) == 0.0
        assert {p.peer_id: p.score for p in b.peers()}[a.peer_id] < -9
        assert counter(reg_b, "p2p_gossip_messages_total", topic="tx", direction="in", result="accepted") == 1
        n.cancel_scope.cancel()


async def test_garbage_and_oversized_messages_are_dropped() -> None:
    reg_b = CollectorRegistry()
    b, _ = make_service(2, max_bytes={"tx": 1000}, registry=reg_b)
    async with trio.open_nursery() as n:
        await n.start(b.run)
        a, _ = make_service(1, bootstrap=b.listen_addrs())  # A allows 4 MiB tx messages
        await n.start(a.run)
        await wait_until(lambda: handshaken(b, a) and handshaken(a, b), what="handshake")
        rb = b.subscribe("tx")
        await in_mesh(a, "tx", b)
        topic = a._topics["tx"].name
        await a._pubsub.publish(topic, b"\xde\xad\xbe\xef not cbor")  # bypasses A's own checks
        await a.publish("tx", codec.encode(b"x" * 2000))  # fine for A, over B's bound
        good = codec.encode({"ok": 1})
        await a.publish("tx", good)
        assert await receive(rb) == (a.peer_id, good)
        labels = dict(topic="tx", direction="in")
        await wait_until(
            lambda: (
                counter(reg_b, "p2p_gossip_messages_total", **labels, result="malformed") == 1
                and counter(reg_b, "p2p_gossip_messages_total", **labels, result="oversize") == 1
            ),
            what="drop counters",
        )
        with pytest.raises(trio.WouldBlock):
            rb.receive_nowait()
        assert b.score(a.peer_id) < -18
        assert b.connected(a.peer_id)  # two invalid messages: penalised, not yet graylisted
        n.cancel_scope.cancel()


async def test_other_genesis_is_disconnected_banned_and_gets_no_gossip(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, _ = make_service(1)
    async with trio.open_nursery() as n:
        await n.start(a.run)
        b, _ = make_service(2, bootstrap=a.listen_addrs())
        x, _ = make_service(
            9, bootstrap=a.listen_addrs(), chain=FakeChain(genesis=hashlib.sha256(b"other").digest())
        )
        rx = x.subscribe("tx")
        stop_spam = trio.Event()

        async def spam() -> None:  # A gossips all the time X connects, handshakes and is dropped
            i = 0
            while not stop_spam.is_set():
                await a.publish("tx", codec.encode({"spam": i}))
                i += 1
                with trio.move_on_after(0.01):
                    await stop_spam.wait()

        n.start_soon(spam)
        await n.start(x.run)
        await wait_until(
            lambda: a.peer_id in x.banned_peers() and x.peer_id in a.banned_peers(), what="mutual ban"
        )
        await wait_until(lambda: not a._host.get_network().get_connections(x._id), what="goodbye window over")
        stop_spam.set()
        assert "genesis mismatch" in a.banned_peers()[x.peer_id]
        assert "genesis mismatch" in x.banned_peers()[a.peer_id]
        assert any("genesis mismatch" in r.getMessage() for r in caplog.records)
        await n.start(b.run)
        await wait_until(lambda: handshaken(a, b), what="A-B handshake")
        rb = b.subscribe("tx")
        await in_mesh(a, "tx", b)
        m = codec.encode({"tx": "for the right chain"})
        await a.publish("tx", m)
        with trio.fail_after(10):
            while (got := await rb.receive()) != (a.peer_id, m):  # (B may first get recent spam replayed)
                assert codec.decode(got[1]).keys() == {"spam"}
        assert not a.connected(x.peer_id) and not x.connected(a.peer_id)
        assert all(p.peer_id != a.peer_id for p in x.peers())
        with pytest.raises(trio.WouldBlock):
            rx.receive_nowait()
        n.cancel_scope.cancel()


async def test_stock_libp2p_peer_reads_gossip_and_malformed_rpcs_do_not_hurt() -> None:
    """DESIGN §4: any standard libp2p implementation can connect and read gossip (it becomes an
    "observer": no status protocol). Malformed pubsub RPCs are penalised, never fatal."""
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
    from libp2p.pubsub.pb import rpc_pb2
    from libp2p.utils import encode_varint_prefixed
    from multiaddr import Multiaddr

    a, _ = make_service(1)
    async with trio.open_nursery() as n:
        await n.start(a.run)
        topic = a._topics["tx"].name
        async with plain_libp2p_host(0x60) as (host, pubsub):
            sub = await pubsub.subscribe(topic)
            with trio.fail_after(10):
                await host.connect(info_from_p2p_addr(Multiaddr(a.listen_addrs()[0])))
            plain = host.get_id().to_base58()
            await wait_until(lambda: {p.peer_id: p.handshake for p in a.peers()}.get(plain) == "observer")
            with trio.fail_after(10):
                await pubsub.wait_for_mesh(parse_peer_id(a.peer_id), topic, timeout=10)
            m = codec.encode({"for": "anyone"})
            await a.publish("tx", m)
            with trio.fail_after(10):
                got = await sub.get()
            assert got.data == m and got.from_id == parse_peer_id(a.peer_id).to_bytes()

            # a message with an undecodable signing key, then bytes that are no protobuf at all
            bogus = rpc_pb2.RPC(
                publish=[
                    rpc_pb2.Message(
                        from_id=b"\x12\x20" + b"\x01" * 32,
                        data=codec.encode(1),
                        seqno=b"\x00" * 8,
                        topicIDs=[topic],
                        signature=b"s" * 64,
                        key=b"not a key",
                    )
                ]
            )
            with trio.fail_after(10):
                stream = await host.new_stream(parse_peer_id(a.peer_id), [TProtocol(PROTOCOL_ID_V11)])
                await stream.write(encode_varint_prefixed(bogus.SerializeToString()))
                await stream.write(encode_varint_prefixed(b"\x0a\x05ab"))
            await wait_until(lambda: a.score(plain) < -39, what="both penalties")
            assert a.connected(plain)
            m2 = codec.encode({"still": "alive"})
            await a.publish("tx", m2)
            with trio.fail_after(10):
                assert (await sub.get()).data == m2
        n.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------- request/response


async def test_blocks_status_and_blob_requests_are_bounded_and_reject_bad_requests() -> None:
    reg_a = CollectorRegistry()
    a, ca = make_service(1, chain=FakeChain(height=400), registry=reg_a, max_blocks_response_bytes=4096)
    blob = os.urandom(2_500_000)
    bh = hashlib.sha256(blob).digest()
    ca.blobs[bh] = blob
    async with trio.open_nursery() as n:
        await n.start(a.run)
        b, _ = make_service(2, bootstrap=a.listen_addrs(), blob_chunk_bytes=1 << 20)
        await n.start(b.run)
        await wait_until(lambda: handshaken(b, a), what="handshake")

        items = await b.request_blocks(a.peer_id, 5, 3)
        assert items == ca.blocks(5, 3)
        assert [codec.decode(i)[0] for i in items] == [b"block-5", b"block-6", b"block-7"]
        assert await b.request_blocks(a.peer_id, 399, 10) == ca.blocks(399, 2)  # only what exists
        assert await b.request_blocks(a.peer_id, 1000, 5) == []
        # the provider returns more than asked and more than the response bound: both enforced
        ca.blocks_override = lambda s, c: [b"x" * 1000] * 300
        got = await b.request_blocks(a.peer_id, 0, 10)
        assert 1 <= len(got) < 10 and sum(map(len, got)) <= 4096
        ca.blocks_override = lambda s, c: [b"y" * 5000]
        with pytest.raises(RemoteError) as ei:
            await b.request_blocks(a.peer_id, 0, 1)
        assert ei.value.code == "too_large"
        ca.blocks_override = lambda s, c: 1 / 0
        with pytest.raises(RemoteError) as ei:
            await b.request_blocks(a.peer_id, 0, 1)
        assert ei.value.code == "unavailable"
        ca.blocks_override = None
        with pytest.raises(ValueError):
            await b.request_blocks(a.peer_id, 0, 257)

        # malformed requests get an error answer and never hurt the handler
        for payload in (
            b"\xff\xff garbage",
            codec.encode({"start": 0}),
            codec.encode({"start": -1, "count": 1}),
            codec.encode({"start": 0, "count": 0}),
            codec.encode({"start": 0, "count": 100_000}),
            codec.encode([1, 2]),
            b"\xa2\x65start\x00\x65count\x01",  # not canonical (key order)
        ):
            resp = await raw_request(b, a, "blocks", payload)
            assert resp["error"]["code"] == "bad_request", payload
        assert (await raw_request(b, a, "status", codec.encode({"chain_id": 1})))["error"][
            "code"
        ] == "bad_request"
        assert (await raw_request(b, a, "blob", codec.encode({"hash": b"short"})))["error"][
            "code"
        ] == "bad_request"
        assert await b.request_blocks(a.peer_id, 1, 1) == ca.blocks(1, 1)
        assert counter(reg_a, "p2p_reqresp_requests_total", protocol="blocks", result="bad_request") == 7
        assert counter(reg_a, "p2p_reqresp_requests_total", protocol="blocks", result="served") >= 5

        # blobs: chunked, verified, missing -> None
        assert await b.request_blob(a.peer_id, bh) == blob
        assert await b.request_blob(a.peer_id, hashlib.sha256(b"nope").digest()) is None
        ca.blobs[hashlib.sha256(b"real").digest()] = b"corrupted"
        with pytest.raises(RemoteError):
            await b.request_blob(a.peer_id, hashlib.sha256(b"real").digest())
        assert b.connected(a.peer_id)
        n.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------- discovery


async def test_peer_exchange_learns_peers_beyond_bootstrap() -> None:
    async with trio.open_nursery() as n:
        # A bootstraps to B; C bootstraps only to B and must learn A from B.
        b, _ = make_service(2)
        await n.start(b.run)
        a, _ = make_service(1, bootstrap=b.listen_addrs())
        await n.start(a.run)
        await wait_until(lambda: handshaken(b, a), what="A-B")
        c, _ = make_service(3, bootstrap=b.listen_addrs())
        await n.start(c.run)
        await wait_until(lambda: handshaken(c, b, a), what="C learns A through B", limit=15)
        assert any(p.peer_id == a.peer_id and p.addrs for p in c.peers())
        n.cancel_scope.cancel()


async def test_reconnect_after_peer_restarts_with_same_key_and_port() -> None:
    async def run_in_scope(svc: P2PService, scope: trio.CancelScope, *, task_status=trio.TASK_STATUS_IGNORED):
        with scope:
            await svc.run(task_status=task_status)

    b, _ = make_service(2)
    async with trio.open_nursery() as n:
        b_scope = trio.CancelScope()
        await n.start(run_in_scope, b, b_scope)
        port = int(b.listen_addrs()[0].split("/tcp/")[1].split("/")[0])
        a, _ = make_service(1, bootstrap=b.listen_addrs())
        await n.start(a.run)
        await wait_until(lambda: handshaken(a, b), what="A-B")

        b_scope.cancel()  # B stops
        await wait_until(lambda: not a.connected(b.peer_id), what="A sees B gone")

        b2, _ = make_service(2, port=port, chain=FakeChain(height=77))  # same key, same port
        await n.start(b2.run)
        assert b2.peer_id == b.peer_id
        await wait_until(lambda: handshaken(a, b2), what="A reconnects to restarted B", limit=15)
        assert {p.peer_id: p for p in a.peers()}[b.peer_id].status.height == 77
        ra = a.subscribe("tx")
        await in_mesh(b2, "tx", a)
        m = codec.encode({"after": "restart"})
        await b2.publish("tx", m)
        assert await receive(ra) == (b.peer_id, m)
        n.cancel_scope.cancel()


async def test_penalize_below_threshold_disconnects_and_bans() -> None:
    a, _ = make_service(1)
    async with trio.open_nursery() as n:
        await n.start(a.run)
        b, _ = make_service(2, bootstrap=a.listen_addrs())
        await n.start(b.run)
        await wait_until(lambda: handshaken(a, b), what="handshake")
        a.penalize(b.peer_id, 20, "slow block response")
        assert a.connected(b.peer_id) and a.score(b.peer_id) == pytest.approx(-20, abs=0.1)
        a.penalize(b.peer_id, 40, "invalid block")  # total -60 < graylist threshold -50
        await wait_until(lambda: not a.connected(b.peer_id) and not b.connected(a.peer_id), what="disconnect")
        assert "invalid block" in a.banned_peers()[b.peer_id]
        # B redials its bootstrap peer once, is told it is banned and stops redialing for a ban period.
        await wait_until(
            lambda: b._known[a.peer_id].next_dial > time.monotonic() + 60, what="B backs off", limit=15
        )
        assert not a.connected(b.peer_id)
        n.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------- load


async def test_burst_of_200_messages_reaches_two_peers_completely(caplog: pytest.LogCaptureFixture) -> None:
    # Small queues and a low rate limit, so that publish() has to pace itself: nothing may be dropped.
    reg = CollectorRegistry()
    a, _ = make_service(1, registry=reg, peer_queue_max_msgs=16, gossip_rate_limit=400)
    async with trio.open_nursery() as n:
        await n.start(a.run)
        b, _ = make_service(2, bootstrap=a.listen_addrs())
        c, _ = make_service(3, bootstrap=a.listen_addrs())
        await n.start(b.run)
        await n.start(c.run)
        await wait_until(lambda: handshaken(a, b, c), what="handshakes")
        rb, rc = b.subscribe("tx"), c.subscribe("tx")
        await in_mesh(a, "tx", b)
        await in_mesh(a, "tx", c)
        total = 200
        msgs = [codec.encode({"n": i, "pad": b"p" * 150}) for i in range(total)]
        done: dict[str, float] = {}
        t0 = time.perf_counter()

        async def collect(name: str, ch: trio.MemoryReceiveChannel) -> None:
            got = set()
            with trio.fail_after(30):
                while len(got) < total:
                    origin, data = await ch.receive()
                    assert origin == a.peer_id
                    got.add(data)
            assert got == set(msgs)
            done[name] = time.perf_counter() - t0

        async with trio.open_nursery() as inner:
            inner.start_soon(collect, "b", rb)
            inner.start_soon(collect, "c", rc)
            for m in msgs:
                await a.publish("tx", m)
        secs = max(done.values())
        print(
            f"\nburst: {total} x {len(msgs[0])} B to 2 peers in {secs:.2f} s = {total / secs:.0f} msg/s per receiver"
        )
        labels = dict(topic="tx", direction="out")
        assert counter(reg, "p2p_gossip_messages_total", **labels, result="published") == total
        assert counter(reg, "p2p_gossip_messages_total", **labels, result="dropped") == 0
        assert not [
            r for r in caplog.records if "Rate limit exceeded" in r.getMessage() or "full" in r.getMessage()
        ]
        n.cancel_scope.cancel()


async def test_batched_burst_of_2000_items_reaches_two_peers() -> None:
    """Small items (transactions) travel many per gossip message: far more items/s than messages/s."""
    a, _ = make_service(1)
    async with trio.open_nursery() as n:
        await n.start(a.run)
        b, _ = make_service(2, bootstrap=a.listen_addrs())
        c, _ = make_service(3, bootstrap=a.listen_addrs())
        await n.start(b.run)
        await n.start(c.run)
        await wait_until(lambda: handshaken(a, b, c), what="handshakes")
        rb, rc = b.subscribe("tx"), c.subscribe("tx")
        await in_mesh(a, "tx", b)
        await in_mesh(a, "tx", c)
        batcher = GossipBatcher(a, "tx", max_items=250, max_delay=0.02)
        await n.start(batcher.run)
        total = 2000
        items = [codec.encode({"tx": i, "pad": b"p" * 120}) for i in range(total)]
        done: dict[str, tuple[float, int]] = {}
        t0 = time.perf_counter()

        async def collect(name: str, ch: trio.MemoryReceiveChannel) -> None:
            got: set[bytes] = set()
            messages = 0
            with trio.fail_after(30):
                while len(got) < total:
                    origin, data = await ch.receive()
                    assert origin == a.peer_id
                    got.update(decode_batch(data, max_bytes=4 << 20))
                    messages += 1
            assert got == set(items)
            done[name] = (time.perf_counter() - t0, messages)

        async with trio.open_nursery() as inner:
            inner.start_soon(collect, "b", rb)
            inner.start_soon(collect, "c", rc)
            for it in items:
                assert batcher.add(it)
        secs = max(t for t, _ in done.values())
        assert batcher.items_sent == total and batcher.batches_sent == done["b"][1] < total / 50
        print(
            f"\nbatched: {total} items in {batcher.batches_sent} messages to 2 peers in {secs:.2f} s = {total / secs:.0f} items/s"
        )
        n.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------- two processes


async def test_two_os_processes_gossip_and_request(tmp_path: Path) -> None:
    p, _ = make_service(0x50)
    async with trio.open_nursery() as n:
        await n.start(p.run)
        env = dict(os.environ, PYTHONPATH=str(HERE.parent), PYTHONUNBUFFERED="1")
        stderr = open(tmp_path / "child.log", "wb")  # noqa: ASYNC230, SIM115 - tiny log file, closed below
        proc = await trio.lowlevel.open_process(
            [sys.executable, str(HERE / "p2p_helpers.py"), (b"\x51" * 32).hex(), p.listen_addrs()[0]],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=str(HERE.parent),
        )
        try:
            line = b""
            with trio.fail_after(30):
                while not line.endswith(b"\n"):
                    chunk = await proc.stdout.receive_some(4096)
                    assert chunk, "child exited: " + (tmp_path / "child.log").read_text()
                    line += chunk
            child = json.loads(line)
            assert child["addrs"][0].endswith("/p2p/" + child["peer_id"])
            await wait_until(
                lambda: p.connected(child["peer_id"]) and handshaken(p), what="child connects", limit=20
            )
            await wait_until(
                lambda: {x.peer_id: x.handshake for x in p.peers()}.get(child["peer_id"]) == "ok",
                what="handshake",
            )
            status = await p.request_status(child["peer_id"])
            assert status.height == 7
            receipts = p.subscribe("receipt")
            with trio.fail_after(10):
                await p.wait_for_mesh("tx", child["peer_id"])
            m = codec.encode({"job": "ping"})
            await p.publish("tx", m)
            origin, data = await receive(receipts, 20)
            assert origin == child["peer_id"]
            assert codec.decode(data) == {"echo": m, "from": p.peer_id}
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            with trio.move_on_after(10):
                await proc.wait()
            await proc.stdout.aclose()
            stderr.close()
        await wait_until(lambda: not p.connected(child["peer_id"]), what="child gone")
        n.cancel_scope.cancel()


async def test_listener_addresses_survive_the_listener_closing() -> None:
    """py-libp2p's TCP listener asked every socket for its name, closed or not: an identify answered while
    the host stopped raised EBADF and took the service down. The swarm's listeners skip closed sockets."""
    from libp2p.transport.tcp.tcp import TCPListener

    from p2p.swarm import _ClosingSafeTCPListener

    svc, _ = make_service(41)
    async with trio.open_nursery() as nursery:
        await nursery.start(svc.run)
        listeners = list(svc._host.get_network().listeners.values())
        assert listeners and all(type(x) is _ClosingSafeTCPListener for x in listeners)
        nursery.cancel_scope.cancel()

    # the address list of a listener whose socket was closed (close() closes them before dropping them)
    socks = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = _ClosingSafeTCPListener.__new__(_ClosingSafeTCPListener)
    listener.listeners = socks
    assert len(listener.get_addrs()) == 1
    for sock in socks:
        await sock.aclose()
    assert listener.get_addrs() == ()  # upstream TCPListener.get_addrs: OSError EBADF
    with pytest.raises(OSError):
        TCPListener.get_addrs(listener)


def test_status_carries_an_optional_validator_proof_bound_to_the_peer_id() -> None:
    from p2p import ChainStatus, ValidatorProof
    from p2p.identity import peer_id_from_ed25519
    from state.errors import DecodeError

    vkey, node = SigningKey.from_seed(b"\x71" * 32), peer_id_from_ed25519(SigningKey.from_seed(b"\x72" * 32).public_key)
    plain = FakeChain().status()
    proof = ValidatorProof.make(vkey, CHAIN, plain.genesis_hash, node)
    with_proof = ChainStatus(plain.chain_id, plain.genesis_hash, plain.height, plain.head_hash, plain.finalized_height,
                             proof)
    assert "validator" not in plain.to_obj()  # a node without a proof sends the status as before
    assert ChainStatus.decode(with_proof.encode()) == with_proof and ChainStatus.decode(plain.encode()) == plain
    assert proof.verify(CHAIN, plain.genesis_hash, node)
    other = peer_id_from_ed25519(vkey.public_key)
    assert not proof.verify(CHAIN, plain.genesis_hash, other)  # replayed by another peer
    assert not proof.verify(CHAIN + "x", plain.genesis_hash, node)
    assert not proof.verify(CHAIN, b"\x00" * 32, node)
    for bad in ([proof.public_key], [proof.public_key[:31], proof.signature], [proof.public_key, proof.signature + b"x"],
                {"pk": proof.public_key}, [proof.public_key.hex(), proof.signature]):
        with pytest.raises(DecodeError, match="status.validator"):
            ChainStatus.from_obj({**plain.to_obj(), "validator": bad})
    with pytest.raises(DecodeError):
        ChainStatus.from_obj({**plain.to_obj(), "validators": proof.to_obj()})


async def test_stem_requests_hand_one_transaction_to_the_peer() -> None:
    """``send_stem``: the peer's stem provider gets (our peer id, the bytes) and answers None or a reason;
    a provider that fails answers ``unavailable``; a node without one ``unsupported``; bounds hold."""
    from p2p.reqresp import MAX_STEM_TX_BYTES

    got: list[tuple[str, bytes]] = []

    async def provider(peer: str, tx: bytes) -> str | None:
        got.append((peer, tx))
        if tx == b"boom":
            raise RuntimeError("provider bug")
        return None if tx.startswith(b"ok") else "already_known"

    a, _ = make_service(1, stem_provider=provider)
    async with trio.open_nursery() as n:
        await n.start(a.run)
        b, _ = make_service(2, bootstrap=a.listen_addrs())
        await n.start(b.run)
        await wait_until(lambda: handshaken(b, a), what="handshake")
        assert await b.send_stem(a.peer_id, b"ok tx") is None
        assert await b.send_stem(a.peer_id, b"seen tx") == "already_known"
        assert await b.send_stem(a.peer_id, b"boom") == "unavailable"
        assert got == [(b.peer_id, b"ok tx"), (b.peer_id, b"seen tx"), (b.peer_id, b"boom")]
        assert await a.send_stem(b.peer_id, b"ok") == "unsupported"  # b relays nothing
        for bad in (b"", b"x" * (MAX_STEM_TX_BYTES + 1), "text"):
            with pytest.raises(ValueError):
                await b.send_stem(a.peer_id, bad)  # type: ignore[arg-type]
        # a hand-made request over the limit or of the wrong shape is refused by the server
        from p2p_helpers import raw_request

        resp = await raw_request(b, a, "stem", codec.encode({"tx": b"x" * (MAX_STEM_TX_BYTES + 1)}))
        assert resp["error"]["code"] == "bad_request"
        resp = await raw_request(b, a, "stem", codec.encode({"tx": b"ok", "more": 1}))
        assert resp["error"]["code"] == "bad_request"
        assert len(got) == 3
        n.cancel_scope.cancel()
