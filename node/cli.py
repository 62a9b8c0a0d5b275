"""``aitbc-peer`` command line: init, run, keys, wallet, status."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from state.address import decode_address, encode_address
from state.errors import AitbcError

from .home import AIT, DEV_ACCOUNT, Home, default_home, init_home

log = logging.getLogger("aitbc")


# ------------------------------------------------------------------------------------------------
# helpers


def parse_ait(text: str, what: str = "amount") -> int:
    """Decimal AIT ("1.5") -> base units (1,500,000). No floats."""
    s = text.strip()
    if s.count(".") > 1 or not s.replace(".", "").isdigit() or s.startswith(".") and len(s) == 1:
        raise AitbcError(f"{what} must be a decimal number of AIT, like 12 or 0.5 (got {text!r})")
    whole, _, frac = s.partition(".")
    if len(frac) > 6:
        raise AitbcError(f"{what} has more than 6 decimals (1 AIT = 1,000,000 base units)")
    return int(whole or "0") * AIT + int((frac + "000000")[:6])


def format_ait(base: int) -> str:
    whole, frac = divmod(base, AIT)
    return f"{whole}.{frac:06d}".rstrip("0").rstrip(".") if frac else str(whole)


def _home(args: argparse.Namespace) -> Home:
    return Home(Path(args.home).expanduser() if args.home else default_home())


def normalize_rpc_url(url: str) -> str:
    """``http://host:port`` (a base URL, as geth and CometBFT users give it) -> ``http://host:port/rpc``;
    a URL with a path is kept as given."""
    from urllib.parse import urlsplit

    u = url.strip()
    if "://" not in u:
        u = "http://" + u
    try:
        parts = urlsplit(u)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise AitbcError(f"--rpc must be an http(s) URL like http://127.0.0.1:8202 (got {url!r})",
                         reason="bad_url") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise AitbcError(f"--rpc must be an http(s) URL like http://127.0.0.1:8202 (got {url!r})", reason="bad_url")
    if parts.path in ("", "/"):
        u = u.rstrip("/") + "/rpc"
    return u


def _rpc_url(args: argparse.Namespace) -> str:
    """The node to talk to: ``--rpc``, else ``$AITBC_RPC_URL``, else the URL a node running on the home
    wrote (``<home>/rpc.url``, if its process is alive), else the home's ``config.toml``."""
    if getattr(args, "rpc", None):
        return normalize_rpc_url(args.rpc)
    if os.environ.get("AITBC_RPC_URL"):
        return normalize_rpc_url(os.environ["AITBC_RPC_URL"])
    from .config import load_config
    from .home import rpc_client_host

    home = _home(args)
    running = home.running_rpc_url()
    if running:
        return running
    cfg = load_config(home.config_path if home.config_path.exists() else None)
    return f"http://{rpc_client_host(cfg.rpc.host)}:{cfg.rpc.port}/rpc"


def _client(args: argparse.Namespace):
    from .rpcclient import RpcClient

    return RpcClient(_rpc_url(args))


def _password(args: argparse.Namespace, name: str, *, confirm: bool = False) -> str:
    from .keystore import read_password

    pw_file = getattr(args, "password_file", None)
    if pw_file is None and not os.environ.get("AITBC_PASSWORD"):
        dev_pw = _home(args).password_file(name)
        if dev_pw.exists():  # written only by `init --dev` for the dev account
            pw_file = str(dev_pw)
    return read_password(password_file=pw_file, prompt=f"Password for '{name}': ", confirm=confirm)


def _print(obj: object) -> None:
    from .cli_tx import print_json

    print_json(obj)


# ------------------------------------------------------------------------------------------------
# commands


def cmd_init(args: argparse.Namespace) -> int:
    allocs = []
    for a in args.alloc or []:
        addr, sep, amount = a.partition("=")
        if not sep:
            raise AitbcError(f"--alloc expects ADDRESS=AIT, got {a!r}")
        decode_address(addr)
        allocs.append((addr, parse_ait(amount, "--alloc amount")))
    summary = init_home(
        _home(args).root,
        dev=args.dev,
        chain_id=args.chain_id,
        moniker=args.moniker,
        genesis_file=Path(args.genesis) if args.genesis else None,
        allocations=allocs,
        block_interval_ms=args.block_interval,
        consensus=args.consensus,
    )
    for k, v in summary.items():
        print(f"{k:>14}: {v}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import trio

    from .config import load_config
    from .service import Node

    home = _home(args)
    if not home.is_initialised():
        if not args.dev:
            raise AitbcError(f"{home.root} is not initialised: run `aitbc-peer init --home {home.root}` or use --dev")
        summary = init_home(home.root, dev=True)
        print(f"initialised dev home {home.root} (dev account {summary['dev_account']})", flush=True)
    overrides = {
        "rpc.port": args.rpc_port,
        "rpc.host": args.rpc_host,
        "p2p.port": args.p2p_port,
        "node.log_level": args.log_level,
        "miner.enabled": True if args.miner else None,
        "miner.verify": True if args.verify else None,
    }
    cfg = load_config(home.config_path, overrides=overrides)
    logging.basicConfig(
        level=cfg.node.log_level.upper(),
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    node = Node(home, cfg)
    # The node keeps many long-lived objects (mempool, caches): fewer young-generation collections
    # cut the GC share of the transaction path roughly in half.
    import gc

    gc.set_threshold(50_000, 20, 100)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                await nursery.start(node.run)
                print(f"aitbc-peer running: chain {node.genesis.chain_id}, RPC http://{cfg.rpc.host}:{node.rpc_port}/rpc",
                      flush=True)
                async for sig in signals:
                    log.info("received %s, shutting down", signal.Signals(sig).name)
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)
    log.info("stopped")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    ks = _home(args).keystore
    if args.keys_cmd == "new":
        info = ks.new(args.name, _password(args, args.name, confirm=True))
        print(f"created key '{info.name}': {info.address}")
    elif args.keys_cmd == "list":
        infos = ks.list()
        if args.json:
            _print([{"name": i.name, "address": i.address} for i in infos])
        else:
            from .cli_tx import print_table

            print_table(["name", "address"], [[i.name, i.address] for i in infos])
    elif args.keys_cmd == "show":
        i = ks.info(args.name)
        shown = {"name": i.name, "address": i.address, "public_key": "0x" + i.public_key.hex(), "path": str(i.path)}
        if args.json:
            _print(shown)
        else:
            from .cli_tx import print_kv

            print_kv(list(shown.items()))
    elif args.keys_cmd == "import":
        if args.keyfile:
            from .keystore import read_password

            src_pw = read_password(env="AITBC_IMPORT_PASSWORD", prompt="Password of the imported file: ")
            info = ks.import_file(args.name, args.keyfile, src_pw, new_password=_password(args, args.name, confirm=True))
        else:
            text = Path(args.seed_file).read_text().strip() if args.seed_file else sys.stdin.readline().strip()
            try:
                seed = bytes.fromhex(text.removeprefix("0x"))
            except ValueError:
                raise AitbcError("seed must be 32 bytes of hex") from None
            if len(seed) != 32:
                raise AitbcError(f"seed must be 32 bytes of hex, got {len(seed)} bytes")
            info = ks.import_seed(args.name, seed, _password(args, args.name, confirm=True))
        print(f"imported key '{info.name}': {info.address}")
    elif args.keys_cmd == "export":
        seed = ks.export_seed(args.name, _password(args, args.name))
        print("0x" + seed.hex())
    return 0


def _resolve_address(args: argparse.Namespace, who: str) -> str:
    try:
        decode_address(who)
        return who
    except AitbcError:
        pass
    try:
        return _home(args).keystore.info(who).address
    except AitbcError:
        raise AitbcError(f"{who!r} is neither a valid ait1… address nor a key in the keystore") from None


def cmd_wallet(args: argparse.Namespace) -> int:
    from state.types import transfer

    from .cli_tx import progress, simulate, wait_included

    if args.wallet_cmd == "balance":
        addr = _resolve_address(args, args.address)
        with _client(args) as rpc:
            acc = rpc.call("state_getAccount", address=addr)
        if args.json:
            _print(acc)
        else:
            from .cli_tx import ait, print_kv

            print_kv([("address", acc["address"]), ("balance", ait(acc["balance"])), ("nonce", acc["nonce"]),
                      ("pending_nonce", acc.get("pending_nonce"))])
        return 0
    if args.wallet_cmd == "history":
        addr = _resolve_address(args, args.address)
        params: dict = {"address": addr, "limit": args.limit}
        if args.cursor:
            params["cursor"] = args.cursor
        with _client(args) as rpc:
            page = rpc.call("chain_getAddressTransactions", **params)
        if args.json:
            _print(page)
            return 0
        from .cli_tx import ait, print_table

        rows = []
        for t in page["transactions"]:
            out = t["sender"] == addr
            rows.append([t["hash"], t["block_height"], t["type"], "out" if out else "in",
                         (t["to"] or "-") if out else t["sender"], ait(t["amount"]) or "-",
                         "ok" if t["result"]["ok"] else t["result"]["reason"] or "failed"])
        print_table(["hash", "block", "type", "dir", "counterparty", "amount", "result"], rows)
        if page["next_cursor"]:
            print(f"older: --cursor {page['next_cursor']}", file=sys.stderr)
        return 0
    # send: check the operator's input before touching the node or the keystore
    amount = parse_ait(args.amount)
    fee_arg = parse_ait(args.fee, "--fee") if args.fee else None
    to = decode_address(_resolve_address(args, args.to))
    with _client(args) as rpc:
        info = rpc.call("system_info")
        ks = _home(args).keystore
        ks.info(args.from_)  # a missing key is named before any password prompt
        key = ks.load(args.from_, _password(args, args.from_))
        fee = fee_arg if fee_arg is not None else info["params"]["min_fee"]
        acc = rpc.call("state_getAccount", address=encode_address(key.public_key))
        tx = transfer(key, info["chain_id"], to, amount, acc["pending_nonce"], fee)
        if not args.no_simulate:
            simulate(rpc, tx)
        res = rpc.call("tx_submit", tx="0x" + tx.raw.hex())
        out: dict = {"hash": res["hash"], "from": encode_address(key.public_key), "to": encode_address(to),
                     "amount": amount, "fee": fee, "nonce": tx.nonce, "status": "pending", "block_height": None}
        if not args.json:
            print(f"submitted {res['hash']}", flush=True)
        else:
            progress(f"transfer {res['hash']}: submitted")
        rc = 0
        if args.wait:
            st = wait_included(rpc, res["hash"], args.wait_timeout, "transfer")
            out["status"], out["block_height"] = st["status"], st["block_height"]
            if st["status"] == "failed":
                out["reason"], out["message"] = st["result"]["reason"], st["result"]["message"]
                rc = 1
            if not args.json:
                print(f"{st['status']} in block {st['block_height']}" +
                      (f": {st['result']['message']} ({st['result']['reason']})" if st["status"] == "failed" else ""))
        if args.json:
            _print(out)
    return rc


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as rpc:
        info = rpc.call("system_info")
        head = rpc.call("chain_getHead")
        mp = rpc.call("mempool_status")
        net = rpc.call("net_info")
        health = rpc.call("system_health")
    hl = health.get("health") or {"status": "ok", "reasons": []}  # an older node: liveness only
    if args.json:
        _print({
            "chain_id": info["chain_id"],
            "node_id": info["node_id"],
            "version": info["version"],
            "validator": info["validator"] or None,
            "height": int(head["height"]),
            "hash": head["hash"],
            "finalized_height": int(head["finalized_height"]),
            "peers": int(net["peers"]),
            "mempool": {"size": int(mp["size"]), "bytes": int(mp["bytes"])},
            "catching_up": bool(health.get("catching_up")),
            "health": hl,
        })
        return 0
    rows = [
        ("chain", info["chain_id"]),
        ("node id", info["node_id"]),
        ("version", info["version"]),
        ("validator", info["validator"] or "-"),
        ("head", f"{head['height']}  {head['hash']}"),
        ("finalized", str(head["finalized_height"])),
        ("peers", str(net["peers"])),
        ("mempool", f"{mp['size']} txs, {mp['bytes']} bytes"),
        ("sync", "catching up" if health.get("catching_up") else "in sync"),
    ]
    rows.append(("health", _health_line(hl)))
    for k, v in rows:
        print(f"{k:>10}  {v}")
    return 0


def _health_line(hl: dict) -> str:
    """The /health verdict in one line: ``ok`` or ``stalled (…)``, with the figures."""
    parts = []
    if "seconds_since_last_block" in hl:
        parts.append(f"last block {hl['seconds_since_last_block']:.1f} s ago")
    sync = hl.get("sync") or {}
    if sync.get("behind"):
        parts.append(f"height {sync['height']} of {sync['best_height']}")
    reasons = hl.get("reasons") or []
    status = ", ".join(reasons) if reasons else hl.get("status", "ok")
    return status + (f" ({'; '.join(parts)})" if parts else "")


# ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aitbc-peer", description="aitbc-peer: a decentralized GPU-compute marketplace node")
    p.add_argument("--version", action="version", version="aitbc-peer 0.1.0")
    sub = p.add_subparsers(dest="cmd", required=True)

    def home_arg(sp: argparse.ArgumentParser, *, leaf: bool = False) -> None:
        # `keys`/`wallet` take --home before or after their subcommand; on the subcommand it must not
        # default to None, or argparse would overwrite a --home given before it.
        sp.add_argument(
            "--home",
            help=f"node home directory (default: $AITBC_HOME or {default_home()})",
            **({"default": argparse.SUPPRESS} if leaf else {}),
        )

    def rpc_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--rpc", help="node RPC URL (default: $AITBC_RPC_URL or from the home's config)")

    sp = sub.add_parser("init", help="create a home: config.toml, genesis.json, keys")
    home_arg(sp)
    sp.add_argument("--dev", action="store_true", help="also create a funded dev account")
    sp.add_argument("--chain-id")
    sp.add_argument("--moniker")
    sp.add_argument("--genesis", help="use this genesis.json (join an existing network)")
    sp.add_argument("--alloc", action="append", metavar="ADDRESS=AIT", help="fund an account in genesis")
    sp.add_argument("--block-interval", type=int, metavar="MS", help="block interval in milliseconds")
    sp.add_argument("--consensus", choices=["poa", "pos", "hybrid"], default="poa",
                    help="validator set source of a new genesis (pos: the validator is staked)")
    sp.set_defaults(func=cmd_init)

    sp = sub.add_parser("run", help="run the node")
    home_arg(sp)
    sp.add_argument("--dev", action="store_true", help="initialise a dev home first if missing")
    sp.add_argument("--rpc-port", type=int)
    sp.add_argument("--rpc-host")
    sp.add_argument("--p2p-port", type=int)
    sp.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    sp.add_argument("--miner", action="store_true", help="run the miner role (register, bid, execute, receipt)")
    sp.add_argument("--verify", action="store_true", help="with --miner: re-check others' results, challenge")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("keys", help="manage the encrypted keystore")
    home_arg(sp)
    ksub = sp.add_subparsers(dest="keys_cmd", required=True)
    for name, helptext in (("new", "create a key"), ("show", "show a key"), ("export", "print a key's seed")):
        k = ksub.add_parser(name, help=helptext)
        k.add_argument("name")
        k.add_argument("--password-file")
        if name == "show":
            k.add_argument("--json", action="store_true")
    k = ksub.add_parser("list", help="list keys")
    k.add_argument("--json", action="store_true")
    k = ksub.add_parser("import", help="import a seed (hex) or another keystore file")
    k.add_argument("name")
    g = k.add_mutually_exclusive_group()
    g.add_argument("--seed-file", help="file holding the 32-byte seed as hex (default: read stdin)")
    g.add_argument("--keyfile", help="a keystore JSON file (its password from $AITBC_IMPORT_PASSWORD or prompt)")
    k.add_argument("--password-file")
    for k in ksub.choices.values():
        home_arg(k, leaf=True)
    sp.set_defaults(func=cmd_keys)

    sp = sub.add_parser("wallet", help="balances and transfers through a node's RPC")
    home_arg(sp)
    wsub = sp.add_subparsers(dest="wallet_cmd", required=True)
    w = wsub.add_parser("balance", help="balance of an address or keystore key")
    w.add_argument("address")
    w.add_argument("--json", action="store_true")
    rpc_arg(w)
    w = wsub.add_parser("history", help="transactions an address sent or is named in, newest first")
    w.add_argument("address")
    w.add_argument("--limit", type=int, default=20, choices=range(1, 101), metavar="1..100")
    w.add_argument("--cursor", help="the cursor printed after the previous page")
    w.add_argument("--json", action="store_true")
    rpc_arg(w)
    w = wsub.add_parser("send", help="sign and submit a transfer")
    w.add_argument("--from", dest="from_", required=True, help="keystore key name")
    w.add_argument("--to", required=True, help="address or keystore key name")
    w.add_argument("--amount", required=True, help="AIT, e.g. 1.5")
    w.add_argument("--fee", help="AIT (default: the chain's minimum fee)")
    w.add_argument("--wait", action="store_true", help="wait until included and final (progress on stderr)")
    w.add_argument("--wait-timeout", type=float, default=30.0)
    w.add_argument("--json", action="store_true", help="print the result as JSON")
    w.add_argument("--no-simulate", action="store_true", help="submit without the tx_simulate dry run")
    w.add_argument("--password-file")
    rpc_arg(w)
    for w in wsub.choices.values():
        home_arg(w, leaf=True)
    sp.set_defaults(func=cmd_wallet)

    sp = sub.add_parser("status", help="head, finalized height, peers, mempool, sync state")
    home_arg(sp)
    rpc_arg(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_status)

    from .cli_market import add_market_commands
    from .cli_models import add_model_commands
    from .cli_staking import add_staking_commands

    add_market_commands(sub, home_arg, rpc_arg)
    add_model_commands(sub, home_arg, rpc_arg)
    add_staking_commands(sub, home_arg, rpc_arg)
    from .cli_zk import add_zk_commands

    add_zk_commands(sub, home_arg, rpc_arg)
    from .cli_completion import add_completion_command

    add_completion_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    # NumPy's BLAS threads fight the node's own threads on small machines (the NumPy job backend runs
    # small matrices in a worker thread): one BLAS thread unless the operator says otherwise.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    if not hasattr(args, "home"):
        args.home = None
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  # noqa: BLE001 - operator mistakes become one line; bugs keep their traceback
        errors = _operator_errors(exc)
        if errors is None:
            raise
        if any(isinstance(e, EOFError) for e in errors):
            print(file=sys.stderr)  # end the prompt's line
        for e in errors:
            print(f"error: {error_line(e)}", file=sys.stderr)
        return 1


def error_line(exc: BaseException) -> str:
    """One line for an operator mistake: the message, its stable reason code when it adds something."""
    if isinstance(exc, AitbcError):
        msg = str(exc)
        reason = getattr(exc, "reason", "error")
        return msg if reason in ("error", "rpc") or reason in msg else f"{msg} ({reason})"
    if isinstance(exc, EOFError):
        return ("input ended (stdin closed) at a prompt: give --password-file or set $AITBC_PASSWORD "
                "(reason: eof)")
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc} (reason: os_error)"
    return str(exc)


def _operator_errors(exc: BaseException) -> list[BaseException] | None:
    """The operator-facing errors in ``exc`` (an AitbcError, EOF at a prompt, an OSError such as a missing
    file or a port in use, or a nested exception group of these, e.g. raised by `run` at startup), or
    None if it holds anything else (a bug: keep the traceback)."""
    if isinstance(exc, AitbcError | EOFError | OSError):
        return [exc]
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for e in exc.exceptions:
            sub = _operator_errors(e)
            if sub is None:
                return None
            out.extend(sub)
        return out
    return None


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["DEV_ACCOUNT", "main", "parse_ait", "format_ait"]
