"""Codec, signatures, addresses and wire types."""

from __future__ import annotations

import cbor2
import pytest

from state import codec
from state.address import decode_address, encode_address
from state.crypto import KIND_TX, KIND_VOTE, SigningKey, verify
from state.errors import AddressError, DecodeError
from state.types import (
    PRECOMMIT,
    Block,
    BlockHeader,
    Commit,
    CommitSig,
    Transaction,
    Vote,
    merkle_root,
    transfer,
)

CHAIN = "test-chain"


def test_codec_round_trip_and_canonical() -> None:
    obj = {"b": 1, "a": [1, b"x", "y"], "c": {"z": None, "aa": True}}
    enc = codec.encode(obj)
    assert codec.decode(enc) == obj
    # cbor2 without canonical=True keeps insertion order: same value, different bytes -> refused.
    noncanon = cbor2.dumps({"b": 1, "a": 2})
    assert cbor2.loads(noncanon) == {"a": 2, "b": 1}
    with pytest.raises(DecodeError, match="non-canonical"):
        codec.decode(noncanon)
    # An integer in a longer form than needed (0x18 0x05 instead of 0x05).
    with pytest.raises(DecodeError, match="non-canonical"):
        codec.decode(b"\x18\x05")


@pytest.mark.parametrize(
    "data,match",
    [
        (b"", "empty"),
        (b"\xa1", "malformed"),
        (b"\x5f\x41\x00\xff", "malformed"),  # indefinite-length byte string
        (b"\xa2\x61a\x01\x61a\x02", "malformed"),  # duplicate map key
        (b"\x81" * 100 + b"\x00", "malformed"),  # nesting beyond max depth
    ],
)
def test_codec_rejects_malformed(data: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        codec.decode(data)


def test_codec_bounds_size_before_decoding() -> None:
    with pytest.raises(DecodeError, match="too large"):
        codec.decode(codec.encode(b"x" * 2000), max_bytes=1000)


def test_codec_refuses_item_floods_before_building_objects() -> None:
    """16 MiB of one-byte empty maps would be ~1 GB of Python dicts: large inputs are walked first (heads
    only, string payloads skipped) and refused beyond MAX_ITEMS before cbor2 builds anything (the
    reason ``too_many_items`` comes only from that walk)."""
    n = (16 << 20) - 16
    for head in (b"\xa0", b"\x80", b"\xf9\x00\x00"):  # empty maps, empty arrays, half floats
        count = n // len(head)
        with pytest.raises(DecodeError) as e:
            codec.decode(b"\x9a" + count.to_bytes(4, "big") + head * count, max_bytes=32 << 20)
        assert e.value.reason == "too_many_items", head
    # a large valid object (8 MiB of transaction-sized byte strings) is untouched, and the count is exact
    big = [b"t" * 200 for _ in range(40_000)]
    assert codec.decode(codec.encode(big), max_bytes=32 << 20) == big
    assert codec.count_items(codec.encode([1, [2, 3], {"a": b"xx"}, -5, None]), 100) == 10
    assert codec.count_items(codec.encode(list(range(50))), 10) == 11  # stops past the limit


def test_signatures_are_domain_separated() -> None:
    k = SigningKey.generate()
    sig = k.sign(KIND_TX, CHAIN, b"payload")
    assert verify(KIND_TX, CHAIN, k.public_key, b"payload", sig)
    assert not verify(KIND_VOTE, CHAIN, k.public_key, b"payload", sig)  # other purpose
    assert not verify(KIND_TX, "other-chain", k.public_key, b"payload", sig)  # other chain
    assert not verify(KIND_TX, CHAIN, k.public_key, b"payload2", sig)
    assert not verify(KIND_TX, CHAIN, SigningKey.generate().public_key, b"payload", sig)
    assert not verify(KIND_TX, CHAIN, k.public_key, b"payload", sig[:63])
    assert SigningKey.from_seed(k.seed).public_key == k.public_key


def test_address_round_trip_and_errors() -> None:
    pk = SigningKey.generate().public_key
    addr = encode_address(pk)
    assert addr.startswith("ait1") and decode_address(addr) == pk
    assert decode_address(addr.upper()) == pk
    flipped = addr[:-1] + ("q" if addr[-1] != "q" else "p")
    with pytest.raises(AddressError, match="checksum"):
        decode_address(flipped)
    with pytest.raises(AddressError, match="prefix"):
        decode_address("bc1" + addr[4:])
    with pytest.raises(AddressError, match="invalid character"):
        decode_address(addr[:10] + "b" + addr[11:])
    with pytest.raises(AddressError, match="mixes"):
        decode_address(addr[:5] + addr[5:].upper())
    with pytest.raises(AddressError, match="32 bytes"):
        encode_address(b"\x01" * 20)
    with pytest.raises(AddressError):
        decode_address("ait1")


def test_bech32m_not_bech32() -> None:
    """A bech32 (not -m) checksum over the same data must be refused."""
    from state import address as a

    pk = SigningKey.generate().public_key
    data = a._convertbits(pk, 8, 5, True)
    polymod = a._polymod(a._hrp_expand("ait") + data + [0] * 6) ^ 1  # bech32 constant is 1
    legacy = "ait1" + "".join(a._CHARSET[d] for d in data + [(polymod >> 5 * (5 - i)) & 31 for i in range(6)])
    with pytest.raises(AddressError, match="checksum"):
        decode_address(legacy)


def test_transaction_round_trip_signature_and_hash() -> None:
    k = SigningKey.generate()
    tx = transfer(k, CHAIN, b"\x02" * 32, 5, 0, 1000)
    again = Transaction.decode(tx.raw)
    assert again == tx and again.hash == codec.sha256(tx.raw)
    assert again.verify_signature()
    # Any change of a signed field breaks the signature.
    obj = codec.decode(tx.raw)
    obj["body"]["amount"] = 6
    forged = Transaction.decode(codec.encode(obj))
    assert not forged.verify_signature()


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda o: o.pop("fee"), "missing"),
        (lambda o: o.update(extra=1), "unknown"),
        (lambda o: o.update(nonce=-1), "nonce"),
        (lambda o: o.update(nonce=1 << 64), "nonce"),
        (lambda o: o.update(sender=b"\x01" * 31), "sender"),
        (lambda o: o.update(sig="x"), "sig"),
        (lambda o: o.update(body=[1]), "body"),
        (lambda o: o.update(chain_id=""), "chain_id"),
    ],
)
def test_transaction_decode_rejects(mutate, match: str) -> None:
    tx = transfer(SigningKey.generate(), CHAIN, b"\x02" * 32, 5, 0, 1000)
    obj = codec.decode(tx.raw)
    mutate(obj)
    with pytest.raises(DecodeError, match=match):
        Transaction.decode(codec.encode(obj))


def test_transaction_size_bound() -> None:
    from state.types import MAX_TX_BYTES, MAX_WITNESS_TX_BYTES

    with pytest.raises(DecodeError, match="too large"):  # refused before decoding
        Transaction.decode(b"\x00" * (MAX_WITNESS_TX_BYTES + 1))
    key = SigningKey.generate()
    big = Transaction.create(key, CHAIN, "transfer", 0, 1, {"to": b"\x02" * 32, "amount": 1, "memo": bytes(70 * 1024)})
    assert MAX_TX_BYTES < len(big.raw) < MAX_WITNESS_TX_BYTES
    with pytest.raises(DecodeError, match="too large"):  # only the witness-carrying dispute types may be larger
        Transaction.decode(big.raw)
    witness = Transaction.create(key, CHAIN, "llm_steps", 0, 1, {"digests": [bytes(32)] * 2200})
    assert len(witness.raw) > MAX_TX_BYTES
    assert Transaction.decode(witness.raw).type == "llm_steps"


def _header(**kw) -> BlockHeader:
    base = dict(
        chain_id=CHAIN, height=1, time=1, prev_hash=b"\x00" * 32, tx_root=b"\x00" * 32, state_root=b"\x01" * 32,
        results_hash=b"\x00" * 32, proposer=b"\x03" * 32, validators_hash=b"\x04" * 32,
        next_validators_hash=b"\x04" * 32, last_commit_hash=b"\x00" * 32, evidence_hash=b"\x00" * 32,
    )
    base.update(kw)
    return BlockHeader(**base)


def test_block_round_trip_and_hash_is_header_hash() -> None:
    k = SigningKey.generate()
    txs = tuple(transfer(k, CHAIN, b"\x02" * 32, 5, i, 1000) for i in range(3))
    v = Vote.create(k, CHAIN, 1, 0, PRECOMMIT, b"\x09" * 32)
    commit = Commit(1, 0, b"\x09" * 32, (CommitSig(k.public_key, v.sig),))
    block = Block(_header(height=2, tx_root=merkle_root([t.hash for t in txs])), txs, commit)
    again = Block.decode(block.encode())
    assert again.hash == block.hash == codec.sha256(block.header.encode())
    assert again.txs == txs and again.last_commit == commit
    assert Vote.from_obj(v.to_obj()).verify(CHAIN)


def test_commit_decode_rejects_duplicates_and_bad_shapes() -> None:
    k = SigningKey.generate()
    good = Commit(1, 0, b"\x09" * 32, (CommitSig(k.public_key, b"\x00" * 64),)).to_obj()
    dup = dict(good, signatures=good["signatures"] * 2)
    with pytest.raises(DecodeError, match="duplicate"):
        Commit.from_obj(dup)
    with pytest.raises(DecodeError, match="signature"):
        Commit.from_obj(dict(good, signatures=[[b"\x00", b"\x00"]]))


def test_vote_rejects_bad_type_and_hash() -> None:
    v = Vote.create(SigningKey.generate(), CHAIN, 1, 0, PRECOMMIT, b"").to_obj()
    with pytest.raises(DecodeError, match="type"):
        Vote.from_obj(dict(v, type=3))
    with pytest.raises(DecodeError, match="block_hash"):
        Vote.from_obj(dict(v, block_hash=b"\x01" * 5))


def test_merkle_root_properties() -> None:
    leaves = [bytes([i]) * 32 for i in range(7)]
    assert merkle_root([]) == b"\x00" * 32
    assert merkle_root(leaves) != merkle_root(leaves[:6])
    assert merkle_root(leaves) != merkle_root(list(reversed(leaves)))
    # second-preimage resistance by domain separation: a leaf equal to an inner node hash differs
    inner = codec.sha256(b"\x01" + codec.sha256(b"\x00" + leaves[0]) + codec.sha256(b"\x00" + leaves[1]))
    assert merkle_root([inner]) != merkle_root(leaves[:2])
