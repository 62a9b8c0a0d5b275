"""Fuzzing the static body checks of every registered transaction kind: transfer
(``state/machine.py``), the market (``state/market/bodies.py``: miner, job, bid, receipt, challenge and
availability bodies, job params through ``gpu/kinds``) and staking (``state/staking/txs.py``).

A body reaches ``TxKind.check_body`` as any map with text keys that canonical CBOR can carry
(``Transaction.decode`` guarantees no more). Properties, for random maps and mutations of valid
bodies built by the real builders:

- ``check_body`` raises nothing but :class:`TxError`;
- a body it accepts has a cost (``TxKind.cost``, what the mempool charges) that is an integer in
  ``[0, 2**64)``, and the transaction's JSON view (RPC) is JSON-serialisable.

Also fuzzed: ``receipt_from_json`` (only ``ReceiptJsonError``) and ``verify_receipt`` (never raises).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fuzzlib import (
    TOLERATE_KNOWN,
    cbor_values,
    corpus_params,
    decoded_seeds,
    fuzz_settings,
    mutated_obj,
    run,
    schema_keys,
    seeds,
)
from hypothesis import given
from hypothesis import strategies as st

import state.market  # noqa: F401 - registers the market kinds
import state.staking  # noqa: F401 - registers the staking kinds
from state import codec
from state.crypto import SigningKey
from state.errors import DecodeError, TxError
from state.machine import TX_KINDS
from state.market import ReceiptJsonError, receipt_from_json, receipt_json, verify_receipt
from state.types import U64_MAX, Transaction

AREA = "bodies"
CHAIN = "fuzz-chain"
KEY = SigningKey.from_seed(b"\x01" * 32)


def _known_bug(exc: BaseException) -> bool:
    """The known bug: gpu/kinds/base.py int_param formats an out-of-bounds integer param into its
    message, which raises ValueError for an integer of more than 4300 digits (a CBOR bignum)."""
    return type(exc) is ValueError and "integer string conversion" in str(exc)


def check(data: bytes, tx_type: str, tolerate_known: bool = False) -> bool:
    """``data`` is the CBOR of a body; True if the ``tx_type`` check accepted it."""
    try:
        body = codec.decode(data)
    except DecodeError:
        return False
    if type(body) is not dict or not all(type(k) is str for k in body):
        return False  # Transaction.decode refuses it before any body check
    kind = TX_KINDS[tx_type]
    try:
        kind.check_body(body)
    except TxError as exc:
        assert isinstance(exc.reason, str)
        return False
    except ValueError as exc:
        if tolerate_known and _known_bug(exc):
            return False
        raise
    tx = Transaction.create(KEY, CHAIN, tx_type, 0, 1, body)
    cost = kind.cost(tx)
    assert type(cost) is int and 0 <= cost <= U64_MAX, f"cost {cost!r}"
    json.dumps(tx.to_json(), allow_nan=False)
    assert Transaction.decode(tx.raw) == tx
    return True


SEEDS = {t: decoded_seeds(seeds(AREA, t)) for t in sorted(TX_KINDS)}
ALL = [s for v in SEEDS.values() for s in v]
KEYS = schema_keys(*(codec.decode(s) for s in ALL)) | {
    "to",
    "amount",
    "seed",
    "m",
    "n",
    "k",
    "chains",
    "iterations",
}
types_ = st.sampled_from(sorted(TX_KINDS))


def test_every_kind_has_seeds() -> None:
    missing = [t for t, s in SEEDS.items() if not s]
    assert not missing, f"no valid seed body for {missing}: add one to make_corpus.py"


@pytest.mark.parametrize(("kind", "path"), corpus_params(AREA))
def test_corpus(kind: str, path) -> None:
    data = path.read_bytes()
    accepted = check(data, kind)
    if path.name.startswith("valid-"):
        assert accepted, f"{path.name}: a body built by the real builders is refused by check_body"
    for other in TX_KINDS:  # every body through every kind's check
        check(data, other)


@fuzz_settings(scale=1.0)
@given(
    types_,
    st.dictionaries(
        st.one_of(st.sampled_from(sorted(KEYS)), st.text(max_size=8)), cbor_values(KEYS), max_size=8
    ),
)
def test_random_bodies(tx_type: str, body: dict) -> None:
    run(AREA, tx_type, codec.encode(body), check, tx_type, TOLERATE_KNOWN, suffix=".cbor")


@st.composite
def _mutated(draw: Any) -> tuple[str, bytes]:
    tx_type = draw(types_)
    source = draw(st.sampled_from(sorted(SEEDS))) if draw(st.integers(0, 4)) == 0 else tx_type
    return tx_type, draw(mutated_obj(SEEDS[source], KEYS))


@fuzz_settings(scale=3.0)
@given(_mutated())
def test_mutated_bodies(case: tuple[str, bytes]) -> None:
    tx_type, data = case
    run(AREA, tx_type, data, check, tx_type, TOLERATE_KNOWN, suffix=".cbor")


# ------------------------------------------------------------------------------------ receipt JSON

RECEIPT = codec.decode(seeds(AREA, "receipt", valid_only=True)[0])
RECEIPT_JSON = receipt_json(RECEIPT["receipt"], RECEIPT["sig"], CHAIN)
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.text(max_size=70),
    st.sampled_from(["0x" + "00" * 32, "0x" + "ab" * 64, "12", "ait1", "0xzz", "-1", "٣"]),
)
json_values = st.recursive(
    json_leaf,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
    max_leaves=10,
)


def check_receipt_json(obj: Any) -> None:
    try:
        r, sig = receipt_from_json(obj)
    except ReceiptJsonError:
        return
    assert type(r) is dict and type(sig) is bytes and len(sig) == 64
    assert verify_receipt(CHAIN, r, sig) in (True, False)


def test_receipt_json_seed() -> None:
    r, sig = receipt_from_json(json.loads(json.dumps(RECEIPT_JSON)))
    assert verify_receipt(CHAIN, r, sig)


@fuzz_settings(scale=1.0)
@given(st.sampled_from(sorted(RECEIPT_JSON)), json_values, st.booleans())
def test_receipt_from_json(field: str, value: Any, drop: bool) -> None:
    obj = dict(RECEIPT_JSON)
    if drop:
        del obj[field]
    else:
        obj[field] = value
    check_receipt_json(obj)
    if type(obj.get("signature")) is dict:
        check_receipt_json({**obj, "signature": {**obj["signature"], "sig": value}})


@fuzz_settings(scale=1.0)
@given(cbor_values(schema_keys(RECEIPT)), st.one_of(st.binary(max_size=70), cbor_values()))
def test_verify_receipt_never_raises(receipt: Any, sig: Any) -> None:
    receipt, sig = codec.decode(codec.encode([receipt, sig]))  # plain ints, as a decoder gives them
    assert verify_receipt(CHAIN, receipt, sig) in (True, False)
    if type(receipt) is dict:
        assert verify_receipt(CHAIN, {**RECEIPT["receipt"], **receipt}, sig) in (True, False)
