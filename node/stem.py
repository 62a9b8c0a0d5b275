"""Stem relaying of sponsored transactions (Dandelion-style), so an anonymous bid is not published under
its origin's peer id.

Gossip messages are signed by their author's peer key (``strict_signing``): a node that gossips its own
anonymous bid names itself as the bid's origin, and the same peer id authors its miner's other
transactions. A sponsored transaction (``TxKind.sponsor``: ``anon_bid``) submitted on this node therefore
leaves by the *stem*: it is handed to one connected peer over ``/aitbc/<chain>/stem/1``. A peer that
accepts a stem transaction (the normal submission checks, ``Node.submit_raw`` without gossip) either
*fluffs* it — gossips it under its own id — with probability :data:`FLUFF_PROBABILITY`, or passes it on the
stem (never back to the one it came from) to the next hop fixed for its source this epoch (Dandelion++: two
relays picked per :data:`EPOCH_S`, each source mapped to one of them); while a transaction is on the stem the
node keeps it out of the blocks it proposes (``Mempool.hold``). Every node on the path keeps an
*embargo*: a transaction still pending after :data:`EMBARGO_S` that it has not received as gossip from a
peer (Dandelion++'s rule: nobody fluffed it) is fluffed by that node itself, so a peer that swallows it
delays it, never loses it — and an origin whose bid was fluffed by others never gossips it itself. A peer refusing it (``already_known``: it went round) makes the
sender fluff at once. Stem requests carry only sponsored kinds; a provably invalid one costs the sender
score, as in gossip.

What it gives: no gossip observer learns the origin from the message; the first stem peer sees a direct
sender, which may be the origin or a relay. What it does not: a global network observer, or peers
surrounding a node, can still correlate timing (docs/market-threat-model.md).
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from state.errors import DecodeError
from state.machine import TX_KINDS
from state.types import Transaction

log = logging.getLogger("aitbc.node.stem")

FLUFF_PROBABILITY = 0.25  # per relay (Dandelion++ uses 0.1 on large networks; paths stay short here)
EMBARGO_S = (6.0, 12.0)  # a transaction still pending this long after we relayed it is fluffed by us
MAX_EMBARGOED = 1024  # transactions under embargo at once (the oldest is fluffed early beyond this)
STEM_PENALTY = 5.0  # score points for a stem transaction that no honest peer could have relayed
EPOCH_S = 600.0  # Dandelion++ epoch: the stem relays and each source's next hop are kept this long
RELAYS_PER_EPOCH = 2
MAX_ROUTES = 256  # sources remembered per epoch
_NEVER_RELAYED = frozenset({"bad_signature", "malformed", "invalid_body", "not_sponsored"})


def is_stemmed(tx: Transaction) -> bool:
    """Whether a transaction travels by the stem: the sponsored kinds (anonymous bids)."""
    kind = TX_KINDS.get(tx.type)
    return kind is not None and kind.sponsor is not None


class StemRelay:
    """The stem path of one node: :meth:`send_own` for local sponsored transactions, :meth:`on_stem` as
    the p2p layer's ``stem_provider``. Run it with ``nursery.start(relay.run)``."""

    def __init__(
        self,
        p2p: Any,
        submit: Callable[[Sequence[bytes]], Awaitable[list]],
        fluff: Callable[[Sequence[bytes]], None],
        pending: Callable[[bytes], bool],
        metrics: Any = None,
        *,
        rng: random.Random | None = None,
        hold: Callable[[bytes], None] | None = None,
        release: Callable[[bytes], None] | None = None,
    ) -> None:
        """``submit(raws)``: the node's checks without gossip; ``fluff(raws)``: gossip them;
        ``pending(tx_hash)``: whether a transaction is still in the mempool (not committed, not dropped);
        ``hold``/``release(tx_hash)``: keep a transaction out of the blocks this node proposes while it is on
        the stem (``Mempool.hold``), so a proposer on the path does not show it was there."""
        self.p2p = p2p
        self._submit = submit
        self._fluff = fluff
        self._pending = pending
        self._hold_tx = hold or (lambda h: None)
        self._release_tx = release or (lambda h: None)
        self._metrics = metrics
        self._rng = rng or random.SystemRandom()
        self._embargo: dict[bytes, tuple[float, bytes]] = {}  # tx hash -> (deadline, raw)
        self._epoch_end = 0.0  # time.monotonic() when the stem relays are picked again
        self._relays: list[str] = []
        self._routes: dict[str | None, str] = {}  # source peer (None: ours) -> next hop, this epoch
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._embargo_loop)
            task_status.started()

    # -- our own transactions -------------------------------------------------------------------------
    def send_own(self, raws: Sequence[bytes]) -> None:
        """Put locally submitted (already accepted) sponsored transactions on the stem."""
        for raw in raws:
            raw = bytes(raw)
            self._hold(hashlib.sha256(raw).digest(), raw)  # before any await: no block of ours takes it
            self._spawn(self._forward, raw, None, "sent")

    # -- peers' stem transactions ---------------------------------------------------------------------
    async def on_stem(self, peer_id: str, raw: bytes) -> str | None:
        """A peer hands us a transaction on the stem: check it like any submission (no gossip); then fluff
        it or pass it on. Returns None when taken, else the refusal reason."""
        try:
            tx = Transaction.decode(raw)
        except DecodeError:
            self._penalize(peer_id, "malformed")
            return "malformed"
        if not is_stemmed(tx):
            self._penalize(peer_id, "not_sponsored")
            return "not_sponsored"
        (res,) = await self._submit([raw])
        if res.error is not None:
            self._penalize(peer_id, res.error.reason)
            self._count("refused")
            return res.error.reason
        self._count("received")
        if self._rng.random() < FLUFF_PROBABILITY:
            self._do_fluff(tx.hash, raw, "fluffed")
        else:
            self._hold(tx.hash, raw)
            self._spawn(self._forward, raw, peer_id, "relayed")
        return None

    def seen(self, raws: Sequence[bytes]) -> None:
        """Transactions that reached us as gossip from a peer: their embargo ends (someone fluffed them)."""
        if not self._embargo:
            return
        for raw in raws:
            h = hashlib.sha256(raw).digest()  # a transaction's hash is sha256(raw)
            if self._embargo.pop(h, None) is not None:
                self._release_tx(h)

    # -- internals ------------------------------------------------------------------------------------
    async def _forward(self, raw: bytes, came_from: str | None, event: str) -> None:
        """Hand ``raw`` to one random peer (not ``came_from``); fluff it when nobody takes it."""
        tx_hash = hashlib.sha256(raw).digest()
        peers = [p.peer_id for p in self.p2p.peers() if p.handshake == "ok" and p.peer_id != came_from]
        first = self._route(came_from, peers)
        rest = [p for p in peers if p != first]
        self._rng.shuffle(rest)
        for peer in ([first] if first is not None else []) + rest[:1]:
            try:
                refused = await self.p2p.send_stem(peer, raw)
            except Exception as exc:  # unreachable, timeout, malformed answer: the next peer
                log.debug("stem to %s failed: %s", peer, exc)
                continue
            if refused is None:
                self._count(event)
                return
            log.debug("stem to %s refused: %s", peer, refused)
            break  # it has it already, or will not take it: do not walk the network with it
        self._do_fluff(tx_hash, raw, "fluffed")

    def _route(self, came_from: str | None, peers: list[str]) -> str | None:
        """The next hop for transactions from ``came_from`` (None: our own) this epoch: Dandelion++ fixes it
        per source for :data:`EPOCH_S` (one of at most two relays picked for the epoch), so repeated stem
        transactions do not spread over every peer (which would let peers intersect their views)."""
        now = time.monotonic()
        if now >= self._epoch_end:
            self._epoch_end = now + EPOCH_S
            self._relays = []
            self._routes = {}
        live = set(peers)
        self._relays = [r for r in self._relays if r in live or r == came_from]
        pool = [p for p in peers if p not in self._relays]
        self._rng.shuffle(pool)
        while len(self._relays) < RELAYS_PER_EPOCH and pool:
            self._relays.append(pool.pop())
        hop = self._routes.get(came_from)
        if hop not in live:
            choices = [r for r in self._relays if r in live]
            hop = self._rng.choice(choices) if choices else None
            if hop is not None:
                if len(self._routes) >= MAX_ROUTES:
                    self._routes.pop(next(iter(self._routes)))
                self._routes[came_from] = hop
        return hop

    def _hold(self, tx_hash: bytes, raw: bytes) -> None:
        self._hold_tx(tx_hash)
        lo, hi = EMBARGO_S
        self._embargo[tx_hash] = (time.monotonic() + self._rng.uniform(lo, hi), raw)
        while len(self._embargo) > MAX_EMBARGOED:
            oldest = next(iter(self._embargo))
            self._do_fluff(oldest, self._embargo[oldest][1], "embargo")
        self._wake.set()

    def _do_fluff(self, tx_hash: bytes, raw: bytes, event: str) -> None:
        self._embargo.pop(tx_hash, None)
        self._release_tx(tx_hash)
        self._fluff([raw])
        self._count(event)

    async def _embargo_loop(self) -> None:
        while True:
            now = time.monotonic()
            for h, (deadline, raw) in list(self._embargo.items()):
                if deadline <= now:
                    if self._pending(h):
                        log.info("stem: transaction %s still pending after its embargo: gossiping it", h.hex()[:16])
                        self._do_fluff(h, raw, "embargo")
                    else:
                        self._embargo.pop(h, None)
                        self._release_tx(h)
            nxt = min((d for d, _ in self._embargo.values()), default=now + 60.0)
            self._wake = trio.Event()
            with trio.move_on_after(max(0.05, nxt - time.monotonic())):
                await self._wake.wait()

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        if self._nursery is None:
            raise RuntimeError("StemRelay is not running")
        self._nursery.start_soon(fn, *args)

    def _penalize(self, peer_id: str, reason: str) -> None:
        if reason in _NEVER_RELAYED:
            try:
                self.p2p.penalize(peer_id, STEM_PENALTY, f"stem transaction refused: {reason}")
            except ValueError:
                pass

    def _count(self, event: str) -> None:
        if self._metrics is not None:
            self._metrics.tx_stem.labels(event).inc()


STEM_EVENTS = ("sent", "received", "relayed", "fluffed", "embargo", "refused")

__all__ = ["EMBARGO_S", "EPOCH_S", "FLUFF_PROBABILITY", "STEM_EVENTS", "StemRelay", "is_stemmed"]
