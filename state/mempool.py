"""The transaction pool: validated, not yet committed transactions, ready for the next block.

A pure in-memory structure used from one trio task (no I/O, no threads, no locks). Costs:

* :meth:`Mempool.add` is O(log n) (plus an O(k) walk for a tx inserted into the middle of a sender's
  queue of k txs, k <= ``max_per_sender``); signature verification dominates unless ``verified=True``.
* :meth:`Mempool.reap` is O(r log n) for r txs returned; it never scans the whole pool.
* :meth:`Mempool.update` is O(block + sum of the queues of the senders the block touched).

Layout: a global ``hash -> entry`` dict; per sender a ``nonce -> entry`` dict, a sorted nonce list and a
cached copy of the sender's committed account (nonce, balance), read from the view when the sender
first appears and refreshed by :meth:`Mempool.update` for every account a block touches. Two heaps with
lazy deletion: *heads* (each sender's executable tx, nonce == account nonce, highest fee first) drive
:meth:`Mempool.reap`; *tails* (each sender's highest-nonce tx, lowest fee first) drive eviction, so an
eviction never opens a nonce gap. Stale heap items are skipped when met and the heaps are rebuilt once
they hold more than twice as many items as there are senders.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from heapq import heapify, heappop, heappush
from itertools import islice
from typing import Protocol

from .errors import TxError
from .types import TX_TRANSFER, Account, Transaction

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
    "too_large",
    "invalid_body",
    "sender_limit",
)

# No signed transaction encodes in fewer bytes than this (7 keys, a 32-byte sender and a 64-byte
# signature alone take ~140). Reap stops filling a block once less room than this is left.
_MIN_TX_BYTES = 128
# Reap gives up after this many consecutive txs that did not fit the remaining byte budget.
_MAX_REAP_MISSES = 256
# Heaps are rebuilt when they hold more than 2 * senders + this many items.
_HEAP_SLACK = 4096


class MempoolError(TxError):
    """A transaction refused by the pool; ``reason`` is one of :data:`REASONS`."""

    reason = "mempool"

    def __init__(self, message: str, reason: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown mempool rejection reason {reason!r}")
        super().__init__(message, reason)


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

    def __post_init__(self) -> None:
        for name in ("max_txs", "max_bytes", "max_tx_bytes", "nonce_window", "max_per_sender"):
            if getattr(self, name) < 1:
                raise ValueError(f"MempoolConfig.{name} must be >= 1")
        if self.replace_bump_percent < 0 or self.min_fee < 0:
            raise ValueError("MempoolConfig.replace_bump_percent and min_fee must be >= 0")


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
    """A pooled transaction with what the pool derives from it once."""

    __slots__ = ("tx", "hash", "sender", "nonce", "fee", "cost", "size", "seq")

    def __init__(self, tx: Transaction, cost: int, size: int, seq: int) -> None:
        self.tx = tx
        self.hash = tx.hash
        self.sender = tx.sender
        self.nonce = tx.nonce
        self.fee = tx.fee
        self.cost = cost
        self.size = size
        self.seq = seq


class _Sender:
    """One sender's queue and its cached committed account."""

    __slots__ = ("txs", "nonces", "nonce", "balance", "total_cost")

    def __init__(self, nonce: int, balance: int) -> None:
        self.txs: dict[int, _Entry] = {}
        self.nonces: list[int] = []  # sorted, all >= self.nonce
        self.nonce = nonce  # committed account nonce
        self.balance = balance  # committed account balance
        self.total_cost = 0  # sum of the costs of every queued tx

    def run_length(self) -> int:
        """Length of the contiguous nonce run starting at the account nonce."""
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
    """Pending transactions of one chain, validated against committed state (see module docstring)."""

    def __init__(
        self,
        chain_id: str,
        view: AccountView,
        config: MempoolConfig | None = None,
        *,
        cost: Callable[[Transaction], int] = default_cost,
        check_body: Callable[[Transaction], None] = _no_body_check,
        touches: Callable[[Transaction], Iterable[bytes]] = default_touches,
    ) -> None:
        """``cost(tx)``: total the sender must afford (fee + value moved). ``check_body(tx)``: raises
        :class:`TxError` for a malformed body. ``touches(tx)``: accounts besides the sender that
        executing ``tx`` may change; :meth:`update` refreshes them (a credited recipient may afford
        more)."""
        self.chain_id = chain_id
        self.config = cfg = config if config is not None else MempoolConfig()
        self._view = view
        self._cost = cost
        self._check_body = check_body
        self._touches = touches
        # Config copied into attributes: add() is hot.
        self._max_txs = cfg.max_txs
        self._max_bytes = cfg.max_bytes
        self._max_tx_bytes = cfg.max_tx_bytes
        self._window = cfg.nonce_window
        self._max_per_sender = cfg.max_per_sender
        self._bump = 100 + cfg.replace_bump_percent
        self._min_fee = cfg.min_fee
        self._by_hash: dict[bytes, _Entry] = {}
        self._senders: dict[bytes, _Sender] = {}
        self._bytes = 0
        self._seq = 0
        self._heads: list[tuple[int, int, bytes]] = []  # (-fee, seq, hash) of executable txs
        self._tails: list[tuple[int, int, bytes]] = []  # (fee, -seq, hash) of each sender's last tx

    # ------------------------------------------------------------------------------------------
    # Queries

    def get(self, tx_hash: bytes) -> Transaction | None:
        """The pooled transaction with this hash, if any."""
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

    def senders(self) -> int:
        """Number of senders with at least one pooled transaction."""
        return len(self._senders)

    def pending_nonce(self, sender: bytes) -> int:
        """Next nonce a wallet should use: account nonce + length of the contiguous queued run."""
        s = self._senders.get(sender)
        if s is None:
            return self._view.get_account(sender).nonce
        return s.nonce + s.run_length()

    def stats(self) -> dict:
        """Size figures for metrics and RPC."""
        return {
            "size": len(self._by_hash),
            "bytes": self._bytes,
            "senders": len(self._senders),
            "max_txs": self._max_txs,
            "max_bytes": self._max_bytes,
        }

    # ------------------------------------------------------------------------------------------
    # Admission

    def add(self, tx: Transaction, *, verified: bool = False) -> list[bytes]:
        """Validate and insert ``tx``; returns the hashes of the txs it replaced or evicted to make room.

        Checks, in order: too_large, wrong_chain, fee_too_low, invalid_body, already_known,
        nonce_too_low, nonce_gap, replacement_underpriced, sender_limit, insufficient_balance,
        bad_signature (skipped when ``verified``), mempool_full. Raises :class:`MempoolError`.
        """
        size = len(tx.raw)
        if size > self._max_tx_bytes:
            raise MempoolError(
                f"transaction too large: {size} bytes > limit {self._max_tx_bytes} bytes", "too_large"
            )
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
            raise MempoolError(f"invalid body: {exc}", "invalid_body") from None
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
            base, balance = acct.nonce, acct.balance
        else:
            base, balance = s.nonce, s.balance
        nonce = tx.nonce
        if nonce < base:
            raise MempoolError(f"nonce too low: account nonce is {base}, tx nonce {nonce}", "nonce_too_low")
        if nonce >= base + self._window:
            raise MempoolError(
                f"nonce gap: account nonce is {base}, tx nonce {nonce} is not below "
                f"{base + self._window} (nonce window {self._window})",
                "nonce_gap",
            )

        old: _Entry | None = None
        if s is None:
            needed = cost
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
            nonces = s.nonces
            if nonce > nonces[-1]:
                needed = s.total_cost + cost
            else:  # cost of the queued txs with nonce <= this one, walking the shorter side
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

        if (old is None and len(self._by_hash) >= self._max_txs) or (
            self._bytes + size - (old.size if old is not None else 0) > self._max_bytes
        ):
            # Full: refuse cheaply when even the cheapest evictable tx is not cheaper than this one.
            # (Its own sender's last tx is no candidate once this one is appended: decide that below.)
            lowest = self._peek_evictable()
            if lowest is None or (lowest.fee >= fee and lowest.sender != tx.sender):
                raise self._full_error(fee, lowest, False)

        seq = self._seq
        self._seq = seq + 1
        e = _Entry(tx, cost, size, seq)
        if s is None:
            s = _Sender(base, balance)
            self._senders[tx.sender] = s
        if old is not None:
            self._swap(s, old, e)
        else:
            self._insert(s, e)
        if len(self._by_hash) > self._max_txs or self._bytes > self._max_bytes:
            out = self._make_room(s, e, old)
        else:
            out = [old.hash] if old is not None else []
        if len(self._tails) > 2 * len(self._senders) + _HEAP_SLACK:
            self._rebuild_tails()
        if len(self._heads) > 2 * len(self._senders) + _HEAP_SLACK:
            self._rebuild_heads()
        return out

    # ------------------------------------------------------------------------------------------
    # Block proposal

    def reap(self, max_txs: int, max_bytes: int) -> list[Transaction]:
        """Txs for the next block, without removing anything.

        Per sender only the contiguous nonce run from the committed account nonce, and only while the
        run's cumulative cost stays within the sender's balance; across senders highest fee first, then
        arrival order; a sender's nonce n+1 always comes after n. A tx that does not fit the remaining
        ``max_bytes`` ends its sender's run (a later nonce cannot go without it); others still fill up.
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
                        if e.nonce == s.nonce:
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
            spent += e.cost
            if spent > s.balance:
                continue
            misses = 0
            out.append(e.tx)
            room -= e.size
            if len(out) >= max_txs or room < _MIN_TX_BYTES:
                break
            nxt = s.txs.get(e.nonce + 1)
            if nxt is not None:
                heappush(local, (-nxt.fee, nxt.seq, nxt, s, spent))
        for item in popped:
            heappush(heads, item)
        return out

    # ------------------------------------------------------------------------------------------
    # After a commit

    def update(
        self, committed: Iterable[Transaction], view: AccountView, *, touched: Iterable[bytes] = ()
    ) -> list[bytes]:
        """After a block commits: drop the included txs, then re-check only the accounts the block
        touched (senders of its txs, ``touches(tx)`` of each, and ``touched``): refresh the cached
        account, drop txs whose nonce is now below the account nonce and, walking the queue in nonce
        order, every tx from the first whose cumulative cost exceeds the new balance onward.

        ``view`` becomes the pool's view. Returns the dropped hashes, not counting included ones.
        """
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
        for acct in accounts:
            s = senders.get(acct)
            if s is None:
                continue
            txs = s.txs
            nonces = s.nonces
            old_base, old_tail = s.nonce, nonces[-1]
            inc = included.get(acct)
            if inc:
                for e in inc:
                    if txs.get(e.nonce) is not e:
                        continue  # listed twice in the block
                    del txs[e.nonce]
                    del by_hash[e.hash]
                    size += e.size
                    s.total_cost -= e.cost
                if len(inc) == 1 and nonces[0] == inc[0].nonce:
                    del nonces[0]  # the usual case: the block took the head
                else:
                    gone = {e.nonce for e in inc}
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
                        del nonces[i:]
                        break
            if not nonces:
                del senders[acct]
                continue
            if nonces[-1] != old_tail:
                t = txs[nonces[-1]]
                heappush(self._tails, (t.fee, -t.seq, t.hash))
            if base != old_base:
                hd = txs.get(base)
                if hd is not None:
                    heappush(self._heads, (-hd.fee, hd.seq, hd.hash))
        self._bytes -= size
        if len(self._tails) > 2 * len(senders) + _HEAP_SLACK:
            self._rebuild_tails()
        if len(self._heads) > 2 * len(senders) + _HEAP_SLACK:
            self._rebuild_heads()
        return dropped

    # ------------------------------------------------------------------------------------------
    # Internals

    def _insert(self, s: _Sender, e: _Entry) -> None:
        self._by_hash[e.hash] = e
        n = e.nonce
        s.txs[n] = e
        nonces = s.nonces
        if not nonces or n > nonces[-1]:
            nonces.append(n)
            heappush(self._tails, (e.fee, -e.seq, e.hash))
        else:
            insort(nonces, n)
        s.total_cost += e.cost
        self._bytes += e.size
        if n == s.nonce:
            heappush(self._heads, (-e.fee, e.seq, e.hash))

    def _swap(self, s: _Sender, old: _Entry, new: _Entry) -> None:
        """Put ``new`` in the place of ``old`` (same sender and nonce)."""
        del self._by_hash[old.hash]
        self._by_hash[new.hash] = new
        n = new.nonce
        s.txs[n] = new
        s.total_cost += new.cost - old.cost
        self._bytes += new.size - old.size
        if s.nonces[-1] == n:
            heappush(self._tails, (new.fee, -new.seq, new.hash))
        if n == s.nonce:
            heappush(self._heads, (-new.fee, new.seq, new.hash))

    def _remove(self, s: _Sender, e: _Entry) -> None:
        """Remove one pooled tx; drops the sender once its queue is empty."""
        del self._by_hash[e.hash]
        n = e.nonce
        del s.txs[n]
        nonces = s.nonces
        if nonces[-1] == n:
            nonces.pop()
            if nonces:
                t = s.txs[nonces[-1]]
                heappush(self._tails, (t.fee, -t.seq, t.hash))
        else:
            del nonces[bisect_left(nonces, n)]
        s.total_cost -= e.cost
        self._bytes -= e.size
        if not nonces:
            del self._senders[e.sender]

    def _pop_evictable(self) -> _Entry | None:
        """Pop the lowest-fee tx that is the last of its sender's queue (newest first on equal fees)."""
        tails = self._tails
        by_hash = self._by_hash
        senders = self._senders
        while tails:
            _, negseq, h = heappop(tails)
            e = by_hash.get(h)
            if e is not None and e.seq == -negseq and senders[e.sender].nonces[-1] == e.nonce:
                return e
        return None

    def _peek_evictable(self) -> _Entry | None:
        """The tx :meth:`_pop_evictable` would pop, left in place (stale items above it are dropped)."""
        tails = self._tails
        by_hash = self._by_hash
        senders = self._senders
        while tails:
            _, negseq, h = tails[0]
            e = by_hash.get(h)
            if e is not None and e.seq == -negseq and senders[e.sender].nonces[-1] == e.nonce:
                return e
            heappop(tails)
        return None

    def _full_error(self, fee: int, victim: _Entry | None, more: bool) -> MempoolError:
        if victim is None:
            why = "cannot make room: no other tx can be evicted"
        elif more:
            why = f"is not above the fee {victim.fee} of a tx that would also have to be evicted"
        else:
            why = f"is not above the lowest evictable fee {victim.fee}"
        return MempoolError(
            f"mempool full ({len(self._by_hash)}/{self._max_txs} txs, "
            f"{self._bytes}/{self._max_bytes} bytes): fee {fee} {why}",
            "mempool_full",
        )

    def _make_room(self, s_new: _Sender, new: _Entry, old: _Entry | None) -> list[bytes]:
        """Evict tail txs until the pool fits, each with a fee strictly below ``new``'s; otherwise
        undo everything (including the insertion of ``new``) and raise ``mempool_full``."""
        evicted: list[tuple[_Sender, _Entry]] = []
        while len(self._by_hash) > self._max_txs or self._bytes > self._max_bytes:
            victim = self._pop_evictable()
            if victim is None or victim is new or victim.fee >= new.fee:
                if victim is new:  # the newcomer has the lowest fee; name the next one in the message
                    victim = self._pop_evictable()
                if victim is not None:
                    heappush(self._tails, (victim.fee, -victim.seq, victim.hash))
                if old is not None:
                    self._swap(s_new, new, old)
                else:
                    self._remove(s_new, new)
                for s, v in reversed(evicted):
                    self._insert(self._senders.setdefault(v.sender, s), v)
                raise self._full_error(new.fee, victim, bool(evicted))
            vs = self._senders[victim.sender]
            self._remove(vs, victim)
            evicted.append((vs, victim))
        out = [v.hash for _, v in evicted]
        if old is not None:
            out.insert(0, old.hash)
        return out

    def _rebuild_tails(self) -> None:
        items = []
        for s in self._senders.values():
            t = s.txs[s.nonces[-1]]
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
