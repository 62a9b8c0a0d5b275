"""Models as on-chain objects (state/market/models.py, node/models.py, rpc/model_methods.py,
node/cli_models.py): the ``model_register`` rule on a real LevelDB-backed ChainState with hostile
manifests, the chunk index and proofs, the blob quota exemption, and one real node process driven by the
CLI and JSON-RPC (register, list, show, chunk + proof, pin/unpin, fetch)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from nodeproc import NodeProcess, clean_env, init_home, run_cli

import state.market  # noqa: F401  (registers the market tx kinds)
from node.blobs import BlobError, BlobLimits, BlobStore
from state.chain import ChainState
from state.crypto import SigningKey
from state.errors import TxError
from state.genesis import ChainParams, Genesis, GenesisValidator
from state.llm.config import LlamaConfig
from state.llm.modelfile import CHUNK_SIZE, chunk_root, split_chunks, weights_size
from state.machine import check_body
from state.market import models as mm
from state.merkle import merkle_proof, verify_merkle_proof
from state.params import MarketParams
from state.store import Store
from state.types import PRECOMMIT, Block, Commit, CommitSig, Transaction, Vote

CHAIN = "model-test"
FEE = 10
VAL = SigningKey.from_seed(b"\x07" * 32)
OWNER = SigningKey.from_seed(b"\x0a" * 32)
POOR = SigningKey.from_seed(b"\x0b" * 32)
MARKET = MarketParams(max_model_bytes=1 << 20, model_register_fee_per_mib=1_000)

# Five layers of a small Llama: 4 chunks, the last one short.
CFG = LlamaConfig(vocab=256, dim=64, n_layers=5, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=128,
                  max_ctx=64, rope_base=10_000, norm_eps_num=1, norm_eps_den=100_000, tied_embeddings=False,
                  bos_id=1, eos_id=2)
TOKENIZER = b"tokenizer section " * 40


def model_file(cfg: LlamaConfig = CFG, tokenizer: bytes = TOKENIZER, seed: bytes = b"w") -> bytes:
    n = weights_size(cfg)
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(seed + i.to_bytes(8, "big")).digest()
        i += 1
    return bytes(out[:n]) + tokenizer


FILE = model_file()


def manifest(name: str = "tiny-llama", file: bytes = FILE, licence: str = "MIT") -> dict:
    man, _chunks, _index = mm.manifest_for_file(file, name=name, arch=CFG.to_map(),
                                                tokenizer_size=len(TOKENIZER), licence=licence)
    return man


# ---------------------------------------------------------------------------------------- the chain


class Chain:
    """A real ChainState on LevelDB with one validator; blocks are built, committed and read back."""

    def __init__(self, path: Path, market: MarketParams = MARKET) -> None:
        genesis = Genesis(CHAIN, 1_000, "poa", ChainParams(min_fee=FEE, market=market),
                          ((OWNER.public_key, 10_000_000), (POOR.public_key, FEE + 500)),
                          (GenesisValidator(VAL.public_key, 1, "v0"),))
        self.store = Store(path)
        self.chain = ChainState(self.store, genesis)
        self.nonces: dict[bytes, int] = {}

    def tx(self, key: SigningKey, body: dict) -> Transaction:
        n = self.nonces.get(key.public_key, self.chain.account(key.public_key).nonce)
        self.nonces[key.public_key] = n + 1
        return Transaction.create(key, CHAIN, "model_register", n, FEE, body)

    def block(self, *txs: Transaction):
        from consensus.validators import Validator, ValidatorSet

        vs = ValidatorSet([Validator(VAL.public_key, 1)])
        c = self.chain
        last = c.commit_at(c.head.height) if c.head.height else None
        pending = c.build_block(list(txs), proposer=VAL.public_key, time_ms=1_000 * (c.head.height + 2),
                                last_commit=last, validators_hash=vs.hash, next_validators_hash=vs.hash)
        b: Block = pending.block
        v = Vote.create(VAL, CHAIN, b.height, 0, PRECOMMIT, b.hash)
        c.commit(pending, Commit(b.height, 0, b.hash, (CommitSig(VAL.public_key, v.sig),)))
        for tx, _exc in pending.outcome.skipped:  # a refused tx did not use its nonce
            self.nonces[tx.sender] = min(self.nonces[tx.sender], tx.nonce)
        return pending.outcome

    def register(self, key: SigningKey, body: dict):
        """(ok, reason) of one model_register in its own block."""
        out = self.block(self.tx(key, body))
        if out.skipped:
            return False, out.skipped[0][1].reason
        (r,) = out.results
        return r.ok, r.reason


@pytest.fixture
def chain(tmp_path: Path):
    c = Chain(tmp_path / "db")
    yield c
    c.store.close()


def test_register_stores_the_record_indexes_and_burns_the_fee(chain: Chain) -> None:
    man = manifest()
    supply0, bal0 = chain.chain.supply(), chain.chain.account(OWNER.public_key).balance
    assert chain.register(OWNER, man) == (True, "")
    mid = mm.model_id(man)
    get = chain.chain.get_object
    m = mm.load_model(get, mid)
    assert m is not None and m.owner == OWNER.public_key and m.manifest == man and m.height == 1
    assert m.chunk_count == 4 and m.chunk_count == len(split_chunks(FILE))
    assert mm.model_id_by_name(get, "tiny-llama") == mid
    fee = mm.register_fee(len(FILE), MARKET.model_register_fee_per_mib)
    assert fee == 1_000 and m.fee == fee  # one started MiB
    assert chain.chain.account(OWNER.public_key).balance == bal0 - FEE - fee
    assert chain.chain.supply() == supply0 - fee  # burned; the tx fee went to the proposer
    st = mm.load_stats(get)
    assert (st.models, st.burned) == (1, fee)
    second = manifest("tiny-llama-2", licence="")
    assert chain.register(OWNER, second) == (True, "")
    items, nxt = mm.list_models(get, limit=1)
    assert [x.name for x in items] == ["tiny-llama"] and nxt == "1"
    items, nxt = mm.list_models(get, nxt, limit=5)
    assert [x.name for x in items] == ["tiny-llama-2"] and nxt is None
    view = mm.model_json(m)
    assert view["root"] == "0x" + chunk_root(FILE).hex() and view["chunks"] == 4
    assert view["arch"]["norm_eps"] == [1, 100_000]


def test_manifest_root_is_the_model_files_chunk_root() -> None:
    man, chunks, index = mm.manifest_for_file(FILE, name="x", arch=CFG.to_map(), tokenizer_size=len(TOKENIZER))
    assert man["root"] == chunk_root(FILE) and man["chunk_size"] == CHUNK_SIZE
    assert man["tokenizer"] == {"offset": weights_size(CFG), "size": len(TOKENIZER),
                                "hash": hashlib.sha256(TOKENIZER).digest()}
    idx = mm.parse_index(index, man)
    for i, c in enumerate(chunks):
        proof = idx.proof(i)
        assert proof == merkle_proof(chunks, i)
        assert verify_merkle_proof(man["root"], c, i, len(chunks), proof)
        assert mm.verify_chunk(man, i, c, proof)
        assert idx.blob_ids[i] == hashlib.sha256(c).digest()
    assert not mm.verify_chunk(man, 1, chunks[2], idx.proof(1))
    assert not mm.verify_chunk(man, 3, chunks[3] + b"x", idx.proof(3))
    # a tampered index is refused: wrong hash, or a consistent hash whose leaves do not give the root
    bad = bytearray(index)
    bad[40] ^= 1
    with pytest.raises(mm.ModelIndexError):
        mm.parse_index(bytes(bad), man)
    with pytest.raises(mm.ModelIndexError, match="Merkle root"):
        mm.parse_index(bytes(bad), {**man, "index": hashlib.sha256(bytes(bad)).digest()})


def _refused_statically(chain: Chain, body: dict) -> str:
    """The static check refuses the body, and the block builder leaves the transaction out."""
    tx = chain.tx(OWNER, body)
    with pytest.raises(TxError) as exc:
        check_body(tx)
    out = chain.block(tx)
    assert out.results == [] and out.skipped[0][1].reason == exc.value.reason
    return exc.value.reason


def test_hostile_manifests_are_refused_with_precise_reasons(chain: Chain, tmp_path: Path) -> None:
    good = manifest()
    arch = CFG.to_map()
    cases = {
        "bad_arch": [
            {**good, "arch": {**arch, "n_kv_heads": 3}},  # n_heads 4 is not a multiple of 3
            {**good, "arch": {**arch, "dim": 1.5}},  # no floats
            {**good, "arch": {**arch, **{f"k{i}": 1 for i in range(32)}}},  # more than 32 keys
            {**good, "arch": {**arch, "norm_eps": [1, 0]}},
            {**good, "arch": {**arch, "vocab": 1 << 40}},
        ],
        "wrong_size": [{**good, "size": good["size"] + 1}],
        "bad_tokenizer": [{**good, "tokenizer": {**good["tokenizer"], "offset": 0}}],
        "wrong_chunk_size": [{**good, "chunk_size": 4096}],
        "bad_name": [{**good, "name": "Tiny Llama"}, {**good, "name": "x" * 65}, {**good, "name": ""}],
        "unknown_format": [{**good, "format": "gguf"}],
        "invalid_body": [
            {**good, "v": 2},
            {**good, "extra": 1},
            {k: v for k, v in good.items() if k != "licence"},
            {**good, "licence": "x" * 4097},
            {**good, "root": b"\x00" * 31},
        ],
    }
    for reason, bodies in cases.items():
        for body in bodies:
            assert _refused_statically(chain, body) == reason, (reason, body)
    # bounds that depend on the chain's params and state fail in the block, each with its reason
    big = Chain(tmp_path / "db2", replace(MARKET, max_model_bytes=len(FILE) - 1))
    assert big.register(OWNER, good) == (False, "model_too_large")
    big.store.close()
    assert chain.register(OWNER, good) == (True, "")
    assert chain.register(OWNER, manifest(licence="another licence")) == (False, "name_taken")
    assert chain.register(OWNER, good) == (False, "name_taken")
    bal = chain.chain.account(POOR.public_key).balance
    assert chain.register(POOR, manifest("poor-model")) == (False, "insufficient_balance")
    assert chain.chain.account(POOR.public_key).balance == bal - FEE  # the fee is charged, the body rolled back
    assert mm.model_id_by_name(chain.chain.get_object, "poor-model") is None
    # the mempool's cost covers the registration fee: the poor sender cannot even get it pooled
    tx = chain.tx(POOR, manifest("poor-model"))
    assert mm.model_register_cost(tx) == 1_000


def test_owner_chunk_uploads_are_not_charged_to_the_account_quota(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", limits=BlobLimits(max_account_bytes=CHUNK_SIZE, max_account_count=1))
    chunks = split_chunks(FILE)
    store.put_owned(chunks[0], OWNER.public_key)
    with pytest.raises(BlobError) as exc:
        store.put_owned(chunks[1], OWNER.public_key)
    assert exc.value.reason in ("account_count", "account_quota")
    for c in chunks[1:]:
        store.put_owned(c, OWNER.public_key, charge=False)
    assert store.account_usage(OWNER.public_key) == (len(chunks[0]), 1)
    assert all(store.has(hashlib.sha256(c).digest()) for c in chunks)


# ------------------------------------------------------------------------------- one real node + CLI


@pytest.fixture(scope="module")
def model_node(tmp_path_factory: pytest.TempPathFactory):
    home = init_home(tmp_path_factory.mktemp("models") / "home")
    # admin methods on (loopback needs no token); a per-account blob quota smaller than the model
    node = NodeProcess(home, env={"AITBC_RPC_ADMIN": "true", "AITBC_BLOBS_MAX_ACCOUNT_BYTES": str(CHUNK_SIZE),
                                  "AITBC_BLOBS_MAX_ACCOUNT_COUNT": "2"})
    try:
        node.start()
        node.wait_ready()
        yield node
    finally:
        node.close()


def cli(node: NodeProcess, *args: str, ok: bool = True) -> str:
    r = run_cli(*args, "--home", str(node.home), env=clean_env(AITBC_RPC_URL=node.url), timeout=120)
    if ok:
        assert r.returncode == 0, f"{args}: {r.stdout}\n{r.stderr}\n{node.log_tail()}"
        return r.stdout
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    return r.stderr


def test_model_lifecycle_through_the_cli_and_rpc(model_node: NodeProcess, tmp_path: Path) -> None:
    node = model_node
    path, arch = tmp_path / "tiny.bin", tmp_path / "arch.json"
    path.write_bytes(FILE)
    arch.write_text(json.dumps(CFG.to_map()))
    lic = tmp_path / "LICENCE"
    lic.write_text("MIT licence")
    out = cli(node, "model", "register", str(path), "--name", "tiny-llama", "--arch", str(arch),
              "--licence-file", str(lic), "--from", "dev")
    assert "registered in block" in out and "uploaded the chunk index and 4 chunks" in out and "pinned" in out
    man = manifest(licence="MIT licence")
    mid = "0x" + mm.model_id(man).hex()
    view = node.rpc("market_getModel", model="tiny-llama")
    assert view["model_id"] == mid and view["size"] == len(FILE) and view["chunks"] == 4
    assert view["local"] == {"pinned": True, "chunks": 4, "chunks_present": 4, "index_present": True,
                             "complete": True}
    assert node.rpc("market_getModel", model=mid)["name"] == "tiny-llama"
    listed = node.rpc("market_listModels")
    assert [m["model_id"] for m in listed["models"]] == [mid] and listed["next_cursor"] is None
    assert "tiny-llama" in cli(node, "model", "list")
    shown = json.loads(cli(node, "model", "show", "tiny-llama", "--json"))
    assert shown["model_id"] == mid and shown["licence"] == "MIT licence"
    # one chunk with a proof that verifies against the manifest's root
    chunks = split_chunks(FILE)
    c = node.rpc("market_getModelChunk", model=mid, index=2)
    data, proof = bytes.fromhex(c["data"][2:]), [bytes.fromhex(h[2:]) for h in c["proof"]]
    assert data == chunks[2] and verify_merkle_proof(chunk_root(FILE), data, 2, 4, proof)
    assert node.rpc_error("market_getModelChunk", model=mid, index=4)["code"] == -32602
    err = node.rpc_error("market_getModel", model="no-such-model")
    assert err["code"] == -32004 and err["data"]["reason"] == "unknown_model"
    # the pinned chunks survive garbage collection
    node.rpc("admin_blobGc")
    assert node.rpc("market_getModel", model=mid)["local"]["complete"]
    # unpin / pin
    assert "unpinned" in cli(node, "model", "unpin", "tiny-llama")
    assert node.rpc("market_getModel", model=mid)["local"]["pinned"] is False
    assert "4 chunks verified and kept" in cli(node, "model", "pin", mid)
    assert node.rpc("market_getModel", model=mid)["local"]["pinned"] is True
    # fetch reassembles the identical file
    got = tmp_path / "out.bin"
    assert "4 chunks verified" in cli(node, "model", "fetch", "tiny-llama", "--out", str(got))
    assert got.read_bytes() == FILE
    # the name is taken; a bad config and a missing converter give one clear line
    other = tmp_path / "other.bin"
    other.write_bytes(model_file(seed=b"other"))
    assert "taken" in cli(node, "model", "register", str(other), "--name", "tiny-llama", "--arch", str(arch),
                          "--from", "dev", ok=False)
    bad_arch = json.dumps({**CFG.to_map(), "n_kv_heads": 3})
    assert "config is invalid" in cli(node, "model", "register", str(other), "--name", "other",
                                      "--arch", bad_arch, "--from", "dev", ok=False)
    err = cli(node, "model", "import", str(tmp_path / "missing.gguf"), "--from", "dev", ok=False)
    assert err.count("\n") == 1 and err.startswith("error:")
    # other uploads of the owner are still bounded by its per-account quota
    from nodeproc import load_dev_key

    from node.blobs import signed_blob_put_params

    key = load_dev_key(node.home)
    expires = node.height() + 20
    info = node.rpc("system_info")
    node.rpc("blob_put", **signed_blob_put_params(key, info["chain_id"], b"a" * (CHUNK_SIZE // 2), expires))
    err = node.rpc_error("blob_put", **signed_blob_put_params(key, info["chain_id"], b"b" * CHUNK_SIZE, expires))
    assert err["code"] == -32011 and err["data"]["reason"] == "account_quota"
