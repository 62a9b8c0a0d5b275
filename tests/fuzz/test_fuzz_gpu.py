"""Fuzzing ``gpu/encoding.py``: the canonical array encoding of job inputs and results.

Properties, for random bytes, mutated encodings of every dtype and shape, and headers claiming any
shape:

- ``decode_array`` / ``decode_arrays`` raise nothing but :class:`ArrayError`;
- bounded: nothing is allocated before the size bound is checked (an accepted array holds at most
  ``max_bytes`` bytes, and a claim beyond the input is refused without allocating it);
- what they accept re-encodes to exactly the input (``encode_array``), so the result hash is unique.

Also the decoding of job inputs by the job kinds (``MatmulU32.operands``, ``MlpF32.inputs``), which must
turn a bad input into :class:`JobParamError` (a challenge re-checks a leaf from it on chain).

Known bug (strict xfail in the corpus replay, see fuzzlib.KNOWN_BUGS): a zero-size array whose shape
numpy cannot represent raises a plain ``ValueError``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from fuzzlib import TOLERATE_KNOWN, corpus_params, fuzz_settings, mutated, run, seeds
from hypothesis import given
from hypothesis import strategies as st

from gpu.encoding import DTYPES, MAX_NDIM, ArrayError, decode_array, decode_arrays, encode_array, encoded_size
from gpu.kinds import JobParamError, get_kind
from state import codec

AREA = "gpu"
SEEDS = seeds(AREA)
MAX_BYTES = 1 << 16


def _known_bug(exc: BaseException) -> bool:
    """The known bug: numpy refusing the shape of a zero-size array (ValueError, not ArrayError)."""
    msg = str(exc)
    return type(exc) is ValueError and (
        "Maximum allowed dimension exceeded" in msg
        or "array is too big" in msg
        or "cannot reshape array of size 0" in msg
    )


def _decode(fn, *args, tolerate_known: bool):
    try:
        return fn(*args)
    except ArrayError:
        return None
    except ValueError as exc:
        if tolerate_known and _known_bug(exc):
            return None
        raise


def check(data: bytes, tolerate_known: bool = False) -> bool:
    """True if ``data`` decodes as one array (round trip and bound checked)."""
    arrays = _decode(decode_arrays, data, 2, MAX_BYTES, tolerate_known=tolerate_known)
    if arrays is not None:
        assert len(arrays) == 2
        assert b"".join(encode_array(a) for a in arrays) == data
    arr = _decode(decode_array, data, MAX_BYTES, tolerate_known=tolerate_known)
    if arr is None:
        return False
    assert arr.nbytes <= MAX_BYTES and arr.ndim <= MAX_NDIM and arr.dtype.name in DTYPES
    assert encode_array(arr) == data, "a non-canonical array encoding was accepted"
    assert len(data) == encoded_size(arr.dtype.name, arr.shape)
    return True


@pytest.mark.parametrize(("kind", "path"), corpus_params(AREA))
def test_corpus(kind: str, path) -> None:
    data = path.read_bytes()
    accepted = check(data)
    if path.name.startswith("valid-") and "two-arrays" not in path.name:
        assert accepted, f"{path.name}: an encode_array output is refused"
    check_job_inputs(data)


@fuzz_settings(scale=1.0)
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    run(AREA, "", data, check, TOLERATE_KNOWN)


@fuzz_settings(scale=2.0)
@given(mutated(SEEDS))
def test_mutated(data: bytes) -> None:
    run(AREA, "", data, check, TOLERATE_KNOWN)


dims = st.one_of(
    st.integers(0, 6), st.sampled_from([0, 1, 255, 2**16, 2**31, 2**32, 2**62, 2**63 - 1, 2**64 - 1])
)


@fuzz_settings(scale=2.0)
@given(
    st.one_of(st.sampled_from(sorted(DTYPES)), st.text(max_size=10)),
    st.lists(dims, max_size=MAX_NDIM + 2),
    st.integers(0, 64),
)
def test_any_header(dtype: str, shape: list[int], extra: int) -> None:
    """Headers claiming any shape, followed by up to 64 data bytes: the size bound comes first."""
    header = codec.encode([dtype, shape])
    run(AREA, "", header + bytes(extra), check, TOLERATE_KNOWN)


@fuzz_settings(scale=1.0)
@given(
    st.sampled_from(sorted(DTYPES)),
    st.lists(st.integers(0, 4), max_size=4),
    st.integers(0, 2**32 - 1),
)
def test_round_trip(dtype: str, shape: list[int], fill: int) -> None:
    a = (np.arange(math.prod(shape), dtype=np.uint64) * fill).astype(np.dtype(dtype)).reshape(shape)
    data = encode_array(a)
    assert run(AREA, "", data, check)
    np.testing.assert_array_equal(decode_array(data), a)


# ----------------------------------------------------------------------------- job kinds' input decoding

MATMUL = get_kind("matmul-u32")
MLP = get_kind("mlp-f32")


def check_job_inputs(data: bytes) -> None:
    """The input bytes of a matmul-u32 / mlp-f32 job, for params whose expected size fits: the kind's
    decoding raises only JobParamError (``check_leaf`` on chain relies on it)."""
    for m, k, n in ((1, 1, 1), (2, 3, 2)):
        params = {"m": m, "n": n, "k": k}
        if MATMUL.expected_input_size(params) == len(data):
            try:
                MATMUL.operands(params, data)
            except JobParamError:
                pass
    for b, i in ((1, 1), (2, 3)):
        params = {"batch": b, "d_in": i, "d_hidden": 1, "d_out": 1, "seed": b"\x00" * 32}
        if MLP.expected_input_size(params) == len(data):
            try:
                MLP.inputs(params, data)
            except JobParamError:
                pass


def _sized(data: bytes, size: int) -> bytes:
    return (data + bytes(size))[:size]


@fuzz_settings(scale=1.0)
@given(mutated(SEEDS), st.sampled_from([(1, 1, 1), (2, 3, 2)]))
def test_job_inputs(data: bytes, mkn: tuple[int, int, int]) -> None:
    m, k, n = mkn
    size = MATMUL.expected_input_size({"m": m, "n": n, "k": k})

    def check_matmul(raw: bytes) -> None:
        try:
            MATMUL.operands({"m": m, "n": n, "k": k}, raw)
        except JobParamError:
            pass
        except ValueError as exc:
            if not (TOLERATE_KNOWN and _known_bug(exc)):
                raise

    run(AREA, "", _sized(data, size), check_matmul)
