"""Tests of the compressed binary sparse Merkle tree (state/smt.py)."""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import replace

import plyvel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state.smt import EMPTY_HASH, SmtProof, SparseMerkleTree, TreeUpdate, verify_proof

# -- reference implementation (written from the definition, independent of state/smt.py) ---------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _bit(key: bytes, i: int) -> int:
    return (key[i // 8] >> (7 - i % 8)) & 1


def _ref(kv: dict[bytes, bytes], depth: int, prefix: bytes, out: dict[bytes, bytes] | None) -> bytes:
    """Hash of the subtree at ``depth`` holding ``kv``; records its stored nodes into ``out``."""
    if not kv:
        return EMPTY_HASH
    if len(kv) == 1:
        ((k, v),) = kv.items()
        if out is not None:
            out[_pos_key(prefix, k, depth)] = b"L" + k + v
        return _h(b"\x00" + k + v)
    left = {k: v for k, v in kv.items() if _bit(k, depth) == 0}
    right = {k: v for k, v in kv.items() if _bit(k, depth) == 1}
    h = _h(b"\x01" + _ref(left, depth + 1, prefix, out) + _ref(right, depth + 1, prefix, out))
    if out is not None:
        out[_pos_key(prefix, next(iter(kv)), depth)] = b"I" + h
    return h


def ref_root(kv: dict[bytes, bytes]) -> bytes:
    """Root of the compressed SMT holding ``kv``, by recursion over the key set."""
    return _ref(kv, 0, b"", None)


def _pos_key(prefix: bytes, key: bytes, depth: int) -> bytes:
    path = bytearray(key[: (depth + 7) // 8])
    if depth % 8:
        path[-1] &= (0xFF << (8 - depth % 8)) & 0xFF
    return prefix + bytes([depth % 256]) + bytes(path)


def ref_layout(kv: dict[bytes, bytes], prefix: bytes = b"T") -> dict[bytes, bytes]:
    """Every stored record (db key -> encoded node) of the tree holding ``kv``."""
    out: dict[bytes, bytes] = {}
    _ref(kv, 0, prefix, out)
    return out


# -- helpers -------------------------------------------------------------------------------------------


class DictStore:
    """A dict-backed store: ``get`` for the tree, ``commit`` to persist an update and apply it."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, k: bytes) -> bytes | None:
        return self.data.get(k)

    def commit(self, tree: SparseMerkleTree, update: TreeUpdate) -> None:
        for k, v in update.writes.items():
            if v is None:
                del self.data[k]  # deleting a record that does not exist would be a bug
            else:
                self.data[k] = v
        tree.apply(update)


def new_tree(cache_size: int = 200_000, prefix: bytes = b"T") -> tuple[SparseMerkleTree, DictStore]:
    store = DictStore()
    return SparseMerkleTree(store.get, prefix=prefix, cache_size=cache_size), store


def rkey(rnd: random.Random) -> bytes:
    return rnd.randbytes(32)


def apply_changes(tree: SparseMerkleTree, store: DictStore, changes: dict[bytes, bytes | None]) -> TreeUpdate:
    update = tree.compute_update(changes)
    store.commit(tree, update)
    assert tree.root == update.root
    return update


def model_apply(model: dict[bytes, bytes], changes: dict[bytes, bytes | None]) -> None:
    for k, v in changes.items():
        if v is None:
            model.pop(k, None)
        else:
            model[k] = v


# Keys drawn from a few "clusters" so that keys often share long prefixes (chains of single-child
# internal nodes, leaves deep in the tree, keys differing only in their last bit: depth-256 leaves).
_BASES = [bytes(32), b"\xff" * 32, bytes.fromhex("80" + "00" * 31), bytes(16) + b"\xaa" * 16]


@st.composite
def keys_st(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(min_size=32, max_size=32))
    base = bytearray(draw(st.sampled_from(_BASES)))
    pos = draw(st.integers(0, 255))
    for p in draw(st.lists(st.integers(pos, 255), max_size=3)):
        base[p // 8] ^= 0x80 >> (p % 8)
    return bytes(base)


values_st = st.binary(min_size=32, max_size=32)
kv_st = st.dictionaries(keys_st(), values_st, max_size=40)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- basic shape ---------------------------------------------------------------------------------------


def test_empty_tree() -> None:
    tree, store = new_tree()
    assert tree.root == EMPTY_HASH == bytes(32)
    k = bytes(range(32))
    assert tree.get_value_hash(k) is None
    proof = tree.prove(k)
    assert proof == SmtProof(siblings=[], leaf_key=None, leaf_value_hash=None)
    assert verify_proof(tree.root, k, None, proof)
    assert not verify_proof(tree.root, k, bytes(32), proof)
    upd = tree.compute_update({})
    assert upd.root == EMPTY_HASH and upd.writes == {}
    upd = tree.compute_update({k: None})  # deleting from an empty tree
    assert upd.root == EMPTY_HASH and upd.writes == {}


def test_single_key_is_root_leaf() -> None:
    tree, store = new_tree()
    k, v = b"\x01" * 32, b"\x02" * 32
    upd = apply_changes(tree, store, {k: v})
    assert upd.root == _h(b"\x00" + k + v)
    assert store.data == {b"T\x00": b"L" + k + v}
    assert tree.get_value_hash(k) == v
    assert tree.prove(k).siblings == []


def test_two_keys_layout_and_prefix() -> None:
    tree, store = new_tree(prefix=b"xy")
    a = bytes(32)  # bit 0 = 0
    b = b"\x80" + bytes(31)  # bit 0 = 1
    apply_changes(tree, store, {a: b"\x11" * 32, b: b"\x22" * 32})
    la, lb = _h(b"\x00" + a + b"\x11" * 32), _h(b"\x00" + b + b"\x22" * 32)
    root = _h(b"\x01" + la + lb)
    assert tree.root == root
    assert store.data == {
        b"xy\x00": b"I" + root,
        b"xy\x01\x00": b"L" + a + b"\x11" * 32,
        b"xy\x01\x80": b"L" + b + b"\x22" * 32,
    }


def test_keys_differing_in_last_bit_depth_256() -> None:
    tree, store = new_tree()
    a, b = bytes(32), bytes(31) + b"\x01"
    va, vb = b"\xaa" * 32, b"\xbb" * 32
    apply_changes(tree, store, {a: va, b: vb})
    assert tree.root == ref_root({a: va, b: vb})
    assert store.data == ref_layout({a: va, b: vb})
    assert len(store.data) == 258  # 256 internal nodes (depth 0..255) + 2 leaves at depth 256
    assert store.data[b"T\x00" + b] == b"L" + b + vb  # depth 256: depth byte wraps to 0, 32 path bytes
    for k, v in ((a, va), (b, vb)):
        proof = tree.prove(k)
        assert len(proof.siblings) == 256
        assert verify_proof(tree.root, k, v, proof)
    # Deleting one collapses the whole chain: the survivor becomes the root leaf.
    apply_changes(tree, store, {a: None})
    assert store.data == {b"T\x00": b"L" + b + vb}
    assert tree.root == _h(b"\x00" + b + vb)


# -- agreement with the reference ------------------------------------------------------------------------


@FAST
@given(kv=kv_st)
def test_matches_reference_root_and_layout(kv: dict[bytes, bytes]) -> None:
    tree, store = new_tree()
    apply_changes(tree, store, dict(kv))
    assert tree.root == ref_root(kv)
    assert store.data == ref_layout(kv)
    for k, v in kv.items():
        assert tree.get_value_hash(k) == v


@FAST
@given(
    batches=st.lists(
        st.dictionaries(keys_st(), st.one_of(st.none(), values_st), max_size=12),
        min_size=1,
        max_size=8,
    ),
    cache_size=st.sampled_from([0, 1, 6, 200_000]),
)
def test_random_update_sequences(batches: list[dict[bytes, bytes | None]], cache_size: int) -> None:
    """Sets, overwrites, deletes (of present and absent keys) against a model dict, checking the root and
    the exact stored records after every batch; small caches exercise the uncached read path."""
    tree, store = new_tree(cache_size=cache_size)
    model: dict[bytes, bytes] = {}
    for changes in batches:
        apply_changes(tree, store, changes)
        model_apply(model, changes)
        assert tree.root == ref_root(model)
        assert store.data == ref_layout(model)
        assert len(tree._cache) <= cache_size
    # A fresh tree over the same store sees the same thing.
    reopened = SparseMerkleTree(store.get)
    assert reopened.root == tree.root
    for k, v in model.items():
        assert reopened.get_value_hash(k) == v


@FAST
@given(kv=kv_st, data=st.data())
def test_order_and_batching_independence(kv: dict[bytes, bytes], data: st.DataObject) -> None:
    items = list(kv.items())
    # One big batch.
    t1, s1 = new_tree()
    apply_changes(t1, s1, dict(items))
    # Per key, in a random order.
    shuffled = data.draw(st.permutations(items))
    t2, s2 = new_tree()
    for k, v in shuffled:
        apply_changes(t2, s2, {k: v})
    # Random chunks of another order.
    shuffled = data.draw(st.permutations(items))
    t3, s3 = new_tree()
    i = 0
    while i < len(shuffled):
        n = data.draw(st.integers(1, 7))
        apply_changes(t3, s3, dict(shuffled[i : i + n]))
        i += n
    assert t1.root == t2.root == t3.root == ref_root(kv)
    assert s1.data == s2.data == s3.data


def test_history_independence_with_deletes() -> None:
    rnd = random.Random(7)
    keep = {rkey(rnd): rkey(rnd) for _ in range(300)}
    extra = {rkey(rnd): rkey(rnd) for _ in range(300)}
    t1, s1 = new_tree()
    apply_changes(t1, s1, keep)
    t2, s2 = new_tree()
    apply_changes(t2, s2, {**keep, **extra})
    apply_changes(t2, s2, {k: rkey(rnd) for k in list(keep)[:50]})  # overwrite some
    apply_changes(t2, s2, {k: keep[k] for k in list(keep)[:50]})  # and restore them
    for chunk in range(0, 300, 37):
        apply_changes(t2, s2, {k: None for k in list(extra)[chunk : chunk + 37]})
    assert t1.root == t2.root == ref_root(keep)
    assert s1.data == s2.data


def test_large_random_against_reference() -> None:
    rnd = random.Random(11)
    tree, store = new_tree(cache_size=500)
    model: dict[bytes, bytes] = {}
    keys: list[bytes] = []
    for _ in range(6):
        changes: dict[bytes, bytes | None] = {}
        for _ in range(400):
            new = rkey(rnd)
            keys.append(new)
            changes[new] = rkey(rnd)
        for k in rnd.sample(keys, 200):
            changes[k] = None if rnd.random() < 0.5 else rkey(rnd)
        apply_changes(tree, store, changes)
        model_apply(model, changes)
    assert tree.root == ref_root(model)
    assert store.data == ref_layout(model)


# -- deletes, no-ops, purity ------------------------------------------------------------------------------


def test_delete_everything_leaves_nothing() -> None:
    rnd = random.Random(3)
    tree, store = new_tree()
    kv = {rkey(rnd): rkey(rnd) for _ in range(500)}
    kv[bytes(32)] = rkey(rnd)  # plus a deep pair
    kv[bytes(31) + b"\x01"] = rkey(rnd)
    apply_changes(tree, store, kv)
    assert len(store.data) > len(kv)
    keys = list(kv)
    rnd.shuffle(keys)
    for i in range(0, len(keys), 64):
        apply_changes(tree, store, {k: None for k in keys[i : i + 64]})
    assert tree.root == EMPTY_HASH
    assert store.data == {}


def test_delete_everything_in_one_batch() -> None:
    rnd = random.Random(4)
    tree, store = new_tree()
    kv = {rkey(rnd): rkey(rnd) for _ in range(200)}
    apply_changes(tree, store, kv)
    upd = apply_changes(tree, store, dict.fromkeys(kv))
    assert upd.root == EMPTY_HASH
    assert store.data == {}


def test_noop_changes_write_nothing() -> None:
    rnd = random.Random(5)
    tree, store = new_tree()
    kv = {rkey(rnd): rkey(rnd) for _ in range(200)}
    apply_changes(tree, store, kv)
    root = tree.root
    absent = [rkey(rnd) for _ in range(50)]
    # Same values again, deletes of absent keys, and both mixed.
    for changes in (
        dict(kv),
        dict.fromkeys(absent),
        {**dict(list(kv.items())[:20]), **dict.fromkeys(absent)},
    ):
        upd = tree.compute_update(changes)
        assert upd.writes == {}
        assert upd.root == root
    # A real change mixed with no-ops writes only the changed key's path.
    k0 = next(iter(kv))
    upd = tree.compute_update({**kv, k0: rkey(rnd), **dict.fromkeys(absent)})
    assert upd.root != root
    assert len(upd.writes) == len(tree.prove(k0).siblings) + 1  # the leaf and each node above it


def test_compute_update_is_pure() -> None:
    rnd = random.Random(6)
    tree, store = new_tree()
    kv = {rkey(rnd): rkey(rnd) for _ in range(300)}
    apply_changes(tree, store, kv)
    root, snapshot = tree.root, dict(store.data)
    changes: dict[bytes, bytes | None] = {rkey(rnd): rkey(rnd) for _ in range(50)}
    changes.update(dict.fromkeys(list(kv)[:50]))
    u1 = tree.compute_update(changes)
    u2 = tree.compute_update(changes)
    assert u1 == u2
    assert tree.root == root and store.data == snapshot
    for k, v in list(kv.items())[:60]:
        assert tree.get_value_hash(k) == v
    store.commit(tree, u1)
    model_apply(kv, changes)
    assert tree.root == ref_root(kv)


def test_apply_rejects_stale_update() -> None:
    rnd = random.Random(8)
    tree, store = new_tree()
    apply_changes(tree, store, {rkey(rnd): rkey(rnd) for _ in range(10)})
    u1 = tree.compute_update({rkey(rnd): rkey(rnd)})
    u2 = tree.compute_update({rkey(rnd): rkey(rnd)})
    store.commit(tree, u1)
    with pytest.raises(ValueError, match="computed against root"):
        tree.apply(u2)


def test_apply_without_decoded_nodes() -> None:
    """An update rebuilt from (root, writes) alone — e.g. replayed — still refreshes the cache."""
    rnd = random.Random(9)
    tree, store = new_tree()
    kv = {rkey(rnd): rkey(rnd) for _ in range(100)}
    apply_changes(tree, store, kv)
    for _ in range(3):
        changes = {k: rkey(rnd) for k in rnd.sample(list(kv), 10)}
        upd = tree.compute_update(changes)
        store.commit(tree, TreeUpdate(root=upd.root, writes=upd.writes))
        kv.update(changes)
        assert tree.root == ref_root(kv)
        for k, v in kv.items():
            assert tree.get_value_hash(k) == v


def test_bad_inputs() -> None:
    tree, _ = new_tree()
    with pytest.raises(ValueError):
        tree.compute_update({b"short": bytes(32)})
    with pytest.raises(ValueError):
        tree.compute_update({bytes(32): b"short"})
    with pytest.raises(ValueError):
        tree.compute_update({"k" * 32: bytes(32), bytes(32): bytes(32)})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        tree.compute_update({memoryview(bytes(32)): bytes(32)})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        tree.get_value_hash(b"short")
    with pytest.raises(ValueError):
        tree.prove(bytes(31))


# -- proofs ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proof_tree() -> tuple[SparseMerkleTree, dict[bytes, bytes]]:
    rnd = random.Random(12)
    kv = {rkey(rnd): rkey(rnd) for _ in range(400)}
    kv[bytes(32)] = rkey(rnd)
    kv[bytes(31) + b"\x01"] = rkey(rnd)
    kv[bytes(16) + b"\xaa" * 16] = rkey(rnd)
    tree, store = new_tree(cache_size=100)
    apply_changes(tree, store, kv)
    return tree, kv


def test_inclusion_proofs_verify_for_every_key(
    proof_tree: tuple[SparseMerkleTree, dict[bytes, bytes]],
) -> None:
    tree, kv = proof_tree
    root = tree.root
    for k, v in kv.items():
        proof = tree.prove(k)
        assert proof.leaf_key == k and proof.leaf_value_hash == v
        assert verify_proof(root, k, v, proof)
        assert not verify_proof(root, k, None, proof)  # a present key has no non-inclusion proof
        assert not verify_proof(root, k, bytes(32), proof)


def test_non_inclusion_proofs(proof_tree: tuple[SparseMerkleTree, dict[bytes, bytes]]) -> None:
    tree, kv = proof_tree
    root = tree.root
    rnd = random.Random(13)
    kinds = {"empty": 0, "leaf": 0}
    absent = [rkey(rnd) for _ in range(300)] + [
        bytes(31) + b"\x02",
        bytes(30) + b"\x80\x00",
        bytes(16) + b"\xab" * 16,
    ]
    for k in absent:
        assert k not in kv
        assert tree.get_value_hash(k) is None
        proof = tree.prove(k)
        kinds["empty" if proof.leaf_key is None else "leaf"] += 1
        assert proof.leaf_key != k
        assert verify_proof(root, k, None, proof)
        assert not verify_proof(root, k, rkey(rnd), proof)
        if proof.leaf_key is not None:
            # The found leaf's own key is proven present by the same siblings.
            assert verify_proof(root, proof.leaf_key, proof.leaf_value_hash, proof)
    assert kinds["empty"] > 0 and kinds["leaf"] > 0, kinds


def _tamperings(proof: SmtProof) -> list[tuple[str, SmtProof]]:
    out = []
    for i in {0, len(proof.siblings) // 2, len(proof.siblings) - 1}:
        if 0 <= i < len(proof.siblings):
            s = bytearray(proof.siblings[i])
            s[i % 32] ^= 0x01
            sibs = list(proof.siblings)
            sibs[i] = bytes(s)
            out.append((f"flip sibling {i}", replace(proof, siblings=sibs)))
    if proof.siblings:
        out.append(("truncated", replace(proof, siblings=proof.siblings[:-1])))
        out.append(("drop first", replace(proof, siblings=proof.siblings[1:])))
    out.append(("extra empty sibling", replace(proof, siblings=[*proof.siblings, EMPTY_HASH])))
    out.append(("extra sibling", replace(proof, siblings=[*proof.siblings, _h(b"x")])))
    out.append(("extra leading sibling", replace(proof, siblings=[_h(b"x"), *proof.siblings])))
    return out


def test_tampered_proofs_fail(proof_tree: tuple[SparseMerkleTree, dict[bytes, bytes]]) -> None:
    tree, kv = proof_tree
    root = tree.root
    rnd = random.Random(14)
    other_root = _h(b"other")
    for k in [*list(kv)[:40], bytes(32), bytes(31) + b"\x01"]:
        v = kv[k]
        proof = tree.prove(k)
        assert verify_proof(root, k, v, proof)
        for what, bad in _tamperings(proof):
            assert not verify_proof(root, k, v, bad), what
        assert not verify_proof(root, k, rkey(rnd), proof)  # wrong value
        assert not verify_proof(other_root, k, v, proof)  # wrong root
        assert not verify_proof(root, k, v, replace(proof, leaf_value_hash=rkey(rnd)))
        assert not verify_proof(root, k, None, replace(proof, leaf_key=None, leaf_value_hash=None))
    for _ in range(40):  # non-inclusion proofs
        k = rkey(rnd)
        proof = tree.prove(k)
        assert verify_proof(root, k, None, proof)
        for what, bad in _tamperings(proof):
            assert not verify_proof(root, k, None, bad), what
        assert not verify_proof(other_root, k, None, proof)
        if proof.leaf_key is not None:
            forged = replace(proof, leaf_key=None, leaf_value_hash=None)
            assert not verify_proof(root, k, None, forged)


def test_non_inclusion_needs_leaf_on_path(proof_tree: tuple[SparseMerkleTree, dict[bytes, bytes]]) -> None:
    """A leaf from elsewhere in the tree cannot stand in for the key's path."""
    tree, kv = proof_tree
    root = tree.root
    present = next(iter(kv))
    proof = tree.prove(present)
    flipped = bytearray(present)
    flipped[0] ^= 0x80  # leaves the subtree at depth 1
    assert not verify_proof(root, bytes(flipped), None, proof)


def test_verify_rejects_non_canonical_paths() -> None:
    """Paths only a malformed (non-collapsed or misplaced) tree could have are refused even when the
    hashes chain up to the given root."""
    k = bytes(32)  # bit 0 = 0: goes left
    v = b"\x11" * 32
    other = _h(b"other subtree")
    # (leaf, empty) never exists: the leaf would sit one level up.
    root = _h(b"\x01" + _h(b"\x00" + k + v) + EMPTY_HASH)
    assert not verify_proof(root, k, v, SmtProof(siblings=[EMPTY_HASH], leaf_key=k, leaf_value_hash=v))
    # (empty, empty) never exists either.
    root = _h(b"\x01" + EMPTY_HASH + EMPTY_HASH)
    assert not verify_proof(
        root, k, None, SmtProof(siblings=[EMPTY_HASH], leaf_key=None, leaf_value_hash=None)
    )
    # A leaf whose key does not lie under the position (bit 0 = 1, but found on the left) proves nothing.
    stray = b"\x80" + bytes(31)
    root = _h(b"\x01" + _h(b"\x00" + stray + v) + other)
    assert not verify_proof(root, k, None, SmtProof(siblings=[other], leaf_key=stray, leaf_value_hash=v))
    # The same shapes with a well-placed leaf do verify.
    good = b"\x00\x01" + bytes(30)
    root = _h(b"\x01" + _h(b"\x00" + good + v) + other)
    assert verify_proof(root, k, None, SmtProof(siblings=[other], leaf_key=good, leaf_value_hash=v))


def test_verify_proof_never_raises() -> None:
    good = SmtProof(siblings=[], leaf_key=None, leaf_value_hash=None)
    assert verify_proof(EMPTY_HASH, bytes(32), None, good) is True
    junk: list[object] = [None, b"", b"x" * 33, 5, "0x00", [b"x"], bytearray(32)]
    for root in junk:
        assert verify_proof(root, bytes(32), None, good) is False  # type: ignore[arg-type]
        assert verify_proof(EMPTY_HASH, root, None, good) is False  # type: ignore[arg-type]
        if root is not None:
            assert verify_proof(EMPTY_HASH, bytes(32), root, good) is False  # type: ignore[arg-type]
        bad = SmtProof(siblings=root, leaf_key=None, leaf_value_hash=None)  # type: ignore[arg-type]
        assert verify_proof(EMPTY_HASH, bytes(32), None, bad) is False
        bad = SmtProof(siblings=[root], leaf_key=None, leaf_value_hash=None)  # type: ignore[list-item]
        assert verify_proof(EMPTY_HASH, bytes(32), None, bad) is False
        bad = SmtProof(siblings=[], leaf_key=root, leaf_value_hash=bytes(32))  # type: ignore[arg-type]
        assert verify_proof(EMPTY_HASH, bytes(32), None, bad) is False
    assert verify_proof(EMPTY_HASH, bytes(32), None, "proof") is False  # type: ignore[arg-type]
    too_long = SmtProof(siblings=[_h(b"s")] * 257, leaf_key=None, leaf_value_hash=None)
    assert verify_proof(EMPTY_HASH, bytes(32), None, too_long) is False
    half = SmtProof(siblings=[], leaf_key=bytes(32), leaf_value_hash=None)
    assert verify_proof(EMPTY_HASH, b"\x01" * 32, None, half) is False


@settings(max_examples=150, deadline=None)
@given(
    root=st.binary(min_size=32, max_size=32),
    key=st.binary(min_size=32, max_size=32),
    vh=st.one_of(st.none(), st.binary(min_size=0, max_size=40)),
    sibs=st.lists(st.binary(min_size=0, max_size=40), max_size=6),
    lk=st.one_of(st.none(), st.binary(min_size=0, max_size=40)),
    lv=st.one_of(st.none(), st.binary(min_size=0, max_size=40)),
)
def test_random_proofs_are_rejected(
    root: bytes, key: bytes, vh: bytes | None, sibs: list[bytes], lk: bytes | None, lv: bytes | None
) -> None:
    valid_empty = root == EMPTY_HASH and vh is None and not sibs and lk is None and lv is None
    proof = SmtProof(siblings=sibs, leaf_key=lk, leaf_value_hash=lv)
    assert verify_proof(root, key, vh, proof) is valid_empty


# -- proof JSON ------------------------------------------------------------------------------------------


def test_proof_json_roundtrip(proof_tree: tuple[SparseMerkleTree, dict[bytes, bytes]]) -> None:
    tree, kv = proof_tree
    for k in [*list(kv)[:5], b"\x5a" * 32]:
        proof = tree.prove(k)
        obj = json.loads(json.dumps(proof.to_obj()))
        assert set(obj) == {"siblings", "leaf_key", "leaf_value_hash"}
        assert all(isinstance(s, str) and s.startswith("0x") and len(s) == 66 for s in obj["siblings"])
        assert SmtProof.from_obj(obj) == proof
    empty = SmtProof(siblings=[], leaf_key=None, leaf_value_hash=None)
    assert empty.to_obj() == {"siblings": [], "leaf_key": None, "leaf_value_hash": None}
    assert SmtProof.from_obj(empty.to_obj()) == empty


_H = "0x" + "ab" * 32


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "must be an object"),
        ({"siblings": [], "leaf_key": None}, r"missing field\(s\) \['leaf_value_hash'\]"),
        ({"siblings": [], "leaf_key": None, "leaf_value_hash": None, "x": 1}, r"unknown field\(s\) \['x'\]"),
        ({"siblings": "0x00", "leaf_key": None, "leaf_value_hash": None}, "siblings must be a list"),
        ({"siblings": [_H] * 257, "leaf_key": None, "leaf_value_hash": None}, "at most 256"),
        (
            {"siblings": [_H, 5], "leaf_key": None, "leaf_value_hash": None},
            r"siblings\[1\] must be a 0x-prefixed hex string",
        ),
        (
            {"siblings": ["ab" * 32], "leaf_key": None, "leaf_value_hash": None},
            r"siblings\[0\] must start with '0x'",
        ),
        (
            {"siblings": ["0x" + "ab" * 31], "leaf_key": None, "leaf_value_hash": None},
            r"siblings\[0\] must be 32 bytes",
        ),
        (
            {"siblings": ["0x" + "zz" * 32], "leaf_key": None, "leaf_value_hash": None},
            r"siblings\[0\] is not valid hex",
        ),
        (
            {"siblings": ["0x" + " a" * 32], "leaf_key": None, "leaf_value_hash": None},
            r"siblings\[0\] is not valid hex",
        ),
        ({"siblings": [], "leaf_key": _H, "leaf_value_hash": None}, "both null or both set"),
        ({"siblings": [], "leaf_key": None, "leaf_value_hash": _H}, "both null or both set"),
        ({"siblings": [], "leaf_key": "0x12", "leaf_value_hash": _H}, "leaf_key must be 32 bytes"),
        (
            {"siblings": [], "leaf_key": _H, "leaf_value_hash": b"\x00" * 32},
            "leaf_value_hash must be a 0x-prefixed",
        ),
    ],
)
def test_proof_from_obj_rejects_malformed(obj: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SmtProof.from_obj(obj)  # type: ignore[arg-type]


# -- LevelDB ---------------------------------------------------------------------------------------------


def test_leveldb_persistence_and_reopen(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "db")
    rnd = random.Random(21)
    db = plyvel.DB(path, create_if_missing=True)
    db.put(b"A-unrelated", b"x")  # other prefixes share the database
    db.put(b"U", b"y")
    tree = SparseMerkleTree(db.get, prefix=b"T", cache_size=64)
    model: dict[bytes, bytes] = {}
    keys: list[bytes] = []
    for block in range(5):
        changes: dict[bytes, bytes | None] = {}
        for _ in range(150):
            k = rkey(rnd)
            keys.append(k)
            changes[k] = rkey(rnd)
        if block:
            for k in rnd.sample(keys[:-150], 40):
                changes[k] = None if rnd.random() < 0.5 else rkey(rnd)
        with db.snapshot() as snap:  # the node reads through a snapshot while it builds the block
            reader = SparseMerkleTree(snap.get)
            assert reader.root == tree.root
        update = tree.compute_update(changes)
        with db.write_batch() as wb:
            wb.put(b"B-block-%d" % block, b"block")
            for dk, dv in update.writes.items():
                if dv is None:
                    wb.delete(dk)
                else:
                    wb.put(dk, dv)
        tree.apply(update)
        model_apply(model, changes)
    root = tree.root
    assert root == ref_root(model)
    proofs = {k: tree.prove(k) for k in list(model)[:50]}
    absent = [rkey(rnd) for _ in range(20)]
    stored = {k: v for k, v in db.iterator(prefix=b"T")}
    assert stored == ref_layout(model)
    db.close()

    db = plyvel.DB(path)
    try:
        reopened = SparseMerkleTree(db.get, prefix=b"T")
        assert reopened.root == root
        for k, v in model.items():
            assert reopened.get_value_hash(k) == v
        for k, proof in proofs.items():
            assert reopened.prove(k) == proof
            assert verify_proof(root, k, model[k], proof)
        for k in absent:
            assert verify_proof(root, k, None, reopened.prove(k))
        # Keep going from the reopened tree: delete everything; only the unrelated records remain.
        update = reopened.compute_update(dict.fromkeys(model))
        with db.write_batch() as wb:
            for dk, dv in update.writes.items():
                assert dv is None
                wb.delete(dk)
        reopened.apply(update)
        assert reopened.root == EMPTY_HASH
        assert list(db.iterator(prefix=b"T")) == []
        assert db.get(b"A-unrelated") == b"x" and db.get(b"U") == b"y"
    finally:
        db.close()
