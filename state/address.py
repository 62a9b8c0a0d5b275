"""bech32m addresses with human-readable part ``ait`` over a 32-byte Ed25519 public key (BIP-350).

The checksum code follows the BIP-350 reference implementation; no maintained PyPI package offers
bech32m with a plain (non-segwit) payload.
"""

from __future__ import annotations

import functools

from .errors import AddressError, InvariantError

HRP = "ait"
_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARMAP = {c: i for i, c in enumerate(_CHARSET)}
_BECH32M_CONST = 0x2BC830A3
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        b = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= _GEN[i] if ((b >> i) & 1) else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(x) >> 5 for x in hrp] + [0] + [ord(x) & 31 for x in hrp]


def _convertbits(data: bytes | list[int], frombits: int, tobits: int, pad: bool) -> list[int] | None:
    acc = bits = 0
    ret: list[int] = []
    maxv = (1 << tobits) - 1
    for value in data:
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            ret.append((acc >> bits) & maxv)
    if pad:
        if bits:
            ret.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or ((acc << (tobits - bits)) & maxv):
        return None
    return ret


_ENC_CACHE: dict[bytes, str] = {}


def encode_address(public_key: bytes) -> str:
    """``ait1…`` address of a 32-byte public key."""
    cached = _ENC_CACHE.get(public_key)
    if cached is not None:
        return cached
    if len(public_key) != 32:
        raise AddressError(f"public key must be 32 bytes, got {len(public_key)}")
    data = _convertbits(public_key, 8, 5, True)
    if data is None:  # cannot happen: padding always succeeds
        raise InvariantError("bech32m: converting the public key to 5-bit groups failed")
    values = _hrp_expand(HRP) + data
    polymod = _polymod(values + [0] * 6) ^ _BECH32M_CONST
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    out = HRP + "1" + "".join(_CHARSET[d] for d in data + checksum)
    if len(_ENC_CACHE) < 100_000:
        _ENC_CACHE[public_key] = out
    return out


def decode_address(address: str) -> bytes:
    """Public key of an ``ait1…`` address; :class:`AddressError` says exactly what is wrong."""
    if not isinstance(address, str):
        raise AddressError("address must be a string")
    if len(address) > 128:
        raise AddressError("address too long")
    return _decode_cached(address)


@functools.lru_cache(maxsize=65_536)
def _decode_cached(address: str) -> bytes:
    """Valid addresses are cached (the checksum costs ~30 µs in Python); errors are not."""
    if address.lower() != address and address.upper() != address:
        raise AddressError("address mixes upper and lower case")
    addr = address.lower()
    pos = addr.rfind("1")
    if pos < 1:
        raise AddressError("address has no '1' separator")
    hrp, rest = addr[:pos], addr[pos + 1 :]
    if hrp != HRP:
        raise AddressError(f"address prefix must be '{HRP}', got '{hrp}'")
    if len(rest) < 6:
        raise AddressError("address too short")
    try:
        values = [_CHARMAP[c] for c in rest]
    except KeyError as exc:
        raise AddressError(f"invalid character {exc.args[0]!r} in address") from None
    if _polymod(_hrp_expand(hrp) + values) != _BECH32M_CONST:
        raise AddressError("address checksum mismatch (mistyped or not a bech32m address)")
    payload = _convertbits(values[:-6], 5, 8, False)
    if payload is None:
        raise AddressError("address has invalid padding")
    if len(payload) != 32:
        raise AddressError(f"address payload must be 32 bytes, got {len(payload)}")
    return bytes(payload)


def is_address(s: str) -> bool:
    try:
        decode_address(s)
        return True
    except AddressError:
        return False
