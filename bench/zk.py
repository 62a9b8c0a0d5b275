"""zk/ proofs: prove and verify time and size of each proof type, and sealed-bid validation throughput.

    .venv/bin/python -m bench.zk [--reps 30] [--bids 200] [--json out.json]

Times are ``time.thread_time`` of this thread (one core), median of ``--reps``. "bids/s" validates
``--bids`` distinct sealed bids the way block execution does (``zk.auction.verify_bid``: sealed-opening
form check + range proof) and reports bids per CPU-second, per bit length of the job. "award" is the
client's settlement of an auction with ``n`` bids (n − 1 comparison proofs) and its verification.
Goals (issue 13): ≤ 5 ms per proof verified, a sealed bid ≤ 8 KiB, ≥ 500 sealed bids per second of
validation on one core.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench.common import machine
from zk import auction, dleq, group, range_proof, seal
from zk.pedersen import Opening
from zk.transcript import Context

CTX = Context("aitbc-bench", b"\x01" * 32, b"\x02" * 20)


def _median_ms(fn, reps: int) -> float:
    out = []
    for _ in range(reps):
        t0 = time.thread_time()
        fn()
        out.append((time.thread_time() - t0) * 1e3)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--bids", type=int, default=200)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    rows: list[dict] = []
    print(f"# bench.zk on {machine()}, {time.strftime('%Y-%m-%d %H:%M')}")
    print("| proof | bytes | prove ms | verify ms |")
    print("| --- | ---: | ---: | ---: |")
    for bits in (8, 12, 16, 24, 32):
        o = Opening(2**bits - 1, group.random_scalar())
        c, p = range_proof.prove(CTX, o, bits)
        prove = _median_ms(lambda o=o, bits=bits: range_proof.prove(CTX, o, bits), a.reps)
        verify = _median_ms(lambda c=c, p=p, bits=bits: range_proof.verify(CTX, c, p, bits=bits), a.reps)
        rows.append({"proof": f"range {bits}-bit", "bytes": len(p), "prove_ms": prove, "verify_ms": verify})
    k = group.random_scalar()
    key = group.mul_base(k)
    base = group.mul_base(group.random_scalar())
    share, dp = dleq.prove(CTX, k, base)
    rows.append({
        "proof": "dleq (fault disclosure)", "bytes": len(dp) + 32,
        "prove_ms": _median_ms(lambda: dleq.prove(CTX, k, base), a.reps),
        "verify_ms": _median_ms(lambda: dleq.verify(CTX, key, base, share, dp), a.reps),
    })
    o = Opening(1234, group.random_scalar())
    cm = o.commit()
    sealed = seal.seal(CTX, key, cm, o)
    rows.append({
        "proof": "sealed opening (seal / unseal)", "bytes": len(sealed),
        "prove_ms": _median_ms(lambda: seal.seal(CTX, key, cm, o), a.reps),
        "verify_ms": _median_ms(lambda: seal.unseal(CTX, k, cm, sealed), a.reps),
    })
    for r in rows:
        print(f"| {r['proof']} | {r['bytes']:,} | {r['prove_ms']:.2f} | {r['verify_ms']:.2f} |")

    print("\n| job bits | sealed bid bytes | bids validated | CPU s | bids/s (one core) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    chain, job = "aitbc-bench", b"\x07" * 32
    throughput = []
    for bits in (8, 12, 16):
        bids = [
            auction.make_bid(chain, job, i.to_bytes(20, "big"), key, bits, i % 2**bits)[0] for i in range(a.bids)
        ]
        size = len(bids[0].commitment) + len(bids[0].proof) + len(bids[0].sealed)
        t0 = time.thread_time()
        for b in bids:
            auction.verify_bid(chain, job, bits, b)
        cpu = time.thread_time() - t0
        throughput.append({"bits": bits, "bid_bytes": size, "bids": a.bids, "cpu_s": cpu, "bids_per_s": a.bids / cpu})
        print(f"| {bits} | {size:,} | {a.bids} | {cpu:.2f} | {a.bids / cpu:,.0f} |")

    print("\n| auction | make award ms | verify award ms |")
    print("| --- | ---: | ---: |")
    awards = []
    for n in (3, 10, 30):
        bids = [auction.make_bid(chain, job, i.to_bytes(20, "big"), key, 16, 1000 + 7 * i)[0] for i in range(n)]
        t0 = time.thread_time()
        aw = auction.make_award(chain, job, b"\x09" * 20, k, 16, bids)
        made = (time.thread_time() - t0) * 1e3
        t0 = time.thread_time()
        auction.verify_award(chain, job, b"\x09" * 20, key, 16, bids, aw)
        verified = (time.thread_time() - t0) * 1e3
        awards.append({"bids": n, "make_ms": made, "verify_ms": verified})
        print(f"| {n} bids, 16-bit | {made:.1f} | {verified:.1f} |")
    if a.json:
        a.json.write_text(json.dumps({"machine": machine(), "proofs": rows, "bids": throughput, "awards": awards}, indent=1))


if __name__ == "__main__":
    main()
