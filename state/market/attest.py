"""Attestable receipts: the chain's Poseidon tree of paid jobs, and the on-chain attestation rule.

A client opts in per job with ``job_submit.attest`` = its owner commitment ``Poseidon(secret)`` (32
bytes, big-endian, a BN254 scalar). When such a job is paid (:func:`on_settle`; the write is queued, tree_queue.py bounds them per block), the chain appends
``zk.receipt.leaf(kind, units, owner)`` to the receipt tree (depth 20, nodes in state objects
``zk/rt/``) and remembers every root it has had (``zk/rr/<root>`` → height), so a proof made against
any past root still verifies. The client can then prove, off chain (``aitbc-peer zk prove-receipt`` /
``zk verify``) or to this rule on chain, that it paid for a job of kind K with at least N units, without
saying which (zk/receipt.py).

``receipt_attest`` is the on-chain rule: every node checks the Groth16 proof (metered:
``ATTEST_WORK`` dispute work units against the block's budget), that the root is one the tree has
had, and that the nullifier was not used in that scope before; the proof's message must be the
sender's address (no one else can replay it). It records the nullifier and emits ``receipt_attested``
for other rules and apps to read. A bad proof fails the transaction with the precise zk reason and
costs the sender its fee.
"""

from __future__ import annotations

from zk import groth16, receipt, receipt_vkey
from zk.errors import ProofError
from zk.poseidon_tree import PoseidonTree

from ..errors import InvariantError
from ..machine import ExecFailure, Execution, TxError, TxKind
from ..types import Transaction
from . import zk_trees
from .ledger import Market, address, hex_id
from .tree_queue import HANDLERS, enqueue
from .zk_trees import GetObject

TX_RECEIPT_ATTEST = "receipt_attest"
ATTEST_PREFIX = b"mkt/t/"  # + job id -> owner commitment (32 bytes) ‖ leaf index (8 bytes, once paid)
TREE_PREFIX = b"zk/rt/"  # + level (1 byte) ‖ index (4 bytes) -> node; + b"n" -> size
ROOT_PREFIX = b"zk/rr/"  # + root -> first height (8 bytes)
NULLIFIER_PREFIX = b"zk/rn/"  # + scope field ‖ nullifier -> height (8 bytes)
#: Dispute work units of one receipt_attest (bench/zk: a Groth16 verification is ~2 ms on one core, plus
#: decoding and the public-input hashing).
ATTEST_WORK = 3_000


def tree_size(get_object: GetObject) -> int:
    return zk_trees.size(get_object, TREE_PREFIX)


def tree(ex: Execution) -> PoseidonTree:
    return zk_trees.tree(ex, TREE_PREFIX, receipt.DEPTH)


def root_of(get_object: GetObject) -> int:
    """The receipt tree's current root (the empty tree's while no job was attested)."""
    return zk_trees.root(get_object, TREE_PREFIX, receipt.DEPTH)


def leaf_at(get_object: GetObject, index: int) -> int | None:
    return zk_trees.leaf(get_object, TREE_PREFIX, index)


# ------------------------------------------------------------------------------------------ job side
def check_attest_spec(value: object) -> None:
    """``job_submit.attest``: a canonical, non-zero field element."""
    try:
        owner = receipt.field_of(value, "job_submit.attest")  # type: ignore[arg-type]
    except ProofError as exc:
        raise TxError(str(exc), "invalid_body") from None
    if owner == 0:
        raise TxError("job_submit.attest must not be zero", "invalid_body")


def on_submit(ex: Execution, job_id: bytes, owner: bytes) -> None:
    ex.put_object(ATTEST_PREFIX + job_id, owner)


def on_settle(mk: Market, job_id: bytes, kind: str, units: int) -> None:
    """A job was paid: if its client asked for attestations, queue its leaf (tree_queue: bounded per block)."""
    raw = mk.ex.get_object(ATTEST_PREFIX + job_id)
    if raw is not None and len(raw) == 32:
        enqueue(mk.ex, "receipt", job_id)


def _append(mk: Market, job_id: bytes) -> None:
    """Append a paid attestable job's leaf and remember the new root (a tree_queue handler)."""
    ex = mk.ex
    raw = ex.get_object(ATTEST_PREFIX + job_id)
    job = mk.job(job_id)
    if raw is None or len(raw) != 32 or job is None or job.receipt is None:
        raise InvariantError(f"queued receipt leaf of job {hex_id(job_id)} has no attestable paid job")
    t = tree(ex)
    leaf = receipt.leaf(job.kind, job.receipt["units"], int.from_bytes(raw, "big"))
    try:
        index = t.append(leaf)
    except ProofError:  # full (2^20 leaves): the job is paid, it is just not attestable
        ex.emit("receipt_not_attestable", job_id=hex_id(job_id), reason="receipt_tree_full")
        return
    ex.put_object(ATTEST_PREFIX + job_id, raw + index.to_bytes(8, "big"))
    root = t.root()
    key = ROOT_PREFIX + root.to_bytes(32, "big")
    if ex.get_object(key) is None:
        ex.put_object(key, mk.h.to_bytes(8, "big"))
    ex.emit("receipt_attestable", job_id=hex_id(job_id), leaf_index=index, root="0x" + root.to_bytes(32, "big").hex())


HANDLERS["receipt"] = _append


def attest_info(get_object: GetObject, job_id: bytes) -> dict | None:
    """``{owner, leaf_index}`` of an attestable job (``leaf_index`` None until it is paid)."""
    raw = get_object(ATTEST_PREFIX + job_id)
    if raw is None:
        return None
    return {"owner": "0x" + raw[:32].hex(), "leaf_index": int.from_bytes(raw[32:], "big") if len(raw) == 40 else None}


def root_height(get_object: GetObject, root: int) -> int | None:
    raw = get_object(ROOT_PREFIX + root.to_bytes(32, "big"))
    return None if raw is None else int.from_bytes(raw, "big")


# -------------------------------------------------------------------------------- the on-chain rule
_BODY_KEYS = {"proof", "root", "nullifier", "kind", "min_units", "scope"}


def receipt_attest_body(st: receipt.Statement, proof: groth16.Proof) -> dict:
    return {"proof": proof.encode(), "root": receipt.field_bytes(st.root), "nullifier": receipt.field_bytes(st.nullifier),
            "kind": st.kind, "min_units": st.min_units, "scope": st.scope}


def check_receipt_attest(body: dict) -> None:
    if type(body) is not dict or set(body) != _BODY_KEYS:
        raise TxError(f"receipt_attest body must have exactly the fields {sorted(_BODY_KEYS)}", "invalid_body")
    if type(body["proof"]) is not bytes or len(body["proof"]) != groth16.PROOF_SIZE:
        raise TxError(f"receipt_attest.proof must be {groth16.PROOF_SIZE} bytes", "invalid_body")
    for k in ("root", "nullifier"):
        if type(body[k]) is not bytes or len(body[k]) != 32:
            raise TxError(f"receipt_attest.{k} must be 32 bytes", "invalid_body")
    if type(body["kind"]) is not str or not 0 < len(body["kind"]) <= 32:
        raise TxError("receipt_attest.kind must be a job kind name", "invalid_body")
    if type(body["min_units"]) is not int or not 0 <= body["min_units"] < receipt.U64:
        raise TxError("receipt_attest.min_units must be an integer in [0, 2^64)", "invalid_body")
    if type(body["scope"]) is not bytes or len(body["scope"]) > receipt.MAX_SCOPE:
        raise TxError(f"receipt_attest.scope must be at most {receipt.MAX_SCOPE} bytes", "invalid_body")


def statement_of(chain_id: str, sender: bytes, body: dict) -> receipt.Statement:
    """The statement a receipt_attest claims: its message is the sender's address."""
    return receipt.Statement(chain_id, receipt.field_of(body["root"], "root"),
                             receipt.field_of(body["nullifier"], "nullifier"), body["kind"], body["min_units"],
                             body["scope"], sender)


def _work(ex: Execution, tx: Transaction) -> int:
    return ATTEST_WORK


def apply_receipt_attest(ex: Execution, tx: Transaction) -> None:
    body = tx.body
    try:
        st = statement_of(ex.env.chain_id, tx.sender, body)
        proof = groth16.Proof.decode(body["proof"])
    except ProofError as exc:
        raise ExecFailure(exc.reason, str(exc)) from None
    if root_height(ex.get_object, st.root) is None:
        raise ExecFailure("unknown_root", "the proof's root is not a root the receipt tree has had")
    scope_f = receipt.scope_field(st.chain_id, st.scope)
    nkey = NULLIFIER_PREFIX + scope_f.to_bytes(32, "big") + body["nullifier"]
    if ex.get_object(nkey) is not None:
        raise ExecFailure("nullifier_used", "this receipt was already attested in this scope")
    try:
        receipt.verify(receipt_vkey.VKEY, st, proof)
    except ProofError as exc:
        raise ExecFailure(exc.reason, f"receipt attestation refused: {exc}") from None
    ex.put_object(nkey, ex.env.height.to_bytes(8, "big"))
    ex.emit("receipt_attested", attester=address(tx.sender), kind=st.kind, min_units=st.min_units,
            scope="0x" + st.scope.hex(), nullifier="0x" + body["nullifier"].hex())


def nullifier_height(get_object: GetObject, chain_id: str, scope: bytes, nullifier: bytes) -> int | None:
    raw = get_object(NULLIFIER_PREFIX + receipt.scope_field(chain_id, scope).to_bytes(32, "big") + nullifier)
    return None if raw is None else int.from_bytes(raw, "big")


def _cost(tx: Transaction) -> int:
    return 0


TX_KINDS = (TxKind(TX_RECEIPT_ATTEST, check_receipt_attest, _cost, apply_receipt_attest, work=_work),)
