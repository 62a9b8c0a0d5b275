"""Content-addressed blob store on disk: job inputs and results, served over ``/aitbc/<chain>/blob/1``.

A blob's id is the SHA-256 of its bytes (DESIGN §1). Files live at ``<dir>/<hh>/<hash hex>``; a write
goes to a temporary file that is fsynced and renamed, so a crash never leaves a partial blob under its
id. Reads verify nothing (the p2p layer re-hashes before serving and after fetching).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import trio

from state.errors import AitbcError


class BlobError(AitbcError):
    reason = "blob"


class BlobStore:
    """Blobs by hash, bounded in size."""

    def __init__(self, root: Path, *, max_bytes: int = 64 << 20) -> None:
        self.root = root
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, blob_hash: bytes) -> Path:
        h = blob_hash.hex()
        return self.root / h[:2] / h

    def put(self, data: bytes) -> bytes:
        """Store ``data``; returns its id (idempotent)."""
        if len(data) > self.max_bytes:
            raise BlobError(f"blob of {len(data)} bytes exceeds the limit of {self.max_bytes}", "too_large")
        blob_hash = hashlib.sha256(data).digest()
        path = self._path(blob_hash)
        if path.exists():
            return blob_hash
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return blob_hash

    def get(self, blob_hash: bytes) -> bytes | None:
        if len(blob_hash) != 32:
            return None
        try:
            return self._path(blob_hash).read_bytes()
        except FileNotFoundError:
            return None

    async def aput(self, data: bytes) -> bytes:
        """:meth:`put` in a worker thread (it writes and fsyncs a file): for callers on the trio loop."""
        return await trio.to_thread.run_sync(self.put, data)

    async def aget(self, blob_hash: bytes) -> bytes | None:
        """:meth:`get` in a worker thread: for callers on the trio loop (also the p2p blob provider)."""
        return await trio.to_thread.run_sync(self.get, blob_hash)

    def has(self, blob_hash: bytes) -> bool:
        return len(blob_hash) == 32 and self._path(blob_hash).exists()
