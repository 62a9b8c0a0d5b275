"""LevelDB (plyvel) store: blocks, commits, tx index, accounts, objects, state-tree nodes, head.

Key prefixes (one byte each):
  H<height:8>  -> block hash             B<hash>       -> block encoding
  C<height:8>  -> commit finalizing that height (the "seen commit")
  R<height:8>  -> tx results of the block
  x<tx hash>   -> [height, index, tx, result]   a<pubkey> -> account [balance, nonce]
  o<key>       -> generic state object   T...          -> state-tree nodes (state/smt.py)
  m:head       -> head record            m:genesis     -> genesis hash
Everything a block changes is written in ONE ``WriteBatch`` with ``sync=True``: after a crash the store
holds the previous or the next committed block, never half of one.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import cbor2
import plyvel

from . import codec
from .errors import AitbcError, FatalWriteError
from .types import Account

P_HASH_BY_HEIGHT = b"H"
P_BLOCK = b"B"
P_COMMIT = b"C"
P_RESULTS = b"R"
P_TX = b"x"
P_ACCOUNT = b"a"
P_OBJECT = b"o"
P_TREE = b"T"
#: Node-local history index (not state): ``X ‖ address(32) ‖ height(8) ‖ index(4)`` → tx hash.
P_ADDR_TX = b"X"
K_HEAD = b"m:head"
K_GENESIS = b"m:genesis"
K_ADDR_INDEX_FROM = b"m:addr_index_from"  # the first height whose transactions are in P_ADDR_TX
K_SCHEMA = b"m:schema"
SCHEMA_VERSION = 1

_U64 = struct.Struct(">Q")


class StoreError(AitbcError):
    reason = "store"


def _leveldb_message(exc: Exception) -> str:
    """plyvel's error text (it carries LevelDB's message as bytes, which would print as b'...')."""
    arg = exc.args[0] if exc.args else ""
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(exc)


def h8(height: int) -> bytes:
    return _U64.pack(height)


@dataclass(frozen=True)
class Head:
    height: int
    hash: bytes
    time: int
    state_root: bytes

    def encode(self) -> bytes:
        return codec.encode([self.height, self.hash, self.time, self.state_root])

    @classmethod
    def decode(cls, raw: bytes) -> Head:
        h, bh, t, sr = cbor2.loads(raw)
        return cls(h, bh, t, sr)


class Store:
    """Thin typed layer over one LevelDB. Reads may run on any thread; batches are built by the chain."""

    def __init__(self, path: str | os.PathLike, *, cache_mb: int = 128) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = plyvel.DB(
                str(p),
                create_if_missing=True,
                lru_cache_size=cache_mb << 20,
                bloom_filter_bits=10,
                write_buffer_size=32 << 20,
            )
        except plyvel.IOError as exc:
            raise StoreError(
                f"cannot open database at {p}: {_leveldb_message(exc)} (is another node using this home?)"
            ) from None
        except plyvel.CorruptionError as exc:
            raise StoreError(f"database at {p} is corrupted: {_leveldb_message(exc)}") from None
        self.path = p
        schema = self.db.get(K_SCHEMA)
        if schema is None:
            self.db.put(K_SCHEMA, str(SCHEMA_VERSION).encode())
        elif int(schema) != SCHEMA_VERSION:
            raise StoreError(f"database schema {int(schema)} not supported (expected {SCHEMA_VERSION})")

    def close(self) -> None:
        if not self.db.closed:
            self.db.close()

    # raw access ------------------------------------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def write_batch(self, puts: dict[bytes, bytes | None], *, sync: bool = True) -> None:
        """Apply all puts (None = delete) atomically. A failed write raises :class:`FatalWriteError`
        (reason ``store_write``): LevelDB applied all of the batch or none of it, and once a write has
        failed it refuses further writes, so the caller must stop, not retry or carry on."""
        try:
            self._apply(puts, sync=sync)
        except plyvel.Error as exc:
            what = f"writing the database at {self.path}"
            raise FatalWriteError.wrap(what, _leveldb_message(exc), "store_write") from None
        except OSError as exc:
            raise FatalWriteError.from_os(f"writing the database at {self.path}", exc, "store_write") from None

    def _apply(self, puts: dict[bytes, bytes | None], *, sync: bool) -> None:
        with self.db.write_batch(sync=sync) as wb:
            for k, v in puts.items():
                if v is None:
                    wb.delete(k)
                else:
                    wb.put(k, v)

    # typed reads -----------------------------------------------------------------------------------
    def head(self) -> Head | None:
        raw = self.db.get(K_HEAD)
        return Head.decode(raw) if raw is not None else None

    def genesis_hash(self) -> bytes | None:
        return self.db.get(K_GENESIS)

    def block_hash(self, height: int) -> bytes | None:
        return self.db.get(P_HASH_BY_HEIGHT + h8(height))

    def block_raw(self, block_hash: bytes) -> bytes | None:
        return self.db.get(P_BLOCK + block_hash)

    def commit_raw(self, height: int) -> bytes | None:
        return self.db.get(P_COMMIT + h8(height))

    def results_raw(self, height: int) -> bytes | None:
        return self.db.get(P_RESULTS + h8(height))

    def tx_entry(self, tx_hash: bytes) -> tuple[int, int, bytes, list] | None:
        """[height, index, raw tx, result] of a committed transaction."""
        raw = self.db.get(P_TX + tx_hash)
        if raw is None:
            return None
        height, index, tx_raw, result = cbor2.loads(raw)
        return height, index, tx_raw, result

    def account(self, pk: bytes) -> Account | None:
        raw = self.db.get(P_ACCOUNT + pk)
        if raw is None:
            return None
        bal, nonce = cbor2.loads(raw)
        return Account(bal, nonce)

    def object(self, key: bytes) -> bytes | None:
        return self.db.get(P_OBJECT + key)

    def address_txs(self, address: bytes, before: tuple[int, int] | None, limit: int) -> list[tuple[int, int, bytes]]:
        """Up to ``limit`` ``(height, index, tx hash)`` naming ``address``, newest first, strictly before
        the position ``before`` (``(height, index)``) when given."""
        prefix = P_ADDR_TX + address
        stop = prefix + (h8(before[0]) + before[1].to_bytes(4, "big") if before is not None else b"\xff" * 12)
        out: list[tuple[int, int, bytes]] = []
        with self.db.iterator(start=prefix, stop=stop, reverse=True) as it:
            for key, value in it:
                out.append((int.from_bytes(key[33:41], "big"), int.from_bytes(key[41:45], "big"), value))
                if len(out) >= limit:
                    break
        return out

    def count_prefix(self, prefix: bytes, limit: int = 1 << 62) -> int:
        n = 0
        with self.db.iterator(prefix=prefix, include_value=False) as it:
            for _ in it:
                n += 1
                if n >= limit:
                    break
        return n
