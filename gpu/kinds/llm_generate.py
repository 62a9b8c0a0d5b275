"""``llm-generate`` v1 execution: integer Llama generation (``state.llm.generate``) over a registered
model loaded from this node's model store, and the token rows of :mod:`state.kinds.llm_trace`.

The rules (params, units, result shape, dispute bounds) are :class:`state.kinds.llm_generate.LlmGenerateRules`;
disputes are ``llm_challenge`` / ``llm_steps`` / ``llm_step_proof`` (``state/market/llm_disputes.py``).

Models: a job names its model by id. Where the model file comes from is the node's business: it installs
a :class:`ModelSource` (``node/llm.py``: the verified chunks of a model it has pinned) with
:meth:`LlmGenerate.install`. Loaded models are kept in a :class:`ModelCache`, an LRU bounded by bytes
and by count (a loaded model costs its file plus the float64 copies of its matrices that the fast path
builds: about :data:`LOADED_BYTES_PER_FILE_BYTE` × the file size).

Execution runs in the executor's worker thread (never on the trio loop). On the PyCUDA backend, once its
llm self-test passed, the matmuls run on the GPU (``engine``: :class:`gpu.llm_cuda.PyCudaLlm`, bit-exact with
NumPy); otherwise the executor runs the kind with NumPy (``gpu/executor.py``). The run keeps
the output digests of every position's steps (a bounded LRU by job params), so a miner can answer an
``llm_challenge`` without running the job again (:meth:`LlmGenerate.position_digests` re-runs it when
they were evicted; the run is deterministic, so the digests are the same).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from state import codec
from state.kinds import llm_trace as lt
from state.kinds.llm_generate import LlmGenerateRules, sampling_of
from state.llm.config import LlamaConfig, LlmError
from state.llm.generate import IntModel, generate

from .base import Deadline, JobExecutionError, JobKind, check_deadline

LOADED_BYTES_PER_FILE_BYTE = 9  # the file (int8) + float64 copies of every matrix (8 bytes per weight)
DEFAULT_CACHE_BYTES = 4 << 30
DEFAULT_CACHE_MODELS = 4
DIGEST_CACHE_BYTES = 64 << 20  # per-position step digests kept for answering llm_challenge


class ModelSource(Protocol):
    """Where the executable kind gets models from (the node installs one)."""

    def model_config(self, model_id: bytes) -> tuple[LlamaConfig, int] | None:
        """(config, file size) of a registered model, or None; cheap (a state read)."""
        ...

    def model_file(self, model_id: bytes) -> bytes:
        """The whole verified model file (blocking; called in a worker thread). Raises
        :class:`JobExecutionError` ``model_unavailable`` when this node does not have it."""
        ...


@dataclass(frozen=True, slots=True)
class RunOutput:
    """One run: the generated tokens, the result rows and the step digests of every processed position."""

    tokens: list[int]
    rows: np.ndarray
    digests: list[list[bytes]]
    trace: Any = None  # the whole state.llm.generate.Trace (every step output) when asked for


class ModelCache:
    """Loaded models (:class:`IntModel`), least recently used first out, bounded by an estimate of their
    memory (:data:`LOADED_BYTES_PER_FILE_BYTE` × file size) and by count. Thread-safe; a load holds the
    cache's lock (loads are rare and one job runs at a time)."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES, max_models: int = DEFAULT_CACHE_MODELS) -> None:
        self.max_bytes = max_bytes
        self.max_models = max(1, max_models)
        self._models: OrderedDict[bytes, tuple[IntModel, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(cost for _m, cost in self._models.values())

    def __contains__(self, model_id: bytes) -> bool:
        with self._lock:
            return model_id in self._models

    def get(self, model_id: bytes, load: Callable[[], tuple[LlamaConfig, bytes]]) -> IntModel:
        with self._lock:
            hit = self._models.get(model_id)
            if hit is not None:
                self._models.move_to_end(model_id)
                return hit[0]
            cfg, data = load()
            cost = LOADED_BYTES_PER_FILE_BYTE * len(data)
            if cost > self.max_bytes:
                raise JobExecutionError(
                    "memory", f"the model needs ~{cost} bytes loaded, more than the model cache's {self.max_bytes}"
                )
            try:
                model = IntModel(cfg, data)
            except LlmError as exc:
                raise JobExecutionError("model_unavailable", f"the model file does not parse: {exc}") from None
            self._models[model_id] = (model, cost)
            self.loads += 1
            used = sum(c for _m, c in self._models.values())
            while len(self._models) > 1 and (used > self.max_bytes or len(self._models) > self.max_models):
                _mid, (_old, c) = self._models.popitem(last=False)
                used -= c
            return model

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


def params_key(params: dict) -> bytes:
    """The identity of a job's computation: SHA-256 of its canonical params."""
    return hashlib.sha256(codec.encode(params)).digest()


class LlmGenerate(LlmGenerateRules, JobKind):
    """Integer Llama generation over a registered model (NumPy)."""

    def __init__(self) -> None:
        self.source: ModelSource | None = None
        self.models = ModelCache()
        self._digests: OrderedDict[bytes, tuple[list[list[bytes]], int]] = OrderedDict()
        self._digest_bytes = 0
        self._digest_lock = threading.Lock()

    # -- the model store ---------------------------------------------------------------------------------
    def install(self, source: ModelSource | None, *, cache_bytes: int | None = None,
                cache_models: int | None = None) -> None:
        """Use ``source`` for models (the node's store); resize the model cache (its models are dropped)."""
        self.source = source
        self.models = ModelCache(cache_bytes or DEFAULT_CACHE_BYTES, cache_models or DEFAULT_CACHE_MODELS)

    def _source(self) -> ModelSource:
        if self.source is None:
            raise JobExecutionError("model_unavailable", "this peer has no model store (llm-generate needs a node)")
        return self.source

    def load(self, model_id: bytes) -> IntModel:
        """The loaded model (from the cache, else read from the source: blocking)."""
        src = self._source()

        def read() -> tuple[LlamaConfig, bytes]:
            info = src.model_config(model_id)
            if info is None:
                raise JobExecutionError("model_unavailable", f"model {model_id.hex()[:16]} is not registered")
            return info[0], src.model_file(model_id)

        return self.models.get(model_id, read)

    # -- execution -----------------------------------------------------------------------------------
    def device_bytes(self, params: dict) -> int:
        """The loaded model (when not cached yet) plus the recorded trace of every position (int32
        outputs of every step); a small guess when the model is unknown (the run then fails cleanly)."""
        self.validate_params(params)
        info = self.source.model_config(params["model"]) if self.source is not None else None
        if info is None:
            return 1 << 20
        cfg, size = info
        per_layer = 6 * cfg.dim + 2 * cfg.q_dim + 2 * cfg.kv_dim + cfg.ffn_dim
        per_pos = 4 * (cfg.dim + cfg.n_layers * per_layer) + 8 * cfg.dim
        positions = len(params["prompt"]) + params["max_new_tokens"]
        # the NumPy backend multiplies the estimate by its temporaries factor (3); the loaded model's size
        # is known, so only its share is passed through that factor
        model = 0 if params["model"] in self.models else -(-LOADED_BYTES_PER_FILE_BYTE * size // 3)
        return model + positions * per_pos + 4 * cfg.vocab

    def run(self, params: dict, deadline: Deadline | None = None, *, keep_trace: bool = False,
            engine: Any = None) -> RunOutput:
        """Run the job (blocking): tokens, rows and step digests (and with ``keep_trace`` every step
        output, for building step proofs). The deadline is checked between tokens (a job past its time
        limit or cancelled stops within one forward pass). ``engine`` (the PyCUDA backend's self-tested
        :class:`gpu.llm_cuda.PyCudaLlm`) runs the generation with its matmuls on the GPU; same result."""
        self.validate_params(params)
        check_deadline(deadline)
        model = self.load(params["model"])
        check_deadline(deadline)
        prompt = list(params["prompt"])
        n_new = params["max_new_tokens"]
        try:
            gen = generate if engine is None else engine.generate
            tokens, trace = gen(model, prompt, n_new, sampling_of(params), frozenset(params.get("stop", ())),
                                on_token=lambda _tok: check_deadline(deadline))
        except LlmError as exc:
            raise JobExecutionError("bad_job", f"the model refused the job: {exc}") from None
        digests = [lt.position_digests(trace, t) for t in range(trace.n_positions)]
        rows = lt.result_rows(trace, prompt, n_new, tokens, digests)
        self._keep_digests(params_key(params), digests)
        check_deadline(deadline)
        return RunOutput(tokens, rows, digests, trace if keep_trace else None)

    def execute_numpy(self, params: dict, input: bytes | None, *, deadline: Deadline | None = None) -> np.ndarray:
        self.validate(params, None if input is None else len(input))
        return self.run(params, deadline).rows

    def verify_full(self, params: dict, input: bytes | None, result: np.ndarray, rng_seed: bytes) -> bool:
        """Re-run and compare the rows bit for bit (the run is deterministic)."""
        self.validate(params, None if input is None else len(input))
        if not self._result_ok(params, result):
            return False
        return bool(np.array_equal(self.run(params).rows, result))

    # -- step digests (answering llm_challenge) -----------------------------------------------------------
    def _keep_digests(self, key: bytes, digests: list[list[bytes]]) -> None:
        cost = 32 * sum(len(d) for d in digests) + 64
        if cost > DIGEST_CACHE_BYTES:
            return
        with self._digest_lock:
            old = self._digests.pop(key, None)
            if old is not None:
                self._digest_bytes -= old[1]
            self._digests[key] = (digests, cost)
            self._digest_bytes += cost
            while self._digest_bytes > DIGEST_CACHE_BYTES and self._digests:
                _k, (_d, c) = self._digests.popitem(last=False)
                self._digest_bytes -= c

    def cached_digests(self, params: dict) -> list[list[bytes]] | None:
        with self._digest_lock:
            hit = self._digests.get(params_key(params))
            return None if hit is None else hit[0]

    def all_digests(self, params: dict) -> list[list[bytes]]:
        """The step digests of every processed position of the job (kept from its run, else re-run:
        blocking)."""
        hit = self.cached_digests(params)
        return hit if hit is not None else self.run(params).digests

    def position_digests(self, params: dict, t: int) -> list[bytes]:
        """The output digests of position ``t``'s steps in leaf order (``llm_trace.position_steps``)."""
        digests = self.all_digests(params)
        if not 0 <= t < len(digests):
            raise JobExecutionError("bad_job", f"position {t} was not processed by this job")
        return digests[t]


def generated_tokens(params: dict, rows: np.ndarray) -> list[int]:
    """The generated tokens of a result (``token_out`` from the last prompt row on, until a zero row)."""
    p = len(params["prompt"])
    out: list[int] = []
    for t in range(p - 1, rows.shape[0]):
        raw = rows[t].tobytes()
        if lt.is_zero(raw):
            break
        out.append(lt.Row.decode(raw).token_out)
    return out


__all__ = ["LlmGenerate", "ModelCache", "ModelSource", "RunOutput", "generated_tokens", "params_key"]
