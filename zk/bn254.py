"""BN254 (alt_bn128, circom's curve) through mcl, the pairing library bundled by ``mclbn256``.

All field, curve and pairing arithmetic is mcl's (BSD-3; ``mclbn256`` is pinned exactly because
verification is consensus-critical). ``mclbn256`` loads mcl on one of mcl's other BN254 curves; this
module re-initialises the shared library once, at import, to ``MCL_BN_SNARK1`` (curve 4: the curve
of circom, snarkjs and Ethereum's precompiles) and turns on subgroup checks, so every G1/G2 point set
from outside is on the curve and in the prime-order subgroup or refused. Nothing else in the process
may initialise mcl to another curve: :func:`_init` asserts the moduli after initialising.

Only the raw ctypes entry points are used (the package's Python classes assume its own curve).
"""

from __future__ import annotations

import ctypes

from mclbn256 import mclbn256 as _mcl

LIB = _mcl.lib
#: BN254 scalar field order (the circuits' field).
R = 21888242871839275222246405745257275088548364400416034343698204186575808495617
#: BN254 base field order.
P = 21888242871839275222246405745257275088696311157297823662689037894645226208583
_MCL_BN_SNARK1 = 4

Fr = ctypes.c_uint64 * 4
G1 = ctypes.c_uint64 * 12
G2 = ctypes.c_uint64 * 24
GT = ctypes.c_uint64 * 48


def _order(fn: str) -> int:
    buf = ctypes.create_string_buffer(200)
    n = getattr(LIB, fn)(buf, 200)
    return int(buf.raw[:n].decode())


def _init() -> None:
    if LIB.mclBn_init(_MCL_BN_SNARK1, _mcl.MCLBN_COMPILED_TIME_VAR) != 0:
        raise RuntimeError("mcl refused to initialise BN254 (MCL_BN_SNARK1)")
    if _order("mclBn_getFieldOrder") != P or _order("mclBn_getCurveOrder") != R:
        raise RuntimeError("mcl is not on circom's BN254 curve")
    LIB.mclBn_verifyOrderG1(1)
    LIB.mclBn_verifyOrderG2(1)


_init()


def fr(value: int) -> Fr:
    """An mcl Fr element from a canonical integer ``0 <= value < R`` (the caller checks the range)."""
    out = Fr()
    data = value.to_bytes(32, "little")
    if LIB.mclBnFr_setLittleEndianMod(out, data, 32) != 0:
        raise ValueError("mcl refused a scalar")
    return out


def fr_int(x: Fr) -> int:
    """The canonical integer of an mcl Fr element."""
    buf = ctypes.create_string_buffer(32)
    n = LIB.mclBnFr_serialize(buf, 32, x)
    if n != 32:
        raise RuntimeError("mcl could not serialise a scalar")
    return int.from_bytes(buf.raw, "little")
