"""README's small-data and upsampling tables: DiffAugment on 1,000 images, and resize vs transposed G.

  python benchmarks/small_data.py --mnist_dir=DIR --fashion_dir=DIR \
      --mnist_classifier=PATH --fashion_classifier=PATH [--steps=2000] [--out=runs/small_data]

DIRs hold the four IDX files of MNIST and of Fashion-MNIST; the classifiers are `--mode=classifier`
outputs. Small data: the first --num_images training images of each set (written as IDX files beside the
runs), trained with --augment=none and --augment=diffaugment for the same steps, scored on the full test
split by the project's classifier of that set. Upsampling: the demo (embedded digits) with
--upsample=transpose and resize, scored the same way, with the Nyquist share of spectral energy of 1,000
samples (dcgan_tf.spectrum) beside real digits'. Prints markdown tables and writes results.json.
Each run takes minutes on a CPU; nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from dcgan_tf import data  # noqa: E402
from dcgan_tf.quality import spectrum  # noqa: E402

FILES = ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz')
TEST_FILES = ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')


def _subset(source_dir: str, out_dir: str, num: int) -> str:
    os.makedirs(out_dir, exist_ok=True)
    for name in FILES:
        data.write_idx(os.path.join(out_dir, name), data.read_idx(os.path.join(source_dir, name))[:num])
    for name in TEST_FILES:  # The loader wants a test split too; evaluation uses the full one.
        target = os.path.join(out_dir, name)
        if not os.path.exists(target):
            os.symlink(os.path.abspath(os.path.join(source_dir, name)), target)
    return out_dir


def _main(*flags: str) -> str:
    cmd = [sys.executable, '-m', 'dcgan_tf.main', *flags]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(f'{" ".join(cmd)} failed:\n{result.stderr[-3000:]}')
    return result.stdout


def _train(workdir: str, flags: list[str]) -> dict:
    start = time.perf_counter()
    # The demo's recipe as these tables measured it: without its categorical code.
    _main('--flagfile=configs/demo.cfg', '--info_code=0', f'--workdir={workdir}', '--overwrite', *flags)
    wall = time.perf_counter() - start
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        rates = [json.loads(line)['images_per_second'] for line in f]
    rates = rates[1:] or rates  # The first window includes tracing.
    return {'wall_s': round(wall, 1), 'images_per_second': round(statistics.median(rates), 1)}


def _evaluate(workdir: str, dataset: str, data_dir: str, feature_net: str, classifier: str) -> dict:
    out = _main(
        '--mode=evaluate',
        f'--saved_model={workdir}/saved_model',
        f'--dataset={dataset}',
        f'--data_dir={data_dir}',
        f'--feature_net={feature_net}',
        f'--classifier_path={classifier}',
        '--eval_samples=2000',
        f'--workdir={workdir}/evaluate',
    )
    metrics = json.loads(out.splitlines()[0])['metrics']
    return {k: round(metrics[k], 4) for k in ('fid', 'confident', 'entropy_bits', 'coverage')}


def _samples(workdir: str, num: int) -> np.ndarray:
    from dcgan_tf import export  # noqa: PLC0415 - TensorFlow only here.

    images, _ = export.load(os.path.join(workdir, 'saved_model')).sample(num, seed=0)
    return images


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--mnist_dir', required=True)
    parser.add_argument('--fashion_dir', required=True)
    parser.add_argument('--mnist_classifier', required=True)
    parser.add_argument('--fashion_classifier', required=True)
    parser.add_argument('--num_images', type=int, default=1000)
    parser.add_argument('--steps', type=int, default=2000)
    parser.add_argument('--out', default='runs/small_data')
    parser.add_argument('--skip', default='', help='comma-separated: small, upsample')
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    results: dict = {'steps': args.steps, 'num_images': args.num_images, 'small': [], 'upsample': []}
    common = [f'--train_steps={args.steps}', '--sample_every=500', '--checkpoint_every=1000']

    if 'small' not in args.skip:
        sets = (
            ('mnist', args.mnist_dir, 'mnist', args.mnist_classifier),
            ('fashion_mnist', args.fashion_dir, 'fashion_mnist', args.fashion_classifier),
        )
        for dataset, source_dir, net, classifier in sets:
            subset = _subset(source_dir, os.path.join(out, f'{dataset}_{args.num_images}'), args.num_images)
            for aug in ('none', 'diffaugment'):
                workdir = os.path.join(out, f'{dataset}_{aug}')
                row = {'dataset': dataset, 'augment': aug}
                row.update(
                    _train(
                        workdir, [*common, f'--dataset={dataset}', f'--data_dir={subset}', f'--augment={aug}']
                    )
                )
                row.update(_evaluate(workdir, dataset, source_dir, net, classifier))
                results['small'].append(row)
                print(json.dumps(row), flush=True)

    if 'upsample' not in args.skip:
        real = data.read_idx(os.path.join(args.mnist_dir, TEST_FILES[0]))[:1000]
        results['real_nyquist_share'] = round(spectrum.nyquist_share(real), 5)
        for upsample in ('transpose', 'resize'):
            workdir = os.path.join(out, f'demo_{upsample}')
            row = {'upsample': upsample}
            row.update(_train(workdir, [*common, f'--upsample={upsample}']))
            row.update(_evaluate(workdir, 'mnist', args.mnist_dir, 'mnist', args.mnist_classifier))
            row['nyquist_share'] = round(spectrum.nyquist_share(_samples(workdir, 1000)), 5)
            results['upsample'].append(row)
            print(json.dumps(row), flush=True)

    with open(os.path.join(out, 'results.json'), 'w') as f:
        json.dump(results, f, indent=1)
    print(json.dumps(results, indent=1))


if __name__ == '__main__':
    main()
