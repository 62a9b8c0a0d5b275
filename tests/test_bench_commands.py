"""The GPU benchmark commands run end to end without a GPU (NumPy rows, the GPU rows skipped with their
reason), so a lent device's one call (bench/device_check.sh) does not fail on a bench bug. Real kinds,
real NumPy backend; the smallest sizes."""

from __future__ import annotations

import json

import pytest

from bench import gpu_kernels, gpu_llm
from gpu.kinds import KINDS


def test_gpu_kernels_default_kinds_run_and_llm_generate_is_pointed_elsewhere(capsys) -> None:
    assert gpu_kernels.main(["--sizes", "small", "--repeat", "1", "--json"]) in (0, None)
    doc = json.loads(capsys.readouterr().out)
    kinds = {r["kind"] for r in doc["rows"]}
    assert kinds == set(KINDS) - {"llm-generate"} and all(r["numpy"]["units_per_s"] > 0 for r in doc["rows"])
    assert (doc["pycuda"] is None) == (doc["pycuda_unavailable"] is not None)
    with pytest.raises(SystemExit):
        gpu_kernels.main(["--kinds", "llm-generate"])
    assert "bench.gpu_llm" in capsys.readouterr().err


def test_gpu_llm_tiny_preset_runs(capsys) -> None:
    assert gpu_llm.main(["--preset", "tiny", "--prompt", "4", "--new", "3"]) in (0, None)
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["rows"]["numpy"]["decode_tok_s"] > 0 and doc["preset"] == "tiny"


def test_device_check_script_parses() -> None:
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "device_check.sh"
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
