"""Incremental binary Poseidon Merkle tree (Tornado/Semaphore style), pure and storage-agnostic.

Leaves fill left to right; a node is ``hash2(left, right)``; an empty leaf is 0 and an empty subtree of
height ``i`` is ``zeros(d)[i]`` (``zeros[0] = 0``, ``zeros[i+1] = hash2(zeros[i], zeros[i])``). Node ``(level,
index)`` is the ``index``-th node counted from the left at height ``level`` (leaves are level 0, the root
is ``(depth, 0)``).

The tree does no I/O: it reads and writes through a :class:`NodeStore` (two methods). Every non-empty node
is stored, so :meth:`PoseidonTree.path` works for any leaf; the leaf count is stored through the same
store at ``(META_LEVEL, 0)`` (absent means 0), so one batch of ``put`` calls carries the whole update and
a chain state machine commits it atomically with its other writes. :meth:`PoseidonTree.append` writes
``depth + 2`` entries, the count last.
"""

from __future__ import annotations

import functools
from typing import Protocol

from state.errors import InvariantError
from zk.errors import ProofError
from zk.poseidon import canonical, hash2

DEPTH = 20
MAX_DEPTH = 64
#: The level under which the store keeps the leaf count (index 0).
META_LEVEL = -1


class NodeStore(Protocol):
    """Where a tree keeps its nodes and its leaf count (``level == META_LEVEL``)."""

    def get(self, level: int, index: int) -> int | None:
        """The stored value, or None when never written."""
        ...

    def put(self, level: int, index: int, value: int) -> None:
        """Store ``value`` (a canonical scalar; the count at ``META_LEVEL``)."""
        ...


class DictStore:
    """An in-memory :class:`NodeStore` (tests, tools)."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[int, int], int] = {}

    def get(self, level: int, index: int) -> int | None:
        return self.nodes.get((level, index))

    def put(self, level: int, index: int, value: int) -> None:
        self.nodes[(level, index)] = value


@functools.cache
def zeros(depth: int) -> tuple[int, ...]:
    """Roots of empty subtrees of height 0..depth (``depth + 1`` values)."""
    _check_depth(depth)
    out = [0]
    for _ in range(depth):
        out.append(hash2(out[-1], out[-1]))
    return tuple(out)


def _check_depth(depth: int) -> None:
    if type(depth) is not int or not 1 <= depth <= MAX_DEPTH:
        raise ProofError(f"tree depth must be an int in [1, {MAX_DEPTH}]", "zk_out_of_range")


class PoseidonTree:
    """An append-only Poseidon Merkle tree of ``2**depth`` leaves over a :class:`NodeStore`."""

    def __init__(self, store: NodeStore, depth: int = DEPTH) -> None:
        _check_depth(depth)
        self.store = store
        self.depth = depth
        self.capacity = 1 << depth

    @property
    def size(self) -> int:
        """The number of leaves appended so far (the next leaf's index)."""
        n = self.store.get(META_LEVEL, 0)
        return 0 if n is None else n

    def append(self, leaf: int) -> int:
        """Add ``leaf`` at the next index, update its path to the root; return the index."""
        canonical(leaf)
        index = self.size
        if index >= self.capacity:
            raise ProofError(f"the Merkle tree is full ({self.capacity} leaves)", "zk_out_of_range")
        z = zeros(self.depth)
        cur, i = leaf, index
        self.store.put(0, i, cur)
        for level in range(self.depth):
            cur = hash2(self._stored(level, i - 1), cur) if i & 1 else hash2(cur, z[level])
            i >>= 1
            self.store.put(level + 1, i, cur)
        self.store.put(META_LEVEL, 0, index + 1)
        return index

    def update(self, index: int, leaf: int) -> None:
        """Replace the leaf at ``index`` (already appended) and its path to the root (0 removes a member:
        an empty leaf)."""
        canonical(leaf)
        if type(index) is not int or not 0 <= index < self.size:
            raise ProofError(f"no leaf at index {index!r}", "zk_out_of_range")
        z = zeros(self.depth)
        cur, i = leaf, index
        self.store.put(0, i, cur)
        for level in range(self.depth):
            sib = self.store.get(level, i ^ 1)
            sib = z[level] if sib is None else sib
            cur = hash2(sib, cur) if i & 1 else hash2(cur, sib)
            i >>= 1
            self.store.put(level + 1, i, cur)

    def root(self) -> int:
        """The current root (``zeros(depth)[depth]`` while empty)."""
        r = self.store.get(self.depth, 0)
        return zeros(self.depth)[self.depth] if r is None else r

    def path(self, index: int) -> tuple[list[int], list[int]]:
        """``(siblings, bits)`` from leaf ``index`` up; ``bits[i] = 1`` when the level-``i`` node is a right
        child (the circuit's ``left = bit ? sibling : cur; right = bit ? cur : sibling``)."""
        if type(index) is not int or not 0 <= index < self.size:
            raise ProofError(f"no leaf at index {index!r}", "zk_out_of_range")
        z = zeros(self.depth)
        siblings, bits = [], []
        for level in range(self.depth):
            i = index >> level
            s = self.store.get(level, i ^ 1)
            siblings.append(z[level] if s is None else s)
            bits.append(i & 1)
        return siblings, bits

    def _stored(self, level: int, index: int) -> int:
        v = self.store.get(level, index)
        if v is None:
            raise InvariantError(f"tree store lacks node ({level}, {index}) left of the next leaf")
        return v


def root_from_path(leaf: int, siblings: list[int], bits: list[int]) -> int:
    """The root that ``leaf`` and its ``path`` give (as the circuit computes it)."""
    if len(siblings) != len(bits) or any(type(b) is not int or b not in (0, 1) for b in bits):
        raise ProofError("a Merkle path needs one 0/1 bit per sibling", "zk_malformed")
    cur = leaf
    for s, b in zip(siblings, bits, strict=True):
        cur = hash2(s, cur) if b else hash2(cur, s)
    return cur
