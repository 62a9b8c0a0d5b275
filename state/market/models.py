"""Models as on-chain objects: the ``model_register`` transaction, its manifest, rule and record.

A model (for the ``llm-generate`` job kind) is registered once by a transaction whose body is its
MANIFEST, a canonical CBOR map with exactly these keys:

==============  ===================================================================================
``v``           1
``name``        1..64 characters of ``[a-z0-9._-]``, unique per chain
``format``      the model file format, e.g. ``aitbc-llm-int8-v1`` (:data:`FORMATS`)
``arch``        the model config map of that format (at most 32 keys; values small integers, bools or
                rationals ``[num, den]``); the format validates it (``LlamaConfig.from_map``)
``size``        bytes of the model file: what ``arch`` implies for the weights + the tokenizer section
``chunk_size``  the format's ``CHUNK_SIZE``: the file travels as blobs of that many bytes (the last
                one shorter)
``root``        32-byte Merkle root (``state.types.merkle_root``, RFC 6962) over the file's chunks,
                in file order (``state.llm.modelfile.chunk_root``)
``index``       SHA-256 of the chunk index (:func:`chunk_index`): per chunk, its SHA-256 (the id of
                its blob) then its RFC 6962 leaf hash ``sha256(0x00 || chunk)``, 64 bytes each. The
                index travels as one blob; its leaf hashes must give ``root`` (:func:`parse_index`), so a
                node that has it can find every chunk's blob and prove every chunk against ``root``
``tokenizer``   ``{offset, size, hash}``: the tokenizer section of the file (bytes ``offset`` ..
                ``offset + size``, right after the weights) and its SHA-256
``licence``     text of at most 4 KiB (UTF-8)
==============  ===================================================================================

The model id is the SHA-256 of the canonical CBOR of the manifest (:func:`model_id`). Static checks
(:func:`check_model_register`, :class:`TxError`) cover the schema, the format, the arch, the chunk size
and the size; the rule (:func:`apply_model_register`, :class:`ExecFailure`) checks the chain's
``max_model_bytes`` and that the name is free, then burns ``model_register_fee_per_mib`` per started
MiB of ``size`` (on top of the transaction fee) and stores the record.

State objects (``<seq8>`` an 8-byte big-endian registration number):

=============================  ===========================================================
``mdl/r/<id32>``               the model record (:class:`Model`)
``mdl/n/<name>``               model id by name
``mdl/s/<seq8>``               model id, every model in registration order
``mdl/o/<owner32><seq8>``      model id, models of an owner
``mdl/stats``                  ``{models, burned}`` (:class:`ModelStats`)
=============================  ===========================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .. import codec
from ..address import encode_address
from ..errors import AitbcError, TxError
from ..llm.config import FORMAT, LlamaConfig, LlmError
from ..llm.modelfile import CHUNK_SIZE, weights_size
from ..machine import ExecFailure, Execution, TxKind
from ..merkle import verify_merkle_proof
from ..types import U64_MAX, Transaction, merkle_root
from .bodies import TX_MODEL_REGISTER, _cost_params
from .ledger import address, hex_id
from .records import _Record, u64

MANIFEST_VERSION = 1
MANIFEST_KEYS = frozenset(
    {"v", "name", "format", "arch", "size", "chunk_size", "root", "index", "tokenizer", "licence"}
)
MAX_MODEL_NAME = 64
NAME_RE = re.compile(r"[a-z0-9._-]{1,64}")
MAX_FORMAT_LEN = 64
MAX_ARCH_KEYS = 32
MAX_ARCH_KEY_LEN = 32
MAX_ARCH_INT = 1 << 32  # |value| of an arch integer (and of a rational's terms)
MAX_LICENCE_BYTES = 4096
MIB = 1 << 20
MAX_CHUNKS = 1 << 20  # chunks of one model file (a proof is at most 20 hashes)

MODEL_PREFIX = b"mdl/r/"
NAME_PREFIX = b"mdl/n/"
SEQ_PREFIX = b"mdl/s/"
OWNER_PREFIX = b"mdl/o/"
STATS_KEY = b"mdl/stats"


def model_key(model_id: bytes) -> bytes:
    return MODEL_PREFIX + model_id


def name_key(name: str) -> bytes:
    return NAME_PREFIX + name.encode()


def seq_key(seq: int) -> bytes:
    return SEQ_PREFIX + u64(seq)


def owner_key(owner: bytes, seq: int) -> bytes:
    return OWNER_PREFIX + owner + u64(seq)


@dataclass(slots=True)
class Model(_Record):
    """A registered model: its manifest, owner, registration height and the fee burned for it."""

    model_id: bytes
    seq: int
    owner: bytes
    height: int
    manifest: dict
    fee: int

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def size(self) -> int:
        return self.manifest["size"]

    @property
    def chunk_size(self) -> int:
        return self.manifest["chunk_size"]

    @property
    def chunk_count(self) -> int:
        return chunk_count(self.manifest["size"], self.manifest["chunk_size"])


@dataclass(slots=True)
class ModelStats(_Record):
    models: int = 0  # registered so far (= next seq)
    burned: int = 0  # registration fees burned

    @classmethod
    def decode_or_new(cls, raw: bytes | None) -> ModelStats:
        return cls() if raw is None else cls.decode(raw)


def chunk_count(size: int, chunk_size: int) -> int:
    return -(-size // chunk_size)


def model_id(manifest: dict) -> bytes:
    """SHA-256 of the manifest's canonical CBOR."""
    return codec.sha256(codec.encode(manifest))


def register_fee(size: int, fee_per_mib: int) -> int:
    """The registration fee of a ``size``-byte model: ``fee_per_mib`` per started MiB."""
    return -(-size // MIB) * fee_per_mib


# --------------------------------------------------------------------------------------------------
# Formats


@dataclass(frozen=True)
class ModelFormat:
    """What the chain needs to know about a model file format."""

    name: str
    chunk_size: int

    def config(self, arch: dict) -> Any:
        """The format's config object from ``arch``; raises :class:`TxError` ``bad_arch``."""
        try:
            return LlamaConfig.from_map(arch)
        except LlmError as exc:
            raise TxError(f"model_register: arch is not a valid {self.name} config: {exc}", "bad_arch") from None

    def weights_size(self, cfg: Any) -> int:
        """Bytes of the weights section the config implies (the tokenizer section follows it)."""
        return weights_size(cfg)


def _formats() -> dict[str, ModelFormat]:
    return {FORMAT: ModelFormat(FORMAT, CHUNK_SIZE)}


def get_format(name: str) -> ModelFormat:
    """The format called ``name``; raises :class:`TxError` ``unknown_format``."""
    fmt = _formats().get(name)
    if fmt is None:
        raise TxError(f"model_register.format '{name}' is not a known model format", "unknown_format")
    return fmt


# --------------------------------------------------------------------------------------------------
# Static checks


def _bad(msg: str, reason: str = "invalid_body") -> TxError:
    return TxError(f"model_register: {msg}", reason)


def _small_int(v: Any) -> bool:
    return type(v) is int and -MAX_ARCH_INT <= v <= MAX_ARCH_INT


def check_arch_map(arch: Any) -> dict:
    """The arch map's bounds (the format checks its meaning)."""
    if type(arch) is not dict or len(arch) > MAX_ARCH_KEYS:
        raise _bad(f"arch must be a map of at most {MAX_ARCH_KEYS} keys", "bad_arch")
    for k, v in arch.items():
        if type(k) is not str or not 1 <= len(k) <= MAX_ARCH_KEY_LEN:
            raise _bad(f"arch keys must be strings of 1..{MAX_ARCH_KEY_LEN} characters", "bad_arch")
        if type(v) is bool or _small_int(v):
            continue
        if type(v) is list and len(v) == 2 and all(_small_int(x) for x in v) and v[1] >= 1:
            continue
        raise _bad(
            f"arch['{k}'] must be an integer of at most 2^32 in magnitude, a bool or a rational [num, den>0]",
            "bad_arch",
        )
    return arch


def _uint(body: dict, key: str, lo: int = 0, hi: int = U64_MAX) -> int:
    v = body[key]
    if type(v) is not int or not lo <= v <= hi:
        raise _bad(f"{key} must be an integer in [{lo}, {hi}]")
    return v


def _hash(obj: dict, key: str, what: str) -> bytes:
    v = obj[key]
    if type(v) is not bytes or len(v) != 32:
        raise _bad(f"{what}{key} must be 32 bytes")
    return v


def check_model_register(body: Any) -> None:
    """Static checks of a ``model_register`` body (the manifest); :class:`TxError` with a reason:
    ``invalid_body`` (schema), ``bad_name``, ``unknown_format``, ``bad_arch``, ``wrong_chunk_size``,
    ``bad_tokenizer``, ``wrong_size``."""
    if type(body) is not dict or set(body) != MANIFEST_KEYS:
        extra = sorted(str(k) for k in body) if type(body) is dict else []
        raise _bad(f"the manifest must be a map with exactly the keys {sorted(MANIFEST_KEYS)} (got {extra})")
    if body["v"] != MANIFEST_VERSION or type(body["v"]) is not int:
        raise _bad(f"manifest version v must be {MANIFEST_VERSION}")
    name = body["name"]
    if type(name) is not str or not NAME_RE.fullmatch(name):
        raise _bad(f"name must be 1..{MAX_MODEL_NAME} characters of [a-z0-9._-]", "bad_name")
    fmt_name = body["format"]
    if type(fmt_name) is not str or not 1 <= len(fmt_name) <= MAX_FORMAT_LEN:
        raise _bad(f"format must be a string of 1..{MAX_FORMAT_LEN} characters")
    licence = body["licence"]
    if type(licence) is not str or len(licence.encode()) > MAX_LICENCE_BYTES:
        raise _bad(f"licence must be text of at most {MAX_LICENCE_BYTES} bytes (UTF-8)")
    size = _uint(body, "size", lo=1)
    chunk_size = _uint(body, "chunk_size", lo=1)
    _hash(body, "root", "")
    _hash(body, "index", "")
    tok = body["tokenizer"]
    if type(tok) is not dict or set(tok) != {"offset", "size", "hash"}:
        raise _bad("tokenizer must be a map {offset, size, hash}", "bad_tokenizer")
    for k in ("offset", "size"):
        if type(tok[k]) is not int or not 0 <= tok[k] <= U64_MAX:
            raise _bad(f"tokenizer.{k} must be a non-negative integer", "bad_tokenizer")
    _hash(tok, "hash", "tokenizer.")
    check_arch_map(body["arch"])
    fmt = get_format(fmt_name)
    if chunk_size != fmt.chunk_size:
        raise _bad(f"chunk_size must be {fmt.chunk_size} for format {fmt.name} (got {chunk_size})",
                   "wrong_chunk_size")
    if chunk_count(size, chunk_size) > MAX_CHUNKS:
        raise _bad(f"a model file has at most {MAX_CHUNKS} chunks", "wrong_size")
    cfg = fmt.config(body["arch"])
    weights = fmt.weights_size(cfg)
    if tok["offset"] != weights:
        raise _bad(f"the tokenizer section must start right after the weights, at {weights} (got {tok['offset']})",
                   "bad_tokenizer")
    if size != weights + tok["size"]:
        raise _bad(f"size must be {weights + tok['size']} (weights {weights} + tokenizer {tok['size']}), got {size}",
                   "wrong_size")


def model_register_cost(tx: Transaction) -> int:
    """Value the sender must hold beyond the fee: the registration fee (mempool admission)."""
    size = tx.body.get("size") if type(tx.body) is dict else None
    if type(size) is not int or size < 0:
        return 0
    return min(U64_MAX, register_fee(size, _cost_params().model_register_fee_per_mib))


# --------------------------------------------------------------------------------------------------
# The rule


def load_model(get_object: Any, mid: bytes) -> Model | None:
    raw = get_object(model_key(mid))
    return Model.decode(raw) if raw is not None else None


def model_id_by_name(get_object: Any, name: str) -> bytes | None:
    if type(name) is not str or not NAME_RE.fullmatch(name):
        return None
    return get_object(name_key(name))


def apply_model_register(ex: Execution, tx: Transaction) -> None:
    m, p = tx.body, ex.env.params.market
    if m["size"] > p.max_model_bytes:
        raise ExecFailure("model_too_large", f"model size {m['size']} exceeds max_model_bytes {p.max_model_bytes}")
    if ex.get_object(name_key(m["name"])) is not None:
        raise ExecFailure("name_taken", f"a model named '{m['name']}' is already registered")
    mid = model_id(m)
    if ex.get_object(model_key(mid)) is not None:  # same manifest = same name: unreachable
        raise ExecFailure("model_exists", "this model is already registered")
    fee = register_fee(m["size"], p.model_register_fee_per_mib)
    bal = ex.account(tx.sender).balance
    if bal < fee:
        raise ExecFailure(
            "insufficient_balance",
            f"the registration fee {fee} ({p.model_register_fee_per_mib} per started MiB) exceeds the balance "
            f"{bal} (after the fee)",
        )
    ex.debit(tx.sender, fee)
    ex.burn(fee)
    stats = ModelStats.decode_or_new(ex.get_object(STATS_KEY))
    rec = Model(mid, stats.models, tx.sender, ex.env.height, m, fee)
    stats.models += 1
    stats.burned += fee
    ex.put_object(model_key(mid), rec.encode())
    ex.put_object(name_key(m["name"]), mid)
    ex.put_object(seq_key(rec.seq), mid)
    ex.put_object(owner_key(tx.sender, rec.seq), mid)
    ex.put_object(STATS_KEY, stats.encode())
    ex.emit("model_registered", model_id=hex_id(mid), name=m["name"], owner=address(tx.sender),
            size=m["size"], fee=str(fee))


TX_KINDS = (TxKind(TX_MODEL_REGISTER, check_model_register, model_register_cost, apply_model_register),)


def model_register_body(
    *,
    name: str,
    format: str,
    arch: dict,
    size: int,
    chunk_size: int,
    root: bytes,
    index: bytes,
    tokenizer: dict,
    licence: str = "",
) -> dict:
    """A ``model_register`` body (the manifest)."""
    return {
        "v": MANIFEST_VERSION,
        "name": name,
        "format": format,
        "arch": dict(arch),
        "size": size,
        "chunk_size": chunk_size,
        "root": bytes(root),
        "index": bytes(index),
        "tokenizer": {"offset": tokenizer["offset"], "size": tokenizer["size"], "hash": bytes(tokenizer["hash"])},
        "licence": licence,
    }


# --------------------------------------------------------------------------------------------------
# The chunk index and chunk proofs (shared by the node, the CLI and tests; not consensus)

INDEX_ENTRY = 64  # sha256(chunk) || sha256(0x00 || chunk)


class ModelIndexError(AitbcError):
    """A chunk index or chunk that does not match its manifest."""

    reason = "bad_index"


def leaf_hash(chunk: bytes) -> bytes:
    """The RFC 6962 leaf hash of a chunk (what ``root`` commits to)."""
    return codec.sha256(b"\x00" + chunk)


def _node(left: bytes, right: bytes) -> bytes:
    return codec.sha256(b"\x01" + left + right)


def root_from_leaf_hashes(hashes: list[bytes]) -> bytes:
    """``state.types.merkle_root`` computed from the leaves' hashes instead of the leaves."""
    if not hashes:
        return bytes(32)
    level = list(hashes)
    while len(level) > 1:
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def proof_from_leaf_hashes(hashes: list[bytes], index: int) -> list[bytes]:
    """``state.merkle.merkle_proof`` computed from the leaves' hashes (verify with
    ``state.merkle.verify_merkle_proof(root, chunk, index, len(hashes), proof)``)."""
    if not 0 <= index < len(hashes):
        raise IndexError(f"chunk {index} out of range for {len(hashes)} chunks")
    level, proof = list(hashes), []
    while len(level) > 1:
        if index ^ 1 < len(level):
            proof.append(level[index ^ 1])
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level, index = nxt, index >> 1
    return proof


def split_file(file_bytes: bytes, chunk_size: int) -> list[bytes]:
    mv = memoryview(file_bytes)
    return [bytes(mv[i : i + chunk_size]) for i in range(0, len(file_bytes), chunk_size)]


def chunk_index(chunks: list[bytes]) -> bytes:
    """The chunk index blob of a file split into ``chunks``."""
    return b"".join(codec.sha256(c) + leaf_hash(c) for c in chunks)


@dataclass(frozen=True)
class ChunkIndex:
    """A parsed chunk index: blob ids and leaf hashes of every chunk, checked against the manifest."""

    blob_ids: tuple[bytes, ...]
    leaves: tuple[bytes, ...]

    def proof(self, index: int) -> list[bytes]:
        return proof_from_leaf_hashes(list(self.leaves), index)


def parse_index(data: bytes, manifest: dict) -> ChunkIndex:
    """Parse and check a chunk index blob: its hash is the manifest's ``index``, it has one entry per
    chunk and its leaf hashes give the manifest's ``root``. Raises :class:`ModelIndexError`."""
    n = chunk_count(manifest["size"], manifest["chunk_size"])
    if codec.sha256(data) != manifest["index"]:
        raise ModelIndexError("the chunk index does not match the manifest's index hash")
    if len(data) != INDEX_ENTRY * n:
        raise ModelIndexError(f"the chunk index must have {n} entries of {INDEX_ENTRY} bytes")
    ids = tuple(data[i : i + 32] for i in range(0, len(data), INDEX_ENTRY))
    leaves = tuple(data[i + 32 : i + INDEX_ENTRY] for i in range(0, len(data), INDEX_ENTRY))
    if root_from_leaf_hashes(list(leaves)) != manifest["root"]:
        raise ModelIndexError("the chunk index does not give the manifest's Merkle root")
    return ChunkIndex(ids, leaves)


def expected_chunk_len(manifest: dict, index: int) -> int:
    return min(manifest["chunk_size"], manifest["size"] - index * manifest["chunk_size"])


def verify_chunk(manifest: dict, index: int, chunk: bytes, proof: list[bytes]) -> bool:
    """Whether ``chunk`` is chunk ``index`` of the manifest's file (length and Merkle proof)."""
    n = chunk_count(manifest["size"], manifest["chunk_size"])
    if type(index) is not int or not 0 <= index < n or len(chunk) != expected_chunk_len(manifest, index):
        return False
    return verify_merkle_proof(manifest["root"], chunk, index, n, proof)


def manifest_for_file(
    file_bytes: bytes, *, name: str, arch: dict, tokenizer_size: int, licence: str = "", format: str | None = None
) -> tuple[dict, list[bytes], bytes]:
    """The manifest of a model file whose last ``tokenizer_size`` bytes are its tokenizer section, with
    its chunks and chunk index blob: ``(manifest, chunks, index)``."""
    fmt = get_format(format) if format is not None else next(iter(_formats().values()))
    chunks = split_file(file_bytes, fmt.chunk_size)
    index = chunk_index(chunks)
    offset = len(file_bytes) - tokenizer_size
    body = model_register_body(
        name=name,
        format=fmt.name,
        arch=arch,
        size=len(file_bytes),
        chunk_size=fmt.chunk_size,
        root=merkle_root(chunks),
        index=codec.sha256(index),
        tokenizer={"offset": offset, "size": tokenizer_size, "hash": codec.sha256(file_bytes[offset:])},
        licence=licence,
    )
    return body, chunks, index


# --------------------------------------------------------------------------------------------------
# Read side (JSON views for RPC; ids 0x-hex, accounts ait1 addresses, amounts decimal strings)

MAX_LIST_LIMIT = 500


def model_json(m: Model) -> dict:
    man = m.manifest
    tok = man["tokenizer"]
    return {
        "model_id": "0x" + m.model_id.hex(),
        "name": man["name"],
        "owner": encode_address(m.owner),
        "height": m.height,
        "seq": m.seq,
        "fee": str(m.fee),
        "v": man["v"],
        "format": man["format"],
        "arch": dict(man["arch"]),
        "size": man["size"],
        "chunk_size": man["chunk_size"],
        "chunks": m.chunk_count,
        "root": "0x" + man["root"].hex(),
        "index": "0x" + man["index"].hex(),
        "tokenizer": {"offset": tok["offset"], "size": tok["size"], "hash": "0x" + tok["hash"].hex()},
        "licence": man["licence"],
    }


def load_stats(get_object: Any) -> ModelStats:
    return ModelStats.decode_or_new(get_object(STATS_KEY))


def list_models(get_object: Any, cursor: str | None = None, limit: int = 50) -> tuple[list[Model], str | None]:
    """Models in registration order from ``cursor`` (the ``next_cursor`` of the previous page): reads
    O(limit) objects. Raises ``ValueError`` for a bad cursor."""
    start = 0
    if cursor is not None:
        if type(cursor) is not str or not cursor.isdigit() or len(cursor) > 20:
            raise ValueError("cursor must be the next_cursor of a previous page")
        start = int(cursor)
    limit = max(1, min(limit, MAX_LIST_LIMIT))
    count = load_stats(get_object).models
    out: list[Model] = []
    for seq in range(start, min(count, start + limit)):
        mid = get_object(seq_key(seq))
        m = load_model(get_object, mid) if mid is not None else None
        if m is not None:
            out.append(m)
    nxt = start + limit
    return out, (str(nxt) if nxt < count else None)
