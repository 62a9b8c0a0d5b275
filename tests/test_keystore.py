"""Tests for node.keystore: encrypted key files, plain node key files, password sources."""

from __future__ import annotations

import io
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from nacl.pwhash import argon2id

import node.keystore as ks
from node.keystore import (
    CorruptKeystore,
    InvalidKeyName,
    KeyExists,
    KeyInfo,
    KeyNotFound,
    Keystore,
    KeystoreError,
    WrongPassword,
    decrypt_seed,
    encrypt_seed,
    read_password,
    read_plain_key_file,
    write_plain_key_file,
)
from state.address import decode_address, encode_address
from state.crypto import SigningKey

OPS = argon2id.OPSLIMIT_MIN
MEM = argon2id.MEMLIMIT_MIN
PW = "correct horse battery staple"
SEED = bytes(range(32))
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture
def store(tmp_path: Path) -> Keystore:
    return Keystore(tmp_path / "keys", opslimit=OPS, memlimit=MEM)


def fast_doc(seed: bytes = SEED, password: str = PW, name: str = "alice") -> dict[str, Any]:
    return encrypt_seed(seed, password, name, opslimit=OPS, memlimit=MEM)


def write_doc(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc))
    os.chmod(path, 0o600)


# ------------------------------------------------------------------------------------------ round trip


def test_encrypt_decrypt_round_trip() -> None:
    doc = fast_doc()
    assert decrypt_seed(doc, PW) == SEED
    sk = SigningKey.from_seed(SEED)
    assert doc["version"] == 1
    assert doc["name"] == "alice"
    assert doc["address"] == encode_address(sk.public_key)
    assert doc["public_key"] == "0x" + sk.public_key.hex()
    assert doc["kdf"] == {"alg": "argon2id13", "opslimit": OPS, "memlimit": MEM, "salt": doc["kdf"]["salt"]}
    assert len(bytes.fromhex(doc["kdf"]["salt"][2:])) == 16
    assert doc["cipher"]["alg"] == "xchacha20poly1305-ietf"
    assert len(bytes.fromhex(doc["cipher"]["nonce"][2:])) == 24
    assert len(bytes.fromhex(doc["ciphertext"][2:])) == 48
    assert isinstance(doc["created_at"], int)
    # JSON round trip, and fresh randomness for each encryption
    assert decrypt_seed(json.loads(json.dumps(doc)), PW) == SEED
    doc2 = fast_doc()
    assert doc2["kdf"]["salt"] != doc["kdf"]["salt"]
    assert doc2["cipher"]["nonce"] != doc["cipher"]["nonce"]


def test_defaults_are_interactive_and_moderate_is_allowed() -> None:
    doc = encrypt_seed(SEED, PW, "alice")
    assert doc["kdf"]["opslimit"] == argon2id.OPSLIMIT_INTERACTIVE
    assert doc["kdf"]["memlimit"] == argon2id.MEMLIMIT_INTERACTIVE
    assert decrypt_seed(doc, PW) == SEED
    k = Keystore("/nonexistent", opslimit=ks.MODERATE_OPSLIMIT, memlimit=ks.MODERATE_MEMLIMIT)
    assert (k.opslimit, k.memlimit) == (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)


def test_unicode_password(store: Keystore) -> None:
    store.import_seed("u", SEED, "pässwörd 🔑")
    assert store.export_seed("u", "pässwörd 🔑") == SEED
    with pytest.raises(WrongPassword):
        store.load("u", "passwort 🔑")


def test_keystore_new_load_export(store: Keystore) -> None:
    info = store.new("validator-1", PW)
    assert isinstance(info, KeyInfo)
    assert info.name == "validator-1"
    assert info.path == store.path("validator-1") == store.directory / "validator-1.json"
    assert info.path.is_file()
    assert decode_address(info.address) == info.public_key
    sk = store.load("validator-1", PW)
    assert isinstance(sk, SigningKey)
    assert sk.public_key == info.public_key
    assert store.export_seed("validator-1", PW) == sk.seed
    assert store.info("validator-1") == info


def test_import_seed_round_trip(store: Keystore) -> None:
    info = store.import_seed("alice", SEED, PW)
    assert info.public_key == SigningKey.from_seed(SEED).public_key
    assert store.export_seed("alice", PW) == SEED
    assert decrypt_seed(json.loads(info.path.read_text()), PW) == SEED


def test_import_file(tmp_path: Path, store: Keystore) -> None:
    other = Keystore(tmp_path / "other", opslimit=OPS, memlimit=MEM)
    src = other.import_seed("bob", SEED, "old")
    src_text = src.path.read_text()

    info = store.import_file("bobby", src.path, "old", new_password="new")
    assert info.name == "bobby"
    assert info.public_key == src.public_key
    assert info.created_at == src.created_at
    assert store.export_seed("bobby", "new") == SEED
    with pytest.raises(WrongPassword):
        store.load("bobby", "old")
    assert src.path.read_text() == src_text  # source untouched

    store.import_file("bob2", src.path, "old")  # keeps the password
    assert store.export_seed("bob2", "old") == SEED

    with pytest.raises(WrongPassword):
        store.import_file("bob3", src.path, "wrong")
    assert not store.path("bob3").exists()
    with pytest.raises(KeyExists):
        store.import_file("bobby", src.path, "old")
    with pytest.raises(KeyNotFound):
        store.import_file("bob4", tmp_path / "missing.json", "old")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CorruptKeystore, match="invalid JSON"):
        store.import_file("bob5", bad, "old")


# ------------------------------------------------------------------------------------ wrong password


def test_wrong_password_is_typed_and_clean(store: Keystore) -> None:
    store.new("alice", PW)
    with pytest.raises(WrongPassword) as ei:
        store.load("alice", PW + "x")
    exc = ei.value
    assert isinstance(exc, KeystoreError)
    assert str(exc) == "wrong password or corrupted key file"
    assert exc.reason == "wrong_password"
    assert exc.__cause__ is None and exc.__suppress_context__  # no nacl traceback chained
    with pytest.raises(WrongPassword):
        store.export_seed("alice", "")
    with pytest.raises(WrongPassword):
        decrypt_seed(fast_doc(), "nope")


def test_empty_password_refused_on_encrypt(store: Keystore) -> None:
    with pytest.raises(KeystoreError, match="empty"):
        store.new("alice", "")
    assert not store.path("alice").exists()


# -------------------------------------------------------------------------------------------- tampering


def _flip_hex(s: str, index: int = -1) -> str:
    chars = list(s)
    chars[index] = "1" if chars[index] != "1" else "2"
    return "".join(chars)


def _tamper_cases() -> dict[str, Any]:
    other = SigningKey.from_seed(b"\x07" * 32)

    def ct(d: dict[str, Any]) -> None:
        d["ciphertext"] = _flip_hex(d["ciphertext"], 10)

    def ct_tag(d: dict[str, Any]) -> None:
        d["ciphertext"] = _flip_hex(d["ciphertext"])

    def nonce(d: dict[str, Any]) -> None:
        d["cipher"]["nonce"] = _flip_hex(d["cipher"]["nonce"])

    def salt(d: dict[str, Any]) -> None:
        d["kdf"]["salt"] = _flip_hex(d["kdf"]["salt"])

    def opslimit(d: dict[str, Any]) -> None:
        d["kdf"]["opslimit"] += 1

    def memlimit(d: dict[str, Any]) -> None:
        d["kdf"]["memlimit"] *= 2

    def address(d: dict[str, Any]) -> None:
        d["address"] = encode_address(other.public_key)

    def public_key(d: dict[str, Any]) -> None:
        d["public_key"] = "0x" + other.public_key.hex()

    def address_and_public_key(d: dict[str, Any]) -> None:  # a consistent swap to another key
        d["public_key"] = "0x" + other.public_key.hex()
        d["address"] = encode_address(other.public_key)

    def name(d: dict[str, Any]) -> None:
        d["name"] = "mallory"

    def version(d: dict[str, Any]) -> None:
        d["version"] = 2

    return {
        f.__name__: f
        for f in (
            ct,
            ct_tag,
            nonce,
            salt,
            opslimit,
            memlimit,
            address,
            public_key,
            address_and_public_key,
            name,
            version,
        )
    }


@pytest.mark.parametrize("case", sorted(_tamper_cases()))
def test_tampered_document_never_decrypts(case: str) -> None:
    doc = fast_doc()
    _tamper_cases()[case](doc)
    with pytest.raises((WrongPassword, CorruptKeystore)):
        decrypt_seed(doc, PW)


@pytest.mark.parametrize("case", sorted(_tamper_cases()))
def test_tampered_file_never_loads(store: Keystore, case: str) -> None:
    info = store.import_seed("alice", SEED, PW)
    doc = json.loads(info.path.read_text())
    _tamper_cases()[case](doc)
    write_doc(info.path, doc)
    with pytest.raises((WrongPassword, CorruptKeystore)):
        store.load("alice", PW)


def test_renamed_file_is_refused(store: Keystore) -> None:
    info = store.import_seed("alice", SEED, PW)
    os.rename(info.path, store.path("bob"))
    with pytest.raises(CorruptKeystore, match="'name' is 'alice' but the file is named 'bob'"):
        store.load("bob", PW)
    # ... and editing the name to match the file name breaks authentication
    doc = json.loads(store.path("bob").read_text())
    doc["name"] = "bob"
    write_doc(store.path("bob"), doc)
    with pytest.raises(WrongPassword):
        store.load("bob", PW)


def test_spliced_ciphertext_from_another_file_is_refused() -> None:
    a = fast_doc(SEED, name="alice")
    b = fast_doc(b"\x09" * 32, name="alice")
    for field in ("ciphertext",):
        spliced = json.loads(json.dumps(a))
        spliced[field] = b[field]
        with pytest.raises(WrongPassword):
            decrypt_seed(spliced, PW)
    spliced = json.loads(json.dumps(b))
    spliced["kdf"] = a["kdf"]
    spliced["cipher"] = a["cipher"]
    with pytest.raises(WrongPassword):
        decrypt_seed(spliced, PW)


def test_every_single_character_edit_fails_or_yields_the_same_key(store: Keystore) -> None:
    """Change each character of the file in turn: the load must fail cleanly or return the same seed."""
    info = store.import_seed("alice", SEED, PW)
    original = info.path.read_text()
    successes = 0
    for i, c in enumerate(original):
        if c in "0123456789abcdef":
            repl = "0" if c != "0" else "1"
        elif c.isalpha():
            repl = "z" if c != "z" else "y"
        else:
            repl = "x"
        info.path.write_text(original[:i] + repl + original[i + 1 :])
        try:
            seed = store.export_seed("alice", PW)
        except KeystoreError:
            continue
        assert seed == SEED, f"edit at {i} ({c!r}->{repl!r}) loaded a different key"
        successes += 1
    # only edits of the (unauthenticated, informational) created_at digits may still load
    assert successes <= len(str(info.created_at))


# --------------------------------------------------------------------------------------- corrupt files


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "file is empty"),
        ("   \n", "file is empty"),
        ('{"version": 1, "name": ', "invalid JSON"),
        ("not json at all", "invalid JSON: Expecting value at line 1 column 1"),
        ("[1, 2, 3]", "must be a JSON object, got list"),
        ('{"version": 1, "version": 1}', "duplicate field 'version'"),
        ('{"version": NaN}', "NaN is not allowed"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
)
def test_invalid_json_is_corrupt(store: Keystore, content: str | bytes, message: str) -> None:
    store.directory.mkdir(mode=0o700)
    p = store.path("alice")
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    with pytest.raises(CorruptKeystore, match=message) as ei:
        store.load("alice", PW)
    assert str(p) in str(ei.value)
    assert ei.value.reason == "corrupt_keystore"
    with pytest.raises(CorruptKeystore, match=message):
        store.info("alice")


def test_truncated_file_is_corrupt(store: Keystore) -> None:
    info = store.import_seed("alice", SEED, PW)
    text = info.path.read_text()
    for cut in (1, 10, len(text) // 2, len(text) - 3):
        info.path.write_text(text[:cut])
        with pytest.raises(CorruptKeystore, match="invalid JSON"):
            store.load("alice", PW)


def test_oversized_file_is_refused(store: Keystore) -> None:
    store.directory.mkdir(mode=0o700)
    store.path("alice").write_text(" " * (ks.MAX_FILE_SIZE + 1))
    with pytest.raises(CorruptKeystore, match="larger than"):
        store.info("alice")


@pytest.mark.parametrize(
    "field",
    ["version", "name", "address", "public_key", "kdf", "cipher", "ciphertext", "created_at"],
)
def test_missing_top_level_field(field: str) -> None:
    doc = fast_doc()
    del doc[field]
    with pytest.raises(CorruptKeystore, match=f"missing field '{field}'"):
        decrypt_seed(doc, PW)


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ("kdf", "alg"),
        ("kdf", "opslimit"),
        ("kdf", "memlimit"),
        ("kdf", "salt"),
        ("cipher", "alg"),
        ("cipher", "nonce"),
    ],
)
def test_missing_nested_field(section: str, field: str) -> None:
    doc = fast_doc()
    del doc[section][field]
    with pytest.raises(CorruptKeystore, match=f"missing field '{section}.{field}'"):
        decrypt_seed(doc, PW)


def _set(path: str, value: Any) -> Any:
    def apply(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        d[last] = value

    return apply


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set("version", 2), "unsupported keystore version 2"),
        (_set("version", "1"), "'version' must be an integer"),
        (_set("version", True), "'version' must be an integer"),
        (_set("name", ".hidden"), "'name' is invalid"),
        (_set("name", 5), "'name' must be a string"),
        (_set("address", "ait1qqqq"), "'address' is invalid"),
        (_set("address", 7), "'address' must be a string"),
        (_set("public_key", "0x1234"), "'public_key' must be 32 bytes, got 2"),
        (_set("public_key", "abcd"), "'public_key' is not a valid 0x-prefixed hex string"),
        (_set("public_key", "0x" + "zz" * 32), "'public_key' is not a valid 0x-prefixed hex string"),
        (_set("public_key", "0x" + "ab " * 32), "'public_key' is not a valid 0x-prefixed hex string"),
        (_set("kdf", "argon2"), "'kdf' must be a JSON object"),
        (_set("kdf.alg", "scrypt"), "unsupported KDF algorithm 'scrypt'"),
        (_set("kdf.opslimit", 2.5), "'kdf.opslimit' must be an integer"),
        (_set("kdf.opslimit", 0), "'kdf.opslimit' is 0"),
        (_set("kdf.opslimit", 21), "'kdf.opslimit' is 21"),
        (_set("kdf.memlimit", 1024), "'kdf.memlimit' is 1024 bytes"),
        (_set("kdf.memlimit", "64MiB"), "'kdf.memlimit' must be an integer"),
        (_set("kdf.salt", "0x00"), "'kdf.salt' must be 16 bytes, got 1"),
        (_set("kdf.extra", 1), "unknown field 'kdf.extra'"),
        (_set("cipher", None), "'cipher' must be a JSON object"),
        (_set("cipher.alg", "aes-256-gcm"), "unsupported cipher 'aes-256-gcm'"),
        (_set("cipher.nonce", "0x" + "00" * 12), "'cipher.nonce' must be 24 bytes, got 12"),
        (_set("ciphertext", "0x" + "00" * 32), "'ciphertext' must be 48 bytes, got 32"),
        (_set("ciphertext", None), "'ciphertext' must be a 0x-prefixed hex string, got NoneType"),
        (_set("created_at", "yesterday"), "'created_at' must be an integer"),
        (_set("created_at", -1), "'created_at' must not be negative"),
        (_set("mac", "0x00"), "unknown field 'mac'"),
    ],
)
def test_invalid_field_is_named(mutate: Any, message: str) -> None:
    doc = fast_doc()
    mutate(doc)
    with pytest.raises(CorruptKeystore, match=message):
        decrypt_seed(doc, PW)


def test_address_must_match_public_key() -> None:
    doc = fast_doc()
    doc["address"] = encode_address(SigningKey.from_seed(b"\x01" * 32).public_key)
    with pytest.raises(CorruptKeystore, match="'address' does not match field 'public_key'"):
        decrypt_seed(doc, PW)


def test_not_a_dict_document() -> None:
    with pytest.raises(CorruptKeystore, match="must be a JSON object, got list"):
        decrypt_seed([], PW)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"), [("memlimit", 1 << 40), ("memlimit", (1 << 30) + 1), ("opslimit", 10**9)]
)
def test_absurd_kdf_limits_refused_before_kdf(
    monkeypatch: pytest.MonkeyPatch, store: Keystore, field: str, value: int
) -> None:
    info = store.import_seed("alice", SEED, PW)
    doc = json.loads(info.path.read_text())
    doc["kdf"][field] = value
    write_doc(info.path, doc)

    def boom(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("the KDF must not run for a file with absurd limits")

    monkeypatch.setattr(argon2id, "kdf", boom)
    with pytest.raises(CorruptKeystore, match=f"'kdf.{field}' is {value}"):
        store.load("alice", PW)
    with pytest.raises(CorruptKeystore, match=f"'kdf.{field}'"):
        decrypt_seed(doc, PW)


def test_encrypt_rejects_out_of_range_limits() -> None:
    with pytest.raises(ValueError, match="memlimit"):
        encrypt_seed(SEED, PW, "a", opslimit=OPS, memlimit=ks.MAX_MEMLIMIT + 1)
    with pytest.raises(ValueError, match="opslimit"):
        encrypt_seed(SEED, PW, "a", opslimit=0, memlimit=MEM)
    with pytest.raises(ValueError, match="opslimit"):
        Keystore("/x", opslimit=ks.MAX_OPSLIMIT + 1)


def test_encrypt_rejects_bad_seed() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        encrypt_seed(b"\x00" * 31, PW, "a", opslimit=OPS, memlimit=MEM)


def test_seed_not_matching_public_key_is_corrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file whose encrypted seed belongs to another key (made by a buggy writer) is refused."""
    other = SigningKey.from_seed(b"\x05" * 32)

    # Forge a correctly-authenticated file that claims another public key.
    def forged_from_seed(seed: bytes) -> SigningKey:
        return SigningKey(seed=bytes(seed), public_key=other.public_key, _sk=b"")

    monkeypatch.setattr(ks.SigningKey, "from_seed", staticmethod(forged_from_seed))
    doc = fast_doc()
    monkeypatch.undo()
    assert doc["public_key"] == "0x" + other.public_key.hex()
    with pytest.raises(CorruptKeystore, match="decrypted seed does not match field 'public_key'"):
        decrypt_seed(doc, PW)


# ---------------------------------------------------------------------------------------------- modes


@posix_only
def test_file_and_directory_modes(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        store = Keystore(tmp_path / "a" / "keys", opslimit=OPS, memlimit=MEM)
        info = store.new("alice", PW)
    finally:
        os.umask(old)
    assert mode(store.directory) == 0o700
    assert mode(info.path) == 0o600
    assert [p.name for p in store.directory.iterdir()] == ["alice.json"]  # no temp files left


@posix_only
def test_loose_file_mode_is_only_a_warning(store: Keystore, caplog: pytest.LogCaptureFixture) -> None:
    info = store.import_seed("alice", SEED, PW)
    os.chmod(info.path, 0o644)
    with caplog.at_level(logging.WARNING, logger="node.keystore"):
        assert store.export_seed("alice", PW) == SEED
    assert any("0644" in r.getMessage() and "0600" in r.getMessage() for r in caplog.records)


@posix_only
def test_loose_directory_mode_warns(store: Keystore, caplog: pytest.LogCaptureFixture) -> None:
    store.directory.mkdir(mode=0o755)
    os.chmod(store.directory, 0o755)
    with caplog.at_level(logging.WARNING, logger="node.keystore"):
        store.new("alice", PW)
    assert any("keystore directory" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["a", "alice", "Validator_1", "my-key.v2", "x" * 64, "0", "a.", "-a", "_"])
def test_valid_names(store: Keystore, name: str) -> None:
    assert store.path(name).name == f"{name}.json"
    assert ks.validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".hidden", "..", "x" * 65, "a/b", "../escape", "a b", "ключ", "a\x00", "a\n", "a:b", "a\\b"]
)
def test_invalid_names(store: Keystore, name: str) -> None:
    with pytest.raises(InvalidKeyName):
        store.path(name)
    with pytest.raises(InvalidKeyName):
        store.import_seed(name, SEED, PW)
    with pytest.raises(InvalidKeyName):
        encrypt_seed(SEED, PW, name, opslimit=OPS, memlimit=MEM)
    with pytest.raises(InvalidKeyName):
        store.info(name)
    assert not store.directory.exists() or list(store.directory.iterdir()) == []


def test_non_string_name(store: Keystore) -> None:
    with pytest.raises(InvalidKeyName, match="must be a string"):
        store.path(5)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- exists / missing


def test_duplicate_name_is_key_exists(store: Keystore) -> None:
    info = store.import_seed("alice", SEED, PW)
    before = info.path.read_bytes()
    with pytest.raises(KeyExists, match="alice"):
        store.new("alice", "other")
    with pytest.raises(KeyExists):
        store.import_seed("alice", b"\x02" * 32, PW)
    assert info.path.read_bytes() == before
    assert store.export_seed("alice", PW) == SEED


def test_key_exists_race_never_overwrites(store: Keystore, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the file appears between the existence check and the write, the new key is refused."""
    store.import_seed("alice", SEED, PW)
    real_exists = Path.exists
    monkeypatch.setattr(
        Path, "exists", lambda self: False if self.name == "alice.json" else real_exists(self)
    )
    with pytest.raises(KeyExists):
        store.import_seed("alice", b"\x02" * 32, PW)
    monkeypatch.undo()
    assert store.export_seed("alice", PW) == SEED
    assert sorted(p.name for p in store.directory.iterdir()) == ["alice.json"]


def test_missing_key(store: Keystore) -> None:
    with pytest.raises(KeyNotFound, match="bob"):
        store.info("bob")
    with pytest.raises(KeyNotFound):
        store.load("bob", PW)
    store.new("alice", PW)
    with pytest.raises(KeyNotFound):
        store.export_seed("bob", PW)


# ---------------------------------------------------------------------------------------- list / info


def test_list_and_info_without_password(store: Keystore, caplog: pytest.LogCaptureFixture) -> None:
    assert store.list() == []  # directory does not exist yet
    b = store.new("bob", "pw-b")
    a = store.import_seed("alice", SEED, "pw-a")
    c = store.new("Carol", "pw-c")
    # junk that must be skipped
    (store.directory / "broken.json").write_text("{")
    (store.directory / "notes.txt").write_text("hello")
    (store.directory / ".alice.json.abc.tmp").write_text("partial")
    (store.directory / "sub.json").mkdir()

    with caplog.at_level(logging.WARNING, logger="node.keystore"):
        listed = store.list()
    assert [k.name for k in listed] == ["Carol", "alice", "bob"]
    assert listed == [c, a, b]
    assert any("broken.json" in r.getMessage() for r in caplog.records)
    assert any("sub.json" in r.getMessage() for r in caplog.records)

    info = store.info("alice")
    assert info == a
    assert info.public_key == SigningKey.from_seed(SEED).public_key
    assert info.address == encode_address(info.public_key)
    assert info.created_at > 0


def test_keyinfo_is_frozen(store: Keystore) -> None:
    info = store.new("alice", PW)
    with pytest.raises(AttributeError):
        info.name = "bob"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------- passwords


class _FakeStdin(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.fixture
def no_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", _FakeStdin(False))
    monkeypatch.delenv("AITBC_PASSWORD", raising=False)


def test_password_file_beats_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_tty: None) -> None:
    pf = tmp_path / "pw"
    pf.write_text("from-file\n")
    monkeypatch.setenv("AITBC_PASSWORD", "from-env")
    assert read_password(password_file=pf) == "from-file"
    assert read_password(password_file=str(pf)) == "from-file"
    assert read_password() == "from-env"


def test_password_file_strips_exactly_one_newline(tmp_path: Path, no_tty: None) -> None:
    pf = tmp_path / "pw"
    for content, expected in [
        ("pw", "pw"),
        ("pw\n", "pw"),
        ("pw\r\n", "pw"),
        ("pw\n\n", "pw\n"),
        (" pw \n", " pw "),
    ]:
        pf.write_bytes(content.encode())
        assert read_password(password_file=pf) == expected


def test_password_file_errors(tmp_path: Path, no_tty: None) -> None:
    with pytest.raises(KeystoreError, match="does not exist"):
        read_password(password_file=tmp_path / "missing")
    pf = tmp_path / "empty"
    pf.write_text("\n")
    with pytest.raises(KeystoreError, match="is empty"):
        read_password(password_file=pf)


def test_custom_env_var(monkeypatch: pytest.MonkeyPatch, no_tty: None) -> None:
    monkeypatch.setenv("MY_PW", "secret")
    assert read_password(env="MY_PW") == "secret"
    with pytest.raises(KeystoreError, match="no password: set AITBC_PASSWORD or pass --password-file"):
        read_password()


def test_no_password_source(monkeypatch: pytest.MonkeyPatch, no_tty: None) -> None:
    monkeypatch.setenv("AITBC_PASSWORD", "")  # empty counts as unset
    with pytest.raises(KeystoreError, match="no password: set AITBC_PASSWORD or pass --password-file") as ei:
        read_password()
    assert type(ei.value) is KeystoreError


def test_interactive_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AITBC_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin", _FakeStdin(True))
    answers = iter(["s3cret", "s3cret"])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "Password: ") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(ks.getpass, "getpass", fake_getpass)
    assert read_password(prompt="Key password: ", confirm=True) == "s3cret"
    assert prompts == ["Key password: ", "Repeat password: "]

    answers = iter(["one", "two"])
    with pytest.raises(KeystoreError, match="do not match"):
        read_password(confirm=True)

    answers = iter(["only-once"])
    prompts.clear()
    assert read_password() == "only-once"
    assert prompts == ["Password: "]

    monkeypatch.setenv("AITBC_PASSWORD", "env-wins")
    assert read_password() == "env-wins"


# ----------------------------------------------------------------------------------- plain key files


def test_plain_key_file_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "config" / "node_key.json"
    sk = write_plain_key_file(p, SEED)
    assert sk.seed == SEED
    doc = json.loads(p.read_text())
    assert doc == {"type": "ed25519", "public_key": "0x" + sk.public_key.hex(), "seed": "0x" + SEED.hex()}
    loaded = read_plain_key_file(p)
    assert loaded.seed == SEED
    assert loaded.public_key == sk.public_key
    if os.name == "posix":
        assert mode(p) == 0o600
    assert sorted(x.name for x in p.parent.iterdir()) == ["node_key.json"]


def test_plain_key_file_no_overwrite(tmp_path: Path) -> None:
    p = tmp_path / "priv_validator_key.json"
    write_plain_key_file(p, SEED)
    with pytest.raises(KeyExists):
        write_plain_key_file(p, b"\x03" * 32)
    assert read_plain_key_file(p).seed == SEED
    write_plain_key_file(p, b"\x03" * 32, overwrite=True)
    assert read_plain_key_file(p).seed == b"\x03" * 32


def test_plain_key_file_public_key_mismatch(tmp_path: Path) -> None:
    p = tmp_path / "node_key.json"
    write_plain_key_file(p, SEED)
    doc = json.loads(p.read_text())
    doc["public_key"] = "0x" + SigningKey.from_seed(b"\x04" * 32).public_key.hex()
    p.write_text(json.dumps(doc))
    with pytest.raises(CorruptKeystore, match="'public_key' does not match the seed") as ei:
        read_plain_key_file(p)
    assert str(p) in str(ei.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "file is empty"),
        ("{", "invalid JSON"),
        ("[]", "must be a JSON object"),
        ('{"type": "ed25519", "public_key": "0x00"}', "missing field 'seed'"),
        ('{"type": "ed25519", "seed": "0x00"}', "missing field 'public_key'"),
        ('{"public_key": "0x00", "seed": "0x00"}', "missing field 'type'"),
        ('{"type": "secp256k1", "public_key": "0x00", "seed": "0x00"}', "unsupported key type 'secp256k1'"),
        ('{"type": "ed25519", "public_key": "0x00", "seed": "0x00"}', "'seed' must be 32 bytes, got 1"),
        ('{"type": "ed25519", "public_key": "0x00", "seed": 12}', "'seed' must be a 0x-prefixed hex string"),
        (
            '{"type": "ed25519", "public_key": "0x00", "seed": "0x' + "00" * 32 + '"}',
            "'public_key' must be 32 bytes, got 1",
        ),
        (
            '{"type": "ed25519", "public_key": "0x00", "seed": "0x' + "00" * 32 + '", "x": 1}',
            "unknown field 'x'",
        ),
    ],
)
def test_plain_key_file_corrupt(tmp_path: Path, content: str, message: str) -> None:
    p = tmp_path / "node_key.json"
    p.write_text(content)
    with pytest.raises(CorruptKeystore, match=message):
        read_plain_key_file(p)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo")
def test_fifo_is_not_read(tmp_path: Path) -> None:
    p = tmp_path / "node_key.json"
    os.mkfifo(p)
    with pytest.raises(CorruptKeystore, match="not a regular file"):
        read_plain_key_file(p)


def test_plain_key_file_missing(tmp_path: Path) -> None:
    with pytest.raises(KeyNotFound):
        read_plain_key_file(tmp_path / "nope.json")


def test_plain_key_file_bad_seed_length(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        write_plain_key_file(tmp_path / "k.json", b"\x00" * 16)
    assert not (tmp_path / "k.json").exists()
