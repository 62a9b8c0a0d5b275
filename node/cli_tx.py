"""Signing and submitting transactions for the CLI (through a node's JSON-RPC)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from state.address import encode_address
from state.crypto import SigningKey
from state.errors import AitbcError
from state.types import Transaction


def print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2))


def load_signer(args: argparse.Namespace, *, default_miner: bool = False) -> SigningKey:
    """The key named by ``--from`` (keystore), or the home's miner key for miner commands."""
    from .cli import _home, _password

    name = getattr(args, "from_", None)
    home = _home(args)
    if name:
        return home.keystore.load(name, _password(args, name))
    if default_miner:
        return home.miner_key()
    raise AitbcError("give --from NAME (a keystore key)")


def submit(
    rpc: Any,
    key: SigningKey,
    tx_type: str,
    body: dict,
    *,
    fee: int | None = None,
    wait: bool = True,
    timeout: float = 60.0,
) -> dict:
    """Sign ``body`` as a ``tx_type`` transaction from ``key``, submit it and (with ``wait``) return its
    status once included. Raises :class:`AitbcError` with the chain's reason if it failed."""
    info = rpc.call("system_info")
    acc = rpc.call("state_getAccount", address=encode_address(key.public_key))
    tx = Transaction.create(
        key, info["chain_id"], tx_type, acc["pending_nonce"], fee if fee is not None else info["params"]["min_fee"], body
    )
    res = rpc.call("tx_submit", tx="0x" + tx.raw.hex())
    if not wait:
        return {"hash": res["hash"], "status": "pending"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = rpc.call("chain_getTransaction", hash=res["hash"])
        if st["status"] == "committed":
            return st
        if st["status"] == "failed":
            r = st["result"]
            raise AitbcError(f"{tx_type} failed in block {st['block_height']}: {r['message']} ({r['reason']})")
        time.sleep(0.2)
    raise AitbcError(f"{tx_type} {res['hash']} not included within {timeout:.0f} s")


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
