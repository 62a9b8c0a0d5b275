"""Consensus-critical code must not depend on ``assert``: ``python -O`` removes every assert statement.

* a ``python -O`` subprocess imports every module of ``state``, ``consensus`` and ``gpu.kinds``, runs a
  real chain (genesis, blocks of transfers committed to LevelDB, reopen), a single-validator BFT height,
  and checks that refusals are still typed errors (BlockError, InvariantError) with asserts stripped;
* an AST scan finds no ``assert`` statement in the production packages;
* ruff's S101 rule stays enabled so none comes back.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_PACKAGES = ("consensus", "state", "p2p", "rpc", "gpu", "node", "testnet")
TIMEOUT_S = 120

# Runs under ``python -O``: it must not use assert itself (it would be stripped); it checks with ``need``.
CHILD = r'''
import importlib, json, pkgutil, sys, tempfile
from pathlib import Path

def need(cond, what):
    if not cond:
        raise SystemExit("check failed: " + what)

need(__debug__ is False and sys.flags.optimize >= 1, "not running under python -O")

modules = []
for pkg_name in ("state", "consensus", "gpu.kinds"):
    pkg = importlib.import_module(pkg_name)
    modules.append(pkg_name)
    for info in pkgutil.walk_packages(pkg.__path__, pkg_name + "."):
        importlib.import_module(info.name)
        modules.append(info.name)

from consensus.bft import TIMEOUT_PRECOMMIT, BftCore, Decide, RequestBlock, Timeouts
from consensus.schedule import ProposerSchedule
from consensus.validators import Validator, ValidatorSet
from state.chain import ChainState
from state.crypto import SigningKey
from state.errors import BlockError, InvariantError
from state.genesis import ChainParams, Genesis, GenesisValidator
from state.store import Store
from state.types import PRECOMMIT, Block, Commit, CommitSig, Vote, transfer

VAL = SigningKey.from_seed(b"\x07" * 32)
ALICE = SigningKey.from_seed(b"\x0a" * 32)
BOB = SigningKey.from_seed(b"\x0b" * 32)
GENESIS = Genesis(
    chain_id="optimized-mode",
    genesis_time=1_000,
    consensus="poa",
    params=ChainParams(min_fee=10),
    accounts=((ALICE.public_key, 1_000_000),),
    validators=(GenesisValidator(VAL.public_key, 1, "v0"),),
)
VSET = ValidatorSet([Validator(VAL.public_key, 1)])


def commit_for(chain_id, block):
    v = Vote.create(VAL, chain_id, block.height, 0, PRECOMMIT, block.hash)
    return Commit(block.height, 0, block.hash, (CommitSig(VAL.public_key, v.sig),))


def produce(chain, txs, time_ms):
    last = chain.commit_at(chain.head.height) if chain.head.height > 0 else None
    pending = chain.build_block(
        txs, proposer=VAL.public_key, time_ms=time_ms, last_commit=last,
        validators_hash=VSET.hash, next_validators_hash=VSET.hash,
    )
    need(len(pending.outcome.skipped) == 0, "a valid transfer was skipped")
    chain.commit(pending, commit_for(chain.chain_id, pending.block))
    return pending.block


out = {"modules": modules}
with tempfile.TemporaryDirectory() as tmp:
    store = Store(Path(tmp) / "db")
    chain = ChainState(store, GENESIS)
    nonce = 0
    for height in range(1, 4):
        txs = [transfer(ALICE, chain.chain_id, BOB.public_key, 100, nonce + i, 10) for i in range(3)]
        nonce += len(txs)
        produce(chain, txs, 1_000 + height * 1_000)
    # a block carrying an invalid transaction (wrong nonce) is still refused, as a BlockError
    bad_tx = transfer(ALICE, chain.chain_id, BOB.public_key, 3, nonce + 5, 10)
    pending = chain.build_block([bad_tx], proposer=VAL.public_key, time_ms=10_000,
                                last_commit=chain.commit_at(chain.head.height),
                                validators_hash=VSET.hash, next_validators_hash=VSET.hash)
    need(pending.block.txs == () and len(pending.outcome.skipped) == 1, "the bad tx was not skipped")
    try:
        chain.validate_block(Block(pending.block.header, (bad_tx,), pending.block.last_commit))
        out["forged_block"] = "accepted"
    except BlockError as exc:
        out["forged_block"] = exc.reason
    head = (chain.head.height, chain.head.hash.hex(), chain.head.state_root.hex())
    store.close()
    # reopen: the committed chain and its state tree come back from LevelDB
    store = Store(Path(tmp) / "db")
    chain = ChainState(store, GENESIS)
    out["reopened_head_matches"] = (chain.head.height, chain.head.hash.hex(), chain.head.state_root.hex()) == head
    out["height"] = chain.head.height
    out["bob"] = chain.account(BOB.public_key).balance
    out["alice"] = chain.account(ALICE.public_key).balance
    out["validator"] = chain.account(VAL.public_key).balance
    tx, h, _, res = chain.tx_lookup(txs[-1].hash)
    out["last_tx"] = [h, res.ok]
    store.close()

# one BFT height with a single validator: request, propose, prevote, precommit, decide
sched = ProposerSchedule(VSET)
core = BftCore(GENESIS.chain_id, Timeouts(propose_ms=300, vote_ms=100, delta_ms=50),
               signer=lambda kind, h, r, step, sb: VAL.sign(kind, GENESIS.chain_id, sb), pubkey=VAL.public_key)
actions = core.start_height(1, VSET, lambda r: sched.proposer(1, r).public_key)
need(any(isinstance(a, RequestBlock) for a in actions), "the proposer did not request a block")
with tempfile.TemporaryDirectory() as tmp:
    store = Store(Path(tmp) / "db")
    block = ChainState(store, GENESIS).build_block(
        [], proposer=VAL.public_key, time_ms=2_000, last_commit=None,
        validators_hash=VSET.hash, next_validators_hash=VSET.hash,
    ).block
    store.close()
decided = [a for a in core.on_own_block(block) if isinstance(a, Decide)]
out["bft_decided"] = len(decided) == 1 and decided[0].block.hash == block.hash

# an internal invariant still raises its typed error with asserts stripped
idle = BftCore(GENESIS.chain_id, Timeouts(propose_ms=300, vote_ms=100, delta_ms=50))
try:
    idle.on_timeout(TIMEOUT_PRECOMMIT, 0, 0)
    out["invariant"] = "no error"
except InvariantError as exc:
    out["invariant"] = exc.reason
print(json.dumps(out))
'''


def test_chain_workflow_under_python_O() -> None:
    proc = subprocess.run(
        [sys.executable, "-O", "-c", CHILD],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-4000:] or proc.stdout[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    mods = set(out["modules"])
    assert {"state.chain", "state.machine", "consensus.bft", "consensus.bft_engine", "gpu.kinds.base"} <= mods
    assert out["height"] == 3 and out["reopened_head_matches"]
    assert out["bob"] == 900
    assert out["alice"] == 1_000_000 - 9 * 110
    assert out["validator"] == 90
    assert out["last_tx"] == [3, True]
    assert out["forged_block"] == "invalid_block"
    assert out["bft_decided"]
    assert out["invariant"] == "invariant"


def _asserts_in(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found += [f"{path.relative_to(ROOT)}:{n.lineno}" for n in ast.walk(tree) if isinstance(n, ast.Assert)]
    return found


def test_no_assert_statements_in_production_code() -> None:
    offenders = [site for pkg in PRODUCTION_PACKAGES for site in _asserts_in(pkg)]
    assert offenders == [], "assert in production code (python -O strips it); raise a typed error:\n" + "\n".join(
        offenders
    )


def test_ruff_forbids_assert_outside_tests() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["ruff"]["lint"]
    assert "S101" in cfg["select"]
    ignored = {pattern for pattern, rules in cfg.get("per-file-ignores", {}).items() if "S101" in rules}
    assert ignored <= {"tests/**", "bench/**", "node/miner.py", "state/market/**"}
