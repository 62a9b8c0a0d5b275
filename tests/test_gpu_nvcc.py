"""The CUDA kernels compiled by the real CUDA compiler, without a GPU.

PyCUDA's ``SourceModule(src, no_extern_c=True, options=…)`` runs ``nvcc --cubin -arch sm_XY <options>``
on the source as it is; these tests run the same compilation for the GPUs the backend meets (sm_75, the
oldest target of CUDA 13, and sm_90, the H100/H200 of a lent device) and read ``ptxas -v``'s report:
every entry point the Python side launches exists, no kernel spills, and each fits its launch shape
(registers × threads per block within the 64 K register file, static shared memory within the 48 KiB a
block gets without opting in). The PTX shows which multiply path ``llm.cu`` takes (``__dp2a_lo``/``__dp2a_hi`` by
default; the portable multiply-adds with ``-DLLM_PLAIN_MAC``, the self-test's fallback, which nvcc itself
compiles to ``dp2a.lo`` only). Skipped with the reason when
``nvcc`` is not on PATH; the kernels' results are checked on the CPU emulator (``tests/test_gpu.py``) and on
a device (``pytest -m gpu``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gpu import llm_cuda, pycuda_backend
from gpu.kernels import NAMES, OPTIONAL, source

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc (the CUDA compiler) is not on PATH")

ARCHS = ("sm_75", "sm_90")
REGISTER_FILE = 65536
STATIC_SMEM = 48 * 1024

#: module -> {entry point: threads per block of its launch}, as the Python side launches them
LAUNCHES: dict[str, dict[str, int]] = {
    "counter": {"gen_u32": pycuda_backend.GEN_THREADS, "gen_f32": pycuda_backend.GEN_THREADS},
    "gemm": {"matmul_u32": pycuda_backend.GEMM_THREADS, "sgemm_bias_act": pycuda_backend.GEMM_THREADS},
    "sha256": {"hash_chain": pycuda_backend.HASH_THREADS},
    "llm": {
        "llm_quant_rows": llm_cuda.quant_launch(1)[0][0],
        "llm_matmul_q8": llm_cuda.matmul_launch(1, 1)[0][0],
        "llm_attention": llm_cuda.attention_launch(1, 1, 1)[0][0],
        "llm_swiglu": llm_cuda.swiglu_launch(1, 1)[0][0],
    },
}
VARIANTS = [(m, ()) for m in NAMES] + [(m, ()) for m in OPTIONAL] + [("llm", ("-DLLM_PLAIN_MAC",))]

_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+)'")
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:, used \d+ barriers)?(?:, (\d+) bytes smem)?")


def _nvcc(tmp: Path, module: str, options: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    src = tmp / f"{module}.cu"
    src.write_text(source(module), encoding="utf-8")
    return subprocess.run([NVCC, *args, *options, src.name], cwd=tmp, capture_output=True, text=True,
                          timeout=180, check=False)


def ptxas_report(text: str) -> dict[str, dict[str, int]]:
    """``{entry: {registers, smem, spill_stores, spill_loads}}`` from ``nvcc -Xptxas -v`` output."""
    out: dict[str, dict[str, int]] = {}
    name = None
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            name = m.group(1)
            out[name] = {"registers": -1, "smem": 0, "spill_stores": -1, "spill_loads": -1}
        elif name and (m := _SPILL.search(line)):
            out[name]["spill_stores"], out[name]["spill_loads"] = int(m.group(1)), int(m.group(2))
        elif name and (m := _USED.search(line)):
            out[name]["registers"] = int(m.group(1))
            out[name]["smem"] = int(m.group(2) or 0)
    return out


def test_ptxas_report_parser() -> None:
    text = """ptxas info    : Compiling entry function 'k' for 'sm_90'
ptxas info    : Function properties for k
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 76 registers, used 1 barriers, 16384 bytes smem
ptxas info    : Compiling entry function 'j' for 'sm_90'
ptxas info    : Function properties for j
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers"""
    assert ptxas_report(text) == {
        "k": {"registers": 76, "smem": 16384, "spill_stores": 4, "spill_loads": 4},
        "j": {"registers": 12, "smem": 0, "spill_stores": 0, "spill_loads": 0},
    }


def test_every_module_has_its_launches() -> None:
    assert set(LAUNCHES) == set(NAMES) | set(OPTIONAL)
    assert set(LAUNCHES["llm"]) == set(llm_cuda.KERNELS)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("module", "options"), VARIANTS, ids=lambda v: "-".join(v) if isinstance(v, tuple) else v)
def test_kernels_compile_and_fit_their_launch(tmp_path: Path, module: str, options: tuple[str, ...],
                                              arch: str) -> None:
    r = _nvcc(tmp_path, module, options, "--cubin", "-arch", arch, "-Xptxas", "-v", "-o", f"{module}.cubin")
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr.lower(), r.stderr
    assert (tmp_path / f"{module}.cubin").stat().st_size > 0
    report = ptxas_report(r.stderr + r.stdout)
    launches = LAUNCHES[module]
    assert set(report) == set(launches), f"entry points {sorted(report)}, launched {sorted(launches)}"
    for name, threads in launches.items():
        res = report[name]
        assert res["registers"] > 0, (name, res)
        assert res["spill_stores"] == 0 and res["spill_loads"] == 0, (name, res)
        assert res["registers"] * threads <= REGISTER_FILE, (name, res, threads)
        assert res["smem"] <= STATIC_SMEM, (name, res)


@pytest.mark.parametrize(("options", "dp2a"), [((), True), (("-DLLM_PLAIN_MAC",), False)])
def test_llm_multiply_path(tmp_path: Path, options: tuple[str, ...], dp2a: bool) -> None:
    r = _nvcc(tmp_path, "llm", options, "--ptx", "-arch", "sm_90", "-o", "llm.ptx")
    assert r.returncode == 0, r.stderr
    ptx = (tmp_path / "llm.ptx").read_text(encoding="utf-8")
    body = ptx[ptx.index(".entry llm_matmul_q8"):]
    # the intrinsics give dp2a.lo + dp2a.hi; nvcc 13 turns the portable multiply-adds into dp2a.lo of its
    # own (bytes moved into place), so only the .hi form tells the two builds apart
    assert "dp2a.lo.s32.s32" in body
    assert ("dp2a.hi.s32.s32" in body) is dp2a


def test_llm_prepared_formats_match_the_kernel_parameters(tmp_path: Path) -> None:
    """``gpu/llm_cuda.ARG_FORMATS`` (PyCUDA ``prepare``: P = device pointer, i = int32) against the
    parameter list nvcc gives each entry point in the PTX (.u64 pointers, .u32 ints)."""
    r = _nvcc(tmp_path, "llm", (), "--ptx", "-arch", "sm_90", "-o", "llm.ptx")
    assert r.returncode == 0, r.stderr
    ptx = (tmp_path / "llm.ptx").read_text(encoding="utf-8")
    want = {"P": ".u64", "i": ".u32", "q": ".u64"}
    for name, fmt in llm_cuda.ARG_FORMATS.items():
        m = re.search(r"\.entry " + name + r"\((.*?)\)", ptx, re.S)
        assert m, name
        params = re.findall(r"\.param (\.\w+) " + name + r"_param_\d+", m.group(1))
        assert params == [want[c] for c in fmt], (name, params, fmt)
