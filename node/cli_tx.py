"""Signing and submitting transactions for the CLI (through a node's JSON-RPC)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from state.address import encode_address
from state.crypto import SigningKey
from state.errors import AitbcError
from state.types import Transaction

# Fields that hold amounts (base units). In `--json` output each is an integer, next to ``<field>_ait``
# (the same amount as a decimal AIT string); the node's JSON-RPC sends them as decimal strings.
AMOUNT_KEYS = frozenset({
    "balance", "bond", "tokens", "amount", "rewards", "paid", "refunded", "max_price", "escrow", "fee",
    "min_fee", "self_bond", "min_self_bond", "availability_bond", "burned", "bonded", "unbonding", "supply",
    "total_supply", "circulating", "escrowed", "miner_bonds", "fees", "cost", "required", "available",
})


def format_ait(base: int) -> str:
    whole, frac = divmod(base, 1_000_000)
    return f"{whole}.{frac:06d}".rstrip("0").rstrip(".") if frac else str(whole)


def typed(obj: Any) -> Any:
    """An RPC answer made typed for ``--json``: every amount field (:data:`AMOUNT_KEYS`) as an integer of
    base units plus ``<field>_ait``; everything else as it is."""
    if isinstance(obj, list):
        return [typed(x) for x in obj]
    if not isinstance(obj, dict):
        return obj
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if k in AMOUNT_KEYS and not isinstance(v, bool) and (
            isinstance(v, int) or isinstance(v, str) and v.isdigit()
        ):
            out[k] = int(v)
            out[f"{k}_ait"] = format_ait(int(v))
        else:
            out[k] = typed(v)
    return out


def print_json(obj: object) -> None:
    print(json.dumps(typed(obj), indent=2))


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    """Rows under a header line, columns padded to their widest cell (``(none)`` when empty)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if not cells:
        print("(none)")


def ait(base: int | str | None) -> str | None:
    """An amount of base units (an int or the RPC's decimal string) as ``"12.5 AIT"``; None stays None."""
    return None if base is None else f"{format_ait(int(base))} AIT"


def print_kv(rows: list[tuple[str, Any]]) -> None:
    """One object as an aligned key/value table: keys padded to the widest, then the value; a missing
    value (None or "") prints as ``-``. Rows whose key is None are left out (optional facts)."""
    shown = [(k, "-" if v is None or v == "" else str(v)) for k, v in rows if k is not None]
    width = max((len(k) for k, _ in shown), default=0)
    for k, v in shown:
        print(f"{k.ljust(width)}  {v}".rstrip())


def progress(text: str) -> None:
    """A progress line on stderr (stdout stays the command's result)."""
    print(text, file=sys.stderr, flush=True)


def load_signer(args: argparse.Namespace, *, default_miner: bool = False, create: bool = True) -> SigningKey:
    """The key named by ``--from`` (keystore), or the home's miner key for miner commands (created on
    first use unless ``create`` is false: read-only commands never create keys)."""
    from .cli import _home, _password

    name = getattr(args, "from_", None)
    home = _home(args)
    if name:
        home.keystore.info(name)  # a missing key is named before any password prompt
        return home.keystore.load(name, _password(args, name))
    if default_miner:
        return home.miner_key(create=create)
    raise AitbcError("give --from NAME (a keystore key)")


def simulate(rpc: Any, tx: Transaction) -> dict | None:
    """Dry-run ``tx`` on the node (``tx_simulate``); raise :class:`AitbcError` with the chain's reason if it
    would be refused or fail in the block (so no fee is spent). None from a node without ``tx_simulate``."""
    from .rpcclient import RpcClientError

    try:
        sim = rpc.call("tx_simulate", tx="0x" + tx.raw.hex())
    except RpcClientError as exc:
        if exc.code == -32601:  # an older node: no dry run
            return None
        raise
    if not sim["ok"]:
        where = "would fail in the block" if sim["stage"] == "execute" else "would be refused"
        raise AitbcError(f"{tx.type} {where}: {sim['message']} ({sim['reason']}); not sent, no fee spent",
                         reason=sim["reason"])
    return sim


def wait_included(rpc: Any, tx_hash: str, timeout: float, what: str) -> dict:
    """Poll until ``tx_hash`` is included, then until its block is final; progress lines on stderr.
    Returns its ``chain_getTransaction`` status (committed or failed)."""
    deadline = time.monotonic() + timeout
    while True:
        st = rpc.call("chain_getTransaction", hash=tx_hash)
        if st["status"] != "pending":
            break
        if time.monotonic() > deadline:
            raise AitbcError(f"{what} {tx_hash} not included within {timeout:.0f} s", reason="timeout")
        time.sleep(0.2)
    height = st["block_height"]
    progress(f"{what} {tx_hash}: included in block {height} ({st['status']})")
    while True:
        fin = rpc.call("chain_getHead")["finalized_height"]
        if fin >= height:
            progress(f"{what} {tx_hash}: final (finalized height {fin})")
            return st
        if time.monotonic() > deadline:
            raise AitbcError(f"{what} {tx_hash} included in block {height} but not final within {timeout:.0f} s",
                             reason="timeout")
        time.sleep(0.2)


def submit(
    rpc: Any,
    key: SigningKey,
    tx_type: str,
    body: dict,
    *,
    fee: int | None = None,
    wait: bool = True,
    timeout: float = 60.0,
    confirm: Callable[[], None] | None = None,
) -> dict:
    """Sign ``body`` as a ``tx_type`` transaction from ``key``, dry-run it (``tx_simulate``: refused here,
    with the reason, if it would fail), call ``confirm`` (which raises to stop before anything is sent),
    submit it and (with ``wait``) return its status once included and final. Raises :class:`AitbcError`
    with the chain's reason if it failed."""
    info = rpc.call("system_info")
    acc = rpc.call("state_getAccount", address=encode_address(key.public_key))
    tx = Transaction.create(
        key, info["chain_id"], tx_type, acc["pending_nonce"], fee if fee is not None else info["params"]["min_fee"], body
    )
    simulate(rpc, tx)
    if confirm is not None:
        confirm()
    res = rpc.call("tx_submit", tx="0x" + tx.raw.hex())
    progress(f"{tx_type} {res['hash']}: submitted")
    if not wait:
        return {"hash": res["hash"], "status": "pending"}
    st = wait_included(rpc, res["hash"], timeout, tx_type)
    if st["status"] == "failed":
        r = st["result"]
        raise AitbcError(f"{tx_type} failed in block {st['block_height']}: {r['message']} ({r['reason']})",
                         reason=r["reason"])
    return st


def add_client_options(
    subparsers: Any, home_arg: Any, rpc_arg: Any, *, from_help: str | None, timeout: float = 60.0
) -> None:
    """The options every transaction-sending subcommand takes: --home, --rpc, --from (when
    ``from_help`` is given), --password-file, --timeout."""
    for sp in subparsers.choices.values():
        home_arg(sp, leaf=True)
        rpc_arg(sp)
        if from_help is not None:
            sp.add_argument("--from", dest="from_", help=from_help)
        sp.add_argument("--password-file")
        sp.add_argument("--timeout", type=float, default=timeout)
