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
    try:
        obj = cbor2.loads(bytes(data), max_depth=32, allow_indefinite=False, allow_duplicate_keys=False)
    except Exception as exc:  # cbor2 raises several exception types for malformed input
        raise DecodeError(f"malformed CBOR: {exc}") from None
    if canonical:
        try:
            again = cbor2.dumps(obj, canonical=True)
        except Exception as exc:
            raise DecodeError(f"unencodable CBOR value: {exc}") from None
        if again != bytes(data):
            raise DecodeError("non-canonical CBOR encoding", "non_canonical")
    return obj


def sha256(data: bytes) -> bytes:
    """SHA-256 digest."""
    return hashlib.sha256(data).digest()
