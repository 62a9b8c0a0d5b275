"""Consensus write-ahead log: everything the core was fed (and everything this node signed) for the
height in progress, so a restarted validator rebuilds exactly the state it had — height, round, step,
its lock and valid value, the votes it received — re-sends its votes, and resumes its timeouts where
they were instead of waiting them out again.

File format: a sequence of records ``[length: u32 BE][crc32(payload): u32 BE][payload]`` where payload
is the canonical CBOR of one of

* ``["proposal", height, own, valid, proposal_bytes]`` — a proposal fed to the core (``valid`` = the
  block verdict it was fed with; ``own`` = this node signed it);
* ``["vote", height, own, vote_bytes]``;
* ``["timeout", height, kind, round]`` — a timeout the core was fed (it changed the round or step);
* ``["timer", height, kind, round, deadline_ms]`` — the engine armed that timeout, due at wall-clock
  ``deadline_ms``: after a restart it waits only for what is left of it;
* ``["round", height, round]`` — the engine moved the core to ``round`` on its own (the signer refused
  in the round before, or the sign state shows this validator already signed in ``round``);
* ``["end", height]`` — ``height`` is committed; nothing before this marker is needed any more.

Durability: records of messages this node signed and end markers are fsynced before the message is
sent (an fsync flushes the whole file, so every input that led to the signature is durable too); other
records are written without fsync (a crash of the process keeps them in the OS cache; losing them on a
power loss only loses unsigned inputs, which peers re-send, or makes a timeout start over).

A failed write (full disk, I/O error) raises :class:`FatalWriteError` (reason ``wal_write``) and the log
refuses every later write: the engine stops, and the message whose record failed is never sent. A
partly written record is a torn tail that the next open cuts off.

Replay (:meth:`WAL.replay`) reads the file and returns the records after the last end marker. A torn or corrupt record (a
crash mid-write) ends the readable log: it and anything after it are ignored, and the file is truncated
to the last good record when it is opened for appending.

Growth: at an end marker, once the file is larger than ``max_bytes``, it is atomically replaced by a
file holding only that marker, so the log stays below ``max_bytes`` plus one height's records.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from state import codec
from state.errors import DecodeError, FatalWriteError
from state.types import Vote

from .bft import MAX_PROPOSAL_BYTES, TIMEOUT_KINDS, Proposal

log = logging.getLogger("aitbc.consensus.wal")

_HDR = struct.Struct(">II")
MAX_RECORD_BYTES = MAX_PROPOSAL_BYTES + 1024
DEFAULT_MAX_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class WalEntry:
    """One replayed record. ``kind`` is ``proposal``, ``vote``, ``timeout``, ``timer``, ``round`` or
    ``end``."""

    kind: str
    height: int
    message: Proposal | Vote | None = None
    own: bool = False
    valid: bool = True
    timeout: str = ""
    round: int = 0
    deadline_ms: int = 0


def _decode_entry(payload: bytes) -> WalEntry:
    obj = codec.decode(payload, max_bytes=MAX_RECORD_BYTES)
    if type(obj) is not list or not obj or type(obj[0]) is not str:
        raise DecodeError("wal: record must be a list starting with its kind")
    kind = obj[0]
    if kind == "proposal" and len(obj) == 5:
        _, h, own, valid, raw = obj
        if type(h) is int and type(own) is bool and type(valid) is bool and type(raw) is bytes:
            return WalEntry(kind, h, Proposal.decode(raw), own=own, valid=valid)
    elif kind == "vote" and len(obj) == 4:
        _, h, own, raw = obj
        if type(h) is int and type(own) is bool and type(raw) is bytes:
            return WalEntry(kind, h, Vote.decode(raw), own=own)
    elif kind == "timeout" and len(obj) == 4:
        _, h, tk, r = obj
        if type(h) is int and tk in TIMEOUT_KINDS and type(r) is int and r >= 0:
            return WalEntry(kind, h, timeout=tk, round=r)
    elif kind == "timer" and len(obj) == 5:
        _, h, tk, r, deadline = obj
        if type(h) is int and tk in TIMEOUT_KINDS and type(r) is int and r >= 0 and type(deadline) is int:
            return WalEntry(kind, h, timeout=tk, round=r, deadline_ms=deadline)
    elif kind == "round" and len(obj) == 3:
        _, h, r = obj
        if type(h) is int and type(r) is int and r >= 0:
            return WalEntry(kind, h, round=r)
    elif kind == "end" and len(obj) == 2 and type(obj[1]) is int:
        return WalEntry(kind, obj[1])
    raise DecodeError(f"wal: malformed {kind!r} record")


def _scan(data: bytes) -> tuple[list[WalEntry], int]:
    """Decode records from the start; returns (entries, offset of the end of the last good record)."""
    entries: list[WalEntry] = []
    off = 0
    n = len(data)
    while off + _HDR.size <= n:
        length, crc = _HDR.unpack_from(data, off)
        end = off + _HDR.size + length
        if length == 0 or length > MAX_RECORD_BYTES or end > n:
            break
        payload = data[off + _HDR.size : end]
        if zlib.crc32(payload) != crc:
            break
        try:
            entries.append(_decode_entry(payload))
        except DecodeError as exc:
            log.warning("wal: undecodable record at offset %d (%s); ignoring the rest", off, exc)
            break
        off = end
    return entries, off


class WAL:
    """Append-only consensus log in one file (see the module docstring). Not thread-safe: use it from
    the engine's event loop only."""

    def __init__(self, path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES, sync: bool = True) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.sync = sync  # False only for tests that do not care about durability
        self._fd = -1
        self._failed: FatalWriteError | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = self.path.read_bytes() if self.path.exists() else b""
            _, good = _scan(data)
            if good < len(data):
                log.warning("wal %s: ignoring %d bytes of a torn or corrupt tail", self.path, len(data) - good)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.ftruncate(self._fd, good)
            os.lseek(self._fd, good, os.SEEK_SET)
        except OSError as exc:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            raise FatalWriteError.from_os(f"opening the consensus WAL {self.path}", exc, "wal_write") from None
        self._size = good

    # writing -----------------------------------------------------------------------------------
    def _write(self, obj: list, *, sync: bool) -> None:
        if self._failed is not None:
            raise self._failed  # a write failed before: nothing more goes into this log
        if self._fd < 0:
            raise ValueError("WAL is closed")
        payload = codec.encode(obj)
        rec = _HDR.pack(len(payload), zlib.crc32(payload)) + payload
        try:
            self._append(rec, sync=sync and self.sync)
        except OSError as exc:
            self._failed = FatalWriteError.from_os(f"writing the consensus WAL {self.path}", exc, "wal_write")
            raise self._failed from None
        self._size += len(rec)

    def _append(self, rec: bytes, *, sync: bool) -> None:
        """Append one framed record at the end of the file (and fsync it if ``sync``)."""
        view = memoryview(rec)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        if sync:
            os.fsync(self._fd)

    def append_proposal(self, p: Proposal, *, valid: bool, own: bool = False) -> None:
        self._write(["proposal", p.height, own, valid, p.encode()], sync=own)

    def append_vote(self, v: Vote, *, own: bool = False) -> None:
        self._write(["vote", v.height, own, v.encode()], sync=own)

    def append_message(self, msg: Proposal | Vote, *, own: bool = False, valid: bool = True) -> None:
        if isinstance(msg, Proposal):
            self.append_proposal(msg, valid=valid, own=own)
        else:
            self.append_vote(msg, own=own)

    def append_timeout(self, kind: str, height: int, round_: int) -> None:
        self._write(["timeout", height, kind, round_], sync=False)

    def append_timer(self, kind: str, height: int, round_: int, deadline_ms: int) -> None:
        self._write(["timer", height, kind, round_, deadline_ms], sync=False)

    def append_round(self, height: int, round_: int) -> None:
        self._write(["round", height, round_], sync=False)

    def end_height(self, height: int) -> None:
        """Mark ``height`` committed (synced); rotate the file if it grew beyond ``max_bytes``."""
        self._write(["end", height], sync=True)
        if self._size > self.max_bytes:
            try:
                self._rotate(height)
            except OSError as exc:
                self._failed = FatalWriteError.from_os(f"rotating the consensus WAL {self.path}", exc, "wal_write")
                raise self._failed from None

    def _rotate(self, height: int) -> None:
        payload = codec.encode(["end", height])
        rec = _HDR.pack(len(payload), zlib.crc32(payload)) + payload
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, rec)
            if self.sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        if self.sync:
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        fd, self._fd = self._fd, -1
        os.close(fd)
        self._fd = os.open(self.path, os.O_RDWR)
        os.lseek(self._fd, 0, os.SEEK_END)
        self._size = len(rec)
        log.debug("wal %s rotated at height %d", self.path, height)

    # reading -----------------------------------------------------------------------------------
    def _read(self) -> list[WalEntry]:
        if self._fd < 0:
            raise ValueError("WAL is closed")
        data = os.pread(self._fd, self._size, 0)
        return _scan(data)[0]

    def replay(self) -> list[WalEntry]:
        """The records after the last end marker (the unfinished height), in the order written."""
        entries = self._read()
        last_end = max((i for i, e in enumerate(entries) if e.kind == "end"), default=-1)
        return entries[last_end + 1 :]

    def last_ended_height(self) -> int | None:
        """Height of the last end marker, if any."""
        for e in reversed(self._read()):
            if e.kind == "end":
                return e.height
        return None

    @property
    def size(self) -> int:
        return self._size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> WAL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
