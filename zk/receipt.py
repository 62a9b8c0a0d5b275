"""Private receipt attestations: "a bonded miner was paid for a job of kind K with at least N units,
and I am the client who paid for it", without saying which job, which miner or which client.

The chain keeps a Poseidon Merkle tree of *attestable receipts* (``state/market/attest.py``): when a job
whose client put an owner commitment ``Poseidon(secret)`` in its ``job_submit`` is paid, it appends

    leaf = Poseidon(Poseidon(kind_field(K), units), Poseidon(secret))

Every node verified the receipt's signature, the miner's bond and the payment before that, so a leaf
*is* the fact attested. A Groth16 proof for the circuit ``zk/circuits/src/receipt.circom`` shows
knowledge of ``secret`` for some leaf under ``root`` with that kind and ``units >= min_units``, and
outputs ``nullifier = Poseidon(scope, secret)``: one attestation per paid job per scope. ``scope`` binds
the chain id and the verifier's purpose; ``message`` binds whatever the verifier asks (the on-chain rule
puts the sender's address there, so a proof seen in the mempool cannot be replayed by someone else).

This module is pure: the statement, its public inputs, the wire form and the verifying key pinned by
digest. Proving is done off-node with snarkjs (``node/zk_prover.py``).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass

from zk import groth16, poseidon
from zk.bn254 import R
from zk.errors import ProofError

CIRCUIT = "receipt"
VERSION = 1
DEPTH = 20
MAX_SCOPE = 64
MAX_MESSAGE = 64
U64 = 2**64


def to_field(domain: bytes, data: bytes) -> int:
    """A 252-bit field element from a domain-separated SHA-256 (below ``R`` by construction)."""
    h = hashlib.sha256(len(domain).to_bytes(2, "big") + domain + data).digest()
    return int.from_bytes(h, "big") >> 4


def kind_field(kind: str) -> int:
    return to_field(b"aitbc/zk/v1/kind", kind.encode())


def scope_field(chain_id: str, scope: bytes) -> int:
    if len(scope) > MAX_SCOPE:
        raise ProofError(f"scope longer than {MAX_SCOPE} bytes", "zk_out_of_range")
    return to_field(b"aitbc/zk/v1/receipt-scope", chain_id.encode() + b"\x00" + scope)


def message_field(message: bytes) -> int:
    if len(message) > MAX_MESSAGE:
        raise ProofError(f"message longer than {MAX_MESSAGE} bytes", "zk_out_of_range")
    return to_field(b"aitbc/zk/v1/receipt-message", message)


def new_secret() -> int:
    """A fresh owner secret (uniform below ``R``)."""
    return 1 + secrets.randbelow(R - 1)


def owner_commitment(secret: int) -> int:
    return poseidon.hash1(secret)


def leaf(kind: str, units: int, owner: int) -> int:
    """The tree leaf the chain appends for a paid, attestable job."""
    if not 0 <= units < U64:
        raise ProofError("units must be below 2^64", "zk_out_of_range")
    return poseidon.hash2(poseidon.hash2(kind_field(kind), units), owner)


def nullifier(scope: int, secret: int) -> int:
    return poseidon.hash2(scope, secret)


def field_bytes(value: int) -> bytes:
    return value.to_bytes(32, "big")


def field_of(data: bytes, what: str) -> int:
    """A canonical 32-byte big-endian field element."""
    if not isinstance(data, bytes) or len(data) != 32:
        raise ProofError(f"{what}: expected 32 bytes", "zk_malformed")
    v = int.from_bytes(data, "big")
    if v >= R:
        raise ProofError(f"{what}: not below the BN254 scalar field order", "zk_malformed")
    return v


@dataclass(frozen=True, slots=True)
class Statement:
    """The public side of an attestation."""

    chain_id: str
    root: int
    nullifier: int
    kind: str
    min_units: int
    scope: bytes
    message: bytes

    def public_inputs(self) -> list[int]:
        """In the circuit's order: outputs (root, nullifier), then kind, minUnits, scope, message."""
        if not 0 <= self.min_units < U64:
            raise ProofError("min_units must be below 2^64", "zk_out_of_range")
        return [self.root, self.nullifier, kind_field(self.kind), self.min_units,
                scope_field(self.chain_id, self.scope), message_field(self.message)]


def witness_inputs(st: Statement, secret: int, units: int, siblings: list[int], bits: list[int]) -> dict:
    """The prover's input map (circom signal names) for ``st``."""
    return {
        "secret": str(secret),
        "units": str(units),
        "pathElements": [str(s) for s in siblings],
        "pathIndices": [str(b) for b in bits],
        "kind": str(kind_field(st.kind)),
        "minUnits": str(st.min_units),
        "scope": str(scope_field(st.chain_id, st.scope)),
        "message": str(message_field(st.message)),
    }


def verify(vk: groth16.VerifyingKey, st: Statement, proof: groth16.Proof) -> None:
    """Raises :class:`ProofError` unless ``proof`` proves ``st`` (the caller checks the root is the chain's)."""
    groth16.verify(vk, proof, st.public_inputs())


# ------------------------------------------------------------------------------------- wire form
def to_json(st: Statement, proof: groth16.Proof) -> dict:
    """The attestation file ``zk prove-receipt`` writes and ``zk verify`` reads."""
    return {
        "type": "aitbc-receipt-attestation",
        "version": VERSION,
        "chain_id": st.chain_id,
        "root": "0x" + field_bytes(st.root).hex(),
        "nullifier": "0x" + field_bytes(st.nullifier).hex(),
        "kind": st.kind,
        "min_units": st.min_units,
        "scope": st.scope.decode("utf-8", "replace") if _is_text(st.scope) else "0x" + st.scope.hex(),
        "message": st.message.decode("utf-8", "replace") if _is_text(st.message) else "0x" + st.message.hex(),
        "proof": "0x" + proof.encode().hex(),
    }


def _is_text(b: bytes) -> bool:
    try:
        t = b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not t.startswith("0x") and t.isprintable()


def _blob(v: object, what: str, limit: int) -> bytes:
    if not isinstance(v, str):
        raise ProofError(f"{what}: expected a string", "zk_malformed")
    if v.startswith("0x"):
        try:
            out = bytes.fromhex(v[2:])
        except ValueError:
            raise ProofError(f"{what}: bad hex", "zk_malformed") from None
    else:
        out = v.encode()
    if len(out) > limit:
        raise ProofError(f"{what}: longer than {limit} bytes", "zk_out_of_range")
    return out


def from_json(obj: object) -> tuple[Statement, groth16.Proof]:
    """Parse an attestation file; every field is checked (it comes from anyone)."""
    keys = {"type", "version", "chain_id", "root", "nullifier", "kind", "min_units", "scope", "message", "proof"}
    if not isinstance(obj, dict) or set(obj) != keys or obj["type"] != "aitbc-receipt-attestation":
        raise ProofError(f"not a receipt attestation (expected the fields {sorted(keys)})", "zk_malformed")
    if type(obj["version"]) is not int or obj["version"] != VERSION:
        raise ProofError(f"attestation version {obj['version']!r} is not {VERSION}", "zk_malformed")
    if not isinstance(obj["chain_id"], str) or not isinstance(obj["kind"], str) or len(obj["kind"]) > 64:
        raise ProofError("chain_id and kind must be strings (kind at most 64 characters)", "zk_malformed")
    mu = obj["min_units"]
    if type(mu) is not int or not 0 <= mu < U64:
        raise ProofError("min_units must be an integer in [0, 2^64)", "zk_malformed")
    root = field_of(_blob(obj["root"], "root", 32), "root")
    nul = field_of(_blob(obj["nullifier"], "nullifier", 32), "nullifier")
    proof = groth16.Proof.decode(_blob(obj["proof"], "proof", 1024))
    st = Statement(obj["chain_id"], root, nul, obj["kind"], mu, _blob(obj["scope"], "scope", MAX_SCOPE),
                   _blob(obj["message"], "message", MAX_MESSAGE))
    return st, proof


def dumps(st: Statement, proof: groth16.Proof) -> str:
    return json.dumps(to_json(st, proof), indent=2) + "\n"
