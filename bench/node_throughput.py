"""Single dev node throughput: N pre-signed transfers submitted with tx_submitBatch; reports
included-and-committed tx/s and, in the same run, this machine's raw single-core Ed25519 verify rate.

    .venv/bin/python -m bench.node_throughput [--txs 40000] [--senders 400] [--batch 2000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from nacl.bindings import crypto_sign_open

from node.home import init_home
from state.address import encode_address
from state.crypto import KIND_TX, SigningKey, domain_prefix
from state.types import transfer

from .common import RawHttp, machine, running_node

AIT = 1_000_000


def raw_verify_rate(seconds: float = 2.0) -> float:
    k = SigningKey.generate()
    tx = transfer(k, "bench", b"\x01" * 32, 1, 0, 1000)
    msg = domain_prefix(KIND_TX, "bench") + tx.signing_bytes()
    sm = tx.sig + msg
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(1000):
            crypto_sign_open(sm, k.public_key)
        n += 1000
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--txs", type=int, default=40_000)
    ap.add_argument("--senders", type=int, default=400)
    ap.add_argument("--batch", type=int, default=2_000)
    args = ap.parse_args()

    verify_rate = raw_verify_rate()
    senders = [SigningKey.generate() for _ in range(args.senders)]
    per = args.txs // args.senders
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        summary = init_home(home, dev=True, allocations=[(encode_address(k.public_key), 1_000 * AIT) for k in senders])
        chain_id = summary["chain_id"]
        sink = SigningKey.generate().public_key
        t0 = time.perf_counter()
        txs = [transfer(k, chain_id, sink, 1, n, 1000) for n in range(per) for k in senders]
        sign_s = time.perf_counter() - t0
        batches = [
            json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tx_submitBatch",
                        "params": {"txs": ["0x" + t.raw.hex() for t in txs[i:i + args.batch]]}}).encode()
            for i in range(0, len(txs), args.batch)
        ]
        with running_node(home, Path(tmp) / "node.log") as node:
            start_height = node.rpc("chain_getHead")["height"]
            http = RawHttp(node.rpc_port)
            t_submit = time.time()
            rejected = 0
            for body in batches:
                res = json.loads(http.post("/rpc", body))["result"]
                rejected += res["rejected"]
            t_submitted = time.time()
            accepted = len(txs) - rejected
            committed, height, last_time = 0, start_height, None
            deadline = time.monotonic() + 300
            while committed < accepted and time.monotonic() < deadline:
                head = http.call("chain_getHead", {})["result"]["height"]
                while height < head:
                    height += 1
                    b = http.call("chain_getBlock", {"height": height})["result"]
                    if b["tx_count"]:
                        committed += b["tx_count"]
                        last_time = b["time"] / 1000
                time.sleep(0.05)
            http.close()
        elapsed = (last_time or time.time()) - t_submit
        tps = committed / elapsed if elapsed > 0 else 0.0
    print(f"machine: {machine()}")
    print(f"raw Ed25519 verify, 1 core:          {verify_rate:10,.0f} /s")
    print(f"txs signed (client side):            {len(txs):10,d}  in {sign_s:.1f} s")
    print(f"submitted: accepted / rejected:      {accepted:10,d} / {rejected:,d}  in {t_submitted - t_submit:.2f} s")
    print(f"committed:                           {committed:10,d}  in {elapsed:.2f} s (first submit -> last block)")
    print(f"included-and-committed throughput:   {tps:10,.0f} tx/s")
    print(f"ratio to raw verify rate:            {tps / verify_rate:10.2f}")
    print(f"goal: >= 5,000 tx/s and >= 0.25 x raw verify -> {'PASS' if tps >= 5000 and tps >= 0.25 * verify_rate else 'MISS'}")


if __name__ == "__main__":
    main()
