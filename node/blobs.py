"""Content-addressed blob store on disk: job inputs and results, served over ``/aitbc/<chain>/blob/1``.

A blob's id is the SHA-256 of its bytes (DESIGN §1). Files live at ``<dir>/<hh>/<hash hex>``; a write
goes to a temporary file that is fsynced and renamed, so a crash never leaves a partial blob under its
id. Reads verify nothing (the p2p layer re-hashes before serving and after fetching).

Three kinds of writes, with different rules (the origin is kept per blob in ``<dir>/index.json``, with
each write since the last rewrite appended to ``<dir>/index.log``: one fsynced line per write instead of
rewriting the whole index, which made uploading a model's thousands of chunks quadratic):

* ``put`` — uploads through ``blob_put`` (:meth:`BlobStore.put_owned`): signed by a funded account
  (:func:`blob_sign_bytes`, checked by the RPC method), charged to that owner and bounded by a per-account
  and a total quota. An upload must be referenced by a live job *of its owner* within ``grace_s``.
* ``local`` — what the node writes itself (:meth:`BlobStore.put`): the miner role's results. Never
  refused for quota.
* ``cache`` — blobs fetched from peers (``put(data, cache=True)``): skipped when over the total quota.

Garbage collection (:func:`gc_once`, run every ``gc_interval_s`` by :func:`run_blob_gc`, and by
``admin_blobGc``) keeps a blob while a *live* job refers to it — its input or its receipt's result,
for jobs QUEUED, RUNNING, COMPLETED with the payment escrowed (challenge window) or with an open
availability challenge, read from the market's state indexes, and the index and chunks of every model
this node pins (``node/models.py``) — and for ``retain_s`` after the last pass
that saw it live (so results stay fetchable a while after settlement). Otherwise an upload goes
``grace_s`` after its last ``blob_put``, a local blob ``retain_s`` after it was written (a result
whose job settled before any pass saw it), a cached blob ``grace_s`` after it was fetched.

The ``blob_put`` signature (kind :data:`KIND_BLOB`) is an admission check of this node only: it is never
part of a transaction or a block and no other node verifies it, so it is not consensus and lives here,
not in ``state/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from rpc.node_api import BlobRefused
from state import codec
from state.crypto import SigningKey

if TYPE_CHECKING:
    from .service import Node

log = logging.getLogger("aitbc.blobs")

#: Domain-separation kind of ``blob_put`` signatures: ``aitbc/blob_put/v1\0<chain_id>`` + encoding.
KIND_BLOB = "blob_put"

ORIGIN_PUT = "put"
ORIGIN_LOCAL = "local"
ORIGIN_CACHE = "cache"
INDEX_FILE = "index.json"
JOURNAL_FILE = "index.log"
MIN_COMPACT_LINES = 1024  # the journal is folded into index.json past max(this, 2 × blobs) lines


class BlobError(BlobRefused):
    reason = "blob"


def blob_sign_bytes(blob_hash: bytes, size: int, expires: int) -> bytes:
    """What a ``blob_put`` signature covers (after the domain prefix, which binds the chain id): the blob's
    hash and size and the last height at which the upload is accepted (so a captured request cannot be
    replayed later)."""
    return codec.encode({"hash": blob_hash, "size": size, "expires": expires})


def signed_blob_put_params(key: SigningKey, chain_id: str, data: bytes, expires: int) -> dict[str, Any]:
    """The params of a ``blob_put`` call for ``data``, signed by ``key`` (the owner)."""
    from state.address import encode_address

    h = hashlib.sha256(data).digest()
    sig = key.sign(KIND_BLOB, chain_id, blob_sign_bytes(h, len(data), expires))
    return {
        "data": "0x" + data.hex(),
        "owner": encode_address(key.public_key),
        "expires": expires,
        "sig": "0x" + sig.hex(),
    }


@dataclass(frozen=True)
class BlobLimits:
    max_blob_bytes: int = 64 << 20  # one blob
    max_total_bytes: int = 1 << 30
    max_count: int = 4096
    max_account_bytes: int = 64 << 20
    max_account_count: int = 64
    min_balance: int = 1_000_000
    sig_max_blocks: int = 100
    grace_s: float = 600.0
    retain_s: float = 3600.0
    gc_interval_s: float = 60.0

    @classmethod
    def from_config(cls, blobs: Any) -> BlobLimits:
        """From the ``[blobs]`` config section (``node.config.BlobsSection``)."""
        return cls(
            max_total_bytes=blobs.max_total_bytes,
            max_count=blobs.max_count,
            max_account_bytes=blobs.max_account_bytes,
            max_account_count=blobs.max_account_count,
            min_balance=blobs.min_balance,
            sig_max_blocks=blobs.sig_max_blocks,
            grace_s=float(blobs.grace_s),
            retain_s=float(blobs.retain_s),
            gc_interval_s=float(blobs.gc_interval_s),
        )


@dataclass
class BlobMeta:
    size: int
    origin: str  # ORIGIN_PUT | ORIGIN_LOCAL | ORIGIN_CACHE
    stored_at: float  # unix time of the (last) write
    owners: dict[bytes, float] = field(default_factory=dict)  # uploader -> unix time of its last blob_put
    live_at: float = 0.0  # unix time of the last gc pass that found a live job referring to it

    def to_json(self) -> dict:
        return {
            "size": self.size,
            "origin": self.origin,
            "stored_at": self.stored_at,
            "owners": {k.hex(): v for k, v in self.owners.items()},
            "live_at": self.live_at,
        }

    @classmethod
    def from_json(cls, obj: dict) -> BlobMeta:
        origin = obj["origin"]
        if origin not in (ORIGIN_PUT, ORIGIN_LOCAL, ORIGIN_CACHE):
            raise ValueError(f"unknown origin {origin!r}")
        return cls(
            size=int(obj["size"]),
            origin=origin,
            stored_at=float(obj["stored_at"]),
            owners={bytes.fromhex(k): float(v) for k, v in obj.get("owners", {}).items()},
            live_at=float(obj.get("live_at", 0.0)),
        )


@dataclass
class LiveRefs:
    """Blob hashes live jobs refer to: inputs (with the jobs' clients) and receipt results."""

    inputs: dict[bytes, set[bytes]] = field(default_factory=dict)  # input blob -> clients of its live jobs
    results: set[bytes] = field(default_factory=set)
    jobs: int = 0


@dataclass
class GcStats:
    removed: int = 0
    freed_bytes: int = 0
    kept: int = 0
    live: int = 0
    total_bytes: int = 0
    live_jobs: int = 0

    def to_json(self) -> dict:
        return dict(self.__dict__)


class BlobStore:
    """Blobs by hash, bounded in size and number, with owners and expiry (see the module docstring).
    Thread-safe: writes, reads and collection run in worker threads."""

    def __init__(self, root: Path, *, max_bytes: int = 64 << 20, limits: BlobLimits | None = None) -> None:
        self.root = root
        self.limits = limits if limits is not None else BlobLimits(max_blob_bytes=max_bytes)
        self.max_bytes = self.limits.max_blob_bytes
        self._lock = threading.Lock()
        self._meta: dict[bytes, BlobMeta] = {}
        self.total_bytes = 0
        self._journal_lines = 0
        root.mkdir(parents=True, exist_ok=True)
        self._load()

    # index ----------------------------------------------------------------------------------------
    def _path(self, blob_hash: bytes) -> Path:
        h = blob_hash.hex()
        return self.root / h[:2] / h

    def _load(self) -> None:
        """Read the index and reconcile it with the files (a crash may have lost either side)."""
        saved: dict[bytes, BlobMeta] = {}
        try:
            raw = json.loads((self.root / INDEX_FILE).read_text())
            for k, v in raw.get("blobs", {}).items():
                saved[bytes.fromhex(k)] = BlobMeta.from_json(v)
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("blob index %s unreadable (%s): rebuilding it from the files", self.root / INDEX_FILE, exc)
        changed = self._replay(saved)
        for sub in self.root.iterdir():
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for f in sub.iterdir():
                name = f.name
                if ".tmp" in name:  # a write interrupted by a crash
                    f.unlink(missing_ok=True)
                    continue
                try:
                    h = bytes.fromhex(name)
                except ValueError:
                    continue
                if len(h) != 32:
                    continue
                meta = saved.get(h)
                st = f.stat()
                if meta is None:  # written before this index existed, or the index was lost: the node's own
                    meta = BlobMeta(size=st.st_size, origin=ORIGIN_LOCAL, stored_at=st.st_mtime)
                    changed = True
                meta.size = st.st_size
                self._meta[h] = meta
        if set(saved) - set(self._meta):
            changed = True
        self.total_bytes = sum(m.size for m in self._meta.values())
        if changed:
            self._save()

    def _replay(self, saved: dict[bytes, BlobMeta]) -> bool:
        """Apply the journal's lines to ``saved`` (a torn last line, from a crash, is ignored). Returns
        whether there was a journal (then the index is rewritten)."""
        try:
            lines = (self.root / JOURNAL_FILE).read_text().splitlines()
        except FileNotFoundError:
            return False
        for line in lines:
            try:
                entry = json.loads(line)
                h = bytes.fromhex(entry["h"])
                if entry["m"] is None:
                    saved.pop(h, None)
                else:
                    saved[h] = BlobMeta.from_json(entry["m"])
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("blob journal %s: skipping an unreadable line", self.root / JOURNAL_FILE)
        return True

    def _record(self, blob_hash: bytes) -> None:
        """Append the blob's current index entry (or its removal) to the journal (under the lock); fold the
        journal into the index once it is long. Not fsynced: a process killed at any point keeps what it
        wrote (the page cache survives), and a line lost with the machine's power only makes that blob
        (itself fsynced) count as the node's own until ``retain_s`` — :meth:`_load` re-adds unindexed files."""
        meta = self._meta.get(blob_hash)
        line = json.dumps({"h": blob_hash.hex(), "m": meta.to_json() if meta is not None else None})
        with open(self.root / JOURNAL_FILE, "a") as f:
            f.write(line + "\n")
        self._journal_lines += 1
        if self._journal_lines > max(MIN_COMPACT_LINES, 2 * len(self._meta)):
            self._save()

    def _save(self) -> None:
        """Write the whole index (under the lock): a temporary file, fsynced, renamed; then drop the
        journal it now contains."""
        path = self.root / INDEX_FILE
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        data = json.dumps({"version": 1, "blobs": {h.hex(): m.to_json() for h, m in self._meta.items()}})
        with open(tmp, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        (self.root / JOURNAL_FILE).unlink(missing_ok=True)
        self._journal_lines = 0

    def _write_file(self, blob_hash: bytes, data: bytes) -> None:
        path = self._path(blob_hash)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    # writes ---------------------------------------------------------------------------------------
    def put(self, data: bytes, *, cache: bool = False) -> bytes:
        """Store ``data`` written by this node (``cache``: fetched from a peer); returns its id
        (idempotent). The node's own writes are never refused for quota; cached ones are skipped (not
        stored, the id is still returned) when the store is full."""
        if len(data) > self.max_bytes:
            raise BlobError(f"blob of {len(data)} bytes exceeds the limit of {self.max_bytes}", "too_large")
        blob_hash = hashlib.sha256(data).digest()
        now = time.time()
        with self._lock:
            meta = self._meta.get(blob_hash)
            if meta is not None and self._path(blob_hash).exists():
                if not cache and meta.origin != ORIGIN_LOCAL:
                    # The node now needs it for itself (e.g. a miner's result that someone uploaded first:
                    # it must not expire with the upload).
                    meta.origin = ORIGIN_LOCAL
                    meta.stored_at = now
                    self._record(blob_hash)
                return blob_hash
            lim = self.limits
            if cache and (
                self.total_bytes + len(data) > lim.max_total_bytes or len(self._meta) >= lim.max_count
            ):
                log.info("blob store full: not caching blob %s", blob_hash.hex()[:16])
                return blob_hash
            self._write_file(blob_hash, data)
            self._forget(blob_hash)
            self._meta[blob_hash] = BlobMeta(
                size=len(data), origin=ORIGIN_CACHE if cache else ORIGIN_LOCAL, stored_at=now
            )
            self.total_bytes += len(data)
            self._record(blob_hash)
        return blob_hash

    def put_owned(self, data: bytes, owner: bytes, *, charge: bool = True) -> bytes:
        """Store an upload charged to ``owner`` (the signature and balance are checked by the caller).
        ``charge=False`` (the index or a chunk of a model ``owner`` registered): not charged to the owner
        nor bounded by its per-account quota; the store's total bounds still apply.
        Raises :class:`BlobError` with reason ``too_large``, ``account_quota``, ``account_count``,
        ``total_quota`` or ``store_full``."""
        lim = self.limits
        size = len(data)
        if size > self.max_bytes:
            raise BlobError(f"blob of {size} bytes exceeds the limit of {self.max_bytes}", "too_large")
        blob_hash = hashlib.sha256(data).digest()
        now = time.time()
        with self._lock:
            meta = self._meta.get(blob_hash)
            if meta is not None and not self._path(blob_hash).exists():
                self._forget(blob_hash)
                meta = None
            if charge and (meta is None or owner not in meta.owners):
                used, count = self._account_usage(owner)
                if count + 1 > lim.max_account_count:
                    raise BlobError(
                        f"this account already stores {count} blobs here (max {lim.max_account_count})",
                        "account_count",
                    )
                if used + size > lim.max_account_bytes:
                    raise BlobError(
                        f"this account's blobs would take {used + size} bytes here (max {lim.max_account_bytes})",
                        "account_quota",
                    )
            if meta is None:
                if self.total_bytes + size > lim.max_total_bytes:
                    raise BlobError(
                        f"the node's blob store is full ({self.total_bytes} of {lim.max_total_bytes} bytes)",
                        "total_quota",
                    )
                if len(self._meta) >= lim.max_count:
                    raise BlobError(f"the node stores {len(self._meta)} blobs already (max {lim.max_count})",
                                    "store_full")
                self._write_file(blob_hash, data)
                meta = self._meta[blob_hash] = BlobMeta(size=size, origin=ORIGIN_PUT, stored_at=now)
                self.total_bytes += size
            if charge:
                meta.owners[owner] = now
            else:
                meta.stored_at = now
            self._record(blob_hash)
        return blob_hash

    def _forget(self, blob_hash: bytes) -> None:
        meta = self._meta.pop(blob_hash, None)
        if meta is not None:
            self.total_bytes -= meta.size

    def _account_usage(self, owner: bytes) -> tuple[int, int]:
        used = count = 0
        for meta in self._meta.values():
            if owner in meta.owners:
                used += meta.size
                count += 1
        return used, count

    def account_usage(self, owner: bytes) -> tuple[int, int]:
        """(bytes, blobs) charged to ``owner``."""
        with self._lock:
            return self._account_usage(owner)

    # reads ----------------------------------------------------------------------------------------
    def get(self, blob_hash: bytes) -> bytes | None:
        if len(blob_hash) != 32:
            return None
        try:
            return self._path(blob_hash).read_bytes()
        except FileNotFoundError:
            return None

    def has(self, blob_hash: bytes) -> bool:
        return len(blob_hash) == 32 and self._path(blob_hash).exists()

    def meta(self, blob_hash: bytes) -> BlobMeta | None:
        with self._lock:
            return self._meta.get(blob_hash)

    def __len__(self) -> int:
        return len(self._meta)

    async def aput(self, data: bytes, *, cache: bool = False) -> bytes:
        """:meth:`put` in a worker thread (it writes and fsyncs a file): for callers on the trio loop."""
        return await trio.to_thread.run_sync(lambda: self.put(data, cache=cache))

    async def aput_owned(self, data: bytes, owner: bytes, *, charge: bool = True) -> bytes:
        return await trio.to_thread.run_sync(lambda: self.put_owned(data, owner, charge=charge))

    async def aget(self, blob_hash: bytes) -> bytes | None:
        """:meth:`get` in a worker thread: for callers on the trio loop (also the p2p blob provider)."""
        return await trio.to_thread.run_sync(self.get, blob_hash)

    # collection -----------------------------------------------------------------------------------
    def collect(self, live: LiveRefs, *, now: float | None = None) -> GcStats:
        """Delete every blob the rules of the module docstring no longer keep."""
        now = time.time() if now is None else now
        lim = self.limits
        stats = GcStats(live_jobs=live.jobs)
        with self._lock:
            doomed: list[bytes] = []
            for h, meta in self._meta.items():
                clients = live.inputs.get(h)
                if meta.origin == ORIGIN_PUT:
                    is_live = h in live.results or bool(clients and not clients.isdisjoint(meta.owners))
                else:
                    is_live = h in live.results or bool(clients)
                if is_live:
                    meta.live_at = now
                    stats.live += 1
                    continue
                if meta.origin == ORIGIN_PUT:
                    since = max(meta.owners.values(), default=meta.stored_at)
                    keep_until = since + lim.grace_s
                elif meta.origin == ORIGIN_LOCAL:
                    keep_until = meta.stored_at + lim.retain_s
                else:
                    keep_until = meta.stored_at + lim.grace_s
                if meta.live_at:
                    keep_until = max(keep_until, meta.live_at + lim.retain_s)
                if now < keep_until:
                    continue
                doomed.append(h)
            for h in doomed:
                try:
                    self._path(h).unlink()
                except FileNotFoundError:
                    pass
                stats.removed += 1
                stats.freed_bytes += self._meta[h].size
                self._forget(h)
            stats.kept = len(self._meta)
            stats.total_bytes = self.total_bytes
            self._save()
        if stats.removed:
            log.info("blob gc: removed %d blobs (%d bytes); %d kept, %d referenced by %d live jobs",
                     stats.removed, stats.freed_bytes, stats.kept, stats.live, live.jobs)
        return stats


# ------------------------------------------------------------------------------------------------ gc
def live_refs(node: Node) -> LiveRefs:
    """Blobs referred to by live jobs, from the market's indexes of QUEUED (``mkt/q/``), RUNNING
    (``mkt/r/``), in-window (``mkt/w/``) and availability-challenged (``mkt/v/``) jobs: work proportional
    to the jobs in flight, not to every job ever submitted."""
    from state.market.records import AVAILABILITY_PREFIX, OPEN_PREFIX, RUNNING_PREFIX, WINDOW_PREFIX
    from state.market_views import load_job

    chain = node.chain
    if chain is None:
        raise BlobError("node not opened", "not_opened")
    refs = LiveRefs()
    seen: set[bytes] = set()
    for prefix in (OPEN_PREFIX, RUNNING_PREFIX, WINDOW_PREFIX, AVAILABILITY_PREFIX):
        for _key, job_id in node.scan_objects(prefix):
            if job_id in seen:
                continue
            seen.add(job_id)
            job = load_job(chain.get_object, job_id)
            if job is None:
                continue
            refs.jobs += 1
            inp = job.input
            if inp is not None and "blob" in inp:
                refs.inputs.setdefault(inp["blob"], set()).add(job.client)
            if job.receipt is not None and "result_hash" in job.receipt:
                refs.results.add(job.receipt["result_hash"])
    if node.models is not None:  # the index and chunks of pinned models (node/models.py): live like results
        refs.results |= node.models.live_refs()
    return refs


async def gc_once(node: Node) -> GcStats:
    """One collection pass (in a worker thread: it reads the state and deletes files)."""
    store = node.blobs
    if store is None:
        raise BlobError("node not opened", "not_opened")

    def work() -> GcStats:
        return store.collect(live_refs(node))

    return await trio.to_thread.run_sync(work)


async def run_blob_gc(node: Node, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
    """Collect blobs every ``gc_interval_s`` for as long as the node runs; a failed pass is logged."""
    task_status.started()
    store = node.blobs
    if store is None:
        return
    while True:
        await trio.sleep(store.limits.gc_interval_s)
        try:
            await gc_once(node)
        except Exception:
            log.exception("blob gc pass failed")
