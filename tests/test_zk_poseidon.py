"""zk/poseidon.py (circomlib Poseidon through mcl) and zk/poseidon_tree.py (incremental Merkle tree)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zk.bn254 import R
from zk.errors import ProofError
from zk.poseidon import CONSTANTS_SHA256, constants_digest, hash1, hash2
from zk.poseidon_tree import META_LEVEL, DictStore, PoseidonTree, root_from_path, zeros

# circomlibjs buildPoseidon() outputs (authoritative golden vectors)
GOLDEN = {
    (1,): 18586133768512220936620570745912940619677854269274689475585506675881198879027,
    (1, 2): 7853200120776062878684798364095072458815029376092732009249414926327459813530,
    (0, 0): 14744269619966411208579211824598458697587494354926760081771325075741142829156,
    (123456789, R - 7): 4573510668044159996371487802416811303881444659134226651240011601231373333624,
    (R - 7, 98765432123456789012345678901234567890): (
        14257776541209285623659885115510952217362084798763594037929334718756569179961
    ),
}
REF_JSON = Path("/tmp/zkproto/ref.json")  # circomlibjs run of /tmp/zkproto/ref.js, when present


def _poseidon(inputs: tuple[int, ...]) -> int:
    return hash1(*inputs) if len(inputs) == 1 else hash2(*inputs)


@pytest.mark.parametrize("inputs", sorted(GOLDEN))
def test_golden_vectors(inputs: tuple[int, ...]) -> None:
    assert _poseidon(inputs) == GOLDEN[inputs]


@pytest.mark.skipif(not REF_JSON.exists(), reason="no circomlibjs reference file on this machine")
def test_reference_file_vectors() -> None:
    out = json.loads(REF_JSON.read_text())["out"]
    checked = 0
    for key, expected in out.items():
        inputs = tuple(int(x) for x in key.split(","))
        if len(inputs) <= 2:
            assert _poseidon(inputs) == int(expected), key
            checked += 1
    assert checked >= 5


def test_constants_pinned() -> None:
    assert constants_digest() == CONSTANTS_SHA256
    assert CONSTANTS_SHA256 == "b1de0b682602b48e60a99a0770a575d715c4a61b394bebf125734a464c273913"


@pytest.mark.parametrize("bad", [-1, R, R + 1, 2**256, True, 1.0, "1", None])
def test_non_canonical_input_refused(bad: object) -> None:
    for call in (lambda: hash1(bad), lambda: hash2(bad, 0), lambda: hash2(0, bad)):  # type: ignore[arg-type]
        with pytest.raises(ProofError) as e:
            call()
        assert e.value.reason == "zk_malformed"


def test_reuse_of_buffers_is_stateless() -> None:
    a = hash2(5, 6)
    hash1(7)
    hash2(8, 9)
    assert hash2(5, 6) == a


# ---- tree ------------------------------------------------------------------------------------------


def _naive_root(leaves: list[int], depth: int) -> int:
    level = leaves + [0] * ((1 << depth) - len(leaves))
    for _ in range(depth):
        level = [hash2(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def test_zeros() -> None:
    z = zeros(4)
    assert z[0] == 0 and len(z) == 5
    assert all(z[i + 1] == hash2(z[i], z[i]) for i in range(4))


def test_empty_root() -> None:
    for depth in (1, 4, 20):
        assert PoseidonTree(DictStore(), depth).root() == zeros(depth)[depth]


def test_append_matches_naive_and_paths() -> None:
    depth = 4
    tree = PoseidonTree(DictStore(), depth)
    leaves: list[int] = []
    for n in range(1 << depth):
        leaf = (n * 7919 + 3) % 50 if n % 3 else 0  # some zero leaves too
        assert tree.append(leaf) == n
        leaves.append(leaf)
        assert tree.size == n + 1
        root = tree.root()
        assert root == _naive_root(leaves, depth)
        for i, value in enumerate(leaves):
            siblings, bits = tree.path(i)
            assert bits == [(i >> k) & 1 for k in range(depth)]
            assert root_from_path(value, siblings, bits) == root
    with pytest.raises(ProofError) as e:
        tree.append(1)
    assert e.value.reason == "zk_out_of_range"
    assert tree.size == 1 << depth


def test_store_contents_and_resume() -> None:
    store = DictStore()
    PoseidonTree(store, 3).append(11)
    assert store.get(META_LEVEL, 0) == 1
    resumed = PoseidonTree(store, 3)  # a new tree object over the same store continues where it was
    resumed.append(12)
    assert resumed.root() == _naive_root([11, 12], 3)


def test_tree_refusals() -> None:
    tree = PoseidonTree(DictStore(), 4)
    for bad in (-1, R):
        with pytest.raises(ProofError) as e:
            tree.append(bad)
        assert e.value.reason == "zk_malformed"
    tree.append(1)
    for index in (-1, 1, 16):
        with pytest.raises(ProofError) as e:
            tree.path(index)
        assert e.value.reason == "zk_out_of_range"
    for depth in (0, 65):
        with pytest.raises(ProofError):
            PoseidonTree(DictStore(), depth)
    with pytest.raises(ProofError) as e:
        root_from_path(1, [0, 0], [0, 2])
    assert e.value.reason == "zk_malformed"
    with pytest.raises(ProofError):
        root_from_path(1, [0, 0], [0])


def test_depth20_few_leaves() -> None:
    tree = PoseidonTree(DictStore())
    assert tree.depth == 20
    leaves = [hash1(i) for i in range(5)]
    for leaf in leaves:
        tree.append(leaf)
    root = tree.root()
    z = zeros(20)
    # the 5 leaves live in the leftmost height-3 subtree; above it everything is empty on the right
    sub = _naive_root(leaves, 3)
    expected = sub
    for level in range(3, 20):
        expected = hash2(expected, z[level])
    assert root == expected
    for i, leaf in enumerate(leaves):
        assert root_from_path(leaf, *tree.path(i)) == root
