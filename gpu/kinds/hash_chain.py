"""``hash-chain`` v1 execution: hashlib reference and a sampled whole-result check. The rules (params,
leaf check, :func:`~state.kinds.hash_chain.chain`) are :mod:`state.kinds.hash_chain`; the CUDA kernel
is ``gpu/kernels/sha256.cu``."""

from __future__ import annotations

import hashlib

import numpy as np

from state.kinds.hash_chain import HashChainRules, chain

from .base import Deadline, JobKind, check_deadline

VERIFY_HASH_BUDGET = 1 << 20  # verify_full recomputes a sample of chains within this many hashes
_CHUNK_HASHES = 1 << 16


class HashChain(HashChainRules, JobKind):
    """Many independent iterated-SHA-256 chains."""

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
