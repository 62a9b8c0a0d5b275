"""The pure state machine: transfers, fees, nonces, failure semantics; supply conservation (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from state.crypto import SigningKey
from state.errors import TxError
from state.genesis import ChainParams
from state.machine import BlockEnv, execute_block
from state.types import Account, Transaction, transfer

CHAIN = "sm-chain"
PARAMS = ChainParams(min_fee=10)
KEYS = [SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(4)]
PROPOSER = b"\xee" * 32


class DictState:
    """A committed state held in a dict (the machine only needs get_account/get_object)."""

    def __init__(self, balances: dict[bytes, int]) -> None:
        self.accounts = {pk: Account(b, 0) for pk, b in balances.items()}

    def get_account(self, pk: bytes) -> Account | None:
        return self.accounts.get(pk)

    def get_object(self, key: bytes) -> bytes | None:
        return None

    def apply(self, outcome) -> None:
        for pk, acc in outcome.accounts.items():
            self.accounts[pk] = acc.copy()

    def total(self) -> int:
        return sum(a.balance for a in self.accounts.values())


def env(height: int = 1) -> BlockEnv:
    return BlockEnv(CHAIN, height, 1000 * height, PROPOSER, PARAMS)


def test_transfer_moves_amount_and_fee_goes_to_proposer() -> None:
    a, b = KEYS[0], KEYS[1]
    s = DictState({a.public_key: 1000})
    out = execute_block(s, env(), [transfer(a, CHAIN, b.public_key, 300, 0, 10)])
    assert [r.ok for r in out.results] == [True]
    s.apply(out)
    assert s.accounts[a.public_key] == Account(690, 1)
    assert s.accounts[b.public_key].balance == 300
    assert s.accounts[PROPOSER].balance == 10
    assert out.fees == 10 and s.total() == 1000


def test_failed_body_charges_fee_and_advances_nonce() -> None:
    a, b = KEYS[0], KEYS[1]
    s = DictState({a.public_key: 100})
    out = execute_block(s, env(), [transfer(a, CHAIN, b.public_key, 500, 0, 10)])
    (r,) = out.results
    assert not r.ok and r.reason == "insufficient_balance"
    s.apply(out)
    assert s.accounts[a.public_key] == Account(90, 1)
    assert b.public_key not in s.accounts  # no partial write
    assert s.total() == 100


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda a, b: transfer(a, "other", b, 1, 0, 10), "wrong_chain"),
        (lambda a, b: transfer(a, CHAIN, b, 1, 1, 10), "bad_nonce"),
        (lambda a, b: transfer(a, CHAIN, b, 1, 0, 5), "fee_too_low"),
        (lambda a, b: Transaction.create(a, CHAIN, "mint", 0, 10, {}), "unknown_type"),
        (lambda a, b: Transaction.create(a, CHAIN, "transfer", 0, 10, {"to": b, "amount": 0}), "invalid_body"),
    ],
)
def test_block_invalid_transactions_raise(make, reason: str) -> None:
    a, b = KEYS[0], KEYS[1]
    s = DictState({a.public_key: 1000})
    with pytest.raises(TxError) as ei:
        execute_block(s, env(), [make(a, b.public_key)])
    assert ei.value.reason == reason


def test_bad_signature_is_block_invalid_unless_preverified() -> None:
    a, b = KEYS[0], KEYS[1]
    good = transfer(a, CHAIN, b.public_key, 1, 0, 10)
    forged = Transaction(good.chain_id, good.type, good.sender, good.nonce, good.fee, good.body,
                         b"\x00" * 64, good.raw, good.hash)
    s = DictState({a.public_key: 1000})
    with pytest.raises(TxError) as ei:
        execute_block(s, env(), [forged])
    assert ei.value.reason == "bad_signature"


def test_fee_unaffordable_is_block_invalid_and_skipped_when_building() -> None:
    a, b = KEYS[0], KEYS[1]
    s = DictState({a.public_key: 5})
    tx = transfer(a, CHAIN, b.public_key, 1, 0, 10)
    with pytest.raises(TxError):
        execute_block(s, env(), [tx])
    out = execute_block(s, env(), [tx], skip_invalid=True)
    assert out.included == [] and len(out.skipped) == 1 and out.accounts == {}


def test_replay_is_rejected() -> None:
    a, b = KEYS[0], KEYS[1]
    s = DictState({a.public_key: 1000})
    tx = transfer(a, CHAIN, b.public_key, 1, 0, 10)
    s.apply(execute_block(s, env(1), [tx]))
    with pytest.raises(TxError) as ei:
        execute_block(s, env(2), [tx])
    assert ei.value.reason == "bad_nonce"


def test_execution_is_deterministic() -> None:
    a, b = KEYS[0], KEYS[1]
    txs = [transfer(a, CHAIN, b.public_key, 7, i, 10) for i in range(20)]
    o1 = execute_block(DictState({a.public_key: 10_000}), env(), txs)
    o2 = execute_block(DictState({a.public_key: 10_000}), env(), txs)
    assert o1.state_changes == o2.state_changes and o1.results_hash() == o2.results_hash()


ops = st.lists(
    st.tuples(
        st.integers(0, 3),  # sender
        st.integers(0, 4),  # recipient (4 = the proposer)
        st.integers(1, 3000),  # amount
        st.integers(10, 60),  # fee
        st.integers(-1, 1),  # nonce offset (mostly right, sometimes wrong)
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops=ops, block_size=st.integers(1, 8))
def test_random_transfers_conserve_supply_and_never_go_negative(ops, block_size: int) -> None:
    start = {k.public_key: 2000 for k in KEYS}
    s = DictState(start)
    supply = s.total()
    nonces = {k.public_key: 0 for k in KEYS}
    pending: list[Transaction] = []
    height = 1
    included: set[bytes] = set()

    def flush() -> None:
        nonlocal height, pending
        out = execute_block(s, env(height), pending, skip_invalid=True)
        for tx in out.included:
            assert tx.hash not in included  # no replay ever included twice
            included.add(tx.hash)
        for tx, _ in out.skipped:
            nonces[tx.sender] = min(nonces[tx.sender], s.accounts.get(tx.sender, Account()).nonce)
        s.apply(out)
        for pk in nonces:
            nonces[pk] = s.accounts.get(pk, Account()).nonce
        height += 1
        pending = []

    for snd, rcv, amount, fee, off in ops:
        key = KEYS[snd]
        to = PROPOSER if rcv == 4 else KEYS[rcv].public_key
        nonce = max(0, nonces[key.public_key] + off)
        pending.append(transfer(key, CHAIN, to, amount, nonce, fee))
        if off == 0:
            nonces[key.public_key] += 1
        if len(pending) >= block_size:
            flush()
    flush()
    assert s.total() == supply
    assert all(a.balance >= 0 for a in s.accounts.values())
