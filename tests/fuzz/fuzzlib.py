"""Shared machinery of the fuzzers in ``tests/fuzz`` (see README.md there).

- :func:`fuzz_settings`: Hypothesis settings from the environment (``AITBC_FUZZ_EXAMPLES``,
  ``AITBC_FUZZ_RANDOM``): a modest, derandomized run by default (CI), longer or random runs opt-in.
- The corpus: ``corpus/<area>/[<kind>/]<file>``, the seed inputs of each fuzzer. ``valid-*`` files are
  encodings produced by the real code (``make_corpus.py`` writes them), ``edge-*`` hand-picked
  adversarial inputs, ``crash-*`` failing inputs saved by :func:`run` under ``AITBC_FUZZ_SAVE=1``, and
  ``bug-*`` inputs of known, unfixed bugs (listed in :data:`KNOWN_BUGS`, replayed as strict xfail).
  :func:`corpus_params` turns a corpus into pytest parameters; :func:`seeds` feeds the mutators.
- Strategies: :func:`cbor_values` (what a canonical-CBOR peer can send), :func:`mutated` (byte-level
  mutations of seeds, libFuzzer style) and :func:`mutated_obj` (structure-aware mutations of decoded
  seeds, nested CBOR byte strings included).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException

FUZZ_DIR = Path(__file__).resolve().parent
CORPUS = FUZZ_DIR / "corpus"

#: examples per fuzz test (scaled per test by ``fuzz_settings(scale)``)
EXAMPLES = int(os.environ.get("AITBC_FUZZ_EXAMPLES", "50"))
#: AITBC_FUZZ_RANDOM=1: a fresh random run (and Hypothesis' example database in .hypothesis/)
RANDOM = os.environ.get("AITBC_FUZZ_RANDOM", "") == "1"
#: AITBC_FUZZ_SAVE=1: the minimal failing input of a failing fuzz test is written to the corpus
SAVE = os.environ.get("AITBC_FUZZ_SAVE", "") == "1"
#: the random fuzz tests tolerate the failure signatures of KNOWN_BUGS, unless AITBC_FUZZ_STRICT=1
TOLERATE_KNOWN = os.environ.get("AITBC_FUZZ_STRICT", "") != "1"

#: Known, unfixed bugs: corpus path (relative to corpus/) -> (exception type the replay raises, reason).
#: Their replay tests are ``xfail(strict=True)``: when the bug is fixed the test XPASSes, fails, and
#: the entry must be removed here (rename the file to ``edge-*`` to keep it as a regression input).
KNOWN_BUGS: dict[str, tuple[type[BaseException], str]] = {}


def fuzz_settings(scale: float = 1.0, **kw: Any) -> settings:
    """Settings of one fuzz test: ``scale`` x AITBC_FUZZ_EXAMPLES examples, derandomized unless
    AITBC_FUZZ_RANDOM=1 (then Hypothesis' database in the git-ignored .hypothesis/ is used)."""
    args: dict[str, Any] = {
        "max_examples": max(1, int(EXAMPLES * scale)),
        "derandomize": not RANDOM,
        "deadline": None,
        "suppress_health_check": [
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
        "print_blob": RANDOM,
    }
    if not RANDOM:
        args["database"] = None
    args.update(kw)
    return settings(**args)


# --------------------------------------------------------------------------------------------- corpus


def corpus_files(area: str) -> list[Path]:
    """Every corpus file of ``area`` (sub-directories included), sorted."""
    root = CORPUS / area
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def kind_of(path: Path, area: str) -> str:
    """The sub-directory of ``path`` under ``corpus/<area>/`` ('' when it lies directly in it)."""
    rel = path.relative_to(CORPUS / area)
    return rel.parts[0] if len(rel.parts) > 1 else ""


def seeds(area: str, kind: str | None = None, *, valid_only: bool = False) -> list[bytes]:
    """Contents of the corpus files of ``area`` (of one ``kind`` if given): the mutators' seeds."""
    out = []
    for p in corpus_files(area):
        if kind is not None and kind_of(p, area) != kind:
            continue
        if valid_only and not p.name.startswith("valid-"):
            continue
        out.append(p.read_bytes())
    return out


def corpus_params(area: str) -> list[Any]:
    """pytest parameters ``(kind, path)`` for a corpus replay test; known bugs are strict xfails."""
    out = []
    for p in corpus_files(area):
        rel = p.relative_to(CORPUS).as_posix()
        marks = []
        bug = KNOWN_BUGS.get(rel)
        if bug is not None:
            marks.append(pytest.mark.xfail(strict=True, raises=bug[0], reason=bug[1]))
        out.append(pytest.param(kind_of(p, area), p, id=rel, marks=marks))
    return out


def known_bug_files() -> list[str]:
    return sorted(KNOWN_BUGS)


def _is_final_example() -> bool:
    try:
        from hypothesis.control import current_build_context

        return bool(getattr(current_build_context(), "is_final", True))
    except Exception:  # outside a Hypothesis test (corpus replay): never save
        return False


def save_to_corpus(area: str, kind: str, data: bytes, suffix: str = ".bin") -> Path:
    """Store ``data`` as ``corpus/<area>/[<kind>/]crash-<sha256 prefix><suffix>`` (idempotent)."""
    d = CORPUS / area / kind if kind else CORPUS / area
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"crash-{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    if not path.exists():
        path.write_bytes(data)
    return path


def run(
    area: str, kind: str, data: bytes, check: Callable[..., Any], *args: Any, suffix: str = ".bin"
) -> Any:
    """``check(data, *args)``; under AITBC_FUZZ_SAVE=1 the minimal failing input (Hypothesis' final
    replay) is saved to the corpus before the failure propagates."""
    try:
        return check(data, *args)
    except HypothesisException:
        raise
    except BaseException:
        if SAVE and _is_final_example():
            path = save_to_corpus(area, kind, data, suffix)
            print(f"fuzz: failing input saved to {path.relative_to(FUZZ_DIR.parent.parent)}")
        raise


# ----------------------------------------------------------------------------------------- strategies


class HugeInt(int):
    """An int past Python's int -> str limit (4300 digits) that Hypothesis can still print: only its
    repr differs; encoded (CBOR, JSON is not used for it) it is a plain bignum, and decoders see int."""

    def __repr__(self) -> str:
        return (
            f"HugeInt(1 << {self.bit_length() - 1})"
            if self > 0
            else f"-HugeInt(1 << {(-self).bit_length() - 1})"
        )

    __str__ = __repr__

    def __neg__(self) -> HugeInt:
        return HugeInt(-int(self))


HUGE_INT = HugeInt(1 << 14_300)  # 4305 decimal digits
# fmt: off
BOUNDARY_INTS = [
    0, 1, 2, 23, 24, 25, 255, 256, 10_000, 65_535, 65_536, (1 << 31) - 1, 1 << 31, (1 << 31) + 1,
    (1 << 32) - 1, 1 << 32, (1 << 53) + 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 1 << 64, (1 << 64) + 1,
    -1, -2, -24, -25, -256, -257, -(1 << 31), -(1 << 63), -(1 << 63) - 1, -(1 << 64), -(1 << 64) - 1,
    # bignums past Python's int -> str limit (4300 digits): an error message formatting one raises ValueError
    HUGE_INT, -HUGE_INT,
]
INTERESTING_BYTES = [
    0x00, 0x01, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1F, 0x20, 0x37, 0x38, 0x3B, 0x3F, 0x40, 0x41,
    0x58, 0x5B, 0x5F, 0x60, 0x61, 0x78, 0x7B, 0x7F, 0x80, 0x81, 0x82, 0x98, 0x9B, 0x9F, 0xA0, 0xA1,
    0xB8, 0xBB, 0xBF, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xD8, 0xD9, 0xDA, 0xDB, 0xE0, 0xF4, 0xF5,
    0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFF,
]
# fmt: on

ints = st.one_of(st.sampled_from(BOUNDARY_INTS), st.integers(-(1 << 66), 1 << 66), st.integers(-3, 300))


def cbor_leaves(keys: Iterable[str] = ()) -> st.SearchStrategy:
    sized_bytes = st.sampled_from([b"", b"\x00" * 16, b"\x00" * 24, b"\xab" * 32, b"\xff" * 32, b"\x01" * 64])
    texts = st.text(max_size=24)
    if keys:
        texts = st.one_of(texts, st.sampled_from(sorted(keys)))
    return st.one_of(
        st.none(),
        st.booleans(),
        ints,
        st.floats(allow_nan=True, allow_infinity=True),
        st.binary(max_size=72),
        sized_bytes,
        texts,
    )


def cbor_values(keys: Iterable[str] = (), max_leaves: int = 16) -> st.SearchStrategy:
    """Values a canonical-CBOR peer can send: null, bools, ints of every width (bignums too), floats,
    bytes, text, lists and maps (text keys mostly, some integer keys)."""
    keys = tuple(keys)
    key_st = st.one_of(st.text(max_size=12), st.sampled_from(keys)) if keys else st.text(max_size=12)
    return st.recursive(
        cbor_leaves(keys),
        lambda children: st.one_of(
            st.lists(children, max_size=6),
            st.dictionaries(key_st, children, max_size=6),
            st.dictionaries(st.integers(-3, 30), children, max_size=3),
        ),
        max_leaves=max_leaves,
    )


@st.composite
def mutated(draw: Any, seed_list: list[bytes], max_ops: int = 4) -> bytes:
    """A seed with 1..max_ops byte-level mutations (flip, set, insert, delete, truncate, duplicate,
    splice with another seed, CBOR-significant bytes, length-prefix blow-ups)."""
    data = bytearray(draw(st.sampled_from(seed_list)))
    for _ in range(draw(st.integers(1, max_ops))):
        n = len(data)
        op = draw(
            st.sampled_from(
                ["flip", "set", "interesting", "insert", "delete", "truncate", "dup", "splice", "big"]
            )
        )
        if op in ("flip", "set", "interesting") and n:
            i = draw(st.integers(0, n - 1))
            if op == "flip":
                data[i] ^= 1 << draw(st.integers(0, 7))
            elif op == "set":
                data[i] = draw(st.integers(0, 255))
            else:
                data[i] = draw(st.sampled_from(INTERESTING_BYTES))
        elif op == "insert":
            i = draw(st.integers(0, n))
            data[i:i] = draw(
                st.one_of(
                    st.binary(min_size=1, max_size=8),
                    st.sampled_from([bytes([b]) for b in INTERESTING_BYTES]),
                )
            )
        elif op == "delete" and n:
            i = draw(st.integers(0, n - 1))
            data[i : i + draw(st.integers(1, 8))] = b""
        elif op == "truncate" and n:
            del data[draw(st.integers(0, n - 1)) :]
        elif op == "dup" and n:
            i = draw(st.integers(0, n - 1))
            j = draw(st.integers(i, min(n, i + 16)))
            data[j:j] = data[i:j]
        elif op == "splice":
            other = draw(st.sampled_from(seed_list))
            if other:
                i = draw(st.integers(0, len(other) - 1))
                j = draw(st.integers(i, len(other)))
                k = draw(st.integers(0, n))
                data[k:k] = other[i:j]
        elif op == "big" and n:
            # a length/argument that claims far more than there is: major type kept, 8-byte argument
            i = draw(st.integers(0, n - 1))
            major = data[i] & 0xE0
            data[i : i + 1] = bytes([major | 0x1B]) + draw(
                st.sampled_from(
                    [
                        (1 << 63).to_bytes(8, "big"),
                        (2**64 - 1).to_bytes(8, "big"),
                        (1 << 32).to_bytes(8, "big"),
                    ]
                )
            )
    return bytes(data)


def _try_decode(b: bytes) -> tuple[bool, Any]:
    if not b or len(b) > 1 << 16:
        return False, None
    try:
        obj = cbor2.loads(b)
        if cbor2.dumps(obj, canonical=True) == b and isinstance(obj, dict | list):
            return True, obj
    except Exception:
        pass
    return False, None


def _mutate_value(draw: Any, v: Any, leaf: st.SearchStrategy, keys: tuple[str, ...], depth: int) -> Any:
    """One mutation somewhere inside ``v``: mostly near-misses (a nudged integer, a resized string, a
    dropped or extra key) deep in the structure, sometimes a value of another type."""
    is_container = type(v) in (dict, list) and bool(v)
    # descend into containers (always from the top: replacing the whole message teaches nothing)
    if is_container and depth < 8 and (depth == 0 or draw(st.integers(0, 99)) < 70):
        if draw(st.integers(0, 99)) < 85:
            if type(v) is dict:
                k = draw(st.sampled_from(sorted(v, key=repr)))
                return {**v, k: _mutate_value(draw, v[k], leaf, keys, depth + 1)}
            i = draw(st.integers(0, len(v) - 1))
            return v[:i] + [_mutate_value(draw, v[i], leaf, keys, depth + 1)] + v[i + 1 :]
    # nested canonical CBOR carried as a byte string (a block's transactions, a proposal's block)
    if type(v) is bytes and depth < 8 and draw(st.integers(0, 99)) < 60:
        ok, inner = _try_decode(v)
        if ok:
            return cbor2.dumps(_mutate_value(draw, inner, leaf, keys, depth + 1), canonical=True)
    op = draw(st.integers(0, 9))
    if type(v) is dict:
        if op < 4 and v:
            k = draw(st.sampled_from(sorted(v, key=repr)))
            return {kk: vv for kk, vv in v.items() if kk != k}
        if op < 8 or depth == 0:
            k = (
                draw(st.one_of(st.sampled_from(keys), st.text(max_size=8)))
                if keys
                else draw(st.text(max_size=8))
            )
            return {**v, k: draw(leaf)}
    if type(v) is list:
        if op < 4 and v:
            i = draw(st.integers(0, len(v) - 1))
            return v[:i] + v[i + 1 :]
        if op < 8 or depth == 0:
            i = draw(st.integers(0, len(v)))
            return v[:i] + [draw(st.sampled_from(v)) if v and draw(st.booleans()) else draw(leaf)] + v[i:]
    if type(v) is int and op < 8:
        return draw(
            st.sampled_from(
                [
                    v + 1,
                    v - 1,
                    -v,
                    v * 2,
                    0,
                    1,
                    -1,
                    v + (1 << 64),
                    (1 << 63) - 1,
                    1 << 63,
                    (1 << 64) - 1,
                    1 << 64,
                    HUGE_INT,
                ]
            )
        )
    if type(v) is bytes and op < 7:
        return draw(
            st.sampled_from([v[:-1], v + b"\x00", b"", v[: len(v) // 2], bytes(len(v)), v * 2, v[::-1]])
        )
    if type(v) is str and op < 7:
        return draw(
            st.sampled_from(["", v + "x", v[:-1], "é" * len(v), "x" * 65, "\x00" + v, v.upper(), v + "\n"])
        )
    return draw(leaf)


@st.composite
def mutated_obj(draw: Any, seed_list: list[bytes], keys: Iterable[str] = (), max_ops: int = 3) -> bytes:
    """A seed decoded, mutated structurally (1..max_ops times: a field replaced, removed or added, an
    integer nudged across a bound, a byte/text string resized, nested CBOR mutated in place) and
    re-encoded canonically — so the decoders see well-formed CBOR that breaks their schemas."""
    keys = tuple(sorted(set(keys)))
    leaf = cbor_values(keys, max_leaves=6)
    obj = cbor2.loads(draw(st.sampled_from(seed_list)))
    for _ in range(draw(st.integers(1, max_ops))):
        obj = _mutate_value(draw, obj, leaf, keys, 0)
    return cbor2.dumps(obj, canonical=True)


def schema_keys(*objs: Any) -> set[str]:
    """Every text map key in the (decoded) seeds: mutation vocabulary."""
    out: set[str] = set()

    def walk(o: Any) -> None:
        if type(o) is dict:
            for k, v in o.items():
                if type(k) is str:
                    out.add(k)
                walk(v)
        elif type(o) is list:
            for v in o:
                walk(v)
        elif type(o) is bytes:
            ok, inner = _try_decode(o)
            if ok:
                walk(inner)

    for o in objs:
        walk(o)
    return out


def decoded_seeds(seed_list: list[bytes]) -> list[bytes]:
    """The seeds that are canonical CBOR (structure-aware mutation needs them)."""
    out = []
    for s in seed_list:
        try:
            if cbor2.dumps(cbor2.loads(s), canonical=True) == s:
                out.append(s)
        except Exception:
            pass
    return out


# ------------------------------------------------------------------------------------------------ rpc


def node_registry() -> tuple[Any, Any]:
    """The real node's JSON-RPC method registry and subscription hub (``rpc.methods.build_rpc`` plus
    ``install_node_extras``), built on a stand-in node: only the parameter declarations matter here
    (handlers are never called), and those read nothing from the node but its genesis parameters."""
    from unittest.mock import MagicMock

    from node.config import Config
    from node.rpc_adapter import NodeRpcAdapter
    from rpc.admin_methods import install_node_extras
    from rpc.methods import build_rpc
    from state.genesis import ChainParams

    node = MagicMock(name="node")
    node.genesis.params = ChainParams()
    node.genesis.chain_id = "fuzz-chain"
    node.genesis.consensus = "pos"
    node.cfg = Config()
    api = NodeRpcAdapter(node)
    reg, hub = build_rpc(api)
    install_node_extras(reg, hub, api)
    return reg, hub


# ------------------------------------------------------------------------------------------------ p2p

CHAIN_ID = "fuzz-chain"
GENESIS_HASH = bytes.fromhex("07" * 32)


class FakeStream:
    """A libp2p stream whose peer has written ``data`` (then EOF); what we write is kept."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.written = bytearray()
        self.closed = self.was_reset = False

    async def read(self, n: int | None = None) -> bytes:
        n = len(self.data) - self.pos if n is None else n
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += len(out)
        return out

    async def write(self, data: bytes) -> None:
        self.written += data

    async def close(self) -> None:
        self.closed = True

    async def reset(self) -> None:
        self.was_reset = True


class FakeHost:
    """Just enough of a libp2p host for P2PService's client side: every peer is connected and
    every new stream replays ``response``."""

    def __init__(self) -> None:
        self.response = b""
        self.streams: list[FakeStream] = []

    async def new_stream(self, pid: Any, protos: Any) -> FakeStream:
        s = FakeStream(self.response)
        self.streams.append(s)
        return s

    def get_network(self) -> Any:
        return self

    def get_transport_addrs(self) -> list[Any]:
        return []

    def get_connections(self, pid: Any) -> list[Any]:
        return [object()]

    async def disconnect(self, pid: Any) -> None:
        pass


class FakeFrames:
    """Stands in for ``p2p.reqresp._Frames`` on the server side: records what a handler sends, with
    the real encoding and frame bound (a frame over its bound is what MessageTooLarge would be)."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, obj: Any, max_bytes: int) -> None:
        from state import codec

        data = codec.encode(obj)
        assert len(data) <= max_bytes, f"the server sends a {len(data)}-byte frame over its bound {max_bytes}"
        self.sent.append(obj)


def offline_service(blobs: dict[bytes, bytes] | None = None) -> Any:
    """A real :class:`p2p.service.P2PService` that never runs: its request handlers, response
    parsing and gossip validation pipeline are called directly (``FakeHost`` for the client side)."""
    from types import SimpleNamespace

    from p2p.config import P2PConfig
    from p2p.service import P2PService
    from state.crypto import SigningKey

    blobs = dict(blobs or {})
    svc = P2PService(
        P2PConfig(),
        SigningKey.from_seed(b"\x10" * 32),
        CHAIN_ID,
        GENESIS_HASH,
        status_provider=lambda: SimpleNamespace(height=10, head_hash=b"\x01" * 32, finalized_height=10),
        blocks_provider=lambda start, count: [b"block %d" % h for h in range(start, start + min(count, 3))],
        blob_provider=lambda h: blobs.get(h),
    )
    svc._host = FakeHost()
    svc._running = True
    return svc
