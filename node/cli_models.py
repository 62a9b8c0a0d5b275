"""``aitbc-peer model …``: register, list, show, pin, unpin, fetch and import models.

A model file (format ``aitbc-llm-int8-v1``, ``state/llm/modelfile.py``) is the weights section — its
size follows from the model config (``--arch``) — followed by the tokenizer section. ``register`` builds
the manifest (``state/market/models.py``), sends ``model_register`` signed by ``--from``, then uploads
the chunk index and every chunk with ``blob_put`` (not charged to the owner's blob quota) and asks the
node to pin the model (``admin_pinModel``, needs ``rpc.admin``). ``fetch`` reassembles a file from
``market_getModelChunk``, checking every chunk's Merkle proof and the manifest against its id here.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from state.errors import AitbcError, TxError

from .cli_tx import add_client_options, load_signer, print_table, submit
from .cli_tx import print_json as _print

UPLOAD_EXPIRY_BLOCKS = 50  # a blob_put signature is valid this many blocks (≤ blobs.sig_max_blocks)


def _unhex(s: str) -> bytes:
    return bytes.fromhex(s[2:] if s.startswith("0x") else s)


def manifest_from_json(view: dict) -> dict:
    """The manifest (CBOR form) of a ``market_getModel`` answer, to check it against its id."""
    tok = view["tokenizer"]
    return {
        "v": view["v"],
        "name": view["name"],
        "format": view["format"],
        "arch": view["arch"],
        "size": view["size"],
        "chunk_size": view["chunk_size"],
        "root": _unhex(view["root"]),
        "index": _unhex(view["index"]),
        "tokenizer": {"offset": tok["offset"], "size": tok["size"], "hash": _unhex(tok["hash"])},
        "licence": view["licence"],
    }


def _checked_manifest(view: dict) -> dict:
    from state.market.models import model_id

    man = manifest_from_json(view)
    if "0x" + model_id(man).hex() != view["model_id"]:
        raise AitbcError(f"the node's manifest of model {view['name']} does not hash to its id {view['model_id']}")
    return man


def _arch(text: str | None) -> dict:
    if not text:
        raise AitbcError("give --arch: the model config as JSON (or a JSON file), e.g. "
                         '\'{"vocab": 32000, "dim": 4096, …, "norm_eps": [1, 100000]}\'')
    p = Path(text)
    raw = p.read_text() if not text.lstrip().startswith("{") and p.is_file() else text
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise AitbcError(f"--arch must be a JSON object: {exc}") from None
    if not isinstance(obj, dict):
        raise AitbcError("--arch must be a JSON object")
    return obj


def _build(file_bytes: bytes, name: str, arch: dict, licence: str, tokenizer_size: int | None
           ) -> tuple[dict, list[bytes], bytes]:
    """Manifest, chunks and index of a model file, statically checked here (precise errors early)."""
    from state.llm.config import LlamaConfig, LlmError
    from state.llm.modelfile import weights_size
    from state.market.models import check_model_register, manifest_for_file

    try:
        cfg = LlamaConfig.from_map(arch)
    except LlmError as exc:
        raise AitbcError(f"the model config is invalid: {exc}") from None
    weights = weights_size(cfg)
    tok = len(file_bytes) - weights if tokenizer_size is None else tokenizer_size
    if tok < 0 or weights + tok != len(file_bytes):
        raise AitbcError(f"the file has {len(file_bytes)} bytes but this config's weights alone take {weights}")
    manifest, chunks, index = manifest_for_file(file_bytes, name=name, arch=arch, tokenizer_size=tok,
                                                licence=licence)
    try:
        check_model_register(manifest)
    except TxError as exc:
        raise AitbcError(f"{exc} ({exc.reason})") from None
    return manifest, chunks, index


def _upload(rpc: Any, key: Any, chain_id: str, blobs: list[bytes]) -> None:
    from .blobs import signed_blob_put_params

    expires = 0
    for i, data in enumerate(blobs):
        head = rpc.call("chain_getHead")["height"] if i % 16 == 0 else None
        if head is not None:
            expires = head + UPLOAD_EXPIRY_BLOCKS
        rpc.call("blob_put", **signed_blob_put_params(key, chain_id, data, expires))


def _register(rpc: Any, args: argparse.Namespace, file_bytes: bytes, name: str, arch: dict, licence: str,
              tokenizer_size: int | None = None) -> int:
    from state.market.models import model_id

    from .rpcclient import RpcClientError

    key = load_signer(args)
    manifest, chunks, index = _build(file_bytes, name, arch, licence, tokenizer_size)
    mid = "0x" + model_id(manifest).hex()
    info = rpc.call("system_info")
    mp = info["params"]["market"]
    if manifest["size"] > mp["max_model_bytes"]:
        raise AitbcError(f"the model has {manifest['size']} bytes; this chain takes at most {mp['max_model_bytes']}")
    try:
        existing = rpc.call("market_getModel", model=name)
    except RpcClientError as exc:
        if exc.code != -32004:
            raise
        existing = None
    if existing is not None and existing["model_id"] != mid:
        raise AitbcError(f"the name {name!r} is taken by model {existing['model_id']}")
    if existing is None:
        st = submit(rpc, key, "model_register", manifest, timeout=args.timeout)
        print(f"model {name} {mid} registered in block {st['block_height']}", flush=True)
    else:
        print(f"model {name} {mid} is already registered: uploading its chunks", flush=True)
    _upload(rpc, key, info["chain_id"], [index, *chunks])
    print(f"uploaded the chunk index and {len(chunks)} chunks", flush=True)
    try:
        rpc.call("admin_pinModel", model=mid)
        print(f"pinned on the node: `aitbc-peer model show {name}`")
    except RpcClientError as exc:
        print(f"note: the node did not pin the model ({exc}); with rpc.admin on, `aitbc-peer model pin {name}` "
              "keeps it, otherwise its chunks are collected after blobs.grace_s")
    return 0


def _pin(rpc: Any, args: argparse.Namespace) -> int:
    st = rpc.call("admin_pinModel", model=args.model)
    deadline = time.monotonic() + args.timeout
    while not st["complete"]:
        if time.monotonic() > deadline:
            raise AitbcError(f"model {st['name']}: {st['chunks_present']} of {st['chunks']} chunks after "
                             f"{args.timeout:.0f} s (the node keeps fetching; see `aitbc-peer model show`)")
        time.sleep(0.5)
        st = rpc.call("market_getModel", model=st["model_id"])["local"] | {"name": st["name"],
                                                                           "model_id": st["model_id"]}
    print(f"model {st['name']} {st['model_id']} pinned: {st['chunks']} chunks verified and kept")
    return 0


def _fetch(rpc: Any, args: argparse.Namespace) -> int:
    from state.market.models import verify_chunk

    view = rpc.call("market_getModel", model=args.model)
    man = _checked_manifest(view)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "wb") as f:
        for i in range(view["chunks"]):
            c = rpc.call("market_getModelChunk", model=view["model_id"], index=i)
            data = _unhex(c["data"])
            if not verify_chunk(man, i, data, [_unhex(h) for h in c["proof"]]):
                raise AitbcError(f"chunk {i} of model {view['name']} does not verify against its root")
            f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if tmp.stat().st_size != man["size"]:
        raise AitbcError(f"reassembled {tmp.stat().st_size} bytes, the manifest says {man['size']}")
    os.replace(tmp, out)
    print(f"wrote {man['size']} bytes to {out} (model {view['name']} {view['model_id']}, "
          f"{view['chunks']} chunks verified against root {view['root']})")
    return 0


def _import(rpc: Any, args: argparse.Namespace) -> int:
    try:
        from gpu.llm.gguf_import import convert_gguf
    except ImportError:
        raise AitbcError("GGUF import is not available in this build (gpu.llm.gguf_import.convert_gguf "
                         "is missing)") from None
    try:
        file_bytes, fields = convert_gguf(args.file)
    except (OSError, ValueError, KeyError, AitbcError) as exc:
        raise AitbcError(f"cannot import {args.file}: {exc}") from None
    name = args.name or fields.get("name") or Path(args.file).stem.lower()
    tok = fields.get("tokenizer")
    tok_size = tok.get("size") if isinstance(tok, dict) else None
    return _register(rpc, args, bytes(file_bytes), name, dict(fields["arch"]), str(fields.get("licence", "")),
                     tok_size)


def print_model(view: dict) -> None:
    """``model show`` for people: the manifest (checked against the id) and its state on this node."""
    from .cli_tx import ait, print_kv

    tok = view.get("tokenizer") or {}
    local = view.get("local") or {}
    licence = (view.get("licence") or "").strip().splitlines()
    print_kv([
        ("model_id", view["model_id"]),
        ("name", view["name"]),
        ("owner", view.get("owner")),
        ("format", view["format"]),
        ("arch", json.dumps(view["arch"], separators=(",", ":"))),
        ("size", f"{view['size']} bytes ({view['size'] / (1 << 20):.1f} MiB)"),
        ("chunks", f"{view['chunks']} of {view['chunk_size']} bytes"),
        ("root", view["root"]),
        ("tokenizer", f"{tok['size']} bytes at offset {tok['offset']}" if tok.get("size") else None),
        ("licence", licence[0] + (" …" if len(licence) > 1 else "") if licence else None),
        ("registered_height", view.get("height")),
        ("fee", ait(view.get("fee"))),
        ("pinned", "yes" if local.get("pinned") else "no"),
        ("on_this_node", f"{local.get('chunks_present', 0)} of {local.get('chunks', view['chunks'])} chunks"
                         + (", complete" if local.get("complete") else "")),
    ])


def cmd_model(args: argparse.Namespace) -> int:
    from .cli import _client

    with _client(args) as rpc:
        c = args.model_cmd
        if c == "register":
            licence = Path(args.licence_file).read_text() if args.licence_file else ""
            return _register(rpc, args, Path(args.file).read_bytes(), args.name, _arch(args.arch), licence)
        if c == "import":
            return _import(rpc, args)
        if c == "list":
            res = rpc.call("market_listModels", limit=args.limit, **({"cursor": args.cursor} if args.cursor else {}))
            if args.json:
                _print(res)
            else:
                print_table(["name", "model_id", "size_bytes", "format", "owner"],
                            [[m["name"], m["model_id"], m["size"], m["format"], m["owner"]] for m in res["models"]])
            return 0
        if c == "show":
            view = rpc.call("market_getModel", model=args.model)
            _checked_manifest(view)
            if args.json:
                _print(view)
            else:
                print_model(view)
            return 0
        if c == "pin":
            return _pin(rpc, args)
        if c == "unpin":
            st = rpc.call("admin_unpinModel", model=args.model)
            print(f"model {st['name']} {st['model_id']} unpinned (its chunks are collected later)")
            return 0
        if c == "fetch":
            return _fetch(rpc, args)
    return 0


def add_model_commands(sub: Any, home_arg: Any, rpc_arg: Any) -> None:
    sp = sub.add_parser("model", help="register, list, pin and fetch models (weights as verified blobs)")
    home_arg(sp)
    msub = sp.add_subparsers(dest="model_cmd", required=True)
    m = msub.add_parser("register", help="register a model file, upload its chunks and pin it on the node")
    m.add_argument("file")
    m.add_argument("--name", required=True, help="unique name: [a-z0-9._-], at most 64 characters")
    m.add_argument("--arch", help="the model config: JSON or a JSON file (LlamaConfig.to_map form)")
    m.add_argument("--licence-file", help="licence text (at most 4 KiB)")
    m = msub.add_parser("import", help="convert a GGUF file (gpu.llm.gguf_import) and register it")
    m.add_argument("file")
    m.add_argument("--name")
    m = msub.add_parser("list", help="registered models")
    m.add_argument("--limit", type=int, default=50)
    m.add_argument("--cursor")
    m.add_argument("--json", action="store_true")
    for name, helptext in (("show", "a model's manifest and its state on this node"),
                           ("pin", "fetch every chunk from the network, verify it and keep it (admin)"),
                           ("unpin", "stop keeping a model on this node (admin)")):
        m = msub.add_parser(name, help=helptext)
        m.add_argument("model", metavar="NAME|ID")
        if name == "show":
            m.add_argument("--json", action="store_true", help="the manifest and local state as JSON (default: a table)")
    m = msub.add_parser("fetch", help="reassemble a verified model file")
    m.add_argument("model", metavar="NAME|ID")
    m.add_argument("--out", required=True)
    add_client_options(msub, home_arg, rpc_arg, from_help="keystore key (register, import)", timeout=300.0)
    sp.set_defaults(func=cmd_model)
