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

from .cli_sealed import add_sealed_options, award, new_spec
from .cli_tx import add_client_options, ait, format_ait, load_signer, print_kv, print_table, progress, submit
from .cli_tx import print_json as _print
from .cli_zk import new_owner

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


def _params(text: str, *, default_seed: bool = True) -> dict:
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
    if default_seed:  # no seed when the input comes from --input: a kind takes one or the other
        out.setdefault("seed", secrets.token_bytes(32))
    return out


def _wait_job(rpc: Any, job_id: str, timeout: float) -> dict:
    """Poll the job until it is settled; each change of state (and payment) is a line on stderr."""
    deadline = time.monotonic() + timeout
    last: tuple | None = None
    while time.monotonic() < deadline:
        job = rpc.call("market_getJob", job_id=job_id)
        now = (job["state"], job.get("payment"))
        if now != last:
            miner = f", miner {job['miner']}" if job.get("miner") else ""
            progress(f"job {job_id}: {job['state']}" + (f" (payment {now[1]})" if now[1] else "") + miner)
            last = now
        if job["state"] in FINAL_STATES and job.get("payment") != "escrowed":
            return job
        time.sleep(0.25)
    raise AitbcError(f"job {job_id} not settled within {timeout:.0f} s (see `aitbc-peer job status {job_id}`)")


def _short(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_job(job: dict) -> None:
    """``job status`` for people: the job as a key/value table (amounts in AIT), then its bids."""
    rec = job.get("receipt") or {}
    verify = job.get("verify") or {}
    inp = job.get("input")
    avail = job.get("availability")
    anon = job.get("anonymous")
    attest = job.get("attest")
    sealed = job.get("sealed")
    unit = rec.get("unit_type")
    if unit is None:
        from state.kinds import JobParamError, get_kind

        try:
            unit = get_kind(job["kind"]).unit_type
        except JobParamError:  # a kind this client does not know
            unit = "unit"
    per_unit = f" per {unit}"
    heights = ("submitted_height", "bid_close_height", "award_height", "deadline_height", "receipt_height",
               "release_height", "settle_height")
    print_kv([
        ("job_id", job["job_id"]),
        ("state", job["state"]),
        ("payment", job.get("payment")),
        ("failure" if job.get("failure") else None, job.get("failure")),
        ("kind", f"{job['kind']} v{job['version']}"),
        ("params", _short(json.dumps(job["params"], separators=(",", ":")))),
        ("input", None if inp is None else f"{inp['type']}, {inp['size']} bytes"),
        ("client", job["client"]),
        ("max_price", f"{ait(job['max_price'])}{per_unit}"),
        ("max_units", job["max_units"]),
        ("escrow", ait(job["escrow"])),
        ("bids", len(job.get("bids") or [])),
        ("miner", job.get("miner")),
        ("price", f"{ait(job['price'])}{per_unit}" if job.get("price") is not None else None),
        ("units", f"{rec['units']} {rec['unit_type']}" if rec else None),
        ("paid", ait(job["paid"])),
        ("refunded", ait(job["refunded"])),
        *((h, job.get(h)) for h in heights),
        ("challenge_window" if verify else None, f"{verify.get('challenge_window')} blocks"),
        ("result_hash" if rec else None, rec.get("result_hash")),
        ("availability" if avail else None,
         avail and f"rows {avail['indices']} asked by {avail['challenger']}, answer by height {avail['deadline']}"),
        ("sealed" if sealed else None,
         sealed and f"{len(sealed['bids'])} sealed bids, winner {sealed['winner'] or 'not decided'}"),
        ("anonymous" if anon else None,
         anon and f"{len(anon['bids'])} of {anon['max_bids']} anonymous bids, winner {anon['winner'] or 'not revealed'}"
         + (f", bid {anon['pending']} pending until height {anon['accept_deadline']}"
            if anon["pending"] is not None and not anon["winner"] else "")),
        ("attestable" if attest else None,
         attest and (f"receipt tree leaf {attest['leaf_index']}" if attest["leaf_index"] is not None
                     else "not in the receipt tree yet")),
    ])
    if job.get("bids"):
        print()
        print_table(["miner", "price_ait", "height"],
                    [[b["miner"], format_ait(int(b["price"])), b["height"]] for b in job["bids"]])
    if anon and anon["bids"]:  # never a bidder: the nullifier stands for it
        print()
        print_table(["bid", "price_ait", "nullifier", "height"],
                    [[i, format_ait(int(b["price"])), b["nullifier"][:18] + "…", b["height"]]
                     for i, b in enumerate(anon["bids"])])


def _anon_spec(rpc: Any, args: argparse.Namespace, parse_ait: Any) -> dict:
    """The ``anonymous`` map of a job_submit body."""
    if args.sealed:
        raise AitbcError("a job is either --sealed or --anonymous, not both")
    fee = parse_ait(args.anon_bid_fee, "--anon-bid-fee") if args.anon_bid_fee else \
        rpc.call("system_info")["params"]["min_fee"]
    return {"max_bids": args.anon_bids, "bid_fee": fee, "accept_window": args.accept_window,
            "min_bond": parse_ait(args.min_bond, "--min-bond") if args.min_bond else 0}


def cmd_job(args: argparse.Namespace) -> int:
    from state import market

    from .cli import _client, _resolve_address, parse_ait

    with _client(args) as rpc:
        c = args.job_cmd
        if c == "submit":
            if args.kind == "llm-generate":
                from .cli_llm import submit_llm

                return submit_llm(rpc, args)
            if args.params is None or args.max_price is None or args.max_units is None:
                raise AitbcError(f"--kind {args.kind} needs --params, --max-price and --max-units")
            key = load_signer(args)
            params = _params(args.params, default_seed=not args.input)
            inline, blob = None, None
            if args.input:
                data = Path(args.input).read_bytes()
                info = rpc.call("system_info")
                if len(data) <= info["params"]["market"]["max_inline_input"]:
                    inline = data
                else:  # stored on the node, signed by --from (a funded account); expires in 50 blocks
                    from .blobs import signed_blob_put_params

                    expires = rpc.call("chain_getHead")["height"] + 50
                    put = rpc.call("blob_put", **signed_blob_put_params(key, info["chain_id"], data, expires))
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
                sealed=new_spec(args, parse_ait) if args.sealed else None,
                attest=new_owner(args) if args.attestable else None,
                anonymous=_anon_spec(rpc, args, parse_ait) if args.anonymous else None,
            )
            st = submit(rpc, key, "job_submit", body, wait=True, timeout=args.timeout)
            job_id = st["hash"]
            if not args.json:
                print(f"job {job_id} submitted in block {st['block_height']}", flush=True)
            if args.wait:
                if args.sealed:  # the award needs this home's sealing key: do it, then follow the job
                    award(rpc, args, job_id, timeout=args.timeout)
                job = _wait_job(rpc, job_id, args.timeout)
                if args.json:
                    _print(job)
                else:
                    print(f"job {job_id}: {job['state']} (payment {job.get('payment')})")
                return 0 if job["state"] == "COMPLETED" else 1
            if args.json:
                _print(rpc.call("market_getJob", job_id=job_id))
            return 0
        if c == "status":
            job = rpc.call("market_getJob", job_id="0x" + _job_id(args.job_id).hex())
            if args.json:
                _print(job)
            else:
                print_job(job)
            return 0
        if c == "result":
            job = rpc.call("market_getJob", job_id="0x" + _job_id(args.job_id).hex())
            if job["kind"] == "llm-generate":
                from .cli_llm import print_llm_result

                return print_llm_result(rpc, job, args)
            if not args.output:
                raise AitbcError("give -o FILE: where to write the result")
            rec = job.get("receipt")
            if not rec:
                raise AitbcError(f"job {args.job_id} has no receipt yet (state {job['state']})")
            try:
                res = rpc.call("blob_get", hash=rec["result_hash"])
            except AitbcError as exc:
                hint = ""
                if job.get("payment") == "escrowed":
                    hint = (f"; while the payment is escrowed, `aitbc-peer job challenge-availability {args.job_id} "
                            "--from NAME` makes the miner publish chunks on chain or be slashed (you are refunded)")
                raise AitbcError(f"the result could not be fetched: {exc}{hint}") from None
            data = bytes.fromhex(res["data"][2:])
            if "0x" + hashlib.sha256(data).hexdigest() != rec["result_hash"]:
                raise AitbcError("the result fetched does not match the receipt's result hash")
            from gpu.encoding import decode_array, result_root

            arr = decode_array(data, max_bytes=len(data))
            if "0x" + result_root(arr).hex() != rec["result_root"]:
                raise AitbcError("the result's Merkle root does not match the receipt (miner fault)")
            Path(args.output).write_bytes(data)
            if args.json:
                _print({"job_id": job["job_id"], "path": args.output, "bytes": len(data),
                        "result_hash": rec["result_hash"], "result_root": rec["result_root"], "verified": True,
                        "dtype": str(arr.dtype), "shape": [int(x) for x in arr.shape]})
                return 0
            print(f"wrote {len(data)} bytes to {args.output} (hash {rec['result_hash']} verified; "
                  f"array {arr.dtype} {list(arr.shape)})")
            return 0
        if c == "award":
            st = award(rpc, args, "0x" + _job_id(args.job_id).hex(), timeout=args.timeout)
            job = rpc.call("market_getJob", job_id="0x" + _job_id(args.job_id).hex())
            if args.json:
                _print(job)
            elif st is not None:
                print(f"job {job['job_id']} awarded to {job['miner']} at {format_ait(int(job['price']))} per unit")
            else:
                print(f"job {job['job_id']}: no bid awarded ({job['state']})")
            return 0 if st is not None else 1
        if c == "challenge-availability":
            return _challenge_availability(rpc, args)
        if c == "chunks":
            return _chunks(rpc, args)
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
                print_table(["job_id", "state", "kind", "client", "payment"],
                            [[j["job_id"], j["state"], j["kind"], j["client"], j.get("payment") or "-"]
                             for j in res["jobs"]])
            return 0
    return 0


def _challenge_availability(rpc: Any, args: argparse.Namespace) -> int:
    """Raise an availability challenge: the miner must publish the named leaves on chain in time."""
    from state import market

    job_id = _job_id(args.job_id)
    job = rpc.call("market_getJob", job_id="0x" + job_id.hex())
    if job.get("payment") != "escrowed" or job["state"] != "COMPLETED":
        raise AitbcError(f"job {args.job_id} is {job['state']} (payment {job.get('payment')}): only a completed "
                         "job whose payment is escrowed (challenge window) can be challenged for availability")
    chunks = rpc.call("market_getAvailableChunks", job_id="0x" + job_id.hex())
    mp = rpc.call("system_info")["params"]["market"]
    if args.indices:
        try:
            indices = sorted({int(x) for x in args.indices.split(",")})
        except ValueError:
            raise AitbcError(f"--indices must be leaf numbers separated by commas, like 0,5 (got {args.indices!r})",
                             reason="bad_indices") from None
    else:  # a random sample the miner cannot predict, within the chain's bounds
        leaf_bytes = max(1, job["receipt"]["result_size"] // max(1, chunks["leaf_count"]))
        n = min(mp["max_availability_chunks"], chunks["leaf_count"], max(1, mp["max_availability_bytes"] // leaf_bytes))
        indices = sorted(secrets.SystemRandom().sample(range(chunks["leaf_count"]), n))
    key = load_signer(args)
    body = market.availability_challenge_body(job_id, indices)
    st = submit(rpc, key, "availability_challenge", body, wait=True, timeout=args.timeout)
    print(f"availability challenge for leaves {indices} in block {st['block_height']}; the miner must answer "
          f"within {mp['availability_response_blocks']} blocks", flush=True)
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        job = rpc.call("market_getJob", job_id="0x" + job_id.hex())
        if job["availability"] is None:
            if job["state"] == "FAILED":
                print(f"job {args.job_id}: FAILED ({job['failure']}), refunded {job['refunded']}")
                return 1
            print(f"job {args.job_id}: the miner published the chunks (`aitbc-peer job chunks {args.job_id}`)")
            return 0
        time.sleep(0.5)
    raise AitbcError(f"availability challenge of job {args.job_id} still open after {args.timeout:.0f} s")


def _chunks(rpc: Any, args: argparse.Namespace) -> int:
    """Print the chunks published on chain, each checked against the receipt's Merkle root here."""
    from state.merkle import verify_merkle_proof

    res = rpc.call("market_getAvailableChunks", job_id="0x" + _job_id(args.job_id).hex())
    root = bytes.fromhex(res["result_root"][2:]) if res["result_root"] else None
    out = []
    for c in res["chunks"]:
        leaf = bytes.fromhex(c["leaf"][2:])
        proof = [bytes.fromhex(h[2:]) for h in c["proof"]]
        if root is None or not verify_merkle_proof(root, leaf, c["index"], res["leaf_count"], proof):
            raise AitbcError(f"chunk {c['index']} does not verify against the receipt's result_root")
        out.append({"index": c["index"], "leaf": c["leaf"], "height": c["height"], "verified": True})
    _print({"job_id": res["job_id"], "open": res["open"], "chunks": out})
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
            addr = args.address or encode_address(load_signer(args, default_miner=True, create=False).public_key)
            decode_address(addr)
            m = rpc.call("market_getMiner", address=addr)
            if args.json:
                _print(m)
            else:
                caps = m.get("capabilities") or {}
                print_kv([
                    ("address", m["address"]),
                    ("status", m["status"]),
                    ("bond", ait(m["bond"])),
                    ("reputation", m["reputation"]),
                    ("backend", caps.get("backend")),
                    ("device", caps.get("device")),
                    ("memory", f"{caps['memory'] / (1 << 30):.1f} GiB" if caps.get("memory") else None),
                    ("registered_height", m.get("registered_height")),
                    ("exit_height" if m.get("exit_height") else None, m.get("exit_height")),
                    ("running_jobs", m.get("running_jobs")),
                    ("open_jobs", m.get("open_jobs")),
                    ("jobs_completed", m.get("jobs_completed")),
                    ("jobs_failed", m.get("jobs_failed")),
                    ("slashed", ait(m.get("slashed"))),
                ])
                prices = m.get("prices") or {}
                if prices:
                    print()
                    print_table(["kind", "price_ait_per_unit"], [[k, format_ait(int(v))] for k, v in sorted(prices.items())])
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
    j.add_argument("--kind", required=True, help="matmul-u32, hash-chain, mlp-f32 or llm-generate")
    j.add_argument("--version", type=int, default=1, help="the kind's spec version")
    j.add_argument("--params", help='JSON, e.g. \'{"m":64,"n":64,"k":64}\' (seed: random; not for llm-generate)')
    j.add_argument("--max-price", help="AIT per unit (llm-generate: per token; default the highest miner price)")
    j.add_argument("--max-units", type=int, help="(llm-generate: default prompt + max tokens)")
    j.add_argument("--input", help="input file (inline if small, else served from this node as a blob)")
    j.add_argument("--bid-window", type=int, default=3, help="blocks")
    j.add_argument("--deadline", type=int, default=60, help="blocks from award to receipt")
    j.add_argument("--challenge-window", type=int, default=0, help="blocks the payment waits for challenges")
    j.add_argument("--verify-rate-bps", type=int, default=0, help="share of verifiers asked to re-run (bps)")
    j.add_argument("--min-memory", type=int)
    j.add_argument("--backend", choices=["pycuda", "numpy"])
    j.add_argument("--from", dest="from_", required=True, help="keystore key paying for the job")
    j.add_argument("--wait", action="store_true", help="wait until the job is settled (progress on stderr)")
    j.add_argument("--json", action="store_true", help="print the job (market_getJob) as JSON")
    add_sealed_options(j)
    j.add_argument("--anonymous", action="store_true",
                   help="anonymous bonded bidders: bids prove a qualified miner without naming it; only the winner "
                   "reveals itself (you escrow the bids' fees)")
    j.add_argument("--anon-bids", type=int, default=8, help="with --anonymous: most anonymous bids (1..16)")
    j.add_argument("--anon-bid-fee", help="with --anonymous: AIT you pay per bid's fee (default: the chain's minimum fee)")
    j.add_argument("--accept-window", type=int, default=10,
                   help="with --anonymous: blocks the winning bidder has to accept before the next bid is tried")
    j.add_argument("--min-bond", help="with --anonymous: AIT of bond a bidder must prove (default: the chain minimum)")
    j.add_argument("--attestable", action="store_true",
                   help="make the paid receipt provable later without naming the job (`zk prove-receipt`)")
    from .cli_llm import add_llm_submit_options

    add_llm_submit_options(j)
    for name, helptext in (("status", "a job's state, bids, receipt (JSON)"), ("cancel", "cancel before award")):
        j = jsub.add_parser(name, help=helptext)
        j.add_argument("job_id")
        if name == "cancel":
            j.add_argument("--from", dest="from_", required=True)
        else:
            j.add_argument("--json", action="store_true", help="the job as JSON (default: a table)")
    j = jsub.add_parser("award", help="sealed-bid job: open the bids with this home's key and award the lowest")
    j.add_argument("job_id")
    j.add_argument("--from", dest="from_", required=True, help="the job's client (keystore key)")
    j.add_argument("--json", action="store_true", help="print the job (market_getJob) as JSON")
    j = jsub.add_parser("result", help="fetch the result blob from the miner and verify it (llm: the text)")
    j.add_argument("job_id")
    j.add_argument("-o", "--output", help="write the result blob here (required except for llm-generate)")
    j.add_argument("--tokens", action="store_true", help="llm-generate: print the token ids, not the text")
    j.add_argument("--json", action="store_true", help="the result's facts (llm: tokens, text, finish reason)")
    j = jsub.add_parser("challenge-availability",
                        help="the result cannot be fetched: make the miner publish chunks on chain or be slashed")
    j.add_argument("job_id")
    j.add_argument("--indices", help="leaf indices, e.g. 0,5 (default: a random sample)")
    j.add_argument("--from", dest="from_", required=True, help="keystore key paying the availability bond")
    j.add_argument("--wait", action="store_true", help="wait until answered or the job fails")
    j = jsub.add_parser("chunks", help="result chunks published on chain, verified against the receipt (JSON)")
    j.add_argument("job_id")
    j.add_argument("--json", action="store_true", help="JSON (the default for this command)")
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
