"""The stem path of sponsored transactions (node/stem.py) between real libp2p services on 127.0.0.1.

Each node's checks are the harness's ``submit`` (it accepts what the test says; the node's own submission
is exercised by tests/test_anon_network.py); what is tested here is the relay's logic over the real
``/aitbc/<chain>/stem/1`` protocol: a transaction handed to a peer that swallows it is gossiped by its
origin after the embargo; a refusal makes the sender gossip it at once; a relay passes a transaction on
to another peer, never back to the one it came from; only sponsored kinds travel, and a peer that sends
anything else loses score.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from p2p_helpers import CHAIN, handshaken, make_service, wait_until

from node import stem as stem_mod
from node.service import SubmitResult
from node.stem import StemRelay, is_stemmed
from state.crypto import SigningKey
from state.errors import TxError
from state.market import anon
from state.types import TX_TRANSFER, Transaction

KEY = SigningKey.from_seed(b"\x5a" * 32)


def _anon_tx(n: int) -> Transaction:
    return Transaction.create(KEY, CHAIN, anon.TX_ANON_BID, 0, 1000, {"job_id": bytes([n]) * 32, "n": n})


class Harness:
    """One node's side of the relay: what it accepted, what it gossiped."""

    def __init__(self, refuse: str | None = None) -> None:
        self.accepted: list[bytes] = []
        self.fluffed: list[bytes] = []
        self.held: set[bytes] = set()
        self.refuse = refuse

    async def submit(self, raws: list[bytes]) -> list[SubmitResult]:
        out = []
        for raw in raws:
            tx = Transaction.decode(raw)
            if self.refuse is not None:
                out.append(SubmitResult(tx.hash, TxError("refused by the test", self.refuse)))
            else:
                self.accepted.append(raw)
                out.append(SubmitResult(tx.hash))
        return out

    def fluff(self, raws: list[bytes]) -> None:
        self.fluffed.extend(raws)

    def hold(self, tx_hash: bytes) -> None:  # Mempool.hold: out of this node's blocks while on the stem
        self.held.add(tx_hash)

    def release(self, tx_hash: bytes) -> None:
        self.held.discard(tx_hash)


@pytest.fixture
def short_embargo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stem_mod, "EMBARGO_S", (0.3, 0.4))


def test_only_sponsored_kinds_travel_by_the_stem() -> None:
    assert is_stemmed(_anon_tx(1))
    assert not is_stemmed(Transaction.create(KEY, CHAIN, TX_TRANSFER, 0, 10, {"to": KEY.public_key, "amount": 1}))


@asynccontextmanager
async def origin_with_a_swallowing_peer() -> AsyncIterator[tuple[StemRelay, Harness, list[bytes]]]:
    """An origin whose only peer takes every stem transaction and does nothing with it:
    ``(the origin's relay, its harness, what the peer swallowed)``."""
    swallowed: list[bytes] = []

    async def swallow(peer: str, raw: bytes) -> None:  # a hostile peer
        swallowed.append(raw)

    origin = Harness()
    a, _ = make_service(1)
    relay = StemRelay(a, origin.submit, origin.fluff, lambda h: True, hold=origin.hold, release=origin.release)
    async with trio.open_nursery() as n:
        await n.start(a.run)
        await n.start(relay.run)
        h, _ = make_service(2, bootstrap=a.listen_addrs(), stem_provider=swallow)
        await n.start(h.run)
        await wait_until(lambda: handshaken(a, h), what="handshake")
        yield relay, origin, swallowed
        n.cancel_scope.cancel()


async def test_a_swallowed_transaction_is_gossiped_by_its_origin_after_the_embargo(short_embargo: None) -> None:
    async with origin_with_a_swallowing_peer() as (relay, origin, swallowed):
        tx = _anon_tx(1)
        relay.send_own([tx.raw])
        assert origin.held == {tx.hash}  # out of the origin's own blocks from the start
        await wait_until(lambda: swallowed == [tx.raw], what="handed to the only peer")
        assert origin.fluffed == []  # not gossiped by its origin at once
        await wait_until(lambda: origin.fluffed == [tx.raw], limit=5, what="gossiped after the embargo")
        assert origin.held == set()


async def test_an_origin_never_gossips_a_transaction_that_came_back_as_gossip(short_embargo: None) -> None:
    """Dandelion++'s embargo rule: once the transaction reached the origin as a peer's gossip (someone fluffed
    it), the origin's embargo is over and it never gossips the transaction under its own peer id."""
    async with origin_with_a_swallowing_peer() as (relay, origin, swallowed):
        tx = _anon_tx(4)
        relay.send_own([tx.raw])
        await wait_until(lambda: swallowed == [tx.raw] and tx.hash in relay._embargo, what="handed off, embargoed")
        assert origin.held == {tx.hash}
        relay.seen([b"another transaction", tx.raw])  # what TxGossip reports of a peer's batch
        assert tx.hash not in relay._embargo and origin.fluffed == [] and origin.held == set()


async def test_a_refused_transaction_is_gossiped_at_once_and_nothing_waits_without_peers(short_embargo: None) -> None:
    origin, peer_side = Harness(), Harness(refuse="already_known")
    a, _ = make_service(1)
    relay = StemRelay(a, origin.submit, origin.fluff, lambda h: False)
    async with trio.open_nursery() as n:
        await n.start(a.run)
        await n.start(relay.run)
        alone = _anon_tx(9).raw
        relay.send_own([alone])  # no peer at all: gossiped (nobody else would ever see it)
        await wait_until(lambda: origin.fluffed == [alone], what="gossiped without peers")
        holder: list[StemRelay] = []
        b, _ = make_service(2, bootstrap=a.listen_addrs(), stem_provider=lambda p, raw: holder[0].on_stem(p, raw))
        b_relay = StemRelay(b, peer_side.submit, peer_side.fluff, lambda h: True)
        holder.append(b_relay)
        await n.start(b.run)
        await n.start(b_relay.run)
        await wait_until(lambda: handshaken(a, b) and handshaken(b, a), what="handshake")
        raw = _anon_tx(2).raw
        relay.send_own([raw])
        await wait_until(lambda: origin.fluffed == [alone, raw], what="gossiped at once after the refusal")
        assert peer_side.accepted == [] and peer_side.fluffed == []
        n.cancel_scope.cancel()


@asynccontextmanager
async def star(leaves: str) -> AsyncIterator[tuple[dict[str, Any], dict[str, Harness]]]:
    """Relay R with the ``leaves`` (one letter each) connected to it: R's coin always says relay, the
    leaves' always say fluff. Yields the services and harnesses by letter."""
    names = "r" + leaves
    sides = {name: Harness() for name in names}
    svc: dict[str, Any] = {}
    relays: dict[str, StemRelay] = {}
    coins = {name: random.Random(i) for i, name in enumerate(names)}
    for name in names:
        coins[name].random = (lambda: 0.99) if name == "r" else (lambda: 0.0)  # type: ignore[method-assign]

    def provider(name: str):
        return lambda peer, raw: relays[name].on_stem(peer, raw)

    async with trio.open_nursery() as n:
        for i, name in enumerate(names):
            boot = svc["r"].listen_addrs() if name != "r" else []
            s = svc[name] = make_service(3 + i, bootstrap=boot, stem_provider=provider(name))[0]
            relays[name] = StemRelay(s, sides[name].submit, sides[name].fluff, lambda h: True, rng=coins[name])
            await n.start(s.run)
            await n.start(relays[name].run)
        leaf = [svc[x] for x in leaves]
        await wait_until(lambda: handshaken(svc["r"], *leaf) and all(handshaken(x, svc["r"]) for x in leaf),
                         what="a star around R")
        yield svc, sides
        n.cancel_scope.cancel()


async def test_a_relay_passes_it_on_never_back_and_refuses_other_kinds(short_embargo: None) -> None:
    """B hands a tx to R; R (its coin says: relay) passes it to C, not back to B; C (its coin says: fluff)
    gossips it. A transfer sent on the stem is refused and costs B score."""
    async with star("bc") as (svc, sides):
        r = svc["r"]
        raw = _anon_tx(3).raw
        assert await svc["b"].send_stem(r.peer_id, raw) is None
        await wait_until(lambda: sides["c"].fluffed == [raw], what="C gossips it")
        assert sides["r"].accepted == [raw] and sides["r"].fluffed == [] and sides["b"].accepted == []
        transfer = Transaction.create(KEY, CHAIN, TX_TRANSFER, 0, 10, {"to": KEY.public_key, "amount": 1}).raw
        assert await svc["b"].send_stem(r.peer_id, transfer) == "not_sponsored"
        assert r.score(svc["b"].peer_id) < 0
        assert await svc["b"].send_stem(r.peer_id, b"\x00garbage") == "malformed"


async def test_a_relay_sends_each_source_to_one_next_hop_per_epoch(short_embargo: None) -> None:
    """Dandelion++'s per-epoch routes: two transactions from B take the same next hop, one of R's two relays
    for the epoch; a transaction from that hop goes elsewhere (never back)."""
    async with star("bcd") as (svc, sides):
        r = svc["r"]
        for i in (5, 6):
            assert await svc["b"].send_stem(r.peer_id, _anon_tx(i).raw) is None
        got = lambda name: [Transaction.decode(x).hash for x in sides[name].accepted]  # noqa: E731
        await wait_until(lambda: len(got("c")) + len(got("d")) == 2, what="both relayed")
        hop = "c" if got("c") else "d"
        assert len(got(hop)) == 2  # one next hop for B's transactions this epoch
        assert await svc[hop].send_stem(r.peer_id, _anon_tx(7).raw) is None
        other = "d" if hop == "c" else "c"
        await wait_until(lambda: _anon_tx(7).hash in got(other) or _anon_tx(7).hash in got("b"), what="relayed on")
        assert _anon_tx(7).hash not in got(hop)  # never back to where it came from
