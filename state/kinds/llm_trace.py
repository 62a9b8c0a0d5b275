"""The result of an ``llm-generate`` job: token rows and their per-position step commitments.

Format ``ROWS_FORMAT`` (version :data:`ROWS_VERSION`), defined here and nowhere else.

**Result**: a ``uint8`` matrix of shape ``(n_rows, ROW_BYTES)`` with ``n_rows = len(prompt) +
max_new_tokens - 1`` (fixed by the params: one row per position that can be processed; the last
generated token is only sampled, never fed back). Row ``t`` (its leaf of ``result_root``) is, little
endian::

    t (u32) | token_in (i32) | token_out (i32) | step_root_t (32 bytes)

* ``token_in``: the token at position ``t``: ``prompt[t]`` for ``t < len(prompt)``, else the
  ``token_out`` of row ``t - 1``;
* ``token_out``: ``-1`` for ``t < len(prompt) - 1``, else the token sampled at position ``t`` (the
  generated tokens are the ``token_out`` fields from row ``len(prompt) - 1`` on);
* ``step_root_t``: ``merkle_root`` (RFC 6962, :func:`state.types.merkle_root`) of the leaves of the
  steps of position ``t`` in :func:`position_steps` order (the position-``t`` run of
  :func:`state.llm.generate.step_order`); leaf = ``codec.encode([token, layer, op, block,
  sha256(output bytes)])`` (:func:`state.llm.generate.trace_leaf`).

After a token of ``stop`` is generated at position ``t``, rows ``t + 1 ..`` are all zero bytes (a
processed row is never all zero: its step root is a hash).

Disputes (``state/market/llm_disputes.py``) prove rows against ``result_root`` and step digests
against a row's ``step_root``; :func:`row_fault` is the structural check of a row and its predecessor.
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..llm.config import LlamaConfig
from ..llm.steps import LAYER_OPS, Op, StepId, blocks
from ..merkle import merkle_multiproof
from ..types import merkle_root

ROWS_FORMAT = "aitbc-llm-rows-v1"
ROWS_VERSION = 1
ROW_BYTES = 44
ZERO_ROW = bytes(ROW_BYTES)
NO_TOKEN = -1
_ROW = struct.Struct("<Iii32s")
_LE_I4 = np.dtype("<i4")


@dataclass(frozen=True, slots=True)
class Row:
    """One token row. A zero row (all 44 bytes zero) is a position not processed (after a stop)."""

    t: int
    token_in: int
    token_out: int
    step_root: bytes

    def encode(self) -> bytes:
        return _ROW.pack(self.t, self.token_in, self.token_out, self.step_root)

    @classmethod
    def decode(cls, raw: bytes) -> Row:
        """Parse a 44-byte row (raises ``ValueError`` on another length)."""
        if type(raw) is not bytes or len(raw) != ROW_BYTES:
            raise ValueError(f"a token row is {ROW_BYTES} bytes")
        t, tin, tout, root = _ROW.unpack(raw)
        return cls(t, tin, tout, root)


def is_zero(raw: bytes) -> bool:
    return raw == ZERO_ROW


def n_rows(n_prompt: int, max_new_tokens: int) -> int:
    """Rows of the result: positions ``0 .. n_prompt + max_new_tokens - 2``."""
    return n_prompt + max_new_tokens - 1


# --------------------------------------------------------------------------------------------------
# The steps of one position


@lru_cache(maxsize=64)
def _layer_layout(cfg: LlamaConfig) -> tuple[dict[int, int], int, int]:
    """(offset of each op's first block within a layer, steps per layer, LOGITS blocks)."""
    off: dict[int, int] = {}
    n = 0
    for op in LAYER_OPS:
        off[op] = n
        n += len(blocks(cfg, op))
    return off, n, len(blocks(cfg, Op.LOGITS))


def has_head(n_prompt: int, t: int) -> bool:
    """Whether position ``t`` runs the LM head (FINAL_NORM, LOGITS, SAMPLE): from ``n_prompt - 1`` on."""
    return t >= n_prompt - 1


def step_count(cfg: LlamaConfig, n_prompt: int, t: int) -> int:
    """Number of steps (leaves of ``step_root_t``) of position ``t``."""
    _, per_layer, n_logits = _layer_layout(cfg)
    return 1 + cfg.n_layers * per_layer + ((2 + n_logits) if has_head(n_prompt, t) else 0)


def max_step_count(cfg: LlamaConfig) -> int:
    """Steps of a position that runs the LM head (the most any position has)."""
    _, per_layer, n_logits = _layer_layout(cfg)
    return 1 + cfg.n_layers * per_layer + 2 + n_logits


def step_index(cfg: LlamaConfig, n_prompt: int, step: StepId) -> int | None:
    """Index of ``step`` among the steps of its position (:func:`position_steps`), or None when the
    position has no such step. ``step`` must be a valid step of ``cfg``."""
    off, per_layer, n_logits = _layer_layout(cfg)
    op, t = int(step.op), step.token
    if op == Op.EMBED:
        return 0
    if op in off:
        return 1 + step.layer * per_layer + off[op] + step.block
    if not has_head(n_prompt, t):
        return None
    base = 1 + cfg.n_layers * per_layer
    if op == Op.FINAL_NORM:
        return base
    if op == Op.LOGITS:
        return base + 1 + step.block
    return base + 1 + n_logits  # SAMPLE


@lru_cache(maxsize=64)
def _position_layout(cfg: LlamaConfig, head: bool) -> tuple[tuple[tuple[int, int, int], ...], tuple[bytes, ...]]:
    """``(layer, op, block)`` of the steps of a position in leaf order (``op`` an :class:`Op`), and the CBOR
    bytes of those three fields (the part of :func:`step_leaf` that does not depend on the position)."""
    out = [(0, Op.EMBED, 0)]
    for ly in range(cfg.n_layers):
        for op in LAYER_OPS:
            out.extend((ly, op, b) for b in range(len(blocks(cfg, op))))
    if head:
        out.append((0, Op.FINAL_NORM, 0))
        out.extend((0, Op.LOGITS, c) for c in range(len(blocks(cfg, Op.LOGITS))))
        out.append((0, Op.SAMPLE, 0))
    mid = tuple(_uint_head(0, ly) + _uint_head(0, int(op)) + _uint_head(0, b) for ly, op, b in out)
    return tuple(out), mid


def position_steps(cfg: LlamaConfig, n_prompt: int, t: int) -> list[StepId]:
    """The steps of position ``t`` in leaf order (the position-``t`` run of ``step_order``)."""
    return [StepId(t, ly, op, b) for ly, op, b in _position_layout(cfg, has_head(n_prompt, t))[0]]


# --------------------------------------------------------------------------------------------------
# Leaves


def _uint_head(major: int, v: int) -> bytes:
    m = major << 5
    if v < 24:
        return bytes([m | v])
    if v < 256:
        return bytes([m | 24, v])
    if v < 65536:
        return bytes([m | 25]) + v.to_bytes(2, "big")
    if v < 1 << 32:
        return bytes([m | 26]) + v.to_bytes(4, "big")
    return bytes([m | 27]) + v.to_bytes(8, "big")


def step_leaf(step: StepId, digest: bytes) -> bytes:
    """``codec.encode([token, layer, op, block, digest])`` (canonical CBOR, built directly: this is
    :func:`state.llm.generate.trace_leaf` given the output's digest; the tests check they agree)."""
    return (
        b"\x85"
        + _uint_head(0, step.token)
        + _uint_head(0, step.layer)
        + _uint_head(0, int(step.op))
        + _uint_head(0, step.block)
        + _uint_head(2, len(digest))
        + digest
    )


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def output_digest(out: bytes) -> bytes:
    """The digest of a step output (its int32 little-endian bytes)."""
    return hashlib.sha256(out).digest()


def position_leaves(cfg: LlamaConfig, n_prompt: int, t: int, digests: list[bytes]) -> list[bytes]:
    """The :func:`step_leaf` of each step of position ``t`` (:func:`position_steps`) and its digest."""
    mids = _position_layout(cfg, has_head(n_prompt, t))[1]
    if len(digests) != len(mids):
        raise ValueError(f"position {t} has {len(mids)} steps, got {len(digests)} digests")
    head = b"\x85" + _uint_head(0, t)
    d32 = _uint_head(2, 32)
    return [
        head + m + (d32 if len(d) == 32 else _uint_head(2, len(d))) + d for m, d in zip(mids, digests, strict=True)
    ]


def step_root(cfg: LlamaConfig, n_prompt: int, t: int, digests: list[bytes]) -> bytes:
    """``step_root_t`` of the step output ``digests`` of position ``t`` (in leaf order)."""
    return merkle_root(position_leaves(cfg, n_prompt, t, digests))


def step_multiproof(cfg: LlamaConfig, n_prompt: int, t: int, digests: list[bytes], indices: list[int]) -> list[bytes]:
    """Prover side: the multiproof of the leaves ``indices`` of position ``t`` against its step root."""
    return merkle_multiproof([leaf_hash(x) for x in position_leaves(cfg, n_prompt, t, digests)], indices)


# --------------------------------------------------------------------------------------------------
# Rows from a run (miner side; also the golden vectors and the tests)


def position_digests(trace: Any, t: int) -> list[bytes]:
    """The output digests of position ``t``'s steps from a :class:`state.llm.generate.Trace`."""
    outs = trace.outputs
    sha = hashlib.sha256
    out = []
    for arr in [outs[s] for s in position_steps(trace.cfg, trace.n_prompt, t)]:
        if type(arr) is not np.ndarray or arr.dtype != _LE_I4 or not arr.flags.c_contiguous:  # else: its buffer
            arr = np.ascontiguousarray(arr, dtype="<i4").tobytes()
        out.append(sha(arr).digest())
    return out


def result_rows(
    trace: Any, prompt: list[int], max_new_tokens: int, tokens: list[int], digests: list[list[bytes]] | None = None
) -> np.ndarray:
    """The result matrix of a run: ``generate(...)`` returned ``(tokens, trace)``. ``digests`` (the
    :func:`position_digests` of every position, when the caller keeps them anyway) saves hashing twice."""
    p = len(prompt)
    rows = np.zeros((n_rows(p, max_new_tokens), ROW_BYTES), dtype=np.uint8)
    for t in range(trace.n_positions):
        tin = prompt[t] if t < p else tokens[t - p]
        tout = tokens[t - p + 1] if t >= p - 1 else NO_TOKEN
        dig = digests[t] if digests is not None else position_digests(trace, t)
        raw = Row(t, tin, tout, step_root(trace.cfg, p, t, dig)).encode()
        rows[t] = np.frombuffer(raw, dtype=np.uint8)
    return rows


# --------------------------------------------------------------------------------------------------
# Structural check of a row


def row_fault(
    cfg: LlamaConfig, prompt: list[int], stop: list[int], t: int, raw: bytes, prev: bytes | None
) -> str | None:
    """What is wrong with row ``t`` (``raw``) given row ``t - 1`` (``prev``, None for ``t == 0``), as
    a stable code, or None when the pair is consistent. Both rows are the miner's (proven against its
    ``result_root``), so any fault is the miner's:

    * ``unprocessed_prompt``: a zero row at a prompt position;
    * ``stopped_early``: a zero row after a processed generated row whose token is no stop token;
    * ``bad_row``: a wrong position field, a token outside the vocabulary, a prompt position with a
      token_out, a generated position without one, a gap (non-zero row after a zero row);
    * ``wrong_prompt``: a prompt row whose token_in is not the prompt's;
    * ``inconsistent_tokens``: a generated row whose token_in is not the previous row's token_out;
    * ``generated_after_stop``: a non-zero row after a stop token.

    A zero row after a zero row or after a stop token is consistent (None).
    """
    p = len(prompt)
    if is_zero(raw):
        if t < p:
            return "unprocessed_prompt"
        if prev is None or is_zero(prev):
            return None
        pr = Row.decode(prev)
        if pr.token_out in stop:
            return None
        return "stopped_early"
    r = Row.decode(raw)
    if r.t != t or not 0 <= r.token_in < cfg.vocab:
        return "bad_row"
    if t < p and r.token_in != prompt[t]:
        return "wrong_prompt"
    if t < p - 1:
        if r.token_out != NO_TOKEN:
            return "bad_row"
    elif not 0 <= r.token_out < cfg.vocab:
        return "bad_row"
    if t == 0:
        return None
    if prev is None or is_zero(prev):
        return "bad_row"
    pr = Row.decode(prev)
    if pr.t != t - 1:
        return "bad_row"
    if t >= p:
        if pr.token_out in stop:
            return "generated_after_stop"
        if r.token_in != pr.token_out:
            return "inconsistent_tokens"
    return None
