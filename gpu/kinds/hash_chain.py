"""``hash-chain`` v1: independent SHA-256 chains (exact, bit-identical on every backend).

Params ``{"chains", "iterations", "seed"}`` (seed: 32 bytes), no input. Chain j starts at
``s_0 = sha256(seed || le64(j))`` and applies ``s_{t+1} = sha256(s_t)`` ``iterations`` times (always on
the 32-byte state). The result is a uint8 array of shape (chains, 32); leaf j is the final state of
chain j (32 bytes).
"""

from __future__ import annotations

import hashlib

import numpy as np

from .base import (
    Deadline,
    JobKind,
    bytes_param,
    ceil_div,
    check_deadline,
    check_keys,
    int_param,
    limit,
)

MAX_CHAINS = 1 << 15  # result 32 * 32768 bytes = 1 MiB
MAX_ITERATIONS = 1 << 15  # one leaf check: 32769 SHA-256 of 32 bytes, ~10-25 ms in hashlib
MAX_TOTAL_HASHES = 1 << 26  # chains * iterations: keeps the CPU reference within ~30 s
KHASH = 1024
VERIFY_HASH_BUDGET = 1 << 20  # verify_full recomputes a sample of chains within this many hashes
_KEYS = frozenset({"chains", "iterations", "seed"})
_CHUNK_HASHES = 1 << 16


def chain(seed: bytes, j: int, iterations: int) -> bytes:
    """Final 32-byte state of chain ``j``."""
    sha = hashlib.sha256
    h = sha(seed + j.to_bytes(8, "little")).digest()
    for _ in range(iterations):
        h = sha(h).digest()
    return h


class HashChain(JobKind):
    """Many independent iterated-SHA-256 chains."""

    name = "hash-chain"
    version = 1
    unit_type = "khash"  # 1024 SHA-256 evaluations
    deterministic = True
    tolerance = None
    result_dtype = "uint8"

    def _check_params(self, params: dict) -> None:
        check_keys(params, _KEYS)
        chains = int_param(params, "chains", 1, MAX_CHAINS)
        iterations = int_param(params, "iterations", 1, MAX_ITERATIONS)
        bytes_param(params, "seed", 32)
        limit("chains*iterations", chains * iterations, MAX_TOTAL_HASHES)

    def result_shape(self, params: dict) -> tuple[int, ...]:
        return (params["chains"], 32)

    def work_units(self, params: dict) -> int:
        """Every SHA-256 evaluation, the start of each chain included: chains * (iterations + 1)."""
        self.validate_params(params)
        return max(1, ceil_div(params["chains"] * (params["iterations"] + 1), KHASH))

    def leaf_check_work(self, params: dict, input_size: int | None) -> int:
        """One chain: iterations + 1 SHA-256 of 32 bytes in hashlib (~0.6 µs each)."""
        self.validate_params(params)
        return 1 + params["iterations"] + 1

    def device_bytes(self, params: dict) -> int:
        return 32 * params["chains"] + 64

    def execute_numpy(self, params: dict, input: bytes | None, *, deadline: Deadline | None = None) -> np.ndarray:
        """hashlib, chain after chain (the reference; the GPU runs one thread per chain)."""
        self.validate(params, None if input is None else len(input))
        seed, chains, iterations = params["seed"], params["chains"], params["iterations"]
        step = max(1, _CHUNK_HASHES // (iterations + 1))
        out = bytearray()
        for j in range(chains):
            if j % step == 0:
                check_deadline(deadline)
            out += chain(seed, j, iterations)
        return np.frombuffer(bytes(out), dtype=np.uint8).reshape(chains, 32).copy()

    def check_leaf(self, params: dict, input: bytes | None, index: int, leaf: bytes) -> bool:
        """Recompute chain ``index`` (iterations + 1 hashes) and compare bit-exactly."""
        self.validate(params, None if input is None else len(input))
        if type(index) is not int or not 0 <= index < params["chains"]:
            return False
        if not isinstance(leaf, bytes) or len(leaf) != 32:
            return False
        return chain(params["seed"], index, params["iterations"]) == leaf

    def sample(self, params: dict, rng_seed: bytes) -> list[int]:
        """The chains :meth:`verify_full` recomputes: all of them when they fit the hash budget, else a
        random sample (drawn from ``rng_seed``) of ``VERIFY_HASH_BUDGET // (iterations + 1)``."""
        chains, iterations = params["chains"], params["iterations"]
        count = min(chains, max(1, VERIFY_HASH_BUDGET // (iterations + 1)))
        if count == chains:
            return list(range(chains))
        rng = np.random.Generator(np.random.PCG64(int.from_bytes(hashlib.sha256(bytes(rng_seed)).digest(), "little")))
        return sorted(int(i) for i in rng.choice(chains, size=count, replace=False))

    def verify_full(self, params: dict, input: bytes | None, result: np.ndarray, rng_seed: bytes) -> bool:
        """Shape/dtype check, then recompute a sample of chains (see :meth:`sample`)."""
        self.validate(params, None if input is None else len(input))
        if not self._result_ok(params, result):
            return False
        seed, iterations = params["seed"], params["iterations"]
        return all(result[j].tobytes() == chain(seed, j, iterations) for j in self.sample(params, rng_seed))
