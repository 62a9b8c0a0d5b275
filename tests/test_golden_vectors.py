"""Golden test vectors (tests/vectors): regenerate every recorded byte in-process and compare with
tests/vectors/golden.json field by field. A failure names the first differing field; which sections fail
tells which library or rule changed (cbor → cbor2, signatures/keys → PyNaCl, gpu → NumPy, store_digest →
plyvel/LevelDB layout, state_root/results_hash → consensus code). Regenerate deliberately with
``python -m tests.vectors.generate --write`` after bumping ``VERSION`` in tests/vectors/generate.py."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
from memstate import MemState
from vectors import generate as gen

from state import codec
from state.crypto import SigningKey
from state.genesis import ChainParams
from state.machine import BlockEnv, BlockOutcome, TxResult, execute_block
from state.types import merkle_root, transfer

REPO = Path(__file__).resolve().parents[1]

# Compared one by one, so the set of failing sections points at the library that changed.
SECTIONS = [
    ("primitives", "cbor"),
    ("primitives", "keys"),
    ("primitives", "signatures"),
    ("primitives", "wire"),
    ("primitives", "merkle"),
    ("primitives", "smt"),
    ("primitives", "gpu_counter"),
    ("primitives", "gpu"),
    ("primitives", "llm"),
    ("primitives", "zk"),
    ("chains", "poa"),
    ("chains", "pos"),
]


@pytest.fixture(scope="module")
def golden() -> dict:
    g = gen.load_golden()
    assert g is not None, f"{gen.GOLDEN_PATH} is missing; create it with {gen.REGENERATE}"
    return g


@pytest.fixture(scope="module")
def vectors() -> dict:
    return gen.build()


def _check(expected: object, actual: object, path: str) -> None:
    differences = list(gen.diff(expected, actual, path))
    if differences:
        pytest.fail(gen.failure_message(differences), pytrace=False)


def test_version_and_layout(golden: dict, vectors: dict) -> None:
    assert golden["version"] == gen.VERSION, (
        f"golden.json is version {golden['version']}, the generator is version {gen.VERSION}: "
        f"regenerate with {gen.REGENERATE}"
    )
    assert list(golden) == list(vectors), "top-level sections changed: regenerate golden.json"
    assert [(a, b) for a in ("primitives", "chains") for b in golden[a]] == SECTIONS
    _check({k: v for k, v in golden.items() if k not in ("primitives", "chains")},
           {k: v for k, v in vectors.items() if k not in ("primitives", "chains")}, "")


@pytest.mark.parametrize("section", [f"{a}.{b}" for a, b in SECTIONS])
def test_section_matches_golden(golden: dict, vectors: dict, section: str) -> None:
    a, b = section.split(".")
    _check(golden[a][b], vectors[a][b], section)


def test_whole_document_is_byte_identical(golden: dict, vectors: dict) -> None:
    """Also the serialisation: what --write would store is exactly the file in the repository."""
    _check(golden, vectors, "")
    assert gen.dumps(vectors) == gen.GOLDEN_PATH.read_text(encoding="utf-8")


def test_failure_names_the_first_differing_field(golden: dict) -> None:
    changed = copy.deepcopy(golden)
    changed["chains"]["poa"]["blocks"][3]["state_root"] = "00" * 32
    changed["chains"]["poa"]["blocks"][4]["block_hash"] = "11" * 32
    del changed["chains"]["pos"]["supply"]
    changed["chains"]["pos"]["extra"] = 1
    differences = list(gen.diff(golden, changed))
    assert [p for p, _ in differences] == [
        "chains.poa.blocks[3].state_root",
        "chains.poa.blocks[4].block_hash",
        "chains.pos.supply",
        "chains.pos.extra",
    ]
    msg = gen.failure_message(differences)
    assert msg.startswith("chains.poa.blocks[3].state_root differs: a library or consensus code changed bytes")
    assert "bump the version" in msg and "python -m tests.vectors.generate --write" in msg
    assert list(gen.diff(golden["chains"]["poa"]["blocks"], golden["chains"]["poa"]["blocks"][:3], "b")) == [
        ("b", "length 5 in golden.json, 3 now")
    ]


def test_deterministic_across_processes_and_hash_seeds(vectors: dict) -> None:
    """A second interpreter with another hash seed (set/dict-of-hash order) produces the same bytes."""
    code = "import sys; from tests.vectors.generate import build, dumps; sys.stdout.write(dumps(build()))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out == gen.dumps(vectors)
    assert gen.dumps(gen.build()) == out  # and again in this process


def test_cli_reports_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert gen.main([]) == 0
    assert "up to date" in capsys.readouterr().out


@pytest.mark.gpu
def test_pycuda_reproduces_the_golden_results(golden: dict) -> None:
    """The GPU backend gives the golden bytes for exact kinds (a miner's receipt matches any verifier's
    NumPy re-execution) and leaves within tolerance for float kinds."""
    from gpu.backend import probe_pycuda
    from gpu.encoding import result_leaves
    from gpu.executor import Executor
    from gpu.kinds import get_kind

    info, why = probe_pycuda()
    if info is None:
        pytest.skip(f"no usable PyCUDA device: {why}")
    from gpu.pycuda_backend import PyCudaBackend

    with Executor(PyCudaBackend(info)) as ex:
        for name, params in gen.KIND_PARAMS.items():
            want = golden["primitives"]["gpu"][name]
            r = ex.run_sync(name, params, None, time_limit_s=60, max_result_bytes=1 << 20)
            assert r.backend == "pycuda"
            kind = get_kind(name)
            if kind.tolerance is None:
                assert (r.result_hash.hex(), r.result_root.hex()) == (want["result_hash"], want["result_root"]), name
            else:
                leaves = result_leaves(r.array)
                assert all(kind.check_leaf(params, None, i, leaf) for i, leaf in enumerate(leaves)), name


# --------------------------------------------------------------------------------------------------
# results_hash commits to [ok, reason], never to the English message


def test_results_hash_ignores_message_but_not_reason_or_ok() -> None:
    def outcome(*results: TxResult) -> BlockOutcome:
        return BlockOutcome(list(results), {}, 0)

    base = outcome(TxResult(True), TxResult(False, "insufficient_balance", "insufficient balance: 5 < 10"))
    reworded = outcome(TxResult(True, "", "ok!"), TxResult(False, "insufficient_balance", "not enough funds"))
    other_reason = outcome(TxResult(True), TxResult(False, "overflow", "insufficient balance: 5 < 10"))
    other_ok = outcome(TxResult(False), TxResult(False, "insufficient_balance", "insufficient balance: 5 < 10"))
    assert base.results_hash() == reworded.results_hash()
    assert base.results_hash() != other_reason.results_hash()
    assert base.results_hash() != other_ok.results_hash()
    assert base.results_hash() == merkle_root([codec.encode([True, ""]), codec.encode([False, "insufficient_balance"])])
    # Stored results keep the message for people.
    assert TxResult.from_obj(base.results[1].to_obj()).message == "insufficient balance: 5 < 10"


def test_results_hash_of_an_executed_block_ignores_message() -> None:
    """The same on a real execution: a failed transfer's message reworded leaves results_hash alone."""
    a, b = SigningKey.from_seed(b"\x01" * 32), SigningKey.from_seed(b"\x02" * 32)
    params = ChainParams(min_fee=10)
    state = MemState({a.public_key: 1_000})
    env = BlockEnv("msg-test", 1, 1_000, b"\xee" * 32, params)
    txs = [transfer(a, "msg-test", b.public_key, 100, 0, 10), transfer(a, "msg-test", b.public_key, 10_000, 1, 10)]
    out = execute_block(state, env, txs)
    assert [(r.ok, r.reason) for r in out.results] == [(True, ""), (False, "insufficient_balance")]
    assert out.results[1].message
    reworded = BlockOutcome([TxResult(r.ok, r.reason, "reworded " + r.message) for r in out.results], {}, 0)
    assert reworded.results_hash() == out.results_hash()
    broken = BlockOutcome([out.results[0], TxResult(False, "overflow", out.results[1].message)], {}, 0)
    assert broken.results_hash() != out.results_hash()


def test_golden_chains_record_no_messages(golden: dict) -> None:
    for name, chain in golden["chains"].items():
        for block in chain["blocks"]:
            assert all(len(r) == 2 and isinstance(r[0], bool) for r in block["results"]), (name, block["height"])
    failed = [r for c in golden["chains"].values() for b in c["blocks"] for r in b["results"] if not r[0]]
    assert failed and all(r[1] for r in failed)
