"""Canonical array encoding, result hashes and result Merkle roots: re-exported from
:mod:`state.kinds.encoding`, where the consensus rules of job kinds can import it (see ``docs/gpu.md``)."""

from __future__ import annotations

from state.kinds.encoding import (
    DEFAULT_MAX_BYTES,
    DTYPES,
    MAX_DIM,
    MAX_HEADER_BYTES,
    MAX_NDIM,
    ArrayError,
    array_hash,
    decode_array,
    decode_arrays,
    encode_array,
    encode_header,
    encoded_size,
    result_leaves,
    result_root,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DTYPES",
    "MAX_DIM",
    "MAX_HEADER_BYTES",
    "MAX_NDIM",
    "ArrayError",
    "array_hash",
    "decode_array",
    "decode_arrays",
    "encode_array",
    "encode_header",
    "encoded_size",
    "result_leaves",
    "result_root",
]
