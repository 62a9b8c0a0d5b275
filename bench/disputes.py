"""Metered market disputes (issue 11): is a dispute work unit (DWU, meant as >= 1 µs of one core) a
conservative price for the real work, and does a block full of disputes validate quickly?

    .venv/bin/python -m bench.disputes [--reps 7] [--block-reps 5] [--json out.json] [--skip-blocks]

Times are the measuring thread's CPU time (``time.thread_time``: what "1 µs of one core" means, and
far steadier than wall time on a shared machine) and wall time (median and worst run); the ``load``
line says how busy the machine was (an Ed25519 verify costs ~40 µs of CPU on a quiet development VM).

1. Calibration: for every job kind and a spread of params up to the kind's bounds, the time of
   ``kind.check_leaf`` (a correct leaf, so the check runs fully; a fresh seed every repetition and the
   counter generator's caches cleared, so nothing is reused) against ``kind.leaf_check_work``.
   Goal: <= 1 µs per DWU in every case (the formula over-estimates the real time). Cases the chain
   does not admit for a challenge window (leaf work > ``max_challenge_work`` or an input too large to
   carry in a challenge) are shown and marked, but are not held to the goal. ``+base`` adds the
   ``BASE_WORK`` every dispute transaction also pays.
2. Worst-case blocks: a real LevelDB chain (``state.chain.ChainState``, default parameters) holding jobs
   in their challenge window, made by real transactions (miner_register, job_submit, bid, receipt). A
   block of challenges is built as the proposer does (``build_block``: ``execute_block(...,
   skip_invalid=True)`` stops at ``max_dispute_work_per_block``; the candidates are also cut at
   ``max_block_bytes``), then re-executed as a validator that has not seen the transactions does:
   ``execute_block`` with signature checks, generator caches cleared before every run; the state root
   of the outcome is timed apart. False challenges (the named leaf is correct: the leaf check runs
   fully, the bond is burned) and upheld ones (a wrong leaf: the job fails, the miner is slashed), per
   kind at its most expensive admitted shapes, the cheapest possible challenges (most transactions per
   budget), and 64 availability responses with the maximum chunks.
   Goal: a block full of disputes validates well inside the propose timeout (<= 300 ms).

About 45 s of CPU (3,568 jobs are set up); the wall time depends on what else the machine runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import state.market as mkt
from gpu.encoding import array_hash, encode_array, result_leaves, result_root
from gpu.kinds import get_kind
from state.chain import ChainState
from state.crypto import SigningKey
from state.genesis import ChainParams, Genesis, GenesisValidator
from state.kinds import counter
from state.kinds.hash_chain import chain as hash_chain
from state.machine import TX_KINDS, BlockEnv, Execution, execute_block
from state.market.disputes import BASE_WORK
from state.market_views import load_job
from state.merkle import merkle_proof
from state.params import AIT, MarketParams
from state.store import Store
from state.types import Commit, Transaction

from .common import machine

CHAIN = "bench-disputes"
GOAL_US_PER_DWU = 1.0
GOAL_BLOCK_MS = 300.0
P = ChainParams()  # the defaults: what every figure below is measured against
MP: MarketParams = P.market


def _seed(*parts: object) -> bytes:
    return hashlib.sha256(repr(("bench/disputes", *parts)).encode()).digest()


def _clear_caches() -> None:
    """Forget generated matrices: a validator meets every job's operands for the first time."""
    counter.u32_matrix.cache_clear()
    counter.f32_matrix.cache_clear()


def load_probe() -> str:
    """How busy the machine is: the load average and one core's Ed25519 verify time now (about 40 µs
    on the quiet development VM, ``bench/node_throughput``)."""
    key = SigningKey.from_seed(_seed("probe"))
    tx = Transaction.create(key, CHAIN, "transfer", 0, 1, {"to": bytes(32), "amount": 1})
    cpu, wall = [], []
    for _ in range(5):
        c0, t0 = time.thread_time(), time.perf_counter()
        for _ in range(100):
            tx.verify_signature()
        cpu.append((time.thread_time() - c0) * 1e4)
        wall.append((time.perf_counter() - t0) * 1e4)
    one, five, _ = os.getloadavg()
    return (f"load average {one:.1f} / {five:.1f} (1 / 5 min) on {os.cpu_count()} cores; Ed25519 tx verify "
            f"{statistics.median(cpu):.0f} µs CPU, {statistics.median(wall):.0f} µs wall")


# ------------------------------------------------------------------------------------------------
# Inputs, leaves, results


def _make_input(kind: str, params: dict, rng: np.random.Generator) -> bytes:
    if kind == "matmul-u32":
        m, n, k = params["m"], params["n"], params["k"]
        a = rng.integers(0, 1 << 32, size=(m, k), dtype=np.uint32)
        b = rng.integers(0, 1 << 32, size=(k, n), dtype=np.uint32)
        return encode_array(a) + encode_array(b)
    if kind == "mlp-f32":
        x = rng.uniform(-1.0, 1.0, size=(params["batch"], params["d_in"])).astype(np.float32)
        return encode_array(x)
    raise ValueError(f"{kind} takes no input")


def _correct_leaf(kind: str, params: dict, inp: bytes | None, index: int) -> bytes:
    """Leaf ``index`` of the correct result: that row alone for the exact kinds, the float32 NumPy result
    (within the tolerance) for mlp-f32."""
    k = get_kind(kind)
    if kind == "hash-chain":
        return hash_chain(params["seed"], index, params["iterations"])
    if kind == "matmul-u32":
        a_row, b = k._row_of_a(params, inp, index)
        return np.matmul(a_row, b).astype("<u4").tobytes()
    return result_leaves(k.execute_numpy(params, inp)[index : index + 1])[0]  # float32 BLAS, within tolerance


def _input_admission(kind: str, params: dict, size: int | None) -> tuple[str, str | None]:
    """(how the input travels, why the chain refuses a challenge window for it or None)."""
    work = get_kind(kind).leaf_check_work(params, size)
    why = None
    if work > MP.max_challenge_work:
        why = f"leaf work {work:,} > max_challenge_work"
    if size is None:
        return "-", why
    if size <= MP.max_inline_input:
        return f"inline {size / 1024:.1f} KiB", why
    if size > MP.max_challenge_input:
        why = why or f"blob {size / 1024:.0f} KiB > max_challenge_input"
    return f"blob {size / 1024:.1f} KiB", why


# ------------------------------------------------------------------------------------------------
# 1. Calibration

# (kind, params without seed, seeded, with an input)
CASES: list[tuple[str, dict, bool, bool]] = [
    ("hash-chain", {"chains": 1, "iterations": 1}, True, False),
    ("hash-chain", {"chains": 1, "iterations": 16}, True, False),
    ("hash-chain", {"chains": 1, "iterations": 256}, True, False),
    ("hash-chain", {"chains": 1, "iterations": 4096}, True, False),
    ("hash-chain", {"chains": 1, "iterations": 32768}, True, False),
    ("hash-chain", {"chains": 2048, "iterations": 32768}, True, False),
    ("matmul-u32", {"m": 1, "n": 1, "k": 1}, True, False),
    ("matmul-u32", {"m": 8, "n": 8, "k": 8}, True, False),
    ("matmul-u32", {"m": 64, "n": 64, "k": 64}, True, False),
    ("matmul-u32", {"m": 256, "n": 256, "k": 256}, True, False),
    ("matmul-u32", {"m": 1, "n": 1, "k": 1024}, True, False),
    ("matmul-u32", {"m": 1, "n": 1024, "k": 1}, True, False),
    ("matmul-u32", {"m": 1, "n": 1024, "k": 1024}, True, False),
    ("matmul-u32", {"m": 256, "n": 1024, "k": 1024}, True, False),
    ("matmul-u32", {"m": 1024, "n": 256, "k": 1024}, True, False),
    ("matmul-u32", {"m": 1, "n": 63, "k": 63}, False, True),  # inline, ~16 KiB
    ("matmul-u32", {"m": 64, "n": 64, "k": 64}, False, True),  # blob, 32 KiB
    ("matmul-u32", {"m": 1, "n": 110, "k": 110}, False, True),  # blob, ~48 KiB
    ("matmul-u32", {"m": 1, "n": 1024, "k": 1024}, False, True),  # blob 4 MiB: not admitted
    ("mlp-f32", {"batch": 1, "d_in": 1, "d_hidden": 1, "d_out": 1}, True, False),
    ("mlp-f32", {"batch": 1, "d_in": 16, "d_hidden": 16, "d_out": 16}, True, False),
    ("mlp-f32", {"batch": 1, "d_in": 64, "d_hidden": 64, "d_out": 64}, True, False),
    ("mlp-f32", {"batch": 1, "d_in": 256, "d_hidden": 256, "d_out": 256}, True, False),
    ("mlp-f32", {"batch": 1, "d_in": 512, "d_hidden": 256, "d_out": 512}, True, False),
    ("mlp-f32", {"batch": 1, "d_in": 1024, "d_hidden": 128, "d_out": 1024}, True, False),
    ("mlp-f32", {"batch": 1, "d_in": 64, "d_hidden": 1024, "d_out": 192}, True, False),
    ("mlp-f32", {"batch": 1, "d_in": 1023, "d_hidden": 256, "d_out": 1}, True, False),
    ("mlp-f32", {"batch": 1, "d_in": 1, "d_hidden": 256, "d_out": 1023}, True, False),
    ("mlp-f32", {"batch": 1, "d_in": 1024, "d_hidden": 255, "d_out": 4}, True, False),
    ("mlp-f32", {"batch": 3, "d_in": 1024, "d_hidden": 128, "d_out": 1024}, True, True),  # inline 12 KiB
    ("mlp-f32", {"batch": 11, "d_in": 1024, "d_hidden": 128, "d_out": 1024}, True, True),  # blob 44 KiB
    ("mlp-f32", {"batch": 256, "d_in": 1024, "d_hidden": 128, "d_out": 1024}, True, True),  # 1 MiB: not admitted
]


def _shape(kind: str, params: dict) -> str:
    if kind == "hash-chain":
        return f"chains={params['chains']} iter={params['iterations']}"
    if kind == "matmul-u32":
        return f"m={params['m']} n={params['n']} k={params['k']}" + (" seed" if "seed" in params else "")
    return f"b={params['batch']} {params['d_in']}x{params['d_hidden']}x{params['d_out']}"


def calibrate(reps: int) -> list[dict]:
    rows = []
    for ci, (kind, base, seeded, with_input) in enumerate(CASES):
        k = get_kind(kind)
        rng = np.random.default_rng(ci)
        inp_size = None
        wall: list[float] = []
        cpu: list[float] = []
        n = reps if k.leaf_check_work({**base, "seed": bytes(32)} if seeded else base, None) > 1_000 else 3 * reps
        for r in range(n + 1):  # the first run warms up (imports, allocator) and is not counted
            params = {**base, "seed": _seed("cal", ci, r)} if seeded else dict(base)
            inp = _make_input(kind, params, rng) if with_input else None
            inp_size = None if inp is None else len(inp)
            leaf = _correct_leaf(kind, params, inp, 0)
            _clear_caches()
            c0, t0 = time.thread_time(), time.perf_counter()
            ok = k.check_leaf(params, inp, 0, leaf)
            dt, dc = time.perf_counter() - t0, time.thread_time() - c0
            if not ok:
                raise RuntimeError(f"{kind} {params}: check_leaf refused a correct leaf")
            if r:
                wall.append(dt)
                cpu.append(dc)
        work = k.leaf_check_work(params, inp_size)
        travel, refused = _input_admission(kind, params, inp_size)
        cpu_med, med, worst = (x * 1e6 for x in (statistics.median(cpu), statistics.median(wall), max(wall)))
        rows.append({
            "kind": kind, "shape": _shape(kind, params), "input": travel, "admitted": refused is None,
            "why_not": refused, "dwu": work, "runs": len(wall), "cpu_median_us": cpu_med, "median_us": med,
            "min_us": min(wall) * 1e6, "max_us": worst, "us_per_dwu": cpu_med / work,
            "wall_us_per_dwu": med / work, "max_us_per_dwu": worst / work,
            "us_per_dwu_with_base": cpu_med / (work + BASE_WORK),
        })
    return rows


def print_calibration(rows: list[dict]) -> None:
    print(f"\n1. leaf-check calibration (goal <= {GOAL_US_PER_DWU:g} µs/DWU of one core; fresh seed every run)")
    print("   µs/DWU = median thread CPU time / leaf_check_work; wall = median wall time / DWU; max = worst "
          "wall time / DWU; +base = CPU / (DWU + BASE_WORK)")
    hdr = (f"{'kind':<11}{'shape':<29}{'input':<17}{'DWU':>7}{'runs':>5}{'cpu µs':>9}{'wall µs':>9}{'max µs':>9}"
           f"{'µs/DWU':>8}{'wall':>6}{'max':>7}{'+base':>6}  note")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        note = "" if r["admitted"] else f"not admitted: {r['why_not']}"
        if r["admitted"] and r["us_per_dwu"] > GOAL_US_PER_DWU:
            note = f"OVER x{r['us_per_dwu'] / GOAL_US_PER_DWU:.1f}" + (
                " (within BASE_WORK)" if r["us_per_dwu_with_base"] <= GOAL_US_PER_DWU else "")
        print(f"{r['kind']:<11}{r['shape']:<29}{r['input']:<17}{r['dwu']:>7,}{r['runs']:>5}{r['cpu_median_us']:>9,.0f}"
              f"{r['median_us']:>9,.0f}{r['max_us']:>9,.0f}{r['us_per_dwu']:>8.2f}{r['wall_us_per_dwu']:>6.2f}"
              f"{r['max_us_per_dwu']:>7.2f}{r['us_per_dwu_with_base']:>6.2f}  {note}")


# ------------------------------------------------------------------------------------------------
# 2. Worst-case blocks on a real chain


@dataclass
class Group:
    """Jobs of one kind and shape; the receipts commit to a correct leaf 0 and (unless ``availability``)
    a wrong leaf ``TAMPERED``."""

    name: str
    kind: str
    params: dict  # without the seed
    seeded: bool = True
    with_input: bool = False
    jobs: int = 0  # 0: as many as fit the budget, plus 2 (to show the builder stop)
    availability: bool = False  # challenged for availability in setup; the block answers them
    ids: list[bytes] = field(default_factory=list)
    inputs: list[bytes | None] = field(default_factory=list)
    leaves: list[list[bytes]] = field(default_factory=list)


TAMPERED = 1
SETUP_CHUNK = 4 * MP.max_open_jobs_per_miner  # jobs per setup block: whole miners
GROUPS = [
    Group("hash-chain, 32,768 iterations", "hash-chain", {"chains": 2, "iterations": 32768}),
    Group("matmul-u32 seed, n=k=1024", "matmul-u32", {"m": 2, "n": 1024, "k": 1024}),
    Group("matmul-u32 blob ~48 KiB", "matmul-u32", {"m": 2, "n": 109, "k": 110}, seeded=False, with_input=True),
    Group("mlp-f32 1024x128x1024", "mlp-f32", {"batch": 2, "d_in": 1024, "d_hidden": 128, "d_out": 1024}),
    Group("mlp-f32 1x256x1023", "mlp-f32", {"batch": 2, "d_in": 1, "d_hidden": 256, "d_out": 1023}),
    Group("smallest: hash-chain 1 iteration", "hash-chain", {"chains": 2, "iterations": 1}),
]
AVAIL_INDICES = [0, 36, 73, 109, 146, 182, 219, 255]  # max_availability_chunks leaves of 4 KiB each
AVAILABILITY = [
    Group("64 availability responses", "matmul-u32", {"m": 256, "n": 1024, "k": 1}, jobs=64, availability=True),
]


def _challenge_work_of(g: Group) -> int:
    k = get_kind(g.kind)
    params = {**g.params, "seed": bytes(32)} if g.seeded else g.params
    size = k.expected_input_size(params) if g.with_input else None
    leaves = k.leaf_count(params)
    proof = max(0, (leaves - 1).bit_length())
    return BASE_WORK + proof + (size or 0) // 1024 + k.leaf_check_work(params, size)


class Bench:
    """A LevelDB chain with the default parameters, driven block by block."""

    def __init__(self, home: Path, groups: list[Group]) -> None:
        total = sum(g.jobs for g in groups)
        self.miners = [SigningKey.from_seed(_seed("miner", i)) for i in range(-(-total // MP.max_open_jobs_per_miner))]
        self.clients = [SigningKey.from_seed(_seed("client", i)) for i in range(4)]
        self.challengers = [SigningKey.from_seed(_seed("challenger", i)) for i in range(8)]
        self.proposer = SigningKey.from_seed(_seed("validator"))
        everyone = self.miners + self.clients + self.challengers
        accounts = tuple(sorted((k.public_key, 10**9 * AIT) for k in everyone))
        genesis = Genesis(CHAIN, 0, "poa", P, accounts, (GenesisValidator(self.proposer.public_key, 1, "v0"),))
        self.store = Store(home / "db")
        self.chain = ChainState(self.store, genesis)
        self.nonces: dict[bytes, int] = {}

    def tx(self, k: SigningKey, type_: str, body: dict) -> Transaction:
        n = self.nonces.get(k.public_key, 0)
        self.nonces[k.public_key] = n + 1
        return Transaction.create(k, CHAIN, type_, n, P.min_fee, body)

    def env(self) -> BlockEnv:
        h = self.chain.head
        return BlockEnv(CHAIN, h.height + 1, h.time + P.block_interval_ms, self.proposer.public_key, P)

    def build(self, txs: list[Transaction]):
        h = self.chain.head
        return self.chain.build_block(txs, proposer=self.proposer.public_key, time_ms=h.time + P.block_interval_ms,
                                      last_commit=None, validators_hash=bytes(32), next_validators_hash=bytes(32),
                                      is_verified=lambda t: True)

    def commit(self, txs: list[Transaction]) -> None:
        for i in range(0, max(1, len(txs)), 4_000):
            pending = self.build(txs[i : i + 4_000])
            bad = [(r.reason, r.message) for r in pending.outcome.results if not r.ok]
            if pending.outcome.skipped or bad:
                raise RuntimeError(f"setup block refused: {pending.outcome.skipped[:2]} {bad[:2]}")
            blk = pending.block
            self.chain.commit(pending, Commit(blk.height, 0, blk.hash, ()))

    def setup(self, groups: list[Group]) -> None:
        caps = mkt.capabilities("cuda", "Bench GPU", 80 << 30, "9.0", {k: 1 for k in ("matmul-u32", "hash-chain", "mlp-f32")})
        self.commit([self.tx(m, mkt.TX_MINER_REGISTER, mkt.miner_register_body(MP.min_miner_bond * 10, caps))
                     for m in self.miners])
        submits: list[tuple[Group, int, Transaction]] = []
        results: dict[bytes, tuple[bytes, bytes, int]] = {}
        n = 0
        for g in groups:
            k = get_kind(g.kind)
            rng = np.random.default_rng(len(g.name))
            for j in range(g.jobs):
                params = {**g.params, "seed": _seed(g.name, j)} if g.seeded else dict(g.params)
                inp = _make_input(g.kind, params, rng) if g.with_input else None
                arr = k.execute_numpy(params, inp)
                leaves = result_leaves(arr)
                if not g.availability:
                    arr = arr.copy()
                    if arr.dtype.kind == "f":  # far outside the float kind's tolerance
                        arr[TAMPERED, 0] = arr[TAMPERED, 0] * 1024 + 7
                    else:
                        arr[TAMPERED, 0] ^= 0x5A
                    leaves[TAMPERED] = result_leaves(arr)[TAMPERED]
                g.inputs.append(inp)
                g.leaves.append(leaves)
                body = mkt.job_submit_body(
                    g.kind, k.version, params, max_price=1_000, max_units=k.work_units(params), bid_window=1,
                    deadline=10, challenge_window=MP.max_challenge_window,
                    blob_input=None if inp is None else (hashlib.sha256(inp).digest(), len(inp)))
                tx = self.tx(self.clients[n % len(self.clients)], mkt.TX_JOB_SUBMIT, body)
                submits.append((g, n, tx))
                results[tx.hash] = (array_hash(arr), result_root(arr), len(encode_array(arr)))
                g.ids.append(tx.hash)
                n += 1
        # Pipelined in chunks (submits of chunk s, bids of s-1, receipts of s-2 in one block): every
        # block's due lists stay short (the market's due list of a height is re-encoded per entry).
        chunks = [submits[i : i + SETUP_CHUNK] for i in range(0, len(submits), SETUP_CHUNK)]
        for step in range(len(chunks) + 2):
            txs = [tx for _, _, tx in chunks[step]] if step < len(chunks) else []
            if 0 <= step - 1 < len(chunks):
                txs += [self.tx(self.miners[i // MP.max_open_jobs_per_miner], mkt.TX_BID, mkt.bid_body(tx.hash, 1_000))
                        for _, i, tx in chunks[step - 1]]
            if 0 <= step - 2 < len(chunks):
                for _, i, tx in chunks[step - 2]:
                    job = load_job(self.chain.get_object, tx.hash)
                    miner = self.miners[i // MP.max_open_jobs_per_miner]
                    if job is None or job.miner != miner.public_key:
                        raise RuntimeError("setup: a job was not awarded")
                    rh, root, size = results[tx.hash]
                    r, sig = mkt.make_receipt(miner, CHAIN, job, units=1, started_at=1, completed_at=2,
                                              result_hash=rh, result_root=root, result_size=size, backend="cuda",
                                              device="Bench GPU")
                    txs.append(self.tx(miner, mkt.TX_RECEIPT, mkt.receipt_body(r, sig)))
            self.commit(txs)
        da = [self.tx(self.challengers[i % len(self.challengers)], mkt.TX_AVAILABILITY_CHALLENGE,
                      mkt.availability_challenge_body(jid, AVAIL_INDICES))
              for g in groups if g.availability for i, jid in enumerate(g.ids)]
        if da:
            self.commit(da)

    def challenge_block(self, g: Group, upheld: bool) -> list[Transaction]:
        """What the proposer packs: challenges of every job of ``g``, up to the work budget and the
        block's byte limit (the nonces are not kept: every measured block is built on the same head)."""
        saved = dict(self.nonces)
        index = TAMPERED if upheld else 0
        cands, size = [], 0
        for j, jid in enumerate(g.ids):
            leaves = g.leaves[j]
            body = mkt.challenge_body(jid, index, leaves[index], merkle_proof(leaves, index),
                                      g.inputs[j] if g.with_input else None)
            tx = self.tx(self.challengers[j % len(self.challengers)], mkt.TX_CHALLENGE, body)
            size += len(tx.raw)
            if size > P.max_block_bytes:
                break
            cands.append(tx)
        self.nonces = saved
        return cands

    def availability_block(self, g: Group) -> list[Transaction]:
        saved = dict(self.nonces)
        txs = []
        for j, jid in enumerate(g.ids):
            job = load_job(self.chain.get_object, jid)
            miner = next(m for m in self.miners if m.public_key == job.miner)
            leaves = g.leaves[j]
            body = mkt.availability_response_body(jid, [(i, leaves[i], merkle_proof(leaves, i)) for i in AVAIL_INDICES])
            txs.append(self.tx(miner, mkt.TX_AVAILABILITY_RESPONSE, body))
        self.nonces = saved
        return txs

    def measure(self, name: str, cands: list[Transaction], expect_event: str, reps: int) -> dict:
        pending = self.build(cands)
        out = pending.outcome
        txs = list(pending.block.txs)
        skipped = {e.reason for _, e in out.skipped}
        if skipped - {"block_work_exceeded", "bad_nonce"}:
            raise RuntimeError(f"{name}: unexpected skips {skipped}")
        env = self.env()
        ex = Execution(self.chain, env)
        dwu = sum(TX_KINDS[t.type].work(ex, t) for t in txs)
        events = sum(1 for e, _ in out.events if e == expect_event)
        if events != len(txs) or not all(r.ok for r in out.results):
            raise RuntimeError(f"{name}: {events} {expect_event} events for {len(txs)} txs")
        exec_s, cpu_s, root_s = [], [], []
        for _ in range(reps):
            _clear_caches()
            c0, t0 = time.thread_time(), time.perf_counter()
            res = execute_block(self.chain, env, txs)  # a validator: signatures checked, no skipping
            t1, c1 = time.perf_counter(), time.thread_time()
            self.chain.tree.compute_update(res.state_changes)
            root_s.append(time.perf_counter() - t1)
            exec_s.append(t1 - t0)
            cpu_s.append(c1 - c0)
        med = statistics.median(exec_s) * 1e3
        cpu = statistics.median(cpu_s) * 1e3
        return {
            "block": name, "txs": len(txs), "candidates": len(cands),
            "stopped_by": "work budget" if "block_work_exceeded" in skipped else "-",
            "dwu": dwu, "bytes": sum(len(t.raw) for t in txs), "runs": reps,
            "cpu_median_ms": cpu, "exec_median_ms": med, "exec_min_ms": min(exec_s) * 1e3, "exec_max_ms": max(exec_s) * 1e3,
            "root_median_ms": statistics.median(root_s) * 1e3,
            "total_max_ms": max(a + b for a, b in zip(exec_s, root_s, strict=True)) * 1e3,
            "us_per_dwu": cpu * 1e3 / dwu if dwu else 0.0,
        }


def blocks(reps: int, log: Callable[[str], None]) -> list[dict]:
    groups = [Group(**{f: getattr(g, f) for f in ("name", "kind", "params", "seeded", "with_input", "jobs",
                                                   "availability")}) for g in GROUPS + AVAILABILITY]
    for g in groups:
        if not g.jobs:
            g.jobs = MP.max_dispute_work_per_block // _challenge_work_of(g) + 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(Path(tmp), groups)
        t0 = time.perf_counter()
        b.setup(groups)
        log(f"setup: {sum(g.jobs for g in groups):,} jobs in their challenge window, {len(b.miners)} miners, "
            f"head {b.chain.head.height} ({time.perf_counter() - t0:.1f} s)")
        for g in groups:
            if g.availability:
                rows.append(b.measure(g.name, b.availability_block(g), "availability_answered", reps))
                continue
            for upheld in (False, True):
                name = f"{g.name}, {'upheld' if upheld else 'false'}"
                cands = b.challenge_block(g, upheld)
                row = b.measure(name, cands, "challenge_upheld" if upheld else "challenge_rejected", reps)
                if len(cands) < g.jobs and row["stopped_by"] == "-":
                    row["stopped_by"] = "block bytes"
                rows.append(row)
                log(f"  {name}: {row['txs']} txs, {row['dwu']:,} DWU, median {row['exec_median_ms']:.0f} ms "
                    f"({time.perf_counter() - t0:.0f} s)")
        b.store.close()
    return rows


def print_blocks(rows: list[dict]) -> None:
    print(f"\n2. worst-case blocks (default params: budget {MP.max_dispute_work_per_block:,} DWU, "
          f"max_challenge_work {MP.max_challenge_work:,}; validator re-execution with signature checks, "
          f"caches cleared)")
    print("   cpu = median thread CPU time of execute_block; exec = its wall time (median, max); +root = the "
          "state root of the outcome (median wall); µs/DWU and µs/tx from cpu")
    hdr = (f"{'block':<44}{'txs':>6}{'DWU':>9}{'KiB':>7}{'stop':>13}{'runs':>5}{'cpu ms':>8}{'exec ms':>9}"
           f"{'max ms':>8}{'+root':>7}{'µs/DWU':>8}{'µs/tx':>8}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['block']:<44}{r['txs']:>6,}{r['dwu']:>9,}{r['bytes'] / 1024:>7,.0f}{r['stopped_by']:>13}"
              f"{r['runs']:>5}{r['cpu_median_ms']:>8,.0f}{r['exec_median_ms']:>9,.0f}{r['exec_max_ms']:>8,.0f}"
              f"{r['root_median_ms']:>7,.0f}{r['us_per_dwu']:>8.2f}{r['cpu_median_ms'] * 1e3 / r['txs']:>8,.0f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7, help="runs per calibration case (3x for small ones)")
    ap.add_argument("--block-reps", type=int, default=5, help="validator re-executions per block")
    ap.add_argument("--skip-blocks", action="store_true")
    ap.add_argument("--json", type=Path, help="also write every figure to this file")
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(f"machine: {machine()}")
    print(f"load: {load_probe()}")
    print(f"chain defaults: block interval {P.block_interval_ms} ms, propose timeout {P.timeout_propose_ms} ms; "
          f"BASE_WORK {BASE_WORK} DWU per dispute tx")
    cal = calibrate(args.reps)
    print_calibration(cal)
    print(f"(calibration {time.perf_counter() - t0:.0f} s)", flush=True)
    blk = [] if args.skip_blocks else blocks(args.block_reps, lambda s: print(s, flush=True))
    if blk:
        print_blocks(blk)
    over = [r for r in cal if r["admitted"] and r["us_per_dwu"] > GOAL_US_PER_DWU]
    slow = [r for r in blk if r["cpu_median_ms"] > GOAL_BLOCK_MS]
    print(f"\ncalibration: {len(over)} admitted case(s) over {GOAL_US_PER_DWU:g} µs/DWU"
          + "".join(f"\n  {r['kind']} {r['shape']} {r['input']}: {r['us_per_dwu']:.2f} µs/DWU "
                    f"(x{r['us_per_dwu'] / GOAL_US_PER_DWU:.1f})" for r in over))
    if blk:
        worst = max(blk, key=lambda r: r["cpu_median_ms"])
        print(f"blocks: worst {worst['cpu_median_ms']:.0f} ms CPU / {worst['exec_median_ms']:.0f} ms wall median "
              f"({worst['block']}), worst wall run {max(r['exec_max_ms'] for r in blk):.0f} ms; goal <= "
              f"{GOAL_BLOCK_MS:g} ms, propose timeout {P.timeout_propose_ms} ms; over the goal (CPU): "
              + (", ".join(f"{r['block']} {r['cpu_median_ms']:.0f} ms" for r in slow) or "none"))
    print(f"load at the end: {load_probe()}")
    print(f"bench time {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "calibration": cal, "blocks": blk}, indent=1))


if __name__ == "__main__":
    main()
