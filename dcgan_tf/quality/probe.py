"""The paper's feature test: a linear classifier on the discriminator's features (`--mode=probe`).

Every D layer's activations are max-pooled to 4x4 and concatenated (as the authors' SVHN code did),
then scikit-learn's LinearSVC, with C chosen on a held-out validation split, learns the classes from
N labelled examples per class. The same probe on a randomly initialised D is the floor: the gap is
what adversarial training taught D.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import numpy as np

from dcgan_tf import images as images_lib
from dcgan_tf.config import Config, ConfigError, parse_labels_per_class

POOLED_SIZE = 4
# Standardised features of 1-2k dimensions: with C up to 1, liblinear ran for over half an hour on all
# 60k MNIST examples (a shared 2-core CPU); a smaller C converges much faster.
C_GRID = (0.0001, 0.001, 0.01, 0.1)
VALIDATION_PER_CLASS = 100  # Held out of the train split to choose C; never trained on.
FEATURE_BATCH = 500


def pool_to_grid(activations, size: int = POOLED_SIZE):
    """Max-pools [N, H, W, C] to about size x size (window ceil(H / size), 'same' padding), flattened.

    7x7 (MNIST's second layer) -> 4x4 with 2x2 windows; maps already this small stay as they are.
    """
    import tensorflow as tf  # noqa: PLC0415

    height = activations.shape[1]
    window = max(1, math.ceil(height / size))
    pooled = tf.nn.max_pool2d(activations, window, window, 'SAME')
    return tf.reshape(pooled, [tf.shape(pooled)[0], -1])


def feature_extractor(discriminator):
    """images -> the concatenated, pooled activations of every conv layer of D (after its nonlinearity)."""
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    outputs = [
        layer.output
        for layer in discriminator.layers
        if isinstance(layer, keras.layers.LeakyReLU) and len(layer.output.shape) == 4
    ]
    if not outputs:
        raise ConfigError(f'{discriminator.name} has no LeakyReLU feature maps to probe.')
    model = keras.Model(discriminator.inputs, outputs)

    @tf.function(input_signature=[tf.TensorSpec([None, *discriminator.input_shape[1:]], tf.float32)])
    def extract(images):
        maps = model(images, training=False)  # BatchNorm uses its moving statistics.
        maps = maps if isinstance(maps, (list, tuple)) else [maps]
        return tf.concat([pool_to_grid(m) for m in maps], axis=1)

    return extract


def extract_features(extract, images: np.ndarray) -> np.ndarray:
    """Features of uint8 images [N, H, W, C], in batches."""
    parts = [
        np.asarray(extract(images_lib.to_unit_range(images[i : i + FEATURE_BATCH])))
        for i in range(0, len(images), FEATURE_BATCH)
    ]
    return np.concatenate(parts)


def split_labelled(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): VALIDATION_PER_CLASS per class held out, then `per_class`
    per class for training (0: all the rest). Both balanced, disjoint and fixed by the seed."""
    rng = np.random.default_rng(seed)
    train, validation = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        validation.extend(members[:VALIDATION_PER_CLASS])
        rest = members[VALIDATION_PER_CLASS:]
        train.extend(rest if per_class == 0 else rest[:per_class])
    return np.sort(train), np.sort(validation)


def fit_linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    validation_x: np.ndarray,
    validation_y: np.ndarray,
    c_grid: tuple[float, ...] = C_GRID,
) -> tuple[Any, float]:
    """A standardised LinearSVC with the C that scores best on the validation set; (model, C).

    The C values are fitted in parallel, one per CPU core: liblinear is single-threaded, and with all
    59,000 labelled MNIST images one fit takes minutes.
    """
    from joblib import Parallel, delayed  # noqa: PLC0415 (scikit-learn's own dependency)

    fits = Parallel(n_jobs=min(len(c_grid), os.cpu_count() or 1))(
        delayed(_fit_one)(train_x, train_y, c) for c in c_grid
    )
    scores = [model.score(validation_x, validation_y) for model in fits]
    best = int(np.argmax(scores))  # The first of equal scores: the smallest C, the simplest model.
    return fits[best], c_grid[best]


def _fit_one(train_x: np.ndarray, train_y: np.ndarray, c: float):
    import warnings  # noqa: PLC0415

    from sklearn.exceptions import ConvergenceWarning  # noqa: PLC0415
    from sklearn.pipeline import make_pipeline  # noqa: PLC0415
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415
    from sklearn.svm import LinearSVC  # noqa: PLC0415

    # random_state: the dual solver (fewer examples than features) visits examples in random order.
    model = make_pipeline(
        StandardScaler(), LinearSVC(C=c, dual='auto', tol=1e-3, max_iter=1000, random_state=0)
    )
    with warnings.catch_warnings():
        # A small C grid point may stop at max_iter; the validation split judges the result anyway.
        warnings.simplefilter('ignore', ConvergenceWarning)
        return model.fit(train_x, train_y)


def probe_discriminator(
    discriminator,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    labels_per_class: list[int],
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Test accuracy of the linear probe on D's features for each labels-per-class count.

    Args:
      discriminator: a Keras D (trained or not).
      train, test: (uint8 images, labels); the probe trains on the train split, scores on test.
      labels_per_class: counts; 0 means every labelled example (minus the validation ones).
      seed: picks the labelled subset and the validation examples.

    Returns:
      {'10': {'accuracy', 'c', 'num_train'}, ..., 'all': {...}}.
    """
    extract = feature_extractor(discriminator)
    splits = {n: split_labelled(train[1], n, seed) for n in labels_per_class}
    # Only the labelled examples some probe uses go through D (10 per class needs 2,000, not 60,000).
    needed = np.unique(np.concatenate([np.concatenate(s) for s in splits.values()]))
    row = np.zeros(len(train[1]), np.int64)
    row[needed] = np.arange(len(needed))
    train_features = extract_features(extract, train[0][needed])
    test_features = extract_features(extract, test[0])
    results = {}
    for per_class, (train_idx, validation_idx) in splits.items():
        model, c = fit_linear_probe(
            train_features[row[train_idx]],
            train[1][train_idx],
            train_features[row[validation_idx]],
            train[1][validation_idx],
        )
        results['all' if per_class == 0 else str(per_class)] = {
            'accuracy': float(model.score(test_features, test[1])),
            'c': c,
            'num_train': len(train_idx),
        }
    return results


def trained_features_dim(discriminator) -> int:
    """Length of the probe's feature vector for this D."""
    shape = discriminator.input_shape[1:]
    dummy = np.zeros((1, *shape), np.uint8)
    return extract_features(feature_extractor(discriminator), dummy).shape[1]


def format_table(result: dict[str, Any]) -> str:
    """Accuracy per labels-per-class count, trained vs random D, then the protocol."""
    lines = [f'{"labels/class":<14}{"trained D":>12}{"random D":>12}']
    for key in result['trained']:
        lines.append(
            f'{key:<14}{result["trained"][key]["accuracy"]:>12.4f}{result["random"][key]["accuracy"]:>12.4f}'
        )
    lines += [f'  {k}: {v}' for k, v in result['protocol'].items()]
    lines.append(f'seconds: {result["seconds"]:.1f}')
    return '\n'.join(lines)


def restore_discriminator(workdir: str, mode: str = 'probe'):
    """(run Config, D with the newest restorable checkpoint's weights, step) of the run in `workdir`."""
    from dcgan_tf import export, models  # noqa: PLC0415 - TensorFlow only on this path.

    run_cfg = export.run_config(workdir)
    export.require_unconditional(run_cfg, workdir, mode)
    built, step = export.restore_models(workdir, run_cfg, {'discriminator': models.build_discriminator})
    return run_cfg, built['discriminator'], step


def run(cfg: Config, workdir: str) -> dict[str, Any]:
    """`--mode=probe`: the trained D of the run in `workdir` against a random D of the same shape.

    The data set comes from the flags (--dataset, --data_dir), the model shape from the run's config.cfg.
    Prints one JSON line and a table; returns {'trained': ..., 'random': ..., 'protocol': ..., 'seconds'}.
    """
    from dcgan_tf import data, models  # noqa: PLC0415

    start = time.perf_counter()
    if cfg.dataset not in ('mnist', 'fashion_mnist'):
        raise ConfigError(
            f'--mode=probe needs a data set with labelled train and test splits (mnist, fashion_mnist), '
            f'not {cfg.dataset}.'
        )
    counts = parse_labels_per_class(cfg.probe_labels_per_class)
    run_cfg, trained, step = restore_discriminator(workdir)
    # The data at the resolution and channels D was trained on.
    data_cfg = cfg.replace(resolution=run_cfg.resolution, channels=run_cfg.channels)
    train_source = data.load_source(data_cfg, 'train')
    test_source = data.load_source(data_cfg, 'test')
    num_test = min(cfg.probe_test_examples, test_source.num_examples)
    train = (train_source.images, train_source.labels)
    test = (test_source.images[:num_test], test_source.labels[:num_test])
    random_d = models.build_discriminator(run_cfg.replace(seed=cfg.seed + 1))
    result = {
        'trained': probe_discriminator(trained, train, test, counts, cfg.seed),
        'random': probe_discriminator(random_d, train, test, counts, cfg.seed),
        'protocol': {
            'discriminator': f'{workdir} step {step}',
            'dataset': cfg.dataset,
            'features': f'{int(trained_features_dim(trained))} (every LeakyReLU map max-pooled to 4x4)',
            'validation': f'{VALIDATION_PER_CLASS} per class from train, C in {list(C_GRID)}',
            'num_test': num_test,
            'seed': cfg.seed,
        },
    }
    result['seconds'] = round(time.perf_counter() - start, 1)
    print(json.dumps(result), flush=True)
    print(format_table(result), flush=True)
    return result
