"""The canonical model file of format ``aitbc-llm-int8-v1`` and verified slices of it.

A model file is the WEIGHTS section (layout fixed by the config alone, no header, no padding) followed
by the TOKENIZER section (opaque bytes; canonical CBOR written by the importer) at offset
``weights_size(cfg)``. Tensors, in this order:

* ``tok_embd``                       q8r  [vocab, dim]
* per layer ``l``: ``blk.l.attn_norm`` i32 [dim]; ``blk.l.attn_q`` q8r [n_heads*head_dim, dim];
  ``blk.l.attn_k`` / ``blk.l.attn_v`` q8r [n_kv_heads*head_dim, dim]; ``blk.l.attn_output`` q8r
  [dim, n_heads*head_dim]; ``blk.l.ffn_norm`` i32 [dim]; ``blk.l.ffn_gate`` / ``blk.l.ffn_up`` q8r
  [ffn_dim, dim]; ``blk.l.ffn_down`` q8r [dim, ffn_dim]
* ``output_norm``                    i32  [dim]
* ``output`` q8r [vocab, dim] only when the embeddings are not tied.

``q8r`` is a row-quantised matrix stored row-major, one row = int32 little-endian row scale ``m``, then
``ceil(in / GROUP)`` uint8 group sub-scales ``u``, then ``in`` int8 weights ``q`` (``|q| <= 127``); weight
``k`` of the row is ``q[k] * u[k // GROUP] * m / 2**SCALE_FRAC`` with ``0 <= m <= 2**28``. The integer
``w = q * u`` (``|w| <= 127 * 255 < 2**15``) is what the matmul multiplies: a per-group resolution (as
fine as the source GGUF's 32-blocks) at the cost of one byte per 32 weights.
``i32`` is a vector of little-endian int32 norm gains in Q``GAIN_FRAC`` (``|gain| < 2**31``). Keeping a row's scale next to
its weights makes any block of rows one contiguous byte range, so one Merkle-proven run of chunks carries
everything a step needs.

The file commitment is ``chunk_root(file) = merkle_root(file split into CHUNK_SIZE-byte chunks)``
(:func:`state.types.merkle_root`, RFC 6962; the last chunk may be short).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..merkle import verify_merkle_proof
from ..types import merkle_root
from .config import LlamaConfig, LlmError

CHUNK_SIZE = 65536
SCALE_FRAC = 36  # q8r row scale m: weight = q * u * m / 2**36
MAX_SCALE = 1 << 28
GROUP = 32  # weights per uint8 sub-scale
GAIN_FRAC = 16  # i32 norm gains are Q16
MAX_GAIN = (1 << 31) - 1

Q8R = "q8r"
I32 = "i32"


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One tensor of the weights section. ``shape`` is ``(rows, in)`` for q8r, ``(n,)`` for i32."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    @property
    def rows(self) -> int:
        """Addressable rows: the matrix rows for q8r, one row (the whole vector) for i32."""
        return self.shape[0] if self.dtype == Q8R else 1

    @property
    def row_bytes(self) -> int:
        return q8_row_bytes(self.shape[1]) if self.dtype == Q8R else 4 * self.shape[0]


def q8_row_bytes(n_in: int) -> int:
    """Bytes of one q8r row with ``n_in`` weights: scale, sub-scales, weights."""
    return 4 + -(-n_in // GROUP) + n_in


def tensor_shapes(cfg: LlamaConfig) -> list[tuple[str, str, tuple[int, ...]]]:
    """``(name, dtype, shape)`` of every tensor in file order."""
    d, q, kv, f = cfg.dim, cfg.q_dim, cfg.kv_dim, cfg.ffn_dim
    out: list[tuple[str, str, tuple[int, ...]]] = [("tok_embd", Q8R, (cfg.vocab, d))]
    for layer in range(cfg.n_layers):
        p = f"blk.{layer}."
        out += [
            (p + "attn_norm", I32, (d,)),
            (p + "attn_q", Q8R, (q, d)),
            (p + "attn_k", Q8R, (kv, d)),
            (p + "attn_v", Q8R, (kv, d)),
            (p + "attn_output", Q8R, (d, q)),
            (p + "ffn_norm", I32, (d,)),
            (p + "ffn_gate", Q8R, (f, d)),
            (p + "ffn_up", Q8R, (f, d)),
            (p + "ffn_down", Q8R, (d, f)),
        ]
    out.append(("output_norm", I32, (d,)))
    if not cfg.tied_embeddings:
        out.append(("output", Q8R, (cfg.vocab, d)))
    return out


@lru_cache(maxsize=16)
def _layout(cfg: LlamaConfig) -> tuple[TensorSpec, ...]:
    specs = []
    off = 0
    for name, dtype, shape in tensor_shapes(cfg):
        n = shape[0] * q8_row_bytes(shape[1]) if dtype == Q8R else 4 * shape[0]
        specs.append(TensorSpec(name, dtype, shape, off, n))
        off += n
    return tuple(specs)


def layout(cfg: LlamaConfig) -> list[TensorSpec]:
    """The weights section's tensors with their byte offsets, in file order."""
    return list(_layout(cfg))


@lru_cache(maxsize=16)
def _by_name(cfg: LlamaConfig) -> dict[str, TensorSpec]:
    return {s.name: s for s in _layout(cfg)}


def tensor_spec(cfg: LlamaConfig, name: str) -> TensorSpec:
    """The spec of tensor ``name``; ``output`` resolves to ``tok_embd`` when embeddings are tied."""
    if name == "output" and cfg.tied_embeddings:
        name = "tok_embd"
    spec = _by_name(cfg).get(name)
    if spec is None:
        raise LlmError(f"no tensor {name!r} in this model", "llm_tensor")
    return spec


def weights_size(cfg: LlamaConfig) -> int:
    """Bytes of the weights section (= offset of the tokenizer section)."""
    last = _layout(cfg)[-1]
    return last.offset + last.nbytes


def tensor_rows_range(cfg: LlamaConfig, name: str, row0: int, row1: int) -> tuple[int, int]:
    """``(offset, length)`` in the file of rows ``[row0, row1)`` of tensor ``name``."""
    spec = tensor_spec(cfg, name)
    if type(row0) is not int or type(row1) is not int or not 0 <= row0 < row1 <= spec.rows:
        raise LlmError(f"rows [{row0}, {row1}) outside tensor {name} with {spec.rows} rows", "llm_rows")
    return spec.offset + row0 * spec.row_bytes, (row1 - row0) * spec.row_bytes


def chunks_covering(offset: int, length: int) -> range:
    """Indices of the CHUNK_SIZE chunks that hold bytes ``[offset, offset + length)``."""
    if offset < 0 or length <= 0:
        raise LlmError(f"bad byte range ({offset}, {length})", "llm_rows")
    return range(offset // CHUNK_SIZE, (offset + length - 1) // CHUNK_SIZE + 1)


def split_chunks(file_bytes: bytes) -> list[bytes]:
    """The file's CHUNK_SIZE chunks (the last one may be short)."""
    mv = memoryview(file_bytes)
    return [bytes(mv[i : i + CHUNK_SIZE]) for i in range(0, len(file_bytes), CHUNK_SIZE)]


def chunk_count(file_size: int) -> int:
    return (file_size + CHUNK_SIZE - 1) // CHUNK_SIZE


def chunk_root(file_bytes: bytes) -> bytes:
    """Merkle root (RFC 6962, :func:`state.types.merkle_root`) over the file's CHUNK_SIZE chunks."""
    return merkle_root(split_chunks(file_bytes))


# --------------------------------------------------------------------------------------------------
# Rows of a tensor in memory


@dataclass(frozen=True, slots=True)
class WRows:
    """Rows ``[row0, row0 + n)`` of tensor ``name``: ``scale`` int64 [n] (Q36) and ``q`` int16 [n, in] the
    integer weights ``q8 * u`` for q8r; for i32 ``q`` is the int64 gain vector and ``scale`` is empty."""

    name: str
    row0: int
    scale: np.ndarray
    q: np.ndarray

    @property
    def n(self) -> int:
        return int(self.q.shape[0]) if self.scale.size else 1


def decode_rows(cfg: LlamaConfig, name: str, row0: int, row1: int, data: bytes) -> WRows:
    """Parse the bytes of rows ``[row0, row1)`` of ``name`` (as laid out in the file); checks bounds."""
    spec = tensor_spec(cfg, name)
    _, length = tensor_rows_range(cfg, name, row0, row1)
    if len(data) != length:
        raise LlmError(f"{name} rows [{row0}, {row1}) need {length} bytes, got {len(data)}", "llm_rows")
    if spec.dtype == I32:
        g = np.frombuffer(data, dtype="<i4").astype(np.int64)
        return WRows(spec.name, 0, np.zeros(0, np.int64), g)
    raw = np.frombuffer(data, dtype=np.uint8).reshape(row1 - row0, spec.row_bytes)
    scale = raw[:, :4].copy().view("<i4").reshape(-1).astype(np.int64)
    if scale.min() < 0 or scale.max() > MAX_SCALE:
        raise LlmError(f"{name}: row scale outside [0, 2**28]", "llm_weights")
    k = spec.shape[1]
    ng = -(-k // GROUP)
    sub = raw[:, 4 : 4 + ng]
    q8 = raw[:, 4 + ng :].view(np.int8)
    if q8.size and int(q8.min()) < -127:
        raise LlmError(f"{name}: int8 weight -128", "llm_weights")
    w = q8.astype(np.int16) * np.repeat(sub, GROUP, axis=1)[:, :k].astype(np.int16)
    return WRows(spec.name, row0, scale, w)


def encode_q8r(scale: np.ndarray, sub: np.ndarray, q: np.ndarray) -> bytes:
    """Bytes of a q8r tensor from row scales [n], uint8 sub-scales [n, ceil(in/32)] and int8 weights [n, in]."""
    n, k = q.shape
    ng = -(-k // GROUP)
    if scale.shape != (n,) or sub.shape != (n, ng) or q.dtype != np.int8 or sub.dtype != np.uint8:
        raise LlmError("q8r: scale/sub-scale/weight shape or dtype mismatch", "llm_weights")
    sc = np.asarray(scale, dtype=np.int64)
    if sc.min() < 0 or sc.max() > MAX_SCALE or (q.size and int(q.min()) < -127):
        raise LlmError("q8r: row scale outside [0, 2**28] or an int8 weight -128", "llm_weights")
    buf = np.empty((n, q8_row_bytes(k)), dtype=np.uint8)
    buf[:, :4] = sc.astype("<i4").view(np.uint8).reshape(n, 4)
    buf[:, 4 : 4 + ng] = sub
    buf[:, 4 + ng :] = q.view(np.uint8)
    return buf.tobytes()


def encode_i32(gain: np.ndarray) -> bytes:
    """Bytes of an i32 norm-gain vector (Q16, any int32)."""
    g = np.asarray(gain, dtype=np.int64)
    if g.min() < -MAX_GAIN or g.max() > MAX_GAIN:
        raise LlmError("norm gain outside the int32 range", "llm_weights")
    return g.astype("<i4").tobytes()


class ModelWeights:
    """The weights section of a model file, parsed once; hands out :class:`WRows` views."""

    def __init__(self, cfg: LlamaConfig, data: bytes) -> None:
        if len(data) < weights_size(cfg):
            raise LlmError(f"model file has {len(data)} bytes < weights size {weights_size(cfg)}", "llm_file")
        self.cfg = cfg
        self._data = data
        self._full: dict[str, WRows] = {}
        for spec in _layout(cfg):
            self._full[spec.name] = decode_rows(
                cfg, spec.name, 0, spec.rows, data[spec.offset : spec.offset + spec.nbytes]
            )

    def tensor(self, name: str) -> WRows:
        """The whole tensor ``name`` (``output`` is ``tok_embd`` when tied)."""
        return self._full[tensor_spec(self.cfg, name).name]

    def rows(self, name: str, row0: int, row1: int) -> WRows:
        """Rows ``[row0, row1)`` of ``name`` as views (no copy)."""
        spec = tensor_spec(self.cfg, name)
        tensor_rows_range(self.cfg, name, row0, row1)
        full = self._full[spec.name]
        if spec.dtype == I32:
            return full
        return WRows(spec.name, row0, full.scale[row0:row1], full.q[row0:row1])


# --------------------------------------------------------------------------------------------------
# Verified slices


@dataclass(frozen=True, slots=True)
class WeightSlice:
    """Rows ``[row0, row1)`` of tensor ``name`` with the chunks that hold them and their Merkle proofs.

    ``chunks[i]`` is chunk ``first_chunk + i`` of the model file, ``proofs[i]`` its inclusion proof.
    """

    name: str
    row0: int
    row1: int
    first_chunk: int
    chunks: tuple[bytes, ...]
    proofs: tuple[tuple[bytes, ...], ...]

    def witness_bytes(self) -> int:
        return sum(len(c) for c in self.chunks) + 32 * sum(len(p) for p in self.proofs)

    def verify(self, cfg: LlamaConfig, root: bytes, file_size: int) -> WRows:
        """Check every chunk against ``root`` (a file of ``file_size`` bytes) and return the rows.

        Raises :class:`LlmError` (``llm_slice``) on any mismatch.
        """
        off, length = tensor_rows_range(cfg, self.name, self.row0, self.row1)
        if off + length > file_size:
            raise LlmError("slice beyond the end of the file", "llm_slice")
        need = chunks_covering(off, length)
        count = chunk_count(file_size)
        if self.first_chunk != need.start or len(self.chunks) != len(need) or len(self.proofs) != len(need):
            raise LlmError(f"slice must carry chunks {need.start}..{need.stop - 1}", "llm_slice")
        for i, (chunk, proof) in enumerate(zip(self.chunks, self.proofs, strict=True)):
            idx = need.start + i
            want = min(CHUNK_SIZE, file_size - idx * CHUNK_SIZE)
            if type(chunk) is not bytes or len(chunk) != want:
                raise LlmError(f"chunk {idx} has the wrong length", "llm_slice")
            if not verify_merkle_proof(root, chunk, idx, count, list(proof)):
                raise LlmError(f"chunk {idx} does not verify against the model root", "llm_slice")
        blob = b"".join(self.chunks)
        start = off - need.start * CHUNK_SIZE
        return decode_rows(cfg, self.name, self.row0, self.row1, blob[start : start + length])


def make_weight_slice(
    cfg: LlamaConfig, file_bytes: bytes, name: str, row0: int, row1: int, chunks: list[bytes] | None = None
) -> WeightSlice:
    """Build the :class:`WeightSlice` for rows ``[row0, row1)`` of ``name`` (prover side).

    ``chunks`` may pass a precomputed :func:`split_chunks` of the file to avoid re-splitting it.
    """
    from ..merkle import merkle_proof

    off, length = tensor_rows_range(cfg, name, row0, row1)
    need = chunks_covering(off, length)
    all_chunks = chunks if chunks is not None else split_chunks(file_bytes)
    return WeightSlice(
        name=tensor_spec(cfg, name).name,
        row0=row0,
        row1=row1,
        first_chunk=need.start,
        chunks=tuple(all_chunks[i] for i in need),
        proofs=tuple(tuple(merkle_proof(all_chunks, i)) for i in need),
    )
