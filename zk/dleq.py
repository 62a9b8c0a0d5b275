"""Chaum–Pedersen proofs of discrete-log equality: ``K = k·B`` and ``S = k·E`` for one secret ``k``.

A job's client uses it to show the chain the Diffie–Hellman share of one sealed opening (so that
every node can decrypt that one ciphertext and see that it is garbage) without giving away ``k``.
Wire form (version 1): ``0x01 ‖ c ‖ z`` (65 bytes).
"""

from __future__ import annotations

from collections.abc import Callable

from zk import group
from zk.errors import ProofError
from zk.transcript import Context, Transcript

VERSION = 1
SIZE = 65
_PROTOCOL = b"dleq/v1"


def _transcript(ctx: Context, key: bytes, base: bytes, share: bytes) -> Transcript:
    t = Transcript(_PROTOCOL)
    ctx.bind(t)
    t.append(b"K", key)
    t.append(b"E", base)
    t.append(b"S", share)
    return t


def prove(
    ctx: Context, secret: bytes, base: bytes, *, rand: Callable[[], bytes] = group.random_scalar
) -> tuple[bytes, bytes]:
    """``(share, proof)`` with ``share = secret·base``."""
    group.scalar(secret, "secret")
    group.point(base, "base")
    key = group.mul_base(secret)
    share = group.mul(secret, base)
    a = rand()
    t = _transcript(ctx, key, base, share)
    t.append(b"R1", group.mul_base(a))
    t.append(b"R2", group.mul(a, base))
    c = t.challenge(b"c")
    z = group.s_add(a, group.s_mul(c, secret))
    return share, bytes((VERSION,)) + c + z


def verify(ctx: Context, key: bytes, base: bytes, share: bytes, proof: bytes) -> None:
    """Accept or raise :class:`ProofError`: ``log_B(key) == log_base(share)``, bound to ``ctx``."""
    for p, what in ((key, "key"), (base, "base"), (share, "share")):
        group.point(p, what)
    if not isinstance(proof, bytes) or len(proof) != SIZE or proof[0] != VERSION:
        raise ProofError(f"dleq proof: expected {SIZE} bytes of version {VERSION}", "zk_malformed")
    c = group.scalar(proof[1:33], "dleq challenge")
    z = group.scalar(proof[33:65], "dleq response")
    t = _transcript(ctx, key, base, share)
    t.append(b"R1", group.sub(group.mul_base(z), group.mul(c, key)))
    t.append(b"R2", group.sub(group.mul(z, base), group.mul(c, share)))
    if t.challenge(b"c") != c:
        raise ProofError("dleq proof does not verify", "zk_invalid")
