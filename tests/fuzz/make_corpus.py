"""(Re)write the ``valid-*`` and ``edge-*`` seed files of ``tests/fuzz/corpus`` from the real code.

    python tests/fuzz/make_corpus.py            # rewrite the generated seeds (deterministic)
    python tests/fuzz/make_corpus.py --check    # exit 1 if the corpus on disk differs

Everything is deterministic (fixed seeds, fixed times; the keystore's salt and nonce come from a
patched random source), so re-running it changes no file unless an encoding changed. Files named
``crash-*`` (saved by a failing fuzz run) and ``bug-*`` (known bugs, see ``fuzzlib.KNOWN_BUGS``) are
never touched; generated files that are no longer produced are removed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any
from unittest import mock

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from consensus.bft import Proposal  # noqa: E402
from gpu.encoding import encode_array  # noqa: E402
from p2p.batch import encode_batch  # noqa: E402
from p2p.identity import peer_id_from_ed25519  # noqa: E402
from p2p.wire import ChainStatus, error, ok  # noqa: E402
from state import codec  # noqa: E402
from state import market as mkt  # noqa: E402
from state import staking as stk  # noqa: E402
from state.address import encode_address  # noqa: E402
from state.crypto import SigningKey  # noqa: E402
from state.evidence import DuplicateVote  # noqa: E402
from state.kinds.llm_trace import ROW_BYTES  # noqa: E402
from state.market.llm_disputes import llm_challenge_body, llm_steps_body  # noqa: E402
from state.types import (  # noqa: E402
    PRECOMMIT,
    PREVOTE,
    Account,
    Block,
    BlockHeader,
    Commit,
    CommitSig,
    Transaction,
    Vote,
    merkle_root,
)

CORPUS = HERE / "corpus"
CHAIN = "fuzz-chain"
GENESIS_HASH = bytes.fromhex("07" * 32)
KEYS = [SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(4)]
PKS = [k.public_key for k in KEYS]
#: the gossip fuzzer's view: consensus decides this height, the validator set is KEYS
HEIGHT = 5
KEYSTORE_PASSWORD = "fuzz-password"
KEYSTORE_NAME = "fuzz"


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def frame(obj: Any) -> bytes:
    data = codec.encode(obj)
    return varint(len(data)) + data


# ----------------------------------------------------------------------------------------- objects


def transactions() -> dict[str, Transaction]:
    k0, k1 = KEYS[0], KEYS[1]
    job_id = hashlib.sha256(b"job").digest()
    receipt = mkt.receipt_map(
        job_id=job_id,
        provider=PKS[1],
        client=PKS[0],
        units=3,
        unit_type="khash",
        unit_price=7,
        started_at=10,
        completed_at=20,
        result_hash=b"\x11" * 32,
        result_root=b"\x22" * 32,
        result_size=64,
        backend="numpy",
        device="cpu",
    )
    bodies = {
        "transfer": {"to": PKS[1], "amount": 1000},
        "job_submit": mkt.job_submit_body(
            "hash-chain",
            1,
            {"chains": 4, "iterations": 10, "seed": b"\x05" * 32},
            max_price=10,
            max_units=100,
            bid_window=5,
            deadline=50,
            verify_rate_bps=100,
            challenge_window=10,
        ),
        "bid": mkt.bid_body(job_id, 7),
        "receipt": mkt.receipt_body(receipt, mkt.sign_receipt(k1, CHAIN, receipt)),
        "delegate": stk.delegate_body(PKS[2], 500),
        "redelegate": stk.redelegate_body(PKS[2], PKS[3], 100),
        "validator_create": stk.validator_create_body(PKS[0], 500, 1_000_000, "val-0"),
    }
    return {
        name: Transaction.create(k0 if name != "receipt" else k1, CHAIN, name, i, 10, body)
        for i, (name, body) in enumerate(bodies.items())
    }


def vote(
    height: int = HEIGHT, round_: int = 0, vt: int = PREVOTE, block_hash: bytes = b"\xaa" * 32, key: int = 0
) -> Vote:
    return Vote.create(KEYS[key], CHAIN, height, round_, vt, block_hash)


def commit(height: int, block_hash: bytes, n: int = 3) -> Commit:
    sigs = tuple(CommitSig(PKS[i], vote(height, 0, PRECOMMIT, block_hash, i).sig) for i in range(n))
    return Commit(height, 0, block_hash, sigs)


def block(height: int, txs: list[Transaction], evidence: list[bytes] = ()) -> Block:
    prev = hashlib.sha256(b"block %d" % (height - 1)).digest()
    header = BlockHeader(
        chain_id=CHAIN,
        height=height,
        time=1_764_000_000_000 + height,
        prev_hash=prev,
        tx_root=merkle_root([t.hash for t in txs]),
        state_root=b"\x01" * 32,
        results_hash=b"\x02" * 32,
        proposer=PKS[0],
        validators_hash=b"\x03" * 32,
        next_validators_hash=b"\x03" * 32,
        last_commit_hash=b"\x04" * 32,
        evidence_hash=merkle_root(list(evidence)),
    )
    return Block(header, tuple(txs), commit(height - 1, prev) if height > 1 else None, tuple(evidence))


def evidence() -> DuplicateVote:
    return DuplicateVote.from_votes(
        vote(HEIGHT, 0, PREVOTE, b"\xaa" * 32, 1), vote(HEIGHT, 0, PREVOTE, b"", 1)
    )


def proposal(height: int = HEIGHT, round_: int = 1, pol: int = 0) -> Proposal:
    txs = list(transactions().values())[:3]
    return Proposal.create(KEYS[0], CHAIN, height, round_, pol, block(height, txs, [evidence().encode()]))


# ------------------------------------------------------------------------------------------ corpora


def corpus_codec() -> dict[str, bytes]:
    values = {
        "uint-bounds": [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1],
        "nint-bounds": [-1, -24, -25, -256, -257, -(2**64)],
        "bignums": [2**64, -(2**64) - 1, 2**200],
        "bytes-text": [b"", b"\x00" * 24, "", "é€😀", "x" * 24],
        "floats": [0.0, -0.0, 1.5, 1e300, float("inf"), float("-inf"), 5.960464477539063e-8],
        "map-sorted": {"a": 1, "bb": 2, "c": [1, 2], "": None, "dd": {"x": True, "y": False}},
        "nested-31": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
        "int-keys": {1: "a", -1: "b", 10: [b"x"]},
    }
    out = {f"valid-{k}.cbor": codec.encode(v) for k, v in values.items()}
    out["valid-nan.cbor"] = codec.encode(float("nan"))
    for name, tx in transactions().items():
        out[f"valid-tx-{name}.cbor"] = tx.raw
    out["valid-block.cbor"] = block(2, list(transactions().values())[:2]).encode()
    out["valid-proposal.cbor"] = proposal().encode()
    edges = {
        "indefinite-array": b"\x9f\x01\x02\xff",
        "indefinite-bytes": b"\x5f\x41\x00\xff",
        "duplicate-keys": b"\xa2\x61a\x01\x61a\x02",
        "unsorted-keys": b"\xa2\x61b\x01\x61a\x02",
        "non-shortest-int": b"\x18\x01",
        "non-shortest-float": b"\xfb\x3f\xf8\x00\x00\x00\x00\x00\x00",
        "depth-33": b"\x81" * 33 + b"\x00",
        "huge-array-claim": b"\x9b" + (2**40).to_bytes(8, "big"),
        "huge-map-claim": b"\xba" + (2**27).to_bytes(4, "big"),
        "huge-bytes-claim": b"\x5b" + (2**40).to_bytes(8, "big"),
        "bigfloat-huge-exp": b"\xc5\x82\x1b" + (2**62).to_bytes(8, "big") + b"\x01",
        "decimal-huge-exp": b"\xc4\x82\x3b" + (2**62).to_bytes(8, "big") + b"\x01",
        "epoch-overflow": b"\xc1\xfb\x7f\xef\xff\xff\xff\xff\xff\xff",
        "rational-div-zero": b"\xd8\x1e\x82\x01\x00",
        "set-duplicates": b"\xd9\x01\x02\x82\x01\x01",
        "shareable-cycle": b"\xd8\x1c\x81\xd8\x1d\x00",
        "undefined": b"\xf7",
        "simple-value": b"\xf0",
        "break-alone": b"\xff",
        "bad-utf8": b"\x62\xc3\x28",
        "trailing-bytes": b"\x01\x02",
        "regex-tag": b"\xd8\x23\x63a*b",
        "bignum-empty": b"\xc2\x40",
        "bignum-leading-zero": b"\xc2\x49\x00\x01\x00\x00\x00\x00\x00\x00\x00",
        "negative-zero-half": b"\xf9\x80\x00",
    }
    out.update({f"edge-{k}.bin": v for k, v in edges.items()})
    return out


def corpus_types() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, tx in transactions().items():
        out[f"tx/valid-{name}.cbor"] = tx.raw
    out["vote/valid-prevote.cbor"] = vote().encode()
    out["vote/valid-precommit.cbor"] = vote(vt=PRECOMMIT, round_=7).encode()
    out["vote/valid-nil.cbor"] = vote(block_hash=b"").encode()
    out["vote/valid-max-round.cbor"] = vote(height=2**64 - 1, round_=1 << 31).encode()
    h = hashlib.sha256(b"x").digest()
    out["commit/valid-3-sigs.cbor"] = commit(4, h).encode()
    out["commit/valid-empty.cbor"] = Commit(1, 0, h, ()).encode()
    txs = list(transactions().values())
    out["block/valid-height-1.cbor"] = block(1, []).encode()
    out["block/valid-txs-commit-evidence.cbor"] = block(3, txs[:4], [evidence().encode()]).encode()
    out["account/valid-zero.cbor"] = Account().encode()
    out["account/valid-max.cbor"] = Account(2**64 - 1, 2**64 - 1).encode()
    out["evidence/valid-prevote-nil.cbor"] = evidence().encode()
    out["evidence/valid-precommit.cbor"] = DuplicateVote.from_votes(
        vote(9, 2, PRECOMMIT, b"\x01" * 32, 2), vote(9, 2, PRECOMMIT, b"\x02" * 32, 2)
    ).encode()
    out["proposal/valid-pol.cbor"] = proposal().encode()
    out["proposal/valid-no-pol.cbor"] = proposal(HEIGHT + 1, 0, -1).encode()
    ev = evidence()
    out["evidence/edge-wrong-order.cbor"] = codec.encode(
        {"vote_a": ev.vote_b.to_obj(), "vote_b": ev.vote_a.to_obj()}
    )
    out["commit/edge-duplicate-validator.cbor"] = codec.encode(
        {"height": 1, "round": 0, "block_hash": h, "signatures": [[PKS[0], b"\x00" * 64]] * 2}
    )
    bad_tx = dict(codec.decode(txs[0].raw))
    bad_tx["body"] = {1: 2}
    out["tx/edge-body-int-key.cbor"] = codec.encode(bad_tx)
    p = proposal().to_obj()
    out["proposal/edge-height-mismatch.cbor"] = codec.encode({**p, "height": HEIGHT + 1})
    return out


def _model_manifest() -> dict:
    """A valid model_register manifest of a tiny model file (state/market/models.py)."""
    from state.llm.config import LlamaConfig
    from state.llm.modelfile import weights_size
    from state.market.models import manifest_for_file

    cfg = LlamaConfig(vocab=16, dim=8, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=4, ffn_dim=8, max_ctx=8,
                      rope_base=10_000, norm_eps_num=1, norm_eps_den=100_000, tied_embeddings=True, bos_id=1,
                      eos_id=2)
    tokenizer = b"tok"
    file = bytes(weights_size(cfg)) + tokenizer
    return manifest_for_file(file, name="tiny", arch=cfg.to_map(), tokenizer_size=len(tokenizer),
                             licence="MIT")[0]


def _sealed_bodies(job_id: bytes) -> tuple[dict, dict]:
    """A sealed bid and a two-bid award (one fault), from deterministic nonces (state/market/sealed.py)."""
    from dataclasses import replace

    from state.market import sealed
    from zk import auction, group

    rand = group.counter_scalars(b"corpus-sealed")

    secret = rand()
    key = group.mul_base(secret)
    a, _ = auction.make_bid(CHAIN, job_id, PKS[0], key, 4, 3, rand=rand)
    b, _ = auction.make_bid(CHAIN, job_id, PKS[1], key, 4, 9, rand=rand)
    b = replace(b, sealed=b.sealed[:40] + bytes([b.sealed[40] ^ 1]) + b.sealed[41:])
    award = auction.make_award(CHAIN, job_id, PKS[2], secret, 4, [a, b], rand=rand)
    return sealed.sealed_bid_body(job_id, a), sealed.sealed_award_body(job_id, award)


def _zk_bodies(job_id: bytes) -> dict[str, list[tuple[str, dict]]]:
    """Seeds of the Groth16 kinds (state/market/attest.py, anon.py). An anon_bid's proof is checked with its
    body, so its seed is a real proof kept in tests/vectors/groth16/anon_bid_body.cbor (snarkjs proofs are
    randomised: made once, for job sha256(b"job"))."""
    fixture = HERE.parent / "vectors" / "groth16" / "anon_bid_body.cbor"
    return {
        "receipt_attest": [("basic", {"proof": b"\x01" + b"\x02" * 256, "root": b"\x03" * 32, "nullifier": b"\x04" * 32,
                                      "kind": "hash-chain", "min_units": 1, "scope": b"loyalty"})],
        "anon_identity": [("basic", {"commitment": b"\x05" * 32})],
        "anon_bid": [("basic", codec.decode(fixture.read_bytes()))],
        "anon_accept": [("basic", {"job_id": job_id, "blind": b"\x06" * 32})],
    }


def corpus_bodies() -> dict[str, bytes]:
    job_id = hashlib.sha256(b"job").digest()
    receipt_tx = transactions()["receipt"]
    caps = mkt.capabilities("numpy", "cpu", 1 << 30, "", {"hash-chain": 1000})
    bodies: dict[str, list[tuple[str, dict]]] = {
        "transfer": [("basic", {"to": PKS[1], "amount": 1})],
        "miner_register": [("basic", mkt.miner_register_body(100, caps, {"hash-chain": 5}))],
        "miner_update": [
            ("bond", mkt.miner_update_body(add_bond=5)),
            ("all", mkt.miner_update_body(capabilities=caps, prices={"matmul-u32": 1}, add_bond=1)),
        ],
        "miner_exit": [("basic", mkt.miner_exit_body())],
        "job_submit": [
            (
                "hash-chain",
                mkt.job_submit_body(
                    "hash-chain",
                    1,
                    {"chains": 4, "iterations": 10, "seed": b"\x05" * 32},
                    max_price=10,
                    max_units=100,
                    bid_window=5,
                    deadline=50,
                    verify_rate_bps=100,
                    challenge_window=10,
                    min_memory=1024,
                    backend="numpy",
                ),
            ),
            (
                "matmul-seed",
                mkt.job_submit_body(
                    "matmul-u32",
                    1,
                    {"m": 4, "n": 4, "k": 4, "seed": b"\x06" * 32},
                    max_price=1,
                    max_units=1,
                    bid_window=1,
                    deadline=2,
                ),
            ),
            (
                "matmul-inline",
                mkt.job_submit_body(
                    "matmul-u32",
                    1,
                    {"m": 1, "n": 1, "k": 1},
                    max_price=1,
                    max_units=1,
                    bid_window=1,
                    deadline=2,
                    inline_input=encode_array(np.zeros((1, 1), np.uint32))
                    + encode_array(np.ones((1, 1), np.uint32)),
                ),
            ),
            (
                "mlp-blob",
                mkt.job_submit_body(
                    "mlp-f32",
                    1,
                    {"batch": 2, "d_in": 3, "d_hidden": 4, "d_out": 2, "seed": b"\x07" * 32},
                    max_price=1,
                    max_units=1,
                    bid_window=1,
                    deadline=2,
                    blob_input=(b"\x08" * 32, len(encode_array(np.zeros((2, 3), np.float32)))),
                ),
            ),
        ],
        "job_cancel": [("basic", mkt.job_cancel_body(job_id))],
        "bid": [("basic", mkt.bid_body(job_id, 3))],
        "receipt": [("basic", receipt_tx.body)],
        "challenge": [
            ("basic", mkt.challenge_body(job_id, 2, b"\x00" * 32, [b"\x01" * 32, b"\x02" * 32])),
            ("input", mkt.challenge_body(job_id, 0, b"", [], input=b"\x00" * 8)),
        ],
        "availability_challenge": [("basic", mkt.availability_challenge_body(job_id, [0, 3, 7]))],
        "availability_response": [
            (
                "basic",
                mkt.availability_response_body(job_id, [(0, b"\x00" * 32, [b"\x01" * 32]), (3, b"", [])]),
            )
        ],
        "model_register": [("basic", _model_manifest())],
        "llm_challenge": [
            ("first", llm_challenge_body(job_id, 0, bytes(ROW_BYTES), [b"\x01" * 32])),
            ("prev", llm_challenge_body(job_id, 3, bytes(ROW_BYTES), [], prev=(bytes(ROW_BYTES), [b"\x02" * 32]))),
        ],
        "llm_steps": [("basic", llm_steps_body(job_id, 0, [b"\x03" * 32, b"\x04" * 32]))],
        "llm_step_proof": [
            (
                "basic",
                {"job_id": job_id, "dispute": 0, "step": [1, 0, 2, 0], "digest": b"\x05" * 32,
                 "inputs": [b"\x00" * 16], "proofs": [[1, [b"\x06" * 32]]],
                 "rows": [0, [bytes(ROW_BYTES)], [b"\x07" * 32]],
                 "weights": [[0, [b"\x08" * 64], [[b"\x09" * 32]]]]},
            )
        ],
        "sealed_bid": [("basic", _sealed_bodies(job_id)[0])],
        "sealed_award": [("basic", _sealed_bodies(job_id)[1])],
        **_zk_bodies(job_id),
        "validator_create": [("basic", stk.validator_create_body(PKS[0], 500, 1_000_000, "val-0"))],
        "validator_edit": [
            ("commission", stk.validator_edit_body(commission_bps=10)),
            ("both", stk.validator_edit_body(commission_bps=0, moniker="")),
        ],
        "delegate": [("basic", stk.delegate_body(PKS[2], 500))],
        "undelegate": [("basic", stk.undelegate_body(PKS[2], 2**64 - 1))],
        "redelegate": [("basic", stk.redelegate_body(PKS[2], PKS[3], 1))],
        "unjail": [("basic", stk.unjail_body())],
        "withdraw_rewards": [
            ("all", stk.withdraw_rewards_body()),
            ("one", stk.withdraw_rewards_body(PKS[2])),
        ],
    }
    out = {}
    for tx_type, items in bodies.items():
        for name, body in items:
            out[f"{tx_type}/valid-{name}.cbor"] = codec.encode(body)
    out["job_submit/edge-params-overflow.cbor"] = codec.encode(
        {**bodies["job_submit"][0][1], "max_price": 2**63, "max_units": 2**63}
    )
    out["availability_challenge/edge-unsorted.cbor"] = codec.encode({"job_id": job_id, "indices": [3, 1]})
    out["validator_create/edge-moniker-control.cbor"] = codec.encode(
        {**bodies["validator_create"][0][1], "moniker": "a\nb"}
    )
    return out


def corpus_p2p() -> dict[str, bytes]:
    st = ChainStatus(CHAIN, GENESIS_HASH, 10, b"\x01" * 32, 9)
    txs = list(transactions().values())
    blk = block(2, txs[:2]).encode()
    peer = peer_id_from_ed25519(PKS[3])
    out = {
        "status/valid-basic.cbor": st.encode(),
        "status/valid-genesis.cbor": ChainStatus(CHAIN, GENESIS_HASH, 0, b"", 0).encode(),
        "status/edge-finalized-above.cbor": codec.encode({**st.to_obj(), "finalized_height": 11}),
        "batch/valid-txs.cbor": encode_batch([t.raw for t in txs]),
        "batch/valid-one.cbor": encode_batch([b"\x00"]),
        "batch/edge-empty.cbor": encode_batch([]),
        "envelope/valid-ok.cbor": codec.encode(ok([b"\x01"])),
        "envelope/valid-ok-none.cbor": codec.encode(ok(None)),
        "envelope/valid-error.cbor": codec.encode(error("busy", "too many requests")),
        "envelope/edge-error-no-message.cbor": codec.encode({"error": {"code": "x"}}),
        # inbound request frames (the CBOR item, without the varint prefix)
        "req-status/valid-basic.cbor": st.encode(),
        "req-blocks/valid-basic.cbor": codec.encode({"start": 1, "count": 10}),
        "req-blocks/edge-count-zero.cbor": codec.encode({"start": 1, "count": 0}),
        "req-blob/valid-basic.cbor": codec.encode({"hash": hashlib.sha256(b"blob").digest()}),
        "req-peers/valid-basic.cbor": codec.encode(
            {"addrs": ["/ip4/10.0.0.1/tcp/9000", f"/ip4/10.0.0.2/tcp/1/p2p/{peer}"]}
        ),
        "req-peers/edge-bad-multiaddr.cbor": codec.encode(
            {"addrs": ["/ip4/999.1.1.1/tcp/1", "/dns4/x/tcp/99999"]}
        ),
        # raw response streams (varint-framed frames, as a peer writes them)
        "resp-status/valid-basic.bin": frame(ok(st.to_obj())),
        "resp-status/edge-busy.bin": frame(error("busy", "at most 2 concurrent requests per peer")),
        "resp-blocks/valid-two.bin": frame(ok([blk, blk])),
        "resp-blocks/valid-empty.bin": frame(ok([])),
        "resp-blob/valid-two-chunks.bin": frame(ok({"size": 8})) + frame(b"blob") + frame(b"data"),
        "resp-blob/valid-none.bin": frame(ok(None)),
        "resp-blob/edge-oversize-chunk.bin": frame(ok({"size": 2})) + frame(b"toolong"),
        "resp-blob/edge-huge-varint.bin": b"\xff" * 11,
        "resp-peers/valid-one.bin": frame(ok([{"id": peer, "addrs": ["/ip4/10.0.0.3/tcp/9000"]}])),
        "resp-peers/edge-bad-id.bin": frame(ok([{"id": "not-a-peer-id", "addrs": []}])),
    }
    return out


def envelope(msg: bytes, nonce: int = 1) -> bytes:
    return codec.encode([msg, nonce])


def corpus_gossip() -> dict[str, bytes]:
    txs = list(transactions().values())
    v = vote()
    return {
        "vote/valid-prevote.cbor": envelope(v.encode()),
        "vote/valid-precommit-next.cbor": envelope(
            vote(HEIGHT + 1, 0, PRECOMMIT, b"\x09" * 32, 2).encode(), 2**63
        ),
        "vote/valid-far-ahead.cbor": envelope(vote(HEIGHT + 50, 0, PREVOTE, b"\x09" * 32, 1).encode()),
        "vote/edge-outsider.cbor": envelope(
            Vote.create(SigningKey.from_seed(b"\x99" * 32), CHAIN, HEIGHT, 0, PREVOTE, b"").encode()
        ),
        "vote/edge-bad-signature.cbor": envelope(
            Vote(v.height, v.round, v.type, v.block_hash, v.validator, b"\x00" * 64).encode()
        ),
        "vote/edge-negative-nonce.cbor": envelope(v.encode(), -1),
        "block/valid-proposal.cbor": envelope(proposal().encode()),
        "evidence/valid-duplicate-vote.cbor": envelope(evidence().encode()),
        "tx/valid-batch.cbor": encode_batch([t.raw for t in txs]),
        "tx/edge-empty-batch.cbor": encode_batch([]),
    }


def corpus_gpu() -> dict[str, bytes]:
    arrays = {
        "uint8-2d": np.arange(12, dtype=np.uint8).reshape(3, 4),
        "int8-1d": np.array([-1, 0, 1], np.int8),
        "uint16-0d": np.array(7, np.uint16),
        "int16-3d": np.arange(8, dtype=np.int16).reshape(2, 2, 2),
        "uint32-2d": np.arange(6, dtype=np.uint32).reshape(2, 3),
        "int32-empty": np.zeros((0, 5), np.int32),
        "uint64-1d": np.array([2**64 - 1], np.uint64),
        "int64-1d": np.array([-(2**63)], np.int64),
        "float32-2d": np.array([[1.5, np.nan], [np.inf, -0.0]], np.float32),
        "float64-8d": np.zeros((1,) * 8, np.float64),
    }
    out = {f"valid-{k}.bin": encode_array(a) for k, a in arrays.items()}
    out["valid-two-arrays.bin"] = encode_array(arrays["uint32-2d"]) + encode_array(
        arrays["uint32-2d"].T.copy()
    )
    hdr = codec.encode
    out["edge-unknown-dtype.bin"] = hdr(["bool", [1]]) + b"\x00"
    out["edge-nine-dims.bin"] = hdr(["uint8", [1] * 9]) + b"\x00"
    out["edge-huge-claim.bin"] = hdr(["float64", [2**32, 2**32]])
    out["edge-truncated-data.bin"] = hdr(["uint32", [4]]) + b"\x00" * 15
    out["edge-non-canonical-dim.bin"] = b"\x82\x65uint8\x81\x18\x01\x00"
    out["edge-trailing.bin"] = encode_array(arrays["int8-1d"]) + b"\x00"
    out["edge-zero-size-big-dim-in-range.bin"] = hdr(["uint8", [0, 2**62]])
    return out


def corpus_gpu_bugs() -> dict[str, bytes]:
    """Inputs of bugs found by the fuzzers and since fixed: kept as ``edge-fixed-*`` regression seeds."""
    hdr = codec.encode
    return {
        "edge-fixed-zero-size-huge-dim-uint8.bin": hdr(["uint8", [2**63, 0]]),
        "edge-fixed-zero-size-dims-overflow-uint32.bin": hdr(["uint32", [2**40, 0, 2**40]]),
        # found by a random run (AITBC_FUZZ_SAVE=1): the same bug, a third numpy message
        "edge-fixed-zero-size-reshape-float32.bin": hdr(["float32", [2, 2**62, 0]]),
        # sized as the input of a matmul-u32 job with m = n = k = 1 (what job_submit checks)
        "edge-fixed-matmul-input-zero-size-huge-dim.bin": (hdr(["uint32", [2**63, 0]]) + bytes(30))[
            : 2 * len(encode_array(np.zeros((1, 1), np.uint32)))
        ],
    }


def corpus_bodies_bugs() -> dict[str, bytes]:
    """Inputs of bugs found by the fuzzers and since fixed: kept as ``edge-fixed-*`` regression seeds."""
    body = mkt.job_submit_body(
        "hash-chain",
        1,
        {"chains": 1 << 14_300, "iterations": 1, "seed": b"\x05" * 32},
        max_price=1,
        max_units=1,
        bid_window=1,
        deadline=2,
    )
    return {"job_submit/edge-fixed-param-int-4305-digits.cbor": codec.encode(body)}


def corpus_rpc_bugs() -> dict[str, bytes]:
    """Inputs of bugs found by the fuzzers and since fixed: kept as ``edge-fixed-*`` regression seeds."""
    return {
        "payload/edge-fixed-id-1e400.json": b'{"jsonrpc":"2.0","id":1e400,"method":"system_health"}',
        "payload/edge-fixed-invalid-request-id-1e400.json": b'{"jsonrpc":"1.0","id":-1e400}',
        "payload/edge-fixed-batch-id-1e400.json": b'[{"jsonrpc":"2.0","id":1,"method":"mempool_status"},'
        b'{"jsonrpc":"2.0","id":1e400,"method":"tx_submit","params":{"tx":"0x00"}}]',
    }


def example_value(schema: dict) -> Any:
    """A value that satisfies one ``rpc.params`` schema."""
    if "enum" in schema:
        return schema["enum"][0]
    fmt = schema.get("format")
    if fmt == "hash32":
        return "0x" + "ab" * 32
    if fmt == "hex":
        return "0x00"
    if fmt == "amount":
        return "1"
    if fmt == "address":
        return encode_address(PKS[0])
    t = schema.get("type")
    if t == "integer":
        return max(schema.get("minimum", 0), 0) if schema.get("maximum", 1) >= 0 else schema["maximum"]
    if t == "number":
        return float(schema.get("minimum", 0))
    if t == "boolean":
        return True
    if t == "object":
        return {}
    if t == "array":
        return []
    return "x"


def corpus_rpc() -> dict[str, bytes]:
    sys.path.insert(0, str(HERE))
    from fuzzlib import node_registry  # the same registry the fuzzer uses

    reg, hub = node_registry()
    out = {}
    for m in reg.methods():
        full = {p.name: example_value(p.schema) for p in m.params}
        out[f"params/valid-{m.name}.json"] = json.dumps(
            {"method": m.name, "params": full}, sort_keys=True
        ).encode()
        required = {p.name: example_value(p.schema) for p in m.params if p.required}
        if required != full:
            out[f"params/valid-{m.name}-required.json"] = json.dumps(
                {"method": m.name, "params": required}, sort_keys=True
            ).encode()
    for name, topic in sorted(hub._topics.items()):
        params = {p.name: example_value(p.schema) for p in topic.params}
        out[f"topics/valid-{name}.json"] = json.dumps(
            {"method": name, "params": params}, sort_keys=True
        ).encode()
    edges = {
        "params/edge-amount-79-digits.json": {"method": "tx_submit", "params": {"tx": "0x00", "x": "1" * 79}},
        "params/edge-big-int.json": {"method": "chain_getBlock", "params": {"height": 2**70}},
        "params/edge-float-height.json": {"method": "chain_getBlock", "params": {"height": 1.0}},
        "params/edge-bool-height.json": {"method": "chain_getBlock", "params": {"height": True}},
        "params/edge-null-required.json": {"method": "chain_getCommit", "params": {"height": None}},
    }
    out.update({k: json.dumps(v).encode() for k, v in edges.items()})
    payloads = {
        "valid-call.json": b'{"jsonrpc":"2.0","id":1,"method":"chain_getBlock","params":{"height":1}}',
        "valid-batch.json": b'[{"jsonrpc":"2.0","id":1,"method":"system_health"},{"jsonrpc":"2.0","method":"x"}]',
        "valid-notification.json": b'{"jsonrpc":"2.0","method":"system_info"}',
        "edge-nan.json": b'{"jsonrpc":"2.0","id":NaN,"method":"system_health"}',
        "edge-1e400.json": b'{"jsonrpc":"2.0","id":1,"method":"chain_getBlock","params":{"height":1e400}}',
        "edge-deep.json": b"[" * 5000 + b"]" * 5000,
        "edge-huge-int.json": b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"method":"system_health"}',
        "edge-bad-utf8.json": b'{"jsonrpc":"2.0","id":"\xff","method":"system_health"}',
        "edge-positional.json": b'{"jsonrpc":"2.0","id":1,"method":"chain_getBlock","params":[1]}',
        "edge-id-object.json": b'{"jsonrpc":"2.0","id":{},"method":"system_health"}',
        "edge-builtin.json": b'{"jsonrpc":"2.0","id":1,"method":"subscribe","params":{"topic":"newHeads"}}',
        "edge-discover-params.json": b'{"jsonrpc":"2.0","id":1,"method":"rpc.discover","params":{"a":1}}',
    }
    out.update({f"payload/{k}": v for k, v in payloads.items()})
    return out


def corpus_keystore() -> dict[str, bytes]:
    import node.keystore as ks

    counter = iter(range(1_000_000))

    def fake_random(n: int) -> bytes:  # deterministic salt and nonce: the corpus must be reproducible
        return hashlib.sha256(b"fuzz %d" % next(counter)).digest()[:n]

    with mock.patch("nacl.utils.random", fake_random):
        doc = ks.encrypt_seed(
            b"\x42" * 32,
            KEYSTORE_PASSWORD,
            KEYSTORE_NAME,
            opslimit=ks.MIN_OPSLIMIT,
            memlimit=ks.MIN_MEMLIMIT,
            created_at=1_764_000_000,
        )
    dumps = lambda d: (json.dumps(d, indent=2) + "\n").encode()  # noqa: E731 - as Keystore._store writes
    sk = SigningKey.from_seed(b"\x43" * 32)
    plain = {"type": "ed25519", "public_key": "0x" + sk.public_key.hex(), "seed": "0x" + sk.seed.hex()}
    out = {
        "encrypted/valid-min-limits.json": dumps(doc),
        "encrypted/edge-memlimit-2-40.json": dumps({**doc, "kdf": {**doc["kdf"], "memlimit": 1 << 40}}),
        "encrypted/edge-memlimit-max-plus-1.json": dumps(
            {**doc, "kdf": {**doc["kdf"], "memlimit": ks.MAX_MEMLIMIT + 1}}
        ),
        "encrypted/edge-opslimit-huge.json": dumps({**doc, "kdf": {**doc["kdf"], "opslimit": 2**62}}),
        "encrypted/edge-opslimit-float.json": dumps({**doc, "kdf": {**doc["kdf"], "opslimit": 2.0}}),
        "encrypted/edge-opslimit-bool.json": dumps({**doc, "kdf": {**doc["kdf"], "opslimit": True}}),
        "encrypted/edge-limits-authenticated.json": dumps(
            {**doc, "kdf": {**doc["kdf"], "opslimit": ks.MIN_OPSLIMIT + 1}}
        ),
        "encrypted/edge-duplicate-field.json": dumps(doc)[:-2] + b',\n  "version": 1\n}\n',
        "encrypted/edge-nan.json": dumps(doc).replace(b'"created_at": 1764000000', b'"created_at": NaN'),
        "encrypted/edge-huge-int.json": dumps(doc).replace(
            b'"created_at": 1764000000', b'"created_at": ' + b"9" * 5000
        ),
        "encrypted/edge-deep.json": b"[" * 5_000,
        "encrypted/edge-not-utf8.json": b'{"version": 1, "name": "\xff"}',
        "encrypted/edge-bom.json": b"\xef\xbb\xbf" + dumps(doc),
        "encrypted/edge-too-large.json": b" " * (ks.MAX_FILE_SIZE + 1),
        "plain/valid-node-key.json": dumps(plain),
        "plain/edge-mismatch.json": dumps({**plain, "public_key": "0x" + "00" * 32}),
        "plain/edge-odd-hex.json": dumps({**plain, "seed": "0x" + "0" * 63}),
    }
    return out


AREAS = {
    "codec": corpus_codec,
    "types": corpus_types,
    "bodies": corpus_bodies,
    "p2p": corpus_p2p,
    "gossip": corpus_gossip,
    "gpu": corpus_gpu,
    "rpc": corpus_rpc,
    "keystore": corpus_keystore,
}


def generate() -> dict[Path, bytes]:
    files: dict[Path, bytes] = {}
    for area, fn in AREAS.items():
        for rel, data in fn().items():
            files[CORPUS / area / rel] = data
    for rel, data in corpus_gpu_bugs().items():
        files[CORPUS / "gpu" / rel] = data
    for rel, data in corpus_bodies_bugs().items():
        files[CORPUS / "bodies" / rel] = data
    for rel, data in corpus_rpc_bugs().items():
        files[CORPUS / "rpc" / rel] = data
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report differences (exit 1 if any)")
    args = ap.parse_args()
    files = generate()
    generated_prefixes = ("valid-", "edge-")
    stale = [
        p
        for p in CORPUS.rglob("*")
        if p.is_file() and p.name.startswith(generated_prefixes) and p not in files
    ]
    changed = [p for p, data in files.items() if not p.exists() or p.read_bytes() != data]
    if args.check:
        for p in changed:
            print(f"differs: {p.relative_to(HERE)}")
        for p in stale:
            print(f"stale: {p.relative_to(HERE)}")
        return 1 if changed or stale else 0
    for p in changed:
        if p.name.startswith("bug-") and p.exists():
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(files[p])
    for p in stale:
        p.unlink()
    print(f"{len(files)} seed files ({len(changed)} written, {len(stale)} removed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
