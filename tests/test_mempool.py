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
        "too_large", "invalid_body", "sender_limit", "queued_full", "sponsor_refused",
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
    assert str(err) == "invalid body: transfer 'amount' must be positive" and err.detail is None
    pool.add(tx(A, 0, amount=1))


def test_invalid_body_keeps_the_rules_finer_reason_as_detail() -> None:
    def check(t: Transaction) -> None:
        raise TxError("job params refused", "invalid_params")

    pool, _ = make(check_body=check)
    err = reject(pool, tx(A, 0, amount=1), "invalid_body")
    assert err.detail == "invalid_params" and "job params refused" in str(err)


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


def test_held_txs_stay_out_of_reap_until_released_and_leave_no_trace() -> None:
    """A held tx (a stem transaction not yet gossiped) is pooled but not reaped, and ends its sender's run
    there; release brings it back; leaving the pool (commit, replacement, flush) forgets the hold."""
    pool, view = make()
    a0, a1, b0, c0 = tx(A, 0, fee=5), tx(A, 1, fee=5), tx(B, 0, fee=9), tx(C, 0, fee=7)
    for t in (a0, a1, b0, c0):
        pool.add(t)
    pool.hold(b0.hash)
    pool.hold(a0.hash)
    pool.hold(b"\x00" * 32)  # not pooled: nothing to hold
    assert pool.reap(10, 10**6) == [c0] and b0.hash in pool and pool.is_held(b0.hash)
    assert not pool.is_held(b"\x00" * 32)
    pool.release(a0.hash)
    assert pool.reap(10, 10**6) == [c0, a0, a1]
    b0b = tx(B, 0, fee=20, amount=2)  # a replacement is a new tx: not held
    assert pool.add(b0b) == [b0.hash] and not pool.is_held(b0b.hash)
    pool.hold(c0.hash)
    view.apply(c0)
    pool.update([c0], view)
    assert not pool.is_held(c0.hash)
    pool.hold(a1.hash)
    pool.flush()
    assert not pool.is_held(a1.hash)


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
    assert pool.stats() == {
        "size": 3, "bytes": total, "senders": 2, "pending": 3, "queued": 0, "queued_bytes": 0,
        "max_txs": 10, "max_bytes": 10_000, "max_queued": 1, "max_queued_bytes": 1250,
    }  # fmt: skip
    q = tx(B, 5)
    pool.add(q)
    st = pool.stats()
    assert (st["size"], st["pending"], st["queued"], st["queued_bytes"]) == (4, 3, 1, len(q.raw))
    assert pool.pending_count == 3 and pool.queued_count == 1
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
    # (checked every 64 adds: at most 64 adds' pushes above the bound)
    assert len(pool._tails) <= 2 * pool.senders() + 4096 + 64
    assert len(pool._heads) <= 2 * pool.senders() + 4096 + 64
    # Queued txs: replaced over and over, and promoted and demoted; the queued heaps stay bounded too.
    clock = Clock(0.0)
    pool, view = make(config=MempoolConfig(replace_bump_percent=0, queued_lifetime_s=10), clock=clock)
    for i in range(6000):
        pool.add(tx(B, 3, fee=10, amount=i + 1), verified=True)
    assert pool.queued_count == 1
    assert len(pool._qheap) <= 2 * pool.queued_count + 4096 + 64
    assert len(pool._deadlines) <= 2 * pool.queued_count + 4096 + 64
    # The rebuilt heaps still drive eviction and expiry.
    last = pool._senders[B.public_key].txs[3]
    clock.t = 9.0
    pool.add(tx(C, 3), verified=True)
    assert pool._peek_queued() is last
    assert pool.expire(10.0) == [last.hash] and pool.queued_count == 1


# ------------------------------------------------------------------------------------------------
# Pending and queued: txs behind a nonce gap have their own budget and lifetime


class Clock:
    """A settable clock for the lifetime of queued txs (no sleeps)."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


FLOOD_KEYS = [key(i) for i in range(10, 50)]


def test_flood_of_gapped_txs_never_refuses_an_executable_min_fee_tx() -> None:
    """Many funded senders fill the pool with high-fee txs that can never execute; every executable
    tx that pays the minimum fee still gets in, whatever the queued budget."""
    for max_queued in (0, 20):  # the default (max_txs // 8 = 2), and a budget as big as the pool
        cfg = MempoolConfig(max_txs=20, min_fee=1, max_queued=max_queued)
        pool, _ = make(config=cfg, keys=KEYS + FLOOD_KEYS)
        accepted, refused = [], []
        for k in FLOOD_KEYS:
            for n in (1, 2):  # nonce 0 never comes
                try:
                    pool.add(tx(k, n, fee=10**6), verified=True)
                    accepted.append(n)
                except MempoolError as exc:
                    refused.append(exc.reason)
        limit = cfg.queued_limits[0]
        assert len(accepted) == limit == pool.queued_count and pool.pending_count == 0
        assert set(refused) == {"queued_full"}
        assert pool.reap(100, 10**6) == []
        # 20 executable min-fee txs: the first ones take free slots, the others evict queued txs.
        honest = [tx(k, 0, fee=1) for k in FLOOD_KEYS[20:]]  # senders that did not flood
        for t in honest:
            pool.add(t)
        assert pool.queued_count == 0 and pool.pending_count == 20 == len(pool)
        assert pool.reap(100, 10**6) == honest


def test_flood_by_bytes_never_refuses_an_executable_tx() -> None:
    size = len(tx(A, 0).raw)
    pool, _ = make(
        config=MempoolConfig(max_bytes=4 * size + 10, max_queued_bytes=4 * size + 10), keys=KEYS + FLOOD_KEYS
    )
    for k in FLOOD_KEYS[:4]:
        pool.add(tx(k, 3, fee=999))
    assert pool.queued_count == 4
    reject(pool, tx(FLOOD_KEYS[5], 3, fee=999), "queued_full")
    a0 = tx(A, 0, fee=1)
    out = pool.add(a0)
    assert len(out) == 1 and pool.queued_count == 3 and a0.hash in pool


def test_queued_newcomer_never_evicts_a_pending_tx() -> None:
    pool, _ = make(config=MempoolConfig(max_txs=3, max_queued=3))
    pending = [tx(k, 0, fee=1) for k in (A, B, C)]
    for t in pending:
        pool.add(t)
    err = reject(pool, tx(D, 1, fee=10**6), "mempool_full")
    assert str(err).endswith("cannot make room: a tx behind a nonce gap never evicts an executable tx")
    assert all(t.hash in pool for t in pending)


def test_full_pool_prefers_executable_then_higher_fee() -> None:
    pool, _ = make(config=MempoolConfig(max_txs=4, max_queued=4))
    q_rich, q_poor = tx(A, 3, fee=500), tx(B, 3, fee=400)
    p_low, p_high = tx(C, 0, fee=5), tx(D, 0, fee=50)
    for t in (q_rich, q_poor, p_low, p_high):
        pool.add(t)
    assert (pool.pending_count, pool.queued_count) == (2, 2)
    # An executable min-fee tx evicts the lowest-fee queued tx, although its own fee is lower.
    e0 = tx(KEYS[4], 0, fee=1)
    assert pool.add(e0) == [q_poor.hash]
    # A queued tx only displaces a queued tx with a lower fee; never a pending one.
    err = reject(pool, tx(B, 4, fee=500), "mempool_full")
    assert str(err).endswith(
        "fee 500 is not above the lowest queued fee 500 (a tx behind a nonce gap only evicts queued txs)"
    )
    q_richer = tx(B, 4, fee=501)
    assert pool.add(q_richer) == [q_rich.hash]
    # The next executable tx evicts the last queued one, then pending tails compete by fee.
    f0 = tx(KEYS[5], 0, fee=1)
    assert pool.add(f0) == [q_richer.hash]
    assert pool.queued_count == 0 and len(pool) == 4
    err = reject(pool, tx(A, 0, fee=1), "mempool_full")
    assert str(err).endswith("fee 1 is not above the lowest evictable fee 1")
    a0 = tx(A, 0, fee=6)
    assert pool.add(a0) == [f0.hash]  # equal fees: the newest tail goes first
    assert pool.add(tx(B, 0, fee=60)) == [e0.hash]
    reject(pool, tx(KEYS[4], 1, fee=10**6), "mempool_full")  # e0 is gone: nonce 1 is behind a gap
    assert pool.add(tx(KEYS[4], 0, fee=7)) == [p_low.hash]
    assert p_high.hash in pool and a0.hash in pool


def test_full_pool_eviction_order_is_exact() -> None:
    pool, _ = make(config=MempoolConfig(max_txs=3, max_queued=3))
    e0, f0 = tx(KEYS[4], 0, fee=1), tx(KEYS[5], 0, fee=1)
    p_high = tx(D, 0, fee=50)
    for t in (e0, f0, p_high):
        pool.add(t)
    a0 = tx(A, 0, fee=6)
    assert pool.add(a0) == [f0.hash]  # equal fees: the newest tail first
    assert pool.add(tx(B, 0, fee=60)) == [e0.hash]
    assert pool.add(tx(C, 0, fee=7)) == [a0.hash]
    assert p_high.hash in pool


def test_queued_budget_evicts_lower_fee_queued_only() -> None:
    pool, _ = make(config=MempoolConfig(max_queued=2))
    q1, q2 = tx(A, 2, fee=10), tx(B, 2, fee=20)
    pool.add(q1)
    pool.add(q2)
    err = reject(pool, tx(C, 2, fee=10), "queued_full")
    assert str(err) == (
        f"queued full (2/2 txs, {pool.stats()['queued_bytes']}/{8 << 20} bytes behind nonce gaps): "
        "fee 10 is not above the lowest queued fee 10"
    )
    q3 = tx(C, 2, fee=11)
    assert pool.add(q3) == [q1.hash]
    # Executable txs are outside the queued budget.
    for k in (A, B, C, D):
        pool.add(tx(k, 0))
    assert (pool.pending_count, pool.queued_count) == (4, 2)


def test_per_sender_queued_cap() -> None:
    pool, _ = make(config=MempoolConfig(max_queued_per_sender=3))
    for n in (2, 3, 5):
        pool.add(tx(A, n))
    err = reject(pool, tx(A, 6), "queued_full")
    assert str(err) == (
        "queued full: sender already has 3 txs waiting behind a nonce gap (limit 3 per sender); "
        "its next executable nonce is 0"
    )
    pool.add(tx(A, 5, fee=100))  # a replacement takes no new slot
    pool.add(tx(B, 2))  # other senders unaffected
    pool.add(tx(A, 0))  # executable txs are not limited by the queued cap
    reject(pool, tx(A, 7), "queued_full")
    pool.add(tx(A, 1))  # fills the gap: 2 and 3 are promoted, 5 stays queued
    assert pool.pending_nonce(A.public_key) == 4
    assert (pool.pending_count, pool.queued_count) == (4, 2)
    pool.add(tx(A, 7))
    pool.add(tx(A, 8))
    reject(pool, tx(A, 9), "queued_full")


def test_queued_lifetime_with_a_fake_clock() -> None:
    clock = Clock(1000.0)
    pool, view = make(config=MempoolConfig(queued_lifetime_s=180), clock=clock)
    q_old = tx(A, 5)
    pool.add(q_old)
    clock.t = 1100.0
    q_new = tx(B, 5)
    pool.add(q_new)
    p = tx(C, 0)
    pool.add(p)
    assert pool.expire(1179.9) == []
    assert pool.expire() == [] and len(pool) == 3  # the pool's own clock: 1100
    assert pool.expire(1180.0) == [q_old.hash]
    # A replacement keeps the slot's queued time.
    clock.t = 1200.0
    q_new2 = tx(B, 5, fee=100)
    assert pool.add(q_new2) == [q_new.hash]
    # add() drops expired queued txs first, and reports them.
    clock.t = 1280.0
    late = tx(D, 3)
    assert pool.add(late) == [q_new2.hash]
    # update() drops them too.
    clock.t = 1460.0
    view.apply(p)
    assert pool.update([p], view) == [late.hash]
    assert len(pool) == 0 and pool.queued_count == 0 and pool.stats()["queued_bytes"] == 0
    # Pending txs never expire; a promoted tx no longer does either.
    d1 = tx(D, 1)
    pool.add(d1)
    clock.t = 1500.0
    d0 = tx(D, 0)
    pool.add(d0)
    assert pool.expire(10**9) == [] and pool.reap(10, 10**6) == [d0, d1]


def test_refused_add_still_drops_expired_queued_txs() -> None:
    clock = Clock(0.0)
    pool, _ = make(config=MempoolConfig(queued_lifetime_s=10), clock=clock)
    q = tx(A, 4)
    pool.add(q)
    clock.t = 10.0
    with pytest.raises(MempoolError):
        pool.add(tx(B, 0, fee=0))
    assert q.hash not in pool and pool.queued_count == 0


def test_promotion_when_the_gap_fills() -> None:
    pool, view = make()
    view.set(A.public_key, 10**6, nonce=3)
    later = [tx(A, n) for n in (5, 6, 8)]
    for t in later:
        pool.add(t)
    assert (pool.pending_count, pool.queued_count) == (0, 3) and pool.reap(10, 10**6) == []
    assert all(pool.is_queued(t.hash) for t in later)
    a3 = tx(A, 3)
    pool.add(a3)
    assert (pool.pending_count, pool.queued_count) == (1, 3)
    a4 = tx(A, 4)
    assert pool.add(a4) == []
    # 5 and 6 joined the run; 8 is still behind the gap at 7.
    assert (pool.pending_count, pool.queued_count) == (4, 1)
    assert pool.reap(10, 10**6) == [a3, a4, later[0], later[1]]
    assert pool.is_queued(later[2].hash) and not pool.is_queued(later[0].hash)
    assert pool.pending_nonce(A.public_key) == 7


def test_promotion_on_block_update() -> None:
    pool, view = make()
    a0, a2, a3, a5 = tx(A, 0), tx(A, 2), tx(A, 3), tx(A, 5)
    for t in (a0, a2, a3, a5):
        pool.add(t)
    assert (pool.pending_count, pool.queued_count) == (1, 3)
    # The block holds our a0 and another node's a1: the account nonce jumps to 2.
    other1 = tx(A, 1, fee=99)
    view.apply(a0)
    view.apply(other1)
    assert pool.update([a0, other1], view) == []
    assert (pool.pending_count, pool.queued_count) == (2, 1)
    assert pool.reap(10, 10**6) == [a2, a3]
    # Another node's txs jump the nonce past our pending run: a5 is promoted, a2, a3 drop (nonce below).
    for n in (2, 3, 4):
        ext = tx(A, n, fee=77)
        view.apply(ext)
    assert set(pool.update([], view, touched=[A.public_key])) == {a2.hash, a3.hash}
    assert (pool.pending_count, pool.queued_count) == (1, 0)
    assert pool.reap(10, 10**6) == [a5]


def test_demotion_when_a_block_takes_a_tx_out_of_the_middle() -> None:
    """Defensive: a tx leaving the middle of a pending run demotes those above it (no gap in pending)."""
    clock = Clock(50.0)
    pool, view = make(config=MempoolConfig(max_queued_per_sender=2), clock=clock)
    a = [tx(A, n) for n in range(5)]
    for t in a:
        pool.add(t)
    assert (pool.pending_count, pool.queued_count) == (5, 0)
    # a1 is listed in a block although the account nonce did not move (e.g. it failed elsewhere).
    dropped = pool.update([a[1]], view)
    assert a[1].hash not in pool
    # a2, a3, a4 are behind a gap now; the per-sender queued cap (2) drops the highest.
    assert dropped == [a[4].hash]
    assert (pool.pending_count, pool.queued_count) == (1, 2)
    assert pool.reap(10, 10**6) == [a[0]] and pool.pending_nonce(A.public_key) == 1
    assert pool.is_queued(a[2].hash) and pool.is_queued(a[3].hash)
    # Demoted txs are queued from the demotion on: their lifetime starts now.
    assert pool.expire(50.0 + 179) == [] and set(pool.expire(50.0 + 180)) == {a[2].hash, a[3].hash}


def test_gap_filler_evicts_the_txs_it_promoted_first() -> None:
    """A full pool does not refuse a gap-filling tx because of the txs it makes executable."""
    pool, _ = make(config=MempoolConfig(max_txs=3, max_queued=3))
    b0, c0, a1 = tx(B, 0, fee=50), tx(C, 0, fee=50), tx(A, 1, fee=90)
    for t in (b0, c0, a1):
        pool.add(t)
    a0 = tx(A, 0, fee=1)  # promotes a1; over by one; a1 (above a0) goes although its fee is higher
    assert pool.add(a0) == [a1.hash]
    assert pool.reap(10, 10**6) == [b0, c0, a0]


def test_failed_add_keeps_queued_times() -> None:
    """A gap-filling tx that is refused for room undoes its promotions; the queued txs keep their age."""
    clock = Clock(0.0)
    b0, c0, a1 = tx(B, 0, fee=50), tx(C, 0, fee=50), tx(A, 1, fee=1)
    limit = sum(len(t.raw) for t in (b0, c0, a1))
    pool, _ = make(
        config=MempoolConfig(max_bytes=limit, max_queued_bytes=limit, queued_lifetime_s=100), clock=clock
    )
    for t in (b0, c0, a1):
        pool.add(t)
    clock.t = 60.0
    # a0 fills A's gap, promoting a1, which goes first; a0 is big, so the pool is still over by bytes and
    # the cheapest tail is a0 itself: refused, a1 queued again with its original time.
    a0 = Transaction.create(A, CHAIN, "transfer", 0, 1, {"to": SINK, "amount": 1, "memo": b"m" * 100})
    err = reject(pool, a0, "mempool_full")
    assert str(err).endswith("fee 1 is not above the fee 50 of a tx that would also have to be evicted")
    assert pool.is_queued(a1.hash)
    assert pool.expire(99.0) == [] and pool.expire(100.0) == [a1.hash]


def test_failed_add_puts_back_evicted_queued_txs_with_their_time() -> None:
    clock = Clock(0.0)
    b0, q = tx(B, 0, fee=50), tx(C, 3, fee=1)
    limit = len(b0.raw) + len(q.raw)
    pool, _ = make(
        config=MempoolConfig(max_bytes=limit, max_queued_bytes=limit, queued_lifetime_s=100), clock=clock
    )
    pool.add(b0)
    pool.add(q)
    clock.t = 60.0
    # a0 evicts q (queued, any fee) but is too big to fit beside b0, whose fee is higher: refused.
    a0 = Transaction.create(A, CHAIN, "transfer", 0, 10, {"to": SINK, "amount": 1, "memo": b"m" * 300})
    err = reject(pool, a0, "mempool_full")
    assert str(err).endswith("fee 10 is not above the fee 50 of a tx that would also have to be evicted")
    assert pool.is_queued(q.hash)
    assert pool.expire(99.0) == [] and pool.expire(100.0) == [q.hash]


def test_insert_below_drops_what_it_makes_unaffordable() -> None:
    pool, view = make()
    view.set(A.public_key, 100)
    a2 = tx(A, 2, fee=10, amount=50)  # 60
    a1 = tx(A, 1, fee=10, amount=20)  # 30
    pool.add(a2)
    pool.add(a1)  # counts nonces <= 1 only: 30
    a0 = tx(A, 0, fee=10, amount=20)  # 30: 30 + 30 + 60 > 100, so a2 could never execute
    assert pool.add(a0) == [a2.hash]
    assert pool.reap(10, 10**6) == [a0, a1] and pool.queued_count == 0
    # A costlier replacement does the same.
    a0b = tx(A, 0, fee=11, amount=79)  # 90: 90 + 30 > 100
    assert pool.add(a0b) == [a0.hash, a1.hash]
    assert pool.reap(10, 10**6) == [a0b]


def test_refused_add_puts_back_what_it_dropped() -> None:
    clock = Clock(5.0)
    a0 = tx(A, 0, fee=50, amount=10)  # 60
    a2 = tx(A, 2, fee=50, amount=0)  # 50, queued
    b0 = tx(B, 0, fee=50)
    limit = sum(len(t.raw) for t in (a0, a2, b0))
    pool, view = make(config=MempoolConfig(max_bytes=limit, max_queued_bytes=limit), clock=clock)
    view.set(A.public_key, 130)
    for t in (a0, a2, b0):
        pool.add(t)
    clock.t = 50.0
    # a1 (30) fills A's gap and makes a2 unaffordable (60 + 30 + 50 > 130), but it is big: the pool is
    # over by bytes with no queued tx left, and the cheapest tail is a1 itself. Refused; a2 is back,
    # queued since 5.0.
    a1 = Transaction.create(A, CHAIN, "transfer", 1, 10, {"to": SINK, "amount": 20, "memo": b"m" * 300})
    err = reject(pool, a1, "mempool_full")
    assert str(err).endswith("fee 10 is not above the lowest evictable fee 50")
    assert pool.is_queued(a2.hash) and pool.queued_count == 1
    assert pool.expire(184.9) == [] and pool.expire(185.0) == [a2.hash]


def test_reap_never_returns_queued_txs() -> None:
    pool, _ = make()
    for k in KEYS:
        for n in (0, 1, 3, 4, 7):
            pool.add(tx(k, n, fee=100 - n))
    got = pool.reap(10**6, 10**9)
    assert len(got) == 2 * len(KEYS) and {t.nonce for t in got} == {0, 1}
    assert not any(pool.is_queued(t.hash) for t in got)
    assert pool.queued_count == 3 * len(KEYS)


def test_flush_drops_pending_and_queued() -> None:
    pool, _ = make()
    for t in (tx(A, 0), tx(A, 1), tx(B, 4)):
        pool.add(t)
    assert pool.flush() == 3
    assert (len(pool), pool.pending_count, pool.queued_count, pool.size_bytes, pool.senders()) == (
        0,
        0,
        0,
        0,
        0,
    )
    assert pool.stats()["queued_bytes"] == 0 and pool.reap(10, 10**6) == [] and pool.expire(10**9) == []
    a0 = tx(A, 0)
    pool.add(a0)
    pool.add(tx(B, 4))
    assert pool.reap(10, 10**6) == [a0] and (pool.pending_count, pool.queued_count) == (1, 1)


def test_config_validation_and_defaults() -> None:
    cfg = MempoolConfig()
    assert cfg.queued_limits == (100_000 // 8, (64 << 20) // 8)
    assert (cfg.max_queued_per_sender, cfg.queued_lifetime_s) == (64, 180.0)
    assert MempoolConfig(max_txs=3, max_bytes=7).queued_limits == (1, 1)
    assert MempoolConfig(max_queued=5, max_queued_bytes=9).queued_limits == (5, 9)
    for bad in (
        {"max_queued_per_sender": 0},
        {"max_queued": -1},
        {"max_queued_bytes": -1},
        {"queued_lifetime_s": 0},
    ):
        with pytest.raises(ValueError):
            MempoolConfig(**bad)


# ------------------------------------------------------------------------------------------------
# Property test: random add / commit / expire sequences keep the invariants


CFG = MempoolConfig(
    max_txs=6, max_bytes=1500, nonce_window=6, max_per_sender=4, replace_bump_percent=10,
    max_queued=3, max_queued_bytes=800, max_queued_per_sender=2, queued_lifetime_s=100,
)  # fmt: skip
PKEYS = KEYS[:4]
PKS = [k.public_key for k in PKEYS]

# One op: kind 0-6 add, 7-8 commit a reaped block, 9 commit another node's tx, 10 advance the clock
# (and expire), 11 a block that lists one of our txs although the account nonce did not move (takes it
# out of the middle of a run). Fields unused by a kind are ignored (a flat tuple shrinks better than a
# one_of of tuples).
op_strategy = st.tuples(
    st.integers(0, 11),  # kind
    st.integers(0, len(PKEYS) - 1),  # sender
    st.sampled_from((0, 0, 0, 1, 2, 3, 4, -1, -2)),  # add: offset from the pending nonce (< 0: replace)
    st.integers(1, 60),  # add: fee
    st.integers(0, 40),  # add / external: amount
    st.integers(0, len(PKEYS)),  # add: recipient (len(PKEYS) = SINK)
    st.booleans(),  # add: verified and a memo making the tx bigger; external: two txs
    st.integers(0, 5),  # commit: max_txs; odd block: which of the sender's txs
    st.integers(0, 2500),  # commit: max_bytes; clock: seconds * 100
)


def check_affordable(pool: Mempool, view: View, accounts: set[bytes]) -> None:
    """After an update, every re-checked sender's whole queue is affordable in nonce order."""
    for pk in accounts:
        s = pool._senders.get(pk)
        if s is not None:
            assert sum(e.cost for e in s.txs.values()) <= view.get_account(pk).balance


def check_invariants(pool: Mempool, view: View, now: float) -> None:
    entries = pool._by_hash
    queued_limit, qbytes_limit = CFG.queued_limits
    assert len(pool) == len(entries) <= CFG.max_txs
    assert pool.size_bytes == sum(len(e.tx.raw) for e in entries.values()) <= CFG.max_bytes
    assert pool.senders() == len(pool._senders)
    total = pending = queued = qbytes = 0
    for pk, s in pool._senders.items():
        assert s.nonces, "an empty sender is kept"
        assert s.nonces == sorted(set(s.nonces)), "duplicate or unsorted nonces"
        assert set(s.nonces) == set(s.txs)
        assert len(s.nonces) <= CFG.max_per_sender
        acct = view.get_account(pk)
        assert (s.nonce, s.balance) == (acct.nonce, acct.balance), "stale cached account"
        assert s.nonces[0] >= acct.nonce
        assert s.total_cost == sum(default_cost(e.tx) for e in s.txs.values())
        assert s.total_cost <= s.balance, "a sender's txs are not affordable together"
        # Pending: exactly the contiguous run from the account nonce; queued: after a gap.
        assert s.nonces[: s.plen] == list(range(acct.nonce, acct.nonce + s.plen)), "gap in pending"
        assert s.plen == s.run_length()
        q = s.nonces[s.plen :]
        assert not q or q[0] > acct.nonce + s.plen
        assert len(q) <= CFG.max_queued_per_sender
        for n in q:
            e = s.txs[n]
            assert pool.is_queued(e.hash)
            assert e.qtime is not None and now - e.qtime < CFG.queued_lifetime_s, "an expired tx is kept"
            qbytes += e.size
        pending += s.plen
        queued += len(q)
        for n, e in s.txs.items():
            assert e.tx.nonce == n and e.tx.sender == pk and entries[e.hash] is e
        total += len(s.txs)
    assert total == len(entries) == pending + queued
    assert (pool.pending_count, pool.queued_count) == (pending, queued)
    st_ = pool.stats()
    assert (st_["pending"], st_["queued"], st_["queued_bytes"]) == (pending, queued, qbytes)
    assert queued <= queued_limit and qbytes <= qbytes_limit

    # Unlimited reap: exactly the pending txs, each sender's run in nonce order.
    full = pool.reap(10**6, 10**9)
    expected = {pk: s.nonces[: s.plen] for pk, s in pool._senders.items() if s.plen}
    got: dict[bytes, list[int]] = {}
    for t in full:
        got.setdefault(t.sender, []).append(t.nonce)
    assert got == expected
    for pk, s in pool._senders.items():
        assert pool.pending_nonce(pk) == s.nonce + s.plen
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
        view.set(pk, 400)
    clock = Clock(0.0)
    pool = Mempool(CHAIN, view, CFG, clock=clock)
    recipients = PKS + [SINK]
    for kind, si, off, fee, amount, ri, flag, max_txs, max_bytes in ops:
        k = PKEYS[si]
        acct = view.get_account(k.public_key)
        if kind <= 6:
            end = pool.pending_nonce(k.public_key)
            nonce = end + off
            if nonce < acct.nonce:
                continue
            body = {"to": recipients[ri], "amount": amount}
            if flag:
                body["memo"] = b"m" * 150
            t = Transaction.create(k, CHAIN, "transfer", nonce, fee, body)
            executable = nonce <= end
            fresh_executable = nonce == end
            before = {h: e.tx for h, e in pool._by_hash.items()}
            queued_before = {h for h in before if pool.is_queued(h)}
            qtimes = {h: pool._by_hash[h].qtime for h in queued_before}
            pending_bytes = sum(len(x.raw) for h, x in before.items() if h not in queued_before)
            pending_count = len(before) - len(queued_before)
            expiring = {h for h in queued_before if clock.t - pool._by_hash[h].qtime >= CFG.queued_lifetime_s}
            assert not expiring  # the last op expired them already
            try:
                out = pool.add(t, verified=flag)
            except MempoolError as exc:
                assert exc.reason in REASONS
                assert set(pool._by_hash) == set(before)
                # A refused add leaves the pool as it was, down to when each queued tx was queued.
                assert {h for h in before if pool.is_queued(h)} == queued_before
                assert {h: pool._by_hash[h].qtime for h in queued_before} == qtimes
                if fresh_executable:
                    # Never refused for lack of room while a queued tx could make it.
                    assert exc.reason != "queued_full"
                    if exc.reason == "mempool_full":
                        assert (
                            pending_count + 1 > CFG.max_txs or pending_bytes + len(t.raw) > CFG.max_bytes
                        ), "an executable tx was refused while queued txs held the room"
            else:
                assert t.hash in pool
                assert set(out) <= set(before) and not (set(out) & set(pool._by_hash))
                assert set(pool._by_hash) == (set(before) - set(out)) | {t.hash}
                for h in out:
                    gone = before[h]
                    if gone.sender == t.sender and gone.nonce == t.nonce:
                        continue  # the replaced tx
                    if gone.sender == t.sender and gone.nonce > t.nonce:
                        continue  # made unaffordable by t (or evicted)
                    if h in queued_before and executable:
                        continue  # executable txs evict queued ones whatever their fee
                    assert gone.fee < t.fee
                    if h not in queued_before:
                        assert executable, "a queued tx evicted a pending one"
                        left = pool._senders.get(gone.sender)
                        assert left is None or left.nonce + left.plen <= gone.nonce, "eviction opened a gap"
        elif kind <= 8:
            block = pool.reap(max_txs, max_bytes)
            for t in block:
                view.apply(t)  # asserts nonce order and affordability
            before = set(pool._by_hash)
            dropped = pool.update(block, view)
            assert not (set(dropped) & set(hashes(block)))
            assert set(pool._by_hash) == before - set(dropped) - set(hashes(block))
            check_affordable(pool, view, {t.sender for t in block} | {t.body["to"] for t in block})
        elif kind == 9:  # other nodes' txs of this sender, one or two
            block = []
            for n in range(acct.nonce, acct.nonce + (2 if flag else 1)):
                if view.get_account(k.public_key).balance < amount + 1:
                    break
                ext = transfer(k, CHAIN, SINK, amount, n, 1)
                view.apply(ext)
                block.append(ext)
            before = set(pool._by_hash)
            dropped = pool.update(block, view)
            assert set(pool._by_hash) == before - set(dropped) - set(hashes(block))
            check_affordable(pool, view, {k.public_key})
        elif kind == 10:
            clock.t += max_bytes / 100
            before = set(pool._by_hash)
            gone = pool.expire()
            assert set(pool._by_hash) == before - set(gone)
        else:
            ours = pool._senders.get(k.public_key)
            if ours is None:
                continue
            odd = ours.txs[ours.nonces[max_txs % len(ours.nonces)]].tx
            before = set(pool._by_hash)
            dropped = pool.update([odd], view)
            assert set(pool._by_hash) == before - set(dropped) - {odd.hash}
        check_invariants(pool, view, clock.t)
