"""Probe: transaction pool costs (state.mempool), in memory, no node.

For three pool shapes of ``--txs`` signed transfers (one tx per sender; 10 per sender; 1000 per sender)
it times: ``add(verified=True)`` of the whole pool (arrival interleaved across senders, random fees;
once with the cyclic GC off, once on),
``reap(--reap, 64 MiB)`` on the full pool, and ``update`` with that reaped block committed (the view is
advanced outside the timing). On the one-tx-per-sender shape it also times adds to a full pool that
each evict one tx, adds refused with ``mempool_full``, and ``add`` with signature verification. With
txs behind a nonce gap (queued): adds up to the queued budget, adds refused with ``queued_full``,
executable adds to a full pool that each evict a queued tx, and ``expire`` of the whole queued budget.
Prints wall and CPU (process) time: CPU time is the robust figure on a busy machine.

    .venv/bin/python -m bench.mempool_probe [--txs 50000] [--reap 10000] [--seed 1]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable

from state.crypto import SigningKey
from state.mempool import Mempool, MempoolConfig, MempoolError, default_cost
from state.types import Account, Transaction, transfer

CHAIN = "aitbc-bench"
SINK = b"\xee" * 32


class DictView:
    """Committed accounts in a dict; ``commit`` executes transfers the way the chain would."""

    def __init__(self) -> None:
        self.accounts: dict[bytes, Account] = {}

    def get_account(self, pubkey: bytes) -> Account:
        a = self.accounts.get(pubkey)
        return Account(a.balance, a.nonce) if a is not None else Account(0, 0)

    def commit(self, txs: list[Transaction]) -> None:
        for t in txs:
            a = self.accounts[t.sender]
            assert a.nonce == t.nonce and a.balance >= default_cost(t)
            a.nonce += 1
            a.balance -= default_cost(t)


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall s, cpu s, result) of one call."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def make_txs(n_senders: int, per_sender: int, rnd: random.Random, seed_base: int) -> tuple[list, DictView]:
    keys = [SigningKey.from_seed((seed_base + i).to_bytes(32, "big")) for i in range(n_senders)]
    view = DictView()
    for k in keys:
        view.accounts[k.public_key] = Account(10**15, 0)
    txs = [
        transfer(k, CHAIN, SINK, rnd.randint(1, 10**6), nonce, rnd.randint(1, 1000))
        for nonce in range(per_sender)
        for k in keys
    ]
    return txs, view


def fmt_rate(n: int, wall: float, cpu: float) -> str:
    return f"{n / wall:>10,.0f}/s wall ({wall / n * 1e6:6.2f} us)  {n / cpu:>10,.0f}/s cpu ({cpu / n * 1e6:6.2f} us)"


def shape(name: str, n_senders: int, per_sender: int, args: argparse.Namespace, rnd: random.Random) -> None:
    txs, view = make_txs(n_senders, per_sender, rnd, seed_base=per_sender << 32)
    pool = Mempool(CHAIN, view, MempoolConfig(max_txs=max(100_000, len(txs)), max_per_sender=4096))

    def add_all() -> None:
        add = pool.add
        for t in txs:
            add(t, verified=True)

    gc.collect()
    gc.disable()  # first without the cyclic GC: the pool's own cost
    try:
        wall, cpu, _ = timed(add_all)
    finally:
        gc.enable()
    print(f"[{name}] {len(txs):,} txs from {n_senders:,} senders, {pool.size_bytes / 1e6:.1f} MB")
    print(f"  add (verified=True) no GC {fmt_rate(len(txs), wall, cpu)}")
    pool = Mempool(CHAIN, view, MempoolConfig(max_txs=max(100_000, len(txs)), max_per_sender=4096))
    gc.collect()
    wall, cpu, _ = timed(add_all)  # then as the node runs it, GC on
    print(f"  add (verified=True)       {fmt_rate(len(txs), wall, cpu)}")

    reaps = [timed(lambda: pool.reap(args.reap, 64 << 20)) for _ in range(5)]
    block = reaps[0][2]
    assert isinstance(block, list) and len(block) == min(args.reap, len(txs))
    print(
        f"  reap {len(block):,} of {len(pool):,}      median {statistics.median(r[0] for r in reaps) * 1e3:7.2f} ms wall"
        f"  {statistics.median(r[1] for r in reaps) * 1e3:7.2f} ms cpu"
    )
    view.commit(block)
    wall, cpu, dropped = timed(lambda: pool.update(block, view))
    assert dropped == [] and len(pool) == len(txs) - len(block)
    print(
        f"  update with {len(block):,} committed  {wall * 1e3:7.2f} ms wall  {cpu * 1e3:7.2f} ms cpu  -> {len(pool):,} left"
    )


def full_pool(args: argparse.Namespace, rnd: random.Random) -> None:
    n = args.txs
    txs, view = make_txs(n, 1, rnd, seed_base=7 << 40)
    pool = Mempool(CHAIN, view, MempoolConfig(max_txs=n))
    for t in txs:
        pool.add(t, verified=True)
    extra = max(1, n // 5)
    # Newcomers that outbid everything (fee > 1000): each evicts the cheapest tail.
    keys = [SigningKey.from_seed(((9 << 40) + i).to_bytes(32, "big")) for i in range(2 * extra)]
    for k in keys:
        view.accounts[k.public_key] = Account(10**15, 0)
    rich = [transfer(k, CHAIN, SINK, 1, 0, 1001 + i) for i, k in enumerate(keys[:extra])]
    poor = [transfer(k, CHAIN, SINK, 1, 0, 1) for k in keys[extra:]]

    def add_rich() -> int:
        return sum(len(pool.add(t, verified=True)) for t in rich)

    def add_poor() -> int:
        refused = 0
        for t in poor:
            try:
                pool.add(t, verified=True)
            except MempoolError as exc:
                assert exc.reason == "mempool_full"
                refused += 1
        return refused

    wall, cpu, evicted = timed(add_rich)
    assert evicted == extra and len(pool) == n
    print(f"[full pool of {n:,}]")
    print(f"  add evicting one each     {fmt_rate(extra, wall, cpu)}")
    wall, cpu, refused = timed(add_poor)
    assert refused == extra
    print(f"  add refused mempool_full  {fmt_rate(extra, wall, cpu)}")

    fresh = DictView()
    sample = txs[: min(5000, n)]
    for t in sample:
        fresh.accounts[t.sender] = Account(10**15, 0)
    vpool = Mempool(CHAIN, fresh)

    def add_verify() -> None:
        for t in sample:
            vpool.add(t)

    wall, cpu, _ = timed(add_verify)
    print(f"  add with signature check  {fmt_rate(len(sample), wall, cpu)}")


def queued(args: argparse.Namespace, rnd: random.Random) -> None:
    n = args.txs
    q = max(1, n // 8)  # the default queued budget of a pool of n txs
    keys = [SigningKey.from_seed(((11 << 40) + i).to_bytes(32, "big")) for i in range(2 * q + n)]
    view = DictView()
    for k in keys:
        view.accounts[k.public_key] = Account(10**15, 0)
    gapped = [transfer(k, CHAIN, SINK, 1, 1, rnd.randint(1, 1000)) for k in keys[:q]]
    refused = [transfer(k, CHAIN, SINK, 1, 1, 1) for k in keys[q : 2 * q]]
    executable = [transfer(k, CHAIN, SINK, 1, 0, 1) for k in keys[2 * q :]]
    clock = [0.0]
    pool = Mempool(CHAIN, view, MempoolConfig(max_txs=n), clock=lambda: clock[0])

    def add_all(txs: list[Transaction]) -> int:
        out = 0
        for t in txs:
            try:
                out += len(pool.add(t, verified=True))
            except MempoolError as exc:
                assert exc.reason == "queued_full"
        return out

    print(f"[queued: budget {q:,} of a pool of {n:,}]")
    wall, cpu, _ = timed(lambda: add_all(gapped))
    assert pool.queued_count == q
    print(f"  add queued                {fmt_rate(q, wall, cpu)}")
    wall, cpu, _ = timed(lambda: add_all(refused))
    assert pool.queued_count == q and len(pool) == q
    print(f"  add refused queued_full   {fmt_rate(q, wall, cpu)}")
    add_all(executable[: n - q])
    wall, cpu, evicted = timed(lambda: add_all(executable[n - q :]))
    assert evicted == q and pool.queued_count == 0 and len(pool) == n
    print(f"  add evicting a queued tx  {fmt_rate(q, wall, cpu)}")
    pool = Mempool(CHAIN, view, MempoolConfig(max_txs=n), clock=lambda: clock[0])
    add_all(gapped)
    clock[0] = pool.config.queued_lifetime_s
    wall, cpu, gone = timed(pool.expire)
    assert isinstance(gone, list) and len(gone) == q and len(pool) == 0
    print(f"  expire                    {fmt_rate(q, wall, cpu)}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--txs", type=int, default=50_000, help="pool size per shape")
    ap.add_argument("--reap", type=int, default=10_000, help="txs per reaped block")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    rnd = random.Random(args.seed)
    try:
        from bench.common import machine

        print(machine())
    except Exception:  # the probe does not need the node helpers
        print(f"Python {sys.version.split()[0]}")
    print("signing transactions (not timed)...", flush=True)
    shape("1 tx per sender", args.txs, 1, args, rnd)
    shape("10 txs per sender", max(1, args.txs // 10), 10, args, rnd)
    shape("1000 txs per sender", max(1, args.txs // 1000), 1000, args, rnd)
    full_pool(args, rnd)
    queued(args, rnd)


if __name__ == "__main__":
    main()
