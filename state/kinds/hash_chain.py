"""``hash-chain`` v1 rules: independent SHA-256 chains (exact, bit-identical on every backend).

Params ``{"chains", "iterations", "seed"}`` (seed: 32 bytes), no input. Chain j starts at
``s_0 = sha256(seed || le64(j))`` and applies ``s_{t+1} = sha256(s_t)`` ``iterations`` times (always on
the 32-byte state). The result is a uint8 array of shape (chains, 32); leaf j is the final state of
chain j (32 bytes). Execution: ``gpu/kinds/hash_chain.py``.
"""

from __future__ import annotations

import hashlib

from .base import KindRules, bytes_param, ceil_div, check_keys, int_param, limit

MAX_CHAINS = 1 << 15  # result 32 * 32768 bytes = 1 MiB
MAX_ITERATIONS = 1 << 15  # one leaf check: 32769 SHA-256 of 32 bytes, ~10-25 ms in hashlib
MAX_TOTAL_HASHES = 1 << 26  # chains * iterations: keeps the CPU reference within ~30 s
KHASH = 1024
_KEYS = frozenset({"chains", "iterations", "seed"})


def chain(seed: bytes, j: int, iterations: int) -> bytes:
    """Final 32-byte state of chain ``j``."""
    sha = hashlib.sha256
    h = sha(seed + j.to_bytes(8, "little")).digest()
    for _ in range(iterations):
        h = sha(h).digest()
    return h


class HashChainRules(KindRules):
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

    def check_leaf(self, params: dict, input: bytes | None, index: int, leaf: bytes) -> bool:
        """Recompute chain ``index`` (iterations + 1 hashes) and compare bit-exactly."""
        self.validate(params, None if input is None else len(input))
        if type(index) is not int or not 0 <= index < params["chains"]:
            return False
        if not isinstance(leaf, bytes) or len(leaf) != 32:
            return False
        return chain(params["seed"], index, params["iterations"]) == leaf
