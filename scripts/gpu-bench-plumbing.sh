#!/usr/bin/env bash
# The GPU benchmark's plumbing, tried without a GPU: gpu_bench writes every case at a small shape with our CPU
# backend's values (--cases-only --cpu-check), bench/gpu_reference.py runs the reference of every case on torch's
# CPU (run --device cpu) and `check` compares the two per case (loss and items within the fixtures' tolerance,
# gradient norms within 1e-4): the case folders, the reference's criteria and inputs (bench/ref_tasks.py) and the
# JSON lines fit together before a GPU machine runs scripts/gpu-check.sh. Not part of CI (it needs torch and
# ultralytics 8.3.117):
#
#     PYTHON=/path/to/venv/bin/python bash scripts/gpu-bench-plumbing.sh [--batch 2] [--size 128]
#
# Extra arguments go to gpu_bench (e.g. --cases seg,pose). Exit status: non-zero when a case differs.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
out=$(mktemp -d /tmp/yl-gpu-plumbing.XXXXXX)
trap 'rm -rf "$out"' EXIT
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--batch 2 --size 128)
cargo run -q --release -p yolo-loss-cuda --example gpu_bench -- --out "$out" --cases-only --cpu-check "${args[@]}" >/dev/null
"$python" bench/gpu_reference.py run "$out" --device cpu --max-iters 1 --warmup 0 >"$out/reference.json"
"$python" bench/gpu_reference.py check "$out/ours.json" "$out/reference.json"
