"""``llm-generate`` on this node: the model store of the executable kind, tokenizers, the miner's models.

* :class:`NodeModelSource` — what ``gpu.kinds.llm_generate`` loads models from: the chunks of a model
  this node has (pinned), read from the blob store, each checked against the chunk index (whose leaf
  hashes give the manifest's Merkle root), so a loaded file is exactly the registered one.
* :func:`tokenizer_from_section` / :class:`TokenizerCache` — the model's own BPE tokenizer and chat
  template, from the tokenizer section of its file (``gpu/llm/tokenizer.py``).
* :class:`MinerModels` — ``[miner] models = ["NAME|0xID=PRICE", …]``: the models this miner serves and its
  price per token for each; they are pinned at start (the node's own config needs no admin call) and the
  miner bids only on jobs of models whose every chunk is here.
* Token rows (:func:`job_tokens`) and the job parameters (:func:`llm_params`, :func:`temperature_ratio`)
  shared by the CLI, the miner and the OpenAI endpoint.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import trio

from rpc.node_api import LlmRequestError
from state.errors import AitbcError, InvariantError
from state.llm.config import FORMAT, LlamaConfig, LlmError
from state.market.models import Model, load_model

if TYPE_CHECKING:
    from .service import Node

log = logging.getLogger("aitbc.llm")

MAX_CONFIGS = 64  # parsed model configs kept
MAX_TOKENIZERS = 8
MAX_TOKENIZER_BYTES = 64 << 20
LLM_KIND = "llm-generate"
LLM_VERSION = 1
MAX_TEMP_TERM = 1 << 16


class LlmNodeError(LlmRequestError):
    """``unknown_model``, ``model_not_pinned``, ``model_unavailable``, ``unsupported_model_format``,
    ``tokenizer_unavailable``, ``bad_tokenizer``, ``bad_request``."""

    reason = "llm"


def parse_model_prices(items: list[str]) -> dict[str, int]:
    """``["smollm2=50", "0x…=20"]`` -> {model name or 0x-id: price per token in base units}."""
    out: dict[str, int] = {}
    for item in items:
        ref, sep, price = item.rpartition("=")
        ref, price = ref.strip(), price.strip()
        if not sep or not ref or not price.isdigit():
            raise AitbcError(f"miner.models: expected MODEL=BASE_UNITS_PER_TOKEN, got {item!r}")
        out[ref] = int(price)
    return out


# ------------------------------------------------------------------------------------------ model source


class NodeModelSource:
    """Models for ``gpu.kinds.llm_generate`` from this node's chain state and blob store."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._configs: OrderedDict[bytes, tuple[LlamaConfig, int] | None] = OrderedDict()
        self._lock = threading.Lock()

    def _model(self, model_id: bytes) -> Model | None:
        chain = self.node.chain
        if chain is None:
            raise InvariantError("node not opened")
        return load_model(chain.get_object, model_id)

    def model_config(self, model_id: bytes) -> tuple[LlamaConfig, int] | None:
        with self._lock:
            if model_id in self._configs:
                self._configs.move_to_end(model_id)
                return self._configs[model_id]
        m = self._model(model_id)
        info = None
        if m is not None and m.manifest["format"] == FORMAT:
            try:
                info = (LlamaConfig.from_map(m.manifest["arch"]), m.size)
            except LlmError:
                info = None
        if m is None:
            return None  # not cached: it may be registered later
        with self._lock:
            self._configs[model_id] = info
            while len(self._configs) > MAX_CONFIGS:
                self._configs.popitem(last=False)
        return info

    def _chunks(self, m: Model, first: int, stop: int) -> list[bytes]:
        from gpu.kinds.base import JobExecutionError

        svc, store = self.node.models, self.node.blobs
        if svc is None or store is None:
            raise InvariantError("node not opened")
        idx = svc.local_index(m)
        if idx is None:
            raise JobExecutionError("model_unavailable", f"model {m.name}: its chunk index is not on this node "
                                                         "(pin it: `aitbc-peer model pin`)")
        out = []
        for i in range(first, stop):
            data = store.get(idx.blob_ids[i])
            if data is None or hashlib.sha256(data).digest() != idx.blob_ids[i]:
                raise JobExecutionError("model_unavailable", f"model {m.name}: chunk {i} is not on this node "
                                                             "(pin it and wait until it is complete)")
            out.append(data)
        return out

    def model_file(self, model_id: bytes) -> bytes:
        """The whole model file from the local blob store (blocking). Every chunk is the blob the
        verified index names (its SHA-256), and the index's leaf hashes give the manifest's root."""
        from gpu.kinds.base import JobExecutionError

        m = self._model(model_id)
        if m is None:
            raise JobExecutionError("model_unavailable", f"model {model_id.hex()[:16]} is not registered")
        data = b"".join(self._chunks(m, 0, m.chunk_count))
        if len(data) != m.size:
            raise JobExecutionError("model_unavailable", f"model {m.name}: reassembled {len(data)} bytes, not {m.size}")
        return data

    def section(self, m: Model, offset: int, size: int) -> bytes:
        """Bytes ``[offset, offset + size)`` of a model file from the local store (blocking)."""
        if size <= 0:
            return b""
        cs = m.chunk_size
        first, stop = offset // cs, (offset + size - 1) // cs + 1
        blob = b"".join(self._chunks(m, first, stop))
        start = offset - first * cs
        return blob[start : start + size]


# ------------------------------------------------------------------------------------------ tokenizers


def tokenizer_from_section(data: bytes) -> Any:
    """The model's :class:`gpu.llm.tokenizer.BpeTokenizer` from its tokenizer section."""
    try:
        from gpu.llm.tokenizer import BpeTokenizer
    except ImportError as exc:
        raise LlmNodeError(f"no tokenizer support in this build ({exc}; install the 'llm' extra)",
                           "tokenizer_unavailable") from None
    try:
        return BpeTokenizer.from_section(data)
    except ImportError as exc:
        raise LlmNodeError(f"no tokenizer support in this build ({exc}; install the 'llm' extra)",
                           "tokenizer_unavailable") from None
    except Exception as exc:  # a section that is no tokenizer we know: the model is usable with token ids
        raise LlmNodeError(f"the model's tokenizer section is not a BPE tokenizer: {exc}", "bad_tokenizer") from None


class TokenizerCache:
    """Tokenizers of local models by id (LRU); built in a worker thread from the local chunks."""

    def __init__(self, source: NodeModelSource, max_entries: int = MAX_TOKENIZERS) -> None:
        self.source = source
        self.max_entries = max_entries
        self._cache: OrderedDict[bytes, Any] = OrderedDict()
        self._lock = trio.Lock()

    async def get(self, m: Model) -> Any:
        async with self._lock:
            tok = self._cache.get(m.model_id)
            if tok is not None:
                self._cache.move_to_end(m.model_id)
                return tok
            spec = m.manifest["tokenizer"]
            if spec["size"] > MAX_TOKENIZER_BYTES:
                raise LlmNodeError(f"the tokenizer section of {m.name} is too large", "bad_tokenizer")

            def build() -> Any:
                data = self.source.section(m, spec["offset"], spec["size"])
                if hashlib.sha256(data).digest() != spec["hash"]:
                    raise LlmNodeError(f"the tokenizer section of {m.name} does not match its hash", "bad_tokenizer")
                return tokenizer_from_section(data)

            tok = await trio.to_thread.run_sync(build)
            self._cache[m.model_id] = tok
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
            return tok


# ------------------------------------------------------------------------------------------ job params


def temperature_ratio(temperature: float | str) -> list[int]:
    """A temperature as the ``[num, den]`` the kind takes (terms in [1, 65536])."""
    try:
        f = Fraction(str(temperature)).limit_denominator(1000)
    except (ValueError, ZeroDivisionError):
        raise LlmNodeError(f"temperature {temperature!r} is not a number", "bad_request") from None
    if f <= 0 or f.numerator > MAX_TEMP_TERM:
        raise LlmNodeError(f"temperature must be in (0, {MAX_TEMP_TERM}]", "bad_request")
    return [f.numerator, f.denominator]


def seed_bytes(seed: Any) -> bytes:
    """32 sampling-seed bytes from an int, a 0x-hex string of 32 bytes, any text, or None (random)."""
    if seed is None:
        return secrets.token_bytes(32)
    if isinstance(seed, str) and seed.startswith("0x") and len(seed) == 66:
        try:
            return bytes.fromhex(seed[2:])
        except ValueError:
            pass
    return hashlib.sha256(b"aitbc/llm-seed\x00" + str(seed).encode()).digest()


def llm_params(model_id: bytes, prompt: list[int], max_new_tokens: int, *, temperature: Any = None,
               top_k: int | None = None, seed: Any = None, stop: list[int] | None = None) -> dict:
    """The ``llm-generate`` params: greedy without a temperature (or 0), else seeded sampling."""
    if temperature is None or float(temperature) == 0:
        sampling: dict = {"mode": "greedy"}
    else:
        from state.llm.steps import TOPK

        k = TOPK if top_k is None else int(top_k)
        if not 1 <= k <= TOPK:
            raise LlmNodeError(f"top_k must be in [1, {TOPK}]", "bad_request")
        sampling = {"mode": "sample", "seed": seed_bytes(seed), "temperature": temperature_ratio(temperature),
                    "top_k": k}
    params: dict = {"model": model_id, "prompt": list(prompt), "max_new_tokens": int(max_new_tokens),
                    "sampling": sampling}
    if stop:
        params["stop"] = sorted(set(stop))
    return params


def job_tokens(params: dict, rows: Any) -> tuple[list[int], str]:
    """(generated tokens, finish reason ``stop`` | ``length``) of an llm-generate result."""
    from gpu.kinds.llm_generate import generated_tokens

    toks = generated_tokens(params, rows)
    stop = set(params.get("stop", ()))
    reason = "stop" if toks and toks[-1] in stop else "length"
    return toks, reason


# ------------------------------------------------------------------------------------------ miner models


@dataclass
class MinerModel:
    ref: str  # as configured: a name or a 0x-id
    price: int  # base units per token
    model_id: bytes | None = None
    name: str = ""
    ready: bool = False  # pinned and every chunk present


class MinerModels:
    """The models this miner serves: resolved on chain, pinned, and ready once complete on this node."""

    def __init__(self, node: Node, prices: dict[str, int]) -> None:
        self.node = node
        self.models = [MinerModel(ref, price) for ref, price in prices.items()]
        self._by_id: dict[bytes, MinerModel] = {}

    def __bool__(self) -> bool:
        return bool(self.models)

    @property
    def max_price(self) -> int:
        return max((m.price for m in self.models), default=0)

    def price(self, model_id: Any) -> int | None:
        """The price per token for a job of ``model_id`` when that model is ready here, else None."""
        m = self._by_id.get(model_id) if isinstance(model_id, bytes) else None
        return m.price if m is not None and m.ready else None

    async def refresh(self) -> None:
        """Resolve configured models registered meanwhile, pin them, and mark complete ones ready."""
        svc = self.node.models
        if svc is None:
            raise InvariantError("node not opened")
        for mm in self.models:
            if mm.ready:
                continue
            m = svc.find(mm.ref)
            if m is None:
                continue
            if mm.model_id is None:
                mm.model_id, mm.name = m.model_id, m.name
                self._by_id[m.model_id] = mm
                if m.manifest["format"] != FORMAT:
                    log.warning("miner.models: %s has format %s, not %s: not served", m.name, m.manifest["format"],
                                FORMAT)
                    continue
                log.info("miner: serving model %s (0x%s) at %d per token; pinning it", m.name,
                         m.model_id.hex()[:16], mm.price)
            if m.manifest["format"] != FORMAT:
                continue
            if m.model_id not in svc.pins.pins:
                try:
                    svc.pin(m)
                except AitbcError as exc:
                    log.warning("miner: cannot pin model %s: %s", m.name, exc)
                    continue
            st = await trio.to_thread.run_sync(svc.status, m)
            if st["complete"]:
                mm.ready = True
                log.info("miner: model %s is complete here (%d chunks): bidding on its jobs", m.name, st["chunks"])


__all__ = [
    "LLM_KIND",
    "LlmNodeError",
    "MinerModels",
    "NodeModelSource",
    "TokenizerCache",
    "job_tokens",
    "llm_params",
    "parse_model_prices",
    "seed_bytes",
    "temperature_ratio",
    "tokenizer_from_section",
]
