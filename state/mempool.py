"""The transaction pool: validated, not yet committed transactions, ready for the next block.

A pure in-memory structure used from one trio task (no I/O, no threads, no locks; the only outside
input is the injectable ``clock``). Costs:

* :meth:`Mempool.add` is O(log n) (plus an O(k) walk for a tx inserted into the middle of a sender's
  queue of k txs, k <= ``max_per_sender``, O(1) per queued tx it promotes and O(log n) per tx it
  evicts or expires); signature verification dominates unless ``verified=True``.
* :meth:`Mempool.reap` is O(r log n) for r txs returned; it never scans the whole pool.
* :meth:`Mempool.update` is O(block + sum of the queues of the senders the block touched).
* :meth:`Mempool.expire` is O(log n) per expired tx (O(1) when none is due).

Pending and queued (geth's split). A sender's *pending* txs are the contiguous nonce run from its
committed account nonce: each can execute in the next blocks. Its *queued* txs come after a nonce gap
and cannot execute until the gap fills. A tx that fills the gap promotes the queued txs that become
contiguous; a block that advances the account nonce does the same; a tx leaving the middle of a
pending run (only a block that takes a tx out of order does that) demotes the txs above it. Queued txs
have their own budget: at most ``max_queued`` txs / ``max_queued_bytes`` bytes pool-wide and
``max_queued_per_sender`` per sender (refused with ``queued_full``), and they are dropped
``queued_lifetime_s`` after they were queued (by :meth:`add`, :meth:`update` and :meth:`expire`).
A pooled sender's txs are always affordable together in nonce order (cumulative cost <= cached
balance): a tx inserted below others that makes them unaffordable drops them, as a block does.

When the pool is full (``max_txs`` or ``max_bytes``) an executable newcomer (every tx pays at least
``min_fee``) evicts queued txs first, whatever their fee (and the txs it promoted itself, from the
top), then the lowest-fee pending tails with a fee strictly below its own; a queued newcomer may only
evict queued txs with a strictly lower fee, never a pending one. So txs that could not execute when it
came never keep out an executable tx: it is refused only when the txs already pending fill the pool
and too few of them (pending tails only) pay less than it.

Layout: a global ``hash -> entry`` dict; per sender a ``nonce -> entry`` dict, a sorted nonce list, the
length of its pending run and a cached copy of its committed account (nonce, balance), read from the
view when the sender first appears and refreshed by :meth:`update` for every account a block touches.
Heaps with lazy deletion: *heads* (each sender's executable tx, nonce == account nonce, highest fee
first) drive :meth:`reap`; *tails* (each sender's last pending tx, lowest fee first) drive the
eviction of pending txs, so an eviction never opens a nonce gap; *queued* (lowest fee, then oldest)
drives the eviction of queued txs and *deadlines* (oldest first) their expiry. Stale heap items are
skipped when met and a heap is rebuilt once it holds more than twice as many items as it has live
ones plus a slack (checked every 64 adds and on each update or expiry).
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from heapq import heapify, heappop, heappush
from itertools import islice
from typing import Protocol

from .errors import TxError
from .types import MAX_WITNESS_TX_BYTES, TX_TRANSFER, WITNESS_TX_TYPES, Account, Transaction

REASONS = (
    "wrong_chain",
    "bad_signature",
    "fee_too_low",
    "nonce_too_low",
    "nonce_gap",
    "insufficient_balance",
    "already_known",
    "replacement_underpriced",
    "mempool_full",
    "queued_full",
    "too_large",
    "invalid_body",
    "sender_limit",
    "sponsor_refused",
)

# No signed transaction encodes in fewer bytes than this (7 keys, a 32-byte sender and a 64-byte
# signature alone take ~140). Reap stops filling a block once less room than this is left.
_MIN_TX_BYTES = 128
# Reap gives up after this many consecutive txs that did not fit the remaining byte budget.
_MAX_REAP_MISSES = 256
# Heaps are rebuilt when they hold more than 2 * (live items) + this many items.
_HEAP_SLACK = 4096


class MempoolError(TxError):
    """A transaction refused by the pool; ``reason`` is one of :data:`REASONS`. ``detail`` is the
    refusing rule's own reason code where it has a finer one (an ``invalid_body`` refused by a body check
    with ``invalid_params``, ``zk_malformed``, …), else None."""

    reason = "mempool"

    def __init__(self, message: str, reason: str, detail: str | None = None) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown mempool rejection reason {reason!r}")
        super().__init__(message, reason)
        self.detail = detail


@dataclass
class MempoolConfig:
    """Pool limits and admission policy."""

    max_txs: int = 100_000
    max_bytes: int = 64 << 20
    max_tx_bytes: int = 64 << 10
    nonce_window: int = 1024  # how far ahead of the account nonce a tx may be queued
    max_per_sender: int = 4096
    replace_bump_percent: int = 10  # a replacement needs fee >= old_fee * (100 + bump) / 100
    min_fee: int = 1
    max_queued: int = 0  # txs behind a nonce gap, pool-wide; 0: max_txs // 8
    max_queued_bytes: int = 0  # their bytes, pool-wide; 0: max_bytes // 8
    max_queued_per_sender: int = 64
    queued_lifetime_s: float = 180.0  # a queued tx is dropped this long after it was queued

    def __post_init__(self) -> None:
        for name in (
            "max_txs", "max_bytes", "max_tx_bytes", "nonce_window", "max_per_sender", "max_queued_per_sender"
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"MempoolConfig.{name} must be >= 1")
        for name in ("replace_bump_percent", "min_fee", "max_queued", "max_queued_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"MempoolConfig.{name} must be >= 0")
        if not self.queued_lifetime_s > 0:
            raise ValueError("MempoolConfig.queued_lifetime_s must be > 0")

    @property
    def queued_limits(self) -> tuple[int, int]:
        """The effective (max_queued, max_queued_bytes), with the 0 = 1/8 defaults resolved."""
        return (
            self.max_queued or max(1, self.max_txs // 8),
            self.max_queued_bytes or max(1, self.max_bytes // 8),
        )


class AccountView(Protocol):
    """Committed state as the pool sees it."""

    def get_account(self, pubkey: bytes) -> Account:
        """The committed account; ``Account(0, 0)`` for an unknown one."""
        ...


def default_cost(tx: Transaction) -> int:
    """What the sender must afford: the fee plus the value moved (``body["amount"]`` for a transfer).

    Other tx types should pass their own ``cost`` to :class:`Mempool` (see ``state.machine.tx_cost``).
    """
    if tx.type == TX_TRANSFER:
        amount = tx.body.get("amount")
        if type(amount) is not int or amount < 0:
            raise TxError("transfer 'amount' must be a non-negative integer", "invalid_body")
        return tx.fee + amount
    return tx.fee


def default_touches(tx: Transaction) -> tuple[bytes, ...]:
    """Accounts other than the sender whose committed state ``tx`` may change (transfer: the recipient)."""
    if tx.type == TX_TRANSFER:
        to = tx.body.get("to")
        if type(to) is bytes:
            return (to,)
    return ()


def _no_body_check(tx: Transaction) -> None:
    return None


class _Entry:
    """A pooled transaction with what the pool derives from it once.

    ``qtime``/``qstamp``: when the tx was last queued, and a stamp unique to that queuing (heap items
    of the queued heaps carry it; an item whose stamp differs, or whose tx is pending now, is stale).
    """

    __slots__ = ("tx", "hash", "sender", "nonce", "fee", "cost", "size", "seq", "qtime", "qstamp", "held")

    def __init__(self, tx: Transaction, cost: int, size: int, seq: int) -> None:
        self.tx = tx
        self.hash = tx.hash
        self.sender = tx.sender
        self.nonce = tx.nonce
        self.fee = tx.fee
        self.cost = cost
        self.size = size
        self.seq = seq
        self.qtime: float | None = None
        self.qstamp = -1
        self.held = False  # kept out of reap (Mempool.hold)


class _Sender:
    """One sender's txs, the length of its pending run and its cached committed account.

    Pending: ``nonces[:plen]`` == ``nonce .. nonce + plen - 1``; queued: ``nonces[plen:]``, all above
    ``nonce + plen`` (which is not pooled)."""

    __slots__ = ("txs", "nonces", "nonce", "balance", "total_cost", "plen")

    def __init__(self, nonce: int, balance: int) -> None:
        self.txs: dict[int, _Entry] = {}
        self.nonces: list[int] = []  # sorted, all >= self.nonce
        self.nonce = nonce  # committed account nonce
        self.balance = balance  # committed account balance
        self.total_cost = 0  # sum of the costs of every pooled tx of this sender
        self.plen = 0  # number of pending txs

    def run_length(self) -> int:
        """Length of the contiguous nonce run starting at the account nonce (computed, not ``plen``)."""
        nonces = self.nonces
        base = self.nonce
        if not nonces or nonces[0] != base:
            return 0
        n = len(nonces)
        if nonces[-1] - base == n - 1:
            return n
        # nonces[i] - i is non-decreasing and equals base exactly on the run: binary search its end.
        lo, hi = 1, n - 1  # nonces[lo-1] is in the run, nonces[hi] is not
        while lo < hi:
            mid = (lo + hi) >> 1
            if nonces[mid] - mid == base:
                lo = mid + 1
            else:
                hi = mid
        return lo


_NO_SENDER = _Sender(0, 0)  # placeholder, never part of a pool


class Mempool:
    """Pending and queued transactions of one chain, validated against committed state (see module
    docstring)."""

    def __init__(
        self,
        chain_id: str,
        view: AccountView,
        config: MempoolConfig | None = None,
        *,
        cost: Callable[[Transaction], int] = default_cost,
        check_body: Callable[[Transaction], None] = _no_body_check,
        touches: Callable[[Transaction], Iterable[bytes]] = default_touches,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``cost(tx)``: total the sender must afford (fee + value moved). ``check_body(tx)``: raises
        :class:`TxError` for a malformed body. ``touches(tx)``: accounts besides the sender that
        executing ``tx`` may change; :meth:`update` refreshes them (a credited recipient may afford
        more). ``clock()``: seconds on a monotonic clock, for the lifetime of queued txs."""
        self.chain_id = chain_id
        self.config = cfg = config if config is not None else MempoolConfig()
        self._view = view
        self._cost = cost
        self._check_body = check_body
        self._touches = touches
        self._clock = clock
        # Config copied into attributes: add() is hot.
        self._max_txs = cfg.max_txs
        self._max_bytes = cfg.max_bytes
        self._max_tx_bytes = cfg.max_tx_bytes
        self._window = cfg.nonce_window
        self._max_per_sender = cfg.max_per_sender
        self._bump = 100 + cfg.replace_bump_percent
        self._min_fee = cfg.min_fee
        self._max_queued, self._max_qbytes = cfg.queued_limits
        self._max_queued_per_sender = cfg.max_queued_per_sender
        self._lifetime = cfg.queued_lifetime_s
        self._by_hash: dict[bytes, _Entry] = {}
        self._senders: dict[bytes, _Sender] = {}
        self._bytes = 0
        self._queued = 0  # queued txs
        self._qbytes = 0  # their bytes
        self._seq = 0
        self._qseq = 0
        self._heads: list[tuple[int, int, bytes]] = []  # (-fee, seq, hash) of executable txs
        self._tails: list[tuple[int, int, bytes]] = []  # (fee, -seq, hash) of each sender's last pending tx
        self._qheap: list[tuple[int, float, int, bytes]] = []  # (fee, qtime, qstamp, hash) of queued txs
        self._deadlines: list[tuple[float, int, bytes]] = []  # (qtime, qstamp, hash) of queued txs

    # ------------------------------------------------------------------------------------------
    # Queries

    def hold(self, tx_hash: bytes) -> None:
        """Keep a pooled tx out of :meth:`reap` until :meth:`release` (or until it leaves the pool): a
        stem transaction (``node/stem.py``) goes into no block this node proposes before it was gossiped."""
        e = self._by_hash.get(tx_hash)
        if e is not None:
            e.held = True

    def release(self, tx_hash: bytes) -> None:
        """End :meth:`hold` of a tx (nothing if it is not held or not pooled)."""
        e = self._by_hash.get(tx_hash)
        if e is not None:
            e.held = False

    def is_held(self, tx_hash: bytes) -> bool:
        e = self._by_hash.get(tx_hash)
        return e is not None and e.held

    def get(self, tx_hash: bytes) -> Transaction | None:
        """The pooled transaction with this hash, if any (pending or queued)."""
        e = self._by_hash.get(tx_hash)
        return e.tx if e is not None else None

    def __contains__(self, tx_hash: object) -> bool:
        return tx_hash in self._by_hash

    def __len__(self) -> int:
        return len(self._by_hash)

    @property
    def size_bytes(self) -> int:
        """Sum of the encoded sizes of the pooled transactions."""
        return self._bytes

    @property
    def pending_count(self) -> int:
        """Pooled txs that can execute now (each sender's contiguous run from its account nonce)."""
        return len(self._by_hash) - self._queued

    @property
    def queued_count(self) -> int:
        """Pooled txs behind a nonce gap."""
        return self._queued

    def senders(self) -> int:
        """Number of senders with at least one pooled transaction."""
        return len(self._senders)

    def pending_nonce(self, sender: bytes) -> int:
        """Next nonce a wallet should use: account nonce + length of the sender's pending run."""
        s = self._senders.get(sender)
        if s is None:
            return self._view.get_account(sender).nonce
        return s.nonce + s.plen

    def pending_run(self, sender: bytes, below_nonce: int | None = None) -> list[Transaction]:
        """The sender's pending (executable) transactions in nonce order, those below ``below_nonce``."""
        s = self._senders.get(sender)
        if s is None:
            return []
        run = [s.txs[n].tx for n in s.nonces[: s.plen]]
        return run if below_nonce is None else [t for t in run if t.nonce < below_nonce]

    def is_queued(self, tx_hash: bytes) -> bool:
        """Whether the pooled tx with this hash is queued (behind a nonce gap); False if not pooled."""
        e = self._by_hash.get(tx_hash)
        return e is not None and self._queued_now(e)

    def stats(self) -> dict:
        """Size figures for metrics and RPC."""
        return {
            "size": len(self._by_hash),
            "bytes": self._bytes,
            "senders": len(self._senders),
            "pending": len(self._by_hash) - self._queued,
            "queued": self._queued,
            "queued_bytes": self._qbytes,
            "max_txs": self._max_txs,
            "max_bytes": self._max_bytes,
            "max_queued": self._max_queued,
            "max_queued_bytes": self._max_qbytes,
        }

    # ------------------------------------------------------------------------------------------
    # Admission

    def add(self, tx: Transaction, *, verified: bool = False) -> list[bytes]:
        """Validate and insert ``tx``; returns the hashes of the txs that left the pool: the one it
        replaced (first), those evicted to make room, later txs of the same sender it made
        unaffordable, and queued txs whose lifetime ran out (dropped first, even if ``tx`` is refused).

        Checks, in order: too_large, wrong_chain, fee_too_low, invalid_body, already_known,
        nonce_too_low, nonce_gap, replacement_underpriced, sender_limit, queued_full (the sender's
        queued budget), insufficient_balance, bad_signature (skipped when ``verified``), then room:
        queued_full (the pool's queued budget) or mempool_full. Raises :class:`MempoolError`.
        """
        now = self._clock()
        deadlines = self._deadlines
        expired = self._expire(now) if deadlines and now - deadlines[0][0] >= self._lifetime else []
        size = len(tx.raw)
        # Witness-carrying dispute transactions (llm_steps, llm_step_proof) have their own consensus bound.
        limit = MAX_WITNESS_TX_BYTES if tx.type in WITNESS_TX_TYPES else self._max_tx_bytes
        if size > limit:
            raise MempoolError(f"transaction too large: {size} bytes > limit {limit} bytes", "too_large")
        if tx.chain_id != self.chain_id:
            raise MempoolError(
                f"wrong chain: transaction is for chain {tx.chain_id!r}, this pool is for {self.chain_id!r}",
                "wrong_chain",
            )
        fee = tx.fee
        if fee < self._min_fee:
            raise MempoolError(f"fee too low: fee {fee} < minimum {self._min_fee}", "fee_too_low")
        try:
            self._check_body(tx)
            cost = self._cost(tx)
        except TxError as exc:
            detail = exc.reason if exc.reason != "invalid_body" else None
            raise MempoolError(f"invalid body: {exc}", "invalid_body", detail) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise MempoolError(f"invalid body: {type(exc).__name__}: {exc}", "invalid_body") from None
        h = tx.hash
        if h in self._by_hash:
            raise MempoolError(
                f"already known: transaction 0x{h.hex()} is already in the pool", "already_known"
            )

        s = self._senders.get(tx.sender)
        if s is None:
            acct = self._view.get_account(tx.sender)
            base, balance, end = acct.nonce, acct.balance, acct.nonce
        else:
            base, balance = s.nonce, s.balance
            end = base + s.plen
        nonce = tx.nonce
        if nonce < base:
            raise MempoolError(f"nonce too low: account nonce is {base}, tx nonce {nonce}", "nonce_too_low")
        if nonce >= base + self._window:
            raise MempoolError(
                f"nonce gap: account nonce is {base}, tx nonce {nonce} is not below "
                f"{base + self._window} (nonce window {self._window})",
                "nonce_gap",
            )
        executable = nonce <= end  # appends to (or replaces within) the pending run

        old: _Entry | None = None
        if s is None:
            needed = total_after = cost
        else:
            old = s.txs.get(nonce)
            if old is not None:
                if fee * 100 < old.fee * self._bump:
                    required = -(-old.fee * self._bump // 100)
                    raise MempoolError(
                        f"replacement underpriced: nonce {nonce} is taken by a tx with fee {old.fee}; "
                        f"a replacement needs fee >= {required} (+{self._bump - 100}%), got {fee}",
                        "replacement_underpriced",
                    )
            elif len(s.txs) >= self._max_per_sender:
                raise MempoolError(
                    f"sender limit: sender already has {len(s.txs)} pooled txs (limit {self._max_per_sender})",
                    "sender_limit",
                )
            elif not executable and len(s.nonces) - s.plen >= self._max_queued_per_sender:
                raise MempoolError(
                    f"queued full: sender already has {len(s.nonces) - s.plen} txs waiting behind a nonce "
                    f"gap (limit {self._max_queued_per_sender} per sender); its next executable nonce is {end}",
                    "queued_full",
                )
            nonces = s.nonces
            total_after = s.total_cost + cost - (old.cost if old is not None else 0)
            if nonce > nonces[-1]:
                needed = total_after
            else:  # cost of the pooled txs with nonce <= this one, walking the shorter side
                txs = s.txs
                idx = bisect_right(nonces, nonce)
                if idx <= len(nonces) >> 1:
                    needed = sum(txs[n].cost for n in islice(nonces, idx))
                else:
                    needed = s.total_cost - sum(txs[n].cost for n in islice(nonces, idx, None))
                needed += cost
                if old is not None:
                    needed -= old.cost
        if needed > balance:
            raise MempoolError(
                f"insufficient balance: balance {balance} < {needed} needed for this tx and the "
                f"sender's pooled txs up to nonce {nonce}",
                "insufficient_balance",
            )
        if not verified and not tx.verify_signature():
            raise MempoolError(
                f"bad signature: transaction 0x{h.hex()} is not signed by its sender", "bad_signature"
            )

        # Room: refuse cheaply when nothing may be evicted for this tx (the exact answer is in
        # _make_room; skipped when the tx drops later txs of its own sender, which frees room).
        if total_after <= balance:
            old_size = old.size if old is not None else 0
            pool_full = (old is None and len(self._by_hash) >= self._max_txs) or (
                self._bytes + size - old_size > self._max_bytes
            )
            if executable:
                if pool_full and not self._queued:
                    # (Its own sender's last tx is no candidate once this one is appended: decide below.)
                    lowest = self._peek_tail()
                    if lowest is None or (lowest.fee >= fee and lowest.sender != tx.sender):
                        raise self._full_error(fee, lowest, False, False)
            else:
                queued_full = (old is None and self._queued >= self._max_queued) or (
                    self._qbytes + size - old_size > self._max_qbytes
                )
                if queued_full or pool_full:
                    lowest = self._peek_queued()
                    if lowest is None or (lowest.fee >= fee and lowest is not old):
                        if queued_full:
                            raise self._queued_full_error(fee, lowest, False)
                        raise self._full_error(fee, lowest, False, True)

        seq = self._seq
        self._seq = seq + 1
        e = _Entry(tx, cost, size, seq)
        if s is None:
            s = _Sender(base, balance)
            self._senders[tx.sender] = s
        if old is not None:
            self._swap(s, old, e)
        else:
            self._link(s, e, now)
        dropped = self._drop_unaffordable(s) if s.total_cost > s.balance else []
        if (
            len(self._by_hash) > self._max_txs
            or self._bytes > self._max_bytes
            or (not executable and (self._queued > self._max_queued or self._qbytes > self._max_qbytes))
        ):
            out = self._make_room(s, e, old, dropped, now)
        else:
            out = [old.hash] if old is not None else []
        if dropped:
            out.extend(d.hash for d in dropped)
        if expired:
            out.extend(expired)
        if not seq & 63:  # stale heap items: looked at every 64 adds
            self._maybe_rebuild()
        return out

    # ------------------------------------------------------------------------------------------
    # Block proposal

    def reap(self, max_txs: int, max_bytes: int) -> list[Transaction]:
        """Txs for the next block, without removing anything.

        Only pending txs: per sender the contiguous nonce run from the committed account nonce (always
        affordable in nonce order); across senders highest fee first, then arrival order; a sender's
        nonce n+1 always comes after n. A tx that does not fit the remaining ``max_bytes`` ends its
        sender's run (a later nonce cannot go without it); others still fill up.
        """
        out: list[Transaction] = []
        if max_txs <= 0 or max_bytes < _MIN_TX_BYTES:
            return out
        heads = self._heads
        get = self._by_hash.get
        senders = self._senders
        started: set[bytes] = set()
        popped: list[tuple[int, int, bytes]] = []
        # (-fee, seq, entry, sender state, cost already spent by this sender in the block)
        local: list[tuple[int, int, _Entry, _Sender, int]] = []
        room = max_bytes
        misses = 0
        head: _Entry | None = None  # validated top of ``heads`` (stays valid: only reap pops it)
        head_s = _NO_SENDER
        while True:
            if head is None:
                while heads:
                    item = heads[0]
                    e = get(item[2])
                    if e is not None and e.seq == item[1] and e.sender not in started:
                        s = senders[e.sender]
                        if e.nonce == s.nonce and s.plen:
                            head, head_s = e, s
                            break
                    heappop(heads)
            if head is not None and (not local or (-head.fee, head.seq) < (local[0][0], local[0][1])):
                e, s, spent = head, head_s, 0
                popped.append(heappop(heads))
                started.add(e.sender)
                head = None
            elif local:
                _, _, e, s, spent = heappop(local)
            else:
                break
            if e.size > room:
                misses += 1
                if misses >= _MAX_REAP_MISSES:
                    break
                continue
            if e.held:  # ends its sender's run, as an unaffordable tx does
                continue
            spent += e.cost
            if spent > s.balance:
                continue
            misses = 0
            out.append(e.tx)
            room -= e.size
            if len(out) >= max_txs or room < _MIN_TX_BYTES:
                break
            if e.nonce + 1 < s.nonce + s.plen:  # the next pending tx (never a queued one)
                nxt = s.txs[e.nonce + 1]
                heappush(local, (-nxt.fee, nxt.seq, nxt, s, spent))
        for item in popped:
            heappush(heads, item)
        return out

    # ------------------------------------------------------------------------------------------
    # After a commit; lifetime

    def update(
        self, committed: Iterable[Transaction], view: AccountView, *, touched: Iterable[bytes] = ()
    ) -> list[bytes]:
        """After a block commits: drop the included txs, then re-check only the accounts the block
        touched (senders of its txs, ``touches(tx)`` of each, and ``touched``): refresh the cached
        account, drop txs whose nonce is now below the account nonce and, walking the sender's txs in
        nonce order, every tx from the first whose cumulative cost exceeds the new balance onward;
        then promote queued txs that the new account nonce made contiguous (or demote pending txs
        left behind a gap). Finally drop the queued txs whose lifetime ran out.

        ``view`` becomes the pool's view. Returns the dropped hashes, not counting included ones.
        """
        now = self._clock()
        self._view = view
        by_hash = self._by_hash
        get = by_hash.get
        senders = self._senders
        touches = self._touches
        accounts: set[bytes] = set(touched)
        add_account = accounts.add
        included: dict[bytes, list[_Entry]] = {}  # sender -> its included txs still pooled
        for tx in committed:
            sender = tx.sender
            add_account(sender)
            for other in touches(tx):
                add_account(other)
            e = get(tx.hash)
            if e is not None:
                lst = included.get(sender)
                if lst is None:
                    included[sender] = [e]
                else:
                    lst.append(e)

        dropped: list[bytes] = []
        size = 0  # bytes removed
        qcount = 0  # queued txs removed
        qsize = 0  # their bytes
        for acct in accounts:
            s = senders.get(acct)
            if s is None:
                continue
            txs = s.txs
            nonces = s.nonces
            old_base = s.nonce
            old_end = old_base + s.plen  # txs at or above were queued
            old_tail = txs[old_end - 1] if s.plen else None
            inc = included.get(acct)
            if inc:
                gone = set()
                for e in inc:
                    if txs.get(e.nonce) is not e:
                        continue  # listed twice in the block
                    del txs[e.nonce]
                    del by_hash[e.hash]
                    size += e.size
                    s.total_cost -= e.cost
                    gone.add(e.nonce)
                    if e.nonce >= old_end:
                        qcount += 1
                        qsize += e.size
                if len(gone) == 1 and nonces[0] in gone:
                    del nonces[0]  # the usual case: the block took the head
                elif gone:
                    nonces[:] = [n for n in nonces if n not in gone]
            a = view.get_account(acct)
            base = s.nonce = a.nonce
            balance = s.balance = a.balance
            if nonces and nonces[0] < base:
                i = bisect_left(nonces, base)
                for n in nonces[:i]:
                    e = txs.pop(n)
                    del by_hash[e.hash]
                    size += e.size
                    s.total_cost -= e.cost
                    dropped.append(e.hash)
                    if n >= old_end:
                        qcount += 1
                        qsize += e.size
                del nonces[:i]
            if s.total_cost > balance:
                spent = 0
                for i, n in enumerate(nonces):
                    spent += txs[n].cost
                    if spent > balance:
                        for m in nonces[i:]:
                            e = txs.pop(m)
                            del by_hash[e.hash]
                            size += e.size
                            s.total_cost -= e.cost
                            dropped.append(e.hash)
                            if m >= old_end:
                                qcount += 1
                                qsize += e.size
                        del nonces[i:]
                        break
            if not nonces:
                s.plen = 0
                del senders[acct]
                continue
            plen = s.plen = s.run_length()
            end = base + plen
            if end > old_end:  # promote: queued txs now in the run
                for n in range(max(old_end, base), end):
                    qcount += 1
                    qsize += txs[n].size
            elif end < old_end:  # demote: pending txs now behind a gap
                for n in islice(nonces, plen, bisect_left(nonces, old_end)):
                    self._mark_queued(txs[n], now)
            if plen:
                t = txs[end - 1]
                if t is not old_tail:
                    heappush(self._tails, (t.fee, -t.seq, t.hash))
            if base != old_base:
                hd = txs.get(base)
                if hd is not None:
                    heappush(self._heads, (-hd.fee, hd.seq, hd.hash))
            if len(nonces) - plen > self._max_queued_per_sender:  # only after a demotion
                for n in nonces[plen + self._max_queued_per_sender :][::-1]:
                    e = txs[n]
                    self._unlink(s, e, now)
                    dropped.append(e.hash)
        self._bytes -= size
        self._queued -= qcount
        self._qbytes -= qsize
        while self._queued > self._max_queued or self._qbytes > self._max_qbytes:  # only after a demotion
            e = self._pop_queued()
            if e is None:
                break
            self._unlink(senders[e.sender], e, now)
            dropped.append(e.hash)
        dropped.extend(self._expire(now))
        self._maybe_rebuild()
        return dropped

    def expire(self, now: float | None = None) -> list[bytes]:
        """Drop the queued txs queued at least ``queued_lifetime_s`` before ``now`` (default: the
        pool's clock); returns their hashes. Cheap when none is due: the node may call it on a timer."""
        out = self._expire(self._clock() if now is None else now)
        if out:
            self._maybe_rebuild()
        return out

    def flush(self) -> int:
        """Drop every pooled tx, pending and queued (an operator's reset); returns how many."""
        n = len(self._by_hash)
        self._by_hash.clear()
        self._senders.clear()
        self._heads.clear()
        self._tails.clear()
        self._qheap.clear()
        self._deadlines.clear()
        self._bytes = self._queued = self._qbytes = 0
        return n

    # ------------------------------------------------------------------------------------------
    # Internals: structure

    def _queued_now(self, e: _Entry) -> bool:
        s = self._senders[e.sender]
        return e.nonce >= s.nonce + s.plen

    def _mark_queued(self, e: _Entry, qtime: float) -> None:
        """Count ``e`` (already linked, at or above its sender's pending end) as queued since ``qtime``."""
        stamp = self._qseq
        self._qseq = stamp + 1
        e.qtime = qtime
        e.qstamp = stamp
        heappush(self._qheap, (e.fee, qtime, stamp, e.hash))
        heappush(self._deadlines, (qtime, stamp, e.hash))
        self._queued += 1
        self._qbytes += e.size

    def _link(self, s: _Sender, e: _Entry, now: float, restoring: bool = False) -> None:
        """Insert ``e`` (its nonce is free): it joins the pending run (promoting the queued txs it makes
        contiguous) or is queued. ``restoring``: putting back a tx taken out by a failed add, which
        keeps the time it was queued."""
        self._by_hash[e.hash] = e
        n = e.nonce
        txs = s.txs
        txs[n] = e
        nonces = s.nonces
        if not nonces or n > nonces[-1]:
            nonces.append(n)
        else:
            insort(nonces, n)
        s.total_cost += e.cost
        self._bytes += e.size
        end = s.nonce + s.plen
        if n != end:
            self._mark_queued(e, e.qtime if restoring and e.qtime is not None else now)
            return
        if n == s.nonce:
            heappush(self._heads, (-e.fee, e.seq, e.hash))
        end += 1
        nxt = txs.get(end)
        if nxt is None:  # the usual case: appended to the run, nothing queued behind it
            s.plen += 1
            heappush(self._tails, (e.fee, -e.seq, e.hash))
            return
        while nxt is not None:  # promote
            self._queued -= 1
            self._qbytes -= nxt.size
            end += 1
            nxt = txs.get(end)
        s.plen = end - s.nonce
        t = txs[end - 1]
        heappush(self._tails, (t.fee, -t.seq, t.hash))

    def _swap(self, s: _Sender, old: _Entry, new: _Entry) -> None:
        """Put ``new`` in the place of ``old`` (same sender and nonce, same pending/queued state)."""
        del self._by_hash[old.hash]
        self._by_hash[new.hash] = new
        n = new.nonce
        s.txs[n] = new
        s.total_cost += new.cost - old.cost
        self._bytes += new.size - old.size
        end = s.nonce + s.plen
        if n >= end:  # queued: the slot keeps its queued time
            self._queued -= 1
            self._qbytes -= old.size
            self._mark_queued(new, old.qtime if old.qtime is not None else self._clock())
            return
        if n == end - 1:
            heappush(self._tails, (new.fee, -new.seq, new.hash))
        if n == s.nonce:
            heappush(self._heads, (-new.fee, new.seq, new.hash))

    def _unlink(self, s: _Sender, e: _Entry, now: float, restoring: bool = False) -> None:
        """Remove one pooled tx; a pending tx below the last one demotes those above it. Drops the
        sender once it has no txs left."""
        del self._by_hash[e.hash]
        n = e.nonce
        txs = s.txs
        del txs[n]
        nonces = s.nonces
        if nonces[-1] == n:
            nonces.pop()
        else:
            del nonces[bisect_left(nonces, n)]
        s.total_cost -= e.cost
        self._bytes -= e.size
        end = s.nonce + s.plen
        if n >= end:
            self._queued -= 1
            self._qbytes -= e.size
        else:
            for m in range(n + 1, end):  # empty unless e was below the last pending tx
                d = txs[m]
                self._mark_queued(d, d.qtime if restoring and d.qtime is not None else now)
            s.plen = n - s.nonce
            if s.plen:
                t = txs[n - 1]
                heappush(self._tails, (t.fee, -t.seq, t.hash))
        if not nonces:
            del self._senders[e.sender]

    def _drop_unaffordable(self, s: _Sender) -> list[_Entry]:
        """Remove, from the highest nonce down, every tx from the first whose cumulative cost exceeds
        the sender's balance (a tx inserted below them made them unaffordable)."""
        txs = s.txs
        nonces = s.nonces
        spent = 0
        balance = s.balance
        cut = len(nonces)
        for i, n in enumerate(nonces):
            spent += txs[n].cost
            if spent > balance:
                cut = i
                break
        out = [txs[n] for n in reversed(nonces[cut:])]
        for d in out:
            self._unlink(s, d, 0.0)  # from the top down: never demotes, so no queued time is needed
        return out

    def _expire(self, now: float) -> list[bytes]:
        heap = self._deadlines
        by_hash = self._by_hash
        senders = self._senders
        lifetime = self._lifetime
        out: list[bytes] = []
        while heap and now - heap[0][0] >= lifetime:
            _, stamp, h = heappop(heap)
            e = by_hash.get(h)
            if e is None or e.qstamp != stamp:
                continue
            s = senders[e.sender]
            if e.nonce < s.nonce + s.plen:
                continue  # promoted since
            self._unlink(s, e, now)
            out.append(h)
        return out

    # ------------------------------------------------------------------------------------------
    # Internals: eviction

    def _pop_tail(self) -> _Entry | None:
        """Pop the lowest-fee tx that is the last of its sender's pending run (newest first on equal fees)."""
        tails = self._tails
        by_hash = self._by_hash
        senders = self._senders
        while tails:
            _, negseq, h = heappop(tails)
            e = by_hash.get(h)
            if e is not None and e.seq == -negseq:
                s = senders[e.sender]
                if s.plen and s.nonce + s.plen - 1 == e.nonce:
                    return e
        return None

    def _peek_tail(self) -> _Entry | None:
        """The tx :meth:`_pop_tail` would pop, left in place (stale items above it are dropped)."""
        tails = self._tails
        by_hash = self._by_hash
        senders = self._senders
        while tails:
            _, negseq, h = tails[0]
            e = by_hash.get(h)
            if e is not None and e.seq == -negseq:
                s = senders[e.sender]
                if s.plen and s.nonce + s.plen - 1 == e.nonce:
                    return e
            heappop(tails)
        return None

    def _peek_queued(self) -> _Entry | None:
        """The queued tx to evict first (lowest fee, then queued longest), left in place."""
        heap = self._qheap
        by_hash = self._by_hash
        senders = self._senders
        while heap:
            _, _, stamp, h = heap[0]
            e = by_hash.get(h)
            if e is not None and e.qstamp == stamp:
                s = senders[e.sender]
                if e.nonce >= s.nonce + s.plen:
                    return e
            heappop(heap)
        return None

    def _push_queued_item(self, e: _Entry) -> None:
        """Put back the eviction item of a queued tx popped by :meth:`_pop_queued`."""
        heappush(self._qheap, (e.fee, e.qtime if e.qtime is not None else 0.0, e.qstamp, e.hash))

    def _pop_queued(self) -> _Entry | None:
        e = self._peek_queued()
        if e is not None:
            heappop(self._qheap)
        return e

    def _full_error(self, fee: int, victim: _Entry | None, more: bool, queued: bool) -> MempoolError:
        if victim is None:
            if queued:
                why = "cannot make room: a tx behind a nonce gap never evicts an executable tx"
            else:
                why = "cannot make room: no other tx can be evicted"
        elif more:
            why = f"is not above the fee {victim.fee} of a tx that would also have to be evicted"
        elif queued:
            why = f"is not above the lowest queued fee {victim.fee} (a tx behind a nonce gap only evicts queued txs)"
        else:
            why = f"is not above the lowest evictable fee {victim.fee}"
        return MempoolError(
            f"mempool full ({len(self._by_hash)}/{self._max_txs} txs, "
            f"{self._bytes}/{self._max_bytes} bytes): fee {fee} {why}",
            "mempool_full",
        )

    def _queued_full_error(self, fee: int, victim: _Entry | None, more: bool) -> MempoolError:
        if victim is None:
            why = "cannot make room: no other queued tx can be evicted"
        elif more:
            why = f"is not above the fee {victim.fee} of a queued tx that would also have to be evicted"
        else:
            why = f"is not above the lowest queued fee {victim.fee}"
        return MempoolError(
            f"queued full ({self._queued}/{self._max_queued} txs, {self._qbytes}/{self._max_qbytes} bytes "
            f"behind nonce gaps): fee {fee} {why}",
            "queued_full",
        )

    def _make_room(
        self, s_new: _Sender, new: _Entry, old: _Entry | None, dropped: list[_Entry], now: float
    ) -> list[bytes]:
        """Evict until the pool and its queued budget fit: for an executable ``new``, queued txs first
        (any fee), then the txs it promoted (its sender's run above it, from the top), then pending
        tails with a fee strictly below ``new``'s; for a queued ``new``, only queued txs with a fee
        strictly below its own. Otherwise undo everything (the insertion of ``new`` and the drops of
        ``dropped`` included) and raise ``queued_full`` or ``mempool_full``."""
        executable = new.nonce < s_new.nonce + s_new.plen
        evicted: list[tuple[_Sender, _Entry]] = []
        while True:
            over_queued = self._queued > self._max_queued or self._qbytes > self._max_qbytes
            if not (over_queued or len(self._by_hash) > self._max_txs or self._bytes > self._max_bytes):
                break
            victim = self._pop_queued() if self._queued else None
            if victim is not None and (executable or (victim is not new and victim.fee < new.fee)):
                pass  # a queued tx goes: any for an executable newcomer, a cheaper one for a queued one
            elif victim is not None:  # a queued newcomer that is not above the cheapest queued tx
                if victim is new:  # the newcomer has the lowest fee; name the next one in the message
                    victim = self._pop_queued()
                    self._push_queued_item(new)
                if victim is not None:
                    self._push_queued_item(victim)
                if over_queued:
                    self._undo(s_new, new, old, dropped, evicted, now)
                    raise self._queued_full_error(new.fee, victim, bool(evicted))
                self._undo(s_new, new, old, dropped, evicted, now)
                raise self._full_error(new.fee, victim, bool(evicted), True)
            elif executable:
                top = s_new.nonce + s_new.plen - 1
                if old is None and top > new.nonce:
                    # Txs above ``new`` were queued until it came (it promoted them): they go first,
                    # from the top, so a gap-filling tx is not refused for the txs it made executable.
                    victim = s_new.txs[top]
                else:  # no queued tx left: the cheapest pending tail, if cheaper than new
                    victim = self._pop_tail()
                    if victim is None or victim is new or victim.fee >= new.fee:
                        if victim is new:
                            victim = self._pop_tail()
                            heappush(self._tails, (new.fee, -new.seq, new.hash))
                        if victim is not None:
                            heappush(self._tails, (victim.fee, -victim.seq, victim.hash))
                        self._undo(s_new, new, old, dropped, evicted, now)
                        raise self._full_error(new.fee, victim, bool(evicted), False)
            else:  # not reached: a queued newcomer is itself queued
                self._undo(s_new, new, old, dropped, evicted, now)
                raise self._full_error(new.fee, None, bool(evicted), True)
            vs = self._senders[victim.sender]
            self._unlink(vs, victim, now)
            evicted.append((vs, victim))
        out = [v.hash for _, v in evicted]
        if old is not None:
            out.insert(0, old.hash)
        return out

    def _undo(
        self,
        s_new: _Sender,
        new: _Entry,
        old: _Entry | None,
        dropped: list[_Entry],
        evicted: list[tuple[_Sender, _Entry]],
        now: float,
    ) -> None:
        """Back to the pool before a refused add: put back the evicted and dropped txs, take ``new``
        out (or ``old`` back in). Queued txs keep their queued time; the result does not depend on
        the order (which txs are pending is a function of the pooled set)."""
        for s, v in reversed(evicted):
            self._link(self._senders.setdefault(v.sender, s), v, now, restoring=True)
        if old is not None:
            self._swap(s_new, new, old)
        else:
            self._unlink(s_new, new, now, restoring=True)
        for d in reversed(dropped):
            self._link(self._senders.setdefault(d.sender, s_new), d, now, restoring=True)

    # ------------------------------------------------------------------------------------------
    # Internals: heap upkeep

    def _maybe_rebuild(self) -> None:
        limit = 2 * len(self._senders) + _HEAP_SLACK
        if len(self._tails) > limit:
            self._rebuild_tails()
        if len(self._heads) > limit:
            self._rebuild_heads()
        qlimit = 2 * self._queued + _HEAP_SLACK
        if len(self._qheap) > qlimit or len(self._deadlines) > qlimit:
            self._rebuild_queued()

    def _rebuild_tails(self) -> None:
        items = []
        for s in self._senders.values():
            if s.plen:
                t = s.txs[s.nonce + s.plen - 1]
                items.append((t.fee, -t.seq, t.hash))
        heapify(items)
        self._tails = items

    def _rebuild_heads(self) -> None:
        items = []
        for s in self._senders.values():
            hd = s.txs.get(s.nonce)
            if hd is not None:
                items.append((-hd.fee, hd.seq, hd.hash))
        heapify(items)
        self._heads = items

    def _rebuild_queued(self) -> None:
        qheap: list[tuple[int, float, int, bytes]] = []
        deadlines: list[tuple[float, int, bytes]] = []
        for s in self._senders.values():
            txs = s.txs
            for n in islice(s.nonces, s.plen, None):
                e = txs[n]
                qtime = e.qtime if e.qtime is not None else 0.0
                qheap.append((e.fee, qtime, e.qstamp, e.hash))
                deadlines.append((qtime, e.qstamp, e.hash))
        heapify(qheap)
        heapify(deadlines)
        self._qheap = qheap
        self._deadlines = deadlines
