"""Fuzzing the gossip envelopes and topic validators: the whole validation pipeline a forwarded
message goes through (``p2p/gossip_validation.py`` ``_validate_message``: size bound, CBOR check, the
topic's validator) with the node's real validators registered on an offline ``P2PService``:
``node/network.py`` ``P2PConsensusTransport`` (``block``, ``vote``, ``evidence``: the ``[message,
nonce]`` envelope, duplicate suppression, strict decode, height window, membership, signature) and
``TxGossip`` (``tx``: batches).

Properties, for random bytes and mutations (byte-level, and structure-aware through the nested
encodings: envelope → proposal → block → transactions) of valid signed messages:

- the pipeline and ``judge`` never raise, and a validator never raises (the pipeline would log
  "validator raised" and reject: that is a bug in the validator, so it fails the test);
- ``_open_envelope`` raises only :class:`DecodeError`; an accepted message decodes again to an
  envelope whose inner message is what was judged.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import pytest
import trio
from fuzzlib import (
    CHAIN_ID,
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
from libp2p.pubsub.pb import rpc_pb2

from node.network import P2PConsensusTransport, TxGossip, _check_tx_batch, _open_envelope
from p2p.gossip import IGNORE
from p2p.gossip_validation import Verdict
from p2p.identity import peer_id_from_ed25519
from p2p.peers import parse_peer_id
from state import codec
from state.crypto import SigningKey
from state.errors import DecodeError

AREA = "gossip"
HEIGHT = 5  # as make_corpus.HEIGHT
VALIDATORS = frozenset(SigningKey.from_seed(bytes([i + 1]) * 32).public_key for i in range(4))


class View:
    """Consensus decides HEIGHT; the validator set is make_corpus.KEYS at every height."""

    def __init__(self) -> None:
        self.behind_calls: list[int] = []

    def height(self) -> int:
        return HEIGHT

    def validators(self, height: int) -> frozenset[bytes]:
        return VALIDATORS

    def rebroadcast_s(self) -> float:
        return 1.0

    def behind(self, height: int) -> None:
        self.behind_calls.append(height)


SVC = offline_service()
VIEW = View()
TRANSPORT = P2PConsensusTransport(SVC, CHAIN_ID, view=VIEW, max_block_bytes=1 << 20, dedupe_s=0.0)


async def _submit(raws: Any) -> list:
    return []


TXGOSSIP = TxGossip(SVC, _submit)
FORWARDER = parse_peer_id(peer_id_from_ed25519(SigningKey.from_seed(b"\x30" * 32).public_key))
TOPICS = sorted(SVC._topics)


class _RaisedHandler(logging.Handler):
    """Records the pipeline's "validator raised" log lines (a swallowed exception = a bug)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


RAISED = _RaisedHandler()
P2P_LOG = logging.getLogger("aitbc.p2p")


def _reset() -> None:
    SVC._bans.clear()
    SVC._penalties.clear()
    TRANSPORT._inner_seen.clear()
    TRANSPORT._decoded.clear()
    RAISED.records.clear()


def check(data: bytes, kind: str) -> bool:
    """A message forwarded on topic ``kind``: True if accepted (delivered and forwarded)."""
    _reset()
    t = SVC._topics[kind]
    msg = rpc_pb2.Message(data=data, topicIDs=[t.name], from_id=FORWARDER.to_bytes(), seqno=b"\x00" * 8)
    level = P2P_LOG.level
    P2P_LOG.setLevel(logging.ERROR)  # the pipeline logs every refusal; keep only "validator raised"
    P2P_LOG.addHandler(RAISED)
    try:
        res = SVC._validate_message(FORWARDER, msg)
        if inspect.isawaitable(res):

            async def wait() -> Any:
                return await res

            res = trio.run(wait)
    finally:
        P2P_LOG.removeHandler(RAISED)
        P2P_LOG.setLevel(level)
    if RAISED.records:
        rec = RAISED.records[0]
        trace = logging.Formatter().formatException(rec.exc_info) if rec.exc_info else ""
        raise AssertionError(f"the {kind} validator raised: {rec.getMessage()}\n{trace}")
    assert res is True or res is False or res is IGNORE, res
    if kind != "tx":
        # the consensus validator directly, too (what judge() says must not raise either)
        _reset()
        verdict = TRANSPORT.judge(
            {"block": "proposal", "vote": "vote", "evidence": "evidence"}[kind], "x", data
        )
        assert verdict is Verdict.ACCEPT or (type(verdict) is tuple and isinstance(verdict[0], Verdict))
        try:
            inner = _open_envelope(data)
        except DecodeError:
            assert res is not True
        else:
            assert codec.encode([inner, codec.decode(data)[1]]) == data
    else:
        assert _check_tx_batch("x", data) in (True, False)
    return res is True


SEEDS = {k: seeds(AREA, k) for k in TOPICS}
KEYS = schema_keys(*(codec.decode(s) for k in TOPICS for s in decoded_seeds(SEEDS[k])))


def test_topics_registered() -> None:
    assert TOPICS == ["block", "evidence", "tx", "vote"]
    assert all(SEEDS[k] for k in TOPICS)


@pytest.mark.parametrize(("kind", "path"), corpus_params(AREA))
def test_corpus(kind: str, path) -> None:
    data = path.read_bytes()
    accepted = check(data, kind)
    if path.name.startswith("valid-") and "far-ahead" not in path.name:
        assert accepted, f"{path.name}: a valid signed {kind} message is not accepted"
    for other in TOPICS:
        check(data, other)


topics = st.sampled_from(TOPICS)


@st.composite
def _case(draw: Any, how: str) -> tuple[str, bytes]:
    kind = draw(topics)
    if how == "random":
        return kind, draw(st.binary(max_size=300))
    if how == "bytes":
        return kind, draw(mutated(SEEDS[kind]))
    return kind, draw(mutated_obj(decoded_seeds(SEEDS[kind]), KEYS))


@fuzz_settings(scale=0.5)
@given(_case("random"))
def test_random(case: tuple[str, bytes]) -> None:
    kind, data = case
    run(AREA, kind, data, check, kind)


@fuzz_settings(scale=1.0)
@given(_case("bytes"))
def test_mutated_bytes(case: tuple[str, bytes]) -> None:
    kind, data = case
    run(AREA, kind, data, check, kind)


@fuzz_settings(scale=2.5)
@given(_case("structure"))
def test_mutated_structure(case: tuple[str, bytes]) -> None:
    kind, data = case
    run(AREA, kind, data, check, kind)


@fuzz_settings(scale=0.5)
@given(st.binary(max_size=100), st.integers(0, 64))
def test_open_envelope(data: bytes, max_bytes: int) -> None:
    def check_env(d: bytes) -> None:
        try:
            inner = _open_envelope(d, max_bytes)
        except DecodeError:
            return
        assert type(inner) is bytes and len(d) <= max_bytes

    run(AREA, "vote", data, check_env)
