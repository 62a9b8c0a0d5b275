"""Wire and store types: transactions, block headers, blocks, votes, commits, accounts.

Every type has a canonical CBOR form (``to_obj``/``encode``) and a strict decoder (``decode``) that
bounds sizes, checks every field's type and range, and raises :class:`DecodeError` naming the field.
Hashes: a transaction's hash is SHA-256 of its full signed encoding; a block's hash is SHA-256 of its
encoded header (DESIGN §1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import codec
from .codec import sha256
from .crypto import KIND_TX, KIND_VOTE, SigningKey, verify
from .errors import DecodeError

U64_MAX = (1 << 64) - 1
HASH_LEN = 32
EMPTY_HASH = b"\x00" * 32
MAX_TX_BYTES = 64 * 1024
# Dispute transactions that carry a witness (``llm-generate`` step digests and step proofs, see
# state/market/llm_disputes.py: at most 1 MiB of witness plus the envelope) may be this large; every
# other type stays within MAX_TX_BYTES (checked right after decoding, before anything else).
MAX_WITNESS_TX_BYTES = 1_310_720  # 1.25 MiB
WITNESS_TX_TYPES = frozenset({"llm_steps", "llm_step_proof"})
MAX_BODY_KEYS = 32
MAX_CHAIN_ID_LEN = 64

# Transaction types known to this version. Body validators per type live in state.txbody.
TX_TRANSFER = "transfer"


def max_tx_bytes(tx_type: object) -> int:
    """The size bound of a transaction of type ``tx_type``: MAX_WITNESS_TX_BYTES for the witness-carrying
    dispute types, MAX_TX_BYTES for every other."""
    return MAX_WITNESS_TX_BYTES if type(tx_type) is str and tx_type in WITNESS_TX_TYPES else MAX_TX_BYTES


def _req(obj: dict, key: str, what: str) -> Any:
    try:
        return obj[key]
    except KeyError:
        raise DecodeError(f"{what}: missing field '{key}'") from None


def _uint(obj: dict, key: str, what: str, maximum: int = U64_MAX) -> int:
    v = _req(obj, key, what)
    if type(v) is not int or v < 0 or v > maximum:
        raise DecodeError(f"{what}: field '{key}' must be an integer in [0, {maximum}]")
    return v


def _bytes(obj: dict, key: str, what: str, length: int | None = None, max_len: int = 1 << 20) -> bytes:
    v = _req(obj, key, what)
    if type(v) is not bytes:
        raise DecodeError(f"{what}: field '{key}' must be bytes")
    if length is not None and len(v) != length:
        raise DecodeError(f"{what}: field '{key}' must be {length} bytes, got {len(v)}")
    if len(v) > max_len:
        raise DecodeError(f"{what}: field '{key}' longer than {max_len} bytes")
    return v


def _text(obj: dict, key: str, what: str, max_len: int) -> str:
    v = _req(obj, key, what)
    if type(v) is not str or not v or len(v) > max_len:
        raise DecodeError(f"{what}: field '{key}' must be a non-empty string of at most {max_len} chars")
    return v


def _exact_keys(obj: Any, keys: frozenset[str], what: str) -> dict:
    if type(obj) is not dict:
        raise DecodeError(f"{what}: expected a map")
    if obj.keys() != keys:
        extra = sorted(str(k) for k in obj.keys() - keys)
        missing = sorted(keys - obj.keys())
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"unknown {extra}")
        raise DecodeError(f"{what}: {'; '.join(parts)}")
    return obj


# --------------------------------------------------------------------------------------------------
# Transactions


_TX_KEYS = frozenset({"chain_id", "type", "sender", "nonce", "fee", "body", "sig"})


@dataclass(frozen=True, slots=True)
class Transaction:
    """A signed transaction. ``raw`` is its canonical encoding and ``hash`` = SHA-256(raw)."""

    chain_id: str
    type: str
    sender: bytes
    nonce: int
    fee: int
    body: dict
    sig: bytes
    raw: bytes = field(repr=False, compare=False)
    hash: bytes = field(compare=False)

    def unsigned_obj(self) -> dict:
        return {
            "chain_id": self.chain_id,
            "type": self.type,
            "sender": self.sender,
            "nonce": self.nonce,
            "fee": self.fee,
            "body": self.body,
        }

    def signing_bytes(self) -> bytes:
        return codec.encode(self.unsigned_obj())

    def verify_signature(self) -> bool:
        return verify(KIND_TX, self.chain_id, self.sender, self.signing_bytes(), self.sig)

    @classmethod
    def create(
        cls, key: SigningKey, chain_id: str, type_: str, nonce: int, fee: int, body: dict
    ) -> Transaction:
        """Build and sign a transaction."""
        unsigned = {
            "chain_id": chain_id,
            "type": type_,
            "sender": key.public_key,
            "nonce": nonce,
            "fee": fee,
            "body": body,
        }
        sig = key.sign(KIND_TX, chain_id, codec.encode(unsigned))
        raw = codec.encode({**unsigned, "sig": sig})
        return cls(chain_id, type_, key.public_key, nonce, fee, body, sig, raw, sha256(raw))

    @classmethod
    def decode(cls, raw: bytes) -> Transaction:
        """Strictly decode a signed transaction (structure only; signature and state checked elsewhere)."""
        if len(raw) > MAX_WITNESS_TX_BYTES:
            raise DecodeError(f"transaction too large: {len(raw)} bytes > {MAX_WITNESS_TX_BYTES}", "too_large")
        obj = _exact_keys(codec.decode(raw, max_bytes=MAX_WITNESS_TX_BYTES), _TX_KEYS, "transaction")
        if len(raw) > max_tx_bytes(obj["type"]):
            raise DecodeError(
                f"transaction too large: {len(raw)} bytes > {MAX_TX_BYTES} for type {str(obj['type'])[:32]!r}",
                "too_large",
            )
        body = obj["body"]
        if type(body) is not dict or len(body) > MAX_BODY_KEYS or not all(type(k) is str for k in body):
            raise DecodeError(f"transaction: 'body' must be a map with at most {MAX_BODY_KEYS} text keys")
        return cls(
            chain_id=_text(obj, "chain_id", "transaction", MAX_CHAIN_ID_LEN),
            type=_text(obj, "type", "transaction", 32),
            sender=_bytes(obj, "sender", "transaction", 32),
            nonce=_uint(obj, "nonce", "transaction"),
            fee=_uint(obj, "fee", "transaction"),
            body=body,
            sig=_bytes(obj, "sig", "transaction", 64),
            raw=bytes(raw),
            hash=sha256(raw),
        )

    def to_json(self) -> dict:
        """JSON view for RPC (amounts as decimal strings, bytes as 0x-hex)."""
        from .address import encode_address
        from .jsonview import body_to_json

        return {
            "hash": "0x" + self.hash.hex(),
            "chain_id": self.chain_id,
            "type": self.type,
            "sender": encode_address(self.sender),
            "nonce": self.nonce,
            "fee": str(self.fee),
            "body": body_to_json(self.type, self.body),
            "signature": "0x" + self.sig.hex(),
            "size": len(self.raw),
        }


def transfer(key: SigningKey, chain_id: str, to: bytes, amount: int, nonce: int, fee: int) -> Transaction:
    """A signed ``transfer`` of ``amount`` base units to public key ``to``."""
    return Transaction.create(key, chain_id, TX_TRANSFER, nonce, fee, {"to": to, "amount": amount})


# --------------------------------------------------------------------------------------------------
# Votes and commits

PREVOTE = 1
PRECOMMIT = 2
MAX_VOTE_BYTES = 512  # a vote encodes in ~190 bytes


def vote_sign_bytes(height: int, round_: int, vote_type: int, block_hash: bytes) -> bytes:
    """What a validator signs for a vote (the chain id is in the domain prefix; the key is implied)."""
    return codec.encode({"height": height, "round": round_, "type": vote_type, "block_hash": block_hash})


@dataclass(frozen=True, slots=True)
class Vote:
    """A prevote or precommit. ``block_hash`` empty = nil vote."""

    height: int
    round: int
    type: int
    block_hash: bytes
    validator: bytes
    sig: bytes

    def sign_bytes(self) -> bytes:
        return vote_sign_bytes(self.height, self.round, self.type, self.block_hash)

    def verify(self, chain_id: str) -> bool:
        return verify(KIND_VOTE, chain_id, self.validator, self.sign_bytes(), self.sig)

    @classmethod
    def create(
        cls, key: SigningKey, chain_id: str, height: int, round_: int, vote_type: int, block_hash: bytes
    ) -> Vote:
        sig = key.sign(KIND_VOTE, chain_id, vote_sign_bytes(height, round_, vote_type, block_hash))
        return cls(height, round_, vote_type, block_hash, key.public_key, sig)

    def to_obj(self) -> dict:
        return {
            "height": self.height,
            "round": self.round,
            "type": self.type,
            "block_hash": self.block_hash,
            "validator": self.validator,
            "sig": self.sig,
        }

    @classmethod
    def from_obj(cls, obj: Any) -> Vote:
        what = "vote"
        obj = _exact_keys(obj, frozenset({"height", "round", "type", "block_hash", "validator", "sig"}), what)
        vt = _uint(obj, "type", what)
        if vt not in (PREVOTE, PRECOMMIT):
            raise DecodeError("vote: field 'type' must be 1 (prevote) or 2 (precommit)")
        bh = _bytes(obj, "block_hash", what, max_len=32)
        if len(bh) not in (0, 32):
            raise DecodeError("vote: field 'block_hash' must be empty (nil) or 32 bytes")
        return cls(
            _uint(obj, "height", what),
            _uint(obj, "round", what, 1 << 31),
            vt,
            bh,
            _bytes(obj, "validator", what, 32),
            _bytes(obj, "sig", what, 64),
        )

    def encode(self) -> bytes:
        """Canonical encoding (what travels between peers)."""
        return codec.encode(self.to_obj())

    @classmethod
    def decode(cls, raw: bytes) -> Vote:
        """Strictly decode a vote (structure only; the signature is checked by consensus)."""
        return cls.from_obj(codec.decode(raw, max_bytes=MAX_VOTE_BYTES))


@dataclass(frozen=True, slots=True)
class CommitSig:
    validator: bytes
    sig: bytes


@dataclass(frozen=True, slots=True)
class Commit:
    """+2/3 precommits for one block: every signature is over the same vote sign-bytes."""

    height: int
    round: int
    block_hash: bytes
    signatures: tuple[CommitSig, ...]

    def sign_bytes(self) -> bytes:
        return vote_sign_bytes(self.height, self.round, PRECOMMIT, self.block_hash)

    def to_obj(self) -> dict:
        return {
            "height": self.height,
            "round": self.round,
            "block_hash": self.block_hash,
            "signatures": [[s.validator, s.sig] for s in self.signatures],
        }

    def encode(self) -> bytes:
        return codec.encode(self.to_obj())

    def hash(self) -> bytes:
        return sha256(self.encode())

    @classmethod
    def from_obj(cls, obj: Any) -> Commit:
        what = "commit"
        obj = _exact_keys(obj, frozenset({"height", "round", "block_hash", "signatures"}), what)
        sigs = obj["signatures"]
        if type(sigs) is not list or len(sigs) > 10_000:
            raise DecodeError("commit: 'signatures' must be a list of at most 10000 entries")
        out = []
        seen = set()
        for s in sigs:
            if (
                type(s) is not list
                or len(s) != 2
                or type(s[0]) is not bytes
                or len(s[0]) != 32
                or type(s[1]) is not bytes
                or len(s[1]) != 64
            ):
                raise DecodeError("commit: each signature must be [validator(32 bytes), sig(64 bytes)]")
            if s[0] in seen:
                raise DecodeError("commit: duplicate validator signature")
            seen.add(s[0])
            out.append(CommitSig(s[0], s[1]))
        return cls(
            _uint(obj, "height", what),
            _uint(obj, "round", what, 1 << 31),
            _bytes(obj, "block_hash", what, 32),
            tuple(out),
        )

    @classmethod
    def decode(cls, raw: bytes) -> Commit:
        return cls.from_obj(codec.decode(raw, max_bytes=2 << 20))


# --------------------------------------------------------------------------------------------------
# Blocks

_HEADER_KEYS = frozenset(
    {
        "chain_id",
        "height",
        "time",
        "prev_hash",
        "tx_root",
        "state_root",
        "results_hash",
        "proposer",
        "validators_hash",
        "next_validators_hash",
        "last_commit_hash",
        "evidence_hash",
    }
)


@dataclass(frozen=True, slots=True)
class BlockHeader:
    chain_id: str
    height: int
    time: int  # ms since the Unix epoch
    prev_hash: bytes
    tx_root: bytes
    state_root: bytes
    results_hash: bytes
    proposer: bytes
    validators_hash: bytes
    next_validators_hash: bytes
    last_commit_hash: bytes
    evidence_hash: bytes

    def to_obj(self) -> dict:
        return {k: getattr(self, k) for k in _HEADER_KEYS}

    def encode(self) -> bytes:
        return codec.encode(self.to_obj())

    def hash(self) -> bytes:
        return sha256(self.encode())

    @classmethod
    def from_obj(cls, obj: Any) -> BlockHeader:
        what = "block header"
        obj = _exact_keys(obj, _HEADER_KEYS, what)
        return cls(
            chain_id=_text(obj, "chain_id", what, MAX_CHAIN_ID_LEN),
            height=_uint(obj, "height", what),
            time=_uint(obj, "time", what),
            prev_hash=_bytes(obj, "prev_hash", what, 32),
            tx_root=_bytes(obj, "tx_root", what, 32),
            state_root=_bytes(obj, "state_root", what, 32),
            results_hash=_bytes(obj, "results_hash", what, 32),
            proposer=_bytes(obj, "proposer", what, 32),
            validators_hash=_bytes(obj, "validators_hash", what, 32),
            next_validators_hash=_bytes(obj, "next_validators_hash", what, 32),
            last_commit_hash=_bytes(obj, "last_commit_hash", what, 32),
            evidence_hash=_bytes(obj, "evidence_hash", what, 32),
        )


@dataclass(frozen=True, slots=True)
class Block:
    """Header + body (signed transactions, the commit of the previous height, evidence)."""

    header: BlockHeader
    txs: tuple[Transaction, ...]
    last_commit: Commit | None
    evidence: tuple[bytes, ...] = ()
    hash: bytes = field(default=b"", compare=False)

    def __post_init__(self) -> None:
        if not self.hash:
            object.__setattr__(self, "hash", self.header.hash())

    @property
    def height(self) -> int:
        return self.header.height

    def to_obj(self) -> dict:
        return {
            "header": self.header.to_obj(),
            "txs": [t.raw for t in self.txs],
            "last_commit": self.last_commit.to_obj() if self.last_commit else None,
            "evidence": list(self.evidence),
        }

    def encode(self) -> bytes:
        return codec.encode(self.to_obj())

    @classmethod
    def decode(cls, raw: bytes, *, max_bytes: int = 32 << 20) -> Block:
        what = "block"
        obj = _exact_keys(
            codec.decode(raw, max_bytes=max_bytes), frozenset({"header", "txs", "last_commit", "evidence"}), what
        )
        header = BlockHeader.from_obj(obj["header"])
        txs_raw = obj["txs"]
        if type(txs_raw) is not list:
            raise DecodeError("block: 'txs' must be a list")
        txs = []
        for i, t in enumerate(txs_raw):
            if type(t) is not bytes:
                raise DecodeError(f"block: tx {i} must be bytes")
            try:
                txs.append(Transaction.decode(t))
            except DecodeError as exc:
                raise DecodeError(f"block: tx {i}: {exc}") from None
        lc = obj["last_commit"]
        evidence = obj["evidence"]
        if type(evidence) is not list or not all(type(e) is bytes for e in evidence):
            raise DecodeError("block: 'evidence' must be a list of byte strings")
        return cls(header, tuple(txs), Commit.from_obj(lc) if lc is not None else None, tuple(evidence))


# --------------------------------------------------------------------------------------------------
# Merkle root over a list of leaves (RFC 6962 style: leaf = H(0x00||x), node = H(0x01||l||r)).


def merkle_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 Merkle tree hash of ``leaves``; the empty list hashes to 32 zero bytes."""
    if not leaves:
        return EMPTY_HASH
    level = [sha256(b"\x00" + x) for x in leaves]
    while len(level) > 1:
        nxt = [sha256(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


# --------------------------------------------------------------------------------------------------
# Accounts


@dataclass(slots=True)
class Account:
    """Balance (base units) and next expected nonce."""

    balance: int = 0
    nonce: int = 0

    def encode(self) -> bytes:
        return codec.encode([self.balance, self.nonce])

    @classmethod
    def decode(cls, raw: bytes) -> Account:
        obj = codec.decode(raw, max_bytes=64)
        if type(obj) is not list or len(obj) != 2 or not all(type(x) is int and x >= 0 for x in obj):
            raise DecodeError("account: expected [balance, nonce]")
        return cls(obj[0], obj[1])

    def copy(self) -> Account:
        return Account(self.balance, self.nonce)
