"""Benchmark: sparse Merkle tree commit cost per block, against a real LevelDB.

Fills a LevelDB (in a temporary directory) through :class:`state.smt.SparseMerkleTree` to 10k, 100k,
1M keys (write batches of 100k keys), and at each size times several blocks of ``--block-keys``
changed keys (half new keys, half updates of existing keys): ``compute_update`` + LevelDB
``write_batch`` of the writes + ``apply``. Prints, per size: median wall ms per block, median CPU ms
of the benchmarking thread (``time.thread_time``: robust on a busy machine, and excludes LevelDB's
background compaction threads), wall ms per 1k changed keys, the median wall split
(compute / db write / apply) and node writes per block. The LevelDB is opened with a 10-bit bloom
filter and a ``--db-cache-mb`` block cache (default 256 MiB, enough to hold the 1M-key tree's blocks).

    .venv/bin/python -m bench.smt_commit [--max-accounts N] [--block-keys K] [--blocks B] [--cache-size C]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

import plyvel

from state.smt import SparseMerkleTree, TreeUpdate

FILL_BATCH = 100_000


def _write(db: plyvel.DB, update: TreeUpdate) -> None:
    with db.write_batch() as wb:
        for k, v in update.writes.items():
            if v is None:
                wb.delete(k)
            else:
                wb.put(k, v)


def _fill(db: plyvel.DB, tree: SparseMerkleTree, keys: list[bytes], target: int, rnd: random.Random) -> None:
    while len(keys) < target:
        n = min(FILL_BATCH, target - len(keys))
        changes: dict[bytes, bytes | None] = {rnd.randbytes(32): rnd.randbytes(32) for _ in range(n)}
        keys.extend(changes)
        update = tree.compute_update(changes)
        _write(db, update)
        tree.apply(update)


def _block(keys: list[bytes], k: int, rnd: random.Random) -> dict[bytes, bytes | None]:
    """``k`` changes: half updates of random existing keys, half new keys."""
    changes: dict[bytes, bytes | None] = {
        key: rnd.randbytes(32) for key in rnd.sample(keys, min(k // 2, len(keys)))
    }
    new = [rnd.randbytes(32) for _ in range(k - len(changes))]
    for key in new:
        changes[key] = rnd.randbytes(32)
    keys.extend(new)
    return changes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--max-accounts", type=int, default=1_000_000, help="largest tree size (default 1,000,000)"
    )
    ap.add_argument("--block-keys", type=int, default=10_000, help="changed keys per block (default 10,000)")
    ap.add_argument("--blocks", type=int, default=5, help="timed blocks per size (default 5)")
    ap.add_argument(
        "--cache-size", type=int, default=200_000, help="SparseMerkleTree cache_size (default 200,000)"
    )
    ap.add_argument("--db-cache-mb", type=int, default=256, help="LevelDB block cache in MiB (default 256)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    sizes = [s for s in (10_000, 100_000, 1_000_000) if s <= args.max_accounts]
    if not sizes or sizes[-1] != args.max_accounts:
        sizes.append(args.max_accounts)
    rnd = random.Random(args.seed)
    tmp = tempfile.mkdtemp(prefix="smt-bench-")
    rows = []
    try:
        db = plyvel.DB(
            os.path.join(tmp, "db"),
            create_if_missing=True,
            lru_cache_size=args.db_cache_mb << 20,
            bloom_filter_bits=10,
        )
        tree = SparseMerkleTree(db.get, prefix=b"T", cache_size=args.cache_size)
        keys: list[bytes] = []
        print(
            f"# block = {args.block_keys:,} changed keys (half new, half updated), {args.blocks} blocks per "
            f"size; cache_size={args.cache_size:,} (nodes at depth <= {tree.cache_depth} cached); "
            f"LevelDB block cache {args.db_cache_mb} MiB, bloom filter 10 bits",
            flush=True,
        )
        for size in sizes:
            t0 = time.perf_counter()
            _fill(db, tree, keys, size, rnd)
            fill_s = time.perf_counter() - t0
            walls, cpus, parts, nwrites = [], [], [], []
            for _ in range(args.blocks):
                changes = _block(keys, args.block_keys, rnd)
                w0, c0 = time.perf_counter(), time.thread_time()
                update = tree.compute_update(changes)
                w1 = time.perf_counter()
                _write(db, update)
                w2 = time.perf_counter()
                tree.apply(update)
                w3, c3 = time.perf_counter(), time.thread_time()
                walls.append(w3 - w0)
                cpus.append(c3 - c0)
                parts.append((w1 - w0, w2 - w1, w3 - w2))
                nwrites.append(len(update.writes))
            wall_ms = statistics.median(walls) * 1000
            split = tuple(statistics.median(p[i] for p in parts) * 1000 for i in range(3))
            rows.append(
                (
                    size,
                    wall_ms,
                    statistics.median(cpus) * 1000,
                    wall_ms * 1000 / args.block_keys,
                    split,
                    statistics.median(nwrites),
                )
            )
            print(
                f"  filled to {size:,} keys (+{fill_s:.1f} s); block wall ms: "
                + ", ".join(f"{w * 1000:.0f}" for w in walls),
                flush=True,
            )
        db.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(
        f"{'size':>10} {'median ms/block':>16} {'CPU ms':>8} {'ms per 1k keys':>15}"
        f" {'compute':>8} {'db write':>9} {'apply':>6} {'writes/block':>13}"
    )
    for size, wall_ms, cpu_ms, per_k, (c_ms, w_ms, a_ms), nw in rows:
        print(
            f"{size:>10,} {wall_ms:>16.1f} {cpu_ms:>8.1f} {per_k:>15.2f}"
            f" {c_ms:>8.1f} {w_ms:>9.1f} {a_ms:>6.1f} {nw:>13,.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
