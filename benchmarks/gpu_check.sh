#!/usr/bin/env bash
# The prepared CUDA check of the training loop, for a machine with a GPU: FN3 through the one
# loop in float32, float16 autocast (gradient scaler) and bfloat16 autocast, and BNNN SVI, on
# CUDA (cuda_check.py); then the throughput benchmark on CUDA (gpu_throughput.py). With two or
# more GPUs it also runs the two-process FN3 fit over nccl and compares it with one process.
# Writes benchmarks/results/cuda_check.json and gpu_throughput_cuda.json.
#   usage: bash benchmarks/gpu_check.sh [python]   (default: the python on PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
$PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device")'
$PY benchmarks/cuda_check.py
$PY benchmarks/gpu_throughput.py --device cuda --out benchmarks/results/gpu_throughput_cuda.json
if [ "$($PY -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
    out=$(mktemp -d)
    $PY -m torch.distributed.run --standalone --nproc-per-node 2 examples/distributed_fit.py \
        --device cuda --epochs 5 --out "$out/two"
    $PY examples/distributed_fit.py --device cuda --epochs 5 --out "$out/one"
    $PY - "$out" <<'PY'
import json, sys
one, two = (json.load(open(f"{sys.argv[1]}/{k}/report.json")) for k in ("one", "two"))
for name in ("full", "smallest"):
    gap = abs(one["test_accuracy"][name] - two["test_accuracy"][name])
    print(f"{name}: one process {one['test_accuracy'][name]:.4f}, two (nccl) "
          f"{two['test_accuracy'][name]:.4f}")
    assert gap <= 0.02, f"one and two processes differ by {gap:.4f} on the {name} network"
PY
fi
