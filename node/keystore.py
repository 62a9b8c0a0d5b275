"""Encrypted keystore for account and validator keys, plus plain key files for node keys.

Keystore files
--------------
One JSON file per key, ``<directory>/<name>.json``, mode 0600, in a directory of mode 0700::

    {"version": 1, "name": "alice", "address": "ait1…", "public_key": "0x…",
     "kdf": {"alg": "argon2id13", "opslimit": 2, "memlimit": 67108864, "salt": "0x<16 bytes>"},
     "cipher": {"alg": "xchacha20poly1305-ietf", "nonce": "0x<24 bytes>"},
     "ciphertext": "0x…", "created_at": 1764000000}

The 32-byte Ed25519 seed is encrypted with XChaCha20-Poly1305 (IETF) under a key derived from the
password with Argon2id (``crypto_pwhash`` ALG_ARGON2ID13). The associated data is the canonical JSON
(``sort_keys``, no spaces) of ``{version, name, address, public_key, kdf, cipher}``, so the KDF
parameters, the salt, the nonce, the name and the address are all authenticated: changing any of
them makes decryption fail. ``created_at`` is informational and not authenticated. After
decryption the seed's public key is checked against ``public_key`` and ``address``.

KDF limits read from a file are bounded (``opslimit`` ≤ :data:`MAX_OPSLIMIT`, ``memlimit`` ≤
:data:`MAX_MEMLIMIT`) *before* the KDF runs, so a hostile file cannot exhaust memory or CPU.

The password is encoded as UTF-8 without any Unicode normalization.

Plain key files
---------------
Node keys (the node's own p2p and validator keys, like CometBFT's ``priv_validator_key.json``)
have no password: ``{"type": "ed25519", "public_key": "0x…", "seed": "0x…"}``, mode 0600; see
:func:`write_plain_key_file` and :func:`read_plain_key_file`.

All writes are atomic: a temporary file (mode 0600) in the same directory is written and fsynced,
then moved into place and the directory is fsynced.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import stat
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.utils
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.pwhash import argon2id

from state.address import decode_address, encode_address
from state.crypto import SigningKey
from state.errors import AddressError, AitbcError

__all__ = [
    "CIPHER_ALG",
    "DEFAULT_MEMLIMIT",
    "DEFAULT_OPSLIMIT",
    "KDF_ALG",
    "MAX_MEMLIMIT",
    "MAX_OPSLIMIT",
    "MODERATE_MEMLIMIT",
    "MODERATE_OPSLIMIT",
    "VERSION",
    "CorruptKeystore",
    "KeyExists",
    "KeyInfo",
    "KeyNotFound",
    "Keystore",
    "KeystoreError",
    "InvalidKeyName",
    "WrongPassword",
    "decrypt_seed",
    "encrypt_seed",
    "read_password",
    "read_plain_key_file",
    "validate_name",
    "write_plain_key_file",
]

log = logging.getLogger(__name__)

VERSION = 1
KDF_ALG = "argon2id13"
CIPHER_ALG = "xchacha20poly1305-ietf"
PLAIN_KEY_TYPE = "ed25519"

SEED_LEN = 32
PUBKEY_LEN = 32
SALT_LEN = argon2id.SALTBYTES  # 16
NONCE_LEN = 24  # crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
TAG_LEN = 16  # crypto_aead_xchacha20poly1305_ietf_ABYTES
KEY_LEN = 32  # crypto_aead_xchacha20poly1305_ietf_KEYBYTES
CIPHERTEXT_LEN = SEED_LEN + TAG_LEN

#: Production defaults (libsodium's INTERACTIVE limits: 2 passes, 64 MiB).
DEFAULT_OPSLIMIT = argon2id.OPSLIMIT_INTERACTIVE
DEFAULT_MEMLIMIT = argon2id.MEMLIMIT_INTERACTIVE
#: Stronger limits for long-lived keys (3 passes, 256 MiB); pass them as ``opslimit``/``memlimit``.
MODERATE_OPSLIMIT = argon2id.OPSLIMIT_MODERATE
MODERATE_MEMLIMIT = argon2id.MEMLIMIT_MODERATE

MIN_OPSLIMIT = argon2id.OPSLIMIT_MIN
MIN_MEMLIMIT = argon2id.MEMLIMIT_MIN
#: Upper bounds accepted when reading (and writing) a file; libsodium's SENSITIVE limits fit.
MAX_OPSLIMIT = 20
MAX_MEMLIMIT = 1 << 30  # 1 GiB

#: Key files larger than this are refused unread.
MAX_FILE_SIZE = 64 * 1024

_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HEX_RE = re.compile(r"0x[0-9a-fA-F]*")

_TOP_FIELDS = ("version", "name", "address", "public_key", "kdf", "cipher", "ciphertext", "created_at")
_KDF_FIELDS = ("alg", "opslimit", "memlimit", "salt")
_CIPHER_FIELDS = ("alg", "nonce")
_PLAIN_FIELDS = ("type", "public_key", "seed")


# --------------------------------------------------------------------------------------------- errors


class KeystoreError(AitbcError):
    """Base of every keystore error. ``str(e)`` is a human message; ``reason`` a short code."""

    reason = "keystore"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message, reason)


class WrongPassword(KeystoreError):
    """The password is wrong, or the encrypted part of the file was altered."""

    reason = "wrong_password"

    def __init__(
        self, message: str = "wrong password or corrupted key file", reason: str | None = None
    ) -> None:
        super().__init__(message, reason)


class KeyNotFound(KeystoreError):
    """No key file with that name."""

    reason = "key_not_found"


class KeyExists(KeystoreError):
    """A key file with that name already exists (keys are never overwritten)."""

    reason = "key_exists"


class CorruptKeystore(KeystoreError):
    """A key file that is not valid: the message names the missing or invalid field."""

    reason = "corrupt_keystore"


class InvalidKeyName(KeystoreError):
    """A key name that breaks the naming rules (see :func:`validate_name`)."""

    reason = "invalid_key_name"


# -------------------------------------------------------------------------------------------- helpers


def validate_name(name: str) -> str:
    """Return ``name`` if it is 1–64 chars of ``[A-Za-z0-9._-]`` not starting with '.'.

    Raises :class:`InvalidKeyName` otherwise.
    """
    if not isinstance(name, str):
        raise InvalidKeyName(f"key name must be a string, got {type(name).__name__}")
    if not name:
        raise InvalidKeyName("key name must not be empty")
    if len(name) > 64:
        raise InvalidKeyName(f"key name is {len(name)} characters long; at most 64 are allowed")
    if not _NAME_RE.fullmatch(name):
        raise InvalidKeyName(f"key name {name!r} may only contain letters, digits, '.', '_' and '-'")
    if name.startswith("."):
        raise InvalidKeyName(f"key name {name!r} must not start with '.'")
    return name


def _to_hex(b: bytes) -> str:
    return "0x" + b.hex()


def _parse_hex(value: Any, field: str, length: int, *, where: str = "") -> bytes:
    label = f"{where}{field}"
    if not isinstance(value, str):
        raise CorruptKeystore(f"field '{label}' must be a 0x-prefixed hex string, got {type(value).__name__}")
    if not _HEX_RE.fullmatch(value) or len(value) % 2:
        raise CorruptKeystore(f"field '{label}' is not a valid 0x-prefixed hex string")
    raw = bytes.fromhex(value[2:])
    if len(raw) != length:
        raise CorruptKeystore(f"field '{label}' must be {length} bytes, got {len(raw)}")
    return raw


def _require_int(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise CorruptKeystore(f"field '{field}' must be an integer, got {type(value).__name__}")
    return value


def _check_fields(obj: Any, fields: tuple[str, ...], where: str) -> dict[str, Any]:
    what = f"field '{where.rstrip('.')}'" if where else "key file"
    if not isinstance(obj, dict):
        raise CorruptKeystore(f"{what} must be a JSON object, got {type(obj).__name__}")
    for f in fields:
        if f not in obj:
            raise CorruptKeystore(f"missing field '{where}{f}'")
    extra = sorted(k for k in obj if k not in fields)
    if extra:
        raise CorruptKeystore(f"unknown field '{where}{extra[0]}'")
    return obj


def _check_limits(opslimit: Any, memlimit: Any, *, error: type[Exception]) -> tuple[int, int]:
    """Bound the Argon2id limits; ``error`` is raised with a message naming the bad one."""
    for value, field in ((opslimit, "opslimit"), (memlimit, "memlimit")):
        if not isinstance(value, int) or isinstance(value, bool):
            raise error(f"field 'kdf.{field}' must be an integer, got {type(value).__name__}")
    if not MIN_OPSLIMIT <= opslimit <= MAX_OPSLIMIT:
        raise error(
            f"field 'kdf.opslimit' is {opslimit}; it must be between {MIN_OPSLIMIT} and {MAX_OPSLIMIT}"
        )
    if not MIN_MEMLIMIT <= memlimit <= MAX_MEMLIMIT:
        raise error(
            f"field 'kdf.memlimit' is {memlimit} bytes; it must be between {MIN_MEMLIMIT} and "
            f"{MAX_MEMLIMIT} (1 GiB)"
        )
    return opslimit, memlimit


def _password_bytes(password: str) -> bytes:
    if not isinstance(password, str):
        raise TypeError(f"password must be a str, got {type(password).__name__}")
    return password.encode("utf-8")


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A key file after structural validation (nothing decrypted yet)."""

    name: str
    address: str
    public_key: bytes
    opslimit: int
    memlimit: int
    salt: bytes
    nonce: bytes
    ciphertext: bytes
    created_at: int

    def associated_data(self) -> bytes:
        return _associated_data(
            self.name, self.address, self.public_key, self.opslimit, self.memlimit, self.salt, self.nonce
        )


def _associated_data(
    name: str, address: str, public_key: bytes, opslimit: int, memlimit: int, salt: bytes, nonce: bytes
) -> bytes:
    return _canonical_json(
        {
            "version": VERSION,
            "name": name,
            "address": address,
            "public_key": _to_hex(public_key),
            "kdf": {"alg": KDF_ALG, "opslimit": opslimit, "memlimit": memlimit, "salt": _to_hex(salt)},
            "cipher": {"alg": CIPHER_ALG, "nonce": _to_hex(nonce)},
        }
    )


def _parse_doc(doc: Any) -> _Parsed:
    """Validate the structure of a key-file document; raise :class:`CorruptKeystore` precisely."""
    if not isinstance(doc, dict):
        raise CorruptKeystore(f"key file must be a JSON object, got {type(doc).__name__}")
    if "version" not in doc:
        raise CorruptKeystore("missing field 'version'")
    version = doc["version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise CorruptKeystore(f"field 'version' must be an integer, got {type(version).__name__}")
    if version != VERSION:
        raise CorruptKeystore(f"unsupported keystore version {version} (this node reads version {VERSION})")
    _check_fields(doc, _TOP_FIELDS, "")

    name = doc["name"]
    if not isinstance(name, str):
        raise CorruptKeystore(f"field 'name' must be a string, got {type(name).__name__}")
    try:
        validate_name(name)
    except InvalidKeyName as exc:
        raise CorruptKeystore(f"field 'name' is invalid: {exc}") from None

    public_key = _parse_hex(doc["public_key"], "public_key", PUBKEY_LEN)
    address = doc["address"]
    if not isinstance(address, str):
        raise CorruptKeystore(f"field 'address' must be a string, got {type(address).__name__}")
    try:
        addr_pk = decode_address(address)
    except AddressError as exc:
        raise CorruptKeystore(f"field 'address' is invalid: {exc}") from None
    if addr_pk != public_key or address != encode_address(public_key):
        raise CorruptKeystore("field 'address' does not match field 'public_key'")

    kdf = _check_fields(doc["kdf"], _KDF_FIELDS, "kdf.")
    if kdf["alg"] != KDF_ALG:
        raise CorruptKeystore(
            f"unsupported KDF algorithm {kdf['alg']!r} in field 'kdf.alg' (expected {KDF_ALG!r})"
        )
    opslimit, memlimit = _check_limits(kdf["opslimit"], kdf["memlimit"], error=CorruptKeystore)
    salt = _parse_hex(kdf["salt"], "salt", SALT_LEN, where="kdf.")

    cipher = _check_fields(doc["cipher"], _CIPHER_FIELDS, "cipher.")
    if cipher["alg"] != CIPHER_ALG:
        raise CorruptKeystore(
            f"unsupported cipher {cipher['alg']!r} in field 'cipher.alg' (expected {CIPHER_ALG!r})"
        )
    nonce = _parse_hex(cipher["nonce"], "nonce", NONCE_LEN, where="cipher.")

    ciphertext = _parse_hex(doc["ciphertext"], "ciphertext", CIPHERTEXT_LEN)
    created_at = _require_int(doc["created_at"], "created_at")
    if created_at < 0:
        raise CorruptKeystore(f"field 'created_at' must not be negative, got {created_at}")

    return _Parsed(
        name=name,
        address=address,
        public_key=public_key,
        opslimit=opslimit,
        memlimit=memlimit,
        salt=salt,
        nonce=nonce,
        ciphertext=ciphertext,
        created_at=created_at,
    )


def _decrypt_parsed(p: _Parsed, password: str) -> bytes:
    pw = _password_bytes(password)
    key = argon2id.kdf(KEY_LEN, pw, p.salt, opslimit=p.opslimit, memlimit=p.memlimit)
    try:
        seed = crypto_aead_xchacha20poly1305_ietf_decrypt(p.ciphertext, p.associated_data(), p.nonce, key)
    except nacl.exceptions.CryptoError:
        raise WrongPassword() from None
    if len(seed) != SEED_LEN:  # cannot happen with a checked ciphertext length; be explicit anyway
        raise CorruptKeystore(f"decrypted seed is {len(seed)} bytes, expected {SEED_LEN}")
    sk = SigningKey.from_seed(seed)
    if sk.public_key != p.public_key:
        raise CorruptKeystore("decrypted seed does not match field 'public_key'")
    if encode_address(sk.public_key) != p.address:
        raise CorruptKeystore("decrypted seed does not match field 'address'")
    return sk.seed


# ------------------------------------------------------------------------------------ encrypt/decrypt


def encrypt_seed(
    seed: bytes,
    password: str,
    name: str,
    *,
    opslimit: int = DEFAULT_OPSLIMIT,
    memlimit: int = DEFAULT_MEMLIMIT,
    created_at: int | None = None,
) -> dict[str, Any]:
    """Encrypt a 32-byte Ed25519 seed into a version-1 key-file document (a JSON-ready dict).

    ``opslimit``/``memlimit`` default to libsodium's INTERACTIVE limits; pass
    :data:`MODERATE_OPSLIMIT`/:data:`MODERATE_MEMLIMIT` for stronger protection. They must lie in
    ``[OPSLIMIT_MIN, MAX_OPSLIMIT]`` and ``[MEMLIMIT_MIN, MAX_MEMLIMIT]`` (``ValueError`` otherwise)
    so that every file written can be read back. ``created_at`` defaults to now (Unix seconds).

    Raises :class:`InvalidKeyName` for a bad ``name``, :class:`KeystoreError` for an empty password,
    ``ValueError`` for a seed that is not 32 bytes.
    """
    validate_name(name)
    seed = bytes(seed)
    if len(seed) != SEED_LEN:
        raise ValueError(f"Ed25519 seed must be {SEED_LEN} bytes, got {len(seed)}")
    pw = _password_bytes(password)
    if not pw:
        raise KeystoreError("password must not be empty", reason="empty_password")
    _check_limits(opslimit, memlimit, error=ValueError)
    if created_at is None:
        created_at = int(time.time())

    sk = SigningKey.from_seed(seed)
    address = encode_address(sk.public_key)
    salt = nacl.utils.random(SALT_LEN)
    nonce = nacl.utils.random(NONCE_LEN)
    key = argon2id.kdf(KEY_LEN, pw, salt, opslimit=opslimit, memlimit=memlimit)
    ad = _associated_data(name, address, sk.public_key, opslimit, memlimit, salt, nonce)
    ciphertext = crypto_aead_xchacha20poly1305_ietf_encrypt(seed, ad, nonce, key)
    return {
        "version": VERSION,
        "name": name,
        "address": address,
        "public_key": _to_hex(sk.public_key),
        "kdf": {"alg": KDF_ALG, "opslimit": opslimit, "memlimit": memlimit, "salt": _to_hex(salt)},
        "cipher": {"alg": CIPHER_ALG, "nonce": _to_hex(nonce)},
        "ciphertext": _to_hex(ciphertext),
        "created_at": int(created_at),
    }


def decrypt_seed(doc: dict[str, Any], password: str) -> bytes:
    """Decrypt a key-file document and return the 32-byte seed.

    The document is validated first (:class:`CorruptKeystore` names the missing/invalid field,
    unsupported version or algorithm, or out-of-bounds KDF limits, all before the KDF runs). A
    failed authentication raises :class:`WrongPassword`. A seed whose public key or address does
    not match the document raises :class:`CorruptKeystore`.
    """
    return _decrypt_parsed(_parse_doc(doc), password)


# ------------------------------------------------------------------------------------------- file I/O


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(directory: Path, *, warn: bool = True) -> None:
    """Create ``directory`` (and parents) with mode 0700 if missing.

    With ``warn``, log a warning if an existing directory is group/world-accessible.
    """
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
        if directory.parent != directory:
            _fsync_dir(directory.parent)
        return
    if not directory.is_dir():
        raise KeystoreError(f"{directory} exists and is not a directory", reason="io")
    if warn:
        _warn_if_exposed(directory, dir_mode=True)


def _warn_if_exposed(path: Path, *, dir_mode: bool = False, st: os.stat_result | None = None) -> None:
    if os.name != "posix":
        return
    try:
        mode = stat.S_IMODE((st or os.stat(path)).st_mode)
    except OSError:
        return
    if mode & 0o077:
        want = "0700" if dir_mode else "0600"
        log.warning(
            "%s %s has mode %04o; it should be %s (run: chmod %s %s)",
            "keystore directory" if dir_mode else "key file",
            path,
            mode,
            want,
            want[1:],
            path,
        )


def atomic_write(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600.

    Without ``overwrite`` the final step is a hard link, which fails if ``path`` already exists, so
    a concurrent writer can never be clobbered (:class:`KeyExists`).
    """
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            if os.name == "posix":
                os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise KeyExists(f"{path} already exists") from None
            except OSError:  # file system without hard links: best effort
                if path.exists():
                    raise KeyExists(f"{path} already exists") from None
                os.replace(tmp, path)
            else:
                tmp.unlink()
        _fsync_dir(directory)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise


def _read_json_file(path: Path) -> Any:
    """Read a small JSON file; missing file -> :class:`KeyNotFound`, bad content -> :class:`CorruptKeystore`."""
    try:
        # O_NONBLOCK: a FIFO planted in the directory must not hang us (no effect on regular files)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise KeyNotFound(f"no key file at {path}") from None
    except IsADirectoryError:
        raise CorruptKeystore(f"{path} is a directory, not a key file") from None
    except OSError as exc:
        raise KeystoreError(f"cannot open {path}: {exc.strerror or exc}", reason="io") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CorruptKeystore(f"{path} is not a regular file")
        _warn_if_exposed(path, st=st)
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_FILE_SIZE + 1)
    except OSError as exc:
        raise KeystoreError(f"cannot read {path}: {exc.strerror or exc}", reason="io") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_SIZE:
        raise CorruptKeystore(f"{path}: file is larger than {MAX_FILE_SIZE} bytes; not a key file")
    if not raw.strip():
        raise CorruptKeystore(f"{path}: file is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptKeystore(f"{path}: file is not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise CorruptKeystore(
            f"{path}: invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise CorruptKeystore(f"{path}: invalid JSON: {exc}") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate field {k!r}")
        out[k] = v
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _with_path(exc: KeystoreError, path: Path) -> KeystoreError:
    """The same error type with the file path in front of the message (if not already there)."""
    msg = str(exc)
    if msg.startswith(str(path)):
        return exc
    return type(exc)(f"{path}: {msg}", reason=exc.reason)


def _read_doc(path: Path) -> tuple[Any, _Parsed]:
    doc = _read_json_file(path)
    try:
        return doc, _parse_doc(doc)
    except CorruptKeystore as exc:
        raise _with_path(exc, path) from None


# ------------------------------------------------------------------------------------------- keystore


@dataclass(frozen=True)
class KeyInfo:
    """Public facts about a stored key (readable without the password)."""

    name: str
    address: str
    public_key: bytes
    path: Path
    created_at: int


class Keystore:
    """A directory of password-encrypted key files, one ``<name>.json`` per key.

    ``opslimit``/``memlimit`` are the Argon2id limits used for files this keystore *writes*
    (default INTERACTIVE; pass ``MODERATE_OPSLIMIT``/``MODERATE_MEMLIMIT`` for stronger ones).
    Reading accepts any limits within the bounds. The directory is created (mode 0700) on the
    first write; existing keys are never overwritten.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        opslimit: int = DEFAULT_OPSLIMIT,
        memlimit: int = DEFAULT_MEMLIMIT,
    ) -> None:
        self.directory = Path(directory)
        self.opslimit, self.memlimit = _check_limits(opslimit, memlimit, error=ValueError)

    def __repr__(self) -> str:
        return f"Keystore({str(self.directory)!r})"

    def path(self, name: str) -> Path:
        """Path of the key file for ``name`` (validated; the file need not exist)."""
        return self.directory / f"{validate_name(name)}.json"

    # ---- writing

    def new(self, name: str, password: str) -> KeyInfo:
        """Generate a fresh Ed25519 key, store it encrypted under ``name`` and return its info."""
        return self.import_seed(name, SigningKey.generate().seed, password)

    def import_seed(self, name: str, seed: bytes, password: str) -> KeyInfo:
        """Store an existing 32-byte seed encrypted under ``name``.

        Raises :class:`KeyExists` if ``name`` is taken, :class:`InvalidKeyName` for a bad name.
        """
        path = self.path(name)
        if path.exists():
            raise KeyExists(f"key {name!r} already exists at {path}")
        doc = encrypt_seed(seed, password, name, opslimit=self.opslimit, memlimit=self.memlimit)
        return self._store(path, doc)

    def import_file(
        self, name: str, path: str | os.PathLike[str], password: str, *, new_password: str | None = None
    ) -> KeyInfo:
        """Import the key in another keystore JSON file under ``name``.

        The source is decrypted with ``password`` and re-encrypted (the name is authenticated, and
        this keystore's KDF limits apply) with ``new_password``, or ``password`` if not given. The
        source's ``created_at`` is kept. The source file is left untouched.
        """
        dest = self.path(name)
        if dest.exists():
            raise KeyExists(f"key {name!r} already exists at {dest}")
        src = Path(path)
        _, parsed = _read_doc(src)
        try:
            seed = _decrypt_parsed(parsed, password)
        except CorruptKeystore as exc:
            raise _with_path(exc, src) from None
        doc = encrypt_seed(
            seed,
            password if new_password is None else new_password,
            name,
            opslimit=self.opslimit,
            memlimit=self.memlimit,
            created_at=parsed.created_at,
        )
        return self._store(dest, doc)

    def _store(self, path: Path, doc: dict[str, Any]) -> KeyInfo:
        _ensure_dir(self.directory)
        data = json.dumps(doc, indent=2).encode("ascii") + b"\n"
        try:
            atomic_write(path, data, overwrite=False)
        except KeyExists:
            raise KeyExists(f"key {doc['name']!r} already exists at {path}") from None
        log.info("stored key %r (%s) at %s", doc["name"], doc["address"], path)
        return KeyInfo(
            name=doc["name"],
            address=doc["address"],
            public_key=bytes.fromhex(doc["public_key"][2:]),
            path=path,
            created_at=doc["created_at"],
        )

    # ---- reading

    def _read(self, name: str) -> _Parsed:
        path = self.path(name)
        try:
            _, parsed = _read_doc(path)
        except KeyNotFound:
            raise KeyNotFound(f"no key named {name!r} in {self.directory}") from None
        if parsed.name != name:
            raise CorruptKeystore(f"{path}: field 'name' is {parsed.name!r} but the file is named {name!r}")
        return parsed

    def info(self, name: str) -> KeyInfo:
        """Name, address, public key, path and creation time of a key; no password needed."""
        p = self._read(name)
        return KeyInfo(
            name=p.name,
            address=p.address,
            public_key=p.public_key,
            path=self.path(name),
            created_at=p.created_at,
        )

    def list(self) -> list[KeyInfo]:
        """All readable keys, sorted by name. Unreadable or invalid files are skipped with a warning."""
        if not self.directory.is_dir():
            return []
        out: list[KeyInfo] = []
        for entry in sorted(self.directory.iterdir()):
            if entry.suffix != ".json" or entry.name.startswith("."):
                continue
            name = entry.name[: -len(".json")]
            try:
                out.append(self.info(name))
            except (KeystoreError, OSError) as exc:
                log.warning("skipping key file %s: %s", entry, exc)
        out.sort(key=lambda k: k.name)
        return out

    def load(self, name: str, password: str) -> SigningKey:
        """Decrypt the key ``name``. :class:`WrongPassword` if the password is wrong."""
        p = self._read(name)
        try:
            seed = _decrypt_parsed(p, password)
        except CorruptKeystore as exc:
            raise _with_path(exc, self.path(name)) from None
        return SigningKey.from_seed(seed)

    def export_seed(self, name: str, password: str) -> bytes:
        """The raw 32-byte seed of key ``name`` (handle with care)."""
        return self.load(name, password).seed


# ------------------------------------------------------------------------------------------ passwords


def read_password(
    *,
    env: str = "AITBC_PASSWORD",
    password_file: str | os.PathLike[str] | None = None,
    prompt: str | None = None,
    confirm: bool = False,
) -> str:
    """Get a password non-interactively if possible, else by prompting.

    Order: ``password_file`` (its content with one trailing newline removed) > the environment
    variable ``env`` (if set and non-empty) > an interactive ``getpass`` prompt (text ``prompt``,
    default ``"Password: "``) when stdin is a TTY, asked twice when ``confirm`` is true. Otherwise,
    or for an empty password file/answer or mismatched confirmation, :class:`KeystoreError`.
    """
    if password_file is not None:
        pf = Path(password_file)
        try:
            text = pf.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise KeystoreError(f"password file {pf} does not exist", reason="no_password") from None
        except UnicodeDecodeError:
            raise KeystoreError(f"password file {pf} is not UTF-8 text", reason="no_password") from None
        except OSError as exc:
            raise KeystoreError(
                f"cannot read password file {pf}: {exc.strerror or exc}", reason="no_password"
            ) from None
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        if not text:
            raise KeystoreError(f"password file {pf} is empty", reason="no_password")
        return text

    value = os.environ.get(env)
    if value:
        return value

    stdin = sys.stdin
    if stdin is not None and stdin.isatty():
        first = getpass.getpass(prompt or "Password: ")
        if not first:
            raise KeystoreError("empty password", reason="no_password")
        if confirm:
            second = getpass.getpass("Repeat password: ")
            if second != first:
                raise KeystoreError("passwords do not match", reason="no_password")
        return first

    raise KeystoreError(f"no password: set {env} or pass --password-file", reason="no_password")


# ---------------------------------------------------------------------------------- plain key files


def write_plain_key_file(path: str | os.PathLike[str], seed: bytes, *, overwrite: bool = False) -> SigningKey:
    """Write an unencrypted node key file ``{"type": "ed25519", "public_key": "0x…", "seed": "0x…"}``.

    Mode 0600, written atomically; missing parent directories are created with mode 0700. An
    existing file is never replaced unless ``overwrite`` is true (:class:`KeyExists`), since
    overwriting a validator key loses it. Returns the key.
    """
    seed = bytes(seed)
    if len(seed) != SEED_LEN:
        raise ValueError(f"Ed25519 seed must be {SEED_LEN} bytes, got {len(seed)}")
    sk = SigningKey.from_seed(seed)
    p = Path(path)
    _ensure_dir(p.parent, warn=False)
    doc = {"type": PLAIN_KEY_TYPE, "public_key": _to_hex(sk.public_key), "seed": _to_hex(sk.seed)}
    atomic_write(p, json.dumps(doc, indent=2).encode("ascii") + b"\n", overwrite=overwrite)
    return sk


def read_plain_key_file(path: str | os.PathLike[str]) -> SigningKey:
    """Read a node key file written by :func:`write_plain_key_file`.

    :class:`KeyNotFound` if missing; :class:`CorruptKeystore` naming the problem for bad JSON, a
    missing/invalid field, an unsupported ``type`` or a ``public_key`` that does not match the seed.
    """
    p = Path(path)
    doc = _read_json_file(p)
    try:
        _check_fields(doc, _PLAIN_FIELDS, "")
        if doc["type"] != PLAIN_KEY_TYPE:
            raise CorruptKeystore(
                f"unsupported key type {doc['type']!r} in field 'type' (expected {PLAIN_KEY_TYPE!r})"
            )
        seed = _parse_hex(doc["seed"], "seed", SEED_LEN)
        public_key = _parse_hex(doc["public_key"], "public_key", PUBKEY_LEN)
        sk = SigningKey.from_seed(seed)
        if sk.public_key != public_key:
            raise CorruptKeystore("field 'public_key' does not match the seed")
    except CorruptKeystore as exc:
        raise _with_path(exc, p) from None
    return sk
