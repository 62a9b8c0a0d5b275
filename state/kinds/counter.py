"""Counter-based generator of job inputs, bit-identical in NumPy, pure Python and CUDA.

Element ``idx`` of stream ``stream`` under a 64-bit ``key`` is::

    u32(key, stream, idx) = low32(splitmix64(key XOR (stream << 40 | idx)))

    splitmix64(x): z = x + 0x9E3779B97F4A7C15
                   z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
                   z = (z ^ (z >> 27)) * 0x94D049BB133111EB
                   return z ^ (z >> 31)            (all mod 2**64)

with ``idx < 2**40`` and ``stream < 2**24``. A matrix of ``rows x cols`` takes element ``(i, j)`` from
``idx = i * cols + j``. Floats are ``f32(u) = (u >> 8) * 2**-23 - 1``: a value in ``[-1, 1)`` that is
exactly representable in float32 (and so exact whatever the rounding or FMA contraction).
The key is ``le64(sha256(b"aitbc/gpu/<kind>/v<version>\\x00" + seed)[:8])``.
The CUDA twin is ``gpu/kernels/counter.cu``. Consensus-critical (leaf checks of generated jobs use
it), so it lives in ``state``; the ``gpu`` tag in the key is part of the definition.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
STREAM_SHIFT = 40
F32_SCALE = 2.0**-23


def derive_key(kind_name: str, version: int, seed: bytes) -> int:
    """The 64-bit generator key of a job of ``kind_name`` v``version`` with ``seed``."""
    tag = f"aitbc/gpu/{kind_name}/v{version}".encode() + b"\x00"
    return int.from_bytes(hashlib.sha256(tag + seed).digest()[:8], "little")


def splitmix64(x: int) -> int:
    """Pure-Python splitmix64 finaliser (the reference for the vectorised and CUDA versions)."""
    z = (x + GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    return z ^ (z >> 31)


def u32_at(key: int, stream: int, idx: int) -> int:
    """One generated uint32 (pure Python)."""
    return splitmix64(key ^ ((stream << STREAM_SHIFT) | idx)) & 0xFFFFFFFF


def f32_at(key: int, stream: int, idx: int) -> float:
    """One generated float in [-1, 1) (pure Python; exactly a float32 value)."""
    return (u32_at(key, stream, idx) >> 8) * F32_SCALE - 1.0


def u32_range(key: int, stream: int, start: int, count: int) -> np.ndarray:
    """Elements ``start .. start+count-1`` of a stream as a uint32 array (vectorised, in place)."""
    x = np.arange(start, start + count, dtype=np.uint64)
    x |= np.uint64(stream << STREAM_SHIFT)
    x ^= np.uint64(key)
    x += np.uint64(GOLDEN)
    t = x >> np.uint64(30)
    x ^= t
    x *= np.uint64(MIX1)
    np.right_shift(x, np.uint64(27), out=t)
    x ^= t
    x *= np.uint64(MIX2)
    np.right_shift(x, np.uint64(31), out=t)
    x ^= t
    return x.astype(np.uint32)


def to_f32(u: np.ndarray) -> np.ndarray:
    """``(u >> 8) * 2**-23 - 1`` in float32 (exact)."""
    f = (u >> np.uint32(8)).astype(np.float32)
    f *= np.float32(F32_SCALE)
    f -= np.float32(1.0)
    return f


@functools.lru_cache(maxsize=8)
def u32_matrix(key: int, stream: int, rows: int, cols: int) -> np.ndarray:
    """A generated ``rows x cols`` uint32 matrix (cached, read-only)."""
    m = u32_range(key, stream, 0, rows * cols).reshape(rows, cols)
    m.flags.writeable = False
    return m


@functools.lru_cache(maxsize=8)
def f32_matrix(key: int, stream: int, rows: int, cols: int) -> np.ndarray:
    """A generated ``rows x cols`` float32 matrix with values in [-1, 1) (cached, read-only)."""
    m = to_f32(u32_range(key, stream, 0, rows * cols)).reshape(rows, cols)
    m.flags.writeable = False
    return m
