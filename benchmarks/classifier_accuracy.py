"""Trains the feature-network classifiers on the full MNIST and Fashion-MNIST train splits and checks the
test accuracy the project promises (MNIST >= 99.0%, Fashion-MNIST >= 90%). Several minutes on 2 CPU cores.

    python benchmarks/classifier_accuracy.py --mnist_dir=DIR --fashion_dir=DIR [--out_dir=runs/classifiers]

Each DIR holds the four IDX files of its data set (MNIST e.g. from
https://storage.googleapis.com/cvdf-datasets/mnist/; Fashion-MNIST from Debian's dataset-fashion-mnist).

Writes <out_dir>/<dataset>/classifier.keras (+ .json) and exits 1 if a classifier misses its bar.
"""

import argparse
import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from dcgan_tf.config import Config  # noqa: E402
from dcgan_tf.quality import classifier  # noqa: E402

BARS = {'mnist': 0.990, 'fashion_mnist': 0.900}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--mnist_dir', default='mnist_idx')
    parser.add_argument('--fashion_dir', default='/usr/share/datasets/fashion-mnist')
    parser.add_argument('--out_dir', default='runs/classifiers')
    parser.add_argument('--datasets', default='mnist,fashion_mnist')
    parser.add_argument('--epochs', type=int, default=12)
    args = parser.parse_args()
    failed = False
    for name in args.datasets.split(','):
        workdir = os.path.join(args.out_dir, name)
        cfg = Config(
            mode='train_classifier',
            dataset=name,
            data_dir={'mnist': args.mnist_dir, 'fashion_mnist': args.fashion_dir}[name],
            workdir=workdir,
            batch_size=128,
            classifier_epochs=args.epochs,
        )
        result = classifier.train_classifier(cfg, workdir)
        result['bar'] = BARS[name]
        result['passed'] = result['test_accuracy'] >= BARS[name]
        failed |= not result['passed']
        print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
