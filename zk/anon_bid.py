"""Anonymous bonded bids: "some registered miner whose bond and memory satisfy this job bids this price",
one bid per miner per job, without saying which miner.

A miner that wants to bid anonymously registers an identity commitment ``Poseidon(id_secret)``; the
chain keeps a Poseidon tree of those miners (``state/market/anon.py``) whose leaf is

    leaf = Poseidon(Poseidon(Poseidon(id_secret), addr),
                    Poseidon(Poseidon(bond, memory), Poseidon(kinds, backend)))

with ``addr`` the miner's address as a field element and its *current* bond, memory, job kinds (a bit
mask, ``state/market/anon.py`` numbers the kinds) and backend (:func:`backend_field`); the chain rewrites
the leaf when they change and zeroes it when the miner cannot take jobs. A Groth16 proof for
``zk/circuits/src/anon_bid.circom`` shows knowledge of ``id_secret`` for a leaf under ``root`` with
``bond >= min_bond``, ``memory >= min_memory``, every kind bit of ``required_kinds`` and, unless
``required_backend`` is 0, that backend; and outputs

* ``nullifier = Poseidon(scope, id_secret)`` with ``scope`` the job's: one bid per miner per job;
* ``claim = Poseidon(addr, blind)``: the winner opens it (``blind``) from its own account to take the
  award; losing bidders never reveal anything;

``message`` binds the bid's terms (job and price). This module is pure.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from zk import groth16, poseidon
from zk.bn254 import R
from zk.errors import ProofError
from zk.receipt import U64, field_bytes, field_of, to_field

CIRCUIT = "anon_bid"
VERSION = 1
DEPTH = 20

__all__ = ["CIRCUIT", "DEPTH", "Statement", "addr_field", "backend_field", "claim", "field_bytes", "field_of", "identity",
           "leaf", "message_field", "new_secret", "nullifier", "scope_field", "verify", "witness_inputs"]


def new_secret() -> int:
    return 1 + secrets.randbelow(R - 1)


def addr_field(public_key: bytes) -> int:
    return to_field(b"aitbc/zk/v1/address", public_key)


def scope_field(job_id: bytes) -> int:
    """The job's nullifier scope (a job id is a transaction hash: it already binds the chain)."""
    return to_field(b"aitbc/zk/v1/anon-bid-scope", job_id)


def message_field(job_id: bytes, price: int) -> int:
    if not 0 <= price < U64:
        raise ProofError("price must be below 2^64", "zk_out_of_range")
    return to_field(b"aitbc/zk/v1/anon-bid", job_id + price.to_bytes(8, "big"))


def backend_field(name: str) -> int:
    return to_field(b"aitbc/zk/v1/backend", name.encode())


def identity(id_secret: int) -> int:
    return poseidon.hash1(id_secret)


def leaf(identity_commitment: int, public_key: bytes, bond: int, memory: int, kinds: int, backend: int) -> int:
    if not (0 <= bond < U64 and 0 <= memory < U64 and 0 <= kinds < U64):
        raise ProofError("bond, memory and the kind mask must be below 2^64", "zk_out_of_range")
    who = poseidon.hash2(identity_commitment, addr_field(public_key))
    what = poseidon.hash2(poseidon.hash2(bond, memory), poseidon.hash2(kinds, backend))
    return poseidon.hash2(who, what)


def nullifier(job_id: bytes, id_secret: int) -> int:
    return poseidon.hash2(scope_field(job_id), id_secret)


def claim(public_key: bytes, blind: int) -> int:
    return poseidon.hash2(addr_field(public_key), blind)


def claim_blind(id_secret: int, job_id: bytes) -> int:
    """The blind of this identity's claim on ``job_id``, derived from the identity secret (a domain-separated
    SHA-256 of the secret and the job), so a miner that restarts between its bid and the accept can still open its claim; nobody
    without the secret can tell it from a random field element. One bid per identity per job (the
    nullifier) means one blind per job. Off chain only: the chain sees the claim and, at accept, the
    blind."""
    return to_field(b"aitbc/zk/v1/claim-blind", id_secret.to_bytes(32, "big") + job_id)


@dataclass(frozen=True, slots=True)
class Statement:
    """The public side of an anonymous bid."""

    job_id: bytes
    price: int
    root: int
    nullifier: int
    claim: int
    min_bond: int
    min_memory: int
    required_kinds: int
    required_backend: int  # 0: any backend

    def public_inputs(self) -> list[int]:
        """In the circuit's order: outputs (root, nullifier, claim), then scope, minBond, minMemory,
        requiredKinds, requiredBackend, message."""
        if not (0 <= self.min_bond < U64 and 0 <= self.min_memory < U64 and 0 <= self.required_kinds < U64):
            raise ProofError("min_bond, min_memory and required_kinds must be below 2^64", "zk_out_of_range")
        if not 0 <= self.required_backend < R:
            raise ProofError("required_backend must be a field element", "zk_out_of_range")
        return [self.root, self.nullifier, self.claim, scope_field(self.job_id), self.min_bond, self.min_memory,
                self.required_kinds, self.required_backend, message_field(self.job_id, self.price)]


def witness_inputs(st: Statement, id_secret: int, public_key: bytes, standing: tuple[int, int, int, int],
                   blind: int, siblings: list[int], bits: list[int]) -> dict:
    """The prover's input map (circom signal names) for ``st``; ``standing`` is the leaf's
    ``(bond, memory, kinds, backend)``."""
    bond, memory, kinds, backend = standing
    return {
        "idSecret": str(id_secret),
        "addr": str(addr_field(public_key)),
        "bond": str(bond),
        "memory": str(memory),
        "kinds": str(kinds),
        "backend": str(backend),
        "blind": str(blind),
        "pathElements": [str(s) for s in siblings],
        "pathIndices": [str(b) for b in bits],
        "scope": str(scope_field(st.job_id)),
        "minBond": str(st.min_bond),
        "minMemory": str(st.min_memory),
        "requiredKinds": str(st.required_kinds),
        "requiredBackend": str(st.required_backend),
        "message": str(message_field(st.job_id, st.price)),
    }


def verify(vk: groth16.VerifyingKey, st: Statement, proof: groth16.Proof) -> None:
    """Raises :class:`ProofError` unless ``proof`` proves ``st`` (the caller checks the root is recent)."""
    groth16.verify(vk, proof, st.public_inputs())

