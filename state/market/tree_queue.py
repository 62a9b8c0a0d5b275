"""The zk trees' update queue: Poseidon tree writes are bounded per block.

Appending a receipt leaf or rewriting a bidder leaf costs ~20 Poseidon hashes (~8 ms on one core,
bench/zk). Such writes are caused by block-end settlements and by miner record changes, neither of which
is metered per transaction, so they are queued here and at most ``MAX_TREE_UPDATES_PER_BLOCK`` run at
the end of each block (``zk-trees`` block hook, after the market's): a block that settles a thousand
attestable jobs still validates in a bounded time, and the trees catch up over the next blocks.
Entries run in order; each is ``[tag, ident]`` with a handler per tag.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import codec
from ..machine import BlockHook, Execution
from .ledger import Market

PREFIX = b"zk/q/"
_HEAD = PREFIX + b"h"  # next entry to run
_TAIL = PREFIX + b"t"  # next free slot
MAX_TREE_UPDATES_PER_BLOCK = 16

HANDLERS: dict[str, Callable[[Market, bytes], None]] = {}


def _int(ex: Execution, key: bytes) -> int:
    raw = ex.get_object(key)
    return 0 if raw is None else int.from_bytes(raw, "big")


def _entry(i: int) -> bytes:
    return PREFIX + b"e" + i.to_bytes(8, "big")


def enqueue(ex: Execution, tag: str, ident: bytes) -> None:
    tail = _int(ex, _TAIL)
    ex.put_object(_entry(tail), codec.encode([tag, ident]))
    ex.put_object(_TAIL, (tail + 1).to_bytes(8, "big"))


def pending(get_object) -> int:  # noqa: ANN001
    """Entries waiting (for views)."""
    head, tail = (get_object(k) for k in (_HEAD, _TAIL))
    return (0 if tail is None else int.from_bytes(tail, "big")) - (0 if head is None else int.from_bytes(head, "big"))


def drain(ex: Execution) -> None:
    head, tail = _int(ex, _HEAD), _int(ex, _TAIL)
    if head == tail:
        return
    mk = Market(ex)
    end = min(tail, head + MAX_TREE_UPDATES_PER_BLOCK)
    for i in range(head, end):
        tag, ident = codec.decode(ex.get_object(_entry(i)))
        HANDLERS[tag](mk, ident)
        ex.put_object(_entry(i), None)
    mk.flush()
    ex.put_object(_HEAD, end.to_bytes(8, "big"))


HOOK = BlockHook("zk-trees", order=60, end=drain)
