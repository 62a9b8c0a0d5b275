"""``LlamaConfig``: the integer-only description of a Llama-architecture model.

Every field is an int (or a bool); the RMSNorm epsilon is a rational ``(num, den)``. ``to_map`` /
``from_map`` give the CBOR form used in a model manifest; ``from_map`` checks every bound and raises
:class:`LlmError` (reason ``llm_config``) on any defect, so a config read from the chain can never make a
verifier allocate without limit or overflow the fixed-point arithmetic of :mod:`state.llm.fixed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import AitbcError

FORMAT = "aitbc-llm-int8-v1"  # the integer model format and step semantics this package implements

MAX_VOCAB = 262_144
MAX_DIM = 8192  # also bounds the inner dimension of every matmul (see fixed.matmul_q8)
MAX_FFN = 8192
MAX_LAYERS = 128
MAX_HEADS = 128
MAX_HEAD_DIM = 256
MAX_CTX = 4096
MAX_CTX_X_HEAD_DIM = 65_536  # bounds one attention step's K/V witness: 2 x 4 B x max_ctx x head_dim <= 512 KiB
MAX_ROPE_BASE = 10**9
MAX_EPS_TERM = 1 << 32


class LlmError(AitbcError):
    """A model config, model file, weight slice or step that is malformed or out of bounds."""

    reason = "llm"


_KEYS = (
    "vocab",
    "dim",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "head_dim",
    "ffn_dim",
    "max_ctx",
    "rope_base",
    "norm_eps",
    "tied",
    "bos",
    "eos",
)


def _int(m: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = m[key]
    if type(v) is not int or not lo <= v <= hi:
        raise LlmError(f"config {key}={v!r} outside [{lo}, {hi}]", "llm_config")
    return v


@dataclass(frozen=True, slots=True)
class LlamaConfig:
    """Shape and constants of a Llama model (RMSNorm, RoPE on adjacent pairs, SwiGLU, GQA)."""

    vocab: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    max_ctx: int
    rope_base: int
    norm_eps_num: int
    norm_eps_den: int
    tied_embeddings: bool
    bos_id: int
    eos_id: int

    def __post_init__(self) -> None:
        self.validate()

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def group(self) -> int:
        """Query heads per key/value head."""
        return self.n_heads // self.n_kv_heads

    def validate(self) -> None:
        """Raise :class:`LlmError` (``llm_config``) unless every field is in bounds."""
        m = self.to_map()
        if set(m) != set(_KEYS):  # pragma: no cover - to_map is ours
            raise LlmError("config keys", "llm_config")
        _check_map(m)

    def to_map(self) -> dict[str, Any]:
        """CBOR-ready map (text keys, ints, a bool and the epsilon as ``[num, den]``)."""
        return {
            "vocab": self.vocab,
            "dim": self.dim,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "ffn_dim": self.ffn_dim,
            "max_ctx": self.max_ctx,
            "rope_base": self.rope_base,
            "norm_eps": [self.norm_eps_num, self.norm_eps_den],
            "tied": self.tied_embeddings,
            "bos": self.bos_id,
            "eos": self.eos_id,
        }

    @classmethod
    def from_map(cls, m: Any) -> LlamaConfig:
        """Strict inverse of :meth:`to_map`: exact key set, exact types, every bound checked."""
        if not isinstance(m, dict) or set(m) != set(_KEYS) or not all(type(k) is str for k in m):
            raise LlmError(f"config must be a map with keys {sorted(_KEYS)}", "llm_config")
        _check_map(m)
        eps = m["norm_eps"]
        return cls(
            vocab=m["vocab"],
            dim=m["dim"],
            n_layers=m["n_layers"],
            n_heads=m["n_heads"],
            n_kv_heads=m["n_kv_heads"],
            head_dim=m["head_dim"],
            ffn_dim=m["ffn_dim"],
            max_ctx=m["max_ctx"],
            rope_base=m["rope_base"],
            norm_eps_num=eps[0],
            norm_eps_den=eps[1],
            tied_embeddings=m["tied"],
            bos_id=m["bos"],
            eos_id=m["eos"],
        )


def _check_map(m: dict[str, Any]) -> None:
    vocab = _int(m, "vocab", 2, MAX_VOCAB)
    _int(m, "dim", 2, MAX_DIM)
    _int(m, "n_layers", 1, MAX_LAYERS)
    nh = _int(m, "n_heads", 1, MAX_HEADS)
    nkv = _int(m, "n_kv_heads", 1, MAX_HEADS)
    hd = _int(m, "head_dim", 2, MAX_HEAD_DIM)
    _int(m, "ffn_dim", 1, MAX_FFN)
    ctx = _int(m, "max_ctx", 2, MAX_CTX)
    _int(m, "rope_base", 2, MAX_ROPE_BASE)
    _int(m, "bos", 0, vocab - 1)
    _int(m, "eos", 0, vocab - 1)
    if nh % nkv:
        raise LlmError(f"n_heads {nh} is not a multiple of n_kv_heads {nkv}", "llm_config")
    if hd % 2:
        raise LlmError(f"head_dim {hd} must be even (RoPE rotates pairs)", "llm_config")
    if nh * hd > MAX_DIM:
        raise LlmError(f"n_heads * head_dim = {nh * hd} > {MAX_DIM}", "llm_config")
    if ctx * hd > MAX_CTX_X_HEAD_DIM:
        raise LlmError(f"max_ctx * head_dim = {ctx * hd} > {MAX_CTX_X_HEAD_DIM}", "llm_config")
    if type(m["tied"]) is not bool:
        raise LlmError("config tied must be a bool", "llm_config")
    eps = m["norm_eps"]
    if (
        not isinstance(eps, list | tuple)
        or len(eps) != 2
        or not all(type(x) is int and 1 <= x <= MAX_EPS_TERM for x in eps)
    ):
        raise LlmError(f"norm_eps must be [num, den] with 1 <= num, den <= 2**32, got {eps!r}", "llm_config")
