"""Sample quality: FID, KID, an Inception-style score and class coverage over a pluggable feature network.

The maths streams: features arrive batch by batch into running sums (mean and covariance in float64,
the class-probability statistics) plus a bounded random reservoir for the kernel distance, so 50k
samples need memory for one batch and the reservoir, not for 50k feature vectors.
`--mode=evaluate` (`run`) measures a generator (SavedModel, checkpoint, untrained) or real data.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from absl import logging

from dcgan_tf.config import Config, ConfigError

KID_RESERVOIR = 10000  # Feature vectors kept per set for KID: 80 MB at 2048-d float32.
EVAL_BATCH = 250
INCEPTION_SIZE = 299
# Lower is better for these; the others (score, coverage) are better higher.
LOWER_IS_BETTER = ('fid', 'kid')
# A sample counts as confidently classified above this top probability (`confident`).
CONFIDENT_PROBABILITY = 0.9
BEST_DIR = 'best'
BEST_FILE = 'best.json'


# --- the maths ---


def sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition.

    Rounding makes a covariance's smallest eigenvalues slightly negative; they are clipped to 0, so
    the result stays real and finite where a general `sqrtm` returns complex values or NaN.
    """
    matrix = np.asarray(matrix, np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrt(sigma1 @ sigma2)) for covariances, without the non-symmetric product's sqrtm.

    sigma1 @ sigma2 is similar to s @ sigma2 @ s with s = sqrt(sigma1), which is symmetric PSD: the
    same eigenvalues, so the trace of the root is the sum of their (clipped) square roots.
    """
    root1 = sqrtm_psd(sigma1)
    inner = root1 @ np.asarray(sigma2, np.float64) @ root1
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance of two Gaussians: |mu1 - mu2|^2 + tr(s1 + s2 - 2 sqrt(s1 s2)) (Heusel et al.)."""
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return float(max(value, 0.0))  # Rounding can give -1e-12 for identical sets.


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # KID's kernel (Binkowski et al. 2018): (x.y / d + 1)^3, no parameter to tune.
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD with the cubic polynomial kernel (diagonals left out of the within-set means)."""
    m, n = len(x), len(y)
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.mean())


def kernel_distance(
    x: np.ndarray, y: np.ndarray, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: the mean and standard deviation of the unbiased MMD^2 over random subsets of both sets."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise ValueError(f'KID needs at least 2 samples per set, got {len(x)} and {len(y)}.')
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)])
        for _ in range(num_subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    p = np.asarray(p, np.float64)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=axis)


def inception_score(probabilities: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) || p(y))) = exp(H(p(y)) - E_x H(p(y|x))): from 1 to the number of classes."""
    moments = ProbabilityMoments()
    moments.update(probabilities)
    return moments.score()


def class_coverage(probabilities: np.ndarray) -> float:
    """Entropy of the histogram of predicted classes over log(classes): 1 all equally, 0 one class."""
    moments = ProbabilityMoments()
    moments.update(probabilities)
    return moments.coverage()


def confident_share(probabilities: np.ndarray) -> float:
    """Share of samples whose top class probability exceeds CONFIDENT_PROBABILITY: 1 when all are clear."""
    moments = ProbabilityMoments()
    moments.update(probabilities)
    return moments.confident()


def histogram_entropy_bits(probabilities: np.ndarray) -> float:
    """Entropy of the predicted-class histogram in bits: log2(classes) when every class is as frequent."""
    moments = ProbabilityMoments()
    moments.update(probabilities)
    return moments.entropy_bits()


# --- streaming accumulators ---


class GaussianMoments:
    """Running count, sum and sum of outer products (float64): the mean and covariance of a stream."""

    def __init__(self):
        self.count = 0
        self.total = None
        self.outer = None

    def update(self, features: np.ndarray) -> None:
        features = np.asarray(features, np.float64)
        if self.total is None:
            self.total = np.zeros(features.shape[1])
            self.outer = np.zeros((features.shape[1], features.shape[1]))
        self.count += len(features)
        self.total += features.sum(axis=0)
        self.outer += features.T @ features

    def mean_and_covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """The mean and the unbiased (n - 1) sample covariance."""
        if self.count < 2:
            raise ValueError(f'A covariance needs at least 2 samples, got {self.count}.')
        mean = self.total / self.count
        covariance = (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)
        return mean, covariance


class ProbabilityMoments:
    """Running sums for the score (mean p(y|x), mean entropy), the argmax histogram (coverage, entropy_bits)
    and the count of confident samples."""

    def __init__(self):
        self.count = 0
        self.total = None
        self.entropy_total = 0.0
        self.histogram = None
        self.confident_count = 0

    def update(self, probabilities: np.ndarray) -> None:
        p = np.asarray(probabilities, np.float64)
        if self.total is None:
            self.total = np.zeros(p.shape[1])
            self.histogram = np.zeros(p.shape[1])
        self.count += len(p)
        self.total += p.sum(axis=0)
        self.entropy_total += float(_entropy(p).sum())
        self.histogram += np.bincount(p.argmax(axis=1), minlength=p.shape[1])
        self.confident_count += int((p.max(axis=1) > CONFIDENT_PROBABILITY).sum())

    def score(self) -> float:
        marginal = self.total / self.count
        return float(np.exp(_entropy(marginal) - self.entropy_total / self.count))

    def coverage(self) -> float:
        # + 0.0 turns the -0.0 of a one-class histogram into 0.0.
        return float(_entropy(self.histogram / self.count) / np.log(len(self.histogram))) + 0.0

    def entropy_bits(self) -> float:
        return float(_entropy(self.histogram / self.count) / np.log(2.0)) + 0.0

    def confident(self) -> float:
        return self.confident_count / self.count


class Reservoir:
    """A uniform random sample of at most `capacity` rows of a stream (Vitter's algorithm R)."""

    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = capacity
        self.rows: np.ndarray | None = None
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def update(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.float32)
        if self.rows is None:
            self.rows = np.zeros((self.capacity, rows.shape[1]), np.float32)
        for row in rows:
            if self.seen < self.capacity:
                self.rows[self.seen] = row
            else:
                slot = self.rng.integers(self.seen + 1)
                if slot < self.capacity:
                    self.rows[slot] = row
            self.seen += 1

    def sample(self) -> np.ndarray:
        return self.rows[: min(self.seen, self.capacity)]


class FeatureStats:
    """Everything the metrics need from one set of images, accumulated batch by batch."""

    def __init__(self, seed: int = 0, reservoir: int = KID_RESERVOIR):
        self.gaussian = GaussianMoments()
        self.probabilities = ProbabilityMoments()
        self.reservoir = Reservoir(reservoir, seed)

    @property
    def count(self) -> int:
        return self.gaussian.count

    def update(self, features: np.ndarray, probabilities: np.ndarray | None) -> None:
        self.gaussian.update(features)
        self.reservoir.update(features)
        if probabilities is not None:
            self.probabilities.update(probabilities)


def compare(
    generated: FeatureStats,
    real: FeatureStats,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """fid, kid, kid_std; when the net classifies also score, coverage, confident, entropy_bits and
    the same four of the real set (`*_real`)."""
    mu_g, sigma_g = generated.gaussian.mean_and_covariance()
    mu_r, sigma_r = real.gaussian.mean_and_covariance()
    kid, kid_std = kernel_distance(
        generated.reservoir.sample(), real.reservoir.sample(), kid_subsets, kid_subset_size, seed
    )
    metrics = {'fid': frechet_distance(mu_g, sigma_g, mu_r, sigma_r), 'kid': kid, 'kid_std': kid_std}
    for stats, suffix in ((generated, ''), (real, '_real')):
        moments = stats.probabilities
        if moments.count:
            metrics[f'score{suffix}'] = moments.score()
            metrics[f'coverage{suffix}'] = moments.coverage()
            metrics[f'confident{suffix}'] = moments.confident()
            metrics[f'entropy_bits{suffix}'] = moments.entropy_bits()
    return metrics


def is_better(metric: str, value: float, best: float | None) -> bool:
    """Whether `value` of `metric` beats `best` (None: nothing yet)."""
    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best


# --- feature networks ---


@dataclasses.dataclass
class FeatureNet:
    """images [N, H, W, C] float32 in [-1, 1] -> (features [N, D], class probabilities [N, K] or None)."""

    name: str
    resizer: str
    fn: Callable[[Any], tuple[Any, Any]]

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        features, probabilities = self.fn(images)
        return np.asarray(features), None if probabilities is None else np.asarray(probabilities)


def _inception_model(weights: str):
    import keras  # noqa: PLC0415 - TensorFlow loads only when a metric is computed.

    notop = weights not in ('imagenet', 'none') and 'notop' in os.path.basename(weights)
    if weights == 'imagenet':
        try:
            model = keras.applications.InceptionV3(weights='imagenet')
        except Exception as e:  # Keras raises URL/OS/HTTP errors of several kinds offline.
            raise ConfigError(
                f'Could not get the ImageNet InceptionV3 weights ({type(e).__name__}); on a machine without '
                f'internet download inception_v3_weights_tf_dim_ordering_tf_kernels.h5 elsewhere and pass it '
                f'as --inception_weights=FILE.'
            ) from e
    elif notop:
        model = keras.applications.InceptionV3(include_top=False, weights=None, pooling='avg')
        model.load_weights(weights)
        return model, False
    else:
        model = keras.applications.InceptionV3(weights=None)
        if weights != 'none':
            model.load_weights(weights)
    # The 2048-d pool features for the distances and the 1000-way softmax for score and coverage.
    return keras.Model(model.inputs, [model.get_layer('avg_pool').output, model.output]), True


def inception_net(weights: str = 'imagenet') -> FeatureNet:
    """InceptionV3's pool features at 299x299 (grey repeated to RGB; [-1, 1] is its own input range)."""
    import tensorflow as tf  # noqa: PLC0415

    model, has_top = _inception_model(weights)

    @tf.function(reduce_retracing=True)
    def fn(images):
        images = tf.convert_to_tensor(images, tf.float32)
        if images.shape[-1] == 1:
            images = tf.repeat(images, 3, axis=-1)
        images = tf.image.resize(images, [INCEPTION_SIZE, INCEPTION_SIZE], method='bilinear')
        outputs = model(images, training=False)
        return (outputs[0], outputs[1]) if has_top else (outputs, None)

    return FeatureNet('inception', f'bilinear to {INCEPTION_SIZE}x{INCEPTION_SIZE}, grey as RGB', fn)


def classifier_net(name: str, path: str) -> FeatureNet:
    """The project's MNIST / Fashion-MNIST classifier: 256-d penultimate features and its softmax."""
    import tensorflow as tf  # noqa: PLC0415

    from dcgan_tf.quality import classifier  # noqa: PLC0415

    model = classifier.load_feature_model(path)

    @tf.function(reduce_retracing=True)
    def fn(images):
        return model(classifier.to_classifier_input(images), training=False)

    return FeatureNet(name, 'none at 28x28 (else bilinear to 28x28, grey by channel mean)', fn)


def build_feature_net(cfg: Config) -> FeatureNet:
    """The --feature_net of the config."""
    if cfg.feature_net == 'inception':
        return inception_net(cfg.inception_weights)
    return classifier_net(cfg.feature_net, cfg.classifier_path)


def accumulate(net: FeatureNet, batches: Iterator[np.ndarray], seed: int = 0) -> FeatureStats:
    """Feeds batches of [-1, 1] images through the net into a FeatureStats."""
    stats = FeatureStats(seed)
    for batch in batches:
        stats.update(*net(batch))
    return stats


# --- image sources ---


def generator_batches(generate: Callable[[np.ndarray], np.ndarray], z_dim: int, num: int, seed: int):
    """Batches of generate(z) for `num` z ~ N(0, 1) drawn from `seed` (the same images every call)."""
    rng = np.random.default_rng(seed)
    for start in range(0, num, EVAL_BATCH):
        z = rng.standard_normal((min(EVAL_BATCH, num - start), z_dim)).astype(np.float32)
        yield np.asarray(generate(z), np.float32)


def array_batches(images: np.ndarray, num: int):
    """Batches of the first `num` uint8 images, scaled to [-1, 1]."""
    for start in range(0, min(num, len(images)), EVAL_BATCH):
        yield images[start : min(start + EVAL_BATCH, num)].astype(np.float32) / 127.5 - 1.0


def real_stats(cfg: Config, net: FeatureNet, num: int, split: str) -> FeatureStats:
    """Statistics of `num` real images of the configured data set's `split` (first images, fixed order)."""
    from dcgan_tf import data  # noqa: PLC0415

    source = data.load_source(cfg, split)
    if source.images is None:
        images = np.round((data.take_images(source, num, cfg) + 1.0) * 127.5).astype(np.uint8)
    else:
        images = source.images
    if len(images) < num:
        raise ConfigError(
            f'The {split} split of {cfg.dataset} has {len(images)} images, fewer than the {num} asked for; '
            f'lower --eval_samples / --eval_real_samples.'
        )
    return accumulate(net, array_batches(images, num), cfg.seed + 1)


def _generator_from_source(cfg: Config, workdir: str):
    """(generate(z) -> [-1, 1] images, z_dim, description) for --eval_source=generator/untrained."""
    from dcgan_tf import export, models  # noqa: PLC0415

    if cfg.eval_source == 'untrained':
        generator = models.build_generator(cfg)
        return (lambda z: generator(z, training=False)), cfg.z_dim, f'untrained generator (seed {cfg.seed})'
    if cfg.saved_model:
        loaded = export.load(cfg.saved_model, cfg.sampler)
        return (
            lambda z: loaded.generate(z).astype(np.float32) / 127.5 - 1.0,
            loaded.z_dim,
            f'SavedModel {cfg.saved_model} ({cfg.sampler}, step {loaded.metadata.get("step")})',
        )
    run_cfg, generator, ema_generator, step = export.restore_generators(workdir)
    chosen = ema_generator if (ema_generator is not None and cfg.sampler == 'ema') else generator
    kind = 'ema' if chosen is ema_generator else 'raw'
    return (
        (lambda z: chosen(z, training=False)),
        run_cfg.z_dim,
        f'checkpoint of {workdir} ({kind}, step {step})',
    )


# --- during training: periodic evaluation and the best checkpoint ---


def best_dir(checkpoint_dir: str) -> str:
    """Where the best-evaluated checkpoint lives: beside the rolling ones, never rotated out by them."""
    return os.path.join(checkpoint_dir, BEST_DIR)


def read_best(directory: str) -> dict[str, Any] | None:
    """{'step', 'metric', 'value', 'checkpoint'} of the best evaluation so far, or None."""
    import tensorflow as tf  # noqa: PLC0415

    path = os.path.join(directory, BEST_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


class PeriodicEvaluator:
    """`--eval_every`: measures the training generator, logs eval/* and keeps the best checkpoint.

    The real statistics are computed once, at construction; each call draws the same `--eval_samples`
    z's (numpy, seeded), so successive values differ only by the generator and the training RNG is not
    touched (a resumed run stays exact). The EMA generator is measured when the run keeps one: it is
    what the export samples by default.

    Args:
      cfg: the run's Config.
      trainer: a train.Trainer (its checkpoint, step, generators, is_chief, manager).
      workdir: the run directory; summaries go to `<workdir>/tensorboard/eval`.
    """

    def __init__(self, cfg: Config, trainer, workdir: str):
        import tensorflow as tf  # noqa: PLC0415

        self.cfg = cfg
        self.trainer = trainer
        self.net = build_feature_net(cfg)
        self.real = real_stats(cfg, self.net, cfg.eval_real_samples or cfg.eval_samples, cfg.eval_real_split)
        self.best_dir = best_dir(trainer.manager.directory)
        self.manager = tf.train.CheckpointManager(
            trainer.checkpoint, self.best_dir, max_to_keep=1, step_counter=trainer.step
        )
        best = read_best(self.best_dir)
        self.best = best if best and best.get('metric') == cfg.eval_metric else None
        self.writer = (
            tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard', 'eval'))
            if trainer.is_chief
            else tf.summary.create_noop_writer()
        )

    def __call__(self, step: int) -> dict[str, float]:
        """Evaluates now; saves a best checkpoint when the metric improved. Returns the metrics."""
        import tensorflow as tf  # noqa: PLC0415

        start = time.perf_counter()
        generator = getattr(self.trainer, 'ema_generator', None)
        generator = self.trainer.generator if generator is None else generator
        batches = generator_batches(
            lambda z: generator(z, training=False), self.cfg.z_dim, self.cfg.eval_samples, self.cfg.seed
        )
        metrics = compare(
            accumulate(self.net, batches, self.cfg.seed),
            self.real,
            self.cfg.kid_subsets,
            self.cfg.kid_subset_size,
            self.cfg.seed,
        )
        if self.cfg.eval_metric not in metrics:
            raise ConfigError(
                f'--eval_metric={self.cfg.eval_metric} needs class probabilities, which this '
                f'--feature_net={self.cfg.feature_net} does not give; use fid or kid.'
            )
        value = metrics[self.cfg.eval_metric]
        improved = is_better(self.cfg.eval_metric, value, self.best and self.best['value'])
        if improved:
            # Every worker saves (the collectives need it); only the chief's copy is kept.
            checkpoint = self.manager.save(checkpoint_number=step)
            self.best = {
                'step': step,
                'metric': self.cfg.eval_metric,
                'value': value,
                'checkpoint': checkpoint,
            }
            if self.trainer.is_chief:
                with tf.io.gfile.GFile(os.path.join(self.best_dir, BEST_FILE), 'w') as f:
                    f.write(json.dumps(self.best) + '\n')
        metrics['eval_seconds'] = time.perf_counter() - start
        with self.writer.as_default(step=step):
            for key, metric_value in metrics.items():
                tf.summary.scalar(f'eval/{key}', metric_value)
            tf.summary.scalar(f'eval/best_{self.cfg.eval_metric}', self.best['value'])
        self.writer.flush()
        logging.info(
            'Step %d: %s; best %s %.4g at step %d%s.',
            step,
            ', '.join(f'{k} {v:.4g}' for k, v in metrics.items()),
            self.cfg.eval_metric,
            self.best['value'],
            self.best['step'],
            ' (new best, saved)' if improved else '',
        )
        return metrics


def restore_best_generators(workdir: str):
    """(cfg, generator, ema_generator or None, step) from `<workdir>/checkpoints/best`."""
    from dcgan_tf import export  # noqa: PLC0415

    return export.restore_generators(
        workdir,
        checkpoint_dir=best_dir(os.path.join(workdir, 'checkpoints')),
        missing='has no best checkpoint: train with --eval_every > 0 to keep one',
    )


def export_best(workdir: str, path: str | None = None) -> str:
    """`--export_best`: the best-evaluated checkpoint -> a SavedModel (default `<workdir>/saved_model`)."""
    from dcgan_tf import export  # noqa: PLC0415

    cfg, generator, ema_generator, step = restore_best_generators(workdir)
    path = path or os.path.join(workdir, export.EXPORT_DIR)
    logging.info('Exporting the best checkpoint (step %d) to %s.', step, path)
    return export.save(path, generator, cfg, step, ema_generator)


# --- --mode=evaluate ---


def format_table(result: dict[str, Any]) -> str:
    """The metrics and the protocol as aligned `name  value` lines."""
    lines = []
    for section in ('metrics', 'protocol'):
        lines.append(f'{section}:')
        width = max(len(k) for k in result[section])
        for key, value in result[section].items():
            text = f'{value:.6g}' if isinstance(value, float) else str(value)
            lines.append(f'  {key:<{width}}  {text}')
    lines.append(f'seconds: {result["seconds"]:.1f}')
    return '\n'.join(lines)


def run(cfg: Config, workdir: str) -> dict[str, Any]:
    """`--mode=evaluate`: measures --eval_source against real --eval_real_split images.

    Prints one JSON line and a readable table; returns {'metrics', 'protocol', 'seconds'}.
    """
    start = time.perf_counter()
    net = build_feature_net(cfg)
    num_real = cfg.eval_real_samples or cfg.eval_samples
    real = real_stats(cfg, net, num_real, cfg.eval_real_split)
    if cfg.eval_source == 'real':
        if cfg.eval_real_split == 'train':
            raise ConfigError('--eval_source=real compares the train split with --eval_real_split=test.')
        generated = real_stats(cfg, net, cfg.eval_samples, 'train')
        description = f'real {cfg.dataset} train-split images (the floor)'
    else:
        generate, z_dim, description = _generator_from_source(cfg, workdir)
        generated = accumulate(net, generator_batches(generate, z_dim, cfg.eval_samples, cfg.seed), cfg.seed)
    metrics = compare(generated, real, cfg.kid_subsets, cfg.kid_subset_size, cfg.seed)
    result = {
        'metrics': metrics,
        'protocol': {
            'evaluated': description,
            'num_generated': generated.count,
            'num_real': real.count,
            'real': f'{cfg.dataset} {cfg.eval_real_split} split, first {real.count}',
            'feature_net': net.name if net.name == 'inception' else f'{net.name} ({cfg.classifier_path})',
            'resizer': net.resizer,
            'kid': f'{cfg.kid_subsets} subsets of {min(cfg.kid_subset_size, generated.count, real.count)}',
            'seed': cfg.seed,
        },
        'seconds': round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result), flush=True)
    print(format_table(result), flush=True)
    return result
