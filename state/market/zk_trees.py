"""The chain's Poseidon trees in state objects (the receipt tree, the bidder tree): one layout.

Node ``(level, index)`` lives at ``prefix ‖ level (1 byte) ‖ index (4 bytes)`` as 32 bytes, the leaf count
at ``prefix ‖ "n"`` as 8 bytes; the root is node ``(depth, 0)``. Reads take a ``get_object`` callable
(an execution's or the committed state's), so the RPC and the miner read what the state machine wrote.
"""

from __future__ import annotations

from collections.abc import Callable

from zk.poseidon_tree import META_LEVEL, PoseidonTree, zeros

from ..machine import Execution

GetObject = Callable[[bytes], "bytes | None"]


def node_key(prefix: bytes, level: int, index: int) -> bytes:
    return prefix + (b"n" if level == META_LEVEL else bytes([level]) + index.to_bytes(4, "big"))


class ReadNodes:
    """A read-only :class:`zk.poseidon_tree.NodeStore` over any ``get_object`` (committed state)."""

    def __init__(self, get_object: GetObject, prefix: bytes) -> None:
        self.get_object, self.prefix = get_object, prefix

    def get(self, level: int, index: int) -> int | None:
        raw = self.get_object(node_key(self.prefix, level, index))
        return None if raw is None else int.from_bytes(raw, "big")

    def put(self, level: int, index: int, value: int) -> None:
        raise TypeError("a read-only tree store")


class ObjectNodes(ReadNodes):
    """A :class:`zk.poseidon_tree.NodeStore` over an execution's state objects."""

    def __init__(self, ex: Execution, prefix: bytes) -> None:
        super().__init__(ex.get_object, prefix)
        self.ex = ex

    def put(self, level: int, index: int, value: int) -> None:
        size = 8 if level == META_LEVEL else 32
        self.ex.put_object(node_key(self.prefix, level, index), value.to_bytes(size, "big"))


def tree(ex: Execution, prefix: bytes, depth: int) -> PoseidonTree:
    return PoseidonTree(ObjectNodes(ex, prefix), depth)


def path(get_object: GetObject, prefix: bytes, depth: int, index: int) -> tuple[list[int], list[int]]:
    """The Merkle path of leaf ``index`` read from the stored nodes (``depth`` reads, no hashing)."""
    return PoseidonTree(ReadNodes(get_object, prefix), depth).path(index)


def size(get_object: GetObject, prefix: bytes) -> int:
    raw = get_object(node_key(prefix, META_LEVEL, 0))
    return 0 if raw is None else int.from_bytes(raw, "big")


def leaf(get_object: GetObject, prefix: bytes, index: int) -> int | None:
    raw = get_object(node_key(prefix, 0, index))
    return None if raw is None else int.from_bytes(raw, "big")


def root(get_object: GetObject, prefix: bytes, depth: int) -> int:
    """The current root (the empty tree's while nothing was appended)."""
    raw = get_object(node_key(prefix, depth, 0))
    return zeros(depth)[depth] if raw is None else int.from_bytes(raw, "big")
