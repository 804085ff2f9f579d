"""Runs the README's speed table: DCGAN-64 at batch 128 and the tutorial's MNIST model at batch 256.

For each model: `--mode=bench --bench_baseline` with the config's default precision and again with
--precision=float32 (each run times the straightforward step and ours in interleaved windows, so the
ratio holds on a busy machine), then, when a Python with torch is given, pytorch/examples' step with the
same layers, in windows alternating with ours in one process. Writes a Markdown table
(benchmarks/results.md by default).

    python benchmarks/run_benchmarks.py [--torch_python=/path/to/python-with-torch] [--rounds=2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {
    'DCGAN-64 (64x64x3)': ('configs/bench64.cfg', 'dcgan64', 128),
    'TF tutorial MNIST (28x28x1)': ('configs/bench_mnist.cfg', 'tutorial', 256),
}


def _json_lines(command: list[str]) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    if result.returncode != 0:
        sys.exit(f'{" ".join(command)} failed:\n{result.stderr[-2000:]}')
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]


def _bench(flagfile: str, extra: list[str]) -> list[dict]:
    return _json_lines(
        [sys.executable, '-m', 'dcgan_tf.main', f'--flagfile={flagfile}', '--bench_baseline', *extra]
    )


def _torch(torch_python: str, model: str, batch: int, flagfile: str, extra: list[str]) -> list[dict]:
    """[torch's report, ours]: both in one process, alternating windows (torch_dcgan.py --interleave)."""
    script = os.path.join(ROOT, 'benchmarks', 'torch_dcgan.py')
    command = [torch_python, script, f'--model={model}', f'--batch_size={batch}', f'--interleave={flagfile}']
    return _json_lines([*command, *extra])


def measure(name: str, flagfile: str, torch_model: str, batch: int, args) -> list[dict]:
    """Rows for one model; every ratio is a median over rounds of ratios taken side by side."""
    extra = [f'--bench_steps={args.steps}', f'--bench_windows={args.windows}', '--bench_warmup_steps=2']
    runs = {'default': [], 'float32': [], 'torch': []}
    for _ in range(args.rounds):
        runs['default'].append(_bench(flagfile, extra))
        runs['float32'].append(_bench(flagfile, [*extra, '--precision=float32']))
        if args.torch_python:
            runs['torch'].append(
                _torch(
                    args.torch_python,
                    torch_model,
                    batch,
                    flagfile,
                    [f'--steps={args.steps}', f'--windows={args.windows}', '--warmup_steps=2'],
                )
            )
    rows = []
    baselines = [r[0]['images_per_second'] for rs in ('default', 'float32') for r in runs[rs]]
    rows.append(
        dict(runs['default'][0][0], name=name, step='baseline (tutorial-style tf.function)', ratio=1.0)
    )
    for key in ('default', 'float32'):
        ours = [r[1] for r in runs[key]]
        row = dict(ours[0], name=name, step=f'ours ({ours[0]["precision"]})')
        row['images_per_second'] = statistics.median(o['images_per_second'] for o in ours)
        row['ratio'] = statistics.median(o['speedup_vs_baseline'] for o in ours)
        if runs['torch'] and key == 'default':
            row['vs_torch'] = statistics.median(t[1]['speedup_vs_torch'] for t in runs['torch'])
        rows.append(row)
    rows[0]['images_per_second'] = statistics.median(baselines)
    if runs['torch']:
        torch_row = dict(runs['torch'][0][0], name=name, step='pytorch/examples step, same layers')
        torch_row['images_per_second'] = statistics.median(t[0]['images_per_second'] for t in runs['torch'])
        rows.append(torch_row)  # Timed beside ours, not beside the baseline: no ratio to it.
    return rows


def markdown(rows: list[dict]) -> str:
    """The README table: one row per (model, step)."""
    lines = [
        '| model | batch | step | images/s | vs baseline | vs PyTorch | peak memory |',
        '|---|---:|---|---:|---:|---:|---:|',
    ]
    for r in rows:
        vs_torch = f'{r["vs_torch"]:.2f}x' if 'vs_torch' in r else ''
        ratio = f'{r["ratio"]:.2f}x' if 'ratio' in r else ''
        lines.append(
            f'| {r["name"]} | {r["batch_size"]} | {r["step"]} | {r["images_per_second"]:.0f} | '
            f'{ratio} | {vs_torch} | {r["peak_memory_mb"] / 1024:.1f} GiB |'
        )
    device = rows[0].get('device', platform.processor())
    versions = f'TensorFlow {rows[0].get("tensorflow", "?")}'
    torch_rows = [r for r in rows if 'torch' in r]
    if torch_rows:
        versions += f', PyTorch {torch_rows[0]["torch"]}'
    lines.append('')
    lines.append(f'Measured on {device}, {versions}; ratios are medians of side-by-side measurements.')
    return '\n'.join(lines) + '\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--torch_python', default='', help='a Python with torch (requirements-torch.txt)')
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--steps', type=int, default=5, help='steps per timed window')
    parser.add_argument('--windows', type=int, default=5)
    parser.add_argument('--only', choices=('dcgan64', 'tutorial'), default=None)
    parser.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'results.md'))
    args = parser.parse_args()
    rows = []
    for name, (flagfile, torch_model, batch) in MODELS.items():
        if args.only in (None, torch_model):
            rows += measure(name, flagfile, torch_model, batch, args)
    table = markdown(rows)
    with open(args.out, 'w') as f:
        f.write(table)
    print(table)


if __name__ == '__main__':
    main()
