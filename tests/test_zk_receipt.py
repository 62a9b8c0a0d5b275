"""Private receipt attestations (zk/receipt.py, state/market/attest.py): pinned field derivations and
verifying key, the strict JSON wire form, real Groth16 proofs made by snarkjs (node/zk_prover.py) and the
on-chain rule through real execute_block (the tests/test_market_state.py harness).

Proving takes ~1.5 s, so the module makes two valid proofs (one over an off-chain tree, one over the
chain's tree) in module-scoped fixtures and reuses them; every chain test works on a deep copy of the
paid market so the tests stay independent.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as hst
from test_market_state import CHAIN, CLIENT, FEE, MINER1, MINER2, MINER3, SEED, Market, Result
from test_market_state import receipt as job_receipt
from zk_tools import MISSING

import state.market as mkt
from gpu.kinds import get_kind
from node.zk_prover import ARTIFACTS, ProverFailed, ProverMissing, prove
from state.address import encode_address
from state.market import attest
from zk import groth16, receipt, receipt_vkey
from zk.bn254 import P, R
from zk.errors import ProofError
from zk.poseidon_tree import DictStore, PoseidonTree, zeros

KIND = "hash-chain"
#: 120 chains of 1024 SHA-256 evaluations each: exactly 120 khash units.
PARAMS = {"chains": 120, "iterations": 1023, "seed": SEED}
UNITS = 120
MIN_UNITS = 100
SCOPE = b"shop"


@dataclass(frozen=True)
class Proven:
    """A valid proof and what made it."""

    st: receipt.Statement
    proof: groth16.Proof
    secret: int
    siblings: list[int]
    bits: list[int]


def _statement(root: int, secret: int, message: bytes) -> receipt.Statement:
    nul = receipt.nullifier(receipt.scope_field(CHAIN, SCOPE), secret)
    return receipt.Statement(CHAIN, root, nul, KIND, MIN_UNITS, SCOPE, message)


def _prove(st: receipt.Statement, secret: int, siblings: list[int], bits: list[int]) -> Proven:
    proof, public = prove(receipt.CIRCUIT, receipt.witness_inputs(st, secret, UNITS, siblings, bits))
    assert public == st.public_inputs()
    return Proven(st, proof, secret, siblings, bits)


def _refused(st: receipt.Statement, proof: groth16.Proof) -> str:
    with pytest.raises(ProofError) as ei:
        receipt.verify(receipt_vkey.VKEY, st, proof)
    return ei.value.reason


@pytest.fixture(scope="module")
def offchain() -> Proven:
    """A proof over an in-memory tree of 4 leaves (ours at index 2, 120 units), message = MINER2's key."""
    if MISSING:
        pytest.skip(f"no snarkjs: {MISSING}")
    secret = 0x1234_5678_9ABC
    t = PoseidonTree(DictStore(), receipt.DEPTH)
    for i, units in enumerate((5, 300, UNITS, 7)):
        s = secret if i == 2 else 1_000 + i
        t.append(receipt.leaf(KIND, units, receipt.owner_commitment(s)))
    siblings, bits = t.path(2)
    assert bits[:2] == [0, 1]
    return _prove(_statement(t.root(), secret, MINER2.public_key), secret, siblings, bits)


# ------------------------------------------------------------------------------------------- pure
def test_golden_field_derivations_and_vkey_digest() -> None:
    assert receipt.kind_field("matmul-u32") == 0xAE7234251D997D723E28E2C56A98BDE1A93D2973F425D0B2174683DEBD483B9
    assert receipt.scope_field("aitbc-dev", b"x") == (
        0xCF942E6E7AB49A0A26982B2AE4EEE48EE9D551288B30FADFCFE4C10DE07177A
    )
    assert receipt.message_field(b"m") == 0x9CC6B12F96BBEE10E715A40395ABC3556E52998D765A62F89044EBC5030AB68
    owner = receipt.owner_commitment(5)
    assert owner == 0x2A267E27E712412E8EEFEC1E174CE85B1AF2F2D9A8014FA4DC723ABB4D27EF7D
    assert receipt.leaf("matmul-u32", 7, owner) == (
        0x176959AEE393477616150690B43A3153AC30E03344BBBBCEF7E79313338F456F
    )
    assert receipt_vkey.DIGEST == "310fe5f5cadb6cadb951b5309bf8c53ea760baefde7212de18b94120d619ea17"
    # domains separate: the same bytes give different fields
    assert receipt.kind_field("x") != receipt.message_field(b"x")
    assert receipt.scope_field("a", b"bc") != receipt.scope_field("ab", b"c")


def test_vkey_module_is_the_artifact_key() -> None:
    obj = json.loads((ARTIFACTS / "receipt.vkey.json").read_text())
    vk = groth16.VerifyingKey.from_snarkjs(obj)
    assert vk == receipt_vkey.VKEY
    assert vk.digest().hex() == receipt_vkey.DIGEST
    assert vk.n_public == 6  # root, nullifier, kind, minUnits, scope, message


@given(hst.binary(max_size=40), hst.binary(max_size=200))
def test_to_field_is_always_below_r(domain: bytes, data: bytes) -> None:
    v = receipt.to_field(domain, data)
    assert 0 <= v < 2**252 < R


def test_oversized_scope_message_units_are_out_of_range() -> None:
    assert receipt.scope_field(CHAIN, b"s" * receipt.MAX_SCOPE) < R
    assert receipt.message_field(b"m" * receipt.MAX_MESSAGE) < R
    for fn in (lambda: receipt.scope_field(CHAIN, b"s" * 65), lambda: receipt.message_field(b"m" * 65),
               lambda: receipt.leaf(KIND, 2**64, 1), lambda: receipt.leaf(KIND, -1, 1)):
        with pytest.raises(ProofError) as ei:
            fn()
        assert ei.value.reason == "zk_out_of_range"
    st = receipt.Statement(CHAIN, 1, 2, KIND, 2**64, b"", b"")
    with pytest.raises(ProofError) as ei:
        st.public_inputs()
    assert ei.value.reason == "zk_out_of_range"
    assert dataclasses.replace(st, min_units=2**64 - 1).public_inputs()[3] == 2**64 - 1


def test_json_round_trip(offchain: Proven) -> None:
    st, proof = offchain.st, offchain.proof
    obj = receipt.to_json(st, proof)
    assert obj["scope"] == "shop" and obj["message"].startswith("0x")  # binary message as hex
    assert receipt.from_json(obj) == (st, proof)
    assert receipt.from_json(json.loads(receipt.dumps(st, proof))) == (st, proof)
    # text that looks like hex, empty and non-printable blobs survive too
    for scope, message in ((b"0xab", b""), (b"\x00\x01", "héllo".encode()), (b"", b"\n")):
        other = dataclasses.replace(st, scope=scope, message=message)
        assert receipt.from_json(json.loads(receipt.dumps(other, proof))) == (other, proof)


def _json_refusals(good: dict) -> list[tuple[object, str]]:
    def with_(**kw: object) -> dict:
        return {**good, **kw}

    missing = dict(good)
    del missing["message"]
    return [
        ([good], "zk_malformed"),
        (missing, "zk_malformed"),
        (with_(extra=1), "zk_malformed"),
        (with_(type="aitbc-bid"), "zk_malformed"),
        (with_(version=2), "zk_malformed"),
        (with_(version="1"), "zk_malformed"),
        (with_(chain_id=7), "zk_malformed"),
        (with_(kind="k" * 65), "zk_malformed"),
        (with_(root="0x" + R.to_bytes(32, "big").hex()), "zk_malformed"),
        (with_(root="0x" + "ff" * 32), "zk_malformed"),
        (with_(nullifier="0x" + (R + 1).to_bytes(32, "big").hex()), "zk_malformed"),
        (with_(root="0x" + "00" * 31), "zk_malformed"),
        (with_(root="0x" + "00" * 33), "zk_out_of_range"),
        (with_(root="0xzz" + "00" * 31), "zk_malformed"),
        (with_(root=int.from_bytes(bytes.fromhex(good["root"][2:]), "big")), "zk_malformed"),
        (with_(proof=good["proof"] + "00"), "zk_malformed"),
        (with_(proof="0x" + "01" * 1025), "zk_out_of_range"),
        (with_(proof=good["proof"][:-1]), "zk_malformed"),
        (with_(min_units=-1), "zk_malformed"),
        (with_(min_units=2**64), "zk_malformed"),
        (with_(min_units=True), "zk_malformed"),
        (with_(min_units="100"), "zk_malformed"),
        (with_(scope="s" * 65), "zk_out_of_range"),
        (with_(message="0x" + "ab" * 65), "zk_out_of_range"),
        (with_(message=["m"]), "zk_malformed"),
    ]


def test_from_json_refuses_every_bad_field(offchain: Proven) -> None:
    good = receipt.to_json(offchain.st, offchain.proof)
    assert receipt.from_json(good)[0] == offchain.st
    for obj, reason in _json_refusals(good):
        with pytest.raises(ProofError) as ei:
            receipt.from_json(obj)
        assert ei.value.reason == reason, obj


# ----------------------------------------------------------------------------------------- proofs
def test_valid_proof_verifies(offchain: Proven) -> None:
    receipt.verify(receipt_vkey.VKEY, offchain.st, offchain.proof)
    st2, proof2 = receipt.from_json(json.loads(receipt.dumps(offchain.st, offchain.proof)))
    receipt.verify(receipt_vkey.VKEY, st2, proof2)


@pytest.mark.parametrize(
    "change",
    [
        {"root": "+1"},
        {"nullifier": "+1"},
        {"kind": "matmul-u32"},
        {"min_units": MIN_UNITS + 1},
        {"min_units": MIN_UNITS - 1},
        {"scope": b"shop2"},
        {"message": MINER3.public_key},
        {"chain_id": "other-chain"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_any_changed_public_field_is_invalid(offchain: Proven, change: dict) -> None:
    st = offchain.st
    change = {k: (getattr(st, k) + 1) % R if v == "+1" else v for k, v in change.items()}
    changed = dataclasses.replace(st, **change)
    assert changed.public_inputs() != st.public_inputs()
    assert _refused(changed, offchain.proof) == "zk_invalid"


def test_flipped_proof_bytes_are_refused(offchain: Proven) -> None:
    enc = offchain.proof.encode()
    assert len(enc) == groth16.PROOF_SIZE
    for pos in [0, *range(32, groth16.PROOF_SIZE, 32), 1, 65, 129]:
        bad = bytearray(enc)
        bad[pos] ^= 0x01
        with pytest.raises(ProofError) as ei:
            receipt.verify(receipt_vkey.VKEY, offchain.st, groth16.Proof.decode(bytes(bad)))
        assert ei.value.reason in ("zk_malformed", "zk_invalid"), pos
    # well-formed but wrong: −A (a valid point) fails the pairing check
    a = offchain.proof.a
    assert _refused(offchain.st, groth16.Proof((a[0], P - a[1]), offchain.proof.b, offchain.proof.c)) == "zk_invalid"


def test_more_units_than_paid_cannot_be_proven(offchain: Proven) -> None:
    st = dataclasses.replace(offchain.st, min_units=UNITS + 1)
    with pytest.raises(ProverFailed) as ei:
        prove(receipt.CIRCUIT, receipt.witness_inputs(st, offchain.secret, UNITS, offchain.siblings, offchain.bits))
    assert ei.value.reason == "prover_failed" and "could not prove" in str(ei.value)


def _some_inputs() -> dict:
    st = receipt.Statement(CHAIN, 1, 2, KIND, 1, b"", b"")
    return receipt.witness_inputs(st, 3, 1, [0] * receipt.DEPTH, [0] * receipt.DEPTH)


def test_prover_missing_names_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no node, no snarkjs
    monkeypatch.delenv("AITBC_SNARKJS", raising=False)
    with pytest.raises(ProverMissing) as ei:
        prove(receipt.CIRCUIT, _some_inputs())
    msg = str(ei.value)
    assert ei.value.reason == "prover_missing"
    assert "snarkjs" in msg and "Node.js" in msg and "npm ci --prefix zk/circuits" in msg and "AITBC_SNARKJS" in msg
    # a cli.cjs needs node, which is not on PATH
    monkeypatch.setenv("AITBC_SNARKJS", str(tmp_path / "cli.cjs"))
    with pytest.raises(ProverMissing) as ei:
        prove(receipt.CIRCUIT, _some_inputs())
    assert "needs Node.js" in str(ei.value) and "cli.cjs" in str(ei.value)


def test_prover_at_a_nonexistent_path_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-snarkjs"
    monkeypatch.setenv("AITBC_SNARKJS", str(missing))
    # an OSError is operator-facing in the CLI (node/cli.py); it must name the path that is not there
    with pytest.raises((ProverMissing, OSError)) as ei:
        prove(receipt.CIRCUIT, _some_inputs())
    assert str(missing) in str(ei.value)


# ------------------------------------------------------------------------------------------ chain
@dataclass(frozen=True)
class Paid:
    """A market whose one attestable job was paid, and a proof for it (message = MINER2's key)."""

    m: Market
    job_id: bytes
    owner: bytes
    res: Result
    proven: Proven


def _pay(m: Market, res: Result, attest_owner: bytes | None) -> bytes:
    job_id = m.submit(kind=KIND, params=PARAMS, max_price=10, max_units=UNITS, attest=attest_owner)
    job = m.award(job_id, (MINER1, 5))
    m.ok(MINER1, mkt.TX_RECEIPT, job_receipt(m, MINER1, job, res, units=UNITS))
    assert m.job(job_id).payment == mkt.RELEASED
    return job_id


def _chain_tree(m: Market) -> PoseidonTree:
    """The receipt tree rebuilt from the chain's leaves, as a client does."""
    t = PoseidonTree(DictStore(), receipt.DEPTH)
    for i in range(attest.tree_size(m.s.get_object)):
        leaf = attest.leaf_at(m.s.get_object, i)
        assert leaf is not None
        t.append(leaf)
    assert t.root() == attest.root_of(m.s.get_object)
    return t


@pytest.fixture(scope="module")
def paid() -> Paid:
    if MISSING:
        pytest.skip(f"no snarkjs: {MISSING}")
    assert get_kind(KIND).work_units(PARAMS) == UNITS
    m = Market()
    m.register(MINER1)
    secret = 0xC0FFEE_5EC12E7
    owner = receipt.field_bytes(receipt.owner_commitment(secret))
    res = Result(KIND, PARAMS)
    job_id = _pay(m, res, owner)
    info = attest.attest_info(m.s.get_object, job_id)
    assert info is not None and info["leaf_index"] is not None
    siblings, bits = _chain_tree(m).path(info["leaf_index"])
    st = _statement(attest.root_of(m.s.get_object), secret, MINER2.public_key)
    return Paid(m, job_id, owner, res, _prove(st, secret, siblings, bits))


@pytest.fixture
def fresh(paid: Paid) -> Market:
    """A private copy of the paid market (tests submit transactions to it)."""
    return copy.deepcopy(paid.m)


def _attest_body(p: Proven, **over: object) -> dict:
    return {**attest.receipt_attest_body(p.st, p.proof), **over}


def _nullifier_height(m: Market, p: Proven) -> int | None:
    return attest.nullifier_height(m.s.get_object, CHAIN, p.st.scope, receipt.field_bytes(p.st.nullifier))


def test_paid_attestable_job_appends_its_leaf(paid: Paid) -> None:
    get = paid.m.s.get_object
    assert attest.attest_info(get, paid.job_id) == {"owner": "0x" + paid.owner.hex(), "leaf_index": 0}
    assert attest.tree_size(get) == 1
    owner = int.from_bytes(paid.owner, "big")
    assert attest.leaf_at(get, 0) == receipt.leaf(KIND, UNITS, owner)
    assert attest.leaf_at(get, 1) is None
    root = attest.root_of(get)
    assert root != zeros(receipt.DEPTH)[receipt.DEPTH]
    assert attest.root_height(get, root) == paid.m.job(paid.job_id).settle_height
    (ev,) = [f for e, f in paid.m.events if e == "receipt_attestable"]
    assert ev == {"job_id": "0x" + paid.job_id.hex(), "leaf_index": 0, "root": "0x" + root.to_bytes(32, "big").hex()}
    # the leaf is only for this owner: another commitment gives another leaf
    assert receipt.leaf(KIND, UNITS, owner + 1) != attest.leaf_at(get, 0)


def test_jobs_without_attest_or_payment_add_no_leaf() -> None:
    m = Market()
    m.register(MINER1, bond=3_000)
    res = Result("matmul-u32", {"m": 4, "n": 3, "k": 5, "seed": SEED})
    empty_root = zeros(receipt.DEPTH)[receipt.DEPTH]
    # paid, but not attestable
    plain = m.award(m.submit(), (MINER1, 10))
    m.ok(MINER1, mkt.TX_RECEIPT, job_receipt(m, MINER1, plain, res))
    assert m.job(plain.job_id).payment == mkt.RELEASED
    assert attest.attest_info(m.s.get_object, plain.job_id) is None
    # attestable, but the miner missed the deadline: refunded
    owner = receipt.field_bytes(receipt.owner_commitment(99))
    late = m.award(m.submit(attest=owner, deadline=3), (MINER1, 10))
    m.advance(late.deadline_height)
    assert m.job(late.job_id).payment == mkt.REFUNDED
    assert attest.attest_info(m.s.get_object, late.job_id) == {"owner": "0x" + owner.hex(), "leaf_index": None}
    # attestable with a challenge window: no leaf until the payment is released
    windowed = m.award(m.submit(attest=owner, challenge_window=3, verify_rate_bps=0), (MINER1, 10))
    m.ok(MINER1, mkt.TX_RECEIPT, job_receipt(m, MINER1, windowed, res))
    released = m.job(windowed.job_id).release_height
    assert released is not None and released > m.height
    assert attest.tree_size(m.s.get_object) == 0 and attest.root_of(m.s.get_object) == empty_root
    assert attest.root_height(m.s.get_object, empty_root) is None
    assert not [e for e, _ in m.events if e == "receipt_attestable"]
    m.advance(released)
    assert m.job(windowed.job_id).payment == mkt.RELEASED
    assert attest.attest_info(m.s.get_object, windowed.job_id)["leaf_index"] == 0  # type: ignore[index]
    assert attest.tree_size(m.s.get_object) == 1
    assert attest.leaf_at(m.s.get_object, 0) == receipt.leaf("matmul-u32", 1, receipt.owner_commitment(99))


@pytest.mark.parametrize(
    "value",
    [R.to_bytes(32, "big"), b"\xff" * 32, bytes(32), bytes(31) + b"\x01" + b"\x00", b"\x01" * 31, "00" * 32],
    ids=["R", "max", "zero", "33-bytes", "31-bytes", "str"],
)
def test_job_submit_attest_must_be_a_canonical_nonzero_field(value: object) -> None:
    m = Market()
    m0 = m.bal(CLIENT)
    body = mkt.job_submit_body("matmul-u32", 1, {"m": 4, "n": 3, "k": 5, "seed": SEED}, max_price=10,
                               max_units=5, bid_window=2, deadline=5)
    body["attest"] = value
    assert m.invalid(CLIENT, mkt.TX_JOB_SUBMIT, body).reason == "invalid_body"
    assert m.height == 0 and m.bal(CLIENT) == m0  # refused before anything changed
    top = (R - 1).to_bytes(32, "big")  # the largest canonical value is accepted
    job_id = m.submit(max_price=10, attest=top)
    assert attest.attest_info(m.s.get_object, job_id) == {"owner": "0x" + top.hex(), "leaf_index": None}


def test_receipt_attest_records_the_nullifier_and_refuses_a_replay(paid: Paid, fresh: Market) -> None:
    m, p = fresh, paid.proven
    assert _nullifier_height(m, p) is None
    m.ok(MINER2, attest.TX_RECEIPT_ATTEST, _attest_body(p))
    assert _nullifier_height(m, p) == m.height
    (ev,) = [f for e, f in m.events if e == "receipt_attested"]
    assert ev == {"attester": encode_address(MINER2.public_key), "kind": KIND, "min_units": MIN_UNITS,
                  "scope": "0x" + SCOPE.hex(), "nullifier": "0x" + receipt.field_bytes(p.st.nullifier).hex()}
    b0 = m.bal(MINER2)
    assert m.fail(MINER2, attest.TX_RECEIPT_ATTEST, _attest_body(p)) == "nullifier_used"
    assert m.bal(MINER2) == b0 - FEE
    assert [e for e, _ in m.events].count("receipt_attested") == 1
    m.check_invariants()


def test_receipt_attest_binds_the_sender(paid: Paid, fresh: Market) -> None:
    m, p = fresh, paid.proven
    b0 = m.bal(MINER3)
    assert m.fail(MINER3, attest.TX_RECEIPT_ATTEST, _attest_body(p)) == "zk_invalid"
    assert m.bal(MINER3) == b0 - FEE
    assert _nullifier_height(m, p) is None  # a refused attempt does not burn the nullifier
    m.ok(MINER2, attest.TX_RECEIPT_ATTEST, _attest_body(p))
    m.check_invariants()


def test_receipt_attest_refuses_a_root_the_chain_never_had(paid: Paid, fresh: Market, offchain: Proven) -> None:
    m = fresh
    receipt.verify(receipt_vkey.VKEY, offchain.st, offchain.proof)  # valid: only its root is unknown here
    assert attest.root_height(m.s.get_object, offchain.st.root) is None
    b0 = m.bal(MINER2)
    assert m.fail(MINER2, attest.TX_RECEIPT_ATTEST, _attest_body(offchain)) == "unknown_root"
    assert m.bal(MINER2) == b0 - FEE
    assert _nullifier_height(m, offchain) is None
    # the chain's proof with another (unknown) root in the body is refused the same way
    body = _attest_body(paid.proven, root=receipt.field_bytes(offchain.st.root))
    assert m.fail(MINER2, attest.TX_RECEIPT_ATTEST, body) == "unknown_root"


def test_receipt_attest_refuses_corrupted_proofs_and_statements(paid: Paid, fresh: Market) -> None:
    m, p = fresh, paid.proven
    enc = p.proof.encode()
    a_x = int.from_bytes(enc[1:33], "big")
    off_curve = enc[:1] + ((a_x + 1) % P).to_bytes(32, "big") + enc[33:]
    a = p.proof.a
    neg_a = groth16.Proof((a[0], P - a[1]), p.proof.b, p.proof.c).encode()
    cases = [
        ({"proof": off_curve}, "zk_malformed"),
        ({"proof": neg_a}, "zk_invalid"),
        ({"proof": b"\x02" + enc[1:]}, "zk_malformed"),
        ({"min_units": MIN_UNITS + 1}, "zk_invalid"),
        ({"kind": "matmul-u32"}, "zk_invalid"),
        ({"nullifier": receipt.field_bytes((p.st.nullifier + 1) % R)}, "zk_invalid"),
        ({"nullifier": R.to_bytes(32, "big")}, "zk_malformed"),
        ({"root": b"\xff" * 32}, "zk_malformed"),
    ]
    b0 = m.bal(MINER2)
    for over, reason in cases:
        assert m.fail(MINER2, attest.TX_RECEIPT_ATTEST, _attest_body(p, **over)) == reason, over
    # scope changes the nullifier's slot, not just the statement: still refused by the proof
    assert m.fail(MINER2, attest.TX_RECEIPT_ATTEST, _attest_body(p, scope=b"other")) == "zk_invalid"
    assert m.bal(MINER2) == b0 - (len(cases) + 1) * FEE
    assert _nullifier_height(m, p) is None
    assert not [e for e, _ in m.events if e == "receipt_attested"]
    # statically malformed bodies never reach execution
    assert m.invalid(MINER2, attest.TX_RECEIPT_ATTEST, _attest_body(p, proof=enc[:-1])).reason == "invalid_body"
    assert m.invalid(MINER2, attest.TX_RECEIPT_ATTEST, _attest_body(p, scope=b"s" * 65)).reason == "invalid_body"
    m.ok(MINER2, attest.TX_RECEIPT_ATTEST, _attest_body(p))  # the genuine proof still works
    m.check_invariants()


def test_proof_against_a_past_root_still_verifies(paid: Paid, fresh: Market) -> None:
    m, p = fresh, paid.proven
    old_root = attest.root_of(m.s.get_object)
    other = receipt.field_bytes(receipt.owner_commitment(424242))
    job2 = _pay(m, paid.res, other)
    assert attest.attest_info(m.s.get_object, job2)["leaf_index"] == 1  # type: ignore[index]
    assert attest.tree_size(m.s.get_object) == 2
    new_root = attest.root_of(m.s.get_object)
    assert new_root != old_root and _chain_tree(m).root() == new_root
    assert attest.root_height(m.s.get_object, old_root) is not None
    assert attest.root_height(m.s.get_object, new_root) == m.job(job2).settle_height
    m.ok(MINER2, attest.TX_RECEIPT_ATTEST, _attest_body(p))
    assert _nullifier_height(m, p) == m.height
    m.check_invariants()
