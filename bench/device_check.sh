#!/usr/bin/env bash
# The GPU checks owed by issue 12, in one call on a lent device (docs/gpu.md, "On a lent GPU"):
#
#   make device-wheels                      # here: wheels of what the GPU tests import, into .device/
#   run(command="bash bench/device_check.sh", carry=[".device"], timeout_s=590)
#
# The device image has Python 3.12 with NumPy, PyTorch, CuPy, pytest, hypothesis and httpx, no package
# index: the project's other imports and PyCUDA come as wheels in the git-ignored .device/wheels (its
# NumPy is the image's; the integer results do not depend on it, and the script prints the version).
# Writes under $OUT: device.txt, pytest_gpu.txt, gpu_kernels.json (+ .err), gpu_llm.txt. Every step has
# its own time limit and a failing step does not stop the next, so one call brings back all it can.
set -uo pipefail
OUT=${OUT:-/tmp/aitbc-device-out}
PY=${PYTHON:-python3}
DEPS=${DEPS:-/tmp/aitbc-deps}
WHEELS=.device/wheels
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYCUDA_CACHE_DIR=/tmp/aitbc-pycuda-cache
mkdir -p "$PYCUDA_CACHE_DIR"  # PyCUDA creates only its default cache folder

{
  date -u
  nvidia-smi -L
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  command -v nvcc && nvcc --version | tail -n 2
  "$PY" --version
  "$PY" -c "import numpy; print('numpy', numpy.__version__)"
  "$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
  "$PY" -m pip install -q --no-index --no-deps --target "$DEPS" "$WHEELS"/*.whl && echo "wheels installed"
} > "$OUT/device.txt" 2>&1
export PYTHONPATH="$DEPS:$PWD"
"$PY" -c "import pycuda, cbor2, nacl, trio, plyvel, rbcl, mclbn256; print('imports ok')" >> "$OUT/device.txt" 2>&1

# the GPU-marked tests: kernels against NumPy bit for bit, the golden vectors on the device
timeout 240 "$PY" -m pytest -m gpu -p no:cacheprovider -q tests/test_gpu.py tests/test_golden_vectors.py \
  > "$OUT/pytest_gpu.txt" 2>&1
echo "exit status $?" >> "$OUT/pytest_gpu.txt"

# kernel timings against the library baselines
timeout 150 "$PY" -m bench.gpu_kernels --json > "$OUT/gpu_kernels.json" 2> "$OUT/gpu_kernels.err"
echo "exit status $?" >> "$OUT/gpu_kernels.err"

# llm-generate: PyCUDA tokens/s against PyTorch/CuPy on the same GPU (SmolLM2-135M's shapes)
timeout 150 "$PY" -m bench.gpu_llm --preset smol > "$OUT/gpu_llm.txt" 2>&1
echo "exit status $?" >> "$OUT/gpu_llm.txt"

tail -n 4 "$OUT/device.txt" "$OUT/pytest_gpu.txt" "$OUT/gpu_kernels.err" "$OUT/gpu_llm.txt"
