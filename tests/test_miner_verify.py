"""The verifier's leaf search (node/miner.py) for exact and tolerance-checked kinds, and the lying miner's
corruption (testnet/faults.py), in-process. The multi-process path is in test_market_network.py."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from gpu.encoding import result_leaves
from gpu.kinds import get_kind
from node.miner import _first_wrong_exact, _first_wrong_within_tolerance
from testnet.faults import corrupt_result, read_faults, write_faults

MLP = {"batch": 6, "d_in": 8, "d_hidden": 16, "d_out": 4, "seed": b"\x03" * 32}
MATMUL = {"m": 8, "n": 8, "k": 8, "seed": b"\x01" * 32}


def job(params: dict) -> SimpleNamespace:
    return SimpleNamespace(params=params, job_id=b"\x07" * 32)


def test_float_kind_honest_result_from_another_backend_is_not_challenged() -> None:
    kind = get_kind("mlp-f32")
    ours = kind.execute_numpy(MLP, None)
    other = np.nextafter(ours, np.float32(np.inf))  # every element 1 ulp off: another summation order
    assert _first_wrong_within_tolerance(kind, job(MLP), None, other, result_leaves(other)) is None


def test_float_kind_wrong_row_is_found_and_the_chain_agrees() -> None:
    kind = get_kind("mlp-f32")
    wrong = kind.execute_numpy(MLP, None).copy()
    wrong[3, 2] += np.float32(0.5)
    leaves = result_leaves(wrong)
    i = _first_wrong_within_tolerance(kind, job(MLP), None, wrong, leaves)
    assert i == 3 and not kind.check_leaf(MLP, None, i, leaves[i])
    bad = corrupt_result(kind.execute_numpy(MLP, None))  # the lying miner's float corruption
    assert _first_wrong_within_tolerance(kind, job(MLP), None, bad, result_leaves(bad)) == 0
    shape = np.zeros((2, 4), dtype=np.float32)  # wrong shape: leaf 0 is challenged
    assert _first_wrong_within_tolerance(kind, job(MLP), None, shape, result_leaves(shape)) == 0


def test_exact_kind_flipped_bit_is_found() -> None:
    kind = get_kind("matmul-u32")
    good = kind.execute_numpy(MATMUL, None)
    assert _first_wrong_exact(kind, job(MATMUL), None, good, result_leaves(good)) is None
    bad = corrupt_result(good)
    assert int(bad.view(np.uint8).reshape(-1)[0]) == int(good.view(np.uint8).reshape(-1)[0]) ^ 1
    assert _first_wrong_exact(kind, job(MATMUL), None, bad, result_leaves(bad)) == 0


def test_faults_file(tmp_path) -> None:
    path = tmp_path / "faults.json"
    assert read_faults(path) == {}  # no file: honest
    write_faults(path, corrupt=True, withhold=True)
    assert read_faults(path) == {"corrupt": True, "silent": False, "false_challenge": False, "withhold": True,
                                 "llm_token": False, "llm_step": False}
    path.write_text("{not json")
    assert read_faults(path) == {}
