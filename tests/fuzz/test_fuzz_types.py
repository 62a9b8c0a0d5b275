"""Fuzzing the strict decoders of the wire and store types: transactions, votes, commits, blocks,
accounts (``state/types.py``), duplicate-vote evidence (``state/evidence.py``) and proposals
(``consensus/bft.py``).

Properties, for random bytes, byte-level mutations and structure-aware mutations (a field replaced,
removed or added, an integer pushed across its bound, nested encodings — a block's transactions, a
proposal's block — mutated in place) of valid encodings produced by the real code:

- the decoder raises nothing but :class:`DecodeError`;
- what it accepts re-encodes to exactly the input bytes (no malleability: the hash of the bytes is
  the hash of the object), and the decoded fields are within their documented bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fuzzlib import corpus_params, decoded_seeds, fuzz_settings, mutated, mutated_obj, run, schema_keys, seeds
from hypothesis import given
from hypothesis import strategies as st

from consensus.bft import MAX_ROUND, Proposal
from state import codec
from state.errors import DecodeError
from state.evidence import DuplicateVote
from state.types import (
    PRECOMMIT,
    PREVOTE,
    U64_MAX,
    Account,
    Block,
    Commit,
    Transaction,
    Vote,
    max_tx_bytes,
)

AREA = "types"


def _tx(data: bytes) -> None:
    tx = Transaction.decode(data)
    assert tx.raw == data and len(data) <= max_tx_bytes(tx.type)  # 64 KiB, or 1.25 MiB for witness types
    assert codec.encode({**tx.unsigned_obj(), "sig": tx.sig}) == data
    assert 0 <= tx.nonce <= U64_MAX and 0 <= tx.fee <= U64_MAX
    assert len(tx.sender) == 32 and len(tx.sig) == 64
    assert all(type(k) is str for k in tx.body)


def _vote(data: bytes) -> None:
    v = Vote.decode(data)
    assert v.encode() == data
    assert v.type in (PREVOTE, PRECOMMIT) and len(v.block_hash) in (0, 32)
    assert 0 <= v.round <= 1 << 31


def _commit(data: bytes) -> None:
    c = Commit.decode(data)
    assert c.encode() == data
    assert len({s.validator for s in c.signatures}) == len(c.signatures)


def _block(data: bytes) -> None:
    b = Block.decode(data)
    assert b.encode() == data
    assert b.hash == b.header.hash()
    assert all(t.raw for t in b.txs)


def _account(data: bytes) -> None:
    a = Account.decode(data)
    assert a.encode() == data


def _evidence(data: bytes) -> None:
    e = DuplicateVote.decode(data)
    assert e.encode() == data
    assert e.vote_a.block_hash < e.vote_b.block_hash
    assert e.vote_a.validator == e.vote_b.validator


def _proposal(data: bytes) -> None:
    p = Proposal.decode(data)
    assert p.encode() == data
    assert p.block.height == p.height and -1 <= p.pol_round < p.round <= MAX_ROUND


DECODERS: dict[str, Callable[[bytes], None]] = {
    "tx": _tx,
    "vote": _vote,
    "commit": _commit,
    "block": _block,
    "account": _account,
    "evidence": _evidence,
    "proposal": _proposal,
}


def check(data: bytes, kind: str) -> bool:
    """True if the ``kind`` decoder accepted ``data`` (round trip checked), False on DecodeError."""
    try:
        DECODERS[kind](data)
    except DecodeError as exc:
        assert isinstance(exc.reason, str)
        return False
    return True


SEEDS = {k: seeds(AREA, k) for k in DECODERS}
ALL_SEEDS = [s for k in DECODERS for s in SEEDS[k]]
OBJ_SEEDS = {k: decoded_seeds(SEEDS[k]) for k in DECODERS}
KEYS = schema_keys(*(codec.decode(s) for s in decoded_seeds(ALL_SEEDS)))


def test_every_decoder_has_seeds() -> None:
    assert all(SEEDS[k] for k in DECODERS), {k: len(v) for k, v in SEEDS.items()}


@pytest.mark.parametrize(("kind", "path"), corpus_params(AREA))
def test_corpus(kind: str, path) -> None:
    data = path.read_bytes()
    accepted = check(data, kind)
    if path.name.startswith("valid-"):
        assert accepted, f"{path.name}: a valid {kind} produced by the real code is refused"
    for other in DECODERS:  # every decoder sees every seed (a vote where a block is expected, ...)
        check(data, other)


kinds = st.sampled_from(sorted(DECODERS))


def _run_all(data: bytes, first: str) -> None:
    run(AREA, first, data, check, first)
    for k in DECODERS:
        if k != first:
            run(AREA, k, data, check, k)


@fuzz_settings(scale=0.5)
@given(st.binary(max_size=300), kinds)
def test_random_bytes(data: bytes, kind: str) -> None:
    _run_all(data, kind)


@st.composite
def _mutated_of_kind(draw: Any, structural: bool) -> tuple[str, bytes]:
    kind = draw(kinds)
    if structural:
        return kind, draw(mutated_obj(OBJ_SEEDS[kind], KEYS))
    return kind, draw(mutated(SEEDS[kind]))


@fuzz_settings(scale=1.5)
@given(_mutated_of_kind(structural=False))
def test_mutated_bytes(case: tuple[str, bytes]) -> None:
    kind, data = case
    run(AREA, kind, data, check, kind)


@fuzz_settings(scale=3.0)
@given(_mutated_of_kind(structural=True))
def test_mutated_structure(case: tuple[str, bytes]) -> None:
    kind, data = case
    run(AREA, kind, data, check, kind)
