"""Gossip topics of :class:`p2p.service.P2PService`: registration, the validation pipeline every incoming
message goes through before it is delivered or forwarded, delivery to subscribers, and publishing with
pacing against rate limits and full peer queues.

Pipeline of a message a peer forwards to us:

1. the forwarder's budget for the topic (token buckets of messages and bytes per second): over it, the
   message is dropped unvalidated and the forwarder loses ``over_budget_penalty`` points;
2. size <= the topic bound, canonical CBOR (messages above ``offload_decode_bytes`` are decoded in a
   worker thread);
3. the topic's validator, which returns a :class:`Verdict` (or a bool: True = accept, False = reject).

Failing 2 is a reject, or a ban on a ``strict`` topic (one whose bound and encoding every honest peer
applies identically, e.g. derived from genesis: only a faulty peer forwards such a message).
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from state import codec
from state.errors import DecodeError, InvariantError

from .config import check_kind, topic_name
from .gossip import IGNORE, queue_is_high
from .peers import parse_peer_id
from .wire import (
    P2PError,
)

log = logging.getLogger("aitbc.p2p")



class Verdict(enum.Enum):
    """What a topic validator says about a message (it may also return a bool, or ``(Verdict, reason)``)."""

    #: deliver and forward it
    ACCEPT = "accept"
    #: drop it quietly: not delivered, not forwarded, no penalty (e.g. a duplicate, or outside the window
    #: of heights this node can judge). Not cached: the same bytes are judged again when they come back.
    IGNORE = "ignore"
    #: invalid: dropped, and the forwarder loses ``cfg.invalid_message_penalty`` points
    REJECT = "reject"
    #: what no honest peer forwards (validators are deterministic): dropped, the forwarder is banned
    BAN = "ban"


VerdictLike = "bool | Verdict | tuple[Verdict, str]"
Validator = Callable[[str, bytes], "VerdictLike | Awaitable[VerdictLike]"]


def as_verdict(v: Any) -> tuple[Verdict, str]:
    """(verdict, reason) of what a validator returned."""
    if isinstance(v, Verdict):
        return v, ""
    if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], Verdict):
        return v[0], str(v[1])
    return (Verdict.ACCEPT, "") if v else (Verdict.REJECT, "")


@dataclass(slots=True)
class _Budget:
    """A peer's token buckets for one topic."""

    msgs: float
    nbytes: float
    at: float  # time.monotonic() of the last refill


@dataclass
class _Topic:
    kind: str
    name: str
    validator: Validator | None
    is_async: bool
    max_bytes: int
    require_cbor: bool
    strict: bool = False
    subscribers: list[trio.MemorySendChannel[tuple[str, bytes]]] = field(default_factory=list)
    publish_times: deque[float] = field(default_factory=deque)
    last_drop_warning: float = 0.0


def _content_id(msg: rpc_pb2.Message) -> bytes:
    return hashlib.sha256(msg.data).digest()


class GossipTopics:
    """Topics, validation, delivery and publishing (a part of P2PService)."""

    def register_topic(
        self,
        kind: str,
        validator: Validator | None = None,
        max_bytes: int | None = None,
        *,
        require_cbor: bool = True,
        strict: bool = False,
    ) -> None:
        """Declare gossip topic ``/aitbc/<chain_id>/<kind>/1`` (before :meth:`run`).

        Incoming messages are checked in this order: the forwarder's budget, size <= ``max_bytes``
        (default: ``cfg.topic_max_bytes[kind]``), well-formed canonical CBOR (unless
        ``require_cbor=False``), then ``validator(origin_peer_id, data)`` returning a :class:`Verdict`
        or a bool (sync, or ``async def`` for expensive checks, which libp2p runs at most 10 at a time
        with a 5 s timeout; run CPU-heavy work with ``trio.to_thread``). Only REJECT/BAN verdicts are
        cached (per message id, sha256 of the data), so a validator may keep state (windows, dedupe). A
        message that is not accepted is neither delivered nor forwarded; REJECT costs the forwarder
        ``cfg.invalid_message_penalty`` points, BAN bans it. ``strict=True``: every honest peer applies
        this bound and encoding (e.g. derived from genesis), so an oversized or malformed message gets
        its forwarder banned instead of penalised.
        """
        if self._ran:
            raise RuntimeError("register_topic() must be called before run()")
        check_kind(kind)
        if kind in self._topics:
            raise ValueError(f"topic {kind!r} already registered")
        if max_bytes is None:
            if kind not in self.cfg.topic_max_bytes:
                raise ValueError(f"no max_bytes given and none configured for topic {kind!r}")
            max_bytes = self.cfg.topic_max_bytes[kind]
        if not isinstance(max_bytes, int) or not 1 <= max_bytes <= 64 << 20:
            raise ValueError("max_bytes must be an int in 1..64 MiB")
        is_async = inspect.iscoroutinefunction(validator) or inspect.iscoroutinefunction(
            getattr(validator, "__call__", None)  # noqa: B004 - an object with an async __call__
        )
        t = _Topic(kind, topic_name(self.chain_id, kind), validator, is_async, max_bytes, require_cbor, strict)
        self._topics[kind] = t
        self._by_name[t.name] = t

    def subscribe(self, kind: str) -> trio.MemoryReceiveChannel[tuple[str, bytes]]:
        """A channel of ``(origin_peer_id, data)`` for every message on ``kind`` that passed validation,
        none of our own. Bounded (``cfg.subscription_buffer``): a consumer that falls that far behind
        loses messages (logged, counted) rather than stalling the node. Close it to unsubscribe."""
        t = self._topic(kind)
        send, recv = trio.open_memory_channel[tuple[str, bytes]](self.cfg.subscription_buffer)
        t.subscribers.append(send)
        return recv

    async def publish(self, kind: str, data: bytes) -> bool:
        """Validate ``data`` like an incoming message (ValueError if it fails), pace against the
        per-topic rate limit and the peers' outbound queues, and publish it. Returns False if the same
        bytes were already seen in the last two minutes (gossip dedups by content), True otherwise."""
        t = self._topic(kind)
        if not self._running or self._pubsub is None:
            raise P2PError("p2p service is not running")
        data = bytes(data)
        if len(data) > t.max_bytes:
            raise ValueError(f"{kind} message of {len(data)} bytes exceeds the topic bound {t.max_bytes}")
        if t.require_cbor:
            try:
                await self._decode_check(t, data)
            except DecodeError as exc:
                raise ValueError(f"{kind} message is not canonical CBOR: {exc}") from None
        if t.validator is not None:
            verdict = t.validator(self.peer_id, data)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            v, why = as_verdict(verdict)
            if v is not Verdict.ACCEPT:
                raise ValueError(f"{kind} message not accepted by the topic validator ({v.value}{': ' if why else ''}{why})")
        if self._pubsub.seen_messages.has(hashlib.sha256(data).digest()):
            self.metrics.gossip(kind, "out", "duplicate")
            return False
        await self._pace(t)
        if not self._running:
            raise P2PError("p2p service stopped")
        await self._pubsub.publish(t.name, data)
        self.metrics.gossip(kind, "out", "published", len(data))
        return True

    async def wait_for_mesh(self, kind: str, peer_id: str) -> None:
        """Until ``peer_id`` is in our gossip mesh for ``kind`` (bound it with ``trio.fail_after``)."""
        t = self._topic(kind)
        if self._pubsub is None:
            raise P2PError("p2p service is not running")
        await self._pubsub.wait_for_mesh(parse_peer_id(peer_id), t.name, timeout=math.inf)

    def _topic(self, kind: str) -> _Topic:
        t = self._topics.get(kind)
        if t is None:
            raise ValueError(f"topic {kind!r} is not registered")
        return t

    def _origin(self, msg: rpc_pb2.Message) -> str:
        try:
            return ID(msg.from_id).to_base58()
        except Exception:
            return ""

    async def _decode_check(self, t: _Topic, data: bytes) -> None:
        """Canonical-CBOR check (DecodeError); in a worker thread for large messages."""
        if len(data) > self.cfg.offload_decode_bytes:
            await trio.to_thread.run_sync(lambda: codec.decode(data, max_bytes=t.max_bytes))
        else:
            codec.decode(data, max_bytes=t.max_bytes)

    def _size_check(self, t: _Topic, forwarder: ID, data: bytes) -> tuple[Verdict, str] | None:
        if len(data) <= t.max_bytes:
            return None
        self.metrics.gossip(t.kind, "in", "oversize")
        log.debug("dropping %d-byte %s message from %s: over %d", len(data), t.kind, forwarder, t.max_bytes)
        return (Verdict.BAN if t.strict else Verdict.REJECT), f"{len(data)} bytes, over the bound {t.max_bytes}"

    def _malformed(self, t: _Topic, forwarder: ID, exc: Exception) -> tuple[Verdict, str]:
        self.metrics.gossip(t.kind, "in", "malformed")
        log.debug("dropping malformed %s message from %s: %s", t.kind, forwarder, exc)
        return (Verdict.BAN if t.strict else Verdict.REJECT), f"not canonical CBOR: {exc}"

    def _settle(self, t: _Topic, forwarder: ID, v: Any, counted: bool = False) -> bool | str:
        """Act on a verdict (metrics, ban) and turn it into what AitbcPubsub.validate_msg expects."""
        verdict, why = as_verdict(v)
        if verdict is Verdict.ACCEPT:
            return True
        if verdict is Verdict.IGNORE:
            self.metrics.gossip(t.kind, "in", "ignored")
            return IGNORE
        if not counted:
            self.metrics.gossip(t.kind, "in", "rejected")
        log.debug("%s: a %s message forwarded by %s%s", verdict.value, t.kind, forwarder, f": {why}" if why else "")
        if verdict is Verdict.BAN:
            s = forwarder.to_base58()
            if s not in self._bans:
                self._reject(s, f"forwarded a {t.kind} message no honest peer sends{': ' + why if why else ''}")
        return False

    def _validate_message(self, forwarder: ID, msg: rpc_pb2.Message) -> Any:
        """The whole check of a message a peer forwarded (AitbcPubsub's ``validate``): True, False,
        IGNORE, or an awaitable of one when a check has to wait (a worker thread, an async validator).
        Small messages with sync validators are judged without a single checkpoint."""
        if forwarder == self._id:
            return True  # our own publish, checked in publish()
        topics = [t for t in (self._by_name.get(n) for n in msg.topicIDs) if t is not None]
        if len(topics) != 1:
            return not topics  # one topic per message here; several: refused (libp2p delivers to none)
        t = topics[0]
        data = bytes(msg.data)
        bad = self._size_check(t, forwarder, data)
        if bad is not None:
            return self._settle(t, forwarder, bad, counted=True)
        if t.require_cbor and len(data) > self.cfg.offload_decode_bytes:
            return self._validate_slow(t, forwarder, msg, data)
        if t.require_cbor:
            try:
                codec.decode(data, max_bytes=t.max_bytes)
            except DecodeError as exc:
                return self._settle(t, forwarder, self._malformed(t, forwarder, exc), counted=True)
        if t.validator is None:
            return True
        v = self._call_validator(t, msg, data)
        if inspect.isawaitable(v):
            return self._finish(t, forwarder, v)
        return self._settle(t, forwarder, v)

    def _call_validator(self, t: _Topic, msg: rpc_pb2.Message, data: bytes) -> Any:
        """The topic validator's verdict (or awaitable); a validator that raises rejects the message."""
        try:
            return t.validator(self._origin(msg), data)  # type: ignore[misc]
        except Exception:
            log.exception("%s validator raised; treating the message as invalid", t.kind)
            return Verdict.REJECT

    async def _validate_slow(self, t: _Topic, forwarder: ID, msg: rpc_pb2.Message, data: bytes) -> Any:
        try:
            await self._decode_check(t, data)
        except DecodeError as exc:
            return self._settle(t, forwarder, self._malformed(t, forwarder, exc), counted=True)
        if t.validator is None:
            return True
        v = self._call_validator(t, msg, data)
        if inspect.isawaitable(v):
            return await self._finish(t, forwarder, v)
        return self._settle(t, forwarder, v)

    async def _finish(self, t: _Topic, forwarder: ID, pending: Awaitable[Any]) -> Any:
        try:
            v = await pending
        except Exception:
            log.exception("%s validator raised; treating the message as invalid", t.kind)
            v = Verdict.REJECT
        return self._settle(t, forwarder, v)

    def _within_budget(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """Charge a message a peer sent us to its per-topic token buckets (before any validation).
        False: drop it; the peer is penalised (flooding is what honest peers do not do)."""
        s = forwarder.to_base58()
        if s not in self._peers:
            return False  # not (or no longer) admitted: nothing it sends is processed
        cfg = self.cfg
        now = time.monotonic()
        size = len(msg.data)
        for name in msg.topicIDs:
            t = self._by_name.get(name)
            if t is None:
                continue
            cap_m = cfg.peer_gossip_msgs_per_s * cfg.peer_gossip_burst
            cap_b = max(cfg.peer_gossip_bytes_per_s * cfg.peer_gossip_burst, 2.0 * t.max_bytes)
            buckets = self._gossip_budgets.setdefault(s, {})
            b = buckets.get(t.kind)
            if b is None:
                b = buckets[t.kind] = _Budget(cap_m, cap_b, now)
            else:
                dt = now - b.at
                b.msgs = min(cap_m, b.msgs + dt * cfg.peer_gossip_msgs_per_s)
                b.nbytes = min(cap_b, b.nbytes + dt * cfg.peer_gossip_bytes_per_s)
                b.at = now
            if b.msgs < 1.0 or b.nbytes < size:
                self.metrics.gossip(t.kind, "in", "over_budget")
                last = self._budget_logged.get(s, 0.0)
                level = logging.INFO if now - last > 5.0 else logging.DEBUG
                if level == logging.INFO:
                    self._budget_logged[s] = now
                if cfg.over_budget_penalty > 0:
                    self._add_penalty(s, cfg.over_budget_penalty, f"over its gossip budget on {t.kind}", level)
                return False
            b.msgs -= 1.0
            b.nbytes -= size
        return True

    def _deliver(self, msg: rpc_pb2.Message) -> None:
        """Called by pubsub for every accepted message (ours included) on a subscribed topic."""
        if msg.from_id == self._id.to_bytes():
            return
        origin = self._origin(msg)
        data = bytes(msg.data)
        for name in msg.topicIDs:
            t = self._by_name.get(name)
            if t is None:
                continue
            self.metrics.gossip(t.kind, "in", "accepted", len(data))
            for ch in list(t.subscribers):
                try:
                    ch.send_nowait((origin, data))
                except trio.WouldBlock:
                    self.metrics.gossip(t.kind, "in", "dropped")
                    now = time.monotonic()
                    if now - t.last_drop_warning > 5:
                        t.last_drop_warning = now
                        log.warning(
                            "%s subscriber is %d messages behind; dropping",
                            t.kind,
                            self.cfg.subscription_buffer,
                        )
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    t.subscribers.remove(ch)

    def _on_bad_rpc(self, pid: ID, reason: str) -> None:
        s = pid.to_base58()
        if s in self._peers:
            self.penalize(s, self.cfg.invalid_message_penalty * 2, reason)

    def _on_queue_drain(self) -> None:
        self._queue_space.set()

    def _on_queue_drop(self, rpc: rpc_pb2.RPC) -> None:
        for msg in rpc.publish:
            for name in msg.topicIDs:
                t = self._by_name.get(name)
                if t is None:
                    continue
                self.metrics.gossip(t.kind, "out", "dropped")
                now = time.monotonic()
                if now - t.last_drop_warning > 5:
                    t.last_drop_warning = now
                    log.warning("a peer's outbound queue is full: dropping %s messages to it", t.kind)

    def _full_queues(self, t: _Topic) -> list[ID]:
        if self._pubsub is None:
            raise InvariantError("p2p service not started")
        subs = self._pubsub.peer_topics.get(t.name, ())
        queues = self._pubsub.peer_queues
        return [p for p in subs if p in queues and queue_is_high(queues[p])]

    async def _pace(self, t: _Topic) -> None:
        # 1. stay under gossipsub's per-topic rate limit (it also applies to our own publishes)
        limit = max(1, int(self.cfg.gossip_rate_limit * 0.9))
        times = t.publish_times
        while True:
            now = time.monotonic()
            while times and times[0] <= now - 1.0:
                times.popleft()
            if len(times) < limit:
                times.append(now)
                break
            await trio.sleep(times[0] + 1.0 - now + 0.001)
        # 2. let full peer queues drain (libp2p would drop what does not fit)
        if not self._full_queues(t):
            return
        deadline = trio.current_time() + self.cfg.publish_backpressure_timeout
        while True:
            if self._queue_space.is_set():
                self._queue_space = trio.Event()  # shared by every waiting publisher
            full = self._full_queues(t)
            if not full:
                return
            with trio.move_on_at(deadline):
                await self._queue_space.wait()
                continue
            log.warning(
                "publish on %s: %d peer queue(s) still full after %.1f s",
                t.kind,
                len(full),
                self.cfg.publish_backpressure_timeout,
            )
            self.metrics.gossip(t.kind, "out", "dropped")
            return
