"""Fuzzing the keystore (``node/keystore.py``): key files read from disk.

Properties, for random bytes, byte-level mutations of real key files and structure-aware mutations of
their JSON (a field replaced by any JSON value, removed or added, hex resized, limits pushed across
their bounds):

- ``Keystore.info`` / ``Keystore.load`` raise only :class:`CorruptKeystore` or :class:`WrongPassword`
  (``decrypt_seed`` on the parsed document likewise, ``read_plain_key_file`` only CorruptKeystore);
- bounded: the Argon2id KDF is never asked for more than ``MAX_OPSLIMIT`` passes or ``MAX_MEMLIMIT``
  bytes (the KDF is wrapped: every call is checked against the bounds before it runs, and only the
  minimum limits the valid seeds use are actually computed; any other limits get a dummy key, which
  the authenticated limits make fail as WrongPassword exactly as the real key would);
- a file that loads gives the seed it was written with (the seeds' password).
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from fuzzlib import CORPUS, corpus_params, fuzz_settings, mutated, run, seeds
from hypothesis import given
from hypothesis import strategies as st
from nacl.pwhash import argon2id

import node.keystore as ks
from node.keystore import CorruptKeystore, Keystore, WrongPassword, decrypt_seed, read_plain_key_file

AREA = "keystore"
PASSWORD = "fuzz-password"  # as make_corpus.KEYSTORE_PASSWORD
NAME = "fuzz"  # as make_corpus.KEYSTORE_NAME
SEED = b"\x42" * 32
PLAIN_SEED = b"\x43" * 32
TMP = Path(tempfile.mkdtemp(prefix="aitbc-fuzz-keystore-"))
atexit.register(shutil.rmtree, TMP, True)
STORE = Keystore(TMP, opslimit=ks.MIN_OPSLIMIT, memlimit=ks.MIN_MEMLIMIT)
_real_kdf = argon2id.kdf
KDF_CALLS: list[tuple[int, int]] = []


def _bounded_kdf(
    size: int, password: bytes, salt: bytes, *, opslimit: int, memlimit: int, **kw: Any
) -> bytes:
    KDF_CALLS.append((opslimit, memlimit))
    assert type(opslimit) is int and ks.MIN_OPSLIMIT <= opslimit <= ks.MAX_OPSLIMIT, f"opslimit {opslimit!r}"
    assert type(memlimit) is int and ks.MIN_MEMLIMIT <= memlimit <= ks.MAX_MEMLIMIT, f"memlimit {memlimit!r}"
    if (opslimit, memlimit) == (ks.MIN_OPSLIMIT, ks.MIN_MEMLIMIT):
        return _real_kdf(size, password, salt, opslimit=opslimit, memlimit=memlimit, **kw)
    return b"\x00" * size  # a key the file cannot have been encrypted with (the limits are in its AD)


@contextmanager
def bounded_kdf() -> Iterator[None]:
    KDF_CALLS.clear()
    with mock.patch.object(argon2id, "kdf", _bounded_kdf):
        yield


def check_encrypted(data: bytes, password: str = PASSWORD) -> bool:
    """``data`` as the key file ``<NAME>.json``: True if it loaded (with the right seed)."""
    path = TMP / f"{NAME}.json"
    path.write_bytes(data)
    path.chmod(0o600)
    with bounded_kdf():
        try:
            info = STORE.info(NAME)
        except CorruptKeystore:
            info = None
        try:
            key = STORE.load(NAME, password)
        except (CorruptKeystore, WrongPassword) as exc:
            assert isinstance(exc.reason, str)
            if info is None:
                assert isinstance(exc, CorruptKeystore) and not KDF_CALLS, (
                    "the KDF ran on a file info() refuses"
                )
            return False
    assert info is not None and info.public_key == key.public_key
    assert key.seed == SEED, "a key file decrypted to another seed"
    return True


def check_doc(data: bytes) -> None:
    """The JSON document (already parsed) straight into decrypt_seed."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return
    with bounded_kdf():
        try:
            assert decrypt_seed(doc, PASSWORD) == SEED
        except (CorruptKeystore, WrongPassword):
            pass


def check_plain(data: bytes) -> bool:
    path = TMP / "node_key.json"
    path.write_bytes(data)
    path.chmod(0o600)
    try:
        sk = read_plain_key_file(path)
    except CorruptKeystore:
        return False
    assert sk.seed == PLAIN_SEED
    return True


CHECKS = {"encrypted": check_encrypted, "plain": check_plain}
SEEDS = {k: seeds(AREA, k) for k in CHECKS}
VALID = {k: [json.loads(s) for s in seeds(AREA, k, valid_only=True)] for k in CHECKS}


@pytest.mark.parametrize(("kind", "path"), corpus_params(AREA))
def test_corpus(kind: str, path) -> None:
    data = path.read_bytes()
    accepted = CHECKS[kind](data)
    if kind == "encrypted":
        check_doc(data)
    if path.name.startswith("valid-"):
        assert accepted, f"{path.name}: a key file written by the real code does not load"


def test_limits_refused_before_the_kdf() -> None:
    """Out-of-bound limits never reach the KDF (the edge seeds ask for 1 TiB and 2**62 passes)."""
    root = CORPUS / AREA / "encrypted"
    for name in ("edge-memlimit-2-40.json", "edge-memlimit-max-plus-1.json", "edge-opslimit-huge.json"):
        (TMP / f"{NAME}.json").write_bytes((root / name).read_bytes())
        with bounded_kdf(), pytest.raises(CorruptKeystore, match="kdf"):
            STORE.load(NAME, PASSWORD)
        assert not KDF_CALLS


def test_wrong_password() -> None:
    valid = seeds(AREA, "encrypted", valid_only=True)[0]
    assert check_encrypted(valid)
    assert not check_encrypted(valid, "wrong password")
    (TMP / f"{NAME}.json").write_bytes(valid)
    with bounded_kdf(), pytest.raises(WrongPassword):
        STORE.load(NAME, "wrong password")


@fuzz_settings(scale=0.5)
@given(st.sampled_from(sorted(CHECKS)), st.binary(max_size=200))
def test_random_bytes(kind: str, data: bytes) -> None:
    run(AREA, kind, data, CHECKS[kind], suffix=".json")


@st.composite
def _mutated_bytes(draw: Any) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(sorted(CHECKS)))
    return kind, draw(mutated(SEEDS[kind]))


@fuzz_settings(scale=1.0)
@given(_mutated_bytes())
def test_mutated_bytes(case: tuple[str, bytes]) -> None:
    kind, data = case
    run(AREA, kind, data, CHECKS[kind], suffix=".json")


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(
        [
            0,
            1,
            2,
            20,
            21,
            8191,
            8192,
            1 << 30,
            (1 << 30) + 1,
            2**63,
            "0x",
            "0x0",
            "0x" + "00" * 16,
            "0x" + "00" * 24,
            "0x" + "00" * 48,
            "0xZZ",
            "argon2id13",
            "xchacha20poly1305-ietf",
            "fuzz",
            ".fuzz",
            "ait1",
            "ed25519",
        ]
    ),
)
json_values = st.recursive(
    json_leaf,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=6,
)


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if type(doc) is dict:
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    return out


@st.composite
def _mutated_doc(draw: Any) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(sorted(CHECKS)))
    doc = json.loads(json.dumps(draw(st.sampled_from(VALID[kind]))))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            continue
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        op = draw(st.integers(0, 4))
        if op == 0:
            del parent[path[-1]]
        elif op == 1:
            parent[draw(st.text(max_size=8))] = draw(json_values)
        elif op == 2 and type(parent[path[-1]]) is str and parent[path[-1]].startswith("0x"):
            v = parent[path[-1]]
            parent[path[-1]] = draw(
                st.sampled_from([v[:-2], v + "00", v[:-1], v.upper(), "0X" + v[2:], v[:2] + "g" + v[3:]])
            )
        elif op == 3 and type(parent[path[-1]]) is int:
            v = parent[path[-1]]
            parent[path[-1]] = draw(st.sampled_from([v + 1, v - 1, v * 2, -v, 2**64, float(v), bool(v)]))
        else:
            parent[path[-1]] = draw(json_values)
    return kind, json.dumps(doc, indent=draw(st.sampled_from([None, 2]))).encode()


@fuzz_settings(scale=2.0)
@given(_mutated_doc())
def test_mutated_structure(case: tuple[str, bytes]) -> None:
    kind, data = case
    run(AREA, kind, data, CHECKS[kind], suffix=".json")
    if kind == "encrypted":
        run(AREA, kind, data, check_doc, suffix=".json")
