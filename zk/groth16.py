"""Groth16 over BN254, compatible with snarkjs (``protocol: groth16``, ``curve: bn128``).

For a key ``(α, β, γ, δ, IC)``, a proof ``(A, B, C)`` and public inputs ``x_1..x_n`` (each ``< R``),
:func:`verify` checks

    e(A, B) = e(α, β) · e(L, γ) · e(C, δ),   L = IC_0 + Σ x_i · IC_i,

as one product ``e(A, B) · e(−α, β) · e(−L, γ) · e(−C, δ) = 1`` (a 4-pair Miller loop and one final
exponentiation). Every node runs this in block execution, so decoding is strict and canonical: all field,
curve and pairing arithmetic is mcl's (:mod:`zk.bn254`), which refuses points off the curve or outside the
prime-order subgroup.

Wire forms (all coordinates 32-byte big-endian, each ``< P``; no point at infinity):

* proof, version 1 (257 bytes): ``0x01 ‖ A.x ‖ A.y ‖ B.x.c0 ‖ B.x.c1 ‖ B.y.c0 ‖ B.y.c1 ‖ C.x ‖ C.y``
* key, version 1: ``0x01 ‖ n_public u16 ‖ α ‖ β ‖ γ ‖ δ ‖ IC_0 … IC_n`` (``n_public <= 16``)
"""

from __future__ import annotations

import ctypes
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zk.bn254 import G1, G2, GT, LIB, Fr, P, R, fr
from zk.errors import ProofError

VERSION = 1
MAX_PUBLIC = 16
_COORD = 32
_G1_SIZE = 2 * _COORD
_G2_SIZE = 4 * _COORD
PROOF_SIZE = 1 + 2 * _G1_SIZE + _G2_SIZE
_VK_HEAD = 1 + 2

G1Affine = tuple[int, int]
#: ``(x.c0, x.c1, y.c0, y.c1)``: each Fp2 coordinate is ``c0 + c1·u``.
G2Affine = tuple[int, int, int, int]


def _bad(msg: str) -> ProofError:
    return ProofError(msg, "zk_malformed")


# --- points: canonical integers <-> mcl --------------------------------------------------------------


def _check_coords(coords: Sequence[int], what: str) -> None:
    for v in coords:
        if not 0 <= v < P:
            raise _bad(f"{what}: coordinate not canonical (>= P)")


def _g1(pt: G1Affine, what: str) -> G1:
    _check_coords(pt, what)
    out = G1()
    s = f"1 {pt[0]} {pt[1]}".encode()
    if LIB.mclBnG1_setStr(out, s, ctypes.c_size_t(len(s)), 10) != 0 or LIB.mclBnG1_isZero(out):
        raise _bad(f"{what}: not a point of G1")
    return out


def _g2(pt: G2Affine, what: str) -> G2:
    _check_coords(pt, what)
    out = G2()
    s = f"1 {pt[0]} {pt[1]} {pt[2]} {pt[3]}".encode()
    if LIB.mclBnG2_setStr(out, s, ctypes.c_size_t(len(s)), 10) != 0 or LIB.mclBnG2_isZero(out):
        raise _bad(f"{what}: not a point of G2 (off the twist or outside the subgroup)")
    return out


def _ints(data: bytes, offset: int, count: int) -> tuple[int, ...]:
    return tuple(
        int.from_bytes(data[offset + i * _COORD:offset + (i + 1) * _COORD], "big") for i in range(count)
    )


def _coord_bytes(coords: Sequence[int]) -> bytes:
    return b"".join(v.to_bytes(_COORD, "big") for v in coords)


# --- snarkjs JSON --------------------------------------------------------------------------------------


def _num(v: Any, what: str) -> int:
    """A snarkjs decimal string (or int): digits only, at most 78 of them."""
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if isinstance(v, str) and 0 < len(v) <= 78 and v.isascii() and v.isdigit():
        return int(v)
    raise _bad(f"{what}: not a decimal number")


def _json_g1(v: Any, what: str) -> G1Affine:
    if not isinstance(v, list) or len(v) != 3:
        raise _bad(f"{what}: expected [x, y, z]")
    x, y, z = (_num(c, what) for c in v)
    if z == 0:
        raise _bad(f"{what}: point at infinity")
    if z != 1:
        raise _bad(f"{what}: not affine")
    return x, y


def _json_g2(v: Any, what: str) -> G2Affine:
    if not isinstance(v, list) or len(v) != 3 or not all(isinstance(c, list) and len(c) == 2 for c in v):
        raise _bad(f"{what}: expected [[x.c0, x.c1], [y.c0, y.c1], [z.c0, z.c1]]")
    (x0, x1), (y0, y1), (z0, z1) = ((_num(a, what), _num(b, what)) for a, b in v)
    if (z0, z1) == (0, 0):
        raise _bad(f"{what}: point at infinity")
    if (z0, z1) != (1, 0):
        raise _bad(f"{what}: not affine")
    return x0, x1, y0, y1


def _to_json_g1(pt: G1Affine) -> list[str]:
    return [str(pt[0]), str(pt[1]), "1"]


def _to_json_g2(pt: G2Affine) -> list[list[str]]:
    return [[str(pt[0]), str(pt[1])], [str(pt[2]), str(pt[3])], ["1", "0"]]


def public_from_snarkjs(values: Any) -> list[int]:
    """snarkjs ``public.json`` (decimal strings) as integers; :func:`verify` checks their range."""
    if not isinstance(values, list):
        raise _bad("public inputs: expected a list")
    if len(values) > MAX_PUBLIC:
        raise _bad("public inputs: too many")
    return [_num(v, "public input") for v in values]


# --- proof ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proof:
    """A Groth16 proof; constructing one validates every point (on curve, in subgroup, not infinity)."""

    a: G1Affine
    b: G2Affine
    c: G1Affine
    _a: G1 = field(init=False, repr=False, compare=False)
    _b: G2 = field(init=False, repr=False, compare=False)
    _c: G1 = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_a", _g1(self.a, "proof A"))
        object.__setattr__(self, "_b", _g2(self.b, "proof B"))
        object.__setattr__(self, "_c", _g1(self.c, "proof C"))

    def encode(self) -> bytes:
        return bytes((VERSION,)) + _coord_bytes(self.a + self.b + self.c)

    @classmethod
    def decode(cls, data: bytes) -> Proof:
        if len(data) != PROOF_SIZE:
            raise _bad(f"proof: expected {PROOF_SIZE} bytes, got {len(data)}")
        if data[0] != VERSION:
            raise _bad(f"proof: unknown version {data[0]}")
        v = _ints(data, 1, 8)
        return cls((v[0], v[1]), (v[2], v[3], v[4], v[5]), (v[6], v[7]))

    @classmethod
    def from_snarkjs(cls, obj: Any) -> Proof:
        if not isinstance(obj, dict):
            raise _bad("proof: expected a JSON object")
        if obj.get("protocol", "groth16") != "groth16" or obj.get("curve", "bn128") != "bn128":
            raise _bad("proof: not a groth16/bn128 proof")
        try:
            a, b, c = obj["pi_a"], obj["pi_b"], obj["pi_c"]
        except KeyError as e:
            raise _bad(f"proof: missing {e}") from None
        return cls(_json_g1(a, "proof A"), _json_g2(b, "proof B"), _json_g1(c, "proof C"))

    def to_snarkjs(self) -> dict[str, Any]:
        return {
            "pi_a": _to_json_g1(self.a), "pi_b": _to_json_g2(self.b), "pi_c": _to_json_g1(self.c),
            "protocol": "groth16", "curve": "bn128",
        }


# --- verifying key -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyingKey:
    """A Groth16 verifying key, validated and prepared once (−α, the G2 points, IC as an mcl array)."""

    alpha: G1Affine
    beta: G2Affine
    gamma: G2Affine
    delta: G2Affine
    ic: tuple[G1Affine, ...]
    _neg_alpha: G1 = field(init=False, repr=False, compare=False)
    _g2s: tuple[G2, G2, G2] = field(init=False, repr=False, compare=False)
    _ic0: G1 = field(init=False, repr=False, compare=False)
    _ic_rest: ctypes.Array[G1] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= len(self.ic) <= MAX_PUBLIC + 1:
            raise _bad(f"verifying key: n_public must be 0..{MAX_PUBLIC}")
        neg_alpha = G1()
        LIB.mclBnG1_neg(neg_alpha, _g1(self.alpha, "key alpha"))
        g2s = (_g2(self.beta, "key beta"), _g2(self.gamma, "key gamma"), _g2(self.delta, "key delta"))
        ic = [_g1(p, f"key IC[{i}]") for i, p in enumerate(self.ic)]
        object.__setattr__(self, "_neg_alpha", neg_alpha)
        object.__setattr__(self, "_g2s", g2s)
        object.__setattr__(self, "_ic0", ic[0])
        object.__setattr__(self, "_ic_rest", (G1 * (len(ic) - 1))(*ic[1:]))

    @property
    def n_public(self) -> int:
        return len(self.ic) - 1

    def encode(self) -> bytes:
        coords = self.alpha + self.beta + self.gamma + self.delta + tuple(v for p in self.ic for v in p)
        return bytes((VERSION,)) + self.n_public.to_bytes(2, "big") + _coord_bytes(coords)

    def digest(self) -> bytes:
        """SHA-256 of :meth:`encode`: what the chain pins a key by."""
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def decode(cls, data: bytes) -> VerifyingKey:
        if len(data) < _VK_HEAD:
            raise _bad("verifying key: truncated")
        if data[0] != VERSION:
            raise _bad(f"verifying key: unknown version {data[0]}")
        n = int.from_bytes(data[1:3], "big")
        if n > MAX_PUBLIC:
            raise _bad(f"verifying key: n_public {n} > {MAX_PUBLIC}")
        if len(data) != _vk_size(n):
            raise _bad(f"verifying key: expected {_vk_size(n)} bytes, got {len(data)}")
        v = _ints(data, _VK_HEAD, 2 + 3 * 4 + 2 * (n + 1))
        ic = tuple((v[14 + 2 * i], v[15 + 2 * i]) for i in range(n + 1))
        beta, gamma, delta = ((v[i], v[i + 1], v[i + 2], v[i + 3]) for i in (2, 6, 10))
        return cls((v[0], v[1]), beta, gamma, delta, ic)

    @classmethod
    def from_snarkjs(cls, obj: Any) -> VerifyingKey:
        if not isinstance(obj, dict):
            raise _bad("verifying key: expected a JSON object")
        if obj.get("protocol") != "groth16" or obj.get("curve") != "bn128":
            raise _bad("verifying key: not a groth16/bn128 key")
        try:
            n, ic = obj["nPublic"], obj["IC"]
            alpha, beta, gamma, delta = obj["vk_alpha_1"], obj["vk_beta_2"], obj["vk_gamma_2"], obj["vk_delta_2"]
        except KeyError as e:
            raise _bad(f"verifying key: missing {e}") from None
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_PUBLIC:
            raise _bad(f"verifying key: nPublic must be 0..{MAX_PUBLIC}")
        if not isinstance(ic, list) or len(ic) != n + 1:
            raise _bad("verifying key: IC must have nPublic + 1 points")
        return cls(
            _json_g1(alpha, "key alpha"), _json_g2(beta, "key beta"), _json_g2(gamma, "key gamma"),
            _json_g2(delta, "key delta"), tuple(_json_g1(p, f"key IC[{i}]") for i, p in enumerate(ic)),
        )


def _vk_size(n_public: int) -> int:
    return _VK_HEAD + _G1_SIZE + 3 * _G2_SIZE + (n_public + 1) * _G1_SIZE


# --- verification --------------------------------------------------------------------------------------


def verify(vk: VerifyingKey, proof: Proof, public_inputs: Sequence[int]) -> None:
    """Raise :class:`ProofError` unless ``proof`` verifies under ``vk`` for ``public_inputs``."""
    n = vk.n_public
    if len(public_inputs) != n:
        raise _bad(f"expected {n} public inputs, got {len(public_inputs)}")
    for x in public_inputs:
        if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x < R:
            raise _bad("public input not canonical (must be an integer 0 <= x < R)")
    lin = G1()
    if n:
        LIB.mclBnG1_mulVec(lin, vk._ic_rest, (Fr * n)(*(fr(x) for x in public_inputs)), ctypes.c_size_t(n))
        LIB.mclBnG1_add(lin, lin, vk._ic0)
    else:
        ctypes.memmove(lin, vk._ic0, ctypes.sizeof(G1))
    neg_lin, neg_c = G1(), G1()
    LIB.mclBnG1_neg(neg_lin, lin)
    LIB.mclBnG1_neg(neg_c, proof._c)
    g1s = (G1 * 4)(proof._a, vk._neg_alpha, neg_lin, neg_c)
    g2s = (G2 * 4)(proof._b, *vk._g2s)
    ml, out = GT(), GT()
    LIB.mclBn_millerLoopVec(ml, g1s, g2s, ctypes.c_size_t(4))
    LIB.mclBn_finalExp(out, ml)
    if LIB.mclBnGT_isOne(out) != 1:
        raise ProofError("groth16 pairing check failed", "zk_invalid")
