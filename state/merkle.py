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
