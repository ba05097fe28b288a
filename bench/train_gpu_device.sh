#!/usr/bin/env bash
# bench/train_gpu.py on a lent GPU machine (the session's `device` tool), as one prepared command.
#
# That machine's python3 (3.12) has torch, transformers, numpy and tensorboard but not megatron-core or
# loguru, and it cannot download: they travel as wheels in .whl/ (git-ignored, 2.7 MB), fetched here once:
#
#     bash bench/train_gpu_device.sh --fetch
#
# then one device run: carry [".whl"], command "bash bench/train_gpu_device.sh", timeout_s 540. The JSON
# summary, the log and the GPU's name come back from $OUT; record them in BENCHMARKS.md with the command.
# `--smoke` runs the same steps on the tiny shape (what tests/test_train_gpu_bench.py checks on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PINS=(megatron-core==0.16.1 loguru==0.7.3)  # megatron-core as pyproject.toml pins it
if [ "${1:-}" = "--fetch" ]; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${PINS[@]}"
  ls -l .whl
  exit 0
fi
# nothing is fetched from here on: the device machine has no network
if ! ls .whl/megatron_core-*.whl .whl/loguru-*.whl > /dev/null 2>&1; then
  echo "train_gpu_device.sh: .whl/ lacks the megatron-core and loguru wheels; run 'bash bench/train_gpu_device.sh --fetch'" \
       "on a machine with the package index, then carry .whl to the device run" >&2
  exit 3
fi
# the device's own torch runs the benchmark: it must have CUDA and be recent enough for megatron-core 0.16
python3 - "$@" <<'PY' || exit 4
import sys, torch
major, minor = (int(x) for x in torch.__version__.split(".")[:2])
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}); device {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
if not torch.cuda.is_available() and "--smoke" not in sys.argv[1:]:
    sys.exit("train_gpu_device.sh: torch sees no CUDA device")
if (major, minor) < (2, 4):
    sys.exit(f"train_gpu_device.sh: torch {torch.__version__} is older than 2.4, which megatron-core 0.16 needs")
PY
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ruyi2_site .whl/*.whl
export PYTHONPATH="/tmp/ruyi2_site:$PWD" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/train_gpu}"
mkdir -p "$out"
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
fi
python3 -c "import torch, transformers, megatron.core; print('torch', torch.__version__, 'transformers', transformers.__version__, 'megatron-core', megatron.core.__version__)" | tee -a "$out/gpu.txt"
python3 bench/train_gpu.py --plan "$@" 2>&1 | tee "$out/plan.txt"  # refuses (status 2) a plan that does not fit
python3 bench/train_gpu.py "$@" --out "$out/train_gpu.json" 2>&1 | tee "$out/log"
