"""Block sync: a node that is behind (fresh, restarted, partitioned, late) fetches finalized blocks by
height range from peers, verifies each block's commit against the validator set and re-executes it
(through ``BftEngine.submit_block``), then consensus carries on.

Peers' heads are learned from the p2p status exchange and from the engine (+2/3 precommits seen for a
height it lacks). A peer's claimed height is only a hint: every block must carry a valid commit, and a
peer that serves a bad block or commit is penalised and skipped. Ranges are fetched ahead (a small
pipeline) and rotated over all peers that claim to have them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from state import codec
from state.errors import AitbcError, DecodeError, FatalWriteError
from state.types import Block, Commit

log = logging.getLogger("aitbc.sync")

RANGE = 64
PIPELINE = 3
SYNC_PENALTY = 25.0


def encode_sync_item(block_raw: bytes, commit_raw: bytes) -> bytes:
    return codec.encode([block_raw, commit_raw])


def decode_sync_item(raw: bytes) -> tuple[Block, Commit]:
    obj = codec.decode(raw, max_bytes=40 << 20)
    if type(obj) is not list or len(obj) != 2 or type(obj[0]) is not bytes or type(obj[1]) is not bytes:
        raise DecodeError("sync item must be [block, commit]")
    return Block.decode(obj[0]), Commit.decode(obj[1])


class BlockSync:
    def __init__(self, node: Any, p2p: Any, engine: Any) -> None:
        self.node = node
        self.p2p = p2p
        self.engine = engine
        self.peer_heights: dict[str, int] = {}
        self.target = 0
        self.syncing = False
        self._wakeup = trio.Event()
        self.blocks_synced = 0
        p2p.on_peer_status(self._on_status)
        p2p.on_peer_disconnected(lambda pid: self.peer_heights.pop(pid, None))

    # inputs -------------------------------------------------------------------------------------
    def _on_status(self, peer_id: str, status: Any) -> None:
        self.peer_heights[peer_id] = status.finalized_height
        if status.finalized_height > self.node.chain.head.height:
            self._wakeup.set()

    def behind(self, height: int) -> None:
        """The engine saw a decision for ``height`` that it cannot apply: sync up to ``height - 1``."""
        self.target = max(self.target, height - 1)
        self._wakeup.set()

    @property
    def catching_up(self) -> bool:
        return self.syncing

    def status(self) -> dict:
        return {
            "syncing": self.syncing,
            "target_height": max([self.target, *self.peer_heights.values()], default=0),
            "blocks_synced": self.blocks_synced,
            "peers": len(self.peer_heights),
        }

    # loop ---------------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with trio.move_on_after(2.0):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            target = max([self.target, *self.peer_heights.values()], default=0)
            head = self.node.chain.head.height
            # One block behind is normal while consensus runs; sync when at least 2 behind.
            if target >= head + 2 or (self.target > head):
                await self._sync_to(target)

    async def _sync_to(self, target: int) -> None:
        self.syncing = True
        start_head = self.node.chain.head.height
        t0 = time.monotonic()
        last_log = t0
        log.info("sync: behind, head %d, peers report %d", start_head, target)
        send, recv = trio.open_memory_channel[tuple[str, list[bytes]]](PIPELINE)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._fetcher, send, target)
                async for peer_id, items in recv:
                    for raw in items:
                        try:
                            block, commit = decode_sync_item(raw)
                        except DecodeError as exc:
                            self._bad_peer(peer_id, f"undecodable sync item: {exc}")
                            break
                        if block.height <= self.node.chain.head.height:
                            continue
                        try:
                            await self.engine.submit_block(block, commit)
                        except FatalWriteError:
                            raise  # our disk failed, not the peer: the node stops (never blame the peer)
                        except (AitbcError, ValueError) as exc:
                            self._bad_peer(peer_id, f"invalid block {block.height}: {exc}")
                            break
                        self.blocks_synced += 1
                        self.node.metrics.sync_blocks.inc()
                    now = time.monotonic()
                    if now - last_log > 2.0:
                        last_log = now
                        h = self.node.chain.head.height
                        rate = (h - start_head) / (now - t0)
                        log.info("sync: height %d / %d (%.0f blocks/s)", h, target, rate)
                    self.node.metrics.sync_target.set(target)
                nursery.cancel_scope.cancel()
        finally:
            self.syncing = False
        h = self.node.chain.head.height
        if h > start_head:
            log.info("sync: caught up to %d (+%d blocks in %.1f s)", h, h - start_head, time.monotonic() - t0)

    def _bad_peer(self, peer_id: str, reason: str) -> None:
        log.warning("sync: peer %s: %s", peer_id, reason)
        self.peer_heights.pop(peer_id, None)
        try:
            self.p2p.penalize(peer_id, SYNC_PENALTY, reason)
        except ValueError:
            pass

    async def _fetcher(self, send: trio.MemorySendChannel, target: int) -> None:
        async with send:
            nxt = self.node.chain.head.height + 1
            turn = 0
            while nxt <= target:
                peers = [p for p, h in self.peer_heights.items() if h >= nxt]
                if not peers:
                    return
                peer = peers[turn % len(peers)]
                turn += 1
                count = min(RANGE, target - nxt + 1)
                try:
                    with trio.fail_after(30):
                        items = await self.p2p.request_blocks(peer, nxt, count)
                except Exception as exc:  # timeouts, stream failures, remote errors
                    log.info("sync: blocks %d..%d from %s failed: %s", nxt, nxt + count - 1, peer, exc)
                    self.peer_heights.pop(peer, None)
                    continue
                if not items:
                    self.peer_heights.pop(peer, None)
                    continue
                await send.send((peer, items))
                nxt += len(items)


def serve_blocks(chain: Any, start: int, count: int, max_bytes: int = 16 << 20) -> list[bytes]:
    """The blocks provider of the p2p layer: [block, commit] for heights start.. (bounded)."""
    out: list[bytes] = []
    total = 0
    head = chain.head.height
    for h in range(max(1, start), min(head, start + count - 1) + 1):
        block_raw = chain.block_raw_at(h)
        commit_raw = chain.store.commit_raw(h)
        if block_raw is None or commit_raw is None:
            break
        item = encode_sync_item(block_raw, commit_raw)
        if out and total + len(item) > max_bytes:
            break
        out.append(item)
        total += len(item)
    return out


__all__ = ["BlockSync", "serve_blocks", "decode_sync_item", "encode_sync_item"]
