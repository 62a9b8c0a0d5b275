"""Dry-run one signed transaction against committed state, without committing anything (``tx_simulate``).

The transaction runs through the same path a block takes (:func:`state.machine.apply_tx`) on a throwaway
:class:`state.machine.Execution` overlay of the head state: reads go to the store, writes stay in the
overlay, which is dropped. The sender's transactions already pending in the mempool with lower nonces
run first (so a wallet's next transaction is judged after them, as the proposer would order them).
Pure: no I/O besides the reader's reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import TxError
from .machine import TX_KINDS, BlockEnv, Execution, StateReader, apply_tx, tx_cost
from .types import Transaction


def simulate_tx(
    reader: StateReader, env: BlockEnv, tx: Transaction, *, prior: Sequence[Transaction] = (), verified: bool = False
) -> dict[str, Any]:
    """The outcome ``tx`` would have in a block at ``env`` on ``reader``'s state, after ``prior``.

    ``{ok, stage, reason, message, fee, cost, work, balance_before, balance_after, events}``: ``stage`` is
    ``"check"`` when the block would refuse the transaction (nothing charged: the mempool rejects it
    too), ``"execute"`` when its body fails (it would be included, the fee charged, the result recording
    ``reason``), ``"ok"`` on success. ``cost`` is the most the sender must hold (fee + value moved), ``work``
    the dispute work units it uses of the block's budget; amounts are base units."""
    ex = Execution(reader, env)
    for p in prior:
        try:
            apply_tx(ex, p, verified=True)
        except TxError:
            break  # the rest of the run would not execute either
        ex.events.clear()
    before = ex.account(tx.sender).balance
    work_before = ex.work_used
    out: dict[str, Any] = {
        "fee": tx.fee,
        "cost": tx_cost(tx) if tx.type in TX_KINDS else tx.fee,
        "balance_before": before,
        "prior_txs": len(prior),
    }
    try:
        res = apply_tx(ex, tx, verified=verified)
    except TxError as exc:
        return {"ok": False, "stage": "check", "reason": exc.reason, "message": str(exc), **out,
                "work": 0, "balance_after": before, "events": []}
    after = ex.account(tx.sender).balance
    return {
        "ok": res.ok,
        "stage": "ok" if res.ok else "execute",
        "reason": res.reason,
        "message": res.message,
        **out,
        "work": ex.work_used - work_before,
        "balance_after": after,
        "events": [e for e, _ in ex.events],
    }


__all__ = ["simulate_tx"]
