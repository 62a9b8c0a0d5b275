"""Sealed-bid jobs from the client's side: the sealing key kept in the home, and the award.

``job submit --sealed`` draws a ristretto255 sealing key, keeps its secret in
``<home>/keys/sealed/<public key hex>.key`` (mode 0600) and puts the public key in the job. After the bid
window, ``job award JOB_ID`` (or ``job submit --sealed --wait``, which does it itself) opens every sealed
bid with that secret, picks the lowest price, and posts a ``sealed_award`` with the proofs every node
checks (state/market/sealed.py). The losing prices never leave this process.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from state.address import decode_address
from state.errors import AitbcError
from zk import group

from .cli_tx import load_signer, progress, submit


def _sealed_dir(args: argparse.Namespace) -> Path:
    from .cli import _home

    return _home(args).keys_dir / "sealed"


def new_spec(args: argparse.Namespace, parse_ait: Any) -> dict:
    """The ``sealed`` map of a job_submit body, with the sealing secret saved in the home first."""
    secret = group.random_scalar()
    key = group.mul_base(secret)
    d = _sealed_dir(args)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = d / f"{key.hex()}.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
    spec = {
        "bits": args.sealed_bits,
        "key": key,
        "deposit": parse_ait(args.sealed_deposit, "--sealed-deposit"),
        "settle_window": args.settle_window,
    }
    if args.second_price:
        spec["second_price"] = True
    return spec


def _secret(args: argparse.Namespace, key_hex: str) -> bytes:
    path = _sealed_dir(args) / f"{key_hex.removeprefix('0x')}.key"
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise AitbcError(f"no sealing key for this job in {path.parent} ({exc}): only the home that submitted "
                         "the job can award it") from None
    if group.mul_base(group.scalar(secret)).hex() != key_hex.removeprefix("0x"):
        raise AitbcError(f"{path} does not hold the secret of the job's sealing key")
    return secret


def award(rpc: Any, args: argparse.Namespace, job_id: str, *, timeout: float) -> dict | None:
    """Wait for the bid window to close, open the bids, and post the award. Returns the transaction's
    status, or None when no bid can be awarded (the job then expires at the end of its award window)."""
    from state.market import sealed
    from zk import auction
    from zk.errors import ProofError

    key = load_signer(args)
    job = rpc.call("market_getJob", job_id=job_id)
    sa = job.get("sealed")
    if not sa:
        raise AitbcError(f"job {job_id} is not a sealed-bid job")
    secret = _secret(args, sa["key"])
    deadline = time.monotonic() + timeout
    while rpc.call("chain_getHead")["height"] <= job["bid_close_height"]:
        if time.monotonic() > deadline:
            raise AitbcError(f"the bid window of job {job_id} did not close within {timeout:.0f} s")
        time.sleep(0.25)
    job = rpc.call("market_getJob", job_id=job_id)
    sa = job["sealed"]
    if job["state"] != "QUEUED":
        progress(f"job {job_id}: {job['state']} (nothing to award)")
        return None
    chain_id = rpc.call("system_info")["chain_id"]
    jid = bytes.fromhex(job_id.removeprefix("0x"))
    bids, exclude = [], set()
    for i, b in enumerate(sa["bids"]):
        bids.append(auction.SealedBid(decode_address(b["miner"]), bytes.fromhex(b["commitment"][2:]), b"",
                                      bytes.fromhex(b["sealed"][2:])))
        try:
            m = rpc.call("market_getMiner", address=b["miner"])
        except AitbcError:
            m = None
        if m is None or m.get("status") != "active":  # the chain checks "cannot win" itself
            exclude.add(i)
    try:
        aw = auction.make_award(chain_id, jid, key.public_key, secret, sa["bits"], bids, frozenset(exclude),
                                second_price=bool(sa.get("second_price")))
    except ProofError as exc:
        progress(f"job {job_id}: no sealed bid can be awarded ({exc}); it expires after its award window")
        return None
    faults = sum(isinstance(e, auction.Fault) for e in aw.entries)
    progress(f"job {job_id}: awarding bid {aw.winner} of {len(bids)}"
             + (f" ({faults} sealed opening(s) proven faulty)" if faults else ""))
    return submit(rpc, key, sealed.TX_SEALED_AWARD, sealed.sealed_award_body(jid, aw), timeout=timeout)


def add_sealed_options(j: argparse.ArgumentParser) -> None:
    """``job submit`` options of sealed-bid jobs."""
    j.add_argument("--sealed", action="store_true",
                   help="sealed bids: only you read the prices; only the winning one becomes public")
    j.add_argument("--sealed-bits", type=int, default=16,
                   help="price resolution: bids are ticks of max-price / (2^bits - 1) (4..24)")
    j.add_argument("--sealed-deposit", default="1", help="AIT each sealed bidder locks until the award")
    j.add_argument("--settle-window", type=int, default=20, help="blocks you have to award after bidding closes")
    j.add_argument("--second-price", action="store_true",
                   help="with --sealed: the lowest bid wins at the runner-up's price (Vickrey; max-price if alone)")
