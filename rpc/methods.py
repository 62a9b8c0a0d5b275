"""The node's JSON-RPC methods and WebSocket topics (one route table, like CometBFT's routes.go).

Method names are ``namespace_camelCase``; params are by name or by position; results use snake_case, 0x-hex bytes and
decimal-string amounts. Errors: -32602 for bad params, -32004 not found, -32010 transaction rejected
(``data.reason`` is the machine-readable reason).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import trio

from state.address import decode_address, encode_address
from state.errors import AddressError, InvariantError
from state.machine import account_state_key
from state.types import U64_MAX, Account

from .errors import RpcError
from .jsonrpc import MethodRegistry
from .params import Param
from .schemas import document_node_methods
from .subscriptions import SubscriptionHub
from .views import block_json, commit_json, header_json, hx, result_json, tx_status_json

if TYPE_CHECKING:
    from .node_api import NodeApi

NOT_FOUND = RpcError.NOT_FOUND
TX_REJECTED = RpcError.TX_REJECTED
MAX_BATCH_TXS = 10_000

HEIGHT = {"type": "integer", "minimum": 0, "maximum": U64_MAX}
HASH = {"type": "string", "format": "hash32"}
ADDRESS = {"type": "string", "format": "address"}
TX_HEX = {"type": "string", "format": "hex", "maxBytes": 64 * 1024}
OBJ = {"type": "object"}


def _pubkey(address: str, name: str = "address") -> bytes:
    try:
        return decode_address(address)
    except AddressError as exc:
        raise RpcError(RpcError.INVALID_PARAMS, f"invalid params: '{name}': {exc}") from None


def _unhex(s: str) -> bytes:
    return bytes.fromhex(s[2:])


MAX_HISTORY_PAGE = 100


def _history_cursor(cursor: str | None) -> tuple[int, int] | None:
    """``(height, index)`` of a ``chain_getAddressTransactions`` ``next_cursor`` (``"HEIGHT:INDEX"``)."""
    if cursor is None:
        return None
    h, sep, i = cursor.partition(":")
    if not sep or not h.isdigit() or not i.isdigit() or int(h) > U64_MAX or int(i) >= 2**32:
        raise RpcError(RpcError.INVALID_PARAMS, "invalid params: 'cursor' must be the next_cursor of a previous page")
    return int(h), int(i)


def build_rpc(node: NodeApi) -> tuple[MethodRegistry, SubscriptionHub]:
    """Registry of every method of ``node`` (the node behind :class:`rpc.node_api.NodeApi`) and its
    subscription hub."""
    reg = MethodRegistry()
    hub = SubscriptionHub()
    chain = node.chain
    mempool = node.mempool
    genesis = node.genesis

    # system_ ------------------------------------------------------------------------------------
    @reg.method("system_health", summary="Liveness: ok while the node runs; catching_up while syncing", result=OBJ)
    async def system_health() -> dict:
        syncing = node.catching_up()
        # status: liveness (the node answers); health: the /health verdict (ok, stalled, syncing)
        return {"status": "ok", "height": chain.head.height, "catching_up": syncing, "health": node.health()}

    @reg.method("system_info", summary="Chain id, genesis hash, version, node id, roles", result=OBJ)
    async def system_info() -> dict:
        vk = node.validator_key
        return {
            "chain_id": genesis.chain_id,
            "genesis_hash": hx(genesis.hash),
            "version": node.version,
            "node_id": node.peer_id,
            "moniker": node.moniker,
            "consensus": genesis.consensus,
            "validator": encode_address(vk) if node.is_validator() else None,
            "miner": encode_address(miner) if (miner := node.miner_key()) is not None else None,
            "uptime_seconds": int(time.time() - node.started_at),
            "params": genesis.params.to_json(),
        }

    # chain_ -------------------------------------------------------------------------------------
    @reg.method("chain_getHead", summary="Latest block: height, hash, time, finalized height", result=OBJ)
    async def chain_get_head() -> dict:
        head = chain.head
        return {
            "height": head.height,
            "hash": hx(head.hash),
            "time": head.time,
            "state_root": hx(head.state_root),
            "finalized_height": head.height,
            "finalized_hash": hx(head.hash),
        }

    @reg.method(
        "chain_getBlock",
        params=[
            Param("height", HEIGHT, required=False, description="block height (give height or hash)"),
            Param("hash", HASH, required=False, description="block hash"),
            Param("full_transactions", {"type": "boolean"}, required=False, description="whole txs, not hashes"),
        ],
        summary="A block by height or hash",
        result=OBJ,
    )
    async def chain_get_block(
        height: int | None = None, hash: str | None = None, full_transactions: bool = False
    ) -> dict:
        if (height is None) == (hash is None):
            raise RpcError(RpcError.INVALID_PARAMS, "invalid params: give exactly one of 'height' or 'hash'")
        if height is not None:
            if height == 0:
                raise RpcError(NOT_FOUND, "height 0 is the genesis state, not a block (see system_info)")
            block = chain.block_at(height)
        else:
            block = chain.block_by_hash(_unhex(hash))
        if block is None:
            raise RpcError(NOT_FOUND, "block not found", {"height": height, "hash": hash})
        results = chain.results_at(block.height) if full_transactions else None
        return block_json(block, full=full_transactions, results=results)

    @reg.method(
        "chain_getCommit",
        params=[Param("height", {"type": "integer", "minimum": 1, "maximum": U64_MAX})],
        summary="The +2/3 precommit signatures that finalized a height",
        result=OBJ,
    )
    async def chain_get_commit(height: int) -> dict:
        commit = chain.commit_at(height)
        if commit is None:
            raise RpcError(NOT_FOUND, f"no commit for height {height}")
        return commit_json(commit)

    @reg.method(
        "chain_getTransaction",
        params=[Param("hash", HASH)],
        summary="A transaction by hash: status pending/committed/failed, block height, result",
        result=OBJ,
    )
    async def chain_get_transaction(hash: str) -> dict:
        h = _unhex(hash)
        found = chain.tx_lookup(h)
        if found is not None:
            tx, height, index, res = found
            out = tx_status_json(h, height, index, res)
            out["tx"] = tx.to_json()
            return out
        tx = mempool.get(h)
        if tx is not None:
            return {"hash": hash, "status": "pending", "block_height": None, "index": None, "result": None,
                    "tx": tx.to_json()}
        raise RpcError(NOT_FOUND, "transaction not found", {"hash": hash})

    @reg.method(
        "chain_getAddressTransactions",
        params=[
            Param("address", ADDRESS),
            Param("cursor", {"type": "string", "maxLength": 40}, required=False,
                  description="next_cursor of the previous page"),
            Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_HISTORY_PAGE}, required=False),
        ],
        summary="Committed transactions sent by or naming an address (transfer to, staking validator), "
        "newest first; pages with cursor",
        result=OBJ,
    )
    async def chain_get_address_transactions(address: str, cursor: str | None = None, limit: int = 25) -> dict:
        pk = _pubkey(address)
        before = _history_cursor(cursor)

        def read() -> list[dict]:
            out = []
            for height, index, h in chain.address_history(pk, before, limit):
                found = chain.tx_lookup(h)
                if found is None:  # the index is written with the block: cannot happen
                    raise InvariantError(f"history index names a missing transaction 0x{h.hex()}")
                tx, _, _, res = found
                item = {"hash": hx(h), "block_height": height, "index": index, "type": tx.type,
                        "sender": encode_address(tx.sender), "result": result_json(res)}
                body = tx.body if isinstance(tx.body, dict) else {}
                to = body.get("to")
                item["to"] = encode_address(to) if type(to) is bytes and len(to) == 32 else None
                amount = body.get("amount")
                item["amount"] = str(amount) if type(amount) is int else None
                out.append(item)
            return out

        items = await trio.to_thread.run_sync(read)
        nxt = f"{items[-1]['block_height']}:{items[-1]['index']}" if len(items) == limit else None
        return {"address": encode_address(pk), "indexed_from": chain.addr_index_from, "transactions": items,
                "next_cursor": nxt}

    # state_ -------------------------------------------------------------------------------------
    @reg.method(
        "state_getAccount",
        params=[
            Param("address", ADDRESS),
            Param("proof", {"type": "boolean"}, required=False, description="include a state-tree proof"),
        ],
        summary="Balance (base units, decimal string), nonce, pending nonce, optional Merkle proof",
        result=OBJ,
    )
    async def state_get_account(address: str, proof: bool = False) -> dict:
        pk = _pubkey(address)
        if proof:
            smt_proof, head, acc = await trio.to_thread.run_sync(chain.prove_account, pk)
        else:
            head = chain.head
            acc = chain.get_account(pk)
        exists = acc is not None
        acc = acc or Account()
        out: dict[str, Any] = {
            "address": encode_address(pk),
            "balance": str(acc.balance),
            "nonce": acc.nonce,
            "pending_nonce": max(acc.nonce, mempool.pending_nonce(pk)),
            "exists": exists,
            "height": head.height,
        }
        if proof:
            out["proof"] = {
                "state_root": hx(head.state_root),
                "key": hx(account_state_key(pk)),
                "value": hx(acc.encode()) if exists else None,
                **smt_proof.to_obj(),
            }
        return out

    # tx_ ----------------------------------------------------------------------------------------
    @reg.method(
        "tx_submit",
        params=[Param("tx", TX_HEX, description="signed transaction, canonical CBOR, 0x-hex")],
        summary="Submit one signed transaction; returns its hash or a precise rejection (-32010)",
        result=OBJ,
    )
    async def tx_submit(tx: str) -> dict:
        (res,) = await node.submit_raw([_unhex(tx)])
        if res.error is not None:
            data = {"reason": res.error.reason}
            if (detail := getattr(res.error, "detail", None)) is not None:
                data["detail"] = detail  # the refusing rule's finer reason (rpc/schemas.py, README)
            if res.hash is not None:
                data["hash"] = hx(res.hash)
            raise RpcError(TX_REJECTED, f"transaction rejected: {res.error}", data)
        if res.hash is None:
            raise InvariantError("an accepted transaction without a hash")
        return {"hash": hx(res.hash)}

    @reg.method(
        "tx_submitBatch",
        params=[Param("txs", {"type": "array", "maxItems": MAX_BATCH_TXS, "items": TX_HEX})],
        summary="Submit many signed transactions; per-transaction hash or rejection",
        result=OBJ,
    )
    async def tx_submit_batch(txs: list) -> dict:
        raws = []
        for i, t in enumerate(txs):
            if not isinstance(t, str) or not t.startswith("0x") or len(t) % 2:
                raise RpcError(RpcError.INVALID_PARAMS, f"invalid params: 'txs[{i}]' must be 0x-prefixed hex")
            if len(t) > 2 + 2 * TX_HEX["maxBytes"]:
                raise RpcError(
                    RpcError.INVALID_PARAMS, f"invalid params: 'txs[{i}]' must be at most {TX_HEX['maxBytes']} bytes"
                )
            try:
                raws.append(bytes.fromhex(t[2:]))
            except ValueError:
                raise RpcError(RpcError.INVALID_PARAMS, f"invalid params: 'txs[{i}]' must be 0x-prefixed hex") from None
        results = await node.submit_raw(raws)
        out = []
        accepted = 0
        for r in results:
            item: dict[str, Any] = {"hash": hx(r.hash) if r.hash is not None else None}
            if r.error is not None:
                item["error"] = {"reason": r.error.reason, "message": str(r.error)}
                if (detail := getattr(r.error, "detail", None)) is not None:
                    item["error"]["detail"] = detail
            else:
                accepted += 1
            out.append(item)
        return {"accepted": accepted, "rejected": len(results) - accepted, "results": out}

    @reg.method(
        "mempool_status",
        summary="Mempool size (pending: executable; queued: behind a nonce gap), bytes, senders and limits",
        result=OBJ,
    )
    async def mempool_status() -> dict:
        return mempool.stats()

    # consensus_ / net_ --------------------------------------------------------------------------
    @reg.method("consensus_status", summary="Height, round, step, proposer of the running engine", result=OBJ)
    async def consensus_status() -> dict:
        st = node.consensus_status()
        if st is None:
            return {"height": chain.head.height + 1, "round": 0, "step": "following", "proposer": None}
        st["proposer"] = encode_address(st["proposer"]) if st.get("proposer") else None
        return st

    @reg.method("consensus_getEvidence", summary="Evidence of misbehaviour (duplicate votes) seen by this node",
                result={"type": "array"})
    async def consensus_get_evidence() -> list:
        return [
            {
                "type": "duplicate_vote",
                "validator": encode_address(ev.validator),
                "height": ev.height,
                "round": ev.round,
                "vote_type": ev.type,
                "block_hashes": [hx(ev.vote_a.block_hash), hx(ev.vote_b.block_hash)],
                "hash": hx(ev.hash()),
            }
            for ev in node.pending_evidence()
        ]

    @reg.method(
        "consensus_getValidators",
        params=[Param("height", {"type": "integer", "minimum": 1, "maximum": 2**63}, required=False,
                      description="height whose validator set to return (default: the next height)")],
        summary="The validator set at a height (address, power, name)",
        result=OBJ,
    )
    async def consensus_get_validators(height: int | None = None) -> dict:
        h = height if height is not None else chain.head.height + 1
        vs = node.validator_set(h)
        return {
            "height": h,
            "total_power": vs.total_power,
            "validators_hash": hx(vs.hash),
            "validators": [
                {"address": encode_address(v.public_key), "power": v.power, "name": v.name} for v in vs.validators
            ],
        }

    @reg.method("net_info", summary="Peer id, listen addresses, peer count, sync state", result=OBJ)
    async def net_info() -> dict:
        net = node.network
        if net is None:
            return {"node_id": node.peer_id, "listening": False, "listen_addrs": [], "peers": 0, "sync": None}
        return {
            "node_id": node.peer_id,
            "listening": True,
            "listen_addrs": net.listen_addrs(),
            "peers": len(net.peers()),
            "sync": node.sync_status(),
        }

    @reg.method("net_peers", summary="Connected peers: id, addresses, their head, score", result={"type": "array"})
    async def net_peers() -> list:
        net = node.network
        if net is None:
            return []
        out = []
        for p in net.peers():
            st = p.status
            out.append({
                "peer_id": p.peer_id,
                "addrs": list(p.addrs),
                "height": st.height if st is not None else None,
                "finalized_height": st.finalized_height if st is not None else None,
                "score": round(p.score, 2),
            })
        return out

    from .market_methods import register_market_methods
    from .staking_methods import register_staking_methods

    register_market_methods(reg, hub, node)
    register_staking_methods(reg, hub, node)
    from .zk_methods import register_zk_methods

    register_zk_methods(reg, node)
    document_node_methods(reg)  # result schemas and errors for rpc.discover (rpc/schemas.py)

    # WebSocket topics ---------------------------------------------------------------------------
    hub.register_topic("newHeads", summary="Every committed block header")
    hub.register_topic(
        "tx",
        params=[Param("hash", HASH, description="transaction hash to watch")],
        matcher=lambda flt, key: flt.get("hash", "").lower() == key,
        summary="Inclusion (committed or failed) of one transaction",
    )
    return reg, hub


__all__ = ["build_rpc", "header_json", "result_json"]
