"""``tx_simulate``: dry-run a signed transaction against the head state without committing it.

The transaction runs through the block path (``state.simulate.simulate_tx`` → ``state.machine.apply_tx``,
called by the node behind ``NodeApi.simulate``) on a throwaway overlay of the committed state, after the sender's transactions pending in this node's
mempool; nothing is written to the store and nothing enters the mempool. Wallets call it before
``tx_submit`` so a transaction that would fail in the block is refused without spending a fee.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from state.errors import DecodeError
from state.types import Transaction

from .jsonrpc import MethodRegistry
from .params import Param
from .schemas import AMOUNT, HASH32, errors_for
from .views import hx

if TYPE_CHECKING:
    from .node_api import NodeApi

TX_HEX = {"type": "string", "format": "hex", "maxBytes": 64 * 1024}
SIMULATE_RESULT = {
    "type": "object",
    "required": ["ok", "stage", "reason", "message", "hash", "height", "fee", "cost", "work"],
    "properties": {
        "ok": {"type": "boolean"},
        "stage": {"type": "string", "enum": ["decode", "check", "execute", "ok"]},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "hash": {"anyOf": [HASH32, {"type": "null"}]},
        "height": {"type": "integer"},
        "fee": AMOUNT,
        "cost": AMOUNT,
        "work": {"type": "integer"},
        "balance_before": AMOUNT,
        "balance_after": AMOUNT,
        "prior_txs": {"type": "integer"},
        "events": {"type": "array", "items": {"type": "string"}},
    },
}


def register_simulate_methods(reg: MethodRegistry, node: NodeApi) -> None:
    @reg.method(
        "tx_simulate",
        params=[Param("tx", TX_HEX, description="signed transaction, canonical CBOR, 0x-hex")],
        summary="Dry-run a signed transaction on the head state (nothing committed, nothing pooled): "
        "ok, stage (check | execute | ok), reason, message, fee, cost, work units",
        result=SIMULATE_RESULT,
    )
    async def tx_simulate(tx: str) -> dict:
        head = node.chain.head
        try:
            t = Transaction.decode(bytes.fromhex(tx[2:]))
        except DecodeError as exc:
            return {"ok": False, "stage": "decode", "reason": exc.reason if exc.reason in ("too_large", "non_canonical")
                    else "malformed", "message": f"malformed transaction: {exc}", "hash": None,
                    "height": head.height, "fee": "0", "cost": "0", "work": 0}
        res = await node.simulate(t)  # after the sender's pooled txs, on a throwaway overlay of the head
        res["hash"] = hx(t.hash)
        for k in ("fee", "cost", "balance_before", "balance_after"):
            res[k] = str(res[k])
        return res

    reg.describe("tx_simulate", errors=errors_for("tx_simulate"))  # OpenRPC: -32602 and the common errors


__all__ = ["register_simulate_methods"]
