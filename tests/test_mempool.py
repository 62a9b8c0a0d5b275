"""Tests for state.mempool: admission rules, reap order, eviction, post-commit update, invariants."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state import codec
from state.codec import sha256
from state.crypto import SigningKey
from state.errors import TxError
from state.mempool import REASONS, Mempool, MempoolConfig, MempoolError, default_cost
from state.types import Account, Transaction, transfer

CHAIN = "aitbc-mempool-test"
SINK = b"\xee" * 32  # a recipient that never sends


class View:
    """Dict-backed committed state."""

    def __init__(self) -> None:
        self.accounts: dict[bytes, Account] = {}

    def get_account(self, pubkey: bytes) -> Account:
        a = self.accounts.get(pubkey)
        return Account(a.balance, a.nonce) if a is not None else Account(0, 0)

    def set(self, pubkey: bytes, balance: int, nonce: int = 0) -> None:
        self.accounts[pubkey] = Account(balance, nonce)

    def apply(self, tx: Transaction) -> None:
        """Execute a transfer the way the chain would (the test's model of block execution)."""
        a = self.accounts.setdefault(tx.sender, Account(0, 0))
        cost = default_cost(tx)
        assert a.nonce == tx.nonce, "executed a tx out of nonce order"
        assert a.balance >= cost, "executed an unaffordable tx"
        a.nonce += 1
        a.balance -= cost
        to = self.accounts.setdefault(tx.body["to"], Account(0, 0))
        to.balance += tx.body["amount"]


def key(i: int) -> SigningKey:
    return SigningKey.from_seed(bytes([i + 1]) * 32)


KEYS = [key(i) for i in range(6)]
A, B, C, D = KEYS[:4]


def tx(
    k: SigningKey, nonce: int, fee: int = 10, amount: int = 1, to: bytes = SINK, chain: str = CHAIN
) -> Transaction:
    return transfer(k, chain, to, amount, nonce, fee)


def forge(t: Transaction, sig: bytes) -> Transaction:
    """``t`` with another signature (raw and hash recomputed, so only the signature is wrong)."""
    raw = codec.encode({**t.unsigned_obj(), "sig": sig})
    return Transaction(t.chain_id, t.type, t.sender, t.nonce, t.fee, t.body, sig, raw, sha256(raw))


def make(balance: int = 10**9, config: MempoolConfig | None = None, keys=KEYS, **kw) -> tuple[Mempool, View]:
    view = View()
    for k in keys:
        view.set(k.public_key, balance)
    return Mempool(CHAIN, view, config, **kw), view


def reject(pool: Mempool, t: Transaction, reason: str, **kw) -> MempoolError:
    before = (len(pool), pool.size_bytes, pool.senders(), [x.hash for x in pool.reap(10**6, 10**9)])
    with pytest.raises(MempoolError) as info:
        pool.add(t, **kw)
    assert info.value.reason == reason
    assert isinstance(info.value, TxError)
    after = (len(pool), pool.size_bytes, pool.senders(), [x.hash for x in pool.reap(10**6, 10**9)])
    assert after == before, "a rejected add changed the pool"
    return info.value


def hashes(txs: list[Transaction]) -> list[bytes]:
    return [t.hash for t in txs]


# ------------------------------------------------------------------------------------------------
# Rejections, one per reason


def test_reasons_tuple() -> None:
    assert set(REASONS) == {
        "wrong_chain", "bad_signature", "fee_too_low", "nonce_too_low", "nonce_gap",
        "insufficient_balance", "already_known", "replacement_underpriced", "mempool_full",
        "too_large", "invalid_body", "sender_limit",
    }  # fmt: skip
    with pytest.raises(ValueError):
        MempoolError("x", "no_such_reason")


def test_too_large() -> None:
    pool, _ = make(config=MempoolConfig(max_tx_bytes=150))
    t = tx(A, 0)
    err = reject(pool, t, "too_large")
    assert str(err) == f"transaction too large: {len(t.raw)} bytes > limit 150 bytes"


def test_wrong_chain() -> None:
    pool, _ = make()
    err = reject(pool, tx(A, 0, chain="other-chain"), "wrong_chain")
    assert str(err) == f"wrong chain: transaction is for chain 'other-chain', this pool is for {CHAIN!r}"


def test_fee_too_low() -> None:
    pool, _ = make(config=MempoolConfig(min_fee=5))
    err = reject(pool, tx(A, 0, fee=4), "fee_too_low")
    assert str(err) == "fee too low: fee 4 < minimum 5"
    pool.add(tx(A, 0, fee=5))


def test_invalid_body_from_check_body() -> None:
    def check(t: Transaction) -> None:
        if t.body["amount"] == 0:
            raise TxError("transfer 'amount' must be positive", "invalid_body")

    pool, _ = make(check_body=check)
    err = reject(pool, tx(A, 0, amount=0), "invalid_body")
    assert str(err) == "invalid body: transfer 'amount' must be positive"
    pool.add(tx(A, 0, amount=1))


def test_invalid_body_from_default_cost() -> None:
    pool, _ = make()
    bad = Transaction.create(A, CHAIN, "transfer", 0, 10, {"to": SINK, "amount": "lots"})
    err = reject(pool, bad, "invalid_body")
    assert "amount" in str(err) and str(err).startswith("invalid body: ")
    missing = Transaction.create(A, CHAIN, "transfer", 0, 10, {"to": SINK})
    reject(pool, missing, "invalid_body")


def test_already_known() -> None:
    pool, _ = make()
    t = tx(A, 0)
    assert pool.add(t) == []
    err = reject(pool, t, "already_known")
    assert str(err) == f"already known: transaction 0x{t.hash.hex()} is already in the pool"


def test_nonce_too_low() -> None:
    pool, view = make()
    view.set(A.public_key, 10**6, nonce=7)
    err = reject(pool, tx(A, 5), "nonce_too_low")
    assert str(err) == "nonce too low: account nonce is 7, tx nonce 5"
    pool.add(tx(A, 7))


def test_nonce_gap() -> None:
    pool, view = make(config=MempoolConfig(nonce_window=4))
    view.set(A.public_key, 10**6, nonce=2)
    err = reject(pool, tx(A, 6), "nonce_gap")
    assert str(err) == "nonce gap: account nonce is 2, tx nonce 6 is not below 6 (nonce window 4)"
    pool.add(tx(A, 5))  # queued: within the window, not executable yet
    assert len(pool) == 1 and pool.reap(10, 10**6) == []


def test_replacement_underpriced_and_replaced() -> None:
    pool, _ = make()
    old = tx(A, 0, fee=100)
    pool.add(old)
    err = reject(pool, tx(A, 0, fee=109, amount=2), "replacement_underpriced")
    assert str(err) == (
        "replacement underpriced: nonce 0 is taken by a tx with fee 100; "
        "a replacement needs fee >= 110 (+10%), got 109"
    )
    new = tx(A, 0, fee=110, amount=2)
    assert pool.add(new) == [old.hash]
    assert old.hash not in pool and pool.get(old.hash) is None
    assert pool.get(new.hash) is new and len(pool) == 1
    assert pool.size_bytes == len(new.raw)
    assert pool.reap(10, 10**6) == [new]


def test_replacement_bump_rounds_up() -> None:
    pool, _ = make(config=MempoolConfig(replace_bump_percent=10))
    pool.add(tx(A, 0, fee=15))  # 15 * 1.1 = 16.5 -> 17 needed
    err = reject(pool, tx(A, 0, fee=16, amount=2), "replacement_underpriced")
    assert "needs fee >= 17" in str(err)
    pool.add(tx(A, 0, fee=17, amount=2))


def test_sender_limit() -> None:
    pool, _ = make(config=MempoolConfig(max_per_sender=3))
    for n in range(3):
        pool.add(tx(A, n))
    err = reject(pool, tx(A, 3), "sender_limit")
    assert str(err) == "sender limit: sender already has 3 pooled txs (limit 3)"
    pool.add(tx(A, 2, fee=100))  # a replacement is not a new slot
    pool.add(tx(B, 0))  # other senders unaffected


def test_insufficient_balance_single_and_cumulative() -> None:
    pool, view = make()
    view.set(A.public_key, 100)
    err = reject(pool, tx(A, 0, fee=10, amount=91), "insufficient_balance")
    assert str(err) == (
        "insufficient balance: balance 100 < 101 needed for this tx and the sender's pooled txs up to nonce 0"
    )
    pool.add(tx(A, 0, fee=10, amount=30))  # 40
    pool.add(tx(A, 1, fee=10, amount=30))  # 80
    err = reject(pool, tx(A, 2, fee=10, amount=30), "insufficient_balance")
    assert "balance 100 < 120" in str(err)
    pool.add(tx(A, 2, fee=10, amount=10))  # exactly 100


def test_insufficient_balance_counts_only_lower_nonces_and_replaces() -> None:
    pool, view = make()
    view.set(A.public_key, 100)
    pool.add(tx(A, 0, fee=10, amount=20))  # 30
    pool.add(tx(A, 2, fee=10, amount=20))  # 30 (queued behind a gap)
    # nonce 1 counts nonces <= 1 only: 30 + 50 = 80 <= 100, although 0+1+2 = 110.
    pool.add(tx(A, 1, fee=10, amount=40))
    # Reap stops where the cumulative cost exceeds the balance.
    assert [t.nonce for t in pool.reap(10, 10**6)] == [0, 1]
    # A replacement is costed instead of the old tx, not on top of it.
    err = reject(pool, tx(A, 0, fee=20, amount=81), "insufficient_balance")  # 101
    assert "balance 100 < 101" in str(err)
    reject(pool, tx(A, 1, fee=20, amount=51), "insufficient_balance")  # 30 + 71 = 101
    pool.add(tx(A, 1, fee=20, amount=50))  # 30 + 70 = 100


def test_bad_signature_and_verified_flag() -> None:
    pool, _ = make()
    good = tx(A, 0)
    wrong = forge(good, B.sign_raw(b"something else"))
    err = reject(pool, wrong, "bad_signature")
    assert str(err) == f"bad signature: transaction 0x{wrong.hash.hex()} is not signed by its sender"
    # A tx whose signature the caller already checked is not verified again.
    assert pool.add(wrong, verified=True) == []
    assert wrong.hash in pool


def test_check_order() -> None:
    """A tx failing several rules is rejected for the first one in the documented order."""
    pool, view = make(config=MempoolConfig(min_fee=5, max_tx_bytes=150))
    view.set(A.public_key, 0, nonce=3)
    reject(pool, tx(A, 0, fee=1, chain="x"), "too_large")
    pool2, view2 = make(config=MempoolConfig(min_fee=5))
    view2.set(A.public_key, 0, nonce=3)
    reject(pool2, tx(A, 0, fee=1, chain="x"), "wrong_chain")
    reject(pool2, tx(A, 0, fee=1), "fee_too_low")
    reject(pool2, tx(A, 0, fee=5), "nonce_too_low")
    reject(pool2, tx(A, 3, fee=5), "insufficient_balance")
    reject(pool2, forge(tx(A, 3, fee=5), bytes(64)), "insufficient_balance")  # before the signature


# ------------------------------------------------------------------------------------------------
# Reap


def test_reap_nonce_order_within_sender_and_fee_priority_across() -> None:
    pool, _ = make()
    a0, a1, a2 = tx(A, 0, fee=1), tx(A, 1, fee=100), tx(A, 2, fee=100)
    b0, b1 = tx(B, 0, fee=50), tx(B, 1, fee=2)
    c0 = tx(C, 0, fee=60)
    for t in (a2, a1, b1, a0, b0, c0):  # arrival order scrambled on purpose
        pool.add(t)
    # Heads compete by fee: C0 (60), B0 (50); then B1 (2) vs A0 (1) -> B1; then A's run.
    assert pool.reap(100, 10**6) == [c0, b0, b1, a0, a1, a2]
    # Reap does not remove anything and is repeatable.
    assert len(pool) == 6
    assert pool.reap(100, 10**6) == [c0, b0, b1, a0, a1, a2]


def test_reap_equal_fee_uses_arrival_order() -> None:
    pool, _ = make()
    ts = [tx(k, 0, fee=7) for k in (C, A, D, B)]
    for t in ts:
        pool.add(t)
    assert pool.reap(10, 10**6) == ts


def test_reap_respects_max_txs_and_never_leaves_a_gap() -> None:
    pool, _ = make()
    a = [tx(A, n, fee=50) for n in range(4)]
    b = [tx(B, n, fee=40) for n in range(4)]
    for t in a + b:
        pool.add(t)
    assert pool.reap(3, 10**6) == a[:3]
    assert pool.reap(6, 10**6) == a + b[:2]
    assert pool.reap(0, 10**6) == []


def test_reap_respects_max_bytes() -> None:
    pool, _ = make()
    a = [tx(A, n, fee=50) for n in range(3)]
    big = transfer(B, CHAIN, b"\x01" * 32, 1, 0, 45)
    small = tx(C, 0, fee=10)
    for t in a + [big, small]:
        pool.add(t)
    size = len(a[0].raw)
    got = pool.reap(100, 2 * size + 10)
    assert got == a[:2]
    assert sum(len(t.raw) for t in got) <= 2 * size + 10
    assert pool.reap(100, 10) == []
    # A tx that does not fit ends only its own sender's run; smaller txs of others still fill up.
    huge = Transaction.create(D, CHAIN, "transfer", 0, 1000, {"to": SINK, "amount": 1, "memo": b"x" * 500})
    pool.add(huge)
    got = pool.reap(100, 3 * size + 50)
    assert huge not in got and got[:3] == a


def test_future_nonces_are_queued_until_the_gap_fills() -> None:
    pool, _ = make()
    t1, t2 = tx(A, 1), tx(A, 2)
    pool.add(t2)
    pool.add(t1)
    assert pool.reap(10, 10**6) == []
    assert pool.pending_nonce(A.public_key) == 0
    t0 = tx(A, 0, fee=1)
    pool.add(t0)
    assert pool.reap(10, 10**6) == [t0, t1, t2]
    assert pool.pending_nonce(A.public_key) == 3


def test_pending_nonce() -> None:
    pool, view = make()
    view.set(A.public_key, 10**6, nonce=5)
    assert pool.pending_nonce(A.public_key) == 5
    assert pool.pending_nonce(b"\x42" * 32) == 0  # unknown account
    for n in (5, 6, 7, 9, 10):
        pool.add(tx(A, n))
    assert pool.pending_nonce(A.public_key) == 8
    pool.add(tx(A, 8))
    assert pool.pending_nonce(A.public_key) == 11
    pool.add(tx(A, 20))
    assert pool.pending_nonce(A.public_key) == 11


def test_stats_and_size() -> None:
    pool, _ = make(config=MempoolConfig(max_txs=10, max_bytes=10_000))
    ts = [tx(A, 0), tx(A, 1), tx(B, 0)]
    for t in ts:
        pool.add(t)
    total = sum(len(t.raw) for t in ts)
    assert len(pool) == 3 and pool.size_bytes == total and pool.senders() == 2
    assert pool.stats() == {"size": 3, "bytes": total, "senders": 2, "max_txs": 10, "max_bytes": 10_000}
    assert ts[0].hash in pool and b"\x00" * 32 not in pool


# ------------------------------------------------------------------------------------------------
# Eviction


def test_eviction_of_lowest_fee_and_mempool_full() -> None:
    pool, _ = make(config=MempoolConfig(max_txs=3))
    low, mid, high = tx(A, 0, fee=10), tx(B, 0, fee=20), tx(C, 0, fee=30)
    for t in (low, mid, high):
        pool.add(t)
    nbytes = pool.size_bytes
    err = reject(pool, tx(D, 0, fee=5), "mempool_full")
    assert str(err) == (
        f"mempool full (3/3 txs, {nbytes}/{64 << 20} bytes): fee 5 is not above the lowest evictable fee 10"
    )
    err = reject(pool, tx(D, 0, fee=10), "mempool_full")  # must be strictly higher
    assert str(err).endswith("fee 10 is not above the lowest evictable fee 10")
    newcomer = tx(D, 0, fee=11)
    assert pool.add(newcomer) == [low.hash]
    assert low.hash not in pool and newcomer.hash in pool and len(pool) == 3


def test_eviction_takes_only_the_last_tx_of_a_sender() -> None:
    pool, _ = make(config=MempoolConfig(max_txs=3))
    a0, a1, b0 = tx(A, 0, fee=1), tx(A, 1, fee=50), tx(B, 0, fee=20)
    for t in (a0, a1, b0):
        pool.add(t)
    # a0 has the lowest fee but evicting it would strand a1: b0 (the lowest-fee tail) goes.
    assert pool.add(tx(C, 0, fee=30)) == [b0.hash]
    assert a0.hash in pool and a1.hash in pool
    # Now the tails are a1 (50) and c0 (30): a fee of 40 evicts c0, never a0.
    assert len(pool.add(tx(D, 0, fee=40))) == 1
    assert a0.hash in pool


def test_eviction_never_strands_the_newcomer() -> None:
    pool, _ = make(config=MempoolConfig(max_txs=2))
    a0, b0 = tx(A, 0, fee=5), tx(B, 0, fee=50)
    pool.add(a0)
    pool.add(b0)
    # A's own a0 is not evictable for a1 (a1 would be left with a gap); b0's fee is not lower.
    reject(pool, tx(A, 1, fee=10), "mempool_full")
    a1 = tx(A, 1, fee=60)
    assert pool.add(a1) == [b0.hash]
    assert pool.reap(10, 10**6) == [a0, a1]


def test_eviction_by_bytes_may_take_several() -> None:
    small = [tx(k, 0, fee=5 + i) for i, k in enumerate((A, B, C))]
    size = len(small[0].raw)
    assert all(len(t.raw) == size for t in small)
    pool, _ = make(config=MempoolConfig(max_bytes=3 * size))
    for t in small:
        pool.add(t)
    big = Transaction.create(
        D, CHAIN, "transfer", 0, 100, {"to": SINK, "amount": 1, "memo": b"m" * (size // 2)}
    )
    assert size < len(big.raw) <= 2 * size
    evicted = pool.add(big)
    assert evicted == [small[0].hash, small[1].hash]
    assert pool.size_bytes == len(big.raw) + size <= 3 * size


def test_mempool_full_rolls_back_partial_evictions() -> None:
    small = [tx(k, 0, fee=f) for k, f in ((A, 5), (B, 50), (C, 60))]
    limit = sum(len(t.raw) for t in small)
    pool, _ = make(config=MempoolConfig(max_bytes=limit))
    for t in small:
        pool.add(t)
    assert len(pool) == 3
    big = Transaction.create(D, CHAIN, "transfer", 0, 40, {"to": SINK, "amount": 1, "memo": b"m" * 200})
    # Would need to evict A (5) and then B (50 >= 40): refused, and A is back.
    err = reject(pool, big, "mempool_full")
    assert str(err).endswith("fee 40 is not above the fee 50 of a tx that would also have to be evicted")
    assert all(t.hash in pool for t in small)
    # The newcomer itself has the lowest fee: the message names the cheapest other tx.
    err = reject(pool, tx(D, 0, fee=1, amount=2), "mempool_full")
    assert str(err).endswith("fee 1 is not above the lowest evictable fee 5")
    # Bigger than the whole pool may hold: nothing else to evict once the others are gone.
    solo, _ = make(config=MempoolConfig(max_bytes=100))
    err = reject(solo, tx(A, 0), "mempool_full")
    assert str(err).endswith("cannot make room: no other tx can be evicted")


def test_replacement_counts_as_replaced_not_new() -> None:
    pool, _ = make(config=MempoolConfig(max_txs=2))
    a0, b0 = tx(A, 0, fee=10), tx(B, 0, fee=10)
    pool.add(a0)
    pool.add(b0)
    a0b = tx(A, 0, fee=11, amount=2)
    assert pool.add(a0b) == [a0.hash]  # count unchanged: nothing evicted
    assert b0.hash in pool and len(pool) == 2


# ------------------------------------------------------------------------------------------------
# Update after a commit


def test_update_removes_included_and_keeps_the_rest() -> None:
    pool, view = make()
    a = [tx(A, n) for n in range(3)]
    b = [tx(B, n) for n in range(2)]
    for t in a + b:
        pool.add(t)
    block = pool.reap(3, 10**6)
    assert block == a  # same fee: arrival order, A first
    for t in block:
        view.apply(t)
    assert pool.update(block, view) == []
    assert len(pool) == 2 and pool.reap(10, 10**6) == b
    assert pool.size_bytes == sum(len(t.raw) for t in b)
    assert pool.senders() == 1


def test_update_drops_nonce_below_and_unaffordable() -> None:
    pool, view = make()
    view.set(A.public_key, 100)
    a0 = tx(A, 0, fee=10, amount=10)  # 20
    a1 = tx(A, 1, fee=10, amount=10)  # 40
    a2 = tx(A, 2, fee=10, amount=10)  # 60
    a3 = tx(A, 3, fee=10, amount=10)  # 80
    for t in (a0, a1, a2, a3):
        pool.add(t)
    # Another node's tx (not in our pool) with nonce 0 was committed and spent much more.
    other = tx(A, 0, fee=20, amount=40)
    view.apply(other)  # balance 40, nonce 1
    dropped = pool.update([other], view)
    # a0: nonce below; a1 (20) ok, a2 (40) ok, a3 (60 > 40) dropped.
    assert set(dropped) == {a0.hash, a3.hash}
    assert pool.reap(10, 10**6) == [a1, a2]
    assert pool.pending_nonce(A.public_key) == 3


def test_update_drops_from_first_unaffordable_onward() -> None:
    pool, view = make()
    view.set(A.public_key, 1000)
    costs = [100, 500, 50, 50]
    ts = [tx(A, n, fee=10, amount=c - 10) for n, c in enumerate(costs)]
    for t in ts:
        pool.add(t)
    view.set(A.public_key, 300)  # e.g. a slash; the caller names the account as touched
    dropped = pool.update([], view, touched=[A.public_key])
    assert dropped == [t.hash for t in ts[1:]]  # 100 ok, 600 > 300, the rest goes with it
    assert pool.reap(10, 10**6) == ts[:1]


def test_update_rechecks_only_touched_accounts() -> None:
    pool, view = make()
    a0, b0, c0 = tx(A, 0), tx(B, 0), tx(C, 0)
    for t in (a0, b0, c0):
        pool.add(t)
    view.set(C.public_key, 0)  # changed behind the pool's back; C is not in the block
    view.apply(a0)
    assert pool.update([a0], view) == []
    assert c0.hash in pool and b0.hash in pool and a0.hash not in pool


def test_update_refreshes_credited_recipients() -> None:
    pool, view = make()
    view.set(B.public_key, 10)
    reject(pool, tx(B, 0, fee=10, amount=5), "insufficient_balance")
    b1 = tx(B, 1, fee=10, amount=0)
    pool.add(b1)  # queued; B's account is now cached by the pool
    credit = tx(A, 0, fee=10, amount=1000, to=B.public_key)
    pool.add(credit)
    view.apply(credit)
    assert pool.update([credit], view) == []
    b0 = tx(B, 0, fee=10, amount=5)
    pool.add(b0)  # the pool saw B's new balance
    assert pool.reap(10, 10**6) == [b0, b1]


def test_update_with_unknown_and_duplicate_txs() -> None:
    pool, view = make()
    a0 = tx(A, 0)
    pool.add(a0)
    stranger = tx(D, 0)  # never in the pool
    view.apply(a0)
    view.apply(stranger)
    assert pool.update([a0, stranger, a0], view) == []
    assert len(pool) == 0 and pool.senders() == 0 and pool.size_bytes == 0
    assert pool.update([], view) == []


def test_heaps_stay_bounded_under_churn() -> None:
    pool, _ = make(config=MempoolConfig(replace_bump_percent=0))
    for i in range(6000):
        pool.add(tx(A, 0, fee=10, amount=i + 1), verified=True)
    assert len(pool) == 1
    assert len(pool._tails) <= 2 * pool.senders() + 4096
    assert len(pool._heads) <= 2 * pool.senders() + 4096


# ------------------------------------------------------------------------------------------------
# Property test: random add / commit sequences keep the invariants


CFG = MempoolConfig(max_txs=7, max_bytes=1300, nonce_window=5, max_per_sender=3, replace_bump_percent=10)
PKEYS = KEYS[:4]
PKS = [k.public_key for k in PKEYS]

# One op: kind 0-6 add, 7-8 commit a reaped block, 9 commit another node's tx. Fields unused by a kind
# are ignored (a flat tuple shrinks better than a one_of of tuples).
op_strategy = st.tuples(
    st.integers(0, 9),  # kind
    st.integers(0, len(PKEYS) - 1),  # sender
    st.integers(-1, 6),  # add: nonce offset from the committed nonce
    st.integers(1, 60),  # add: fee
    st.integers(0, 60),  # add / external: amount
    st.integers(0, len(PKEYS)),  # add: recipient (len(PKEYS) = SINK)
    st.booleans(),  # add: verified
    st.integers(0, 12),  # commit: max_txs
    st.integers(0, 2500),  # commit: max_bytes
)


def check_affordable(pool: Mempool, view: View, accounts: set[bytes]) -> None:
    """After an update, every re-checked sender's whole queue is affordable in nonce order."""
    for pk in accounts:
        s = pool._senders.get(pk)
        if s is not None:
            assert sum(e.cost for e in s.txs.values()) <= view.get_account(pk).balance


def check_invariants(pool: Mempool, view: View) -> None:
    entries = pool._by_hash
    assert len(pool) == len(entries) <= CFG.max_txs
    assert pool.size_bytes == sum(len(e.tx.raw) for e in entries.values()) <= CFG.max_bytes
    assert pool.senders() == len(pool._senders)
    total = 0
    for pk, s in pool._senders.items():
        assert s.nonces, "an empty sender is kept"
        assert s.nonces == sorted(set(s.nonces)), "duplicate or unsorted nonces"
        assert set(s.nonces) == set(s.txs)
        assert len(s.nonces) <= CFG.max_per_sender
        acct = view.get_account(pk)
        assert (s.nonce, s.balance) == (acct.nonce, acct.balance), "stale cached account"
        assert s.nonces[0] >= acct.nonce
        assert s.total_cost == sum(default_cost(e.tx) for e in s.txs.values())
        for n, e in s.txs.items():
            assert e.tx.nonce == n and e.tx.sender == pk and entries[e.hash] is e
        total += len(s.txs)
    assert total == len(entries)

    # Unlimited reap: exactly each sender's affordable contiguous run from the account nonce.
    full = pool.reap(10**6, 10**9)
    expected: dict[bytes, list[int]] = {}
    for pk, s in pool._senders.items():
        acct = view.get_account(pk)
        run, spent, n = [], 0, acct.nonce
        while n in s.txs:
            spent += s.txs[n].cost
            if spent > acct.balance:
                break
            run.append(n)
            n += 1
        if run:
            expected[pk] = run
        # pending_nonce ignores affordability: contiguous run only.
        m = acct.nonce
        while m in s.txs:
            m += 1
        assert pool.pending_nonce(pk) == m
    got: dict[bytes, list[int]] = {}
    for t in full:
        got.setdefault(t.sender, []).append(t.nonce)
    assert got == expected
    # Limited reaps: limits respected, per-sender prefixes of the runs, no gaps.
    for k, b in ((1, 10**9), (3, 10**9), (100, 450), (100, 1000)):
        part = pool.reap(k, b)
        assert len(part) <= k and sum(len(t.raw) for t in part) <= b
        seen: dict[bytes, list[int]] = {}
        for t in part:
            seen.setdefault(t.sender, []).append(t.nonce)
        for pk, ns in seen.items():
            assert ns == expected[pk][: len(ns)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op_strategy, min_size=10, max_size=60))
def test_random_sequences_keep_invariants(ops: list[tuple]) -> None:
    view = View()
    for pk in PKS:
        view.set(pk, 200)
    pool = Mempool(CHAIN, view, CFG)
    recipients = PKS + [SINK]
    for kind, si, off, fee, amount, ri, verified, max_txs, max_bytes in ops:
        k = PKEYS[si]
        acct = view.get_account(k.public_key)
        if kind <= 6:
            if acct.nonce + off < 0:
                continue
            t = transfer(k, CHAIN, recipients[ri], amount, acct.nonce + off, fee)
            before = {h: e.tx for h, e in pool._by_hash.items()}
            try:
                out = pool.add(t, verified=verified)
            except MempoolError as exc:
                assert exc.reason in REASONS
                assert set(pool._by_hash) == set(before)
            else:
                assert t.hash in pool
                assert set(out) <= set(before) and not (set(out) & set(pool._by_hash))
                assert set(pool._by_hash) == (set(before) - set(out)) | {t.hash}
                for h in out:
                    gone = before[h]
                    if gone.sender == t.sender and gone.nonce == t.nonce:
                        continue  # the replaced tx
                    assert gone.fee < t.fee
                    # Only the last tx of a sender is evicted: nothing above it is left behind.
                    left = pool._senders.get(gone.sender)
                    assert left is None or left.nonces[-1] < gone.nonce
        elif kind <= 8:
            block = pool.reap(max_txs, max_bytes)
            for t in block:
                view.apply(t)  # asserts nonce order and affordability
            before = set(pool._by_hash)
            dropped = pool.update(block, view)
            assert not (set(dropped) & set(hashes(block)))
            assert set(pool._by_hash) == before - set(dropped) - set(hashes(block))
            check_affordable(pool, view, {t.sender for t in block} | {t.body["to"] for t in block})
        else:
            if acct.balance < amount + 1:
                continue
            ext = transfer(k, CHAIN, SINK, amount, acct.nonce, 1)  # another node's tx
            view.apply(ext)
            before = set(pool._by_hash)
            dropped = pool.update([ext], view)
            assert set(pool._by_hash) == before - set(dropped)
            check_affordable(pool, view, {k.public_key})
        check_invariants(pool, view)
