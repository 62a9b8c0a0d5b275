"""Small, contained adjustments of py-libp2p 0.8.1's pubsub for this node (see p2p/NOTES.md).

* :class:`AitbcPubsub` – gates every pubsub stream (both directions) on the status handshake, hands
  accepted messages to our own delivery callback instead of libp2p's 32-deep subscription channels,
  gives each peer's outbound queue our bounds (count and bytes) with a drain notification,
  serialises writes per stream (libp2p writes replays/flushes directly to a stream while the queue's
  sender writes to it too: large messages interleave and corrupt the stream), and keeps a malformed
  RPC from a peer from escaping into the swarm (which would stop the whole node). Every message a peer
  sends passes ``admit_message`` (per-peer budgets) before anything else, then our own ``validate``
  instead of libp2p's topic validators: libp2p decides sync/async per topic (an async validator costs
  every message of the topic, own publishes included, several scheduler rounds: 4x fewer msg/s
  measured), caches every verdict per message id (a stateful validator's "valid" would be replayed
  after the seen-cache forgot the message) and knows no "ignore" (dropped without counting as invalid).
* :class:`AitbcGossipSub` – with a content-addressed message id, libp2p's message cache and IHAVE
  still use ``from+seqno`` ids, which never hit the seen-cache; without the fix every IHAVE would
  make the peer re-request (IWANT) messages it already has.
"""

from __future__ import annotations

import inspect
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.exceptions import ValidationError
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import PriorityQueue, RpcQueue
from libp2p.pubsub.utils import safe_bytes_from_hex

log = logging.getLogger("aitbc.p2p")


class PacedQueue(PriorityQueue):
    """A peer's outbound RPC queue bounded by count and bytes, reporting when it drains below half."""

    def __init__(
        self,
        max_size: int,
        max_bytes: int,
        on_drain: Callable[[], None],
        on_drop: Callable[[rpc_pb2.RPC], None],
    ) -> None:
        super().__init__(max_size)
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._on_drain = on_drain
        self._on_drop = on_drop

    def push(self, rpc: rpc_pb2.RPC, priority: bool = False) -> bool:
        size = rpc.ByteSize()
        over_bytes = len(self) > 0 and not priority and self.nbytes + size > self.max_bytes
        if over_bytes or not super().push(rpc, priority):
            self._on_drop(rpc)  # libp2p only logs this at DEBUG
            return False
        self.nbytes += size
        return True

    def pop(self) -> rpc_pb2.RPC | None:
        item = super().pop()
        if item is not None:
            self.nbytes = max(0, self.nbytes - item.ByteSize())
            if not self.is_high():
                self._on_drain()
        return item

    def is_high(self) -> bool:
        """At least half full (by count or bytes): publishers should wait."""
        return len(self) >= max(1, self.max_size // 2) or self.nbytes >= self.max_bytes // 2


class _QueueTable(dict):
    """``Pubsub.peer_queues``: configures every queue libp2p creates for a new peer, as it is stored."""

    def __init__(self, configure: Callable[[RpcQueue], None]) -> None:
        super().__init__()
        self._configure = configure

    def __setitem__(self, key: ID, queue: RpcQueue) -> None:
        self._configure(queue)
        super().__setitem__(key, queue)


def queue_is_high(queue: Any) -> bool:
    inner = getattr(queue, "_queue", None)
    if isinstance(inner, PacedQueue):
        return inner.is_high()
    return len(queue) >= 16


IGNORE = "ignore"  # what ``validate`` returns for a message to drop without counting it as invalid


class _Ignored(Exception):
    """A validator ignored the message: drop it without counting it as invalid."""


class AitbcPubsub(Pubsub):
    def __init__(
        self,
        host: Any,
        router: GossipSub,
        *,
        gate: Callable[[ID], Awaitable[bool]],
        deliver: Callable[[rpc_pb2.Message], None],
        on_bad_rpc: Callable[[ID, str], None],
        admit_message: Callable[[ID, rpc_pb2.Message], bool],
        validate: Callable[[ID, rpc_pb2.Message], Any],
        queue_max_msgs: int,
        queue_max_bytes: int,
        max_rpc_bytes: int,
        on_queue_drain: Callable[[], None],
        on_queue_drop: Callable[[rpc_pb2.RPC], None],
        **kw: Any,
    ) -> None:
        super().__init__(host, router, max_inbound_rpc_size=max_rpc_bytes, **kw)
        self._gate = gate
        self._deliver = deliver
        self._on_bad_rpc = on_bad_rpc
        self._admit_message = admit_message
        self._validate = validate
        self._opening: set[ID] = set()
        self._write_locks: weakref.WeakKeyDictionary[INetStream, trio.Lock] = weakref.WeakKeyDictionary()

        def configure(queue: RpcQueue) -> None:
            # Fresh, empty queue created by _handle_new_peer: swap in our bounds before first use.
            queue.max_message_size = max_rpc_bytes
            if hasattr(queue, "_queue") and len(queue) == 0:
                queue._queue = PacedQueue(queue_max_msgs, queue_max_bytes, on_queue_drain, on_queue_drop)

        self.peer_queues = _QueueTable(configure)
        # Inbound pubsub streams wait for the status handshake as well.
        for proto in router.get_protocols():
            host.set_stream_handler(proto, self._gated_stream_handler)

    async def _gated_stream_handler(self, stream: INetStream) -> None:
        peer_id = stream.muxed_conn.peer_id
        if not await self._gate(peer_id):
            await _reset(stream)
            return
        try:
            await self.stream_handler(stream)
        except Exception as exc:  # e.g. protobuf DecodeError: libp2p lets it escape and stop the swarm
            log.debug("malformed pubsub RPC from %s: %s: %s", peer_id, type(exc).__name__, exc)
            await _reset(stream)
            self._on_bad_rpc(peer_id, f"malformed pubsub RPC ({type(exc).__name__})")

    async def validate_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        """``validate(forwarder, msg)``: True, False, :data:`IGNORE`, or an awaitable of one (bounded by
        ``validation_timeout`` like libp2p's async validators; a timeout counts as invalid)."""
        verdict = self._validate(msg_forwarder, msg)
        if inspect.isawaitable(verdict):
            pending, verdict = verdict, False
            with trio.move_on_after(self.validation_timeout):
                verdict = await pending
        if verdict is True:
            return
        if verdict == IGNORE:
            raise _Ignored
        raise ValidationError("message rejected by the topic validator")

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        if msg_forwarder != self.my_id and not self._admit_message(msg_forwarder, msg):
            return
        try:
            await super().push_msg(msg_forwarder, msg)
        except _Ignored:
            return
        except Exception as exc:
            if msg_forwarder == self.my_id:
                raise
            # e.g. an undecodable signing key: libp2p raises inside a service task (stops pubsub)
            log.debug("malformed pubsub message from %s: %s: %s", msg_forwarder, type(exc).__name__, exc)
            self._on_bad_rpc(msg_forwarder, f"malformed pubsub message ({type(exc).__name__})")

    async def write_msg(self, stream: INetStream, rpc_msg: rpc_pb2.RPC) -> bool:
        lock = self._write_locks.get(stream)
        if lock is None:
            lock = self._write_locks[stream] = trio.Lock()
        async with lock:
            return await super().write_msg(stream, rpc_msg)

    async def _handle_new_peer(self, peer_id: ID) -> None:
        # One registration at a time per peer: each connection's notification starts one, and two
        # racing past libp2p's own check would open two outbound streams (one of them orphaned).
        if peer_id in self.peers or peer_id in self._opening:
            return
        self._opening.add(peer_id)
        try:
            if not await self._gate(peer_id):
                return
            await super()._handle_new_peer(peer_id)
        finally:
            self._opening.discard(peer_id)

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        self._deliver(publish_message)


class AitbcGossipSub(GossipSub):
    """GossipSub whose IHAVE handling recognises messages already seen under ``from+seqno``."""

    SEEN_MAX = 65536
    SEEN_TTL = 120.0

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._seen_fs: OrderedDict[bytes, float] = OrderedDict()

    def _remember(self, key: bytes) -> None:
        now = time.monotonic()
        self._seen_fs[key] = now
        self._seen_fs.move_to_end(key)
        while self._seen_fs:
            k, t = next(iter(self._seen_fs.items()))
            if len(self._seen_fs) > self.SEEN_MAX or now - t > self.SEEN_TTL:
                del self._seen_fs[k]
            else:
                break

    async def publish(self, msg_forwarder: ID, pubsub_msg: rpc_pb2.Message) -> None:
        self._remember(pubsub_msg.from_id + pubsub_msg.seqno)
        await super().publish(msg_forwarder, pubsub_msg)

    async def handle_ihave(self, ihave_msg: rpc_pb2.ControlIHave, sender_peer_id: ID) -> None:
        wanted = []
        for mid in ihave_msg.messageIDs:
            raw = safe_bytes_from_hex(mid)
            if raw is None or raw not in self._seen_fs:
                wanted.append(mid)
        if not wanted:
            return
        if len(wanted) != len(ihave_msg.messageIDs):
            ihave_msg = rpc_pb2.ControlIHave(topicID=ihave_msg.topicID, messageIDs=wanted)
        await super().handle_ihave(ihave_msg, sender_peer_id)


async def _reset(stream: INetStream) -> None:
    with trio.move_on_after(1):
        try:
            await stream.reset()
        except Exception:
            pass
