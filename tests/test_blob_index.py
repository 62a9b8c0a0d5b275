"""The blob store's index survives restarts and crashes with one journal line per write (node/blobs.py):
real files, real fsync, a torn last line as a kill -9 leaves it."""

from __future__ import annotations

import json
import os

from node import blobs
from node.blobs import BlobLimits, BlobStore


def _limits() -> BlobLimits:
    return BlobLimits(max_account_count=10_000, max_account_bytes=1 << 30, max_count=10_000)


def test_writes_append_to_the_journal_and_a_restart_replays_it(tmp_path) -> None:
    store = BlobStore(tmp_path, limits=_limits())
    owner = b"\x01" * 32
    ids = [store.put_owned(f"chunk {i}".encode(), owner) for i in range(50)]
    mine = store.put(b"a result")
    assert not (tmp_path / blobs.INDEX_FILE).exists()  # nothing rewritten per write
    assert len((tmp_path / blobs.JOURNAL_FILE).read_text().splitlines()) == 51
    again = BlobStore(tmp_path, limits=_limits())  # a restart: the journal is folded into the index
    assert len(again) == 51 and again.account_usage(owner) == store.account_usage(owner)
    assert all(again.meta(h).origin == blobs.ORIGIN_PUT and owner in again.meta(h).owners for h in ids)
    assert again.meta(mine).origin == blobs.ORIGIN_LOCAL
    assert json.loads((tmp_path / blobs.INDEX_FILE).read_text())["blobs"].keys() == {h.hex() for h in [*ids, mine]}
    assert not (tmp_path / blobs.JOURNAL_FILE).exists()


def test_a_torn_journal_line_is_skipped(tmp_path) -> None:
    store = BlobStore(tmp_path, limits=_limits())
    owner = b"\x02" * 32
    a = store.put_owned(b"first", owner)
    b = store.put_owned(b"second", owner)
    with open(tmp_path / blobs.JOURNAL_FILE, "a") as f:  # a write cut short by a crash
        f.write('{"h": "' + "ab" * 32 + '", "m": {"si')
        f.flush()
        os.fsync(f.fileno())
    again = BlobStore(tmp_path, limits=_limits())
    assert {a, b} <= set(again._meta) and again.meta(a).owners.keys() == {owner}
    assert len(again) == 2


def test_the_journal_is_folded_once_long(tmp_path, monkeypatch) -> None:
    """Re-uploads (an owner refreshing its blob) add lines, not blobs: past max(MIN_COMPACT_LINES,
    2 × blobs) lines the journal is folded into index.json, so it stays proportional to the store."""
    monkeypatch.setattr(blobs, "MIN_COMPACT_LINES", 8)
    store = BlobStore(tmp_path, limits=_limits())
    for i in range(3):
        store.put(f"blob {i}".encode())
    for _ in range(20):
        store.put_owned(b"refreshed", b"\x03" * 32)
    assert (tmp_path / blobs.INDEX_FILE).exists()
    assert len((tmp_path / blobs.JOURNAL_FILE).read_text().splitlines()) <= 8
    again = BlobStore(tmp_path, limits=_limits())
    assert len(again) == 4 and again.account_usage(b"\x03" * 32) == (len(b"refreshed"), 1)
