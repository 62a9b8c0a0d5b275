"""Groth16 (BN254, snarkjs) verifier: the fixture proof, every refusal, the canonical wire forms."""

from __future__ import annotations

import copy
import ctypes
import json
from pathlib import Path
from typing import Any

import pytest

from zk import groth16
from zk.bn254 import G2, LIB, P, R
from zk.errors import ProofError
from zk.groth16 import Proof, VerifyingKey, public_from_snarkjs, verify

VECTORS = Path(__file__).parent / "vectors" / "groth16"
#: SHA-256 of the fixture key's canonical encoding: changes only if the wire form changes.
VK_DIGEST = "b8efddc149329d480d303fb51d906391ece4da4d63f87c724d9b03917df7833d"


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


@pytest.fixture(scope="module")
def vk() -> VerifyingKey:
    return VerifyingKey.from_snarkjs(_load("vkey.json"))


@pytest.fixture()
def proof_json() -> dict[str, Any]:
    return _load("proof.json")


@pytest.fixture()
def pub() -> list[int]:
    return public_from_snarkjs(_load("public.json"))


def _reason(fn: Any, *args: Any) -> str:
    with pytest.raises(ProofError) as e:
        fn(*args)
    return e.value.reason


def _verify_json(vk: VerifyingKey, proof: dict[str, Any], pub: list[int]) -> None:
    verify(vk, Proof.from_snarkjs(proof), pub)


def test_fixture_verifies(vk: VerifyingKey, proof_json: dict[str, Any], pub: list[int]) -> None:
    proof = Proof.from_snarkjs(proof_json)
    verify(vk, proof, pub)
    wire = proof.encode()
    assert len(wire) == groth16.PROOF_SIZE == 257
    assert Proof.decode(wire) == proof
    verify(vk, Proof.decode(wire), pub)
    assert proof.to_snarkjs() == proof_json
    assert vk.n_public == 4


def test_vkey_round_trip_and_digest(vk: VerifyingKey) -> None:
    wire = vk.encode()
    assert len(wire) == 1 + 2 + 64 + 3 * 128 + 5 * 64
    again = VerifyingKey.decode(wire)
    assert again == vk and again.encode() == wire
    assert vk.digest().hex() == VK_DIGEST == again.digest().hex()
    # a key with no public inputs (L = IC_0) round-trips and runs the pairing check
    bare = VerifyingKey(vk.alpha, vk.beta, vk.gamma, vk.delta, vk.ic[:1])
    assert bare.n_public == 0 and VerifyingKey.decode(bare.encode()) == bare
    assert _reason(verify, bare, Proof.from_snarkjs(_load("proof.json")), []) == "zk_invalid"


def test_wrong_public_inputs(vk: VerifyingKey, proof_json: dict[str, Any], pub: list[int]) -> None:
    for i in range(len(pub)):
        bad = list(pub)
        bad[i] = (bad[i] + 1) % R
        assert _reason(_verify_json, vk, proof_json, bad) == "zk_invalid"
    bad = list(pub)
    bad[2] += R  # same residue, non-canonical
    assert _reason(_verify_json, vk, proof_json, bad) == "zk_malformed"
    assert _reason(_verify_json, vk, proof_json, pub[:-1]) == "zk_malformed"
    assert _reason(_verify_json, vk, proof_json, [*pub, 0]) == "zk_malformed"
    assert _reason(_verify_json, vk, proof_json, [-1, *pub[1:]]) == "zk_malformed"


def test_tampered_proofs(vk: VerifyingKey, proof_json: dict[str, Any], pub: list[int]) -> None:
    def case(edit: Any) -> str:
        p = copy.deepcopy(proof_json)
        edit(p)
        return _reason(_verify_json, vk, p, pub)

    def off_curve(p: Any) -> None:
        p["pi_a"][1] = str((int(p["pi_a"][1]) + 1) % P)

    def negated(p: Any) -> None:
        p["pi_a"][1] = str(P - int(p["pi_a"][1]))

    def swap_ac(p: Any) -> None:
        p["pi_a"], p["pi_c"] = p["pi_c"], p["pi_a"]

    def swap_b_limbs(p: Any) -> None:
        p["pi_b"][0].reverse()

    def a_plus_p(p: Any) -> None:
        p["pi_a"][0] = str(int(p["pi_a"][0]) + P)

    def a_infinity(p: Any) -> None:
        p["pi_a"] = ["0", "1", "0"]

    def b_infinity(p: Any) -> None:
        p["pi_b"] = [["0", "0"], ["1", "0"], ["0", "0"]]

    assert case(off_curve) == "zk_malformed"
    assert case(negated) == "zk_invalid"
    assert case(swap_ac) == "zk_invalid"
    assert case(swap_b_limbs) == "zk_malformed"  # swapped limbs leave the twist
    assert case(a_plus_p) == "zk_malformed"
    assert case(a_infinity) == "zk_malformed"
    assert case(b_infinity) == "zk_malformed"


def test_every_bit_flip_refused(vk: VerifyingKey, proof_json: dict[str, Any], pub: list[int]) -> None:
    wire = Proof.from_snarkjs(proof_json).encode()
    for i in range(len(wire)):
        bad = bytearray(wire)
        bad[i] ^= 1 << (i % 8)
        with pytest.raises(ProofError):
            verify(vk, Proof.decode(bytes(bad)), pub)


def test_wire_form_refusals(proof_json: dict[str, Any], vk: VerifyingKey) -> None:
    wire = Proof.from_snarkjs(proof_json).encode()
    for bad in (b"", wire[:-1], wire + b"\0", bytes((2,)) + wire[1:], bytes((0,)) + wire[1:]):
        assert _reason(Proof.decode, bad) == "zk_malformed"
    # A.x + P still fits in 32 bytes: refused as non-canonical, not reduced
    ax = int.from_bytes(wire[1:33], "big") + P
    assert ax < 2**256
    assert _reason(Proof.decode, wire[:1] + ax.to_bytes(32, "big") + wire[33:]) == "zk_malformed"
    # all-zero coordinates (no infinity encoding exists)
    assert _reason(Proof.decode, wire[:1] + bytes(256)) == "zk_malformed"

    kw = vk.encode()
    n_bad = kw[:1] + (17).to_bytes(2, "big") + kw[3:]
    for bad in (b"", kw[:2], kw[:-1], kw + b"\0", bytes((2,)) + kw[1:], n_bad, kw[:1] + b"\0\x05" + kw[3:]):
        assert _reason(VerifyingKey.decode, bad) == "zk_malformed"


def test_vkey_json_refusals() -> None:
    good = _load("vkey.json")
    for edit in (
        lambda k: k.update(nPublic=3),
        lambda k: k.update(nPublic=17),
        lambda k: k.update(curve="bls12381"),
        lambda k: k.pop("vk_delta_2"),
        lambda k: k["IC"].pop(),
        lambda k: k["IC"][1].__setitem__(0, "x12"),
        lambda k: k["vk_alpha_1"].__setitem__(2, "0"),
    ):
        k = copy.deepcopy(good)
        edit(k)
        assert _reason(VerifyingKey.from_snarkjs, k) == "zk_malformed"
    assert _reason(public_from_snarkjs, ["1", "-2"]) == "zk_malformed"
    assert _reason(public_from_snarkjs, "1") == "zk_malformed"


# --- a point on the twist y^2 = x^3 + 3/(9+u) but outside the r-order subgroup -------------------------

_Fp2 = ctypes.c_uint64 * 8


def _fp2(a: int, b: int) -> _Fp2:
    z = _Fp2()
    for off, v in ((0, a), (32, b)):
        s = str(v).encode()
        assert LIB.mclBnFp_setStr(ctypes.byref(z, off), s, ctypes.c_size_t(len(s)), 10) == 0
    return z


def _fp2_ints(z: _Fp2) -> tuple[int, int]:
    out = []
    for off in (0, 32):
        buf = ctypes.create_string_buffer(100)
        n = LIB.mclBnFp_getStr(buf, ctypes.c_size_t(100), ctypes.byref(z, off), 10)
        out.append(int(buf.raw[:n].decode()))
    return out[0], out[1]


def _twist_point_outside_subgroup() -> tuple[int, int, int, int]:
    b_twist = _Fp2()
    LIB.mclBnFp2_div(b_twist, _fp2(3, 0), _fp2(9, 1))
    for k in range(1, 100):
        x, x2, x3, rhs, y = _fp2(k, 1), _Fp2(), _Fp2(), _Fp2(), _Fp2()
        LIB.mclBnFp2_sqr(x2, x)
        LIB.mclBnFp2_mul(x3, x2, x)
        LIB.mclBnFp2_add(rhs, x3, b_twist)
        if LIB.mclBnFp2_squareRoot(y, rhs) == 0:
            return (*_fp2_ints(x), *_fp2_ints(y))
    raise AssertionError("no twist point found")


def test_g2_outside_subgroup_refused(vk: VerifyingKey, proof_json: dict[str, Any], pub: list[int]) -> None:
    pt = _twist_point_outside_subgroup()
    # it is on the twist: mcl accepts it once the order check is off
    g = G2()
    s = " ".join(map(str, (1, *pt))).encode()
    LIB.mclBn_verifyOrderG2(0)
    try:
        assert LIB.mclBnG2_setStr(g, s, ctypes.c_size_t(len(s)), 10) == 0
    finally:
        LIB.mclBn_verifyOrderG2(1)
    assert LIB.mclBnG2_isValidOrder(g) == 0
    # ...and refused by the verifier, in JSON, on the wire and in a key
    p = copy.deepcopy(proof_json)
    p["pi_b"] = [[str(pt[0]), str(pt[1])], [str(pt[2]), str(pt[3])], ["1", "0"]]
    assert _reason(Proof.from_snarkjs, p) == "zk_malformed"
    wire = Proof.from_snarkjs(proof_json).encode()
    forged = wire[:65] + b"".join(v.to_bytes(32, "big") for v in pt) + wire[193:]
    assert _reason(Proof.decode, forged) == "zk_malformed"
    kw = vk.encode()
    assert _reason(VerifyingKey.decode, kw[:67] + forged[65:193] + kw[195:]) == "zk_malformed"
