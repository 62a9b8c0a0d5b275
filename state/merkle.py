"""Inclusion proofs for the list Merkle tree of :func:`state.types.merkle_root`.

The tree (RFC 6962 hashing): a leaf hashes to ``sha256(0x00 || leaf)``, an inner node to
``sha256(0x01 || left || right)``; levels are paired left to right and an odd last node is promoted
unchanged to the next level; the empty list hashes to 32 zero bytes. A proof for leaf ``index`` of
``count`` leaves lists the sibling hashes from the bottom up, skipping levels where the node on the
path is promoted (it has no sibling), so its length is at most ``ceil(log2(count))``.
The root does not commit to ``count``: a verifier takes it from context (for a job result,
``JobKind.leaf_count(params)``), never from the prover.

Used for result receipts: a miner commits to ``result_root`` and a challenger proves one leaf of the
result against it (see ``docs/gpu.md``).
"""

from __future__ import annotations

import hashlib

from .codec import sha256
from .types import HASH_LEN

MAX_PROOF_LEN = 64  # a proof is at most ceil(log2(count)) hashes; count < 2**64


def _leaf_hash(leaf: bytes) -> bytes:
    return sha256(b"\x00" + leaf)


def _node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def merkle_proof(leaves: list[bytes], index: int) -> list[bytes]:
    """Sibling hashes (bottom up) proving ``leaves[index]`` under ``merkle_root(leaves)``.

    Raises ``IndexError`` if ``index`` is not a valid leaf index.
    """
    if type(index) is not int or not 0 <= index < len(leaves):
        raise IndexError(f"leaf index {index!r} out of range for {len(leaves)} leaves")
    level = [_leaf_hash(x) for x in leaves]
    proof: list[bytes] = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        nxt = [_node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        index >>= 1
    return proof


def verify_merkle_proof(root: bytes, leaf: bytes, index: int, count: int, proof: list[bytes]) -> bool:
    """True iff ``proof`` shows that ``leaf`` is leaf ``index`` of a ``count``-leaf tree with ``root``.

    Never raises: malformed arguments (wrong types, a hash that is not 32 bytes, an index out of
    range, a proof of the wrong length) simply fail.
    """
    if type(root) is not bytes or len(root) != HASH_LEN or not isinstance(leaf, bytes):
        return False
    if type(index) is not int or type(count) is not int or not 0 <= index < count:
        return False
    if not isinstance(proof, list | tuple) or len(proof) > MAX_PROOF_LEN:
        return False
    h = _leaf_hash(leaf)
    used = 0
    n = count
    while n > 1:
        if index ^ 1 < n:  # the node on the path has a sibling at this level
            if used >= len(proof):
                return False
            sib = proof[used]
            if type(sib) is not bytes or len(sib) != HASH_LEN:
                return False
            used += 1
            h = _node_hash(sib, h) if index & 1 else _node_hash(h, sib)
        index >>= 1
        n = (n + 1) // 2
    return used == len(proof) and h == root


# --------------------------------------------------------------------------------------------------
# Multi-leaf proofs (several leaves of one tree, sharing their common siblings)
#
# The proof lists, level by level from the bottom and left to right within a level, the hash of every
# sibling that the known leaves do not determine. It is at most ``len(indices) * ceil(log2(count))``
# hashes and never more than the separate proofs together. Used by the ``llm-generate`` disputes
# (``state/market/llm_disputes.py``) to prove many step digests or token rows at once.


def merkle_multiproof(leaf_hashes: list[bytes], indices: list[int] | set[int]) -> list[bytes]:
    """Sibling hashes proving the leaves at ``indices`` (given the leaf HASHES ``sha256(0x00||leaf)``
    of the whole tree). Raises ``IndexError`` for an index out of range or an empty set."""
    want = sorted(set(indices))
    if not want or want[0] < 0 or want[-1] >= len(leaf_hashes):
        raise IndexError(f"leaf indices {want[:4]}... out of range for {len(leaf_hashes)} leaves")
    level = list(leaf_hashes)
    known = set(want)
    proof: list[bytes] = []
    while len(level) > 1:
        n = len(level)
        for i in sorted(known):
            sib = i ^ 1
            if sib < n and sib not in known:
                proof.append(level[sib])
        known = {i >> 1 for i in known}
        nxt = [_node_hash(level[i], level[i + 1]) for i in range(0, n - 1, 2)]
        if n % 2:
            nxt.append(level[-1])
        level = nxt
    return proof


def multiproof_root(count: int, leaf_hashes: dict[int, bytes], proof: list[bytes]) -> bytes | None:
    """The root that ``proof`` and the known leaf hashes ``{index: sha256(0x00||leaf)}`` of a
    ``count``-leaf tree imply, or None when the proof is malformed (wrong length, bad hash, index out of
    range). Work: O(len(leaf_hashes) * log2(count)) hashes. Never raises."""
    if type(count) is not int or count < 1 or not leaf_hashes or not isinstance(proof, list | tuple):
        return None
    if not all(type(i) is int and 0 <= i < count for i in leaf_hashes):
        return None
    level = dict(leaf_hashes)
    used = 0
    n = count
    n_proof = len(proof)
    sha = hashlib.sha256
    while n > 1:
        nxt: dict[int, bytes] = {}
        for i in sorted(level):
            p = i >> 1
            if p in nxt:
                continue
            sib = i ^ 1
            if sib >= n:  # the last node of an odd level is promoted unchanged
                nxt[p] = level[i]
                continue
            h = level.get(sib)
            if h is None:
                if used >= n_proof:
                    return None
                h = proof[used]
                if type(h) is not bytes or len(h) != HASH_LEN:
                    return None
                used += 1
            nxt[p] = sha(b"\x01" + h + level[i]).digest() if i & 1 else sha(b"\x01" + level[i] + h).digest()
        level = nxt
        n = (n + 1) // 2
    if used != len(proof):
        return None
    return level[0]


def verify_multiproof(root: bytes, count: int, leaves: dict[int, bytes], proof: list[bytes]) -> bool:
    """True iff ``proof`` shows every ``leaves[index]`` (leaf bytes) at its index of a ``count``-leaf
    tree with ``root``. Never raises."""
    if type(root) is not bytes or len(root) != HASH_LEN or type(leaves) is not dict:
        return False
    if not all(isinstance(v, bytes) for v in leaves.values()):
        return False
    got = multiproof_root(count, {i: _leaf_hash(v) for i, v in leaves.items()}, proof)
    return got is not None and got == root
