"""Canonical array encoding, result hashes and result Merkle roots (DESIGN §7).

An array is encoded as the canonical CBOR header ``[dtype_name, [dim0, dim1, ...]]`` followed directly
by the array's elements in little-endian byte order, C (row-major) order. The encoding is unique for
a given dtype, shape and content, so ``array_hash(a) = sha256(encode_array(a))`` identifies a result
(it is also the blob id of the encoded result). :func:`decode_array` is strict: it accepts only the
exact encoding that :func:`encode_array` would produce.

Result leaves: ``result_leaves(a)`` cuts an array along its first axis (one leaf per row of a 2-D
array, one per element of a 1-D array), each leaf being that slice's little-endian C-order bytes;
``result_root(a)`` is the Merkle root of the leaves (``state.types.merkle_root``).

Pure and consensus-critical (job input sizes, leaf checks and receipts depend on it), so it lives in
``state``; ``gpu.encoding`` re-exports it.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from ..codec import encode as cbor_encode
from ..errors import AitbcError
from ..types import merkle_root

#: dtypes an encoded array may carry (numpy names, which are also the names written in the header).
DTYPES: frozenset[str] = frozenset(
    {"uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32", "float64"}
)
MAX_NDIM = 8
MAX_DIM = 1 << 32  # per dimension, and for the product of the non-zero ones (numpy's shapes are intp)
MAX_HEADER_BYTES = 128  # far more than any valid header needs (at most 1 + 8 + 1 + 8 * 9 = 82)
DEFAULT_MAX_BYTES = 16 << 20


class ArrayError(AitbcError, ValueError):
    """Bytes that are not a valid canonical array encoding, or an array that cannot be encoded."""

    reason = "bad_array"


def _le(dtype_name: str) -> np.dtype:
    return np.dtype(dtype_name).newbyteorder("<")


def encode_header(dtype_name: str, shape: tuple[int, ...] | list[int]) -> bytes:
    """The canonical CBOR header ``[dtype_name, [shape...]]``."""
    if dtype_name not in DTYPES:
        raise ArrayError(f"unsupported dtype {dtype_name!r}; supported: {sorted(DTYPES)}")
    if len(shape) > MAX_NDIM:
        raise ArrayError(f"too many dimensions: {len(shape)} > {MAX_NDIM}")
    return cbor_encode([dtype_name, [int(d) for d in shape]])


def encoded_size(dtype_name: str, shape: tuple[int, ...] | list[int]) -> int:
    """Length in bytes of the encoding of an array of this dtype and shape."""
    return len(encode_header(dtype_name, shape)) + math.prod(shape) * np.dtype(dtype_name).itemsize


def encode_array(a: np.ndarray) -> bytes:
    """Canonical encoding: CBOR header ``[dtype_name, [shape...]]`` + little-endian C-order bytes."""
    a = np.asarray(a)
    name = a.dtype.name
    header = encode_header(name, a.shape)
    return header + np.asarray(a, dtype=_le(name), order="C").tobytes(order="C")


class _Reader:
    """Minimal strict reader of the CBOR header grammar (definite lengths only)."""

    def __init__(self, raw: bytes, pos: int, end: int) -> None:
        self.raw, self.pos, self.end = raw, pos, end

    def _take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise ArrayError("truncated array header")
        out = self.raw[self.pos : self.pos + n]
        self.pos += n
        return bytes(out)

    def head(self, major: int, what: str) -> int:
        (b,) = self._take(1)
        if b >> 5 != major:
            raise ArrayError(f"array header: expected {what}")
        info = b & 31
        if info < 24:
            return info
        if info > 27:
            raise ArrayError(f"array header: {what} has an indefinite or reserved length")
        return int.from_bytes(self._take(1 << (info - 24)), "big")

    def text(self, max_len: int) -> str:
        n = self.head(3, "a text string")
        if n > max_len:
            raise ArrayError("array header: dtype name too long")
        try:
            return self._take(n).decode("ascii")
        except UnicodeDecodeError:
            raise ArrayError("array header: dtype name is not ASCII") from None


def _decode_one(raw: bytes, pos: int, max_bytes: int) -> tuple[np.ndarray, int]:
    """Decode one array starting at ``raw[pos]``; returns it and the position after it."""
    rd = _Reader(raw, pos, min(len(raw), pos + MAX_HEADER_BYTES))
    if rd.head(4, "an array [dtype, shape]") != 2:
        raise ArrayError("array header: expected a 2-element array [dtype, shape]")
    name = rd.text(16)
    if name not in DTYPES:
        raise ArrayError(f"array header: unknown dtype {name!r}")
    ndim = rd.head(4, "a shape array")
    if ndim > MAX_NDIM:
        raise ArrayError(f"array header: too many dimensions ({ndim} > {MAX_NDIM})")
    shape = tuple(rd.head(0, "a non-negative integer dimension") for _ in range(ndim))
    header = raw[pos : rd.pos]
    if cbor_encode([name, list(shape)]) != header:
        raise ArrayError("array header: non-canonical CBOR encoding")
    dt = _le(name)
    if any(d > MAX_DIM for d in shape):
        raise ArrayError(f"array header: a dimension exceeds {MAX_DIM}")
    if math.prod(d for d in shape if d) > MAX_DIM:  # numpy cannot shape even an empty array beyond this
        raise ArrayError(f"array header: the non-zero dimensions multiply past {MAX_DIM}")
    count = math.prod(shape)
    nbytes = count * dt.itemsize
    if nbytes > max_bytes:
        raise ArrayError(f"array data too large: {nbytes} bytes > limit {max_bytes}")
    start = rd.pos
    if len(raw) - start < nbytes:
        raise ArrayError(f"array data truncated: need {nbytes} bytes, have {len(raw) - start}")
    arr = np.frombuffer(raw, dtype=dt, count=count, offset=start).reshape(shape)
    if not dt.isnative:
        arr = arr.astype(dt.newbyteorder("="))
    return arr, start + nbytes


def decode_arrays(raw: bytes, count: int, max_bytes: int = DEFAULT_MAX_BYTES) -> list[np.ndarray]:
    """Strictly decode exactly ``count`` concatenated array encodings filling all of ``raw``.

    Raises :class:`ArrayError` on any defect: unknown dtype, non-canonical header, wrong data length,
    trailing bytes, or more than ``max_bytes`` of input. The arrays are read-only views of ``raw``
    (on little-endian hosts); ``bytearray``/``memoryview`` input is copied first.
    """
    if isinstance(raw, bytearray | memoryview):
        raw = bytes(raw)
    if not isinstance(raw, bytes):
        raise ArrayError(f"expected bytes, got {type(raw).__name__}")
    if len(raw) > max_bytes:
        raise ArrayError(f"encoded array too large: {len(raw)} bytes > limit {max_bytes}")
    out: list[np.ndarray] = []
    pos = 0
    for _ in range(count):
        arr, pos = _decode_one(raw, pos, max_bytes)
        out.append(arr)
    if pos != len(raw):
        raise ArrayError(f"{len(raw) - pos} trailing bytes after the encoded array(s)")
    return out


def decode_array(raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Strictly decode one canonical array encoding (see :func:`decode_arrays`)."""
    return decode_arrays(raw, 1, max_bytes)[0]


def array_hash(a: np.ndarray) -> bytes:
    """SHA-256 of :func:`encode_array` — the result id and the result blob's id."""
    return hashlib.sha256(encode_array(a)).digest()


def result_leaves(a: np.ndarray) -> list[bytes]:
    """The leaves of a result: its slices along the first axis, each as little-endian C-order bytes.

    A 2-D array gives one leaf per row, a 1-D array one leaf per element; a 0-D array is one leaf.
    """
    a = np.asarray(a)
    le = np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C")
    if le.ndim == 0:
        return [le.tobytes()]
    flat = le.reshape(le.shape[0], math.prod(le.shape[1:]))
    return [row.tobytes() for row in flat]


def result_root(a: np.ndarray) -> bytes:
    """``merkle_root(result_leaves(a))``: the commitment a receipt makes to the rows of its result."""
    return merkle_root(result_leaves(a))
