#!/usr/bin/env bash
# GPU figures for README "Speed": DCGAN-64 and the tutorial MNIST model under several step options.
# Run from the repo root on a machine with TensorFlow and a GPU; prints one JSON line per measurement.
#   bash benchmarks/gpu_bench.sh [extra flags]   (output also goes to ${OUT:-/tmp}/gpu_bench.jsonl)
set -uo pipefail
out=${OUT:-/tmp}/gpu_bench.jsonl
bench() { python3 -m dcgan_tf.main --bench_steps=20 --bench_windows=5 "$@" 2>&1 | grep '^{' | tee -a "$out"; }
b64=--flagfile=configs/bench64.cfg
bench $b64 --precision=float32 --jit_compile=false --bench_baseline
bench $b64 --precision=float32 --jit_compile=true
bench $b64 --precision=mixed_float16 --jit_compile=true
bench $b64 --precision=mixed_float16 --jit_compile=true --steps_per_call=10
bench $b64 --precision=mixed_bfloat16 --jit_compile=true --batch_size=1024 --steps_per_call=10
bench $b64 --precision=mixed_float16 --jit_compile=true --batch_size=1024 --steps_per_call=10
bench --flagfile=configs/bench_mnist.cfg --precision=auto --jit_compile=true --steps_per_call=10 --bench_baseline
# Default flags against the XLA-compiled straightforward step, at both batch sizes, in one process each.
bench $b64 --bench_baseline --bench_xla_baseline
bench $b64 --bench_xla_baseline --batch_size=1024
bench $b64 --strategy=mirrored --devices=GPU:0  # per-replica XLA on one GPU, to compare with one_device above
