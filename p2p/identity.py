"""libp2p peer ids for Ed25519 node keys (identity multihash of the protobuf-encoded public key,
base58btc), computed without importing the libp2p stack."""

from __future__ import annotations

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, rem = divmod(n, 58)
        out.append(_B58[rem])
    pad = len(data) - len(data.lstrip(b"\x00"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Inverse of :func:`b58encode`; ValueError on characters outside the base58btc alphabet."""
    n = 0
    for ch in text:
        i = _B58.find(ch)
        if i < 0:
            raise ValueError(f"invalid base58 character {ch!r}")
        n = n * 58 + i
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\x00" * pad + body


def peer_id_from_ed25519(public_key: bytes) -> str:
    """The libp2p peer id ("12D3KooW…") of an Ed25519 public key."""
    if len(public_key) != 32:
        raise ValueError("Ed25519 public key must be 32 bytes")
    proto = b"\x08\x01\x12\x20" + public_key  # PublicKey{Type: Ed25519, Data: key}
    return b58encode(b"\x00" + bytes([len(proto)]) + proto)  # identity multihash
