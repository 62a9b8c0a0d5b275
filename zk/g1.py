"""BN254 G1 through mcl: the group of the sealed-bid Pedersen commitments and range proofs.

Why not ristretto255 (the DLEQ and sealing group): a range proof's check is one multi-scalar
multiplication, and libsodium has none, so every term costs a full scalar multiplication plus an
encode/decode per point operation. mcl (already loaded for Groth16, pinned exactly) has
``mclBnG1_mulVec``; its points stay in mcl's representation between operations.

Points travel *uncompressed*, 64 bytes ``x ‖ y`` (each 32 bytes little-endian, mcl's
``IoEcAffineSerialize`` form); the identity is 64 zero bytes. Decoding asks mcl to check that each
coordinate is canonical (below ``p``) and then checks the curve equation ``y² = x³ + 3`` with mcl's
field operations. No subgroup check is needed: BN254's G1 has cofactor 1 (every point of the curve
over ``Fp`` has order ``R``). mcl's own ``isValid`` adds a scalar-multiplication order check (~70 µs),
and decompressing a 32-byte point costs a square root (~85 µs); the on-curve check costs ~3 µs.

Scalars are Python integers modulo ``R``; on the wire, 32 bytes little-endian, canonical (below
``R``). No field or curve arithmetic is written here: all of it is mcl's.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from collections.abc import Sequence

from zk import bn254
from zk.errors import ProofError

LIB = bn254.LIB
#: The order of G1 (BN254's scalar field).
R = bn254.R
POINT_BYTES = 64
SCALAR_BYTES = 32
IDENTITY = bytes(POINT_BYTES)
_IO_EC_AFFINE_SERIALIZE = 1 << 12
_Fp = ctypes.c_uint64 * 4
G1 = bn254.G1
_FP_BYTES = ctypes.sizeof(_Fp)


def _fp_const(value: int) -> ctypes.Array:
    out = _Fp()
    LIB.mclBnFp_setInt32(out, value)  # void in mcl's C API
    return out


_CURVE_B = _fp_const(3)
_FP_ONE = _fp_const(1)


# -------------------------------------------------------------------------------------------- points
def _coords(p: ctypes.Array) -> tuple[ctypes.Array, ctypes.Array, ctypes.Array]:
    return (_Fp.from_buffer(p, 0), _Fp.from_buffer(p, _FP_BYTES), _Fp.from_buffer(p, 2 * _FP_BYTES))


def _on_curve(x: ctypes.Array, y: ctypes.Array) -> bool:
    lhs, rhs = _Fp(), _Fp()
    LIB.mclBnFp_sqr(lhs, y)
    LIB.mclBnFp_sqr(rhs, x)
    LIB.mclBnFp_mul(rhs, rhs, x)
    LIB.mclBnFp_add(rhs, rhs, _CURVE_B)
    return LIB.mclBnFp_isEqual(lhs, rhs) == 1


def decode(data: bytes, what: str = "point") -> ctypes.Array:
    """An mcl G1 point from its 64-byte encoding, or :class:`ProofError` (``zk_malformed``)."""
    if not isinstance(data, bytes) or len(data) != POINT_BYTES:
        raise ProofError(f"{what}: expected {POINT_BYTES} bytes", "zk_malformed")
    out = G1()
    if data == IDENTITY:
        LIB.mclBnG1_clear(out)
        return out
    x, y, z = _coords(out)
    if LIB.mclBnFp_deserialize(x, data[:32], 32) != 32 or LIB.mclBnFp_deserialize(y, data[32:], 32) != 32:
        raise ProofError(f"{what}: coordinate not below the field modulus", "zk_malformed")
    if not _on_curve(x, y):
        raise ProofError(f"{what}: not a point of BN254 G1", "zk_malformed")
    ctypes.memmove(z, _FP_ONE, _FP_BYTES)
    return out


def encode(p: ctypes.Array) -> bytes:
    buf = ctypes.create_string_buffer(2 * POINT_BYTES)
    n = LIB.mclBnG1_getStr(buf, len(buf), p, _IO_EC_AFFINE_SERIALIZE)
    if n != POINT_BYTES:
        raise RuntimeError("mcl could not serialise a G1 point")
    return buf.raw[:POINT_BYTES]


def is_identity(p: ctypes.Array) -> bool:
    return LIB.mclBnG1_isZero(p) == 1


def _hash_to_point(label: bytes) -> ctypes.Array:
    out = G1()
    msg = b"aitbc/zk/v2/generator/" + label
    if LIB.mclBnG1_hashAndMapTo(out, msg, len(msg)) != 0 or is_identity(out):
        raise RuntimeError("mcl could not map to G1")
    LIB.mclBnG1_normalize(out, out)
    return out


MAX_GENERATORS = 64
#: ``V`` carries values, ``B`` blindings, ``G[i]`` bit ``i`` of a range proof's bit vector. All are
#: hashed to the curve, so nobody knows a discrete-log relation between any two of them.
V = _hash_to_point(b"V")
B = _hash_to_point(b"B")
G = tuple(_hash_to_point(b"G/" + str(i).encode()) for i in range(MAX_GENERATORS))


def add(p: ctypes.Array, q: ctypes.Array) -> ctypes.Array:
    out = G1()
    LIB.mclBnG1_add(out, p, q)
    return out


def sub(p: ctypes.Array, q: ctypes.Array) -> ctypes.Array:
    out = G1()
    LIB.mclBnG1_sub(out, p, q)
    return out


def msm(points: Sequence[ctypes.Array], scalars: Sequence[int]) -> ctypes.Array:
    """``Σ scalars[i]·points[i]`` in one mcl multi-scalar multiplication (scalars reduced mod ``R``)."""
    n = len(points)
    if n != len(scalars) or n == 0:
        raise ValueError("msm needs as many scalars as points, and at least one")
    xs = (G1 * n)()
    ys = (bn254.Fr * n)()
    for i, (p, s) in enumerate(zip(points, scalars, strict=True)):
        ctypes.memmove(xs[i], p, ctypes.sizeof(G1))
        if LIB.mclBnFr_setLittleEndianMod(ys[i], (s % R).to_bytes(32, "little"), 32) != 0:
            raise RuntimeError("mcl refused a scalar")
    out = G1()
    LIB.mclBnG1_mulVec(out, xs, ys, n)
    return out


# ------------------------------------------------------------------------------------------- scalars
def scalar(data: bytes, what: str = "scalar") -> int:
    """The integer of a canonical 32-byte little-endian scalar below ``R``."""
    if not isinstance(data, bytes) or len(data) != SCALAR_BYTES:
        raise ProofError(f"{what}: expected {SCALAR_BYTES} bytes", "zk_malformed")
    v = int.from_bytes(data, "little")
    if v >= R:
        raise ProofError(f"{what}: not a canonical scalar", "zk_malformed")
    return v


def scalar_bytes(value: int) -> bytes:
    return (value % R).to_bytes(SCALAR_BYTES, "little")


def hash_to_scalar(data: bytes) -> int:
    """A uniform scalar from SHA-512 of ``data`` (a 512-bit integer reduced mod ``R``: bias < 2^-250)."""
    return int.from_bytes(hashlib.sha512(data).digest(), "little") % R


def random_scalar() -> int:
    return int.from_bytes(os.urandom(64), "little") % R
