"""Fuzzing ``state.codec``: canonical CBOR decoding of hostile bytes.

Properties: :func:`state.codec.decode` raises nothing but :class:`DecodeError` (whatever the bytes:
random, mutated canonical encodings, length claims far beyond the input, tags, depth); a value it
returns re-encodes to exactly the input (canonical); ``max_bytes`` is enforced before parsing; and
``encode`` → ``decode`` is the identity (by bytes) on every value a peer can send.
"""

from __future__ import annotations

import cbor2
import pytest
from fuzzlib import cbor_values, corpus_params, decoded_seeds, fuzz_settings, mutated, mutated_obj, run, seeds
from hypothesis import given
from hypothesis import strategies as st

from state import codec
from state.errors import DecodeError

AREA = "codec"
SEEDS = seeds(AREA)
CANONICAL_SEEDS = decoded_seeds(SEEDS)


def check_decode(data: bytes, max_bytes: int = codec.DEFAULT_MAX_BYTES) -> bool:
    """True if ``data`` decoded (and then it is canonical), False if refused with DecodeError."""
    try:
        obj = codec.decode(data, max_bytes=max_bytes)
    except DecodeError as exc:
        assert isinstance(exc.reason, str)
        if len(data) > max_bytes:
            assert exc.reason == "too_large"
        return False
    assert len(data) <= max_bytes
    assert codec.encode(obj) == data, "decode accepted a non-canonical encoding"
    # the non-canonical mode accepts a superset and agrees on canonical input
    assert codec.encode(codec.decode(data, canonical=False, max_bytes=max_bytes)) == data
    return True


def check_lenient(data: bytes) -> None:
    try:
        codec.decode(data, canonical=False)
    except DecodeError:
        pass


@pytest.mark.parametrize(("kind", "path"), corpus_params(AREA))
def test_corpus(kind: str, path) -> None:
    data = path.read_bytes()
    accepted = check_decode(data)
    check_lenient(data)
    if path.name.startswith("valid-"):
        assert accepted, f"{path.name}: a valid encoding produced by the real code is refused"


@fuzz_settings(scale=1.0)
@given(st.binary(max_size=256))
def test_random_bytes(data: bytes) -> None:
    run(AREA, "", data, check_decode)
    run(AREA, "", data, check_lenient)


@fuzz_settings(scale=1.5)
@given(mutated(SEEDS))
def test_mutated_bytes(data: bytes) -> None:
    run(AREA, "", data, check_decode)
    run(AREA, "", data, check_lenient)


@fuzz_settings(scale=1.0)
@given(mutated_obj(CANONICAL_SEEDS))
def test_mutated_structure(data: bytes) -> None:
    accepted = run(AREA, "", data, check_decode)
    # canonical by construction: refused only for nesting deeper than codec.decode's limit (32)
    assert accepted or _depth(cbor2.loads(data)) > 32


def _depth(v) -> int:
    if type(v) is list:
        return 1 + max((_depth(x) for x in v), default=0)
    if type(v) is dict:
        return 1 + max((_depth(x) for x in v.values()), default=0)
    return 0


@fuzz_settings(scale=1.0)
@given(cbor_values(max_leaves=24))
def test_encode_decode_round_trip(value) -> None:
    data = codec.encode(value)
    assert run(AREA, "", data, check_decode)


@fuzz_settings(scale=0.5)
@given(mutated(SEEDS), st.integers(0, 64))
def test_size_bound_first(data: bytes, max_bytes: int) -> None:
    run(AREA, "", data, check_decode, max_bytes)


# ------------------------------------------------------------------------------------------- memory

AMPLIFICATION = 128  # bytes of Python objects per input byte, worst case seen: ~75 (an array of empty maps)


@pytest.mark.parametrize(
    "item",
    [b"\xa0", b"\x80", b"\x41\x00", b"\x61a", b"\xc2\x41\x01", b"\xf9\x3c\x00", b"\x81\x80", b"\x00"],
    ids=["empty-map", "empty-list", "bytes-1", "text-1", "bignum", "half-float", "nested-list", "zero"],
)
def test_decode_memory_is_linear(item: bytes) -> None:
    """Decoding allocates at most AMPLIFICATION bytes per input byte (64 KiB of the worst items), and a
    length claim far beyond the input allocates nothing. Inputs above ``codec.SCAN_ABOVE_BYTES`` are
    walked first and refused beyond ``codec.MAX_ITEMS`` items before any object is built, so a hostile
    16 MiB block-topic message of tiny items costs ~0.4 s of CPU and no memory
    (tests/test_primitives.py::test_codec_refuses_item_floods_before_building_objects)."""
    import tracemalloc

    n = (64 << 10) // len(item)
    data = b"\x9a" + n.to_bytes(4, "big") + item * n
    tracemalloc.start()
    try:
        try:
            codec.decode(data, max_bytes=len(data))
        except DecodeError:
            pass
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        try:
            codec.decode(b"\x9b" + (1 << 62).to_bytes(8, "big") + item * 16)
        except DecodeError:
            pass
        claim_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= AMPLIFICATION * len(data) + (1 << 20), f"{peak / len(data):.0f} bytes per input byte"
    assert claim_peak <= 1 << 20, f"a length claim of 2**62 allocated {claim_peak} bytes"
