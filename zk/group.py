"""The ristretto255 group through libsodium (``rbcl``): canonical scalars and points, checked on entry.

Everything here takes and returns 32-byte strings. libsodium's point addition does not validate its
inputs, so every point that comes from outside goes through :func:`point` first, and every scalar
through :func:`scalar` (canonical: below the group order ``L``). No curve or field arithmetic is
written here: all of it is libsodium's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import rbcl

from zk.errors import ProofError

SCALAR_BYTES = 32
POINT_BYTES = 32
#: Order of the ristretto255 group.
L = 2**252 + 27742317777372353535851937790883648493
IDENTITY = bytes(32)
#: The standard base point ``B`` (blinding factors multiply it: libsodium's fixed-base path is faster).
B = rbcl.crypto_scalarmult_ristretto255_base(b"\x01" + bytes(31))
#: The second generator ``H`` (values multiply it), derived by hashing to the group, so nobody knows
#: ``log_B(H)``.
H = rbcl.crypto_core_ristretto255_from_hash(hashlib.sha512(b"aitbc/zk/v1/generator/H").digest())
ZERO = bytes(32)
ONE = b"\x01" + bytes(31)


def scalar(data: bytes, what: str = "scalar") -> bytes:
    """``data`` if it is a canonical scalar encoding (32 bytes, little-endian, below ``L``)."""
    if not isinstance(data, bytes) or len(data) != SCALAR_BYTES:
        raise ProofError(f"{what}: expected {SCALAR_BYTES} bytes", "zk_malformed")
    if int.from_bytes(data, "little") >= L:
        raise ProofError(f"{what}: not a canonical scalar", "zk_malformed")
    return data


def point(data: bytes, what: str = "point") -> bytes:
    """``data`` if it is a canonical ristretto255 encoding (the identity included)."""
    if not isinstance(data, bytes) or len(data) != POINT_BYTES:
        raise ProofError(f"{what}: expected {POINT_BYTES} bytes", "zk_malformed")
    if not rbcl.crypto_core_ristretto255_is_valid_point(data):
        raise ProofError(f"{what}: not a canonical ristretto255 point", "zk_malformed")
    return data


def from_int(value: int) -> bytes:
    """The scalar ``value mod L``."""
    return (value % L).to_bytes(SCALAR_BYTES, "little")


def to_int(s: bytes) -> int:
    return int.from_bytes(s, "little")


def hash_to_scalar(data: bytes) -> bytes:
    """A uniform scalar from a 64-byte SHA-512 digest of ``data`` (wide reduction)."""
    return rbcl.crypto_core_ristretto255_scalar_reduce(hashlib.sha512(data).digest())


def random_scalar() -> bytes:
    return rbcl.crypto_core_ristretto255_scalar_random()


def counter_scalars(seed: bytes) -> Callable[[], bytes]:
    """Deterministic "random" scalars ``H(seed ‖ 1), H(seed ‖ 2), …`` — for golden vectors and fuzz
    corpora only: a real proof draws its nonces with :func:`random_scalar`."""
    n = 0

    def draw() -> bytes:
        nonlocal n
        n += 1
        return hash_to_scalar(seed + n.to_bytes(8, "big"))

    return draw


def add(p: bytes, q: bytes) -> bytes:
    return rbcl.crypto_core_ristretto255_add(p, q)


def sub(p: bytes, q: bytes) -> bytes:
    return rbcl.crypto_core_ristretto255_sub(p, q)


def mul(s: bytes, p: bytes) -> bytes:
    """``s·p`` (zero scalar and identity allowed)."""
    if p == IDENTITY:
        return IDENTITY
    return rbcl.crypto_scalarmult_ristretto255_allow_scalar_zero(s, p)


def mul_base(s: bytes) -> bytes:
    """``s·B`` (zero scalar allowed)."""
    return rbcl.crypto_scalarmult_ristretto255_base_allow_scalar_zero(s)


def s_add(a: bytes, b: bytes) -> bytes:
    return rbcl.crypto_core_ristretto255_scalar_add(a, b)


def s_sub(a: bytes, b: bytes) -> bytes:
    return rbcl.crypto_core_ristretto255_scalar_sub(a, b)


def s_mul(a: bytes, b: bytes) -> bytes:
    return rbcl.crypto_core_ristretto255_scalar_mul(a, b)


def s_neg(a: bytes) -> bytes:
    return rbcl.crypto_core_ristretto255_scalar_negate(a)
