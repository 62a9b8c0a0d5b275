"""Registered models on this node: chunk lookup and verification, pins, and the pin fetcher.

A model's file travels as blobs (``node/blobs.py``): its chunk index (one blob, id = the manifest's
``index``) and one blob per chunk (id = the chunk's SHA-256). Every chunk handed out is checked against
the manifest's Merkle ``root`` with a proof built from the index (``state.market.models``).

*Pins* are local node state — which models this node keeps and serves — in ``<data>/models/pins.json``
(written atomically). A pinned model's index and chunks are live for the blob collector
(:meth:`ModelService.live_refs`), and :meth:`ModelService.run` fetches the chunks it lacks from peers,
resumably (chunks already present are skipped), verifying each. Unpinning makes them collectable again
(after ``blobs.retain_s``).

Uploads (``blob_put``) of a registered model's index and chunks by the model's owner are not charged to
the owner's per-account quota (:meth:`ModelService.is_owner_ref`); the store's total bounds still apply.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from rpc.node_api import ModelAccessError
from state.errors import InvariantError
from state.market.models import (
    OWNER_PREFIX,
    ChunkIndex,
    Model,
    ModelIndexError,
    load_model,
    model_id_by_name,
    parse_index,
    verify_chunk,
)

if TYPE_CHECKING:
    from .service import Node

log = logging.getLogger("aitbc.models")

PINS_FILE = "pins.json"
MAX_PINS = 32  # models one node keeps
MAX_CACHED_INDEXES = 64  # parsed chunk indexes kept in memory
MAX_OWNER_MODELS_SCANNED = 256  # an owner's models examined per blob_put (newest first)
RETRY_S = 10.0  # the fetcher's pause after a pass that left chunks missing
CHUNK_TIMEOUT_S = 30.0


class ModelError(ModelAccessError):
    """A model that is unknown, whose index or chunks cannot be obtained or do not verify, or a pin limit.
    Reasons: ``unknown_model``, ``index_unavailable``, ``chunk_unavailable``, ``bad_index``, ``bad_chunk``,
    ``bad_chunk_index``, ``pin_limit``."""

    reason = "model"


def _unhex_id(ref: str) -> bytes | None:
    t = ref[2:] if ref.startswith("0x") else ref
    if len(t) != 64:
        return None
    try:
        return bytes.fromhex(t)
    except ValueError:
        return None


class ModelPins:
    """Pinned model ids with the time they were pinned, persisted as JSON (temporary file, fsync, rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / PINS_FILE
        self.pins: dict[bytes, dict] = {}
        root.mkdir(parents=True, exist_ok=True)
        try:
            raw = json.loads(self.path.read_text())
            for k, v in raw.get("pins", {}).items():
                self.pins[bytes.fromhex(k)] = {"name": str(v.get("name", "")), "pinned_at": float(v["pinned_at"])}
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("model pins %s unreadable (%s): starting with none", self.path, exc)

    def save(self) -> None:
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        data = json.dumps({"version": 1, "pins": {k.hex(): v for k, v in self.pins.items()}})
        with open(tmp, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class ModelService:
    """Models of the chain as this node sees them: lookup, verified chunks, pins and the pin fetcher."""

    def __init__(self, node: Node, root: Path) -> None:
        self.node = node
        self.pins = ModelPins(root)
        self._indexes: OrderedDict[bytes, ChunkIndex] = OrderedDict()
        self._lock = threading.Lock()  # the index cache is used from worker threads too (gc, blob_put)
        self._wake = trio.Event()

    # lookup -----------------------------------------------------------------------------------------
    def _get(self, key: bytes) -> bytes | None:
        chain = self.node.chain
        if chain is None:
            raise InvariantError("node not opened")
        return chain.get_object(key)

    def find(self, ref: str) -> Model | None:
        """A registered model by id (0x-hex) or name."""
        mid = _unhex_id(ref)
        m = load_model(self._get, mid) if mid is not None else None
        if m is None:
            by_name = model_id_by_name(self._get, ref)
            m = load_model(self._get, by_name) if by_name is not None else None
        return m

    def need(self, ref: str) -> Model:
        m = self.find(ref)
        if m is None:
            raise ModelError(f"no model {ref!r} is registered", "unknown_model")
        return m

    # the index --------------------------------------------------------------------------------------
    def _cache(self, mid: bytes, idx: ChunkIndex) -> ChunkIndex:
        with self._lock:
            self._indexes[mid] = idx
            self._indexes.move_to_end(mid)
            while len(self._indexes) > MAX_CACHED_INDEXES:
                self._indexes.popitem(last=False)
        return idx

    def _cached(self, mid: bytes) -> ChunkIndex | None:
        with self._lock:
            return self._indexes.get(mid)

    def local_index(self, m: Model) -> ChunkIndex | None:
        """The model's chunk index if its blob is in the local store (parsed and checked), else None."""
        idx = self._cached(m.model_id)
        if idx is not None:
            return idx
        store = self.node.blobs
        if store is None:
            raise InvariantError("node not opened")
        data = store.get(m.manifest["index"])
        if data is None:
            return None
        try:
            return self._cache(m.model_id, parse_index(data, m.manifest))
        except ModelIndexError:
            return None

    async def index(self, m: Model) -> ChunkIndex:
        """The model's chunk index, from the local store or fetched from peers; checked against the
        manifest. Raises :class:`ModelError` (``index_unavailable``, ``bad_index``)."""
        idx = self._cached(m.model_id)
        if idx is not None:
            return idx
        data = await self.node.fetch_blob(m.manifest["index"], timeout_s=CHUNK_TIMEOUT_S)
        if data is None:
            raise ModelError(f"the chunk index of model {m.name} is not available from this node or its peers",
                             "index_unavailable")
        try:
            idx = await trio.to_thread.run_sync(parse_index, data, m.manifest)
        except ModelIndexError as exc:
            raise ModelError(f"model {m.name}: {exc}", "bad_index") from None
        return self._cache(m.model_id, idx)

    async def chunk(self, m: Model, index: int) -> tuple[bytes, list[bytes]]:
        """Chunk ``index`` of the model and its Merkle proof against the manifest's root, from the local
        store or fetched from peers; verified. Raises :class:`ModelError`."""
        n = m.chunk_count
        if type(index) is not int or not 0 <= index < n:
            raise ModelError(f"model {m.name} has chunks 0..{n - 1}, not {index}", "bad_chunk_index")
        idx = await self.index(m)
        data = await self.node.fetch_blob(idx.blob_ids[index], timeout_s=CHUNK_TIMEOUT_S)
        if data is None:
            raise ModelError(f"chunk {index} of model {m.name} is not available from this node or its peers",
                             "chunk_unavailable")
        proof = idx.proof(index)
        if not verify_chunk(m.manifest, index, data, proof):
            raise ModelError(f"chunk {index} of model {m.name} does not verify against the manifest's root",
                             "bad_chunk")
        return data, proof

    # local state ------------------------------------------------------------------------------------
    def status(self, m: Model) -> dict:
        """``{pinned, chunks, chunks_present, index_present, complete}`` on this node."""
        store = self.node.blobs
        if store is None:
            raise InvariantError("node not opened")
        idx = self.local_index(m)
        present = sum(1 for h in idx.blob_ids if store.has(h)) if idx is not None else 0
        return {
            "pinned": m.model_id in self.pins.pins,
            "chunks": m.chunk_count,
            "chunks_present": present,
            "index_present": idx is not None,
            "complete": idx is not None and present == m.chunk_count,
        }

    def pinned(self) -> dict[bytes, float]:
        """Pinned model ids and the time each was pinned."""
        return {mid: p["pinned_at"] for mid, p in self.pins.pins.items()}

    def pin(self, m: Model) -> dict:
        """Keep the model on this node; the fetcher gets the chunks it lacks. Raises ``pin_limit``."""
        pins = self.pins.pins
        if m.model_id not in pins:
            if len(pins) >= MAX_PINS:
                raise ModelError(f"this node pins {len(pins)} models already (max {MAX_PINS})", "pin_limit")
            pins[m.model_id] = {"name": m.name, "pinned_at": time.time()}
            self.pins.save()
        self._wake.set()
        return self.status(m)

    def unpin(self, m: Model) -> dict:
        """Stop keeping the model (its blobs are collected after ``blobs.retain_s``)."""
        if self.pins.pins.pop(m.model_id, None) is not None:
            self.pins.save()
        return self.status(m)

    def live_refs(self) -> set[bytes]:
        """Blob ids the collector must keep: index and chunks of every pinned model (whose index is here)."""
        out: set[bytes] = set()
        for mid in list(self.pins.pins):
            m = load_model(self._get, mid)
            if m is None:
                continue
            out.add(m.manifest["index"])
            idx = self.local_index(m)
            if idx is not None:
                out.update(idx.blob_ids)
        return out

    def is_owner_ref(self, owner: bytes, blob_hash: bytes) -> bool:
        """Whether ``blob_hash`` is the index or a chunk of a model registered by ``owner`` (its newest
        :data:`MAX_OWNER_MODELS_SCANNED` models; a chunk counts once the index is on this node)."""
        from state.store import P_OBJECT

        store = self.node.store
        if store is None:
            raise InvariantError("node not opened")
        ids: list[bytes] = []
        with store.db.iterator(prefix=P_OBJECT + OWNER_PREFIX + owner, reverse=True) as it:
            for _k, mid in it:
                ids.append(mid)
                if len(ids) >= MAX_OWNER_MODELS_SCANNED:
                    break
        for mid in ids:
            m = load_model(self._get, mid)
            if m is None:
                continue
            if m.manifest["index"] == blob_hash:
                return True
            idx = self.local_index(m)
            if idx is not None and blob_hash in idx.blob_ids:
                return True
        return False

    # the fetcher ------------------------------------------------------------------------------------
    async def fetch_missing(self, m: Model) -> int:
        """Fetch and keep every chunk of ``m`` this node lacks (verified); returns how many are still
        missing. Chunks already present are skipped, so an interrupted pin resumes where it stopped."""
        store = self.node.blobs
        if store is None:
            raise InvariantError("node not opened")
        data = await self.node.fetch_blob(m.manifest["index"], timeout_s=CHUNK_TIMEOUT_S)
        if data is None:
            raise ModelError(f"the chunk index of model {m.name} is not available from this node or its peers",
                             "index_unavailable")
        await store.aput(data)  # the node's own copy (a blob fetched from a peer is only cached)
        idx = await self.index(m)
        missing: list[int] = []
        for i, h in enumerate(idx.blob_ids):
            if m.model_id not in self.pins.pins:
                return -1  # unpinned meanwhile
            if store.has(h):
                continue
            try:
                data, _proof = await self.chunk(m, i)
            except ModelError:
                missing.append(i)
                continue
            await store.aput(data)  # the node's own copy: not dropped when the cache is full
        if missing:  # one line per pass, not one per chunk (a model being uploaded lacks thousands)
            log.info("model %s: %d of %d chunks not available from this node or its peers yet (first: %d); "
                     "retrying in %g s", m.name, len(missing), len(idx.blob_ids), missing[0], RETRY_S)
        return len(missing)

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """For as long as the node runs: fetch the missing chunks of pinned models, after every pin and
        every :data:`RETRY_S` while some are missing."""
        task_status.started()
        while True:
            self._wake = trio.Event()
            incomplete = False
            for mid in list(self.pins.pins):
                m = load_model(self._get, mid)
                if m is None:
                    continue
                try:
                    if await self.fetch_missing(m) > 0:
                        incomplete = True
                except ModelError as exc:
                    log.info("model %s: %s", m.name, exc)
                    incomplete = True
                except Exception:
                    log.exception("fetching model %s failed", m.name)
                    incomplete = True
            with trio.move_on_after(RETRY_S if incomplete else 3600.0):
                await self._wake.wait()


__all__ = ["MAX_PINS", "ModelError", "ModelPins", "ModelService"]
