"""Golden test vectors: every consensus-relevant byte this peer produces, from fixed inputs.

``python -m tests.vectors.generate`` rebuilds the vectors in-process and prints how they differ from
``tests/vectors/golden.json``; ``--write`` stores them. ``tests/test_golden_vectors.py`` rebuilds them
on every test run and fails naming the first differing field, so an upgrade of a consensus-critical
library (cbor2, PyNaCl, NumPy, plyvel, hashlib) or an unintended change of consensus code that alters a
single byte is caught before it forks a network.

Everything is deterministic: keys come from fixed 32-byte seeds, block times and the chain id are
fixed, and nothing reads the clock or a random source. Everything a chain produces comes from running
the real code: ``ChainState.build_block`` on a real LevelDB, a second ``ChainState`` (another LevelDB)
that re-validates and commits every block as a follower would, the proposer schedule and vote sets of
``consensus/``, the market's receipt builder and the GPU executor with the NumPy backend. The
generator only chooses the inputs (transactions, times) and records what comes out; it asserts that
leader and follower agree, that signatures and proofs verify, and that every transaction meant to
fail failed with a reason.

What is recorded:

- ``primitives``: canonical CBOR of a representative set of values (integers at every width boundary,
  bytes, text with non-ASCII, maps whose keys must be sorted, lists, bools, None, floats) and their
  SHA-256; keys (seed → public key → bech32m address); one signature per domain-separation kind of
  ``state/crypto.py`` (found by name, so a new kind shows up as a new field); a signed transaction,
  vote, commit and duplicate-vote evidence; Merkle roots (``state.types.merkle_root``) of 0-9 leaves
  and every inclusion proof (``state.merkle``) of some of them; a sparse-Merkle state tree
  (``state.smt``) with its node hashes, roots after inserts and deletes, and proofs; the job input
  generator (``state/kinds/counter.py``); per job kind the canonical array encoding, result hash, result
  leaves, result Merkle root (what the miner's receipt commits to: ``gpu.executor`` →
  ``encode_array``/``result_root``), a leaf proof and the ``check_leaf`` verdicts.
- ``chains.poa`` and ``chains.pos``: the genesis (its canonical encoding, hash and state root) and a
  few blocks through the real code with transfers, failed transactions (reason codes), miner
  registration, a job submit, bids, the award, a signed receipt (PoA) and delegation, double-sign
  evidence and an epoch change of the validator set (PoS). Per block: the raw transactions and their
  hashes, the consensus results ``[ok, reason]`` (never the English message), tx_root,
  results_hash, state_root, the other header fields, the encoded header, the block hash, the
  proposal signature, the commit (sign-bytes, signatures, encoding) and a digest of the LevelDB
  contents (without the result records, which hold messages). At the end: every account and state
  object, and state-tree proofs.

``mlp-f32`` is a float kind: NumPy evaluates it with BLAS, whose summation order (and FMA use)
depends on the CPU, so its general results are not byte-golden and are not consensus (challenges
are judged by ``check_leaf`` with ``math.fsum``). Recorded for it: a case whose inner dimensions are 1
(every dot product is one rounded product, so the bytes are exact on any CPU), and for a general case
the deterministic float64 reference rows that ``check_leaf`` uses plus its verdicts.

If a change of bytes is intended, bump ``VERSION`` and run ``python -m tests.vectors.generate --write``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from consensus.bft import Proposal, VoteSet
from consensus.schedule import ProposerSchedule
from consensus.validators import Validator, ValidatorSet
from gpu.backend import NumpyBackend
from gpu.encoding import array_hash, decode_array, encode_array, result_leaves, result_root
from gpu.executor import Executor
from gpu.kinds import KINDS, get_kind
from state import codec, crypto
from state import market as mkt
from state.address import decode_address, encode_address
from state.chain import ChainState, PendingBlock
from state.codec import sha256
from state.crypto import SigningKey
from state.evidence import DuplicateVote
from state.genesis import ChainParams, Genesis, GenesisValidator
from state.kinds import counter as gpu_counter
from state.machine import account_state_key, object_state_key
from state.merkle import merkle_proof, verify_merkle_proof
from state.params import MarketParams, StakingParams
from state.smt import SparseMerkleTree, internal_hash, leaf_hash, verify_proof
from state.staking.bodies import delegate_body
from state.staking.model import k_validator
from state.store import K_HEAD, P_RESULTS, P_TX, Store
from state.types import (
    EMPTY_HASH,
    PRECOMMIT,
    PREVOTE,
    Block,
    Commit,
    CommitSig,
    Transaction,
    Vote,
    merkle_root,
    transfer,
)

#: Bump when a change of the recorded bytes is intended, then regenerate with --write.
VERSION = 8
GOLDEN_PATH = Path(__file__).with_name("golden.json")
REGENERATE = "python -m tests.vectors.generate --write"

CHAIN_ID = "aitbc-golden-1"
GENESIS_TIME = 1_700_000_000_000  # ms
BLOCK_INTERVAL = 1_000  # ms between the fixed block times
FEE = 10
# Fixed receipt timestamps (the executor's own wall-clock times are not reproducible).
RECEIPT_STARTED_AT = GENESIS_TIME + 3_100
RECEIPT_COMPLETED_AT = GENESIS_TIME + 3_600


def h(b: bytes) -> str:
    """Bytes as lowercase hex (no prefix)."""
    return bytes(b).hex()


def key(name: str) -> SigningKey:
    """A fixed key: its 32-byte seed is SHA-256("aitbc/golden/key/" + name)."""
    return SigningKey.from_seed(hashlib.sha256(b"aitbc/golden/key/" + name.encode()).digest())


V1, V2 = key("validator-1"), key("validator-2")
ALICE, BOB, CAROL = key("alice"), key("bob"), key("carol")
CLIENT, MINER = key("client"), key("miner")
NAMED_KEYS = {"validator-1": V1, "validator-2": V2, "alice": ALICE, "bob": BOB, "carol": CAROL,
              "client": CLIENT, "miner": MINER}
SEED = bytes(range(32))


# ==================================================================================================
# Primitives


def _cbor_values() -> list[tuple[str, Any]]:
    ints = [0, 1, 10, 23, 24, 25, 100, 255, 256, 1000, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1]
    neg = [-1, -10, -24, -25, -100, -256, -257, -65536, -65537, -(2**32), -(2**32) - 1, -(2**63), -(2**64)]
    out: list[tuple[str, Any]] = [(f"uint_{n}", n) for n in ints]
    out += [(f"nint_{-n}", n) for n in neg]
    out += [("bignum_2^64", 2**64), ("bignum_-2^64-1", -(2**64) - 1)]
    out += [
        ("bytes_empty", b""),
        ("bytes_1", b"\x00"),
        ("bytes_23", bytes(range(23))),
        ("bytes_24", bytes(range(24))),
        ("bytes_256", bytes(i & 0xFF for i in range(256))),
        ("text_empty", ""),
        ("text_ascii", "ait"),
        ("text_24", "abcdefghijklmnopqrstuvwx"),
        ("text_latin1", "é"),
        ("text_cjk", "日本語"),
        ("text_emoji", "🚀 GPU"),
        ("true", True),
        ("false", False),
        ("null", None),
        ("list_empty", []),
        ("list_nested", [1, [2, 3], [b"x", ["y", None]]]),
        ("list_24", list(range(24))),
        ("map_empty", {}),
        # Inserted out of order: canonical encoding sorts keys (shorter first, then bytewise).
        ("map_sorted", {"b": 1, "aa": 2, "a": 3, "ab": [4], "é": 5, "B": 6}),
        ("map_nested", {"z": {"y": {"x": b"\x01", "w": [True, False]}}, "a": {"c": None, "b": -1}}),
        ("map_tx_like", {"sig": b"\x00" * 64, "nonce": 7, "fee": 10, "chain_id": CHAIN_ID, "type": "transfer",
                         "sender": b"\x11" * 32, "body": {"to": b"\x22" * 32, "amount": 2**64 - 1}}),
        ("float_1.5", 1.5),
        ("float_100000.0", 100000.0),
        ("float_0.1", 0.1),
    ]
    return out


def cbor_vectors() -> dict:
    out: dict[str, dict] = {}
    for name, value in _cbor_values():
        enc = codec.encode(value)
        assert codec.decode(enc) == value, name  # strict decode accepts exactly the canonical bytes
        out[name] = {"cbor": h(enc), "sha256": h(sha256(enc))}
    return out


def key_vectors() -> dict:
    out = {}
    for name, k in NAMED_KEYS.items():
        addr = encode_address(k.public_key)
        assert decode_address(addr) == k.public_key
        out[name] = {"seed": h(k.seed), "public_key": h(k.public_key), "address": addr}
    for name, pk in (("zero", b"\x00" * 32), ("ff", b"\xff" * 32)):
        out[f"pubkey_{name}"] = {"public_key": h(pk), "address": encode_address(pk)}
    return out


def signature_vectors() -> dict:
    """One signature per domain-separation kind (every ``KIND_*`` string constant of state/crypto.py)."""
    kinds = sorted({v for n, v in vars(crypto).items() if n.startswith("KIND_") and isinstance(v, str)})
    message = codec.encode({"golden": True, "n": 1})
    out: dict[str, Any] = {"message": h(message), "signer": h(ALICE.public_key), "kinds": {}}
    for kind in kinds:
        sig = ALICE.sign(kind, CHAIN_ID, message)
        assert crypto.verify(kind, CHAIN_ID, ALICE.public_key, message, sig)
        assert not crypto.verify(kind, CHAIN_ID + "x", ALICE.public_key, message, sig)
        out["kinds"][kind] = {"prefix": h(crypto.domain_prefix(kind, CHAIN_ID)), "sig": h(sig)}
    raw = b"aitbc golden raw message"
    out["raw"] = {"message": h(raw), "sig": h(ALICE.sign_raw(raw))}
    return out


def wire_vectors() -> dict:
    """A signed transfer, votes, a commit and duplicate-vote evidence."""
    tx = transfer(ALICE, CHAIN_ID, BOB.public_key, 123_456, 7, FEE)
    assert tx.verify_signature() and Transaction.decode(tx.raw) == tx
    bh = sha256(b"golden block")
    prevote = Vote.create(V1, CHAIN_ID, 5, 1, PREVOTE, bh)
    nil = Vote.create(V1, CHAIN_ID, 5, 1, PRECOMMIT, b"")
    pcs = [Vote.create(k, CHAIN_ID, 5, 1, PRECOMMIT, bh) for k in (V1, V2)]
    commit = Commit(5, 1, bh, tuple(sorted((CommitSig(v.validator, v.sig) for v in pcs), key=lambda s: s.validator)))
    other = Vote.create(V1, CHAIN_ID, 5, 1, PREVOTE, sha256(b"golden other block"))
    ev = DuplicateVote.from_votes(prevote, other)
    assert DuplicateVote.decode(ev.encode()) == ev
    # the p2p status of a validator's node: V1 vouches for the peer id of node key BOB
    from p2p.identity import peer_id_from_ed25519
    from p2p.wire import ChainStatus, ValidatorProof

    genesis, node = sha256(b"golden genesis"), peer_id_from_ed25519(BOB.public_key)
    proof = ValidatorProof.make(V1, CHAIN_ID, genesis, node)
    assert proof.verify(CHAIN_ID, genesis, node) and not proof.verify(CHAIN_ID, genesis, peer_id_from_ed25519(V1.public_key))
    status = ChainStatus(CHAIN_ID, genesis, 9, bh, 8, proof)
    assert ChainStatus.decode(status.encode()) == status
    return {
        "p2p_status": {"peer_id": node, "proof_encoding": h(ValidatorProof.encoding(genesis, node)),
                       "proof_sig": h(proof.signature), "status": h(status.encode())},
        "transfer": {"signing_bytes": h(tx.signing_bytes()), "sig": h(tx.sig), "raw": h(tx.raw), "hash": h(tx.hash)},
        "prevote": {"sign_bytes": h(prevote.sign_bytes()), "sig": h(prevote.sig), "encoding": h(prevote.encode())},
        "nil_precommit": {"sign_bytes": h(nil.sign_bytes()), "sig": h(nil.sig), "encoding": h(nil.encode())},
        "commit": {"sign_bytes": h(commit.sign_bytes()), "encoding": h(commit.encode()), "hash": h(commit.hash())},
        "duplicate_vote": {"encoding": h(ev.encode()), "hash": h(ev.hash())},
    }


def merkle_vectors() -> dict:
    def leaves(n: int) -> list[bytes]:
        return [bytes([i]) * (i + 1) for i in range(n)]

    roots = {str(n): h(merkle_root(leaves(n))) for n in range(10)}
    assert roots["0"] == h(EMPTY_HASH)
    proofs: dict[str, list[list[str]]] = {}
    for n in (1, 2, 3, 5, 7, 8):
        ls, root = leaves(n), merkle_root(leaves(n))
        proofs[str(n)] = []
        for i in range(n):
            p = merkle_proof(ls, i)
            assert verify_merkle_proof(root, ls[i], i, n, p)
            proofs[str(n)].append([h(x) for x in p])
    return {"leaves": "leaf i = bytes([i]) * (i + 1)", "roots": roots, "proofs": proofs}


def smt_vectors() -> dict:
    db: dict[bytes, bytes] = {}
    tree = SparseMerkleTree(db.get, prefix=b"T", cache_size=0)

    def kv(i: int) -> tuple[bytes, bytes]:
        return sha256(b"smt-key-%d" % i), sha256(b"smt-value-%d" % i)

    def commit(changes: dict[bytes, bytes | None]) -> str:
        upd = tree.compute_update(changes)
        for k, v in upd.writes.items():
            if v is None:
                db.pop(k, None)
            else:
                db[k] = v
        tree.apply(upd)
        return h(tree.root)

    roots = {"empty": h(tree.root)}
    roots["one"] = commit(dict([kv(0)]))
    roots["ten"] = commit(dict(kv(i) for i in range(1, 10)))
    roots["updated"] = commit({kv(3)[0]: sha256(b"new")})
    roots["deleted"] = commit({kv(i)[0]: None for i in (0, 5, 9)})
    present, absent = kv(4)[0], kv(5)[0]
    p_in, p_out = tree.prove(present), tree.prove(absent)
    assert verify_proof(tree.root, present, kv(4)[1], p_in) and verify_proof(tree.root, absent, None, p_out)
    return {
        "keys": "key i = sha256(b'smt-key-%d' % i), value hash = sha256(b'smt-value-%d' % i)",
        "leaf_hash": h(leaf_hash(*kv(0))),
        "internal_hash": h(internal_hash(kv(0)[1], kv(1)[1])),
        "roots": roots,
        "node_records_digest": _digest(sorted(db.items())),
        "proof_present": p_in.to_obj(),
        "proof_absent": p_out.to_obj(),
    }


# Kinds that run over a registered model (no seed, no standalone run): not in the counter/gpu vectors.
MODEL_KINDS = frozenset({"llm-generate"})
SEEDED_KINDS = {name: kind for name, kind in KINDS.items() if name not in MODEL_KINDS}


def counter_vectors() -> dict:
    out = {}
    for name, kind in sorted(SEEDED_KINDS.items()):
        k = gpu_counter.derive_key(name, kind.version, SEED)
        out[name] = {
            "key": format(k, "016x"),
            "u32_stream0": [format(gpu_counter.u32_at(k, 0, i), "08x") for i in range(4)],
            "u32_range_stream1": h(gpu_counter.u32_range(k, 1, 1000, 8).astype("<u4").tobytes()),
        }
    return out


# Small fixed params per kind (every registered kind must have an entry: a new kind fails loudly).
KIND_PARAMS: dict[str, dict] = {
    "matmul-u32": {"m": 4, "n": 3, "k": 5, "seed": SEED},
    "hash-chain": {"chains": 5, "iterations": 7, "seed": SEED},
    # Inner dimensions 1: each dot product is one rounded float32 product, exact on every CPU/BLAS.
    "mlp-f32": {"batch": 3, "d_in": 1, "d_hidden": 1, "d_out": 2, "seed": SEED},
}
MLP_GENERAL = {"batch": 3, "d_in": 4, "d_hidden": 5, "d_out": 2, "seed": SEED}


def gpu_vectors() -> dict:
    missing = sorted(set(SEEDED_KINDS) - set(KIND_PARAMS))
    assert not missing, f"add small fixed params for the new job kind(s) {missing} to KIND_PARAMS"
    executor = Executor(NumpyBackend())
    out: dict[str, Any] = {}
    for name in sorted(SEEDED_KINDS):
        kind, params = get_kind(name), KIND_PARAMS[name]
        arr = kind.execute_numpy(params, None)
        enc = encode_array(arr)
        assert np.array_equal(decode_array(enc), arr)
        # What the miner puts in its receipt (node/miner.py: executor result_hash and result_root).
        res = executor.run_sync(name, params, None, time_limit_s=60, max_result_bytes=1 << 20)
        assert (res.encoded, res.result_hash, res.result_root) == (enc, array_hash(arr), result_root(arr))
        leaves = result_leaves(arr)
        proof = merkle_proof(leaves, 1)
        assert verify_merkle_proof(res.result_root, leaves[1], 1, kind.leaf_count(params), proof)
        bad = bytes([leaves[1][0] ^ 0x5A]) + leaves[1][1:]
        out[name] = {
            "params": h(codec.encode(params)),
            "version": kind.version,
            "work_units": kind.work_units(params),
            "leaf_count": kind.leaf_count(params),
            "encoding": h(enc),
            "result_hash": h(res.result_hash),
            "result_size": res.result_size,
            "leaves": [h(x) for x in leaves],
            "result_root": h(res.result_root),
            "leaf1_proof": [h(x) for x in proof],
            "check_leaf": [kind.check_leaf(params, None, i, x) for i, x in enumerate(leaves)],
            "check_leaf_tampered": kind.check_leaf(params, None, 1, bad),
        }
    # mlp-f32, general case: only the deterministic reference (float64 via math.fsum) is golden.
    mlp = get_kind("mlp-f32")
    arr = mlp.execute_numpy(MLP_GENERAL, None)
    rows = [mlp.reference_row(MLP_GENERAL, None, i) for i in range(MLP_GENERAL["batch"])]
    leaves = result_leaves(arr)
    out["mlp-f32/general"] = {
        "params": h(codec.encode(MLP_GENERAL)),
        "work_units": mlp.work_units(MLP_GENERAL),
        "reference_rows": [[x.hex() for x in ref] for ref, _ in rows],
        "magnitude_rows": [[x.hex() for x in mag] for _, mag in rows],
        "check_leaf_numpy_result": [mlp.check_leaf(MLP_GENERAL, None, i, x) for i, x in enumerate(leaves)],
        "check_leaf_far_off": mlp.check_leaf(
            MLP_GENERAL, None, 0, np.asarray(arr[0] * 1024 + 7, dtype="<f4").tobytes()
        ),
    }
    return out


def llm_vectors() -> dict:
    """``llm-generate`` result format (state/kinds/llm_trace.py, ROWS_FORMAT) on a tiny seeded model:
    the model file's chunk root, the token rows and their step roots, result hash and root, the step
    leaves of one position, a multiproof, the verdicts of the on-chain step check and row checks."""
    from gpu.llm.gguf_import import build_model_file
    from gpu.llm.tiny import random_tensors
    from state.kinds import llm_generate as lg
    from state.kinds import llm_trace as lt
    from state.llm.config import LlamaConfig
    from state.llm.generate import IntModel, generate, output_bytes
    from state.llm.modelfile import split_chunks
    from state.llm.steps import Op, StepId
    from state.market import llm_disputes as ld
    from state.market import models

    cfg = LlamaConfig(vocab=300, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, ffn_dim=48,
                      max_ctx=32, rope_base=10000, norm_eps_num=1, norm_eps_den=100000, tied_embeddings=True,
                      bos_id=1, eos_id=2)
    tok = codec.encode({"tokens": ["a", "b"]})
    data = build_model_file(cfg, random_tensors(cfg, 11), tok)  # tied: no "output" tensor
    chunks = split_chunks(data)
    manifest, _, _ = models.manifest_for_file(data, name="golden-tiny", arch=cfg.to_map(), tokenizer_size=len(tok))
    mv = lg.model_view(manifest)
    model = IntModel(cfg, data)
    out: dict[str, Any] = {
        "rows_format": lt.ROWS_FORMAT,
        "rows_version": lt.ROWS_VERSION,
        "model_id": h(models.model_id(manifest)),
        "chunk_root": h(manifest["root"]),
        "steps_per_position": [lt.step_count(cfg, 3, 0), lt.step_count(cfg, 3, 2)],
        "cases": {},
    }
    sampling = {"greedy": {"mode": "greedy"},
                "sample": {"mode": "sample", "seed": SEED, "temperature": [8, 1], "top_k": 16}}
    for name, smp in sampling.items():
        params = {"model": models.model_id(manifest), "prompt": [5, 17, 3], "max_new_tokens": 3, "sampling": smp}
        tokens, trace = generate(model, params["prompt"], 3, lg.sampling_of(params))
        rows = lt.result_rows(trace, params["prompt"], 3, tokens)
        leaves = result_leaves(rows)
        digests = [lt.position_digests(trace, t) for t in range(trace.n_positions)]
        root = result_root(rows)
        t = trace.n_positions - 1
        verdicts = {}
        for st in (StepId(t, 0, Op.EMBED), StepId(t, 1, Op.ATTN, 1), StepId(t, 0, Op.SAMPLE)):
            outputs = {s: output_bytes(a) for s, a in trace.outputs.items()}
            body = ld.step_proof_body(b"\x00" * 32, 0, cfg, 3, leaves, digests.__getitem__,
                                      outputs.__getitem__, st, chunks)
            verdicts[repr(st)] = [len(codec.encode(body)), ld.judge_step_proof(mv, params, len(leaves), root, leaves[t], body)]
            assert verdicts[repr(st)][1] is None
        proof = lt.step_multiproof(cfg, 3, t, digests[t], [0, 5, 6])
        assert lt.step_root(cfg, 3, t, digests[t]) == lt.Row.decode(leaves[t]).step_root
        zero = bytes(lt.ROW_BYTES)
        out["cases"][name] = {
            "params": h(codec.encode(params)),
            "tokens": tokens,
            "rows": [h(x) for x in leaves],
            "result_root": h(root),
            "result_hash": h(array_hash(rows)),
            "position_leaves": [h(x) for x in lt.position_leaves(cfg, 3, t, digests[t])[:8]],
            "multiproof_0_5_6": [h(x) for x in proof],
            "step_proofs": verdicts,  # [body bytes, verdict (None: the miner's digest is right)]
            "row_faults": [
                lt.row_fault(cfg, params["prompt"], [], 3, zero, leaves[2]),
                lt.row_fault(cfg, params["prompt"], [tokens[0]], 3, zero, leaves[2]),
                lt.row_fault(cfg, params["prompt"], [], 1, leaves[2], leaves[0]),
                lt.row_fault(cfg, params["prompt"], [], 3, leaves[3], leaves[2]),
            ],
            "work": lg.LlmGenerateRules().dispute_work(
                params, None, lg.KindContext(lambda mid: manifest)
            ),
        }
    return out


def primitives() -> dict:
    return {
        "cbor": cbor_vectors(),
        "keys": key_vectors(),
        "signatures": signature_vectors(),
        "wire": wire_vectors(),
        "merkle": merkle_vectors(),
        "smt": smt_vectors(),
        "gpu_counter": counter_vectors(),
        "gpu": gpu_vectors(),
        "llm": llm_vectors(),
        "zk": zk_vectors(),
    }


def zk_vectors() -> dict:
    """zk/ proofs and the sealed-bid transaction bodies, from deterministic nonces (counter hashes)."""
    from state.market import sealed
    from zk import auction, g1, group

    rand = group.counter_scalars(b"golden-zk")

    secret = rand()
    client_key = group.mul_base(secret)
    job_id = bytes(range(32))
    bids = [
        auction.make_bid(CHAIN_ID, job_id, k.public_key, client_key, 8, tick, rand=rand)[0]
        for k, tick in ((MINER, 200), (BOB, 17), (CAROL, 17))
    ]
    award = auction.make_award(CHAIN_ID, job_id, CLIENT.public_key, secret, 8, bids, rand=rand)
    out = auction.verify_award(CHAIN_ID, job_id, CLIENT.public_key, client_key, 8, bids, award)
    return {
        "generator_v": h(g1.encode(g1.V)),
        "client_key": h(client_key),
        "sealed_bid_bodies": [h(codec.encode(sealed.sealed_bid_body(job_id, b))) for b in bids],
        "sealed_award_body": h(codec.encode(sealed.sealed_award_body(job_id, award))),
        "winner": out.winner,
        "tick": out.tick,
        "price": auction.tick_price(out.tick, 1_000, 8),
    }


# ==================================================================================================
# Chains


MARKET = MarketParams(min_miner_bond=1_000, miner_unbonding_blocks=3, max_deadline_blocks=50,
                      max_challenge_window=20, challenge_bond=400)
STAKING = StakingParams(epoch_blocks=3, max_validators=4, min_self_bond=1_000, power_unit=1_000,
                        unbonding_blocks=4, block_reward=500, signed_blocks_window=4, jail_blocks=5,
                        max_evidence_age=10)


def make_genesis(consensus: str) -> Genesis:
    powers = {"poa": (1, 1), "pos": (10, 30)}[consensus]
    balances = {ALICE: 1_000_000, BOB: 500_000, CAROL: 1_000, CLIENT: 100_000, MINER: 50_000}
    return Genesis(
        chain_id=CHAIN_ID,
        genesis_time=GENESIS_TIME,
        consensus=consensus,
        params=ChainParams(min_fee=FEE, market=MARKET, staking=STAKING),
        accounts=tuple(sorted((k.public_key, b) for k, b in balances.items())),
        validators=(GenesisValidator(V1.public_key, powers[0], "v1"), GenesisValidator(V2.public_key, powers[1], "v2")),
    )


def _digest(items: Iterator[tuple[bytes, bytes]] | list[tuple[bytes, bytes]]) -> str:
    """SHA-256 over length-prefixed key/value pairs, in the given order."""
    d = hashlib.sha256()
    for k, v in items:
        d.update(len(k).to_bytes(4, "big") + k + len(v).to_bytes(4, "big") + v)
    return d.hexdigest()


def store_digest(store: Store) -> str:
    """Digest of the whole LevelDB (LevelDB's own key order), without the result records (``R``, ``x``),
    which hold the non-consensus English messages."""
    with store.db.iterator() as it:
        return _digest((k, v) for k, v in it if k[:1] not in (P_RESULTS, P_TX))


class GoldenChain:
    """A chain driven through the real code: a leader ChainState builds and commits each block, a
    follower ChainState on another LevelDB re-validates and commits it; proposer schedule, proposals,
    vote sets and commits are those of ``consensus/``."""

    def __init__(self, genesis: Genesis, tmp: Path) -> None:
        self.genesis = genesis
        self.store = Store(tmp / "leader")
        self.fstore = Store(tmp / "follower")
        self.chain = ChainState(self.store, genesis)
        self.follower = ChainState(self.fstore, genesis)
        assert self.chain.head == self.follower.head
        self.keys = {k.public_key: k for k in NAMED_KEYS.values()}
        vs = ValidatorSet([Validator(v.public_key, v.power, v.name) for v in genesis.validators])
        self.schedule = ProposerSchedule(vs)
        for from_height, vals in self.chain.validator_sets():  # as BftEngine.install_validator_sets
            self.schedule.set_validators(from_height, ValidatorSet([Validator(pk, p) for pk, p in vals]))
        self.nonces: dict[bytes, int] = {}
        self.last_commit: Commit | None = None
        self.blocks: list[dict] = []

    def close(self) -> None:
        self.store.close()
        self.fstore.close()

    def tx(self, k: SigningKey, type_: str, body: dict) -> Transaction:
        n = self.nonces.get(k.public_key, 0)
        self.nonces[k.public_key] = n + 1
        return Transaction.create(k, CHAIN_ID, type_, n, FEE, body)

    def genesis_record(self) -> dict:
        g = self.genesis
        return {
            "consensus": g.consensus,
            "encoding": h(codec.encode(g.to_obj())),
            "hash": h(g.hash),
            "state_root": h(self.chain.head.state_root),
            "head": h(self.store.get(K_HEAD) or b""),
            "validators_hash": h(self.schedule.validators(1).hash),
            "store_digest": store_digest(self.store),
        }

    def produce(self, txs: list[Transaction], *, evidence: tuple[bytes, ...] = (),
                expect_failed: int = 0) -> PendingBlock:
        chain, cid = self.chain, CHAIN_ID
        height = chain.head.height + 1
        time_ms = GENESIS_TIME + BLOCK_INTERVAL * height
        vs, vs_next = self.schedule.validators(height), self.schedule.validators(height + 1)
        proposer = self.keys[self.schedule.proposer(height, 0).public_key]
        pending = chain.build_block(
            txs, proposer=proposer.public_key, time_ms=time_ms, last_commit=self.last_commit,
            validators_hash=vs.hash, next_validators_hash=vs_next.hash, evidence=evidence,
        )
        block, outcome = pending.block, pending.outcome
        assert not outcome.skipped, [(t.type, str(e)) for t, e in outcome.skipped]
        assert list(block.txs) == txs and block.evidence == tuple(evidence), "a transaction or evidence was left out"
        failed = [r for r in outcome.results if not r.ok]
        assert len(failed) == expect_failed and all(r.reason for r in failed), [r.to_obj() for r in outcome.results]
        # The proposal, as the proposer's engine signs it; a peer decodes it and re-validates the block.
        proposal = Proposal.create(proposer, cid, height, 0, -1, block)
        received = Proposal.decode(proposal.encode())
        assert received.verify(cid) and received.block == block
        fpending = self.follower.validate_block(received.block)
        assert fpending.block.header == block.header
        # Prevotes and precommits of every validator of the height; the commit is the vote set's.
        prevotes = [Vote.create(self.keys[v.public_key], cid, height, 0, PREVOTE, block.hash) for v in vs.validators]
        votes = VoteSet(height, 0, PRECOMMIT, vs)
        for v in vs.validators:
            pc = Vote.create(self.keys[v.public_key], cid, height, 0, PRECOMMIT, block.hash)
            assert pc.verify(cid)
            votes.add(pc, v.power)
        assert votes.quorum_hash() == block.hash
        commit = votes.commit(block.hash)
        vs.verify_commit(cid, commit, block.hash, height)
        chain.commit(pending, commit)
        self.follower.commit(fpending, commit)
        assert chain.head == self.follower.head and chain.tree.root == self.follower.tree.root
        if outcome.valset_update is not None:  # as BftEngine does right after the commit
            from_height, vals = outcome.valset_update
            self.schedule.set_validators(from_height, ValidatorSet([Validator(pk, p) for pk, p in vals]))
        self.last_commit = commit
        # Read back what the store holds.
        assert chain.block_at(height) == block and chain.commit_at(height) == commit
        stored = chain.block_raw_at(height)
        assert stored == block.encode() and Block.decode(stored) == block
        results = [r.consensus_obj() for r in chain.results_at(height)]
        assert results == [r.consensus_obj() for r in outcome.results]
        for i, t in enumerate(txs):
            entry = chain.tx_lookup(t.hash)
            assert entry is not None and entry[1:3] == (height, i)
        hdr = block.header
        self.blocks.append({
            "height": height,
            "time": hdr.time,
            "proposer": h(hdr.proposer),
            "txs": [{"type": t.type, "raw": h(t.raw), "hash": h(t.hash)} for t in block.txs],
            "results": results,
            "evidence": [h(e) for e in block.evidence],
            "tx_root": h(hdr.tx_root),
            "results_hash": h(hdr.results_hash),
            "state_root": h(hdr.state_root),
            "evidence_hash": h(hdr.evidence_hash),
            "prev_hash": h(hdr.prev_hash),
            "last_commit_hash": h(hdr.last_commit_hash),
            "validators_hash": h(hdr.validators_hash),
            "next_validators_hash": h(hdr.next_validators_hash),
            "header": h(hdr.encode()),
            "block_hash": h(block.hash),
            "block_encoding_sha256": h(sha256(stored)),
            "proposal": {"sign_bytes": h(proposal.sign_bytes()), "sig": h(proposal.sig),
                         "encoding_sha256": h(sha256(proposal.encode()))},
            "prevote_sigs": [[h(v.validator), h(v.sig)] for v in prevotes],
            "commit": {
                "sign_bytes": h(commit.sign_bytes()),
                "signatures": [[h(s.validator), h(s.sig)] for s in commit.signatures],
                "encoding": h(commit.encode()),
                "hash": h(commit.hash()),
            },
            "head": h(self.store.get(K_HEAD) or b""),
            "store_digest": store_digest(self.store),
        })
        return pending

    def final_state(self, account_keys: list[SigningKey], object_keys: list[bytes]) -> dict:
        chain = self.chain
        with self.store.db.iterator(prefix=b"a") as it:
            accounts = {h(k[1:]): h(v) for k, v in it}
        with self.store.db.iterator(prefix=b"o") as it:
            objects = {h(k[1:]): h(v) for k, v in it}
        proofs = {}
        for k in account_keys:
            proof, head, acc = chain.prove_account(k.public_key)
            assert acc is not None and verify_proof(head.state_root, account_state_key(k.public_key),
                                                    sha256(acc.encode()), proof)
            proofs[encode_address(k.public_key)] = proof.to_obj()
        for ok in object_keys:
            proof, head, value = chain.prove_object(ok)
            assert value is not None and verify_proof(head.state_root, object_state_key(ok), sha256(value), proof)
            proofs["object:" + h(ok)] = proof.to_obj()
        return {"accounts": accounts, "objects": objects, "proofs": proofs}


def poa_chain(tmp: Path) -> dict:
    """Transfers, a failed transfer, a miner, a job, bids (one failing), the award, a signed receipt."""
    c = GoldenChain(make_genesis("poa"), tmp)
    try:
        genesis = c.genesis_record()
        caps = mkt.capabilities("cuda", "Golden GPU", 8 << 30, "9.0", {"matmul-u32": 100})
        params = KIND_PARAMS["matmul-u32"]
        submit = c.tx(CLIENT, mkt.TX_JOB_SUBMIT, mkt.job_submit_body(
            "matmul-u32", get_kind("matmul-u32").version, params,
            max_price=100, max_units=5, bid_window=2, deadline=5))
        job_id = submit.hash
        c.produce([  # 1
            c.tx(ALICE, "transfer", {"to": BOB.public_key, "amount": 250_000}),
            c.tx(ALICE, "transfer", {"to": CAROL.public_key, "amount": 50}),
            c.tx(MINER, mkt.TX_MINER_REGISTER, mkt.miner_register_body(2_000, caps, {"matmul-u32": 5})),
            submit,
        ])
        c.produce([  # 2: CAROL cannot pay; BOB is no miner
            c.tx(MINER, mkt.TX_BID, mkt.bid_body(job_id, 60)),
            c.tx(CAROL, "transfer", {"to": BOB.public_key, "amount": 1_000_000}),
            c.tx(BOB, mkt.TX_BID, mkt.bid_body(job_id, 50)),
        ], expect_failed=2)
        c.produce([c.tx(BOB, "transfer", {"to": ALICE.public_key, "amount": 1})])  # 3: award at its end
        job = mkt.decode_job(c.chain.get_object(mkt.job_key(job_id)))
        assert job.state == mkt.RUNNING and job.miner == MINER.public_key, job.state
        # The miner's path (node/miner.py): executor result, then the signed receipt.
        executor = Executor(NumpyBackend())
        res = executor.run_sync(job.kind, job.params, None, time_limit_s=60, max_result_bytes=1 << 20)
        units = min(res.units, job.max_units)
        receipt, sig = mkt.make_receipt(
            MINER, CHAIN_ID, job, units=units, started_at=RECEIPT_STARTED_AT, completed_at=RECEIPT_COMPLETED_AT,
            result_hash=res.result_hash, result_root=res.result_root, result_size=len(res.encoded),
            backend="cuda", device="Golden GPU",
        )
        assert mkt.verify_receipt(CHAIN_ID, receipt, sig)
        c.produce([c.tx(MINER, mkt.TX_RECEIPT, mkt.receipt_body(receipt, sig))])  # 4
        job = mkt.decode_job(c.chain.get_object(mkt.job_key(job_id)))
        assert (job.state, job.payment) == (mkt.COMPLETED, mkt.RELEASED), (job.state, job.payment)
        c.produce([  # 5: cancelling a completed job fails
            c.tx(CLIENT, mkt.TX_JOB_CANCEL, mkt.job_cancel_body(job_id)),
            c.tx(BOB, "transfer", {"to": CLIENT.public_key, "amount": 777}),
        ], expect_failed=1)
        return {
            "genesis": genesis,
            "blocks": c.blocks,
            "job_id": h(job_id),
            "receipt": {
                "encoding": h(mkt.receipt_encoding(receipt)),
                "receipt_id": h(mkt.receipt_id(receipt)),
                "sig": h(sig),
                "result_hash": h(res.result_hash),
                "result_root": h(res.result_root),
                "units": units,
            },
            "job_record": h(c.chain.get_object(mkt.job_key(job_id)) or b""),
            "miner_record": h(c.chain.get_object(mkt.miner_key(MINER.public_key)) or b""),
            "final": c.final_state([CLIENT, MINER, CAROL], [mkt.job_key(job_id)]),
        }
    finally:
        c.close()


def pos_chain(tmp: Path) -> dict:
    """Transfers, a delegation, a failed transfer, double-sign evidence and an epoch change of the set."""
    c = GoldenChain(make_genesis("pos"), tmp)
    try:
        genesis = c.genesis_record()
        c.produce([  # 1
            c.tx(ALICE, "transfer", {"to": BOB.public_key, "amount": 100_000}),
            c.tx(ALICE, "delegate", delegate_body(V2.public_key, 20_000)),
        ])
        a = Vote.create(V1, CHAIN_ID, 1, 0, PREVOTE, sha256(b"golden fork a"))
        b = Vote.create(V1, CHAIN_ID, 1, 0, PREVOTE, sha256(b"golden fork b"))
        ev = DuplicateVote.from_votes(a, b).encode()
        c.produce([c.tx(CAROL, "transfer", {"to": BOB.public_key, "amount": 5_000})],  # 2
                  evidence=(ev,), expect_failed=1)
        c.produce([c.tx(BOB, "delegate", delegate_body(V2.public_key, 1_000))])  # 3: end of epoch
        c.produce([])  # 4
        c.produce([c.tx(BOB, "transfer", {"to": ALICE.public_key, "amount": 3})])  # 5
        assert any(b["validators_hash"] != c.blocks[0]["validators_hash"] for b in c.blocks), "no set change"
        return {
            "genesis": genesis,
            "blocks": c.blocks,
            "validator_sets": [[fh, [[h(pk), p] for pk, p in vals]] for fh, vals in c.chain.validator_sets()],
            "supply": c.chain.supply(),
            "final": c.final_state([ALICE, BOB], [k_validator(V1.public_key), k_validator(V2.public_key)]),
        }
    finally:
        c.close()


def chains() -> dict:
    with tempfile.TemporaryDirectory(prefix="aitbc-golden-") as d:
        return {"poa": poa_chain(Path(d) / "poa"), "pos": pos_chain(Path(d) / "pos")}


def build() -> dict:
    """All vectors, in a fixed key order (primitives first: a library change shows at its source), in
    their JSON form (what ``load_golden`` returns for the file)."""
    vectors = {
        "version": VERSION,
        "chain_id": CHAIN_ID,
        "primitives": primitives(),
        "chains": chains(),
    }
    return json.loads(json.dumps(vectors))


# ==================================================================================================
# Comparison and CLI


def diff(expected: Any, actual: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Yield ``(path, description)`` for every difference, in the expected document's order."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for k, v in expected.items():
            p = f"{path}.{k}" if path else k
            if k not in actual:
                yield p, "missing in the regenerated vectors"
            else:
                yield from diff(v, actual[k], p)
        for k in actual:
            if k not in expected:
                yield (f"{path}.{k}" if path else k), "new field, not in golden.json"
    elif isinstance(expected, list) and isinstance(actual, list):
        for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
            yield from diff(e, a, f"{path}[{i}]")
        if len(expected) != len(actual):
            yield path, f"length {len(expected)} in golden.json, {len(actual)} now"
    elif type(expected) is not type(actual) or expected != actual:
        yield path, f"golden {_short(expected)}, now {_short(actual)}"


def _short(v: Any, n: int = 48) -> str:
    s = json.dumps(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def failure_message(differences: list[tuple[str, str]]) -> str:
    path, what = differences[0]
    more = f" ({len(differences) - 1} more differing field(s))" if len(differences) > 1 else ""
    return (
        f"{path} differs: a library or consensus code changed bytes ({what}){more}; "
        f"if intended, bump the version (tests/vectors/generate.py VERSION) and regenerate with {REGENERATE}"
    )


def dumps(vectors: dict) -> str:
    return json.dumps(vectors, indent=1) + "\n"


def load_golden(path: Path = GOLDEN_PATH) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.vectors.generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help=f"write {GOLDEN_PATH.name}")
    ap.add_argument("--limit", type=int, default=40, help="differences to list (default 40)")
    args = ap.parse_args(argv)
    vectors = build()
    golden = load_golden()
    if golden is None:
        out(f"{GOLDEN_PATH} does not exist yet")
        differences: list[tuple[str, str]] = [("(file)", "missing")]
    else:
        differences = list(diff(golden, vectors))
        if not differences:
            out(f"{GOLDEN_PATH}: up to date (version {VERSION})")
        else:
            out(f"{len(differences)} field(s) differ from {GOLDEN_PATH}:")
            for p, what in differences[: args.limit]:
                out(f"  {p}: {what}")
            if len(differences) > args.limit:
                out(f"  ... and {len(differences) - args.limit} more")
            if golden.get("version") == VERSION:
                out(f"note: VERSION is still {VERSION}; bump it when a change of bytes is intended")
    if args.write:
        text = dumps(vectors)
        GOLDEN_PATH.write_text(text, encoding="utf-8")
        out(f"wrote {GOLDEN_PATH} ({len(text)} bytes)")
        return 0
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
