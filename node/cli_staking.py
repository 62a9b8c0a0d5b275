"""``aitbc-peer validator …`` and ``stake …``: proof of stake from the command line (through RPC)."""

from __future__ import annotations

import argparse
from typing import Any

from state.address import decode_address, encode_address
from state.errors import AitbcError

from .cli_tx import add_client_options, load_signer, print_table, submit
from .cli_tx import print_json as _print


def cmd_validator(args: argparse.Namespace) -> int:
    from state import staking

    from .cli import _client, _home, format_ait, parse_ait
    from .keystore import read_plain_key_file

    with _client(args) as rpc:
        c = args.validator_cmd
        if c == "create":
            key = load_signer(args)
            if args.consensus_key:
                ck = decode_address(args.consensus_key)
            else:
                ck = read_plain_key_file(_home(args).validator_key_path).public_key
            body = staking.validator_create_body(
                consensus_key=ck,
                commission_bps=args.commission_bps,
                self_bond=parse_ait(args.self_bond, "--self-bond"),
                moniker=args.moniker or "",
            )
            st = submit(rpc, key, "validator_create", body, timeout=args.timeout)
            print(f"validator {encode_address(key.public_key)} (consensus key {encode_address(ck)}) created in "
                  f"block {st['block_height']}; it joins the active set at the next epoch boundary")
            return 0
        if c == "edit":
            key = load_signer(args)
            body: dict[str, Any] = {}
            if args.commission_bps is not None:
                body["commission_bps"] = args.commission_bps
            if args.moniker is not None:
                body["moniker"] = args.moniker
            if not body:
                raise AitbcError("give --commission-bps and/or --moniker")
            submit(rpc, key, "validator_edit", body, timeout=args.timeout)
            print("validator updated")
            return 0
        if c == "unjail":
            key = load_signer(args)
            submit(rpc, key, "unjail", {}, timeout=args.timeout)
            print("unjailed; the validator rejoins the set when its power ranks at the next recomputation")
            return 0
        if c == "status":
            if args.address:
                v = rpc.call("staking_getValidator", address=args.address)
                _print(v)
                return 0
            res = rpc.call("staking_getValidators")
            if args.json:
                _print(res)
            else:
                print_table(["address", "status", "power", "tokens_ait", "commission_bps", "missed", "moniker"],
                            [[v["address"], v["status"], v["power"], format_ait(int(v["tokens"])), v["commission_bps"],
                              v.get("missed_blocks", 0), v.get("moniker") or "-"] for v in res["validators"]])
            return 0
    return 0


def cmd_stake(args: argparse.Namespace) -> int:
    from state import staking

    from .cli import _client, _resolve_address, format_ait, parse_ait

    with _client(args) as rpc:
        c = args.stake_cmd
        if c in ("delegate", "undelegate"):
            key = load_signer(args)
            val = decode_address(_resolve_address(args, args.validator))
            amount = parse_ait(args.amount)
            body = (staking.delegate_body if c == "delegate" else staking.undelegate_body)(val, amount)
            st = submit(rpc, key, c, body, timeout=args.timeout)
            print(f"{c} {format_ait(amount)} AIT {'to' if c == 'delegate' else 'from'} {encode_address(val)} "
                  f"in block {st['block_height']}")
            return 0
        if c == "rewards":
            addr = args.address or encode_address(load_signer(args).public_key)
            res = rpc.call("staking_getDelegations", delegator=addr)
            if args.json:
                _print(res)
            else:
                print_table(["validator", "delegated_ait", "rewards_ait"],
                            [[d["validator"], format_ait(int(d["amount"])), format_ait(int(d["rewards"]))]
                             for d in res["delegations"]])
            return 0
        if c == "withdraw":
            key = load_signer(args)
            body = staking.withdraw_rewards_body(decode_address(args.validator) if args.validator else None)
            st = submit(rpc, key, "withdraw_rewards", body, timeout=args.timeout)
            print(f"rewards withdrawn in block {st['block_height']}")
            return 0
    return 0


def add_staking_commands(sub: Any, home_arg: Any, rpc_arg: Any) -> None:
    sp = sub.add_parser("validator", help="become, edit or inspect a PoS validator")
    home_arg(sp)
    vsub = sp.add_subparsers(dest="validator_cmd", required=True)
    v = vsub.add_parser("create", help="bond stake and register a validator (operator = --from)")
    v.add_argument("--self-bond", required=True, help="AIT")
    v.add_argument("--commission-bps", type=int, default=500)
    v.add_argument("--moniker")
    v.add_argument("--consensus-key", help="ait1… consensus key (default: this home's validator key)")
    v = vsub.add_parser("edit", help="change commission or moniker")
    v.add_argument("--commission-bps", type=int)
    v.add_argument("--moniker")
    vsub.add_parser("unjail", help="leave jail after the jail period")
    v = vsub.add_parser("status", help="the validator set, or one validator")
    v.add_argument("address", nargs="?", help="operator address")
    v.add_argument("--json", action="store_true")
    add_client_options(vsub, home_arg, rpc_arg, from_help="keystore key of the operator")
    sp.set_defaults(func=cmd_validator)

    sp = sub.add_parser("stake", help="delegate, undelegate and collect rewards")
    home_arg(sp)
    ssub = sp.add_subparsers(dest="stake_cmd", required=True)
    for name in ("delegate", "undelegate"):
        s = ssub.add_parser(name, help=f"{name} stake")
        s.add_argument("--validator", required=True, help="operator address")
        s.add_argument("--amount", required=True, help="AIT")
    s = ssub.add_parser("rewards", help="delegations and pending rewards")
    s.add_argument("address", nargs="?")
    s.add_argument("--json", action="store_true")
    s = ssub.add_parser("withdraw", help="withdraw pending rewards")
    s.add_argument("--validator", help="only from this validator")
    add_client_options(ssub, home_arg, rpc_arg, from_help="keystore key of the delegator")
    sp.set_defaults(func=cmd_stake)
