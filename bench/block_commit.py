"""Block cost as the state grows: build (execute + state root) and commit (one synced WriteBatch)
of blocks of transfers on a real LevelDB holding 10k, 100k and 1M accounts.

    .venv/bin/python -m bench.block_commit [--max-accounts 1000000] [--txs 5000] [--blocks 5]

Recipients are drawn from all existing accounts, so every block touches keys spread over the whole
tree. Goal: per-block time stays flat as the state grows.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from consensus.validators import Validator, ValidatorSet
from state.chain import ChainState
from state.codec import sha256
from state.crypto import SigningKey
from state.genesis import ChainParams, Genesis, GenesisValidator
from state.machine import account_state_key
from state.store import K_HEAD, P_ACCOUNT, Head, Store
from state.types import PRECOMMIT, Account, Commit, CommitSig, Vote, transfer

from .common import machine

FILL = 100_000


def fill_accounts(chain: ChainState, pubkeys: list[bytes]) -> None:
    """Bench-only bulk load: write accounts and their tree leaves, then move the head's state root."""
    for i in range(0, len(pubkeys), FILL):
        chunk = pubkeys[i : i + FILL]
        enc = Account(1, 0).encode()
        puts: dict[bytes, bytes | None] = {P_ACCOUNT + pk: enc for pk in chunk}
        upd = chain.tree.compute_update({account_state_key(pk): sha256(enc) for pk in chunk})
        puts.update(upd.writes)
        head = chain.head
        new_head = Head(head.height, head.hash, head.time, upd.root)
        puts[K_HEAD] = new_head.encode()
        chain.store.write_batch(puts, sync=False)
        chain.tree.apply(upd)
        chain.head = new_head


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-accounts", type=int, default=1_000_000)
    ap.add_argument("--txs", type=int, default=5_000)
    ap.add_argument("--senders", type=int, default=500)
    ap.add_argument("--blocks", type=int, default=5)
    args = ap.parse_args()
    rnd = random.Random(7)
    val = SigningKey.generate()
    senders = [SigningKey.generate() for _ in range(args.senders)]
    genesis = Genesis("bench-commit", 0, "poa", ChainParams(min_fee=1),
                      tuple((k.public_key, 10**15) for k in senders), (GenesisValidator(val.public_key, 1),))
    vs = ValidatorSet([Validator(val.public_key, 1)])
    sizes = [s for s in (10_000, 100_000, 1_000_000) if s <= args.max_accounts]
    if not sizes:
        raise SystemExit("--max-accounts must be at least 10,000 (the smallest state measured)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "db")
        chain = ChainState(store, genesis)
        accounts: list[bytes] = []
        nonces = {k.public_key: 0 for k in senders}
        t_ms = 1
        for size in sizes:
            t0 = time.perf_counter()
            new = [rnd.randbytes(32) for _ in range(size - len(accounts))]
            fill_accounts(chain, new)
            accounts.extend(new)
            fill_s = time.perf_counter() - t0
            builds, commits = [], []
            for _ in range(args.blocks):
                txs = []
                for j in range(args.txs):
                    k = senders[j % len(senders)]
                    txs.append(transfer(k, genesis.chain_id, rnd.choice(accounts), 1, nonces[k.public_key], 1))
                    nonces[k.public_key] += 1
                t_ms += 1000
                last = chain.commit_at(chain.head.height) if chain.head.height else None
                b0 = time.perf_counter()
                pending = chain.build_block(txs, proposer=val.public_key, time_ms=t_ms, last_commit=last,
                                            validators_hash=vs.hash, next_validators_hash=vs.hash,
                                            is_verified=lambda tx: True)
                b1 = time.perf_counter()
                blk = pending.block
                sig = Vote.create(val, genesis.chain_id, blk.height, 0, PRECOMMIT, blk.hash).sig
                chain.commit(pending, Commit(blk.height, 0, blk.hash, (CommitSig(val.public_key, sig),)))
                b2 = time.perf_counter()
                assert len(blk.txs) == args.txs
                builds.append(b1 - b0)
                commits.append(b2 - b1)
            rows.append((size, fill_s, statistics.median(builds) * 1000, statistics.median(commits) * 1000))
            print(f"  {size:>9,} accounts (filled in {fill_s:.1f} s): build ms "
                  + ", ".join(f"{b * 1000:.0f}" for b in builds) + "; commit ms "
                  + ", ".join(f"{c * 1000:.0f}" for c in commits), flush=True)
        store.close()
    print(f"machine: {machine()}; {args.txs} transfers per block (signatures pre-verified, as from the mempool)")
    print(f"{'accounts':>10} {'build ms':>9} {'commit ms':>10} {'total ms':>9}")
    for size, _, b, c in rows:
        print(f"{size:>10,} {b:>9.0f} {c:>10.0f} {b + c:>9.0f}")
    ratio = (rows[-1][2] + rows[-1][3]) / (rows[0][2] + rows[0][3])
    print(f"largest / smallest state: {ratio:.2f}x per block (flat = close to 1)")


if __name__ == "__main__":
    main()
