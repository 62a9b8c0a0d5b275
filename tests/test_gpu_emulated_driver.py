"""The node's PyCUDA path end to end on a machine without a GPU: real PyCUDA, real nvcc, emulated driver.

``tests/cuda_emu/libcuda_emu.cpp`` is built as ``libcuda.so.1`` and put first on ``LD_LIBRARY_PATH`` of a
child process that has PyCUDA installed (the wheel from ``$AITBC_PYCUDA_WHEELS`` or ``../shared/wheels``,
unpacked into a temporary folder). PyCUDA's own driver bindings then create contexts, compile every kernel
module with nvcc (``SourceModule``), allocate, copy and launch — the launches run the same CUDA C on the CPU
(``tests/cuda_emu/emu.h``). This runs, in CI, what a lent GPU runs first (``bench/device_check.sh``):

* the GPU-marked tests (``pytest -m gpu``: every kind and the llm self-test and trace roots against NumPy,
  the golden vectors through the backend);
* the two GPU benchmarks' PyCUDA paths, with their exactness checks;
* a miner node forced onto the PyCUDA backend (``AITBC_GPU_BACKEND=cuda``) that wins an ``llm-generate``
  job requiring ``backend: pycuda`` and is paid after a NumPy peer re-ran and verified it.

What it cannot show is the GPU's own behaviour (``dp2a``, timing, memory limits): the kernels take their
portable paths here. ``PYCUDA_CACHE_DIR`` points at a folder that does not exist yet: the backend creates it
(PyCUDA does not, and every compile failed without it). Skipped with the reason without g++, nvcc or a
PyCUDA wheel for this Python.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from net_helpers import log_tails, wait_heights
from nodeproc import clean_env
from test_llm_network import MARKET, NAME, PROMPT, _register_model, _wait_log
from test_market_network import FAST, Client, miner_of, settled, wait_job

from state import market
from state.kinds.llm_generate import LlmGenerateRules

REPO = Path(__file__).resolve().parents[1]
EMU = REPO / "tests" / "cuda_emu"
DEPS = ("pytools", "platformdirs", "typing_extensions", "mako")  # PyCUDA's pure-Python needs


def _wheel_dirs() -> list[Path]:
    env = os.environ.get("AITBC_PYCUDA_WHEELS")
    return [Path(env)] if env else [REPO.parent / "shared" / "wheels"]


def _wheels() -> list[Path] | None:
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for d in _wheel_dirs():
        pycuda = sorted(d.glob(f"pycuda-*-{tag}-{tag}-*.whl"))
        deps = [w for name in DEPS for w in sorted(d.glob(f"{name}-*-py3-none-any.whl"))[-1:]]
        if pycuda and len(deps) == len(DEPS):
            return [pycuda[-1], *deps]
    return None


@pytest.fixture(scope="module")
def emulated_cuda(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment entries that put a child process on the emulated driver with PyCUDA importable."""
    cxx, nvcc = shutil.which("g++"), shutil.which("nvcc")
    if cxx is None or nvcc is None:
        pytest.skip(f"needs g++ and nvcc on PATH (g++: {cxx}, nvcc: {nvcc})")
    wheels = _wheels()
    if wheels is None:
        pytest.skip(f"no PyCUDA wheel for this Python in {[str(d) for d in _wheel_dirs()]} ($AITBC_PYCUDA_WHEELS)")
    d = tmp_path_factory.mktemp("emulated-cuda")
    (d / "lib").mkdir()
    build = subprocess.run(
        [cxx, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-fno-strict-aliasing", "-Wall", "-Wno-unknown-pragmas",
         "-I", str(EMU), "-I", str(REPO / "gpu" / "kernels"), "-Wl,-soname,libcuda.so.1",
         "-o", str(d / "lib" / "libcuda.so.1"), str(EMU / "libcuda_emu.cpp")],
        capture_output=True, text=True, timeout=300, check=False)
    assert build.returncode == 0 and not build.stderr, build.stderr
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                          "--target", str(d / "site"), *map(str, wheels)], capture_output=True, text=True, timeout=300,
                         check=False)
    assert pip.returncode == 0, pip.stderr
    return {"LD_LIBRARY_PATH": str(d / "lib"), "PYTHONPATH": f"{d / 'site'}{os.pathsep}{REPO}",
            "PYCUDA_CACHE_DIR": str(d / "cache" / "pycuda")}


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = clean_env(**extra)
    return {k: v for k, v in env.items() if not k.startswith(("PYTEST_", "COV_"))}


def _run(extra: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=_child_env(extra), capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_the_driver_is_pycudas(emulated_cuda: dict[str, str]) -> None:
    r = _run(emulated_cuda, "-c", "from gpu.backend import select_backend; i = select_backend('cuda'); "
             "print(i.name, i.device, i.compute_capability, i.memory_bytes)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["pycuda", "AITBC", "CUDA", "CPU", "emulator", "9.0", str(4 << 30)]


def test_gpu_marked_tests_pass_on_the_emulated_driver(emulated_cuda: dict[str, str]) -> None:
    r = _run(emulated_cuda, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "-q", "-rs",
             "tests/test_gpu.py", "tests/test_golden_vectors.py")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    summary = r.stdout.strip().splitlines()[-1]
    m = re.search(r"(\d+) passed", summary)
    assert m and int(m.group(1)) >= 14 and "skipped" not in summary and "failed" not in summary, summary
    assert Path(emulated_cuda["PYCUDA_CACHE_DIR"]).is_dir()  # created by the backend


def test_the_gpu_benchmarks_run_their_pycuda_paths(emulated_cuda: dict[str, str]) -> None:
    r = _run(emulated_cuda, "-m", "bench.gpu_kernels", "--sizes", "small", "--repeat", "1", "--json")
    assert r.returncode == 0, r.stderr[-4000:]
    doc = json.loads(r.stdout)
    assert doc["pycuda"] and not doc["pycuda_unavailable"], doc
    assert {row["kind"] for row in doc["rows"]} >= {"matmul-u32", "hash-chain", "mlp-f32"}
    assert all(row["pycuda"]["exact"] is True for row in doc["rows"]), doc["rows"]
    r = _run(emulated_cuda, "-m", "bench.gpu_llm", "--preset", "tiny", "--prompt", "9", "--new", "5")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = json.loads(r.stdout.strip().splitlines()[-1])["rows"]
    assert rows["pycuda"]["tokens_equal_numpy"] is True and rows["pycuda"]["trace_root_equal"] is True, rows


def test_a_miner_on_the_pycuda_backend_serves_an_llm_job(make_net, emulated_cuda: dict[str, str]) -> None:
    net = make_net(3, block_interval_ms=250, start=False,
                   params={**FAST, "market": MARKET},
                   validators=1, miners=[1], verifiers=[2])
    env = {0: {"AITBC_RPC_ADMIN": "true"},
           1: {**emulated_cuda, "AITBC_GPU_BACKEND": "cuda", "AITBC_MINER_MODELS": f"{NAME}=50"},
           2: {"AITBC_GPU_BACKEND": "cpu", "AITBC_MINER_MODELS": f"{NAME}=900"}}
    for n in net.nodes:
        net.start(n, env=env[n.index])
    wait_heights(net, net.nodes, 2, 90)
    _wait_log(net, 1, "llm CUDA path enabled", 90)  # the node's llm self-test passed on the PyCUDA backend
    c = Client(net, net.faucet_keys()[0])
    mid = _register_model(net, c)
    for i in (1, 2):
        _wait_log(net, i, f"model {NAME} is complete here", 60)
    rpc = lambda m, **p: net.rpc(net.nodes[0], m, **p)  # noqa: E731
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        caps = {m["address"]: m["capabilities"] for m in rpc("market_listMiners")["miners"]}
        if miner_of(net, 1) in caps and "llm-generate" in caps[miner_of(net, 1)]["throughput"]:
            break
        time.sleep(0.3)
    assert caps[miner_of(net, 1)]["backend"] == "pycuda", caps
    assert caps[miner_of(net, 1)]["device"] == "AITBC CUDA CPU emulator", caps
    wait_heights(net, net.nodes, int(rpc("chain_getHead")["finalized_height"]), 60)

    # the kernels run on a CPU emulator, slower still on a loaded machine: a deadline of 120 blocks (30 s)
    params = {"model": mid, "prompt": [*PROMPT, 7], "max_new_tokens": 6, "sampling": {"mode": "greedy"}}
    body = market.job_submit_body("llm-generate", 1, params, max_price=100,
                                  max_units=LlmGenerateRules().work_units(params), bid_window=10, deadline=120,
                                  verify_rate_bps=10_000, challenge_window=14, backend="pycuda")
    st = c.send("job_submit", body)
    assert st["status"] == "committed", st
    job = wait_job(net, st["hash"], settled, 120)
    assert (job["state"], job["payment"], job["miner"]) == ("COMPLETED", "released", miner_of(net, 1)), (
        job, log_tails(net.nodes[1:], 30))
    _wait_log(net, 2, f"job {st['hash'][2:18]} verified: token rows correct", 10)  # a NumPy peer agrees
