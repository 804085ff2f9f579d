"""A trained run's TFLite exports against its SavedModel: file sizes, pixel differences for the same z, and
a held-out classifier's score and coverage of each one's samples. About a minute on 2 CPU cores.

    python benchmarks/tflite_agreement.py --workdir=runs/demo \
        --classifier_path=runs/classifiers/mnist/classifier.keras [--num=2000] [--out_dir=/tmp/agreement]

Writes the SavedModel and both .tflite files to --out_dir (never into the run), prints one JSON line.
"""

import argparse
import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402

from dcgan_tf import export, tflite  # noqa: E402
from dcgan_tf.quality import evaluate  # noqa: E402


def _class_metrics(net, pictures: np.ndarray) -> dict[str, float]:
    stats = evaluate.accumulate(net, evaluate.array_batches(pictures, len(pictures)))
    moments = stats.probabilities
    return {'score': moments.score(), 'coverage': moments.coverage(), 'confident': moments.confident()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--workdir', required=True)
    parser.add_argument('--classifier_path', required=True)
    parser.add_argument('--num', type=int, default=2000)
    parser.add_argument('--out_dir', default='/tmp/tflite_agreement')
    args = parser.parse_args()

    saved_model = export.export_from_checkpoint(args.workdir, os.path.join(args.out_dir, 'saved_model'))
    loaded = export.load(saved_model)
    _, generator, ema_generator, _ = export.restore_generators(args.workdir)
    z = np.random.default_rng(0).standard_normal((args.num, loaded.z_dim)).astype(np.float32)
    reference = loaded.generate(z)
    net = evaluate.classifier_net('mnist', args.classifier_path)
    result = {'num': args.num, 'saved_model': _class_metrics(net, reference)}
    for fmt, name in tflite.FILE_NAMES.items():
        path = tflite.export_generators(
            generator, ema_generator, loaded.z_dim, os.path.join(args.out_dir, name), fmt
        )
        pictures = tflite.load(path).generate(z)
        difference = np.abs(pictures.astype(int) - reference)
        result[fmt] = {
            'bytes': os.path.getsize(path),
            'max_abs_difference': int(difference.max()),
            'mean_abs_difference': float(difference.mean()),
            **_class_metrics(net, pictures),
        }
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
