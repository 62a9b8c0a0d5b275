"""``aitbc-peer validator …`` and ``stake …``: proof of stake from the command line (through RPC)."""

from __future__ import annotations

import argparse
from typing import Any

from state.address import decode_address, encode_address
from state.errors import AitbcError

from .cli_tx import add_client_options, ait, load_signer, print_kv, print_table, progress, submit
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
            self_bond = parse_ait(args.self_bond, "--self-bond")
            body = staking.validator_create_body(
                consensus_key=ck,
                commission_bps=args.commission_bps,
                self_bond=self_bond,
                moniker=args.moniker or "",
            )

            def confirm() -> None:  # after the dry run: a refusal's reason comes first
                warning = voting_power_warning(rpc, self_bond, encode_address(ck))
                if warning is None:
                    return
                progress(f"warning: {warning}")
                if not args.yes:
                    raise AitbcError("validator_create not sent: run a node with this consensus key first, then "
                                     "repeat with --yes to create the validator anyway", reason="confirmation_required")

            st = submit(rpc, key, "validator_create", body, timeout=args.timeout, confirm=confirm)
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
                if args.json:
                    _print(v)
                else:
                    print_validator(v)
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


def print_validator(v: dict) -> None:
    """``validator status ADDRESS`` for people: a key/value table, amounts in AIT."""
    print_kv([
        ("address", v["address"]),
        ("consensus_key", v["consensus_key"]),
        ("moniker", v.get("moniker")),
        ("status", v["status"]),
        ("power", v["power"]),
        ("tokens", ait(v["tokens"])),
        ("self_bond", ait(v["self_bond"])),
        ("min_self_bond", ait(v.get("min_self_bond"))),
        ("commission", f"{v['commission_bps'] / 100:g}% ({v['commission_bps']} bps)"),
        ("commission_pending", ait(v.get("commission_pending"))),
        ("rewards_outstanding", ait(v.get("rewards_outstanding"))),
        ("jailed_until" if v.get("jailed") else None, v.get("jailed_until")),
        ("tombstoned", "yes" if v.get("tombstoned") else "no"),
        ("missed_blocks", f"{v.get('missed_blocks', 0)} of the last {v.get('tracked_blocks', 0)} "
                          f"(window {v.get('signed_blocks_window', '-')})"),
        ("created_height", v.get("created_height")),
    ])


def voting_power_warning(rpc: Any, self_bond: int, consensus_key: str) -> str | None:
    """Why a new validator bonding ``self_bond`` would put the chain's liveness in one key's hands, or None.

    Its power would be ``self_bond // power_unit``, next to the set the node will use next
    (``consensus_getValidators``: staked validators and authorities). A block needs more than 2/3 of the
    total power (``ValidatorSet.quorum``): when the others hold no more than that without it — it holds
    about 1/3 or more — the chain halts whenever no node signs with its consensus key."""
    unit = int(rpc.call("staking_getParams")["power_unit"])
    vs = rpc.call("consensus_getValidators")
    power = self_bond // unit
    others = int(vs["total_power"])
    total = others + power
    if power <= 0 or others >= total * 2 // 3 + 1:
        return None
    return (f"this validator would hold {power} of {total} voting power ({100 * power / total:.1f}%, "
            f"1/3 or more): blocks need more than 2/3, so the chain halts whenever no node runs its "
            f"consensus key {consensus_key} (a node down, a key not installed); it joins at the next epoch")


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
    v.add_argument("--yes", action="store_true",
                   help="create it even if it would hold 1/3 or more of the voting power (the chain then halts "
                        "whenever no node runs its consensus key)")
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
