"""Openings sealed to one recipient (a sealed-bid job's client), and disclosure of one of them.

A bidder seals ``(value, blinding)`` to the client's ristretto255 key ``K = k·B``: ephemeral ``E = e·B``,
shared point ``S = e·K = k·E``, key ``SHA-512(domain ‖ E ‖ S ‖ commitment)[:32]``, XChaCha20-Poly1305
with the context as associated data. Only the client can open it. If a ciphertext does not open its
commitment, the client *discloses* ``S`` with a DLEQ proof (:mod:`zk.dleq`), and then every node can
decrypt that one ciphertext and check the bidder's fault — nothing else is revealed.

Wire form (version 1): ``0x01 ‖ E ‖ ciphertext`` with a 40-byte plaintext ``value u64 BE ‖ blinding``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

from zk import dleq, g1, group
from zk.errors import ProofError
from zk.pedersen import Opening, opens
from zk.transcript import Context

VERSION = 1
_PLAIN = 8 + 32
_TAG = 16
SIZE = 1 + 32 + _PLAIN + _TAG
_NONCE = bytes(24)  # one key per (E, S, commitment): never reused


def _aad(ctx: Context, commitment: bytes) -> bytes:
    c = ctx.chain_id.encode()
    return b"aitbc/zk/v1/seal" + len(c).to_bytes(2, "big") + c + len(ctx.scope).to_bytes(2, "big") + ctx.scope + \
        len(ctx.party).to_bytes(2, "big") + ctx.party + commitment


def _key(ephemeral: bytes, shared: bytes, commitment: bytes) -> bytes:
    return hashlib.sha512(b"aitbc/zk/v1/seal-key" + ephemeral + shared + commitment).digest()[:32]


def seal(
    ctx: Context, recipient: bytes, commitment: bytes, opening: Opening,
    *, rand: Callable[[], bytes] = group.random_scalar,
) -> bytes:
    group.point(recipient, "recipient key")
    if recipient == group.IDENTITY:
        raise ProofError("recipient key is the identity", "zk_malformed")
    e = rand()
    ephemeral = group.mul_base(e)
    shared = group.mul(e, recipient)
    plain = opening.value.to_bytes(8, "big") + opening.blinding
    ct = crypto_aead_xchacha20poly1305_ietf_encrypt(plain, _aad(ctx, commitment), _NONCE, _key(ephemeral, shared, commitment))
    return bytes((VERSION,)) + ephemeral + ct


def _split(sealed: bytes) -> tuple[bytes, bytes]:
    if not isinstance(sealed, bytes) or len(sealed) != SIZE or sealed[0] != VERSION:
        raise ProofError(f"sealed opening: expected {SIZE} bytes of version {VERSION}", "zk_malformed")
    ephemeral = group.point(sealed[1:33], "ephemeral key")
    if ephemeral == group.IDENTITY:
        raise ProofError("sealed opening: ephemeral key is the identity", "zk_malformed")
    return ephemeral, sealed[33:]


def check_form(sealed: bytes) -> None:
    """What every node checks when a sealed opening arrives: size, version, a valid ephemeral key."""
    _split(sealed)


def open_with_share(ctx: Context, commitment: bytes, sealed: bytes, shared: bytes) -> Opening | None:
    """The opening inside ``sealed`` given the shared point, or None if it does not decrypt, is out of
    the scalar range, or does not open ``commitment``."""
    ephemeral, ct = _split(sealed)
    try:
        plain = crypto_aead_xchacha20poly1305_ietf_decrypt(ct, _aad(ctx, commitment), _NONCE, _key(ephemeral, shared, commitment))
    except CryptoError:
        return None
    blinding = plain[8:]
    if int.from_bytes(blinding, "little") >= g1.R:
        return None
    opening = Opening(int.from_bytes(plain[:8], "big"), blinding)
    return opening if opens(commitment, opening) else None


def unseal(ctx: Context, secret: bytes, commitment: bytes, sealed: bytes) -> Opening | None:
    """The recipient's side: decrypt with its secret ``k``."""
    ephemeral, _ = _split(sealed)
    return open_with_share(ctx, commitment, sealed, group.mul(secret, ephemeral))


def disclose(ctx: Context, secret: bytes, sealed: bytes) -> tuple[bytes, bytes]:
    """``(shared, dleq proof)`` letting anyone decrypt this one ciphertext."""
    ephemeral, _ = _split(sealed)
    return dleq.prove(ctx, secret, ephemeral)


def verify_disclosure(
    ctx: Context, recipient: bytes, commitment: bytes, sealed: bytes, shared: bytes, proof: bytes
) -> Opening | None:
    """Check the disclosure proof (raises :class:`ProofError`), then decrypt: None means the sealed
    opening is the sender's fault (garbage, or it does not open its commitment)."""
    ephemeral, _ = _split(sealed)
    dleq.verify(ctx, recipient, ephemeral, shared, proof)
    return open_with_share(ctx, commitment, sealed, shared)
