"""Fuzzing the p2p wire (``p2p/wire.py``, ``p2p/batch.py``) and the request/response protocols
(``p2p/reqresp.py``, ``p2p/handshake.py``, ``p2p/discovery.py``) of a real, offline ``P2PService``.

Properties:

- ``ChainStatus.decode`` and ``decode_batch`` raise only :class:`DecodeError`; what they accept
  re-encodes to the input; ``open_envelope`` raises only ``RemoteError`` / ``BadResponse``;
- server side — an inbound request frame (status, blocks, blob, peers) that the real frame decoder
  accepts is answered by its handler, or refused with :class:`BadRequest`, never another exception;
  every frame the handler sends is a response envelope within its bound;
- client side — whatever raw bytes a peer writes back on the stream (varint framing included), the
  requester (``request_status``, ``request_blocks``, ``request_blob``, the peer exchange) returns a
  value of the promised shape or raises a :class:`P2PError`, never another exception.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import trio
from fuzzlib import (
    CORPUS,
    FakeFrames,
    corpus_params,
    decoded_seeds,
    fuzz_settings,
    mutated,
    mutated_obj,
    offline_service,
    run,
    schema_keys,
    seeds,
)
from hypothesis import given
from hypothesis import strategies as st

from p2p.batch import decode_batch, encode_batch
from p2p.identity import peer_id_from_ed25519
from p2p.peers import parse_peer_id
from p2p.wire import (
    MAX_PEX_ENTRIES,
    MAX_REQUEST_BYTES,
    MAX_STATUS_BYTES,
    BadRequest,
    BadResponse,
    ChainStatus,
    P2PError,
    RemoteError,
    open_envelope,
)
from state import codec
from state.crypto import SigningKey
from state.errors import DecodeError

AREA = "p2p"
BLOB = b"blobdata"
BLOB_HASH = hashlib.sha256(BLOB).digest()
SVC = offline_service({BLOB_HASH: BLOB})
PEER = peer_id_from_ed25519(SigningKey.from_seed(b"\x20" * 32).public_key)
PID = parse_peer_id(PEER)
KINDS = sorted(p.name for p in (CORPUS / AREA).iterdir() if p.is_dir())
SEEDS = {k: seeds(AREA, k) for k in KINDS}
ALL = [s for v in SEEDS.values() for s in v]
KEYS = schema_keys(*(codec.decode(s) for s in decoded_seeds(ALL))) | {
    "ok",
    "error",
    "code",
    "message",
    "size",
    "id",
}


# ----------------------------------------------------------------------------------- pure decoders


def check_status(data: bytes) -> bool:
    try:
        st_ = ChainStatus.decode(data)
    except DecodeError:
        return False
    assert st_.encode() == data and st_.finalized_height <= st_.height
    return True


def check_batch(data: bytes) -> bool:
    try:
        items = decode_batch(data, max_bytes=1 << 16, max_items=8)
    except DecodeError:
        return False
    assert encode_batch(items) == data and len(items) <= 8
    return True


def check_envelope(data: bytes) -> bool:
    try:
        obj = codec.decode(data)
    except DecodeError:
        return False
    try:
        open_envelope(obj)
    except RemoteError as exc:
        assert isinstance(exc.code, str) and len(exc.code) <= 64
        return True
    except BadResponse:
        return False
    return True


# ------------------------------------------------------------------------------------- server side

HANDLERS = {
    "req-status": SVC._serve_status,
    "req-blocks": SVC._serve_blocks,
    "req-blob": SVC._serve_blob,
    "req-peers": SVC._serve_peers,
}


def check_request(data: bytes, kind: str) -> bool:
    """An inbound frame on protocol ``kind``: True if the handler served it, False if refused."""
    try:
        req = codec.decode(data, max_bytes=MAX_REQUEST_BYTES)  # what _Frames.recv does
    except DecodeError:
        return False  # answered bad_request by the handler wrapper
    frames = FakeFrames()
    SVC._bans.clear()
    try:
        trio.run(HANDLERS[kind], PEER, req, frames)
    except BadRequest:
        return False
    finally:
        SVC._known.clear()
    assert frames.sent, "the handler returned without answering"
    for obj in frames.sent[:1]:
        try:
            open_envelope(obj)
        except RemoteError:
            pass
    return True


# ------------------------------------------------------------------------------------- client side


async def _client(kind: str) -> bool:
    if kind == "resp-status":
        st_ = await SVC.request_status(PEER)
        assert isinstance(st_, ChainStatus)
        return True
    if kind == "resp-blocks":
        items = await SVC.request_blocks(PEER, 1, 4)
        assert type(items) is list and len(items) <= 4 and all(type(x) is bytes for x in items)
        return True
    if kind == "resp-blob":
        blob = await SVC.request_blob(PEER, BLOB_HASH)
        assert blob is None or blob == BLOB
        return True
    if kind == "resp-peers":
        await SVC._exchange_peers(PEER, PID)  # logs and swallows P2PError itself
        assert len(SVC._known) <= MAX_PEX_ENTRIES
        return bool(SVC._known)
    raise AssertionError(kind)


def check_response(data: bytes, kind: str) -> bool:
    """The raw bytes a peer writes back on a ``kind`` stream: True if the requester accepted them."""
    SVC._host.response = data
    SVC._known.clear()
    try:
        return trio.run(_client, kind)
    except P2PError:
        return False
    finally:
        SVC._known.clear()


CHECKS = {
    "status": check_status,
    "batch": check_batch,
    "envelope": check_envelope,
    **{k: (lambda d, k=k: check_request(d, k)) for k in HANDLERS},
    **{
        k: (lambda d, k=k: check_response(d, k))
        for k in ("resp-status", "resp-blocks", "resp-blob", "resp-peers")
    },
}


def test_every_kind_is_checked() -> None:
    assert set(KINDS) == set(CHECKS), (KINDS, sorted(CHECKS))


@pytest.mark.parametrize(("kind", "path"), corpus_params(AREA))
def test_corpus(kind: str, path) -> None:
    data = path.read_bytes()
    accepted = CHECKS[kind](data)
    if path.name.startswith("valid-"):
        assert accepted, f"{path.name}: a valid {kind} message is refused"


kinds = st.sampled_from(sorted(CHECKS))


@st.composite
def _case(draw: Any, how: str) -> tuple[str, bytes]:
    kind = draw(kinds)
    if how == "random":
        return kind, draw(st.binary(max_size=200))
    if how == "bytes":
        return kind, draw(mutated(SEEDS[kind]))
    objs = decoded_seeds(SEEDS[kind])
    if kind.startswith("resp-"):
        # one frame of a seed stream mutated structurally (the others kept, one maybe dropped or
        # repeated), re-framed with correct varint prefixes
        frames = _frames_of([draw(st.sampled_from(SEEDS[kind]))]) or [b"\xa0"]
        i = draw(st.integers(0, len(frames) - 1))
        if decoded_seeds([frames[i]]):
            frames[i] = draw(mutated_obj([frames[i]], KEYS))
        op = draw(st.integers(0, 5))
        if op == 0 and len(frames) > 1:
            del frames[draw(st.integers(0, len(frames) - 1))]
        elif op == 1:
            frames.insert(draw(st.integers(0, len(frames))), draw(st.sampled_from(frames)))
        return kind, b"".join(_varint(len(c)) + c for c in frames)
    return kind, draw(mutated_obj(objs or [b"\xa0"], KEYS))


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _frames_of(streams: list[bytes]) -> list[bytes]:
    out = []
    for s in streams:
        pos = 0
        while pos < len(s):
            n = shift = 0
            while pos < len(s):
                b = s[pos]
                pos += 1
                n |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80 or shift > 63:
                    break
            out.append(bytes(s[pos : pos + n]))
            pos += n
    return out


@fuzz_settings(scale=1.0)
@given(_case("random"))
def test_random(case: tuple[str, bytes]) -> None:
    kind, data = case
    run(AREA, kind, data, CHECKS[kind])


@fuzz_settings(scale=1.5)
@given(_case("bytes"))
def test_mutated_bytes(case: tuple[str, bytes]) -> None:
    kind, data = case
    run(AREA, kind, data, CHECKS[kind])


@fuzz_settings(scale=2.5)
@given(_case("structure"))
def test_mutated_structure(case: tuple[str, bytes]) -> None:
    kind, data = case
    run(AREA, kind, data, CHECKS[kind])


def test_status_bound() -> None:
    big = codec.encode({**ChainStatus("c", b"", 0, b"", 0).to_obj(), "chain_id": "x" * (MAX_STATUS_BYTES)})
    assert not check_status(big)
