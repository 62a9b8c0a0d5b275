"""zk/ proofs: prove and verify time and size of each proof type, and sealed-bid validation throughput.

    .venv/bin/python -m bench.zk [--reps 30] [--bids 200] [--json out.json] [--skip-sealed]

Times are ``time.thread_time`` of this thread (one core), median of ``--reps``. "bids/s" validates
``--bids`` distinct sealed bids the way block execution does (``zk.auction.verify_bid``: sealed-opening
form check + range proof) and reports bids per CPU-second, per bit length of the job. "award" is the
client's settlement of an auction with ``n`` bids (n − 1 comparison proofs) and its verification.
"poseidon" times the BN254 Poseidon hash and the depth-20 receipt tree (``zk.poseidon_tree``); "groth16"
makes one real receipt proof with snarkjs (``node.zk_prover``; skipped when it is missing) and times its
decoding and verification, then a block of ``receipt_attest`` checks (decode + statement + verify, the
rule's proof work) against the metering (``ATTEST_WORK`` DWU each, ``max_dispute_work_per_block``).
``--skip-sealed`` runs only the Poseidon / Groth16 rows.
Goals (issue 13): ≤ 5 ms per proof verified, a sealed bid ≤ 8 KiB, ≥ 500 sealed bids per second of
validation on one core.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import machine
from zk import auction, dleq, group, range_proof, seal
from zk.pedersen import Opening, random_blinding
from zk.transcript import Context

CTX = Context("aitbc-bench", b"\x01" * 32, b"\x02" * 20)


def _median_ms(fn: Callable[[], object], reps: int) -> float:
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
    ap.add_argument("--skip-sealed", action="store_true", help="only the Poseidon / Groth16 rows")
    a = ap.parse_args()
    print(f"# bench.zk on {machine()}, {time.strftime('%Y-%m-%d %H:%M')}")
    out: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "reps": a.reps}
    out.update(_poseidon(a.reps))
    out.update(_groth16(a.reps))
    out.update(_anon(a.reps))
    if not a.skip_sealed:
        out.update(_sealed(a.reps, a.bids))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


def _median_us_batched(fn: Callable[[], object], reps: int, batch: int = 200) -> float:
    """Median over ``reps`` of the per-call time of ``batch`` calls (µs): single calls are too short to time."""
    out = []
    for _ in range(reps):
        t0 = time.thread_time()
        for _ in range(batch):
            fn()
        out.append((time.thread_time() - t0) * 1e6 / batch)
    return statistics.median(out)


def _poseidon(reps: int, prefill: int = 256) -> dict:
    from zk import poseidon
    from zk.poseidon_tree import DictStore, PoseidonTree

    a, b = _field_elements()
    h1 = _median_us_batched(lambda: poseidon.hash1(a), reps)
    h2 = _median_us_batched(lambda: poseidon.hash2(a, b), reps)
    tree = PoseidonTree(DictStore(), 20)
    for i in range(prefill):
        tree.append(poseidon.hash1(i + 1))
    leaf = poseidon.hash1(10**6)
    append = _median_ms(lambda: tree.append(leaf), reps)
    path = _median_ms(lambda: tree.path(prefill // 2 + 1), reps)
    print("\n| Poseidon (BN254) | time |")
    print("| --- | ---: |")
    print(f"| poseidon.hash1 | {h1:.1f} µs |")
    print(f"| poseidon.hash2 | {h2:.1f} µs |")
    print(f"| PoseidonTree(depth 20, {prefill}+ leaves).append | {append:.2f} ms |")
    print(f"| PoseidonTree(depth 20).path | {path:.3f} ms |")
    return {"poseidon": {"hash1_us": h1, "hash2_us": h2, "tree_depth": 20, "tree_prefill": prefill,
                         "append_ms": append, "path_ms": path}}


def _field_elements() -> tuple[int, int]:
    """Two arbitrary canonical BN254 scalars."""
    from zk import receipt

    return receipt.new_secret(), receipt.new_secret()


def _groth16(reps: int) -> dict:
    """One real receipt proof (snarkjs), then decode / verify times and a block of receipt_attest checks."""
    from node.zk_prover import ProverMissing, prove
    from state.genesis import ChainParams
    from state.market import attest
    from zk import groth16, receipt, receipt_vkey
    from zk.poseidon_tree import DictStore, PoseidonTree

    secret = receipt.new_secret()
    tree = PoseidonTree(DictStore(), receipt.DEPTH)
    for i in range(3):
        tree.append(receipt.leaf("matmul", 5 + i, receipt.owner_commitment(receipt.new_secret())))
    idx = tree.append(receipt.leaf("matmul", 120, receipt.owner_commitment(secret)))
    siblings, bits = tree.path(idx)
    chain_id, scope, sender = "bench-zk", b"bench-scope", b"\x05" * 32  # message = the sender (the rule's)
    st = receipt.Statement(chain_id, tree.root(), receipt.nullifier(receipt.scope_field(chain_id, scope), secret),
                           "matmul", 100, scope, sender)
    t0 = time.perf_counter()
    try:
        proof, public = prove("receipt", receipt.witness_inputs(st, secret, 120, siblings, bits))
    except ProverMissing as exc:
        print(f"\n(Groth16 rows skipped: {exc})")
        return {"groth16": None}
    prove_wall = time.perf_counter() - t0
    if public != st.public_inputs():
        raise RuntimeError("snarkjs public signals differ from the statement's")
    raw = proof.encode()
    body = attest.receipt_attest_body(st, proof)
    attest.check_receipt_attest(body)
    att_json = len(receipt.dumps(st, proof).encode())
    decode = _median_ms(lambda: groth16.Proof.decode(raw), reps)
    verify = _median_ms(lambda: receipt.verify(receipt_vkey.VKEY, st, proof), reps)
    public_ms = _median_ms(lambda: st.public_inputs(), reps)

    def check() -> None:  # receipt_attest's proof work (state reads for root / nullifier left out)
        s = attest.statement_of(chain_id, sender, body)
        receipt.verify(receipt_vkey.VKEY, s, groth16.Proof.decode(body["proof"]))

    per_tx = _median_ms(check, reps)
    budget = ChainParams().market.max_dispute_work_per_block
    fit = budget // attest.ATTEST_WORK
    block_reps = max(1, reps // 5)
    cpu = []
    for _ in range(block_reps):
        t0 = time.thread_time()
        for _ in range(fit):
            check()
        cpu.append(time.thread_time() - t0)
    block_s = statistics.median(cpu)
    per_s = fit / block_s
    print("\n| Groth16 receipt proof (BN254) | value |")
    print("| --- | ---: |")
    print(f"| prove (snarkjs, wall) | {prove_wall:.2f} s |")
    print(f"| proof bytes | {len(raw)} |")
    print(f"| attestation JSON bytes | {att_json} |")
    print(f"| groth16.Proof.decode | {decode:.3f} ms |")
    print(f"| Statement.public_inputs | {public_ms:.3f} ms |")
    print(f"| receipt.verify (public inputs + pairing check) | {verify:.2f} ms |")
    print(f"| receipt_attest check (decode + statement_of + verify) | {per_tx:.2f} ms |")
    print("(prove runs snarkjs in a separate Node.js process: wall time, thread_time would not see it)")
    print("\n| block of receipt_attest | ATTEST_WORK | DWU budget | txs | DWU µs/unit | CPU ms | attest/s (one core) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {fit} × check | {attest.ATTEST_WORK:,} | {budget:,} | {fit} | "
          f"{block_s * 1e6 / (fit * attest.ATTEST_WORK):.2f} | {block_s * 1e3:.0f} | {per_s:,.0f} |")
    return {"groth16": {
        "prove_wall_s": prove_wall, "proof_bytes": len(raw), "attestation_json_bytes": att_json,
        "decode_ms": decode, "public_inputs_ms": public_ms, "verify_ms": verify, "attest_check_ms": per_tx,
    }, "attest_block": {
        "attest_work": attest.ATTEST_WORK, "budget": budget, "txs": fit, "cpu_ms": block_s * 1e3,
        "us_per_dwu": block_s * 1e6 / (fit * attest.ATTEST_WORK), "attest_per_s": per_s,
    }}


def _anon(reps: int) -> dict:
    """One real anonymous bid proof (snarkjs) and the anon_bid body check every node runs."""
    from node.zk_prover import ProverMissing, prove
    from state import codec
    from state.genesis import ChainParams
    from state.market import anon
    from zk import anon_bid
    from zk.poseidon_tree import DictStore, PoseidonTree

    secret, pk, blind, job_id = anon_bid.new_secret(), b"\x07" * 32, anon_bid.new_secret(), b"\x09" * 32
    standing = (10**9, 1 << 30, 0b1111, anon_bid.backend_field("pycuda"))
    tree = PoseidonTree(DictStore(), anon_bid.DEPTH)
    for i in range(3):
        tree.append(anon_bid.leaf(anon_bid.identity(anon_bid.new_secret()), bytes([i]) * 32, *standing))
    idx = tree.append(anon_bid.leaf(anon_bid.identity(secret), pk, *standing))
    siblings, bits = tree.path(idx)
    st = anon_bid.Statement(job_id, 1234, tree.root(), anon_bid.nullifier(job_id, secret), anon_bid.claim(pk, blind),
                            10**8, 1 << 20, 0b10, anon_bid.backend_field("pycuda"))
    t0 = time.perf_counter()
    try:
        proof, public = prove(anon_bid.CIRCUIT, anon_bid.witness_inputs(st, secret, pk, standing, blind,
                                                                         siblings, bits))
    except ProverMissing as exc:
        print(f"\n(anonymous bid rows skipped: {exc})")
        return {"anon_bid": None}
    prove_wall = time.perf_counter() - t0
    if public != st.public_inputs():
        raise RuntimeError("snarkjs public signals differ from the statement's")
    body = anon.anon_bid_body(st, proof)
    def check_uncached() -> None:  # what a node pays the first time it sees the bid
        anon._VERIFIED.clear()
        anon.check_anon_bid(body)

    check = _median_ms(check_uncached, reps)
    budget = ChainParams().market.max_dispute_work_per_block
    fit = budget // anon.ANON_BID_WORK
    print("\n| Groth16 anonymous bid (BN254) | value |")
    print("| --- | ---: |")
    print(f"| prove (snarkjs, wall) | {prove_wall:.2f} s |")
    print(f"| proof bytes / anon_bid body bytes | {len(proof.encode())} / {len(codec.encode(body))} |")
    print(f"| anon_bid body check (shape + decode + verify) | {check:.2f} ms |")
    print(f"| per block at ANON_BID_WORK {anon.ANON_BID_WORK:,} DWU | {fit} bids, {fit * check:.0f} ms, "
          f"{1e3 / check:,.0f} bids/s per core |")
    return {"anon_bid": {"prove_wall_s": prove_wall, "proof_bytes": len(proof.encode()), "check_ms": check,
                         "per_block": fit, "bids_per_s": 1e3 / check}}


def _sealed(reps: int, n_bids: int) -> dict:
    """The sealed-bid proofs (BN254 G1 range proofs; ristretto255 DLEQ and sealing), sealed-bid
    validation, awards and blocks of sealed bids."""
    rows: list[dict] = []
    print("\n| proof | bytes | prove ms | verify ms |")
    print("| --- | ---: | ---: | ---: |")
    for bits in (8, 12, 16, 24, 32):
        o = Opening(2**bits - 1, random_blinding())
        c, p = range_proof.prove(CTX, o, bits)
        prove = _median_ms(lambda o=o, bits=bits: range_proof.prove(CTX, o, bits), reps)
        verify = _median_ms(lambda c=c, p=p, bits=bits: range_proof.verify(CTX, c, p, bits=bits), reps)
        rows.append({"proof": f"range {bits}-bit", "bytes": len(p), "prove_ms": prove, "verify_ms": verify})
    k = group.random_scalar()
    key = group.mul_base(k)
    base = group.mul_base(group.random_scalar())
    share, dp = dleq.prove(CTX, k, base)
    rows.append({
        "proof": "dleq (fault disclosure)", "bytes": len(dp) + 32,
        "prove_ms": _median_ms(lambda: dleq.prove(CTX, k, base), reps),
        "verify_ms": _median_ms(lambda: dleq.verify(CTX, key, base, share, dp), reps),
    })
    o = Opening(1234, random_blinding())
    cm = o.commit()
    sealed = seal.seal(CTX, key, cm, o)
    rows.append({
        "proof": "sealed opening (seal / unseal)", "bytes": len(sealed),
        "prove_ms": _median_ms(lambda: seal.seal(CTX, key, cm, o), reps),
        "verify_ms": _median_ms(lambda: seal.unseal(CTX, k, cm, sealed), reps),
    })
    for r in rows:
        print(f"| {r['proof']} | {r['bytes']:,} | {r['prove_ms']:.2f} | {r['verify_ms']:.2f} |")

    print("\n| job bits | sealed bid bytes | bids validated | CPU s | bids/s (one core) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    chain, job = "aitbc-bench", b"\x07" * 32
    throughput = []
    for bits in (8, 12, 16):
        bids = [
            auction.make_bid(chain, job, i.to_bytes(20, "big"), key, bits, i % 2**bits)[0] for i in range(n_bids)
        ]
        size = len(bids[0].commitment) + len(bids[0].proof) + len(bids[0].sealed)
        t0 = time.thread_time()
        for b in bids:
            auction.verify_bid(chain, job, bits, b)
        cpu = time.thread_time() - t0
        throughput.append({"bits": bits, "bid_bytes": size, "bids": n_bids, "cpu_s": cpu,
                           "bids_per_s": n_bids / cpu})
        print(f"| {bits} | {size:,} | {n_bids} | {cpu:.2f} | {n_bids / cpu:,.0f} |")

    print("\n| auction | make award ms | verify award ms |")
    print("| --- | ---: | ---: |")
    awards = []
    from state.market import sealed

    for n in (3, 16, sealed.MAX_SEALED_BIDS):
        bids = [auction.make_bid(chain, job, i.to_bytes(20, "big"), key, 16, 1000 + 7 * i)[0] for i in range(n)]
        t0 = time.thread_time()
        aw = auction.make_award(chain, job, b"\x09" * 20, k, 16, bids)
        made = (time.thread_time() - t0) * 1e3
        t0 = time.thread_time()
        auction.verify_award(chain, job, b"\x09" * 20, key, 16, bids, aw)
        verified = (time.thread_time() - t0) * 1e3
        awards.append({"bids": n, "make_ms": made, "verify_ms": verified})
        print(f"| {n} bids, 16-bit | {made:.1f} | {verified:.1f} |")
    print("\n| block of sealed bids | txs | DWU | execute_block CPU ms | bids/s (one core) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    blocks = []
    from state.genesis import ChainParams

    budget = ChainParams().market.max_dispute_work_per_block
    for bits in (16, 8):  # as many full jobs (MAX_SEALED_BIDS bids) as fit in max_dispute_work_per_block
        jobs = budget // (sealed.MAX_SEALED_BIDS * (sealed.BID_BASE_WORK + sealed.RANGE_WORK_PER_BIT * bits))
        with tempfile.TemporaryDirectory() as tmp:
            blocks.append(_block_of_bids(Path(tmp), bits, jobs, reps // 3 or 1))
        b = blocks[-1]
        print(f"| {bits}-bit, {jobs} jobs × {sealed.MAX_SEALED_BIDS} miners | {b['txs']} | {b['dwu']:,} | {b['cpu_ms']:.1f} | "
              f"{b['bids_per_s']:,.0f} |")
    return {"proofs": rows, "bids": throughput, "awards": awards, "blocks": blocks}


def _block_of_bids(home: Path, bits: int, jobs: int, reps: int) -> dict:
    """A LevelDB chain with the default parameters: ``jobs`` sealed jobs, 16 registered miners, then one
    block holding every miner's sealed bid on every job, executed as a validator does (signatures checked)."""
    import state.market as mkt
    from state.chain import ChainState
    from state.crypto import SigningKey
    from state.genesis import ChainParams, Genesis, GenesisValidator
    from state.machine import TX_KINDS, BlockEnv, Execution, execute_block
    from state.market import sealed
    from state.params import AIT
    from state.store import Store
    from state.types import Commit, Transaction

    chain_id, p = "bench-zk", ChainParams()
    seed = lambda *parts: hashlib.sha256(repr(parts).encode()).digest()  # noqa: E731
    miners = [SigningKey.from_seed(seed("miner", i)) for i in range(sealed.MAX_SEALED_BIDS)]
    client, proposer = SigningKey.from_seed(seed("client")), SigningKey.from_seed(seed("validator"))
    accounts = tuple(sorted((k.public_key, 10**6 * AIT) for k in [*miners, client]))
    store = Store(home / "db")
    chain = ChainState(store, Genesis(chain_id, 0, "poa", p, accounts, (GenesisValidator(proposer.public_key, 1, "v"),)))
    nonces: dict[bytes, int] = {}

    def tx(k: SigningKey, type_: str, body: dict) -> Transaction:
        n = nonces.get(k.public_key, 0)
        nonces[k.public_key] = n + 1
        return Transaction.create(k, chain_id, type_, n, p.min_fee, body)

    def env() -> BlockEnv:
        h = chain.head
        return BlockEnv(chain_id, h.height + 1, h.time + p.block_interval_ms, proposer.public_key, p)

    def commit(txs: list[Transaction]) -> None:
        h = chain.head
        pend = chain.build_block(txs, proposer=proposer.public_key, time_ms=h.time + p.block_interval_ms,
                                 last_commit=None, validators_hash=bytes(32), next_validators_hash=bytes(32),
                                 is_verified=lambda t: True)
        bad = [(r.reason, r.message) for r in pend.outcome.results if not r.ok]
        if pend.outcome.skipped or bad:
            raise RuntimeError(f"setup block refused: {pend.outcome.skipped[:2]} {bad[:2]}")
        chain.commit(pend, Commit(pend.block.height, 0, pend.block.hash, ()))

    try:
        caps = mkt.capabilities("cuda", "Bench GPU", 80 << 30, "9.0", {"hash-chain": 1})
        commit([tx(m, mkt.TX_MINER_REGISTER, mkt.miner_register_body(p.market.min_miner_bond, caps)) for m in miners])
        key = group.mul_base(group.random_scalar())
        spec = {"bits": bits, "key": key, "deposit": AIT, "settle_window": 10}
        params = {"chains": 1, "iterations": 1, "seed": bytes(32)}
        submits = [tx(client, mkt.TX_JOB_SUBMIT, mkt.job_submit_body(
            "hash-chain", 1, {**params, "seed": bytes([j]) * 32}, max_price=10, max_units=1, bid_window=50,
            deadline=10, sealed=spec)) for j in range(jobs)]
        commit(submits)
        txs = []
        for s in submits:
            for m in miners:
                bid, _ = auction.make_bid(chain_id, s.hash, m.public_key, key, bits, 3)
                txs.append(tx(m, sealed.TX_SEALED_BID, sealed.sealed_bid_body(s.hash, bid)))
        e = env()
        dwu = sum(TX_KINDS[t.type].work(Execution(chain, e), t) for t in txs)
        cpu = []
        for _ in range(reps):
            t0 = time.thread_time()
            out = execute_block(chain, e, txs)
            cpu.append(time.thread_time() - t0)
            if not all(r.ok for r in out.results):
                raise RuntimeError([r.reason for r in out.results if not r.ok][:3])
        med = statistics.median(cpu)
        return {"bits": bits, "txs": len(txs), "dwu": dwu, "budget": p.market.max_dispute_work_per_block,
                "cpu_ms": med * 1e3, "bids_per_s": len(txs) / med}
    finally:
        store.close()


if __name__ == "__main__":
    main()
