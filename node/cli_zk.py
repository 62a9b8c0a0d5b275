"""``aitbc-peer zk``: private receipt attestations from the client's side.

``job submit --attestable`` draws an owner secret, keeps it in ``<home>/keys/attest/<commitment>.key``
(mode 0600) and puts ``Poseidon(secret)`` in the job. Once the job is paid, ``zk prove-receipt JOB_ID``
downloads the chain's receipt tree leaves (all of them: the node does not learn which leaf is ours),
builds the Merkle path and proves with snarkjs (an optional tool, node/zk_prover.py) that this home paid
for a job of that kind with at least ``--min-units`` units. ``zk verify FILE`` checks an attestation
natively and asks a node whether its root is one the chain had; ``zk attest FILE`` posts it to the
on-chain rule (``receipt_attest``), which records its nullifier.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from state.errors import AitbcError
from zk import receipt, receipt_vkey
from zk.errors import ProofError
from zk.poseidon_tree import DictStore, PoseidonTree

from .cli_tx import load_signer, print_json, progress, submit

MAX_LEAVES_PAGE = 1024


def _attest_dir(args: argparse.Namespace) -> Path:
    from .cli import _home

    return _home(args).keys_dir / "attest"


def new_owner(args: argparse.Namespace) -> bytes:
    """A fresh owner commitment for ``job_submit.attest``; its secret is saved in the home first."""
    secret = receipt.new_secret()
    owner = receipt.field_bytes(receipt.owner_commitment(secret))
    d = _attest_dir(args)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(d / f"{owner.hex()}.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{secret:064x}\n")
    return owner


def _secret(args: argparse.Namespace, owner_hex: str) -> int:
    path = _attest_dir(args) / f"{owner_hex.removeprefix('0x')}.key"
    try:
        secret = int(path.read_text().strip(), 16)
    except (OSError, ValueError) as exc:
        raise AitbcError(f"no attestation secret for this job in {path.parent} ({exc}): only the home that "
                         "submitted the job can attest it") from None
    if receipt.field_bytes(receipt.owner_commitment(secret)).hex() != owner_hex.removeprefix("0x"):
        raise AitbcError(f"{path} does not hold the secret of the job's owner commitment")
    return secret


def _tree(rpc: Any) -> tuple[PoseidonTree, dict]:
    """The chain's receipt tree, rebuilt locally from every leaf (checked against the node's root)."""
    info = rpc.call("zk_receiptTree")
    t = PoseidonTree(DictStore(), info["depth"])
    start = 0
    while start < info["size"]:
        page = rpc.call("zk_receiptLeaves", start=start, limit=MAX_LEAVES_PAGE)
        if not page["leaves"]:
            raise AitbcError("the node returned no leaves before the tree's end")
        for h in page["leaves"]:
            t.append(int(h, 16))
        start += len(page["leaves"])
    if t.size != info["size"] or f"0x{t.root():064x}" != info["root"]:
        raise AitbcError("the receipt tree rebuilt from the node's leaves does not match its root "
                         "(the tree grew meanwhile? try again)")
    return t, info


def prove_receipt(rpc: Any, args: argparse.Namespace) -> dict:
    from .zk_prover import prove

    job_id = "0x" + args.job_id.removeprefix("0x").lower()
    job = rpc.call("market_getJob", job_id=job_id)
    att = job.get("attest")
    if not att:
        raise AitbcError(f"job {job_id} was not submitted with --attestable")
    if att.get("leaf_index") is None:
        if job.get("payment") == "released":
            raise AitbcError(f"job {job_id} is paid; its receipt is queued for the receipt tree (at most 16 tree "
                             "writes run per block): try again in a few blocks")
        raise AitbcError(f"job {job_id} is not paid yet (state {job['state']}, payment {job.get('payment')}): "
                         "a receipt becomes attestable when its payment is released")
    secret = _secret(args, att["owner"])
    units = job["receipt"]["units"]
    min_units = units if args.min_units is None else args.min_units
    if min_units > units:
        raise AitbcError(f"the job's receipt has {units} units, fewer than --min-units {min_units}")
    chain_id = rpc.call("system_info")["chain_id"]
    t, info = _tree(rpc)
    siblings, bits = t.path(att["leaf_index"])
    scope = args.scope.encode()
    message = args.message.encode() if args.message is not None else b""
    if args.for_address:
        from state.address import decode_address

        message = decode_address(args.for_address)
    st = receipt.Statement(chain_id, t.root(), receipt.nullifier(receipt.scope_field(chain_id, scope), secret),
                           job["kind"], min_units, scope, message)
    progress(f"proving with snarkjs (tree of {t.size} receipts, root 0x{t.root():064x})...")
    proof, public = prove(receipt.CIRCUIT, receipt.witness_inputs(st, secret, units, siblings, bits))
    if public != st.public_inputs():
        raise AitbcError("snarkjs proved other public signals than asked (wrong circuit artifacts?)")
    receipt.verify(receipt_vkey.VKEY, st, proof)
    return receipt.to_json(st, proof)


def verify_file(rpc: Any | None, path: str, *, root_only: bool = False) -> dict:
    """Check an attestation file; with ``rpc``, also that its root is one the chain had."""
    try:
        obj = json.loads(Path(path).read_text() if path != "-" else sys.stdin.read())
    except (OSError, ValueError) as exc:
        raise AitbcError(f"cannot read the attestation {path}: {exc}", reason="bad_file") from None
    st, proof = receipt.from_json(obj)
    out: dict = {"kind": st.kind, "min_units": st.min_units, "chain_id": st.chain_id,
                 "scope": obj["scope"], "message": obj["message"], "nullifier": obj["nullifier"]}
    receipt.verify(receipt_vkey.VKEY, st, proof)
    out["proof"] = "valid"
    if rpc is not None and not root_only:
        chain_id = rpc.call("system_info")["chain_id"]
        if chain_id != st.chain_id:
            raise ProofError(f"the attestation is for chain {st.chain_id!r}, the node runs {chain_id!r}",
                             "wrong_chain")
        r = rpc.call("zk_receiptRoot", root=obj["root"])
        if not r["known"]:
            raise ProofError("the attestation's root is not a root of this chain's receipt tree", "unknown_root")
        out["root_height"] = r["height"]
    out["valid"] = True
    return out


def cmd_zk(args: argparse.Namespace) -> int:
    from .cli import _client

    c = args.zk_cmd
    if c == "verify" and args.offline:
        res = verify_file(None, args.file)
        res["root"] = "not checked (--offline)"
        print_json(res)
        return 0
    with _client(args) as rpc:
        if c == "prove-receipt":
            att = prove_receipt(rpc, args)
            text = json.dumps(att, indent=2) + "\n"
            if args.out:
                Path(args.out).write_text(text)
                progress(f"attestation written to {args.out}")
            else:
                sys.stdout.write(text)
            return 0
        if c == "verify":
            try:
                res = verify_file(rpc, args.file)
            except ProofError as exc:
                print_json({"valid": False, "reason": exc.reason, "message": str(exc)})
                return 1
            print_json(res)
            return 0
        if c == "attest":
            from state.market.attest import TX_RECEIPT_ATTEST, receipt_attest_body

            key = load_signer(args)
            st, proof = receipt.from_json(json.loads(Path(args.file).read_text()))
            if st.message != key.public_key:
                raise AitbcError("this attestation was not made for --from's address: prove it again with "
                                 "--for ADDRESS (the on-chain rule binds the sender)")
            status = submit(rpc, key, TX_RECEIPT_ATTEST, receipt_attest_body(st, proof), wait=True,
                            timeout=args.timeout)
            print_json(status)
            return 0 if status.get("status") == "committed" else 1
    raise AitbcError(f"unknown zk command {c}")


def add_zk_commands(sub: Any, home_arg: Any, rpc_arg: Any) -> None:
    sp = sub.add_parser("zk", help="private receipt attestations (prove, verify, attest on chain)")
    home_arg(sp)
    zsub = sp.add_subparsers(dest="zk_cmd", required=True)
    z = zsub.add_parser("prove-receipt", help="prove you paid for a job of its kind with at least N units")
    z.add_argument("job_id", help="a job you submitted with --attestable, now paid")
    z.add_argument("--min-units", type=int, help="the units to attest (default: the receipt's units)")
    z.add_argument("--scope", default="", help="what the attestation is for (one per receipt per scope)")
    z.add_argument("--message", help="text the verifier asked you to bind (e.g. its challenge)")
    z.add_argument("--for", dest="for_address", help="bind to this address (for `zk attest --from` it)")
    z.add_argument("--out", help="write the attestation here (default: stdout)")
    rpc_arg(z)
    z = zsub.add_parser("verify", help="verify an attestation file (and that its root is the chain's)")
    z.add_argument("file", help="attestation JSON, or - for stdin")
    z.add_argument("--offline", action="store_true", help="check the proof only, not its root")
    rpc_arg(z)
    z = zsub.add_parser("attest", help="post an attestation to the on-chain rule (records its nullifier)")
    z.add_argument("file")
    z.add_argument("--from", dest="from_", required=True, help="keystore key; the attestation names it")
    z.add_argument("--password-file")
    z.add_argument("--timeout", type=float, default=60.0)
    rpc_arg(z)
    for z in zsub.choices.values():
        home_arg(z, leaf=True)
    sp.set_defaults(func=cmd_zk)
