"""JSON-RPC methods of zk/ state (``zk_*``): the chain's tree of attestable receipts and its nullifiers.

A prover downloads every leaf (``zk_receiptLeaves``) and builds its Merkle path locally, so the node it
asks never learns which receipt is being attested; a verifier asks ``zk_receiptRoot`` whether an
attestation's root is one the chain had.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from state.market import anon, attest

from .errors import RpcError
from .jsonrpc import MethodRegistry
from .params import Param

if TYPE_CHECKING:
    from .node_api import NodeApi

OBJ = {"type": "object"}
FIELD = {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$"}
MAX_LEAVES = 1024


def _hex32(v: int) -> str:
    return f"0x{v:064x}"


def _leaves(size: int, leaf_at, start: int, limit: int, what: str) -> dict:  # noqa: ANN001
    leaves = []
    for i in range(start, min(size, start + limit)):
        v = leaf_at(i)
        if v is None:
            raise RpcError(RpcError.INTERNAL_ERROR, f"{what} tree leaf missing", {"index": i})
        leaves.append(_hex32(v))
    return {"start": start, "size": size, "leaves": leaves}


def register_zk_methods(reg: MethodRegistry, node: NodeApi) -> None:
    get = node.chain.get_object
    chain_id = node.genesis.chain_id

    def tree_info() -> dict:
        return {"depth": attest.receipt.DEPTH, "size": attest.tree_size(get), "root": _hex32(attest.root_of(get)),
                "height": node.chain.head.height}

    @reg.method("zk_receiptTree", params=[], result=OBJ,
                summary="The tree of attestable receipts: depth, number of leaves, root")
    async def zk_receipt_tree() -> dict:
        return tree_info()

    @reg.method("zk_receiptLeaves", result=OBJ,
                params=[Param("start", {"type": "integer", "minimum": 0}, required=False),
                        Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LEAVES}, required=False)],
                summary="Leaves of the receipt tree in order, from start (at most 1024 per call)")
    async def zk_receipt_leaves(start: int = 0, limit: int = MAX_LEAVES) -> dict:
        return _leaves(attest.tree_size(get), lambda i: attest.leaf_at(get, i), start, limit, "receipt")

    @reg.method("zk_bidderTree", params=[], result=OBJ,
                summary="The tree of anonymous bidders (miners with an identity): depth, leaves, root")
    async def zk_bidder_tree() -> dict:
        return {"depth": anon.anon_bid.DEPTH, "size": anon.tree_size(get), "root": _hex32(anon.root_of(get)),
                "height": node.chain.head.height}

    @reg.method("zk_bidderLeaves", result=OBJ,
                params=[Param("start", {"type": "integer", "minimum": 0}, required=False),
                        Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LEAVES}, required=False)],
                summary="Leaves of the bidder tree in order, from start (at most 1024 per call; 0 = vacated)")
    async def zk_bidder_leaves(start: int = 0, limit: int = MAX_LEAVES) -> dict:
        return _leaves(anon.tree_size(get), lambda i: anon.leaf_at(get, i), start, limit, "bidder")

    @reg.method("zk_receiptRoot", params=[Param("root", FIELD)], result=OBJ,
                summary="Whether this was ever the receipt tree's root, and from which height")
    async def zk_receipt_root(root: str) -> dict:
        h = attest.root_height(get, int(root, 16))
        return {"root": root.lower(), "known": h is not None, "height": h}

    @reg.method("zk_getNullifier", result=OBJ,
                params=[Param("scope", {"type": "string", "maxLength": 2 + 2 * attest.receipt.MAX_SCOPE,
                                        "pattern": "^0x([0-9a-fA-F]{2})*$"}), Param("nullifier", FIELD)],
                summary="Whether the on-chain rule recorded this attestation nullifier in this scope")
    async def zk_get_nullifier(scope: str, nullifier: str) -> dict:
        scope_b = bytes.fromhex(scope[2:])
        if len(scope_b) > attest.receipt.MAX_SCOPE:
            raise RpcError(RpcError.INVALID_PARAMS, "scope longer than 64 bytes")
        h = attest.nullifier_height(get, chain_id, scope_b, bytes.fromhex(nullifier[2:]))
        return {"used": h is not None, "height": h}
