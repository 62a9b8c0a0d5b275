"""Range proofs: a Pedersen commitment ``C = v·H + r·B`` holds ``v`` in ``[0, 2^n)``.

Bit decomposition with one Cramer–Damgård–Schoenmakers OR-proof per bit, all under one Fiat–Shamir
challenge: the prover commits to every bit, ``C_i = b_i·H + r_i·B`` with ``Σ 2^i r_i = r``, so that
``Σ 2^i C_i = C``; for each bit it proves "``C_i`` is a commitment to 0 **or** ``C_i − H`` is" by
knowing ``r_i``. Transparent (no trusted setup), ``32 + 128·n`` bytes plus a 2-byte header.

Wire form (version 1): ``0x01 ‖ n ‖ c ‖ (C_i ‖ c0_i ‖ s0_i ‖ s1_i) for i in 0..n-1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import rbcl

from zk import group
from zk.errors import ProofError
from zk.pedersen import Opening
from zk.transcript import Context, Transcript

VERSION = 1
MIN_BITS = 1
MAX_BITS = 64
_PER_BIT = 4 * 32
_PROTOCOL = b"range/v1"


def proof_size(bits: int) -> int:
    return 2 + 32 + _PER_BIT * bits


@dataclass(frozen=True, slots=True)
class RangeProof:
    bits: int
    challenge: bytes
    bit_commitments: tuple[bytes, ...]
    c0: tuple[bytes, ...]
    s0: tuple[bytes, ...]
    s1: tuple[bytes, ...]

    def encode(self) -> bytes:
        out = bytearray((VERSION, self.bits))
        out += self.challenge
        for i in range(self.bits):
            out += self.bit_commitments[i] + self.c0[i] + self.s0[i] + self.s1[i]
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes, *, max_bits: int = MAX_BITS) -> RangeProof:
        """Parse and check encodings (canonical scalars and points); the equations are :func:`verify`'s."""
        if not isinstance(data, bytes) or len(data) < 2:
            raise ProofError("range proof: too short", "zk_malformed")
        if data[0] != VERSION:
            raise ProofError(f"range proof: unknown version {data[0]}", "zk_malformed")
        bits = data[1]
        if not MIN_BITS <= bits <= min(max_bits, MAX_BITS):
            raise ProofError(f"range proof: {bits} bits outside [{MIN_BITS}, {max_bits}]", "zk_out_of_range")
        if len(data) != proof_size(bits):
            raise ProofError(f"range proof: {len(data)} bytes, expected {proof_size(bits)}", "zk_malformed")
        c = group.scalar(data[2:34], "range proof challenge")
        cs, c0s, s0s, s1s = [], [], [], []
        for i in range(bits):
            o = 34 + i * _PER_BIT
            cs.append(group.point(data[o : o + 32], f"bit commitment {i}"))
            c0s.append(group.scalar(data[o + 32 : o + 64], f"c0[{i}]"))
            s0s.append(group.scalar(data[o + 64 : o + 96], f"s0[{i}]"))
            s1s.append(group.scalar(data[o + 96 : o + 128], f"s1[{i}]"))
        return cls(bits, c, tuple(cs), tuple(c0s), tuple(s0s), tuple(s1s))


def _transcript(ctx: Context, commitment: bytes, bits: int, cs: list[bytes] | tuple[bytes, ...]) -> Transcript:
    t = Transcript(_PROTOCOL)
    ctx.bind(t)
    t.append_int(b"bits", bits)
    t.append(b"C", commitment)
    for ci in cs:
        t.append(b"C_i", ci)
    return t


def prove(
    ctx: Context,
    opening: Opening,
    bits: int,
    *,
    rand: Callable[[], bytes] = group.random_scalar,
) -> tuple[bytes, bytes]:
    """``(commitment, proof)`` that ``opening.value`` lies in ``[0, 2^bits)``; ``rand`` draws nonces
    (deterministic only in golden-vector tests)."""
    v = opening.value
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ProofError(f"{bits} bits outside [{MIN_BITS}, {MAX_BITS}]", "zk_out_of_range")
    if not 0 <= v < 2**bits:
        raise ProofError(f"value {v} is outside [0, 2^{bits})", "zk_out_of_range")
    r = group.scalar(opening.blinding, "blinding")
    commitment = opening.commit()
    # blindings r_i with Σ 2^i r_i = r: the last one closes the sum
    rs = [rand() for _ in range(bits - 1)]
    acc = group.ZERO
    for i, ri in enumerate(rs):
        acc = group.s_add(acc, group.s_mul(group.from_int(2**i), ri))
    inv_top = rbcl.crypto_core_ristretto255_scalar_invert(group.from_int(2 ** (bits - 1)))
    rs.append(group.s_mul(group.s_sub(r, acc), inv_top))
    bvals = [(v >> i) & 1 for i in range(bits)]
    cs = [group.add(group.mul(group.from_int(b), group.H), group.mul_base(ri)) for b, ri in zip(bvals, rs, strict=True)]
    t = _transcript(ctx, commitment, bits, cs)
    ks, fake_c, fake_s, rr = [], [], [], []
    for i in range(bits):
        p = (cs[i], group.sub(cs[i], group.H))
        b = bvals[i]
        k, cf, sf = rand(), rand(), rand()
        real_r = group.mul_base(k)
        fake_r = group.sub(group.mul_base(sf), group.mul(cf, p[1 - b]))
        r0, r1 = (real_r, fake_r) if b == 0 else (fake_r, real_r)
        ks.append(k)
        fake_c.append(cf)
        fake_s.append(sf)
        rr.append((r0, r1))
    for r0, r1 in rr:
        t.append(b"R0", r0)
        t.append(b"R1", r1)
    c = t.challenge(b"c")
    c0s, s0s, s1s = [], [], []
    for i in range(bits):
        b = bvals[i]
        cb = group.s_sub(c, fake_c[i])
        sb = group.s_add(ks[i], group.s_mul(cb, rs[i]))
        c0, s0, s1 = (cb, sb, fake_s[i]) if b == 0 else (fake_c[i], fake_s[i], sb)
        c0s.append(c0)
        s0s.append(s0)
        s1s.append(s1)
    proof = RangeProof(bits, c, tuple(cs), tuple(c0s), tuple(s0s), tuple(s1s))
    return commitment, proof.encode()


def verify(ctx: Context, commitment: bytes, proof: bytes, *, bits: int) -> None:
    """Accept or raise :class:`ProofError`: ``commitment`` holds a value in ``[0, 2^bits)`` and the proof
    is bound to ``ctx``. ``bits`` is what the verifier requires, not what the proof claims."""
    group.point(commitment, "commitment")
    rp = RangeProof.decode(proof, max_bits=bits)
    if rp.bits != bits:
        raise ProofError(f"range proof for {rp.bits} bits, {bits} required", "zk_invalid")
    # Σ 2^i C_i == C (Horner from the top bit)
    acc = group.IDENTITY
    for ci in reversed(rp.bit_commitments):
        acc = group.add(group.add(acc, acc), ci)
    if acc != commitment:
        raise ProofError("range proof: bit commitments do not sum to the commitment", "zk_invalid")
    t = _transcript(ctx, commitment, bits, rp.bit_commitments)
    c = rp.challenge
    for i in range(bits):
        ci = rp.bit_commitments[i]
        c1 = group.s_sub(c, rp.c0[i])
        r0 = group.sub(group.mul_base(rp.s0[i]), group.mul(rp.c0[i], ci))
        r1 = group.sub(group.mul_base(rp.s1[i]), group.mul(c1, group.sub(ci, group.H)))
        t.append(b"R0", r0)
        t.append(b"R1", r1)
    if t.challenge(b"c") != c:
        raise ProofError("range proof does not verify", "zk_invalid")
