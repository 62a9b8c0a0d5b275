"""JSON views of chain objects for RPC: snake_case fields, 0x-hex bytes, decimal-string amounts,
``ait1…`` addresses."""

from __future__ import annotations

from state.address import encode_address
from state.machine import TxResult
from state.types import Block, Commit, Transaction


def hx(b: bytes) -> str:
    return "0x" + b.hex()


def header_json(block: Block, tx_count: int | None = None) -> dict:
    h = block.header
    return {
        "hash": hx(block.hash),
        "height": h.height,
        "time": h.time,
        "chain_id": h.chain_id,
        "prev_hash": hx(h.prev_hash),
        "tx_root": hx(h.tx_root),
        "state_root": hx(h.state_root),
        "results_hash": hx(h.results_hash),
        "proposer": encode_address(h.proposer),
        "validators_hash": hx(h.validators_hash),
        "next_validators_hash": hx(h.next_validators_hash),
        "last_commit_hash": hx(h.last_commit_hash),
        "evidence_hash": hx(h.evidence_hash),
        "tx_count": len(block.txs) if tx_count is None else tx_count,
    }


def commit_json(commit: Commit) -> dict:
    return {
        "height": commit.height,
        "round": commit.round,
        "block_hash": hx(commit.block_hash),
        "signatures": [{"validator": encode_address(s.validator), "signature": hx(s.sig)} for s in commit.signatures],
    }


def block_json(block: Block, *, full: bool, results: list[TxResult] | None = None) -> dict:
    out = header_json(block)
    if full:
        txs = []
        for i, t in enumerate(block.txs):
            j = t.to_json()
            if results is not None and i < len(results):
                j["result"] = result_json(results[i])
            txs.append(j)
        out["transactions"] = txs
    else:
        out["transactions"] = [hx(t.hash) for t in block.txs]
    out["last_commit"] = commit_json(block.last_commit) if block.last_commit is not None else None
    out["evidence"] = [hx(e) for e in block.evidence]
    return out


def result_json(r: TxResult) -> dict:
    return {"ok": r.ok, "reason": r.reason or None, "message": r.message or None}


def tx_status_json(tx_hash: bytes, height: int, index: int, result: TxResult) -> dict:
    return {
        "hash": hx(tx_hash),
        "status": "committed" if result.ok else "failed",
        "block_height": height,
        "index": index,
        "result": result_json(result),
    }


def tx_json(tx: Transaction) -> dict:
    return tx.to_json()
