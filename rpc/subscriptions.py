"""Topic-based publish/subscribe for WebSocket clients.

The node registers topics (``hub.register_topic("newHeads")``) and publishes
payloads (``hub.publish("newHeads", header)``); every WebSocket connection that
subscribed to the topic, with filter params matching the publish ``key``, gets a
JSON-RPC notification::

    {"jsonrpc": "2.0", "method": "subscription",
     "params": {"subscription": "0x…", "topic": "newHeads", "result": <payload>}}

``publish`` is synchronous and never blocks: each connection has a bounded
outgoing queue and a connection whose queue is full is dropped (its
subscriptions are removed at once and the server closes it with 1008
"subscriber too slow").  Not thread-safe: call it from trio code (the thread
running the server's trio loop).

Fan-out cost is O(matching subscribers), never O(all subscriptions): a topic may be
*indexed* by one of its filter params (``register_topic(..., index="hash")`` or
:meth:`SubscriptionHub.set_index`).  Subscribers that give that param are kept in a
dict under its (lower-cased) value, the others in an "unfiltered" dict, and
``publish(topic, payload, key=K)`` only looks at the unfiltered subscribers and those
filed under ``K`` (the topic's matcher, if any, still has the last word on each).
Each topic counts the subscriptions it examined (:attr:`Topic.checked`) and the
notifications it queued (:attr:`Topic.delivered`): ``rpc_ws_fanout_checked_total``
and ``rpc_ws_notifications_total`` in the metrics.

Subscriptions are bounded per connection (``max_subscriptions_per_connection``) and in
total (``max_subscriptions``); a refusal is error -32005 with ``data.reason``
``subscription_limit`` or ``total_subscription_limit``.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import Any

import trio

from rpc.errors import BUSY, INVALID_PARAMS, RpcError
from rpc.params import Param, compile_params

__all__ = [
    "DEFAULT_MAX_SUBSCRIPTIONS",
    "DEFAULT_MAX_TOTAL_SUBSCRIPTIONS",
    "DEFAULT_QUEUE_SIZE",
    "SLOW_CLOSE_CODE",
    "SLOW_CLOSE_REASON",
    "SubscriberConnection",
    "SubscriptionHub",
    "Topic",
]

log = logging.getLogger("aitbc.rpc")

DEFAULT_QUEUE_SIZE = 1024
DEFAULT_MAX_SUBSCRIPTIONS = 64
DEFAULT_MAX_TOTAL_SUBSCRIPTIONS = 100_000
SLOW_CLOSE_CODE = 1008
SLOW_CLOSE_REASON = "subscriber too slow"

Matcher = Callable[[dict, Any], bool]

_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


class Topic:
    """A registered topic (read-only for users; see :meth:`SubscriptionHub.register_topic`)."""

    __slots__ = (
        "by_key",
        "checked",
        "delivered",
        "index",
        "json_name",
        "matcher",
        "name",
        "params",
        "subs",
        "summary",
        "unfiltered",
        "validate",
    )

    def __init__(self, name: str, params: tuple[Param, ...], matcher: Matcher | None, summary: str) -> None:
        self.name = name
        self.params = params
        self.matcher = matcher
        self.summary = summary
        self.validate = compile_params(params, reserved=("topic",))
        self.json_name = _ENCODER.encode(name)
        self.subs: dict[str, _Subscription] = {}  # every subscription of the topic
        #: The filter param subscriptions are indexed by (None: not indexed, publish scans ``subs``).
        self.index: str | None = None
        self.by_key: dict[Any, dict[str, _Subscription]] = {}  # index value -> subscriptions
        self.unfiltered: dict[str, _Subscription] = {}  # subscriptions without the index param
        self.checked = 0  # subscriptions examined by publish (fan-out work)
        self.delivered = 0  # notifications queued

    def _file(self, sub: _Subscription) -> None:
        self.subs[sub.sid] = sub
        if self.index is None:
            return
        value = sub.filter.get(self.index)
        if value is None:
            sub.ikey = None
            self.unfiltered[sub.sid] = sub
        else:
            sub.ikey = _norm(value)
            bucket = self.by_key.get(sub.ikey)
            if bucket is None:
                bucket = self.by_key[sub.ikey] = {}
            bucket[sub.sid] = sub

    def _unfile(self, sid: str) -> None:
        sub = self.subs.pop(sid, None)
        if sub is None or self.index is None:
            return
        if sub.ikey is None:
            self.unfiltered.pop(sid, None)
            return
        bucket = self.by_key.get(sub.ikey)
        if bucket is not None:
            bucket.pop(sid, None)
            if not bucket:
                del self.by_key[sub.ikey]

    def _reindex(self, index: str | None) -> None:
        subs = list(self.subs.values())
        self.index = index
        self.subs = {}
        self.by_key = {}
        self.unfiltered = {}
        for sub in subs:
            self._file(sub)

    def candidates(self, key: Any) -> list[dict[str, _Subscription]]:
        """The subscription dicts ``publish(key=key)`` must look at."""
        if self.index is None:
            return [self.subs]
        out = [self.unfiltered]
        if key is not None:
            bucket = self.by_key.get(_norm(key))
            if bucket:
                out.append(bucket)
        return out


def _norm(value: Any) -> Any:
    """Index values compare case-insensitively (hex hashes arrive in either case)."""
    return value.lower() if isinstance(value, str) else value


class _Subscription:
    __slots__ = ("conn", "filter", "ikey", "sid", "topic")

    def __init__(self, sid: str, topic: Topic, conn: SubscriberConnection, filter_params: dict) -> None:
        self.sid = sid
        self.topic = topic
        self.conn = conn
        self.filter = filter_params
        self.ikey: Any = None


class SubscriberConnection:
    """Per-WebSocket-connection state: its outgoing queue and its subscriptions.

    Created by :meth:`SubscriptionHub.open_connection` (the server does this).
    The server's writer task consumes :attr:`outgoing`; responses are queued with
    :meth:`send_response` so that they stay ordered with notifications.
    """

    def __init__(self, hub: SubscriptionHub, queue_size: int) -> None:
        self._hub = hub
        self._send, self.outgoing = trio.open_memory_channel[str](queue_size)
        self.subs: dict[str, _Subscription] = {}
        #: (code, reason) once the connection must be closed; set exactly once.
        self.close_code: int | None = None
        self.close_reason: str = ""
        #: Set by :meth:`request_close` (the server's watchdog waits on it).
        self.close_requested = trio.Event()
        #: trio time of the last message either way (the server's idle timeout reads it).
        try:
            self.last_activity = trio.current_time()
        except RuntimeError:  # outside trio (unit tests)
            self.last_activity = 0.0

    @property
    def closing(self) -> bool:
        return self.close_code is not None

    def request_close(self, code: int, reason: str = "") -> None:
        """Drop all subscriptions and ask the writer to send a close frame.

        Messages still queued are discarded.  Idempotent (the first call wins).
        """
        if self.close_code is not None:
            return
        self.close_code = code
        self.close_reason = reason
        self._hub._drop_all(self)
        # Wakes the writer if it waits on an empty queue; further sends fail.
        self._send.close()
        self.close_requested.set()

    def _push(self, message: str) -> bool:
        """Queue a notification without blocking; False when the queue is full."""
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return True  # already closing; nothing to deliver
        return True

    async def send_response(self, message: str) -> None:
        """Queue a method-call response (waits for room: back-pressure on the client's requests)."""
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            await self._send.send(message)

    def subscribe(self, params: Any) -> str:
        return self._hub._subscribe(self, params)

    def unsubscribe(self, params: Any) -> bool:
        return self._hub._unsubscribe(self, params)

    def close(self) -> None:
        """Final cleanup once the WebSocket is gone."""
        self._hub._drop_all(self)
        self._send.close()


class SubscriptionHub:
    """Registry of topics and live subscriptions, shared by all WebSocket connections."""

    def __init__(
        self,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_subscriptions_per_connection: int = DEFAULT_MAX_SUBSCRIPTIONS,
        max_subscriptions: int = DEFAULT_MAX_TOTAL_SUBSCRIPTIONS,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.queue_size = queue_size
        self.max_subscriptions_per_connection = max_subscriptions_per_connection
        self.max_subscriptions = max_subscriptions
        self.total_subscriptions = 0
        self._topics: dict[str, Topic] = {}
        self._version = 0  # bumped on topic registration (OpenRPC cache key)

    def configure(
        self, *, max_subscriptions_per_connection: int | None = None, max_subscriptions: int | None = None
    ) -> None:
        """Change the subscription caps (existing subscriptions are kept)."""
        if max_subscriptions_per_connection is not None:
            if max_subscriptions_per_connection < 1:
                raise ValueError("max_subscriptions_per_connection must be >= 1")
            self.max_subscriptions_per_connection = max_subscriptions_per_connection
        if max_subscriptions is not None:
            if max_subscriptions < 1:
                raise ValueError("max_subscriptions must be >= 1")
            self.max_subscriptions = max_subscriptions

    # ---------------------------------------------------------------- topics
    def register_topic(
        self,
        topic: str,
        *,
        params: Iterable[Param] = (),
        matcher: Matcher | None = None,
        summary: str = "",
        index: str | None = None,
    ) -> None:
        """Declare ``topic``; ``params`` are the filter params a subscriber may give.

        ``matcher(filter_params, key) -> bool`` decides whether a payload published
        with ``key`` goes to a subscriber whose (validated) filter params are
        ``filter_params``; without a matcher every subscriber gets every payload.

        ``index`` names the filter param whose value is the publish ``key`` (see the
        module docstring): a subscriber giving it only ever receives payloads published
        with that key (case-insensitively), one omitting it receives every payload.
        """
        if not isinstance(topic, str) or not topic:
            raise ValueError("topic must be a non-empty string")
        if topic in self._topics:
            raise ValueError(f"topic {topic!r} is already registered")
        if matcher is not None and not callable(matcher):
            raise TypeError("matcher must be callable")
        t = Topic(topic, tuple(params), matcher, summary)
        if index is not None:
            self._check_index(t, index)
            t.index = index
        self._topics[topic] = t
        self._version += 1

    @staticmethod
    def _check_index(t: Topic, index: str) -> None:
        if index not in {p.name for p in t.params}:
            raise ValueError(f"topic {t.name!r} has no filter param {index!r} to index by")

    def set_index(self, topic: str, index: str | None) -> None:
        """Index ``topic`` by its filter param ``index`` (None: no index); live subscriptions are refiled."""
        t = self._topics.get(topic)
        if t is None:
            raise ValueError(f"unknown topic {topic!r}")
        if index is not None:
            self._check_index(t, index)
        t._reindex(index)

    def __contains__(self, topic: object) -> bool:
        return topic in self._topics

    def topic(self, name: str) -> Topic | None:
        return self._topics.get(name)

    def topics(self) -> list[Topic]:
        return list(self._topics.values())

    # --------------------------------------------------------------- publish
    def publish(self, topic: str, payload: Any, key: Any = None) -> None:
        """Deliver ``payload`` to the matching subscribers of ``topic``; never blocks.

        Raises ValueError for an unregistered topic and TypeError/ValueError when
        ``payload`` is not JSON-serialisable (before anything is delivered).
        """
        t = self._topics.get(topic)
        if t is None:
            raise ValueError(f"unknown topic {topic!r}")
        if not t.subs:
            return
        matcher = t.matcher
        prefix = None
        slow: list[SubscriberConnection] | None = None
        checked = delivered = 0
        for group in t.candidates(key):
            checked += len(group)
            for sub in group.values():
                if matcher is not None:
                    try:
                        if not matcher(sub.filter, key):
                            continue
                    except Exception:
                        log.exception("subscription matcher for topic %r failed", topic)
                        continue
                if prefix is None:
                    body = _ENCODER.encode(payload)
                    prefix = '{"jsonrpc":"2.0","method":"subscription","params":{"subscription":"'
                    suffix = '","topic":' + t.json_name + ',"result":' + body + "}}"
                if sub.conn._push(prefix + sub.sid + suffix):
                    delivered += 1
                else:
                    if slow is None:
                        slow = []
                    slow.append(sub.conn)
        t.checked += checked
        t.delivered += delivered
        if slow is not None:
            for conn in slow:
                log.info("dropping WebSocket subscriber: %s", SLOW_CLOSE_REASON)
                conn.request_close(SLOW_CLOSE_CODE, SLOW_CLOSE_REASON)

    def subscriber_count(self, topic: str | None = None) -> int:
        """Number of live subscriptions, for one topic or for all."""
        if topic is None:
            return sum(len(t.subs) for t in self._topics.values())
        t = self._topics.get(topic)
        return 0 if t is None else len(t.subs)

    # ------------------------------------------------------ server-side API
    def open_connection(self, queue_size: int | None = None) -> SubscriberConnection:
        return SubscriberConnection(self, queue_size or self.queue_size)

    def _subscribe(self, conn: SubscriberConnection, params: Any) -> str:
        if type(params) is not dict:
            raise RpcError(INVALID_PARAMS, "invalid params: expected an object with 'topic'")
        name = params.get("topic")
        if "topic" not in params:
            raise RpcError(INVALID_PARAMS, "invalid params: missing required parameter 'topic'")
        if type(name) is not str:
            raise RpcError(INVALID_PARAMS, "invalid params: 'topic' must be a string")
        t = self._topics.get(name)
        if t is None:
            raise RpcError(INVALID_PARAMS, f"invalid params: unknown topic {name[:64]!r}")
        filter_params = t.validate({k: v for k, v in params.items() if k != "topic"})
        if conn.closing:
            raise RpcError(BUSY, "connection is closing")
        if len(conn.subs) >= self.max_subscriptions_per_connection:
            raise RpcError(
                BUSY,
                f"too many subscriptions on this connection (max {self.max_subscriptions_per_connection})",
                {"reason": "subscription_limit", "max": self.max_subscriptions_per_connection},
            )
        if self.total_subscriptions >= self.max_subscriptions:
            raise RpcError(
                BUSY,
                f"too many subscriptions on this node (max {self.max_subscriptions})",
                {"reason": "total_subscription_limit", "max": self.max_subscriptions},
            )
        sid = "0x" + secrets.token_hex(8)
        while sid in conn.subs or sid in t.subs:  # pragma: no cover - 64-bit collision
            sid = "0x" + secrets.token_hex(8)
        sub = _Subscription(sid, t, conn, filter_params)
        t._file(sub)
        conn.subs[sid] = sub
        self.total_subscriptions += 1
        return sid

    def _unsubscribe(self, conn: SubscriberConnection, params: Any) -> bool:
        if type(params) is not dict:
            raise RpcError(INVALID_PARAMS, "invalid params: expected an object with 'subscription'")
        for key in params:
            if key != "subscription":
                raise RpcError(INVALID_PARAMS, f"invalid params: unknown parameter {str(key)[:64]!r}")
        if "subscription" not in params:
            raise RpcError(INVALID_PARAMS, "invalid params: missing required parameter 'subscription'")
        sid = params["subscription"]
        if type(sid) is not str:
            raise RpcError(INVALID_PARAMS, "invalid params: 'subscription' must be a string")
        sub = conn.subs.pop(sid, None)
        if sub is None:
            return False
        sub.topic._unfile(sid)
        self.total_subscriptions -= 1
        return True

    def _drop_all(self, conn: SubscriberConnection) -> None:
        if not conn.subs:
            return
        for sid, sub in conn.subs.items():
            sub.topic._unfile(sid)
        self.total_subscriptions -= len(conn.subs)
        conn.subs.clear()
