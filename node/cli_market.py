"""``aitbc-peer job …``, ``miner …`` and ``gpu probe``: the compute market from the command line.

Every command talks to a node's JSON-RPC; transactions are signed locally (``--from`` keystore key, or
the home's miner key for ``miner`` commands).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import time
from pathlib import Path
from typing import Any

from state.address import decode_address, encode_address
from state.errors import AitbcError

from .cli_tx import add_client_options, load_signer, submit
from .cli_tx import print_json as _print

FINAL_STATES = {"COMPLETED", "FAILED", "CANCELED", "EXPIRED"}


def _job_id(text: str) -> bytes:
    t = text.removeprefix("0x")
    try:
        raw = bytes.fromhex(t)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise AitbcError(f"job id must be 32 bytes of hex (0x…), got {text!r}")
    return raw


def _params(text: str) -> dict:
    """JSON object; strings of the form 0x… become bytes; a missing "seed" gets a random one."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AitbcError(f"--params must be a JSON object: {exc}") from None
    if not isinstance(obj, dict):
        raise AitbcError("--params must be a JSON object")

    def conv(v: Any) -> Any:
        if isinstance(v, str) and v.startswith("0x"):
            try:
                return bytes.fromhex(v[2:])
            except ValueError:
                raise AitbcError(f"--params: {v!r} is not valid hex") from None
        if isinstance(v, float):
            raise AitbcError("--params: numbers must be integers")
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    out = {k: conv(v) for k, v in obj.items()}
    out.setdefault("seed", secrets.token_bytes(32))
    return out


def _wait_job(rpc: Any, job_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = rpc.call("market_getJob", job_id=job_id)
        if job["state"] in FINAL_STATES and job.get("payment") != "escrowed":
            return job
        time.sleep(0.5)
    raise AitbcError(f"job {job_id} not settled within {timeout:.0f} s (see `aitbc-peer job status {job_id}`)")


def cmd_job(args: argparse.Namespace) -> int:
    from state import market

    from .cli import _client, _resolve_address, parse_ait

    with _client(args) as rpc:
        c = args.job_cmd
        if c == "submit":
            key = load_signer(args)
            params = _params(args.params)
            inline, blob = None, None
            if args.input:
                data = Path(args.input).read_bytes()
                info = rpc.call("system_info")
                if len(data) <= info["params"]["market"]["max_inline_input"]:
                    inline = data
                else:
                    put = rpc.call("blob_put", data="0x" + data.hex())
                    blob = (bytes.fromhex(put["hash"][2:]), len(data))
            verify = args.challenge_window or args.verify_rate_bps
            body = market.job_submit_body(
                args.kind,
                args.version,
                params,
                max_price=parse_ait(args.max_price, "--max-price"),
                max_units=args.max_units,
                bid_window=args.bid_window,
                deadline=args.deadline,
                inline_input=inline,
                blob_input=blob,
                verify_rate_bps=args.verify_rate_bps if verify else None,
                challenge_window=args.challenge_window if verify else None,
                min_memory=args.min_memory,
                backend=args.backend,
            )
            st = submit(rpc, key, "job_submit", body, wait=True, timeout=args.timeout)
            job_id = st["hash"]
            print(f"job {job_id} submitted in block {st['block_height']}", flush=True)
            if args.wait:
                job = _wait_job(rpc, job_id, args.timeout)
                print(f"job {job_id}: {job['state']} (payment {job.get('payment')})")
                return 0 if job["state"] == "COMPLETED" else 1
            return 0
        if c == "status":
            _print(rpc.call("market_getJob", job_id="0x" + _job_id(args.job_id).hex()))
            return 0
        if c == "result":
            job = rpc.call("market_getJob", job_id="0x" + _job_id(args.job_id).hex())
            rec = job.get("receipt")
            if not rec:
                raise AitbcError(f"job {args.job_id} has no receipt yet (state {job['state']})")
            res = rpc.call("blob_get", hash=rec["result_hash"])
            data = bytes.fromhex(res["data"][2:])
            if "0x" + hashlib.sha256(data).hexdigest() != rec["result_hash"]:
                raise AitbcError("the result fetched does not match the receipt's result hash")
            from gpu.encoding import decode_array, result_root

            arr = decode_array(data, max_bytes=len(data))
            if "0x" + result_root(arr).hex() != rec["result_root"]:
                raise AitbcError("the result's Merkle root does not match the receipt (miner fault)")
            Path(args.output).write_bytes(data)
            print(f"wrote {len(data)} bytes to {args.output} (hash {rec['result_hash']} verified; "
                  f"array {arr.dtype} {list(arr.shape)})")
            return 0
        if c == "cancel":
            key = load_signer(args)
            submit(rpc, key, "job_cancel", {"job_id": _job_id(args.job_id)}, timeout=args.timeout)
            print(f"job {args.job_id} canceled")
            return 0
        if c == "list":
            filt: dict[str, Any] = {}
            if args.mine:
                filt["client"] = encode_address(load_signer(args).public_key)
            elif args.client:
                filt["client"] = _resolve_address(args, args.client)
            if args.state:
                filt["state"] = args.state
            if args.miner:
                filt["miner"] = args.miner
            res = rpc.call("market_listJobs", limit=args.limit, **filt)
            if args.json:
                _print(res)
            else:
                for j in res["jobs"]:
                    print(f"{j['job_id']}  {j['state']:<9} {j['kind']:<11} client {j['client']}"
                          f"  {j.get('payment', '')}")
            return 0
    return 0


def parse_prices(items: list[str], parse_amount: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        kind, sep, price = item.partition("=")
        if not sep:
            raise AitbcError(f"--price expects KIND=AIT_PER_UNIT, got {item!r}")
        out[kind.strip()] = parse_amount(price, f"price of {kind}")
    return out


def cmd_miner(args: argparse.Namespace) -> int:
    from state import market

    from .cli import _client, format_ait, parse_ait
    from .miner import probe_capabilities

    with _client(args) as rpc:
        if args.miner_cmd == "register":
            key = load_signer(args, default_miner=True)
            prices = parse_prices(args.price or [], parse_ait)
            if not prices:
                from gpu.kinds import KINDS

                prices = {k: 1000 for k in KINDS}
            body = market.miner_register_body(bond=parse_ait(args.bond, "--bond"), capabilities=probe_capabilities(0.2),
                                              prices=prices)
            st = submit(rpc, key, "miner_register", body, timeout=args.timeout)
            print(f"miner {encode_address(key.public_key)} registered in block {st['block_height']}")
            return 0
        if args.miner_cmd == "status":
            addr = args.address or encode_address(load_signer(args, default_miner=True).public_key)
            decode_address(addr)
            m = rpc.call("market_getMiner", address=addr)
            if args.json:
                _print(m)
            else:
                print(f"{m['address']}  {m['status']}  bond {format_ait(int(m['bond']))} AIT  "
                      f"reputation {m['reputation']}")
            return 0
        if args.miner_cmd == "exit":
            key = load_signer(args, default_miner=True)
            st = submit(rpc, key, "miner_exit", {}, timeout=args.timeout)
            print(f"miner exit recorded in block {st['block_height']}; the bond returns after the unbonding delay")
            return 0
    return 0


def cmd_gpu(args: argparse.Namespace) -> int:
    from gpu.probe import format_probe, probe

    p = probe(duration_s=args.duration)
    if args.json:
        _print(p)
    else:
        print(format_probe(p))
    return 0


def add_market_commands(sub: Any, home_arg: Any, rpc_arg: Any) -> None:
    sp = sub.add_parser("job", help="submit and follow compute jobs")
    home_arg(sp)
    jsub = sp.add_subparsers(dest="job_cmd", required=True)
    j = jsub.add_parser("submit", help="lock max-price × max-units in escrow and submit a job")
    j.add_argument("--kind", required=True, help="matmul-u32, hash-chain or mlp-f32")
    j.add_argument("--version", type=int, default=1, help="the kind's spec version")
    j.add_argument("--params", required=True, help='JSON, e.g. \'{"m":64,"n":64,"k":64}\' (seed: random)')
    j.add_argument("--max-price", required=True, help="AIT per unit")
    j.add_argument("--max-units", type=int, required=True)
    j.add_argument("--input", help="input file (inline if small, else served from this node as a blob)")
    j.add_argument("--bid-window", type=int, default=3, help="blocks")
    j.add_argument("--deadline", type=int, default=60, help="blocks from award to receipt")
    j.add_argument("--challenge-window", type=int, default=0, help="blocks the payment waits for challenges")
    j.add_argument("--verify-rate-bps", type=int, default=0, help="share of verifiers asked to re-run (bps)")
    j.add_argument("--min-memory", type=int)
    j.add_argument("--backend", choices=["pycuda", "numpy"])
    j.add_argument("--from", dest="from_", required=True, help="keystore key paying for the job")
    j.add_argument("--wait", action="store_true", help="wait until the job is settled")
    for name, helptext in (("status", "a job's state, bids, receipt"), ("cancel", "cancel before award")):
        j = jsub.add_parser(name, help=helptext)
        j.add_argument("job_id")
        if name == "cancel":
            j.add_argument("--from", dest="from_", required=True)
    j = jsub.add_parser("result", help="fetch the result blob from the miner and verify it")
    j.add_argument("job_id")
    j.add_argument("-o", "--output", required=True)
    j = jsub.add_parser("list", help="jobs in submission order")
    j.add_argument("--mine", action="store_true", help="jobs of --from")
    j.add_argument("--from", dest="from_")
    j.add_argument("--client")
    j.add_argument("--miner")
    j.add_argument("--state", choices=["QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELED", "EXPIRED"])
    j.add_argument("--limit", type=int, default=50)
    j.add_argument("--json", action="store_true")
    add_client_options(jsub, home_arg, rpc_arg, from_help=None, timeout=120.0)
    sp.set_defaults(func=cmd_job)

    sp = sub.add_parser("miner", help="register, inspect or retire this node's miner account")
    home_arg(sp)
    msub = sp.add_subparsers(dest="miner_cmd", required=True)
    m = msub.add_parser("register", help="bond and register (capabilities from the local GPU probe)")
    m.add_argument("--bond", default="100", help="AIT to lock")
    m.add_argument("--price", action="append", metavar="KIND=AIT", help="unit price per job kind")
    m = msub.add_parser("status", help="bond, reputation, open jobs")
    m.add_argument("address", nargs="?")
    m.add_argument("--json", action="store_true")
    msub.add_parser("exit", help="stop bidding; the bond returns after the unbonding delay")
    add_client_options(msub, home_arg, rpc_arg, from_help="keystore key (default: the home's miner key)")
    sp.set_defaults(func=cmd_miner)

    sp = sub.add_parser("gpu", help="GPU backend")
    gsub = sp.add_subparsers(dest="gpu_cmd", required=True)
    g = gsub.add_parser("probe", help="backend, device, memory and measured throughput per job kind")
    g.add_argument("--duration", type=float, default=0.5, help="seconds of measurement per kind")
    g.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_gpu)
