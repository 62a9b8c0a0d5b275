"""Canonical CBOR (RFC 8949 §4.2 core deterministic encoding) with size bounds and strict decoding.

Everything hashed, signed, stored or sent between peers goes through :func:`encode`. :func:`decode`
bounds the input size first, rejects indefinite-length items and duplicate keys, and refuses bytes that
are not exactly the canonical encoding of what they decode to (so a hash or signature over the
bytes can never be malleated).
"""

from __future__ import annotations

import hashlib
from typing import Any

import cbor2

from .errors import DecodeError

DEFAULT_MAX_BYTES = 1 << 20
#: Inputs above this size are walked (heads only, byte strings skipped) before cbor2 builds objects, and
#: refused beyond :data:`MAX_ITEMS` items: 16 MiB of one-byte empty maps would otherwise become 16 M
#: Python dicts (about 1 GB). Every valid object is far below the bound (a block holds at most
#: ``max_block_txs`` = 20,000 transactions, each one byte-string item).
SCAN_ABOVE_BYTES = 1 << 20
MAX_ITEMS = 1_000_000
_ARG_BYTES = {24: 1, 25: 2, 26: 4, 27: 8}


def encode(obj: Any) -> bytes:
    """Canonical CBOR encoding of ``obj`` (maps with text keys, ints, bytes, text, lists, bools, None)."""
    return cbor2.dumps(obj, canonical=True)


def decode(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, canonical: bool = True) -> Any:
    """Decode canonical CBOR. Raises :class:`DecodeError` with the reason on any defect."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise DecodeError(f"encoding too large: {len(data)} bytes > limit {max_bytes}", "too_large")
    if len(data) == 0:
        raise DecodeError("empty input")
    data = bytes(data)
    if len(data) > SCAN_ABOVE_BYTES:
        items = count_items(data, MAX_ITEMS)
        if items > MAX_ITEMS:
            raise DecodeError(f"more than {MAX_ITEMS} CBOR items in {len(data)} bytes", "too_many_items")
    try:
        obj = cbor2.loads(data, max_depth=32, allow_indefinite=False, allow_duplicate_keys=False)
    except Exception as exc:  # cbor2 raises several exception types for malformed input
        raise DecodeError(f"malformed CBOR: {exc}") from None
    if canonical:
        try:
            again = cbor2.dumps(obj, canonical=True)
        except Exception as exc:
            raise DecodeError(f"unencodable CBOR value: {exc}") from None
        if again != data:
            raise DecodeError("non-canonical CBOR encoding", "non_canonical")
    return obj


def count_items(data: bytes, limit: int) -> int:
    """The number of data items in the CBOR ``data``, counting no further than ``limit + 1``: a walk over
    the heads that jumps over byte and text string payloads, so its cost is bounded by ``limit`` items
    whatever the input's size. Malformed input (truncated, indefinite, reserved) stops the walk early;
    cbor2 then reports the defect."""
    n, pos, end, pending = 0, 0, len(data), 1
    while pending and pos < end:
        pending -= 1
        n += 1
        if n > limit:
            return n
        ib = data[pos]
        pos += 1
        major, ai = ib >> 5, ib & 0x1F
        if ai < 24:
            arg = ai
        elif ai in _ARG_BYTES:
            k = _ARG_BYTES[ai]
            arg = int.from_bytes(data[pos : pos + k], "big")
            pos += k
        else:
            return n  # indefinite length or reserved: refused by the decoder
        if major in (2, 3):
            pos += arg
        elif major == 4:
            pending += arg
        elif major == 5:
            pending += 2 * arg
        elif major == 6:
            pending += 1
        if pending > end - pos + 1:  # more items announced than bytes left: malformed, let cbor2 say so
            return n
    return n


def sha256(data: bytes) -> bytes:
    """SHA-256 digest."""
    return hashlib.sha256(data).digest()
