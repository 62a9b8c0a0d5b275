"""Result schemas and errors of the node's JSON-RPC methods, as ``rpc.discover`` documents them, and a small
validator of the JSON-schema subset they use.

:func:`document_node_methods` attaches :data:`RESULTS` and :data:`ERRORS` to the registered methods (called by
``rpc.methods.build_rpc`` and ``rpc.admin_methods.install_node_extras``); ``tests/test_rpc_discover.py`` calls
every method on a real node and checks its result with :func:`validate`.

Schema keywords used (and all :func:`validate` knows): ``type`` (a name or a list of names, ``"null"``
included), ``properties``, ``required``, ``additionalProperties`` (``false`` or a schema), ``items``,
``enum``, ``pattern``, ``minimum``, ``maximum``, ``maxItems``, ``anyOf``; ``description``, ``title`` and
``format`` are annotations.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from rpc.errors import (
    BUSY,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    NOT_FOUND,
    PARSE_ERROR,
    TX_REJECTED,
    UNAUTHORIZED,
)

if TYPE_CHECKING:
    from rpc.jsonrpc import MethodRegistry

__all__ = [
    "COMMON_ERRORS",
    "ERROR_OBJECTS",
    "ERRORS",
    "KEYWORDS",
    "RESULTS",
    "document_node_methods",
    "errors_for",
    "validate",
]

BLOB_REJECTED = -32011
MODEL_ERROR = -32012

# ------------------------------------------------------------------------------------------- errors
#: Every error code the node answers with, as OpenRPC error objects (``components.errors``).
ERROR_OBJECTS: dict[int, dict[str, Any]] = {
    PARSE_ERROR: {"code": PARSE_ERROR, "message": "parse error: the body is not JSON"},
    INVALID_REQUEST: {"code": INVALID_REQUEST, "message": "invalid request (also an oversized body or batch)"},
    METHOD_NOT_FOUND: {"code": METHOD_NOT_FOUND, "message": "method not found (whatever the params)"},
    INVALID_PARAMS: {
        "code": INVALID_PARAMS,
        "message": "invalid params: the message names the param and the reason (unknown, missing, wrong type, "
        "out of range, too many positional params)",
    },
    INTERNAL_ERROR: {"code": INTERNAL_ERROR, "message": "internal error"},
    UNAUTHORIZED: {
        "code": UNAUTHORIZED,
        "message": "unauthorized",
        "data": {"reason": "unauthorized | origin_not_allowed | host_not_allowed | content_type"},
    },
    NOT_FOUND: {"code": NOT_FOUND, "message": "not found"},
    BUSY: {
        "code": BUSY,
        "message": "busy: a limit was hit",
        "data": {"reason": "rate_limited | timeout | subscription_limit | total_subscription_limit | …"},
    },
    TX_REJECTED: {
        "code": TX_REJECTED,
        "message": "transaction rejected",
        "data": {"reason": "malformed | bad_signature | wrong_chain | fee_too_low | nonce_too_low | nonce_gap | "
                 "insufficient_balance | already_known | replacement_underpriced | mempool_full | queued_full | "
                           "invalid_body | sponsor_refused | …",
                 "detail": "with invalid_body: the refusing rule's finer reason (invalid_params, zk_malformed, …), "
                           "when it has one; with sponsor_refused: the sponsor check's (unknown_job, zk_invalid, …)"},
    },
    BLOB_REJECTED: {
        "code": BLOB_REJECTED,
        "message": "blob rejected",
        "data": {"reason": "unsigned | bad_signature | expired | expiry_too_far | unfunded | account_quota | "
                 "account_count | total_quota | store_full | too_large"},
    },
    MODEL_ERROR: {
        "code": MODEL_ERROR,
        "message": "model data unavailable",
        "data": {"reason": "index_unavailable | chunk_unavailable | bad_index | bad_chunk | pin_limit"},
    },
}

#: Errors any call may get: bad params (also too many positional ones), a limit (rate, timeout), a bug.
COMMON_ERRORS = (INVALID_PARAMS, BUSY, INTERNAL_ERROR)

#: Errors of a method besides :data:`COMMON_ERRORS`.
ERRORS: dict[str, tuple[int, ...]] = {
    "chain_getBlock": (NOT_FOUND,),
    "chain_getCommit": (NOT_FOUND,),
    "chain_getTransaction": (NOT_FOUND,),
    "tx_submit": (TX_REJECTED, UNAUTHORIZED),
    "tx_submitBatch": (UNAUTHORIZED,),
    "market_getJob": (NOT_FOUND,),
    "market_getBids": (NOT_FOUND,),
    "market_getReceipt": (NOT_FOUND,),
    "market_getMiner": (NOT_FOUND,),
    "market_getAvailableChunks": (NOT_FOUND,),
    "market_getModel": (NOT_FOUND,),
    "market_getModelChunk": (NOT_FOUND, MODEL_ERROR),
    "blob_get": (NOT_FOUND,),
    "blob_put": (BLOB_REJECTED, UNAUTHORIZED),
    "staking_getValidator": (NOT_FOUND,),
    "admin_peers": (UNAUTHORIZED, NOT_FOUND),
    "admin_banPeer": (UNAUTHORIZED, NOT_FOUND),
    "admin_unbanPeer": (UNAUTHORIZED, NOT_FOUND),
    "admin_blobGc": (UNAUTHORIZED,),
    "admin_setLogLevel": (UNAUTHORIZED, NOT_FOUND),
    "admin_mempoolFlush": (UNAUTHORIZED,),
    "admin_pinModel": (UNAUTHORIZED, NOT_FOUND, MODEL_ERROR),
    "admin_unpinModel": (UNAUTHORIZED, NOT_FOUND),
}


def errors_for(name: str, admin: bool = False) -> list[dict[str, Any]]:
    """The OpenRPC ``errors`` of method ``name``: its own codes, then the common ones."""
    codes = list(ERRORS.get(name, ()))
    if admin and UNAUTHORIZED not in codes:
        codes.insert(0, UNAUTHORIZED)
    codes += [c for c in COMMON_ERRORS if c not in codes]
    return [dict(ERROR_OBJECTS[c]) for c in codes]


# ------------------------------------------------------------------------------------------- shapes
def _t(*types: str, **kw: Any) -> dict[str, Any]:
    return {"type": types[0] if len(types) == 1 else list(types), **kw}


STR = _t("string")
INT = _t("integer")
UINT = _t("integer", minimum=0)
NUM = _t("number")
BOOL = _t("boolean")
ANY_OBJ = _t("object")
HEX = _t("string", pattern="^0x([0-9a-f]{2})*$")
HASH32 = _t("string", pattern="^0x[0-9a-f]{64}$")
SIG = _t("string", pattern="^0x[0-9a-f]{128}$")
ADDRESS = _t("string", pattern="^ait1[02-9ac-hj-np-z]+$")
AMOUNT = _t("string", pattern="^(0|[1-9][0-9]*)$", description="base units, decimal string")
PEER_ID = _t("string", pattern="^[1-9A-HJ-NP-Za-km-z]+$")


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    t = schema.get("type")
    if isinstance(t, str) and set(schema) <= {"type", "pattern", "minimum", "maximum", "description"}:
        return {**schema, "type": [t, "null"]}
    return {"anyOf": [{"type": "null"}, schema]}


def obj(props: dict[str, Any], optional: dict[str, Any] | None = None, *, closed: bool = True) -> dict[str, Any]:
    """An object with the required ``props`` and the ``optional`` ones; ``closed``: no other members."""
    out: dict[str, Any] = {"type": "object", "properties": {**props, **(optional or {})}, "required": list(props)}
    if closed:
        out["additionalProperties"] = False
    return out


def arr(items: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **kw}


TX_RESULT = obj({"ok": BOOL, "reason": nullable(STR), "message": nullable(STR)})
TX = obj(
    {"hash": HASH32, "chain_id": STR, "type": STR, "sender": ADDRESS, "nonce": UINT, "fee": AMOUNT,
     "body": ANY_OBJ, "signature": SIG, "size": UINT},
    {"result": TX_RESULT},
)  # fmt: skip
COMMIT = obj({
    "height": UINT, "round": UINT, "block_hash": HASH32,
    "signatures": arr(obj({"validator": ADDRESS, "signature": SIG})),
})  # fmt: skip
HEADER = {
    "hash": HASH32, "height": UINT, "time": UINT, "chain_id": STR, "prev_hash": HASH32, "tx_root": HASH32,
    "state_root": HASH32, "results_hash": HASH32, "proposer": ADDRESS, "validators_hash": HASH32,
    "next_validators_hash": HASH32, "last_commit_hash": HASH32, "evidence_hash": HASH32, "tx_count": UINT,
}  # fmt: skip
BLOCK = obj({
    **HEADER,
    "transactions": arr({"anyOf": [HASH32, TX]}, description="hashes, or whole txs with full_transactions"),
    "last_commit": nullable(COMMIT),
    "evidence": arr(HEX),
})  # fmt: skip
TX_STATUS = obj({
    "hash": HASH32, "status": _t("string", enum=["pending", "committed", "failed"]),
    "block_height": nullable(UINT), "index": nullable(UINT), "result": nullable(TX_RESULT), "tx": TX,
})  # fmt: skip
SMT_PROOF = obj(
    {"state_root": HASH32, "key": HASH32, "value": nullable(HEX), "siblings": arr(HASH32)},
    {"leaf_key": nullable(HASH32), "leaf_value_hash": nullable(HASH32)},
)
ACCOUNT = obj(
    {"address": ADDRESS, "balance": AMOUNT, "nonce": UINT, "pending_nonce": UINT, "exists": BOOL, "height": UINT},
    {"proof": SMT_PROOF},
)
CHAIN_PARAMS = obj(
    {"block_interval_ms": UINT, "max_block_bytes": UINT, "max_block_txs": UINT, "min_fee": UINT,
     "create_empty_blocks": BOOL},
    {"market": ANY_OBJ, "staking": ANY_OBJ},
    closed=False,
)  # fmt: skip
SYSTEM_INFO = obj({
    "chain_id": STR, "genesis_hash": HASH32, "version": STR, "node_id": STR, "moniker": STR,
    "consensus": _t("string", enum=["poa", "pos", "hybrid"]), "validator": nullable(ADDRESS),
    "miner": nullable(ADDRESS), "uptime_seconds": UINT, "params": CHAIN_PARAMS,
})  # fmt: skip
COUNTS = obj({"prevote": UINT, "precommit": UINT})
CONSENSUS_STATUS = obj(
    {"height": UINT, "round": UINT, "step": STR, "proposer": nullable(ADDRESS)},
    {"locked_round": INT, "valid_round": INT, "votes": COUNTS, "vote_power": COUNTS, "validators": UINT,
     "total_power": UINT, "is_validator": BOOL, "evidence": UINT, "mode": STR},
)  # fmt: skip
EVIDENCE = obj({
    "type": _t("string", enum=["duplicate_vote"]), "validator": ADDRESS, "height": UINT, "round": UINT,
    "vote_type": INT, "block_hashes": arr(HASH32, maxItems=2), "hash": HASH32,
})  # fmt: skip
SYNC = obj({"syncing": BOOL, "target_height": UINT, "blocks_synced": UINT, "peers": UINT})
NET_PEER = obj({
    "peer_id": PEER_ID, "addrs": arr(STR), "height": nullable(UINT), "finalized_height": nullable(UINT), "score": NUM,
})  # fmt: skip
JOB_STATES = ["QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELED", "EXPIRED"]
BID = obj({"miner": ADDRESS, "price": AMOUNT, "height": UINT})
RECEIPT = obj(
    {"receipt_id": HASH32, "job_id": HASH32, "provider": ADDRESS, "client": ADDRESS, "units": UINT,
     "unit_type": STR, "unit_price": AMOUNT, "price": AMOUNT, "started_at": UINT, "completed_at": UINT,
     "result_hash": HASH32, "result_root": HASH32, "result_size": UINT,
     "signature": obj({"alg": STR, "key_id": ADDRESS, "sig": SIG})},
    {"backend": STR, "device": STR, "chain_id": STR},
    closed=False,
)  # fmt: skip
JOB = obj({
    "job_id": HASH32, "seq": UINT, "client": ADDRESS, "kind": STR, "version": UINT, "params": ANY_OBJ,
    "input": nullable(obj({"type": _t("string", enum=["inline", "blob"]), "size": UINT}, {"data": HEX, "hash": HASH32})),
    "max_price": AMOUNT, "max_units": UINT, "bid_window": UINT, "deadline": UINT, "verify": nullable(ANY_OBJ),
    "requirements": ANY_OBJ, "state": _t("string", enum=JOB_STATES), "payment": STR, "escrow": AMOUNT,
    "submitted_height": UINT, "bid_close_height": UINT, "bids": arr(BID), "miner": nullable(ADDRESS),
    "price": nullable(AMOUNT), "award_height": nullable(UINT), "deadline_height": nullable(UINT),
    "receipt_height": nullable(UINT), "release_height": nullable(UINT), "settle_height": nullable(UINT),
    "paid": AMOUNT, "refunded": AMOUNT, "failure": nullable(STR), "false_challenges": UINT,
    "availability": nullable(obj({"challenger": ADDRESS, "indices": arr(UINT), "deadline": UINT, "bond": AMOUNT})),
    "availability_rounds": UINT, "availability_answers": arr(HASH32), "receipt": nullable(RECEIPT),
}, {
    # sealed-bid jobs (state/market/sealed.py): commitments and sealed openings, never a losing price
    "sealed": nullable(obj({
        "bits": UINT, "key": HEX, "deposit": AMOUNT, "settle_window": UINT, "settle_height": UINT,
        "bids": arr(obj({"miner": ADDRESS, "commitment": HEX, "sealed": HEX, "height": UINT})),
        "winner": nullable(ADDRESS), "winning_tick": nullable(UINT), "faulty": arr(ADDRESS),
        "second_price": BOOL, "second_tick": nullable(UINT),
    })),
    # attestable jobs (state/market/attest.py): the owner commitment and, once paid, the receipt tree leaf
    "attest": nullable(obj({"owner": HEX, "leaf_index": nullable(UINT)})),
    # anonymous-bid jobs (state/market/anon.py): prices, nullifiers and claims, no bidder until it accepts
    "anonymous": nullable(obj({
        "max_bids": UINT, "bid_fee": AMOUNT, "accept_window": UINT, "min_bond": AMOUNT, "fees_paid": AMOUNT,
        "bids": arr(obj({"nullifier": HEX, "claim": HEX, "price": AMOUNT, "height": UINT})),
        "pending": nullable(UINT), "accept_deadline": nullable(UINT), "passed": arr(UINT), "winner": nullable(ADDRESS),
    })),
})  # fmt: skip
MINER = obj({
    "address": ADDRESS, "status": _t("string", enum=["active", "exiting", "exited"]), "bond": AMOUNT,
    "capabilities": ANY_OBJ, "prices": _t("object", additionalProperties=AMOUNT), "reputation": INT,
    "registered_height": UINT, "exit_height": nullable(UINT), "running_jobs": UINT, "open_jobs": UINT,
    "jobs_completed": UINT, "jobs_failed": UINT, "slashed": AMOUNT,
})  # fmt: skip
CURSOR = nullable(STR)
MODEL = {
    "model_id": HASH32, "name": STR, "owner": ADDRESS, "height": UINT, "seq": UINT, "fee": AMOUNT, "v": UINT,
    "format": STR, "arch": ANY_OBJ, "size": UINT, "chunk_size": UINT, "chunks": UINT, "root": HASH32,
    "index": HASH32, "tokenizer": obj({"offset": UINT, "size": UINT, "hash": HASH32}), "licence": STR,
}  # fmt: skip
LOCAL = {"pinned": BOOL, "chunks": UINT, "chunks_present": UINT, "index_present": BOOL, "complete": BOOL}
STAKING_VALIDATOR = obj({
    "address": ADDRESS, "consensus_key": ADDRESS, "moniker": STR,
    "status": _t("string", enum=["active", "inactive", "jailed", "tombstoned"]), "active": BOOL, "power": UINT,
    "tokens": AMOUNT, "shares": AMOUNT, "self_bond": AMOUNT, "min_self_bond": AMOUNT, "commission_bps": UINT,
    "commission_pending": AMOUNT, "rewards_outstanding": AMOUNT, "jailed": BOOL, "jailed_until": nullable(UINT),
    "tombstoned": BOOL, "missed_blocks": UINT, "tracked_blocks": UINT, "signed_blocks_window": UINT,
    "created_height": UINT,
}, closed=False)  # fmt: skip

#: The result schema of every method of the node.
RESULTS: dict[str, dict[str, Any]] = {
    "system_health": obj({"status": _t("string", enum=["ok"]), "height": UINT, "catching_up": BOOL},
                         {"health": _t("object")}),
    "system_info": SYSTEM_INFO,
    "chain_getHead": obj({"height": UINT, "hash": HASH32, "time": UINT, "state_root": HASH32,
                          "finalized_height": UINT, "finalized_hash": HASH32}),
    "chain_getBlock": BLOCK,
    "chain_getCommit": COMMIT,
    "chain_getTransaction": TX_STATUS,
    "chain_getAddressTransactions": obj({
        "address": ADDRESS, "indexed_from": UINT, "next_cursor": CURSOR,
        "transactions": arr(obj({"hash": HASH32, "block_height": UINT, "index": UINT, "type": STR, "sender": ADDRESS,
                                 "to": nullable(ADDRESS), "amount": nullable(AMOUNT), "result": TX_RESULT})),
    }),
    "chain_getSupply": obj(
        {"total": AMOUNT, "bonded": AMOUNT, "unbonding": AMOUNT, "circulating": AMOUNT, "market_escrow": AMOUNT,
         "miner_bonds": AMOUNT, "availability_bonds": AMOUNT, "dispute_bonds": AMOUNT, "sealed_deposits": AMOUNT, "height": UINT},
        {"rewards_pending": AMOUNT, "community_pool": AMOUNT, "other_locked": AMOUNT},
        closed=False,
    ),
    "state_getAccount": ACCOUNT,
    "tx_submit": obj({"hash": HASH32}),
    "tx_submitBatch": obj({
        "accepted": UINT, "rejected": UINT,
        "results": arr(obj({"hash": nullable(HASH32)}, {"error": obj({"reason": STR, "message": STR},
                                                                        {"detail": STR})})),
    }),
    "mempool_status": obj({
        "size": UINT, "bytes": UINT, "senders": UINT, "pending": UINT, "queued": UINT, "queued_bytes": UINT,
        "max_txs": UINT, "max_bytes": UINT, "max_queued": UINT, "max_queued_bytes": UINT,
    }),
    "consensus_status": CONSENSUS_STATUS,
    "consensus_getValidators": obj({
        "height": UINT, "total_power": UINT, "validators_hash": HASH32,
        "validators": arr(obj({"address": ADDRESS, "power": UINT, "name": STR})),
    }),
    "consensus_getEvidence": arr(EVIDENCE),
    "net_info": obj({"node_id": STR, "listening": BOOL, "listen_addrs": arr(STR), "peers": UINT,
                     "sync": nullable(SYNC)}),
    "net_peers": arr(NET_PEER),
    "market_getJob": JOB,
    "market_listJobs": obj({"jobs": arr(JOB), "next_cursor": CURSOR}),
    "market_getBids": arr(BID),
    "market_getReceipt": RECEIPT,
    "market_getMiner": MINER,
    "market_listMiners": obj({"miners": arr(MINER), "next_cursor": CURSOR}),
    "market_getAvailableChunks": obj({
        "job_id": HASH32, "result_root": nullable(HASH32), "leaf_count": UINT,
        "open": nullable(obj({"challenger": ADDRESS, "indices": arr(UINT), "deadline": UINT, "bond": AMOUNT})),
        "chunks": arr(obj({"index": UINT, "leaf": HEX, "proof": arr(HASH32), "tx_hash": HASH32, "height": UINT})),
    }),
    "market_stats": obj(
        {"jobs_total": UINT, "jobs_by_state": obj({s: UINT for s in JOB_STATES}), "escrow_locked": AMOUNT,
         "bonds_locked": AMOUNT, "open_bids": UINT, "miners_active": UINT, "paid_total": AMOUNT,
         "burned_total": AMOUNT, "challenges_decided": UINT, "availability_challenges": UINT,
         "availability_bonds_locked": AMOUNT, "dispute_bonds_locked": AMOUNT, "sealed_deposits_locked": AMOUNT},
        closed=False,
    ),
    "market_getModel": obj({**MODEL, "local": obj(LOCAL)}),
    "market_listModels": obj({"models": arr(obj(MODEL)), "next_cursor": CURSOR, "total": UINT}),
    "market_getModelChunk": obj({"model_id": HASH32, "index": UINT, "chunks": UINT, "size": UINT, "root": HASH32,
                                 "data": HEX, "proof": arr(HASH32)}),
    "blob_get": obj({"hash": HASH32, "size": UINT, "data": HEX}),
    "blob_put": obj({"hash": HASH32, "size": UINT, "owner": ADDRESS, "account_bytes": UINT, "account_blobs": UINT,
                     "grace_s": NUM}),
    "staking_getValidators": obj({
        "height": UINT, "validators": arr(STAKING_VALIDATOR),
        "active_set": arr(obj({"address": ADDRESS, "operator": ADDRESS, "power": UINT})),
    }),
    "staking_getValidator": STAKING_VALIDATOR,
    "staking_getDelegations": obj({"delegations": arr(obj(
        {"delegator": ADDRESS, "validator": ADDRESS, "shares": AMOUNT, "amount": AMOUNT, "rewards": AMOUNT},
        closed=False,
    ))}),
    "staking_getUnbonding": obj({
        "unbonding": arr(obj({"id": UINT, "delegator": ADDRESS, "validator": ADDRESS, "amount": AMOUNT,
                              "created_height": UINT, "completes_at": UINT})),
        "redelegations": arr(obj({"id": UINT, "delegator": ADDRESS, "from": ADDRESS, "to": ADDRESS, "amount": AMOUNT,
                                  "created_height": UINT, "completes_at": UINT})),
    }),
    "zk_receiptTree": obj({"depth": UINT, "size": UINT, "root": HEX, "height": UINT}),
    "zk_receiptLeaves": obj({"start": UINT, "size": UINT, "leaves": arr(HEX)}),
    "zk_bidderTree": obj({"depth": UINT, "size": UINT, "root": HEX, "height": UINT}),
    "zk_bidderLeaves": obj({"start": UINT, "size": UINT, "leaves": arr(HEX)}),
    "zk_receiptRoot": obj({"root": HEX, "known": BOOL, "height": nullable(UINT)}),
    "zk_getNullifier": obj({"used": BOOL, "height": nullable(UINT)}),
    "staking_getParams": obj({"consensus": STR, "unbonding_blocks": UINT, "min_self_bond": AMOUNT}, closed=False),
    "admin_peers": obj({
        "peers": arr(obj({
            "peer_id": PEER_ID, "addrs": arr(STR), "direction": _t("string", enum=["inbound", "outbound", "unknown"]),
            "handshake": _t("string", enum=["pending", "ok", "observer", "failed"]), "connected_since": NUM,
            "score": NUM, "height": nullable(UINT), "protected": BOOL, "validator": nullable(ADDRESS),
        })),
        "banned": _t("object", additionalProperties=STR),
    }),
    "admin_banPeer": obj({"peer_id": PEER_ID, "banned": BOOL, "score": NUM}),
    "admin_unbanPeer": obj({"peer_id": PEER_ID, "unbanned": BOOL}),
    "admin_blobGc": obj({"removed": UINT, "freed_bytes": UINT, "kept": UINT, "live": UINT, "total_bytes": UINT,
                         "live_jobs": UINT}),
    "admin_setLogLevel": obj({"logger": STR, "level": _t("string", enum=["debug", "info", "warning", "error",
                                                                         "critical"])}),
    "admin_mempoolFlush": obj({"dropped": UINT}),
    "admin_pinModel": obj({"model_id": HASH32, "name": STR, **LOCAL}),
    "admin_unpinModel": obj({"model_id": HASH32, "name": STR, **LOCAL}),
}

def document_node_methods(reg: MethodRegistry) -> None:
    """Attach :data:`RESULTS` and :data:`ERRORS` to the registered methods of the node (idempotent)."""
    for m in reg.methods():
        result = RESULTS.get(m.name)
        reg.describe(m.name, result=result if result is not None else m.result,
                     errors=errors_for(m.name, m.admin))


# ---------------------------------------------------------------------------------------- validator
KEYWORDS = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "enum", "pattern", "minimum", "maximum",
    "maxItems", "anyOf", "description", "title", "format", "maxBytes", "minLength", "maxLength",
})  # fmt: skip

_TYPES = {
    "string": lambda v: type(v) is str,
    "integer": lambda v: type(v) is int,
    "number": lambda v: type(v) in (int, float),
    "boolean": lambda v: type(v) is bool,
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
    "null": lambda v: v is None,
}
_PATTERNS: dict[str, re.Pattern[str]] = {}


def validate(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Where ``value`` disagrees with ``schema`` (the subset of :data:`KEYWORDS`): ``["$.a.b: why", …]``."""
    errs: list[str] = []
    unknown = set(schema) - KEYWORDS
    if unknown:
        return [f"{path}: schema uses unsupported keywords {sorted(unknown)}"]
    if "anyOf" in schema:
        options = [validate(value, s, path) for s in schema["anyOf"]]
        if all(options):
            best = min(options, key=len)
            return [f"{path}: matches none of anyOf ({'; '.join(best)[:300]})"]
    t = schema.get("type")
    if t is not None:
        types = [t] if isinstance(t, str) else list(t)
        if not any(_TYPES[n](value) for n in types):
            return [f"{path}: expected {'/'.join(types)}, got {type(value).__name__} {str(value)[:60]!r}"]
    if "enum" in schema and not any(type(a) is type(value) and a == value for a in schema["enum"]):
        errs.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if type(value) is str and "pattern" in schema:
        p = _PATTERNS.get(schema["pattern"]) or _PATTERNS.setdefault(schema["pattern"], re.compile(schema["pattern"]))
        if p.search(value) is None:
            errs.append(f"{path}: {value[:80]!r} does not match {schema['pattern']}")
    if type(value) in (int, float) and type(value) is not bool:
        if "minimum" in schema and value < schema["minimum"]:
            errs.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errs.append(f"{path}: {value} > maximum {schema['maximum']}")
    if type(value) is dict:
        props = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                errs.append(f"{path}: missing member {name!r}")
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                errs.extend(validate(v, props[k], f"{path}.{k}"))
            elif extra is False:
                errs.append(f"{path}: undocumented member {k!r}")
            elif isinstance(extra, dict):
                errs.extend(validate(v, extra, f"{path}.{k}"))
    if type(value) is list:
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errs.append(f"{path}: more than {schema['maxItems']} items")
        items = schema.get("items")
        if items is not None:
            for i, v in enumerate(value):
                errs.extend(validate(v, items, f"{path}[{i}]"))
    return errs
