"""Poseidon over BN254's scalar field, exactly as circomlib's ``Poseidon(n)`` / circomlibjs ``poseidon``.

Only the widths the circuits use: t=2 (one input, 8 full + 56 partial rounds) and t=3 (two inputs,
8 full + 57 partial rounds); S-box x^5, capacity ``state[0] = 0``, output ``state[0]``, circomlib's
constants (:mod:`zk.poseidon_constants`). Every field operation is mcl's ``mclBnFr_add``/``mclBnFr_mul``.

Speed: each permutation is compiled once, at import, into a flat list of bound mcl calls on
preallocated Fr buffers (two state banks used alternately, so the MDS mix needs no copies); a hash is
one C-level pass over that list (``deque(map(call, ops), 0)``). The calls go through a ``ctypes.PyDLL``
view of the already-loaded mcl handle (no GIL release per call: mcl's Fr functions are short and never
call back into Python) with ``restype = None``. A lock makes the shared buffers safe under threads.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from operator import call

from zk import poseidon_constants as _pc
from zk.bn254 import LIB, Fr, R, fr
from zk.errors import ProofError

#: SHA-256 of the canonical constant encoding (see :func:`constants_digest`), pinned.
CONSTANTS_SHA256 = "b1de0b682602b48e60a99a0770a575d715c4a61b394bebf125734a464c273913"
_FULL_ROUNDS = 8
_PARTIAL_ROUNDS = {2: 56, 3: 57}

_PY = ctypes.PyDLL(LIB._name, handle=LIB._handle)


def _void(name: str) -> Callable[..., None]:
    fn = getattr(_PY, name)
    fn.restype = None
    return fn


_ADD = _void("mclBnFr_add")
_MUL = _void("mclBnFr_mul")
_CLEAR = _void("mclBnFr_clear")
_DESERIALIZE = _PY.mclBnFr_deserialize
_SERIALIZE = _PY.mclBnFr_serialize
_DESERIALIZE.restype = _SERIALIZE.restype = ctypes.c_size_t

Op = tuple[Callable[..., None], Fr, Fr, Fr]


def constants_digest() -> str:
    """SHA-256 (hex) of C2, M2, C3, M3 (M row-major), each element 32 bytes big-endian, concatenated."""
    items = [*_pc.C2, *(x for row in _pc.M2 for x in row), *_pc.C3, *(x for row in _pc.M3 for x in row)]
    return hashlib.sha256(b"".join(x.to_bytes(32, "big") for x in items)).hexdigest()


class _Permutation:
    """One width's Poseidon permutation, compiled to a straight-line list of mcl calls."""

    def __init__(self, t: int, c: Sequence[int], m: Sequence[Sequence[int]]) -> None:
        rp = _PARTIAL_ROUNDS[t]
        rounds = _FULL_ROUNDS + rp
        if len(c) != t * rounds or len(m) != t or any(len(row) != t for row in m):
            raise ValueError(f"Poseidon constants for t={t} have the wrong shape")
        cs = [fr(x) for x in c]
        ms = [[fr(x) for x in row] for row in m]
        banks = ([Fr() for _ in range(t)], [Fr() for _ in range(t)])
        tmp = Fr()
        prog: list[Op] = []
        for r in range(rounds):
            s, n = banks[r % 2], banks[(r + 1) % 2]
            full = r < _FULL_ROUNDS // 2 or r >= _FULL_ROUNDS // 2 + rp
            for y in range(t):
                prog.append((_ADD, s[y], s[y], cs[r * t + y]))
                if full or y == 0:  # x^5 = x * (x^2)^2
                    prog += [(_MUL, tmp, s[y], s[y]), (_MUL, tmp, tmp, tmp), (_MUL, s[y], s[y], tmp)]
            for i in range(t):
                prog.append((_MUL, n[i], ms[i][0], s[0]))
                for j in range(1, t):
                    prog += [(_MUL, tmp, ms[i][j], s[j]), (_ADD, n[i], n[i], tmp)]
        self.t = t
        self._prog = [partial(fn, out, a, b) for fn, out, a, b in prog]  # keeps the buffers alive
        self._in = banks[0]
        self._out = banks[rounds % 2][0]
        self._buf = ctypes.create_string_buffer(32)
        self._lock = threading.Lock()

    def __call__(self, *inputs: int) -> int:
        with self._lock:
            state = self._in
            _CLEAR(state[0])
            for dst, x in zip(state[1:], inputs, strict=True):
                if _DESERIALIZE(dst, x.to_bytes(32, "little"), 32) != 32:
                    raise ProofError("mcl refused a Poseidon input", "zk_malformed")
            deque(map(call, self._prog), 0)
            if _SERIALIZE(self._buf, 32, self._out) != 32:
                raise RuntimeError("mcl could not serialise a Poseidon output")
            return int.from_bytes(self._buf.raw, "little")


_P2 = _Permutation(2, _pc.C2, _pc.M2)
_P3 = _Permutation(3, _pc.C3, _pc.M3)


def canonical(x: int) -> int:
    """``x`` itself when it is a canonical scalar (an ``int``, not a bool, in ``[0, R)``), else ProofError."""
    if type(x) is not int or not 0 <= x < R:
        raise ProofError("Poseidon input is not a canonical BN254 scalar (an int in [0, r))", "zk_malformed")
    return x


def hash1(a: int) -> int:
    """circomlib ``Poseidon(1)([a])``."""
    return _P2(canonical(a))


def hash2(a: int, b: int) -> int:
    """circomlib ``Poseidon(2)([a, b])``."""
    return _P3(canonical(a), canonical(b))


if __name__ == "__main__":
    import time

    for name, fn, perm, args in (("hash1", hash1, _P2, (1,)), ("hash2", hash2, _P3, (1, 2))):
        n = 2000
        start = time.perf_counter()
        for _ in range(n):
            fn(*args)
        us = (time.perf_counter() - start) / n * 1e6
        print(f"{name}: {us:.1f} us/hash ({len(perm._prog)} mcl calls)")
