"""Ed25519 keys and domain-separated signatures (DESIGN §1).

A signature for purpose ``kind`` on chain ``chain_id`` is made over
``b"aitbc/<kind>/v1\\x00" + chain_id + encoding``, so it can never be replayed for another purpose or
chain. Verification uses libsodium (PyNaCl), which releases the GIL: bulk verification can run in
worker threads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from nacl.bindings import crypto_sign as _crypto_sign
from nacl.bindings import crypto_sign_ed25519_sk_to_pk, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError

from .errors import SignatureError

PUBKEY_LEN = 32
SIG_LEN = 64

KIND_TX = "tx"
KIND_VOTE = "vote"
KIND_PROPOSAL = "proposal"
KIND_RECEIPT = "receipt"
KIND_BID = "bid"

_PREFIX_CACHE: dict[tuple[str, str], bytes] = {}


def domain_prefix(kind: str, chain_id: str) -> bytes:
    """The domain-separation prefix for signatures of ``kind`` on ``chain_id``."""
    key = (kind, chain_id)
    p = _PREFIX_CACHE.get(key)
    if p is None:
        p = f"aitbc/{kind}/v1".encode() + b"\x00" + chain_id.encode()
        _PREFIX_CACHE[key] = p
    return p


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An Ed25519 private key held as its 32-byte seed."""

    seed: bytes
    public_key: bytes
    _sk: bytes

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        if len(seed) != 32:
            raise ValueError(f"Ed25519 seed must be 32 bytes, got {len(seed)}")
        pk, sk = crypto_sign_seed_keypair(seed)
        return cls(seed=bytes(seed), public_key=pk, _sk=sk)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls.from_seed(os.urandom(32))

    def sign_raw(self, message: bytes) -> bytes:
        """Sign exact bytes (no domain prefix). Prefer :meth:`sign`."""
        return _crypto_sign(message, self._sk)[:SIG_LEN]

    def sign(self, kind: str, chain_id: str, encoding: bytes) -> bytes:
        """Domain-separated signature over ``encoding``."""
        return self.sign_raw(domain_prefix(kind, chain_id) + encoding)


def verify(kind: str, chain_id: str, public_key: bytes, encoding: bytes, signature: bytes) -> bool:
    """True if ``signature`` is a valid domain-separated signature by ``public_key``."""
    if len(public_key) != PUBKEY_LEN or len(signature) != SIG_LEN:
        return False
    try:
        crypto_sign_open(signature + domain_prefix(kind, chain_id) + encoding, public_key)
        return True
    except (BadSignatureError, ValueError, TypeError):
        return False
    except Exception:  # libsodium rejects some malformed keys with other errors
        return False


def require_valid(kind: str, chain_id: str, public_key: bytes, encoding: bytes, signature: bytes) -> None:
    """Raise :class:`SignatureError` unless the signature verifies."""
    if not verify(kind, chain_id, public_key, encoding, signature):
        raise SignatureError(f"invalid {kind} signature")


def public_key_of_sk(sk64: bytes) -> bytes:
    """Public key of a 64-byte libsodium secret key."""
    return crypto_sign_ed25519_sk_to_pk(sk64)
