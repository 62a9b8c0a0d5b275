"""Range proofs: a Pedersen commitment ``C = v·V + r·B`` (BN254 G1, :mod:`zk.pedersen`) holds ``v`` in
``[0, 2^n)``.

The Groth–Kohlweiss bit proof (Groth & Kohlweiss, *One-out-of-Many Proofs*, EUROCRYPT 2015, §2.3: a
committed vector holds only bits), linked to ``C``. With the bits ``b_i`` of ``v`` and uniform masks
``a_i``, ``r_A … r_E``, the prover commits

* ``A  = Σ b_i·G_i + r_A·B``  (the bits, on the independent generators ``G_i``),
* ``Bm = Σ a_i·G_i + r_B·B``  (the masks),
* ``Cm = Σ a_i(1 − 2b_i)·G_i + r_C·B`` and ``D = Σ −a_i²·G_i + r_D·B``,
* ``E  = (Σ 2^i a_i)·V + r_E·B``  (the masks' value),

draws ``x`` from the transcript (chain, job, party, ``n``, ``C`` and the five points) and answers
``f_i = b_i·x + a_i``, ``z_A = r_A·x + r_B``, ``z_C = r_C·x + r_D``, ``z_E = r·x + r_E``. The verifier
checks

* ``x·A + Bm = Σ f_i·G_i + z_A·B`` (the ``f_i`` open ``A`` at ``x``),
* ``x·Cm + D = Σ f_i(x − f_i)·G_i + z_C·B`` (its ``x²`` term is ``Σ b_i(1 − b_i)·G_i``: every ``b_i``
  is a bit),
* ``x·C + E = (Σ 2^i f_i)·V + z_E·B`` (``C`` holds ``Σ 2^i b_i``),

as **one** multi-scalar multiplication of ``n + 8`` points, the equations weighted by ``ρ, τ`` drawn
from the transcript after the responses. Special soundness needs three challenges (the ``x²`` term);
the responses are uniform and the commitments perfectly hiding, so it is zero-knowledge. Transparent:
every generator is hashed to the curve.

Wire form (version 2): ``0x02 ‖ n ‖ A ‖ Bm ‖ Cm ‖ D ‖ E ‖ f_0 … f_{n−1} ‖ z_A ‖ z_C ‖ z_E``
(64-byte points, 32-byte scalars): ``418 + 32·n`` bytes.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass, field

from zk import g1, group
from zk.errors import ProofError
from zk.pedersen import Opening
from zk.transcript import Context, Transcript

VERSION = 2
MIN_BITS = 1
MAX_BITS = g1.MAX_GENERATORS
_POINTS = 5
_HEADER = 2 + _POINTS * g1.POINT_BYTES
_PROTOCOL = b"range/v2"
_R = g1.R


def proof_size(bits: int) -> int:
    return _HEADER + g1.SCALAR_BYTES * (bits + 3)


@dataclass(frozen=True, slots=True)
class RangeProof:
    bits: int
    points: tuple[bytes, ...]  # A, Bm, Cm, D, E (encoded)
    f: tuple[int, ...]
    z: tuple[int, int, int]  # z_A, z_C, z_E
    decoded: tuple[ctypes.Array, ...] = field(default=(), compare=False, repr=False)

    def encode(self) -> bytes:
        out = bytearray((VERSION, self.bits))
        for p in self.points:
            out += p
        for s in (*self.f, *self.z):
            out += g1.scalar_bytes(s)
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes, *, max_bits: int = MAX_BITS) -> RangeProof:
        """Parse and check encodings (points on the curve, canonical scalars); the equations are
        :func:`verify`'s."""
        if not isinstance(data, bytes) or len(data) < 2:
            raise ProofError("range proof: too short", "zk_malformed")
        if data[0] != VERSION:
            raise ProofError(f"range proof: unknown version {data[0]}", "zk_malformed")
        bits = data[1]
        if not MIN_BITS <= bits <= min(max_bits, MAX_BITS):
            raise ProofError(f"range proof: {bits} bits outside [{MIN_BITS}, {max_bits}]", "zk_out_of_range")
        if len(data) != proof_size(bits):
            raise ProofError(f"range proof: {len(data)} bytes, expected {proof_size(bits)}", "zk_malformed")
        raw = tuple(data[2 + i * 64 : 66 + i * 64] for i in range(_POINTS))
        names = ("A", "Bm", "Cm", "D", "E")
        decoded = tuple(g1.decode(p, f"range proof {n}") for p, n in zip(raw, names, strict=True))
        scalars = [g1.scalar(data[o : o + 32], "range proof response") for o in range(_HEADER, len(data), 32)]
        return cls(bits, raw, tuple(scalars[:bits]), (scalars[bits], scalars[bits + 1], scalars[bits + 2]), decoded)


def _transcript(ctx: Context, commitment: bytes, bits: int, points: tuple[bytes, ...]) -> Transcript:
    t = Transcript(_PROTOCOL)
    ctx.bind(t)
    t.append_int(b"bits", bits)
    t.append(b"C", commitment)
    for label, p in zip((b"A", b"Bm", b"Cm", b"D", b"E"), points, strict=True):
        t.append(label, p)
    return t


def _weights(t: Transcript, f: tuple[int, ...], z: tuple[int, int, int]) -> tuple[int, int]:
    for s in f:
        t.append(b"f", g1.scalar_bytes(s))
    for s in z:
        t.append(b"z", g1.scalar_bytes(s))
    return t.challenge_mod(b"rho", _R), t.challenge_mod(b"tau", _R)


def prove(
    ctx: Context,
    opening: Opening,
    bits: int,
    *,
    rand: Callable[[], bytes] = group.random_scalar,
) -> tuple[bytes, bytes]:
    """``(commitment, proof)`` that ``opening.value`` lies in ``[0, 2^bits)``; ``rand`` is a source of
    32-byte random strings for the masks (deterministic only in golden-vector tests)."""
    v = opening.value
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ProofError(f"{bits} bits outside [{MIN_BITS}, {MAX_BITS}]", "zk_out_of_range")
    if not 0 <= v < 2**bits:
        raise ProofError(f"value {v} is outside [0, 2^{bits})", "zk_out_of_range")
    r = g1.scalar(opening.blinding, "blinding")

    def draw() -> int:
        return g1.hash_to_scalar(b"aitbc/zk/v2/range-mask" + rand())

    b = [(v >> i) & 1 for i in range(bits)]
    a = [draw() for _ in range(bits)]
    r_a, r_b, r_c, r_d, r_e = (draw() for _ in range(5))
    gens = (*g1.G[:bits], g1.B)
    pts = (
        g1.msm(gens, (*b, r_a)),
        g1.msm(gens, (*a, r_b)),
        g1.msm(gens, (*(ai * (1 - 2 * bi) for ai, bi in zip(a, b, strict=True)), r_c)),
        g1.msm(gens, (*(-ai * ai for ai in a), r_d)),
        g1.msm((g1.V, g1.B), (sum(ai << i for i, ai in enumerate(a)), r_e)),
    )
    commitment = opening.commit()
    points = tuple(g1.encode(p) for p in pts)
    x = _transcript(ctx, commitment, bits, points).challenge_mod(b"x", _R)
    f = tuple((bi * x + ai) % _R for ai, bi in zip(a, b, strict=True))
    z = ((r_a * x + r_b) % _R, (r_c * x + r_d) % _R, (r * x + r_e) % _R)
    return commitment, RangeProof(bits, points, f, z).encode()


def verify(ctx: Context, commitment: bytes, proof: bytes, *, bits: int) -> None:
    """Accept or raise :class:`ProofError`: ``commitment`` holds a value in ``[0, 2^bits)`` and the proof
    is bound to ``ctx``. ``bits`` is what the verifier requires, not what the proof claims."""
    c = g1.decode(commitment, "commitment")
    rp = RangeProof.decode(proof, max_bits=bits)
    if rp.bits != bits:
        raise ProofError(f"range proof for {rp.bits} bits, {bits} required", "zk_invalid")
    t = _transcript(ctx, commitment, bits, rp.points)
    x = t.challenge_mod(b"x", _R)
    rho, tau = _weights(t, rp.f, rp.z)
    z_a, z_c, z_e = rp.z
    a_pt, b_pt, c_pt, d_pt, e_pt = rp.decoded
    value = sum(fi << i for i, fi in enumerate(rp.f))
    scalars = [x, 1, rho * x, rho, tau * x, tau, -(z_a + rho * z_c + tau * z_e), -tau * value]
    scalars += [-(fi + rho * fi * (x - fi)) for fi in rp.f]
    total = g1.msm((a_pt, b_pt, c_pt, d_pt, c, e_pt, g1.B, g1.V, *g1.G[:bits]), scalars)
    if not g1.is_identity(total):
        raise ProofError("range proof does not verify", "zk_invalid")
