"""ChainState on a real LevelDB: build, validate, commit, reopen, proofs, rejection of bad blocks."""

from __future__ import annotations

import dataclasses

import pytest

from consensus.signstate import STEP_PRECOMMIT, STEP_PREVOTE, DoubleSignError, SignState
from consensus.validators import CommitError, Validator, ValidatorSet
from state.chain import ChainState
from state.codec import sha256
from state.crypto import KIND_VOTE, SigningKey
from state.errors import BlockError
from state.genesis import ChainParams, Genesis, GenesisValidator
from state.machine import account_state_key
from state.smt import verify_proof
from state.store import Store, StoreError
from state.types import PRECOMMIT, Block, Commit, CommitSig, Vote, transfer

VAL = SigningKey.from_seed(b"\x07" * 32)
ALICE = SigningKey.from_seed(b"\x0a" * 32)
BOB = SigningKey.from_seed(b"\x0b" * 32)


def make_genesis(chain_id: str = "store-test") -> Genesis:
    return Genesis(
        chain_id=chain_id,
        genesis_time=1_000,
        consensus="poa",
        params=ChainParams(min_fee=10),
        accounts=((ALICE.public_key, 1_000_000),),
        validators=(GenesisValidator(VAL.public_key, 1, "v0"),),
    )


def vset() -> ValidatorSet:
    return ValidatorSet([Validator(VAL.public_key, 1)])


def sign_commit(chain_id: str, block: Block) -> Commit:
    v = Vote.create(VAL, chain_id, block.height, 0, PRECOMMIT, block.hash)
    return Commit(block.height, 0, block.hash, (CommitSig(VAL.public_key, v.sig),))


def produce(chain: ChainState, txs, time_ms: int) -> Block:
    last = chain.commit_at(chain.head.height) if chain.head.height > 0 else None
    pending = chain.build_block(
        txs, proposer=VAL.public_key, time_ms=time_ms, last_commit=last,
        validators_hash=vset().hash, next_validators_hash=vset().hash,
    )
    chain.commit(pending, sign_commit(chain.chain_id, pending.block))
    return pending.block


@pytest.fixture
def chain(tmp_path):
    store = Store(tmp_path / "db")
    c = ChainState(store, make_genesis())
    yield c
    store.close()


def test_genesis_state_and_blocks_commit(chain: ChainState, tmp_path) -> None:
    assert chain.head.height == 0
    assert chain.account(ALICE.public_key).balance == 1_000_000
    txs = [transfer(ALICE, chain.chain_id, BOB.public_key, 100, i, 10) for i in range(5)]
    b1 = produce(chain, txs, 2_000)
    b2 = produce(chain, [], 3_000)
    assert chain.head.height == 2 and chain.head.hash == b2.hash
    assert b2.header.prev_hash == b1.hash and b2.last_commit.block_hash == b1.hash
    assert chain.account(BOB.public_key).balance == 500
    assert chain.account(ALICE.public_key) .balance == 1_000_000 - 550
    assert chain.account(VAL.public_key).balance == 50
    tx, height, index, res = chain.tx_lookup(txs[3].hash)
    assert (tx, height, index, res.ok) == (txs[3], 1, 3, True)
    assert chain.block_at(1) == b1 and chain.block_by_hash(b2.hash) == b2
    vset().verify_commit(chain.chain_id, chain.commit_at(2), b2.hash, 2)


def test_reopen_yields_last_committed_block(tmp_path) -> None:
    store = Store(tmp_path / "db")
    c = ChainState(store, make_genesis())
    produce(c, [transfer(ALICE, c.chain_id, BOB.public_key, 1, 0, 10)], 2_000)
    head = c.head
    store.close()
    store2 = Store(tmp_path / "db")
    c2 = ChainState(store2, make_genesis())
    assert c2.head == head and c2.tree.root == head.state_root
    produce(c2, [transfer(ALICE, c2.chain_id, BOB.public_key, 1, 1, 10)], 3_000)
    assert c2.head.height == 2
    store2.close()


def test_other_genesis_is_refused(tmp_path) -> None:
    store = Store(tmp_path / "db")
    ChainState(store, make_genesis())
    with pytest.raises(StoreError, match="another chain"):
        ChainState(store, make_genesis("other-chain"))
    store.close()


def test_database_lock_gives_clear_error(tmp_path) -> None:
    store = Store(tmp_path / "db")
    with pytest.raises(StoreError, match="another node"):
        Store(tmp_path / "db")
    store.close()


def test_account_proofs_verify_against_state_root(chain: ChainState) -> None:
    produce(chain, [transfer(ALICE, chain.chain_id, BOB.public_key, 5, 0, 10)], 2_000)
    for key in (ALICE, BOB, VAL):
        proof, head, _ = chain.prove_account(key.public_key)
        acc = chain.account(key.public_key)
        assert verify_proof(head.state_root, account_state_key(key.public_key), sha256(acc.encode()), proof)
        tampered = dataclasses.replace(acc, balance=acc.balance + 1)
        assert not verify_proof(head.state_root, account_state_key(key.public_key), sha256(tampered.encode()), proof)
    stranger = SigningKey.generate().public_key
    proof, head, acc_none = chain.prove_account(stranger)
    assert acc_none is None
    assert verify_proof(head.state_root, account_state_key(stranger), None, proof)


def _validated_copy(tmp_path, blocks):
    """A second node's chain that validates and commits the given blocks."""
    store = Store(tmp_path / "db2")
    c = ChainState(store, make_genesis())
    for b in blocks:
        pending = c.validate_block(b)
        c.commit(pending, sign_commit(c.chain_id, b))
    return c, store


def test_a_second_node_revalidates_and_reaches_same_state(chain: ChainState, tmp_path) -> None:
    blocks = [produce(chain, [transfer(ALICE, chain.chain_id, BOB.public_key, 3, i, 10)], 2_000 + i) for i in range(4)]
    c2, store2 = _validated_copy(tmp_path, blocks)
    assert c2.head == chain.head
    store2.close()


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("state_root", b"\x01" * 32, "state_root"),
        ("tx_root", b"\x01" * 32, "tx_root"),
        ("results_hash", b"\x01" * 32, "results_hash"),
        ("prev_hash", b"\x01" * 32, "prev_hash"),
        ("height", 5, "height"),
        ("time", 1_000, "time"),
        ("chain_id", "evil", "chain"),
    ],
)
def test_tampered_blocks_are_rejected(chain: ChainState, tmp_path, field, value, match) -> None:
    good = produce(chain, [transfer(ALICE, chain.chain_id, BOB.public_key, 3, 0, 10)], 2_000)
    bad = Block(dataclasses.replace(good.header, **{field: value}), good.txs, good.last_commit)
    store = Store(tmp_path / "db2")
    c2 = ChainState(store, make_genesis())
    with pytest.raises(BlockError, match=match):
        c2.validate_block(bad)
    # the honest block still validates: nothing was changed by the rejection
    c2.validate_block(good)
    store.close()


def test_block_with_invalid_tx_is_rejected(chain: ChainState, tmp_path) -> None:
    tx = transfer(ALICE, chain.chain_id, BOB.public_key, 3, 7, 10)  # wrong nonce
    pending = chain.build_block([tx], proposer=VAL.public_key, time_ms=2_000, last_commit=None,
                                validators_hash=vset().hash, next_validators_hash=vset().hash)
    assert pending.block.txs == () and len(pending.outcome.skipped) == 1
    forged = Block(pending.block.header, (tx,), None)
    with pytest.raises(BlockError):
        chain.validate_block(forged)


def test_commit_verification(chain: ChainState) -> None:
    b = produce(chain, [], 2_000)
    vs = vset()
    good = chain.commit_at(1)
    assert vs.verify_commit(chain.chain_id, good, b.hash, 1) == 1
    with pytest.raises(CommitError, match="another block"):
        vs.verify_commit(chain.chain_id, good, b"\x00" * 32, 1)
    forged = Commit(1, 0, b.hash, (CommitSig(VAL.public_key, b"\x00" * 64),))
    with pytest.raises(CommitError, match="bad commit signature"):
        vs.verify_commit(chain.chain_id, forged, b.hash, 1)
    outsider = SigningKey.generate()
    v = Vote.create(outsider, chain.chain_id, 1, 0, PRECOMMIT, b.hash)
    with pytest.raises(CommitError, match="unknown validator"):
        vs.verify_commit(chain.chain_id, Commit(1, 0, b.hash, (CommitSig(outsider.public_key, v.sig),)), b.hash, 1)
    with pytest.raises(CommitError, match="2/3"):
        vs.verify_commit(chain.chain_id, Commit(1, 0, b.hash, ()), b.hash, 1)


def test_weighted_proposer_rotation() -> None:
    ks = [SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(3)]
    vs = ValidatorSet([Validator(ks[0].public_key, 1), Validator(ks[1].public_key, 2), Validator(ks[2].public_key, 3)])
    counts: dict[bytes, int] = {}
    for _ in range(600):
        p = vs.advance()
        counts[p.public_key] = counts.get(p.public_key, 0) + 1
    assert [counts[k.public_key] for k in ks] == [100, 200, 300]
    assert vs.quorum() == 5


def test_sign_state_prevents_double_sign_across_restart(tmp_path) -> None:
    path = tmp_path / "state.json"
    ss = SignState(path, VAL)
    s1 = ss.sign(KIND_VOTE, "c", 5, 0, STEP_PREVOTE, b"block-a")
    assert ss.sign(KIND_VOTE, "c", 5, 0, STEP_PREVOTE, b"block-a") == s1  # same message: same signature
    with pytest.raises(DoubleSignError, match="different message"):
        ss.sign(KIND_VOTE, "c", 5, 0, STEP_PREVOTE, b"block-b")
    restarted = SignState(path, VAL)
    with pytest.raises(DoubleSignError, match="different message"):
        restarted.sign(KIND_VOTE, "c", 5, 0, STEP_PREVOTE, b"block-b")
    with pytest.raises(DoubleSignError, match="already signed"):
        restarted.sign(KIND_VOTE, "c", 4, 9, STEP_PRECOMMIT, b"old")
    restarted.sign(KIND_VOTE, "c", 5, 0, STEP_PRECOMMIT, b"block-a")
    path.write_text("{garbage")
    with pytest.raises(DoubleSignError, match="unreadable"):
        SignState(path, VAL)


def test_address_history_is_indexed_with_each_block_newest_first(tmp_path) -> None:
    """The node-local history index: written in the block's batch, newest first, paged strictly before a
    position, kept across a reopen; a database from before the index says where its history starts."""
    carol = SigningKey.from_seed(b"\x0c" * 32)
    store = Store(tmp_path / "db")
    chain = ChainState(store, make_genesis())
    assert chain.addr_index_from == 1
    t1 = [transfer(ALICE, chain.chain_id, BOB.public_key, 100, i, 10) for i in range(3)]
    produce(chain, t1, 2_000)
    produce(chain, [], 3_000)
    t3 = [transfer(BOB, chain.chain_id, carol.public_key, 50, 0, 10),
          transfer(ALICE, chain.chain_id, carol.public_key, 7, 3, 10)]
    produce(chain, t3, 4_000)
    alice = chain.address_history(ALICE.public_key, limit=10)
    assert [(h, i, x) for h, i, x in alice] == [(3, 1, t3[1].hash), (1, 2, t1[2].hash), (1, 1, t1[1].hash),
                                                (1, 0, t1[0].hash)]
    assert [x for _, _, x in chain.address_history(BOB.public_key)] == [t3[0].hash, t1[2].hash, t1[1].hash,
                                                                       t1[0].hash]
    assert [x for _, _, x in chain.address_history(carol.public_key)] == [t3[1].hash, t3[0].hash]
    page1 = chain.address_history(ALICE.public_key, limit=2)
    page2 = chain.address_history(ALICE.public_key, before=page1[-1][:2], limit=2)
    assert page1 + page2 == alice and chain.address_history(ALICE.public_key, before=(1, 0)) == []
    assert chain.address_history(VAL.public_key) == []  # fees go to the proposer: not named by any tx
    store.close()
    store = Store(tmp_path / "db")
    again = ChainState(store, make_genesis())
    assert again.address_history(ALICE.public_key, limit=10) == alice and again.addr_index_from == 1
    # a database written before the index existed: its history starts after its head
    store.write_batch({b"m:addr_index_from": None})
    store.close()
    store = Store(tmp_path / "db")
    assert ChainState(store, make_genesis()).addr_index_from == 4
    store.close()
