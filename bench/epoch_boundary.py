"""Epoch-boundary cost of proof of stake: a normal block vs the block that recomputes the validator set,
on a real LevelDB chain holding 100 staked validators and 10,000 delegations made by real transactions.

    .venv/bin/python -m bench.epoch_boundary [--validators 100] [--delegations 10000] [--epochs 4]

Every measured block carries the same load (``--txs`` delegations, which also move powers so each epoch
installs a new set) and the previous commit signed by the whole active set, so each block distributes
rewards to and tracks downtime of every active validator. Time = build (execute + state root) + commit
(one synced WriteBatch). Goal: epoch block <= 2x a normal block (the epoch must not touch delegations).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import state.staking  # noqa: F401  (registers the staking transaction kinds and block hook)
from state.chain import ChainState
from state.crypto import SigningKey
from state.genesis import ChainParams, Genesis, GenesisValidator
from state.params import AIT, StakingParams
from state.staking_views import delegate_body, validator_create_body
from state.store import Store
from state.types import PRECOMMIT, Commit, CommitSig, Transaction, Vote

from .common import machine

CHAIN = "bench-epoch"
SETUP_BLOCK_TXS = 5_000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--validators", type=int, default=100)
    ap.add_argument("--delegations", type=int, default=10_000)
    ap.add_argument("--delegators", type=int, default=2_000)
    ap.add_argument("--epoch-blocks", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--txs", type=int, default=50, help="delegations in every measured block")
    args = ap.parse_args()
    rnd = random.Random(11)
    sp = StakingParams(epoch_blocks=args.epoch_blocks, max_validators=args.validators, signed_blocks_window=100)
    genesis_key = SigningKey.from_seed(b"\x01" * 32)
    operators = [SigningKey.from_seed(rnd.randbytes(32)) for _ in range(args.validators)]
    cons_keys = {}
    for op in operators:
        cons_keys[op.public_key] = SigningKey.from_seed(rnd.randbytes(32))
    signing = {k.public_key: k for k in [*cons_keys.values(), genesis_key]}  # by consensus key
    delegators = [SigningKey.from_seed(rnd.randbytes(32)) for _ in range(args.delegators)]
    accounts = sorted({k.public_key: 10**9 * AIT for k in operators + delegators}.items())
    genesis = Genesis(CHAIN, 0, "pos", ChainParams(min_fee=1, staking=sp), tuple(accounts),
                      (GenesisValidator(genesis_key.public_key, 5_000, "genesis"),))
    nonces: dict[bytes, int] = {}

    def tx(k: SigningKey, type_: str, body: dict) -> Transaction:
        n = nonces.get(k.public_key, 0)
        nonces[k.public_key] = n + 1
        return Transaction.create(k, CHAIN, type_, n, 1, body)

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "db")
        chain = ChainState(store, genesis)
        sets: list[tuple[int, list[bytes]]] = [(1, [genesis_key.public_key])]

        def signers_for(height: int) -> list[bytes]:
            cur = sets[0][1]
            for frm, members in sets:
                if frm <= height:
                    cur = members
            return cur

        def block(txs: list[Transaction]) -> tuple[float, float, bool]:
            h = chain.head.height + 1
            last = None
            if h > 1:
                prev = chain.commit_at(h - 1)
                assert prev is not None
                last = Commit(prev.height, prev.round, prev.block_hash, tuple(
                    CommitSig(pk, Vote.create(signing[pk], CHAIN, h - 1, 0, PRECOMMIT, prev.block_hash).sig)
                    for pk in signers_for(h - 1)))
            proposer = signers_for(h)[h % len(signers_for(h))]
            t0 = time.perf_counter()
            pending = chain.build_block(txs, proposer=proposer, time_ms=1000 * h, last_commit=last,
                                        validators_hash=bytes(32), next_validators_hash=bytes(32),
                                        is_verified=lambda t: True)
            t1 = time.perf_counter()
            blk = pending.block
            chain.commit(pending, Commit(blk.height, 0, blk.hash, ()))
            t2 = time.perf_counter()
            assert len(blk.txs) == len(txs) and all(r.ok for r in pending.outcome.results), pending.outcome.results[:3]
            upd = pending.outcome.valset_update
            if upd is not None:
                frm, vs = upd
                sets[:] = [e for e in sets if e[0] < frm] + [(frm, [pk for pk, _ in vs])]
            return t1 - t0, t2 - t1, upd is not None

        # setup: validators, then delegations, by real transactions
        t_setup = time.perf_counter()
        block([tx(op, "validator_create", validator_create_body(cons_keys[op.public_key].public_key, 500, 1_000 * AIT,
                                                               f"v{i}")) for i, op in enumerate(operators)])
        dtxs = []
        per = max(1, args.delegations // args.delegators)
        for i in range(args.delegations):
            d = delegators[i // per % len(delegators)]
            op = operators[(i * 7 + i // per) % len(operators)]
            dtxs.append(tx(d, "delegate", delegate_body(op.public_key, rnd.randint(1, 50) * AIT)))
        for i in range(0, len(dtxs), SETUP_BLOCK_TXS):
            block(dtxs[i : i + SETUP_BLOCK_TXS])
        while chain.head.height % args.epoch_blocks != 2:  # the new set is active from epoch + 2
            block([])
        n_dele = sum(1 for _ in store.db.iterator(prefix=b"ostk/d/", include_value=False))
        active = len(signers_for(chain.head.height + 1))
        setup_s = time.perf_counter() - t_setup
        print(f"setup: {args.validators} validators, {n_dele:,} delegations, {active} active, "
              f"head {chain.head.height} ({setup_s:.1f} s)", flush=True)

        normal: list[float] = []
        epoch: list[float] = []
        installs = 0
        for _ in range(args.epochs * args.epoch_blocks):
            txs = [tx(delegators[rnd.randrange(len(delegators))], "delegate",
                      delegate_body(operators[rnd.randrange(len(operators))].public_key, rnd.randint(1, 500) * AIT))
                   for _ in range(args.txs)]
            h = chain.head.height + 1
            b, c, changed = block(txs)
            if h % args.epoch_blocks == 0:
                epoch.append(b + c)
                installs += changed
            else:
                normal.append(b + c)
        store.close()
    med_n = statistics.median(normal) * 1000
    med_e = statistics.median(epoch) * 1000
    print(f"machine: {machine()}")
    print(f"{len(normal)} normal blocks: median {med_n:.1f} ms (min {min(normal) * 1000:.1f}, max "
          f"{max(normal) * 1000:.1f}); {len(epoch)} epoch blocks: median {med_e:.1f} ms (min "
          f"{min(epoch) * 1000:.1f}, max {max(epoch) * 1000:.1f}); new set installed at {installs}/{len(epoch)}")
    print(f"epoch / normal: {med_e / med_n:.2f}x (goal <= 2)")


if __name__ == "__main__":
    main()
