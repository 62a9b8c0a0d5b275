"""Batching of small gossip items (DESIGN §4: transactions travel in batches, many per message).

py-libp2p gossip costs about the same per message whatever its size (signing, framing, one task per
message on every hop), so a few hundred messages per second is the ceiling on small networks. A batch
is one gossip message holding a canonical-CBOR list of byte strings.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import trio

from state import codec
from state.errors import DecodeError

_ITEM_OVERHEAD = 9  # largest CBOR byte-string header
_LIST_OVERHEAD = 9  # largest CBOR array header


def encode_batch(items: list[bytes]) -> bytes:
    return codec.encode(list(items))


def decode_batch(data: bytes, *, max_bytes: int, max_items: int = 100_000) -> list[bytes]:
    """The items of a batch; DecodeError unless ``data`` is a canonical CBOR list of byte strings."""
    obj = codec.decode(data, max_bytes=max_bytes)
    if type(obj) is not list or len(obj) > max_items or any(type(x) is not bytes for x in obj):
        raise DecodeError("batch: expected a list of byte strings")
    return obj


class GossipBatcher:
    """Collects items and publishes them on ``kind`` as batches of at most ``max_items`` items and the
    topic's byte bound, at the latest ``max_delay`` seconds after the first item of a batch arrived.

    ``add()`` is synchronous and never blocks; it returns False when ``max_pending`` items are already
    waiting (the caller decides: drop, or retry later). Run ``run()`` in a nursery. The topic's
    validator sees whole batches (use :func:`decode_batch`).
    """

    def __init__(
        self,
        service: Any,
        kind: str,
        *,
        max_items: int = 1000,
        max_bytes: int | None = None,
        max_delay: float = 0.05,
        max_pending: int = 100_000,
    ) -> None:
        topic_bound = service._topic(kind).max_bytes
        self.service = service
        self.kind = kind
        self.max_items = max_items
        self.max_bytes = min(max_bytes or topic_bound, topic_bound)
        self.max_delay = max_delay
        self.max_pending = max_pending
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._wake = trio.Event()
        self.batches_sent = 0
        self.items_sent = 0

    def add(self, item: bytes) -> bool:
        if len(item) + _ITEM_OVERHEAD + _LIST_OVERHEAD > self.max_bytes:
            raise ValueError(f"item of {len(item)} bytes cannot fit in a {self.kind} batch")
        if len(self._pending) >= self.max_pending:
            return False
        self._pending.append(bytes(item))
        self._pending_bytes += len(item) + _ITEM_OVERHEAD
        self._wake.set()
        return True

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _full(self) -> bool:
        return len(self._pending) >= self.max_items or self._pending_bytes + _LIST_OVERHEAD >= self.max_bytes

    def _take(self) -> list[bytes]:
        out: list[bytes] = []
        size = _LIST_OVERHEAD
        while self._pending and len(out) < self.max_items:
            n = len(self._pending[0]) + _ITEM_OVERHEAD
            if size + n > self.max_bytes:
                break
            out.append(self._pending.popleft())
            self._pending_bytes -= n
            size += n
        return out

    async def flush(self) -> None:
        """Publish everything pending now (several batches if needed)."""
        while self._pending:
            batch = self._take()
            await self.service.publish(self.kind, encode_batch(batch))
            self.batches_sent += 1
            self.items_sent += len(batch)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            if not self._full():
                with trio.move_on_after(self.max_delay):
                    while not self._full():
                        await self._wake.wait()
                        self._wake = trio.Event()
            await self.flush()
