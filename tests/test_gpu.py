"""GPU package: Merkle proofs, array encoding, job kinds (references, leaf checks, full checks, params),
backend selection, the executor, the probe, the CUDA kernels on a CPU emulator, and — on a machine
with PyCUDA and a device — the PyCUDA backend against NumPy (``@pytest.mark.gpu``)."""

from __future__ import annotations

import hashlib
import importlib.machinery
import math
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import trio

from gpu import backend as gpu_backend
from gpu.backend import BackendUnavailable, NumpyBackend, probe_pycuda, select_backend
from gpu.encoding import (
    ArrayError,
    array_hash,
    decode_array,
    decode_arrays,
    encode_array,
    result_leaves,
    result_root,
)
from gpu.executor import Executor
from gpu.kernels import source
from gpu.kinds import KINDS, JobExecutionError, JobParamError, get_kind
from gpu.kinds.base import Deadline
from gpu.probe import format_probe, probe
from state.kinds import counter
from state.merkle import merkle_proof, verify_merkle_proof
from state.types import merkle_root

SEED = bytes(range(32))
SEED2 = b"\xaa" * 32
MM = get_kind("matmul-u32")
HC = get_kind("hash-chain")
MLP = get_kind("mlp-f32")
MiB = 1 << 20

# -- independent slow references (written from the documented definitions) -----------------------------

M64 = (1 << 64) - 1


def ref_key(kind: str, seed: bytes) -> int:
    return int.from_bytes(hashlib.sha256(f"aitbc/gpu/{kind}/v1".encode() + b"\x00" + seed).digest()[:8], "little")


def ref_u32(key: int, stream: int, idx: int) -> int:
    z = ((key ^ ((stream << 40) | idx)) + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return (z ^ (z >> 31)) & 0xFFFFFFFF


def ref_f32(key: int, stream: int, idx: int) -> float:
    return (ref_u32(key, stream, idx) >> 8) / 2**23 - 1.0


def ref_matrix_u32(key: int, stream: int, rows: int, cols: int) -> list[list[int]]:
    return [[ref_u32(key, stream, i * cols + j) for j in range(cols)] for i in range(rows)]


_K = [
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
]
_IV = [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19]


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & 0xFFFFFFFF


def ref_sha256_block(w16: list[int]) -> list[int]:
    """One SHA-256 compression from the IV (pure Python), as the CUDA kernel does it."""
    w = list(w16)
    for i in range(16, 64):
        s0 = _rotr(w[i - 15], 7) ^ _rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
        s1 = _rotr(w[i - 2], 17) ^ _rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
        w.append((w[i - 16] + s0 + w[i - 7] + s1) & 0xFFFFFFFF)
    a, b, c, d, e, f, g, h = _IV
    for i in range(64):
        t1 = (h + (_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + ((e & f) ^ (~e & g)) + _K[i] + w[i]) & 0xFFFFFFFF
        t2 = ((_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) & 0xFFFFFFFF
        a, b, c, d, e, f, g, h = (t1 + t2) & 0xFFFFFFFF, a, b, c, (d + t1) & 0xFFFFFFFF, e, f, g
    return [(x + y) & 0xFFFFFFFF for x, y in zip(_IV, (a, b, c, d, e, f, g, h), strict=True)]


def ref_chain(seed: bytes, j: int, iterations: int) -> bytes:
    """The kernel's message layout: 40-byte start block, then 32-byte blocks (pure-Python SHA-256)."""
    seed_words = [int.from_bytes(seed[4 * i : 4 * i + 4], "big") for i in range(8)]
    j_word = int.from_bytes(j.to_bytes(4, "little"), "big")
    st = ref_sha256_block(seed_words + [j_word, 0, 0x80000000, 0, 0, 0, 0, 320])
    for _ in range(iterations):
        st = ref_sha256_block(st + [0x80000000, 0, 0, 0, 0, 0, 0, 256])
    return b"".join(x.to_bytes(4, "big") for x in st)


# -- Merkle proofs -------------------------------------------------------------------------------------


def test_merkle_proofs_verify_for_every_index_of_1_to_33_leaves() -> None:
    for count in range(1, 34):
        leaves = [hashlib.sha256(bytes([count, i])).digest()[: 1 + i % 40] for i in range(count)]
        root = merkle_root(leaves)
        for i in range(count):
            proof = merkle_proof(leaves, i)
            assert len(proof) <= max(1, math.ceil(math.log2(count)))
            assert verify_merkle_proof(root, leaves[i], i, count, proof), (count, i)
            assert not verify_merkle_proof(root, leaves[i] + b"x", i, count, proof)
            if count > 1:
                assert not verify_merkle_proof(root, leaves[i], (i + 1) % count, count, proof)
                bad = list(proof)
                k = i % len(bad)
                bad[k] = bytes([bad[k][0] ^ 1]) + bad[k][1:]
                assert not verify_merkle_proof(root, leaves[i], i, count, bad)
                assert not verify_merkle_proof(root, leaves[i], i, count, proof[:-1])
            assert not verify_merkle_proof(root, leaves[i], i, count, [*proof, b"\x00" * 32])


def test_merkle_proof_rejects_malformed_arguments() -> None:
    leaves = [b"a", b"b", b"c"]
    root, proof = merkle_root(leaves), merkle_proof(leaves, 2)
    assert verify_merkle_proof(root, b"c", 2, 3, proof)
    assert not verify_merkle_proof(root, b"c", 3, 3, proof)
    assert not verify_merkle_proof(root, b"c", -1, 3, proof)
    assert not verify_merkle_proof(root[:31], b"c", 2, 3, proof)
    assert not verify_merkle_proof(root, b"c", 2, 3, [proof[0][:31]])
    assert not verify_merkle_proof(root, b"c", True, 3, proof)  # type: ignore[arg-type]
    assert merkle_root([]) == b"\x00" * 32
    with pytest.raises(IndexError):
        merkle_proof([], 0)
    with pytest.raises(IndexError):
        merkle_proof(leaves, 3)


# -- encoding ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(12, dtype=np.uint32).reshape(3, 4),
        np.arange(5, dtype=np.int64) - 2,
        np.array(3.5, dtype=np.float64),
        np.zeros((0, 4), dtype=np.uint8),
        np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4),
        np.arange(6, dtype=">u2").reshape(2, 3),  # big-endian input is written little-endian
        np.arange(6, dtype=np.int16).reshape(2, 3).T,  # non-contiguous
    ],
)
def test_encoding_round_trip(arr: np.ndarray) -> None:
    raw = encode_array(arr)
    back = decode_array(raw)
    assert back.dtype == arr.dtype.newbyteorder("=") and back.shape == arr.shape
    assert np.array_equal(back, arr)
    assert encode_array(back) == raw
    assert array_hash(arr) == hashlib.sha256(raw).digest()
    assert raw.endswith(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes())


def test_encoding_layout_is_cbor_header_then_le_bytes() -> None:
    raw = encode_array(np.array([[1, 2]], dtype=np.uint32))
    assert raw == b"\x82\x66uint32\x82\x01\x02" + b"\x01\x00\x00\x00\x02\x00\x00\x00"


@pytest.mark.parametrize(
    "raw,match",
    [
        (b"\x82\x65uint8\x81\x03\x01\x02", "truncated"),  # 2 of 3 data bytes
        (b"\x82\x65uint8\x81\x03\x01\x02\x03\x04", "trailing"),
        (b"\x82\x65uint8\x81\x18\x03\x01\x02\x03", "non-canonical"),  # 3 written as 0x18 0x03
        (b"\x82\x64bool\x81\x01\x01", "unknown dtype"),
        (b"\x82\x67float16\x81\x01\x00\x00", "unknown dtype"),
        (b"\x9f\x65uint8\x81\x01\x01\xff", "indefinite"),
        (b"\x82\x45uint8\x81\x01\x01", "text"),  # dtype as a byte string
        (b"\x82\x65uint8\x81\x20", "non-negative"),  # dimension -1
        (b"\x83\x65uint8\x81\x01\x01\x01", "2-element"),
        (b"\x82\x65uint8\x89" + b"\x01" * 9 + b"\x01", "too many"),
        (b"\x82\x65uint8\xa1\x01\x01\x01", "shape"),  # shape as a map
        (b"", "truncated"),
    ],
)
def test_decode_array_is_strict(raw: bytes, match: str) -> None:
    with pytest.raises(ArrayError, match=match):
        decode_array(raw)


def test_decode_array_bounds_and_concatenation() -> None:
    a, b = np.arange(6, dtype=np.uint32).reshape(2, 3), np.ones((3, 1), dtype=np.float32)
    raw = encode_array(a) + encode_array(b)
    x, y = decode_arrays(raw, 2)
    assert np.array_equal(x, a) and np.array_equal(y, b)
    with pytest.raises(ArrayError, match="trailing"):
        decode_array(raw)
    with pytest.raises(ArrayError, match="too large"):
        decode_array(encode_array(np.zeros(100, np.uint8)), max_bytes=50)
    with pytest.raises(ArrayError, match="unsupported dtype"):
        encode_array(np.zeros(3, dtype=bool))


def test_result_leaves_and_root() -> None:
    c = np.arange(12, dtype=np.uint32).reshape(3, 4)
    leaves = result_leaves(c)
    assert leaves == [c[i].astype("<u4").tobytes() for i in range(3)]
    assert result_root(c) == merkle_root(leaves)
    assert result_leaves(np.array([1, 2], dtype=np.uint16)) == [b"\x01\x00", b"\x02\x00"]
    assert result_leaves(np.zeros((2, 2, 2), np.uint8)) == [b"\x00" * 4] * 2


# -- the counter generator -------------------------------------------------------------------------------


def test_counter_generator_matches_pure_python() -> None:
    key = ref_key("matmul-u32", SEED)
    assert counter.derive_key("matmul-u32", 1, SEED) == key
    for stream, start in ((0, 0), (1, 5), (4, 1 << 39)):
        got = counter.u32_range(key, stream, start, 50).tolist()
        assert got == [ref_u32(key, stream, start + i) for i in range(50)]
        f = counter.to_f32(np.array(got, dtype=np.uint32))
        assert f.dtype == np.float32
        assert f.tolist() == [ref_f32(key, stream, start + i) for i in range(50)]  # exact
    m = counter.f32_matrix(key, 2, 3, 4)
    assert not m.flags.writeable and float(m.min()) >= -1.0 and float(m.max()) < 1.0


# -- kinds: NumPy references against slow pure-Python computations ----------------------------------------


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (3, 5, 7), (8, 2, 9)])
def test_matmul_reference_matches_pure_python(m: int, n: int, k: int) -> None:
    params = {"m": m, "n": n, "k": k, "seed": SEED}
    key = ref_key("matmul-u32", SEED)
    a, b = ref_matrix_u32(key, 0, m, k), ref_matrix_u32(key, 1, k, n)
    want = [[sum(a[i][t] * b[t][j] for t in range(k)) % (1 << 32) for j in range(n)] for i in range(m)]
    got = MM.execute_numpy(params, None)
    assert got.dtype == np.uint32 and got.tolist() == want
    # The same product from an explicit input A‖B.
    p2 = {"m": m, "n": n, "k": k}
    raw = encode_array(np.array(a, dtype=np.uint32)) + encode_array(np.array(b, dtype=np.uint32))
    MM.validate(p2, len(raw))
    assert MM.execute_numpy(p2, raw).tolist() == want


def test_matmul_wraps_mod_2_32() -> None:
    a = np.full((2, 3), 0xFFFFFFFF, dtype=np.uint32)
    b = np.full((3, 2), 0xFFFFFFFF, dtype=np.uint32)
    raw = encode_array(a) + encode_array(b)
    got = MM.execute_numpy({"m": 2, "n": 2, "k": 3}, raw)
    assert got.tolist() == [[(3 * 0xFFFFFFFF**2) % (1 << 32)] * 2] * 2


@pytest.mark.parametrize("chains,iterations", [(1, 1), (3, 2), (5, 4)])
def test_hash_chain_reference_matches_pure_python_sha256(chains: int, iterations: int) -> None:
    params = {"chains": chains, "iterations": iterations, "seed": SEED}
    got = HC.execute_numpy(params, None)
    assert got.shape == (chains, 32) and got.dtype == np.uint8
    for j in range(chains):
        assert got[j].tobytes() == ref_chain(SEED, j, iterations)


def test_mlp_reference_matches_pure_python() -> None:
    b, i, h, o = 3, 5, 4, 2
    params = {"batch": b, "d_in": i, "d_hidden": h, "d_out": o, "seed": SEED}
    key = ref_key("mlp-f32", SEED)
    x = [[ref_f32(key, 0, r * i + c) for c in range(i)] for r in range(b)]
    w1 = [[ref_f32(key, 1, r * h + c) for c in range(h)] for r in range(i)]
    b1 = [ref_f32(key, 2, c) for c in range(h)]
    w2 = [[ref_f32(key, 3, r * o + c) for c in range(o)] for r in range(h)]
    b2 = [ref_f32(key, 4, c) for c in range(o)]
    want = []
    for r in range(b):
        hid = [max(0.0, sum(x[r][t] * w1[t][c] for t in range(i)) + b1[c]) for c in range(h)]
        want.append([sum(hid[t] * w2[t][c] for t in range(h)) + b2[c] for c in range(o)])
    got = MLP.execute_numpy(params, None)
    assert got.dtype == np.float32 and got.shape == (b, o)
    assert np.allclose(got, np.array(want), rtol=1e-5, atol=1e-6)
    # An explicit input equal to the generated X gives the same result.
    raw = encode_array(np.array(x, dtype=np.float32))
    assert np.array_equal(MLP.execute_numpy(params, raw), got)


def test_results_are_deterministic_and_seed_dependent() -> None:
    for kind, params in (
        (MM, {"m": 9, "n": 7, "k": 5, "seed": SEED}),
        (HC, {"chains": 4, "iterations": 3, "seed": SEED}),
        (MLP, {"batch": 6, "d_in": 5, "d_hidden": 4, "d_out": 3, "seed": SEED}),
    ):
        r1, r2 = kind.execute_numpy(params, None), kind.execute_numpy(dict(params), None)
        assert array_hash(r1) == array_hash(r2) and result_root(r1) == result_root(r2)
        r3 = kind.execute_numpy({**params, "seed": SEED2}, None)
        assert array_hash(r3) != array_hash(r1)


def test_work_units() -> None:
    assert MM.work_units({"m": 1024, "n": 256, "k": 1024, "seed": SEED}) == 256
    assert MM.work_units({"m": 1, "n": 1, "k": 1, "seed": SEED}) == 1
    assert HC.work_units({"chains": 1024, "iterations": 1023, "seed": SEED}) == 1024
    assert HC.work_units({"chains": 1, "iterations": 1, "seed": SEED}) == 1
    assert MLP.work_units({"batch": 256, "d_in": 256, "d_hidden": 256, "d_out": 64, "seed": SEED}) == 40
    for kind in KINDS.values():
        assert kind.describe()["name"] == kind.name


# -- leaf checks -----------------------------------------------------------------------------------------


def _flip(leaf: bytes, bit: int) -> bytes:
    b = bytearray(leaf)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


@pytest.mark.parametrize(
    "kind,params",
    [
        (MM, {"m": 7, "n": 5, "k": 9, "seed": SEED}),
        (HC, {"chains": 6, "iterations": 5, "seed": SEED}),
    ],
)
def test_check_leaf_exact_kinds(kind, params: dict) -> None:
    res = kind.execute_numpy(params, None)
    leaves = result_leaves(res)
    assert len(leaves) == kind.leaf_count(params)
    for i, leaf in enumerate(leaves):
        assert kind.check_leaf(params, None, i, leaf)
        for bit in (0, 8 * len(leaf) - 1, (i * 37) % (8 * len(leaf))):
            assert not kind.check_leaf(params, None, i, _flip(leaf, bit))
        assert not kind.check_leaf(params, None, i, leaf[:-1])
        assert not kind.check_leaf(params, None, i, leaf + b"\x00")
        assert not kind.check_leaf(params, None, (i + 1) % len(leaves), leaf)
    assert not kind.check_leaf(params, None, len(leaves), leaves[0])
    assert not kind.check_leaf(params, None, -1, leaves[0])


def test_check_leaf_matmul_with_input() -> None:
    a = counter.u32_range(3, 0, 0, 12).reshape(4, 3)
    b = counter.u32_range(3, 1, 0, 6).reshape(3, 2)
    raw = encode_array(a) + encode_array(b)
    params = {"m": 4, "n": 2, "k": 3}
    c = MM.execute_numpy(params, raw)
    assert np.array_equal(c, a @ b)
    for i, leaf in enumerate(result_leaves(c)):
        assert MM.check_leaf(params, raw, i, leaf)
        assert not MM.check_leaf(params, raw, i, _flip(leaf, 33))


def test_check_leaf_mlp_tolerance() -> None:
    params = {"batch": 5, "d_in": 16, "d_hidden": 8, "d_out": 4, "seed": SEED}
    y = MLP.execute_numpy(params, None)
    rtol, atol = MLP.tolerance
    for i, leaf in enumerate(result_leaves(y)):
        assert MLP.check_leaf(params, None, i, leaf)
        ref, mag = MLP.reference_row(params, None, i)
        for j in range(4):
            tol = atol + rtol * mag[j]
            for factor, ok in ((0.5, True), (-0.5, True), (2.0, False), (-2.0, False)):
                row = y[i].copy()
                row[j] = np.float32(ref[j] + factor * tol)
                assert MLP.check_leaf(params, None, i, row.astype("<f4").tobytes()) is ok, (i, j, factor)
        nan_row = y[i].copy()
        nan_row[0] = np.nan
        assert not MLP.check_leaf(params, None, i, nan_row.tobytes())
        assert not MLP.check_leaf(params, None, i, leaf[:-4])
    assert not MLP.check_leaf(params, None, 5, result_leaves(y)[0])


def test_challenge_flow_leaf_proof_and_check() -> None:
    """A receipt commits to result_root; one leaf is proven against it and then checked."""
    params = {"m": 13, "n": 4, "k": 6, "seed": SEED}
    c = MM.execute_numpy(params, None)
    bad = c.copy()
    bad[11, 2] += 1
    leaves, root = result_leaves(bad), result_root(bad)
    for i in range(13):
        assert verify_merkle_proof(root, leaves[i], i, 13, merkle_proof(leaves, i))
        assert MM.check_leaf(params, None, i, leaves[i]) is (i != 11)


def test_leaf_checks_are_cheap_at_the_bounds() -> None:
    """One leaf of the largest allowed jobs is rechecked well within budget on a CPU."""
    for kind, params in (
        (MM, {"m": 256, "n": 1024, "k": 1024, "seed": SEED2}),
        (HC, {"chains": 2048, "iterations": 32768, "seed": SEED2}),
        (MLP, {"batch": 4096, "d_in": 512, "d_hidden": 256, "d_out": 64, "seed": SEED2}),
    ):
        kind.validate(params, None)
        leaf = b"\x00" * kind.leaf_bytes(params)
        t0 = time.perf_counter()
        assert not kind.check_leaf(params, None, 1, leaf)
        assert time.perf_counter() - t0 < 0.5, kind.name


# -- whole-result checks ---------------------------------------------------------------------------------


def test_freivalds_catches_a_corrupted_element() -> None:
    params = {"m": 40, "n": 30, "k": 20, "seed": SEED}
    c = MM.execute_numpy(params, None)
    assert MM.verify_full(params, None, c, b"rng")
    for delta in (1, 2, 1 << 31, 0xFFFFFFFF):
        bad = c.copy()
        bad[17, 9] = np.uint32((int(bad[17, 9]) + delta) % (1 << 32))
        assert not MM.verify_full(params, None, bad, b"rng"), delta
    two = c.copy()
    two[3, 4] ^= np.uint32(1 << 31)
    two[3, 5] ^= np.uint32(1 << 31)  # cancels for any vector with r4 + r5 even: needs several vectors
    assert not MM.verify_full(params, None, two, b"rng")
    assert not MM.verify_full(params, None, c[:-1], b"rng")
    assert not MM.verify_full(params, None, c.astype(np.int64), b"rng")


def test_hash_chain_verify_full() -> None:
    params = {"chains": 20, "iterations": 3, "seed": SEED}
    r = HC.execute_numpy(params, None)
    assert HC.verify_full(params, None, r, b"x")
    bad = r.copy()
    bad[13, 31] ^= 1
    assert not HC.verify_full(params, None, bad, b"x")
    big = {"chains": 32768, "iterations": 2048, "seed": SEED}
    sample = HC.sample(big, b"x")
    assert len(sample) == (1 << 20) // 2049 and len(set(sample)) == len(sample)
    assert all(0 <= j < 32768 for j in sample) and sample != HC.sample(big, b"y")


def test_mlp_verify_full() -> None:
    params = {"batch": 9, "d_in": 30, "d_hidden": 20, "d_out": 7, "seed": SEED}
    y = MLP.execute_numpy(params, None)
    assert MLP.verify_full(params, None, y, b"")
    ref, mag = MLP.reference(params, None)
    bad = y.copy()
    bad[4, 3] = np.float32(ref[4, 3] + 3 * (1e-4 + 1e-3 * mag[4, 3]))
    assert not MLP.verify_full(params, None, bad, b"")
    bad[4, 3] = np.inf
    assert not MLP.verify_full(params, None, bad, b"")


# -- parameter validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,params,input_size,reason",
    [
        (MM, {"m": 2, "n": 2, "k": 2, "seed": SEED, "x": 1}, None, "unknown_param"),
        (MM, {"m": 2, "n": 2, "seed": SEED}, None, "missing_param"),
        (MM, {"m": 0, "n": 2, "k": 2, "seed": SEED}, None, "out_of_bounds"),
        (MM, {"m": 1025, "n": 2, "k": 2, "seed": SEED}, None, "out_of_bounds"),
        (MM, {"m": 1024, "n": 1024, "k": 2, "seed": SEED}, None, "out_of_bounds"),  # result > 1 MiB
        (MM, {"m": True, "n": 2, "k": 2, "seed": SEED}, None, "bad_type"),
        (MM, {"m": 2.0, "n": 2, "k": 2, "seed": SEED}, None, "bad_type"),
        (MM, {"m": 2, "n": 2, "k": 2, "seed": "ab"}, None, "bad_type"),
        (MM, {"m": 2, "n": 2, "k": 2, "seed": b"short"}, None, "out_of_bounds"),
        (MM, {"m": 2, "n": 2, "k": 2}, None, "input_required"),
        (MM, {"m": 2, "n": 2, "k": 2}, 10, "input_size"),
        (MM, {"m": 2, "n": 2, "k": 2, "seed": SEED}, 40, "input_size"),
        (MM, [1, 2], None, "bad_type"),
        (MM, {1: 2}, None, "bad_type"),
        (HC, {"chains": 1, "iterations": 0, "seed": SEED}, None, "out_of_bounds"),
        (HC, {"chains": 32769, "iterations": 1, "seed": SEED}, None, "out_of_bounds"),
        (HC, {"chains": 1, "iterations": 32769, "seed": SEED}, None, "out_of_bounds"),
        (HC, {"chains": 32768, "iterations": 4096, "seed": SEED}, None, "out_of_bounds"),  # > 2**26 hashes
        (HC, {"chains": 1, "iterations": 1}, None, "missing_param"),
        (HC, {"chains": 1, "iterations": 1, "seed": SEED}, 3, "input_size"),
        (MLP, {"batch": 1, "d_in": 1, "d_hidden": 1, "d_out": 1, "seed": SEED, "lr": 1}, None, "unknown_param"),
        (MLP, {"batch": 4097, "d_in": 1, "d_hidden": 1, "d_out": 1, "seed": SEED}, None, "out_of_bounds"),
        (MLP, {"batch": 1, "d_in": 1024, "d_hidden": 1024, "d_out": 1, "seed": SEED}, None, "out_of_bounds"),
        (MLP, {"batch": 1, "d_in": "1", "d_hidden": 1, "d_out": 1, "seed": SEED}, None, "bad_type"),
        (MLP, {"batch": 2, "d_in": 3, "d_hidden": 1, "d_out": 1, "seed": SEED}, 5, "input_size"),
    ],
)
def test_validate_rejects_with_reason(kind, params, input_size, reason: str) -> None:
    with pytest.raises(JobParamError) as ei:
        kind.validate(params, input_size)
    assert ei.value.reason == reason, str(ei.value)
    assert str(ei.value)


def test_validate_accepts_bounds_and_inputs() -> None:
    MM.validate({"m": 256, "n": 1024, "k": 1024, "seed": SEED}, None)
    MM.validate({"m": 1, "n": 1, "k": 1}, len(encode_array(np.zeros((1, 1), np.uint32))) * 2)
    HC.validate({"chains": 32768, "iterations": 2048, "seed": SEED}, None)
    MLP.validate({"batch": 4096, "d_in": 512, "d_hidden": 256, "d_out": 64, "seed": SEED}, None)
    MLP.validate({"batch": 2, "d_in": 3, "d_hidden": 1, "d_out": 1, "seed": SEED}, len(encode_array(np.zeros((2, 3), np.float32))))
    with pytest.raises(JobParamError) as ei:
        get_kind("sha3")
    assert ei.value.reason == "unknown_kind"


def test_bad_inputs_are_refused() -> None:
    p = {"m": 2, "n": 3, "k": 3}
    a, b = np.zeros((2, 3), np.uint32), np.zeros((3, 3), np.uint32)
    swapped = encode_array(np.zeros((3, 2), np.uint32)) + encode_array(b)  # same size, wrong shape
    with pytest.raises(JobParamError) as ei:
        MM.execute_numpy(p, swapped)
    assert ei.value.reason == "bad_input"
    assert MM.execute_numpy(p, encode_array(a) + encode_array(b)).shape == (2, 3)
    mp = {"batch": 2, "d_in": 2, "d_hidden": 2, "d_out": 2, "seed": SEED}
    for x in (np.array([[1, np.nan], [0, 0]], np.float32), np.full((2, 2), 1e6, np.float32)):
        with pytest.raises(JobParamError) as ei:
            MLP.execute_numpy(mp, encode_array(x))
        assert ei.value.reason == "bad_input"


# -- backend selection -----------------------------------------------------------------------------------


def _fake_pycuda(monkeypatch: pytest.MonkeyPatch, init_error: Exception | None) -> None:
    class Error(Exception):
        pass

    class Device:
        @staticmethod
        def count() -> int:
            return 1

        def __init__(self, i: int) -> None:
            pass

        def name(self) -> str:
            return "Fake H100"

        def total_memory(self) -> int:
            return 80 << 30

        def compute_capability(self) -> tuple[int, int]:
            return (9, 0)

    def init() -> None:
        if init_error is not None:
            raise init_error

    drv = types.ModuleType("pycuda.driver")
    drv.Error, drv.Device, drv.init = Error, Device, init  # type: ignore[attr-defined]
    pkg = types.ModuleType("pycuda")
    pkg.__spec__ = importlib.machinery.ModuleSpec("pycuda", None)
    pkg.driver = drv  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv)


def test_select_backend_env_and_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AITBC_GPU_BACKEND", "cpu")
    info = select_backend()
    assert info.name == "numpy" and "AITBC_GPU_BACKEND=cpu" in info.reason
    assert select_backend("numpy").name == "numpy"
    _fake_pycuda(monkeypatch, None)
    monkeypatch.setenv("AITBC_GPU_BACKEND", "auto")
    info = select_backend()
    assert (info.name, info.device, info.compute_capability, info.memory_bytes) == ("pycuda", "Fake H100", "9.0", 80 << 30)
    assert select_backend("cpu").name == "numpy"  # the explicit choice beats a working device
    with pytest.raises(BackendUnavailable):
        select_backend("tpu")


def test_select_backend_without_device(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_pycuda(monkeypatch, RuntimeError("cuInit failed: no CUDA-capable device is detected"))
    monkeypatch.delenv("AITBC_GPU_BACKEND", raising=False)
    info = select_backend()
    assert info.name == "numpy" and info.reason.startswith("no CUDA device") and "cuInit" in info.reason
    monkeypatch.setenv("AITBC_GPU_BACKEND", "cuda")
    with pytest.raises(BackendUnavailable, match="requires PyCUDA"):
        select_backend()


def test_select_backend_without_pycuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_backend.importlib.util, "find_spec", lambda name: None)
    monkeypatch.delenv("AITBC_GPU_BACKEND", raising=False)
    info = select_backend()
    assert (info.name, info.reason) == ("numpy", "pycuda not installed")
    assert info.memory_bytes >= 0 and info.device.startswith("cpu")


# -- executor and probe ----------------------------------------------------------------------------------


@pytest.fixture
def executor() -> Executor:
    ex = Executor(select_backend("cpu"))
    yield ex
    ex.close()


async def test_executor_runs_off_the_event_loop(executor: Executor) -> None:
    params = {"chains": 1500, "iterations": 300, "seed": SEED}  # ~0.2-0.5 s of hashlib
    ticks = 0
    result = None

    async def ticker() -> None:
        nonlocal ticks
        while result is None:
            await trio.sleep(0.01)
            ticks += 1

    async def job() -> None:
        nonlocal result
        result = await executor.run("hash-chain", params, None, time_limit_s=30, max_result_bytes=MiB)

    t0 = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        nursery.start_soon(job)
    elapsed = time.monotonic() - t0
    assert ticks >= 0.2 * elapsed / 0.01  # the loop kept running while the job ran
    assert result is not None
    assert result.encoded == encode_array(result.array)
    assert result.result_hash == hashlib.sha256(result.encoded).digest() == array_hash(result.array)
    assert result.result_root == result_root(result.array)
    assert result.result_size == len(result.encoded)
    assert (result.units, result.unit_type) == (HC.work_units(params), "khash")
    assert result.backend == "numpy" and result.device.startswith("cpu")
    assert executor.backend.name == "numpy" and executor.backend.memory_bytes >= 0
    assert 0 < result.gpu_seconds <= elapsed and result.started_at_ms <= result.completed_at_ms
    assert np.array_equal(result.array, HC.execute_numpy(params, None))


async def test_executor_time_limit(executor: Executor) -> None:
    params = {"chains": 32768, "iterations": 2048, "seed": SEED}  # ~30 s on a CPU
    t0 = time.monotonic()
    with pytest.raises(JobExecutionError) as ei:
        await executor.run("hash-chain", params, None, time_limit_s=0.05, max_result_bytes=2 * MiB)
    assert ei.value.reason == "timeout"
    assert time.monotonic() - t0 < 3
    # The worker is free again.
    r = await executor.run("matmul-u32", {"m": 4, "n": 4, "k": 4, "seed": SEED}, None, time_limit_s=10, max_result_bytes=MiB)
    assert r.array.shape == (4, 4)


async def test_executor_cancel_abandons_the_job(executor: Executor) -> None:
    params = {"chains": 32768, "iterations": 2048, "seed": SEED}
    t0 = time.monotonic()
    with trio.move_on_after(0.1):
        await executor.run("hash-chain", params, None, time_limit_s=60, max_result_bytes=2 * MiB)
    assert time.monotonic() - t0 < 1
    with trio.fail_after(5):  # the abandoned thread stopped at its next check and freed the worker
        r = await executor.run("hash-chain", {"chains": 1, "iterations": 1, "seed": SEED}, None, time_limit_s=5, max_result_bytes=MiB)
    assert r.array.shape == (1, 32)


async def test_executor_limits_and_errors(executor: Executor) -> None:
    big = {"m": 256, "n": 1024, "k": 8, "seed": SEED}
    with pytest.raises(JobExecutionError) as ei:
        await executor.run("matmul-u32", big, None, time_limit_s=10, max_result_bytes=MiB)
    assert ei.value.reason == "result_too_large"  # 1 MiB of data plus the header
    limited = Executor(NumpyBackend(), memory_limit_bytes=1000)
    with pytest.raises(JobExecutionError) as ei:
        await limited.run("matmul-u32", {"m": 64, "n": 64, "k": 64, "seed": SEED}, None, time_limit_s=10, max_result_bytes=MiB)
    assert ei.value.reason == "memory"
    with pytest.raises(JobParamError) as ei2:
        await executor.run("matmul-u32", {"m": 0, "n": 1, "k": 1, "seed": SEED}, None, time_limit_s=10, max_result_bytes=MiB)
    assert ei2.value.reason == "out_of_bounds"
    with pytest.raises(JobParamError):
        await executor.run("nope", {}, None, time_limit_s=10, max_result_bytes=MiB)


def test_probe_on_numpy() -> None:
    d = probe(0.05, backend=select_backend("cpu"))
    # every kind that runs without a registered model (llm-generate needs the node's model store)
    assert d["backend"] == "numpy" and set(d["kinds"]) == set(KINDS) - {"llm-generate"}
    for k in d["kinds"].values():
        assert "error" not in k and k["jobs"] >= 1 and k["units_per_s"] > 0
    text = format_probe(d)
    assert "backend: numpy" in text and all(name in text for name in d["kinds"])


# -- the CUDA kernels on a CPU emulator (g++, tests/cuda_emu/emu.h: a fiber per CUDA thread) ------------------------------

EMU_H = (Path(__file__).parent / "cuda_emu" / "emu.h").read_text(encoding="utf-8")

EMU_MAIN = r"""
#include "emu.h"
#include "counter.cu"
#include "gemm.cu"
#include "sha256.cu"
static std::vector<char> slurp(const char* p) {
    FILE* f = fopen(p, "rb"); std::vector<char> v; char b[65536]; size_t n;
    while ((n = fread(b, 1, sizeof b, f)) > 0) v.insert(v.end(), b, b + n); fclose(f); return v; }
static void dump(const char* p, const void* d, size_t n) { FILE* f = fopen(p, "wb"); fwrite(d, 1, n, f); fclose(f); }
static unsigned cdiv(unsigned long long a, unsigned b) { return (unsigned)((a + b - 1) / b); }
int main(int, char** argv) {
    std::string op = argv[1];
    if (op == "gen_u32" || op == "gen_f32") {
        u64 key = strtoull(argv[2], 0, 10), stream = strtoull(argv[3], 0, 10);
        u64 start = strtoull(argv[4], 0, 10), count = strtoull(argv[5], 0, 10);
        std::vector<u32> out(count);
        unsigned blocks = cdiv(count, 64) > 4 ? 4 : cdiv(count, 64);  // exercises the grid-stride loop
        if (op == "gen_u32") launch({blocks, 1, 1}, {64, 1, 1}, [&] { gen_u32(out.data(), key, stream, start, count); });
        else launch({blocks, 1, 1}, {64, 1, 1}, [&] { gen_f32((float*)out.data(), key, stream, start, count); });
        dump(argv[6], out.data(), 4 * count);
    } else if (op == "matmul_u32" || op == "sgemm") {
        int M = atoi(argv[2]), N = atoi(argv[3]), K = atoi(argv[4]);
        auto A = slurp(argv[5]), B = slurp(argv[6]);
        std::vector<u32> C((size_t)M * N);
        dim3 grid{cdiv(N, 64), cdiv(M, 64), 1};
        if (op == "matmul_u32") {
            launch(grid, {256, 1, 1}, [&] { matmul_u32((const u32*)A.data(), (const u32*)B.data(), C.data(), M, N, K); });
            dump(argv[7], C.data(), 4 * C.size());
        } else {
            auto bias = slurp(argv[7]); int relu = atoi(argv[8]);
            launch(grid, {256, 1, 1}, [&] { sgemm_bias_act((const float*)A.data(), (const float*)B.data(),
                                                           (const float*)bias.data(), (float*)C.data(), M, N, K, relu); });
            dump(argv[9], C.data(), 4 * C.size());
        }
    } else if (op == "hash_chain") {
        auto seed = slurp(argv[2]); u32 chains = atoi(argv[3]), it = atoi(argv[4]);
        std::vector<u32> out((size_t)chains * 8);
        launch({cdiv(chains, 128), 1, 1}, {128, 1, 1}, [&] { hash_chain((const u32*)seed.data(), out.data(), chains, it); });
        dump(argv[5], out.data(), 4 * out.size());
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The kernels compiled for the CPU emulator (skipped without a C++ compiler)."""
    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler for the kernel emulator")
    d = tmp_path_factory.mktemp("cuda-emu")
    cmd = [cxx, "-std=c++20"]
    (d / "emu.h").write_text(EMU_H)
    (d / "main.cpp").write_text(EMU_MAIN)
    for name in ("counter", "gemm", "sha256"):
        (d / f"{name}.cu").write_text(source(name))
    proc = subprocess.run([*cmd, "-O1", "-Wall", "-Wno-unknown-pragmas", "-o", str(d / "emu"), str(d / "main.cpp")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr  # a kernel that does not compile as C++ is a bug
    return d


def _emu(d: Path, *args: object) -> None:
    subprocess.run([str(d / "emu"), *map(str, args)], check=True, timeout=60)


def test_kernels_on_cpu_emulator_generate_identically(emulator: Path) -> None:
    key = counter.derive_key("mlp-f32", 1, SEED)
    out = emulator / "gen.bin"
    for stream, start, count in ((0, 0, 1000), (3, 12345, 333), (1, 0, 1)):
        _emu(emulator, "gen_u32", key, stream, start, count, out)
        assert np.array_equal(np.fromfile(out, np.uint32), counter.u32_range(key, stream, start, count))
        _emu(emulator, "gen_f32", key, stream, start, count, out)
        assert np.array_equal(np.fromfile(out, np.float32), counter.to_f32(counter.u32_range(key, stream, start, count)))


def test_kernels_on_cpu_emulator_gemm(emulator: Path) -> None:
    rng = np.random.default_rng(7)
    d = emulator
    for m, n, k in ((1, 1, 1), (70, 130, 33), (65, 3, 100)):
        a = rng.integers(0, 1 << 32, (m, k), dtype=np.uint32)
        b = rng.integers(0, 1 << 32, (k, n), dtype=np.uint32)
        a.tofile(d / "a.bin")
        b.tofile(d / "b.bin")
        _emu(d, "matmul_u32", m, n, k, d / "a.bin", d / "b.bin", d / "c.bin")
        assert np.array_equal(np.fromfile(d / "c.bin", np.uint32).reshape(m, n), a @ b)
        af = counter.to_f32(a)
        bf = counter.to_f32(b)
        bias = counter.to_f32(rng.integers(0, 1 << 32, n, dtype=np.uint32))
        af.tofile(d / "a.bin")
        bf.tofile(d / "b.bin")
        bias.tofile(d / "bias.bin")
        for relu in (0, 1):
            _emu(d, "sgemm", m, n, k, d / "a.bin", d / "b.bin", d / "bias.bin", relu, d / "c.bin")
            want = af.astype(np.float64) @ bf + bias
            if relu:
                want = np.maximum(want, 0.0)
            mag = np.abs(af.astype(np.float64)) @ np.abs(bf) + np.abs(bias)
            got = np.fromfile(d / "c.bin", np.float32).reshape(m, n)
            assert np.all(np.abs(got - want) <= 1e-6 + 1e-5 * mag)


def test_kernels_on_cpu_emulator_hash_chain(emulator: Path) -> None:
    np.frombuffer(SEED, ">u4").astype(np.uint32).tofile(emulator / "seed.bin")
    for chains, iterations in ((1, 1), (200, 3)):
        _emu(emulator, "hash_chain", emulator / "seed.bin", chains, iterations, emulator / "h.bin")
        got = np.fromfile(emulator / "h.bin", np.uint32).view(np.uint8).reshape(chains, 32)
        assert np.array_equal(got, HC.execute_numpy({"chains": chains, "iterations": iterations, "seed": SEED}, None))


# -- PyCUDA against NumPy (needs a device) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def cuda():
    info, why = probe_pycuda()
    if info is None:
        pytest.skip(f"no usable PyCUDA device: {why}")
    from gpu.pycuda_backend import PyCudaBackend

    be = PyCudaBackend(info)
    yield be
    be.close()


GPU_CASES = [
    ("matmul-u32", {"m": 1, "n": 1, "k": 1}),
    ("matmul-u32", {"m": 70, "n": 130, "k": 33}),
    ("matmul-u32", {"m": 256, "n": 1024, "k": 1024}),
    ("matmul-u32", {"m": 1024, "n": 256, "k": 1000}),
    ("hash-chain", {"chains": 1, "iterations": 1}),
    ("hash-chain", {"chains": 1000, "iterations": 100}),
    ("hash-chain", {"chains": 32768, "iterations": 16}),
    ("mlp-f32", {"batch": 1, "d_in": 1, "d_hidden": 1, "d_out": 1}),
    ("mlp-f32", {"batch": 100, "d_in": 77, "d_hidden": 65, "d_out": 33}),
    ("mlp-f32", {"batch": 4096, "d_in": 512, "d_hidden": 256, "d_out": 64}),
]


@pytest.mark.gpu
@pytest.mark.parametrize("name,params", GPU_CASES)
def test_pycuda_matches_numpy(cuda, name: str, params: dict) -> None:
    kind = get_kind(name)
    params = {**params, "seed": SEED}
    got, secs = cuda.execute(kind, params, None, Deadline(60))
    want = kind.execute_numpy(params, None)
    assert got.dtype == want.dtype and got.shape == want.shape and secs > 0
    if kind.tolerance is None:
        assert np.array_equal(got, want)
    else:
        assert kind.verify_full(params, None, got, b"")
        for i in (0, params["batch"] - 1):
            assert kind.check_leaf(params, None, i, result_leaves(got)[i])


@pytest.mark.gpu
def test_pycuda_with_inputs_and_executor(cuda) -> None:
    a = counter.u32_range(11, 0, 0, 50 * 70).reshape(50, 70)
    b = counter.u32_range(11, 1, 0, 70 * 90).reshape(70, 90)
    raw = encode_array(a) + encode_array(b)
    got, _ = cuda.execute(MM, {"m": 50, "n": 90, "k": 70}, raw, Deadline(60))
    assert np.array_equal(got, a @ b)
    mp = {"batch": 40, "d_in": 30, "d_hidden": 20, "d_out": 10, "seed": SEED}
    x = np.linspace(-100, 100, 1200, dtype=np.float32).reshape(40, 30)
    got, _ = cuda.execute(MLP, mp, encode_array(x), Deadline(60))
    assert MLP.verify_full(mp, encode_array(x), got, b"")
    ex = Executor(cuda)
    r = ex.run_sync("hash-chain", {"chains": 64, "iterations": 64, "seed": SEED}, None, time_limit_s=30, max_result_bytes=MiB)
    assert r.backend == "pycuda" and r.result_hash == array_hash(HC.execute_numpy({"chains": 64, "iterations": 64, "seed": SEED}, None))
    assert cuda.time_core(MM, {"m": 64, "n": 64, "k": 64, "seed": SEED}, 2) > 0
    assert cuda.free_memory() > 0


def test_backend_self_test_accepts_the_reference_and_refuses_a_wrong_kernel() -> None:
    """The start-up self-test (run on a GPU backend before any job) passes for a backend that agrees with
    the references and names the kind for one that does not (here: the NumPy backend with one bit of
    every matmul result flipped, the same fault a broken kernel would make)."""
    from gpu.backend import NumpyBackend
    from gpu.selftest import SelfTestError, self_test

    self_test(NumpyBackend())

    class OffByOneBit(NumpyBackend):
        def execute(self, kind, params, input, deadline):
            out, secs = super().execute(kind, params, input, deadline)
            if kind.name == "matmul-u32":
                out = out.copy()
                out[5, 7] ^= 1
            return out, secs

    with pytest.raises(SelfTestError, match="matmul-u32: 1 of 67 rows differ"):
        self_test(OffByOneBit())


# -- llm-generate: the integer matmul kernels (gpu/kernels/llm.cu, gpu/llm_cuda.py) ----------------------------


def test_llm_kernel_entry_points_match_the_python_side() -> None:
    """Every ``extern "C" __global__`` kernel of llm.cu is one the Python side launches, and vice versa."""
    import re

    from gpu import llm_cuda
    from gpu.kernels import NAMES, OPTIONAL

    src = source("llm")
    names = re.findall(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\(\w+\)\s+)?(\w+)\s*\(', src)
    assert sorted(names) == sorted(llm_cuda.KERNELS)
    assert "llm" in OPTIONAL and "llm" not in NAMES  # compiled on demand: a failure disables only llm-generate
    for const, value in (("LLM_THREADS", llm_cuda.THREADS), ("LLM_ROWS", llm_cuda.ROWS), ("LLM_TB", llm_cuda.TB),
                         ("LLM_GROUP", 32)):
        assert re.search(rf"#define {const} {value}\b", src), const
    assert llm_cuda.ROWS * 32 == llm_cuda.THREADS  # one warp per output row


def test_llm_launch_shapes_and_packing() -> None:
    from gpu.llm_cuda import (
        SELFTEST_CFG,
        mat_keys,
        matmul_launch,
        pack_q8r,
        padded_k,
        quant_launch,
        random_model_bytes,
    )
    from state.llm.generate import IntModel

    assert [padded_k(k) for k in (1, 32, 33, 72, 576)] == [32, 32, 64, 96, 576]
    assert quant_launch(11) == ((256, 1, 1), (11, 1))
    assert matmul_launch(1, 301) == ((256, 1, 1), (38, 1))
    assert matmul_launch(11, 8) == ((256, 1, 1), (1, 2))
    cfg = SELFTEST_CFG
    data = random_model_bytes(cfg, 3)
    model = IntModel(cfg, data)
    keys = mat_keys(cfg)
    assert len(keys) == 4 * cfg.n_layers + 1 and keys[0] == ("blk.0.attn_q", "blk.0.attn_k", "blk.0.attn_v")
    for names in keys:
        p = pack_q8r(cfg, data, names)
        ref = model.mat(*names)  # generate's own stacked layout: scale [O], q16 = q8 * u [O, K]
        assert p.q.dtype == np.int8 and p.u.dtype == np.uint8 and p.m.dtype == np.int32
        assert p.q.shape == (ref.q16.shape[0], padded_k(ref.k)) and p.k == ref.k and p.u.shape[1] == p.g
        assert p.q.flags.c_contiguous and p.u.flags.c_contiguous and p.m.flags.c_contiguous
        assert not p.q[:, p.k :].any()  # zero padding adds nothing
        w = p.q[:, : p.k].astype(np.int64) * np.repeat(p.u.astype(np.int64), 32, axis=1)[:, : p.k]
        assert np.array_equal(w, ref.q16) and np.array_equal(p.m, ref.scale)


def test_llm_generate_with_numpy_matmul_is_generate() -> None:
    """gpu/llm_cuda.generate_with (the forward pass the CUDA path runs, matmul passed in) with the NumPy
    matmul gives generate's trace bit for bit: prefill and decode, sampling, stop ids."""
    from gpu.llm_cuda import SELFTEST_CFG, generate_with, numpy_mm, random_model_bytes, trace_mismatch
    from state.llm.generate import IntModel, generate
    from state.llm.steps import Sampling
    from tests.llm_fixtures import TINY, tiny_model_file

    for cfg, data in ((SELFTEST_CFG, random_model_bytes(SELFTEST_CFG, 5)), (TINY, tiny_model_file())):
        model = IntModel(cfg, data)
        for prompt, n, sampling, stops in (
            ([1, 2, 3], 5, None, ()),
            (list(range(9, 40)), 3, Sampling(temperature_num=1, temperature_den=1, top_k=5, seed=b"s"), ()),
        ):
            want_tok, want = generate(model, prompt, n, sampling, stops)
            got_tok, got = generate_with(model, prompt, n, sampling, stops, numpy_mm(model))
            assert got_tok == want_tok and trace_mismatch(want, got) is None and got.root() == want.root()
        tok, _ = generate(model, [4, 5], 6)
        stop = (tok[-2],)
        want_tok, want = generate(model, [4, 5], 6, None, stop)
        got_tok, got = generate_with(model, [4, 5], 6, None, stop, numpy_mm(model))
        assert got_tok == want_tok and len(got_tok) < 6 and got.root() == want.root()


EMU_LLM_MAIN = r"""
#include "emu.h"
#include "llm.cu"
static std::vector<char> slurp(const char* p) {
    FILE* f = fopen(p, "rb"); std::vector<char> v; char b[65536]; size_t n;
    while ((n = fread(b, 1, sizeof b, f)) > 0) v.insert(v.end(), b, b + n); fclose(f); return v; }
static void dump(const char* p, const void* d, size_t n) { FILE* f = fopen(p, "wb"); fwrite(d, 1, n, f); fclose(f); }
// llm_mm T O K G bits x.bin q.bin u.bin m.bin y.bin a.bin s.bin
// llm_mm attn T nkv grp hd n_s c ln2 q.bin pos.bin kv.bin exp.bin out.bin
// llm_mm swiglu T F ln2 gu.bin exp.bin sw.bin
int main(int, char** argv) {
    if (std::string(argv[1]) == "swiglu") {
        int T = atoi(argv[2]), F = atoi(argv[3]);
        long long ln2 = atoll(argv[4]);
        auto GU = slurp(argv[5]), E = slurp(argv[6]);
        std::vector<int> sw((size_t)T * F);
        launch({(unsigned)((T * F + 255) / 256), 1, 1}, {256, 1, 1}, [&] {
            llm_swiglu((const int*)GU.data(), (const long long*)E.data(), sw.data(), T, F, ln2); });
        dump(argv[7], sw.data(), 4 * sw.size());
        return 0;
    }
    if (std::string(argv[1]) == "attn") {
        int T = atoi(argv[2]), nkv = atoi(argv[3]), grp = atoi(argv[4]), hd = atoi(argv[5]), ns = atoi(argv[6]);
        long long c = atoll(argv[7]), ln2 = atoll(argv[8]);
        auto Qv = slurp(argv[9]), P = slurp(argv[10]), KV = slurp(argv[11]), E = slurp(argv[12]);
        std::vector<long long> scratch((size_t)nkv * T * grp * ns + 1), out((size_t)T * nkv * grp * hd);
        launch({(unsigned)(T * grp), (unsigned)nkv, 1}, {256, 1, 1}, [&] {
            llm_attention((const int*)Qv.data(), (const int*)P.data(), (const int*)KV.data(),
                          (const long long*)E.data(), scratch.data(), out.data(), ns, nkv, grp, hd, c, ln2); });
        dump(argv[13], out.data(), 8 * out.size());
        return 0;
    }
    int T = atoi(argv[1]), O = atoi(argv[2]), K = atoi(argv[3]), G = atoi(argv[4]), bits = atoi(argv[5]);
    auto X = slurp(argv[6]), Q = slurp(argv[7]), U = slurp(argv[8]), M = slurp(argv[9]);
    int Kp = 32 * G;
    std::vector<short> A((size_t)T * Kp + 8, (short)0x5555);
    std::vector<int> S(T), Y((size_t)T * O);
    launch({(unsigned)T, 1, 1}, {256, 1, 1}, [&] { llm_quant_rows((const int*)X.data(), A.data(), S.data(), K, Kp, bits); });
    launch({(unsigned)((O + 7) / 8), (unsigned)((T + 7) / 8), 1}, {256, 1, 1}, [&] {
        llm_matmul_q8(A.data(), S.data(), (const signed char*)Q.data(), (const unsigned char*)U.data(),
                      (const int*)M.data(), Y.data(), T, O, G); });
    dump(argv[10], Y.data(), 4 * Y.size());
    dump(argv[11], A.data(), 2 * (size_t)T * Kp);
    dump(argv[12], S.data(), 4 * S.size());
    return 0;
}
"""


@pytest.fixture(scope="module")
def llm_emulator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """llm.cu compiled for the CPU emulator (the portable int32 multiply-add path of ``llm_dot4``)."""
    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler for the kernel emulator")
    d = tmp_path_factory.mktemp("cuda-emu-llm")
    cmd = [cxx, "-std=c++20"]
    (d / "emu.h").write_text(EMU_H)
    (d / "main.cpp").write_text(EMU_LLM_MAIN)
    (d / "llm.cu").write_text(source("llm"))
    proc = subprocess.run([*cmd, "-O1", "-fno-strict-aliasing", "-Wall", "-Wno-unknown-pragmas", "-o", str(d / "emu"),
                           str(d / "main.cpp")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return d


def _emu_mm(d: Path, x: np.ndarray, p, bits: int = 14) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y int32 [T, O], a int16 [T, Kp], s int32 [T]) of the two llm kernels on the emulator."""
    t = x.shape[0]
    files = {n: d / f"{n}.bin" for n in ("x", "q", "u", "m", "y", "a", "s")}
    np.ascontiguousarray(x, dtype=np.int32).tofile(files["x"])
    p.q.tofile(files["q"])
    p.u.tofile(files["u"])
    p.m.tofile(files["m"])
    args = [t, p.o, p.k, p.g, bits] + [files[n] for n in ("x", "q", "u", "m", "y", "a", "s")]
    subprocess.run([str(d / "emu"), *map(str, args)], check=True, timeout=120)
    return (np.fromfile(files["y"], np.int32).reshape(t, p.o), np.fromfile(files["a"], np.int16).reshape(t, -1),
            np.fromfile(files["s"], np.int32))


def test_llm_kernels_on_cpu_emulator_match_matmul_q8(llm_emulator: Path) -> None:
    """quant_shift and matmul_q8 (requantisation, saturation) bit for bit, on awkward shapes and extreme
    inputs: zero rows, int32 extremes (|x| = 2**31), tiny rows (left shifts), maximal weights."""
    from gpu.llm_cuda import PackedMat
    from state.llm import fixed as fx

    rng = np.random.default_rng(9)
    for t, o, k in ((1, 1, 1), (3, 9, 33), (11, 17, 72), (9, 40, 100), (2, 5, 300)):
        g = -(-k // 32)
        q = np.zeros((o, 32 * g), np.int8)
        q[:, :k] = rng.integers(-127, 128, (o, k), dtype=np.int8)
        q[0, :k] = 127
        u = rng.integers(0, 256, (o, g), dtype=np.uint8)
        u[0] = 255
        m = rng.integers(0, (1 << 28) + 1, o).astype(np.int32)
        m[-1] = 1 << 28
        p = PackedMat(q, u, m, k)
        x = rng.integers(-(1 << 31), 1 << 31, (t, k), dtype=np.int64)
        x[0] = np.where(np.arange(k) % 2, -(1 << 31), (1 << 31) - 1)
        if t > 1:
            x[1] = 0
        if t > 2:
            x[2] = rng.integers(-50, 51, k)
        for row in range(3, t):
            x[row] >>= int(rng.integers(0, 31))
        y, a, s = _emu_mm(llm_emulator, x, p)
        wa, ws = fx.quant_shift(x, fx.QBITS)
        assert np.array_equal(s, ws) and np.array_equal(a[:, :k], wa) and not a[:, k:].any()
        w = q[:, :k].astype(np.int64) * np.repeat(u.astype(np.int64), 32, axis=1)[:, :k]
        assert np.array_equal(y, fx.sat32(fx.matmul_q8(x, m.astype(np.int64), w))), (t, o, k)


def test_llm_attention_on_cpu_emulator_matches_numpy(llm_emulator: Path) -> None:
    """``llm_attention`` against generate's ``_attention_heads`` over the same KV cache: a prefill (causal
    mask, several query rows) and a decode step, on odd sizes and on extreme values (tiny queries and keys:
    left shifts; int32-range ones: the largest scores)."""
    from gpu.llm_cuda import attention_constants, pack_kv_rows
    from state.llm import fixed as fx
    from state.llm.config import LlamaConfig
    from state.llm.generate import _attention_heads, _Cache

    rng = np.random.default_rng(4)
    for nkv, grp, hd, n_prev, t, scale in ((2, 3, 18, 0, 7, 1 << 20), (1, 2, 8, 5, 1, 1 << 30), (3, 1, 64, 40, 3, 3),
                                           (2, 2, 4, 0, 1, 1 << 31)):
        cfg = LlamaConfig(vocab=50, dim=nkv * grp * hd, n_layers=1, n_heads=nkv * grp, n_kv_heads=nkv, head_dim=hd,
                          ffn_dim=16, max_ctx=64, rope_base=10000, norm_eps_num=1, norm_eps_den=100000,
                          tied_embeddings=True, bos_id=0, eos_id=1)
        cache = _Cache(cfg)
        lim = min(scale, 1 << 31)
        for n_new in (n_prev, t):
            if n_new:
                k = rng.integers(-lim, lim, (n_new, nkv, hd), dtype=np.int64)
                v = rng.integers(-lim, lim, (n_new, nkv, hd), dtype=np.int64)
                n_s = cache.append(0, k, v)
                cache.n = n_s
        n_s = cache.n
        pos = np.arange(n_s - t, n_s, dtype=np.int64)
        q = rng.integers(-lim, lim, (t, nkv * grp, hd), dtype=np.int64)
        q[0, 0] = 0  # a zero query row
        want = _attention_heads(cfg, q, pos, cache, 0, n_s)
        d = llm_emulator
        q.astype(np.int32).tofile(d / "aq.bin")
        pos.astype(np.int32).tofile(d / "apos.bin")
        pack_kv_rows(cache, 0, 0, n_s).tofile(d / "akv.bin")
        fx._exp_r16_table().astype(np.int64).tofile(d / "aexp.bin")
        c, ln2 = attention_constants(hd)
        subprocess.run([str(d / "emu"), "attn", *map(str, (t, nkv, grp, hd, n_s, c, ln2)),
                        *(str(d / f) for f in ("aq.bin", "apos.bin", "akv.bin", "aexp.bin", "aout.bin"))],
                       check=True, timeout=120)
        got = np.fromfile(d / "aout.bin", np.int64).reshape(t, -1)
        assert np.array_equal(got, want), (nkv, grp, hd, n_prev, t, scale)


def test_llm_swiglu_on_cpu_emulator_matches_numpy(llm_emulator: Path) -> None:
    """``llm_swiglu`` against generate's ``_swiglu`` on random and extreme gate/up values (int32 limits,
    zero, ±1, values where the product saturates)."""
    from state.llm import fixed as fx
    from state.llm.generate import swiglu_halves

    rng = np.random.default_rng(6)
    edge = np.array([fx.I32_MIN, fx.I32_MIN + 1, -(1 << 20), -1, 0, 1, 1 << 20, fx.I32_MAX], dtype=np.int64)
    for t, f in ((1, 1), (3, 37), (2, 300)):
        gu = rng.integers(fx.I32_MIN, fx.I32_MAX, (t, 2 * f), dtype=np.int64, endpoint=True)
        gu[:, : min(f, 8)] = edge[: min(f, 8)]
        gu[-1, f : f + min(f, 8)] = edge[::-1][: min(f, 8)]
        d = llm_emulator
        gu.astype(np.int32).tofile(d / "gu.bin")
        fx._exp_r16_table().astype(np.int64).tofile(d / "sexp.bin")
        subprocess.run([str(d / "emu"), "swiglu", str(t), str(f), str(int(fx.exp_tables()[2])), str(d / "gu.bin"),
                        str(d / "sexp.bin"), str(d / "sw.bin")], check=True, timeout=60)
        got = np.fromfile(d / "sw.bin", np.int32).reshape(t, f).astype(np.int64)
        assert np.array_equal(got, swiglu_halves(gu)), (t, f)


def test_llm_generation_on_cpu_emulator_is_bit_exact(llm_emulator: Path) -> None:
    """The whole self-test generation (prefill over two position tiles, decode, sampling) with every matmul
    through the emulated kernels and the packed weights: the same trace as NumPy, step for step."""
    from gpu.llm_cuda import (
        SELFTEST_CFG,
        SELFTEST_NEW,
        SELFTEST_PROMPT,
        SELFTEST_SAMPLING,
        generate_with,
        pack_q8r,
        random_model_bytes,
        trace_mismatch,
    )
    from state.llm.generate import IntModel, generate

    data = random_model_bytes(SELFTEST_CFG, 3)
    model = IntModel(SELFTEST_CFG, data)
    packed: dict = {}

    def mm(x: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        p = packed.get(names) or packed.setdefault(names, pack_q8r(SELFTEST_CFG, data, names))
        return _emu_mm(llm_emulator, x, p)[0].astype(np.int64)

    n_new = SELFTEST_NEW
    want_tok, want = generate(model, SELFTEST_PROMPT, n_new, SELFTEST_SAMPLING)
    got_tok, got = generate_with(model, SELFTEST_PROMPT, n_new, SELFTEST_SAMPLING, (), mm)
    assert got_tok == want_tok and trace_mismatch(want, got) is None and got.root() == want.root()


# -- llm-generate on PyCUDA (needs a device) ---------------------------------------------------------------------


@pytest.mark.gpu
def test_pycuda_llm_self_test_passes(cuda) -> None:
    from gpu.llm_cuda import PyCudaLlm, llm_self_test

    engine = PyCudaLlm(cuda)
    try:
        assert llm_self_test(engine) is None
        assert llm_self_test(engine, seed=8) is None
        assert cuda.enable_llm(), cuda.llm_reason  # the backend's own start-up check passes as well
        assert cuda.llm_ready() and cuda.runs(get_kind("llm-generate"))
    finally:
        engine.release()


@pytest.mark.gpu
def test_pycuda_llm_trace_root_equals_numpy(cuda) -> None:
    """A tiny model's whole run (long prefill, decode, temperature sampling) through the CUDA path, and
    through the kind on the backend: the same trace root, tokens and result rows as NumPy."""
    from gpu.llm_cuda import PyCudaLlm
    from state.llm.generate import IntModel, generate
    from state.llm.steps import Sampling
    from tests.llm_fixtures import TINY, tiny_model_file

    model = IntModel(TINY, tiny_model_file())
    engine = PyCudaLlm(cuda)
    try:
        for prompt, n, sampling in (([1, 2, 3], 8, None),
                                    (list(range(100)), 20, Sampling(temperature_num=1, temperature_den=2, top_k=9,
                                                                    seed=b"g"))):
            want_tok, want = generate(model, prompt, n, sampling)
            got_tok, got = engine.generate(model, prompt, n, sampling)
            assert got_tok == want_tok and got.root() == want.root()
        assert engine.uploads == 1 and engine.device_bytes > 0  # the weights went up once
    finally:
        engine.release()
