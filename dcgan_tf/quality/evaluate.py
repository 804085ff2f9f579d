"""Evaluation: `--mode=evaluate` (a generator, an untrained one or real data against the real split), the
periodic evaluation during training that keeps the best checkpoint, and `--export_best`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from dcgan_tf import data, export, models
from dcgan_tf import images as images_lib
from dcgan_tf import workdir as workdir_lib
from dcgan_tf.config import Config, ConfigError
from dcgan_tf.quality.features import FeatureNet, accumulate, build_feature_net
from dcgan_tf.quality.metrics import FeatureStats, compare, is_better

EVAL_BATCH = 250
# Below this many samples FID and KID are biased upwards and noisy: the figures describe the sample
# size more than the generator (papers use 10,000 to 50,000).
MIN_MEANINGFUL_SAMPLES = 1000
BEST_DIR = 'best'
BEST_FILE = 'best.json'


# --- image sources ---


def generator_batches(generate: Callable, z_dim: int, num: int, seed: int, num_classes: int = 0):
    """Batches of generate(z) for `num` z ~ N(0, 1) drawn from `seed` (the same images every call).

    A conditional generator (`num_classes` > 0) is called as generate(z, labels), sample i of class
    i mod num_classes, so every class is drawn as often; the batches are then (images, labels).
    """
    rng = np.random.default_rng(seed)
    for start in range(0, num, EVAL_BATCH):
        z = rng.standard_normal((min(EVAL_BATCH, num - start), z_dim)).astype(np.float32)
        if not num_classes:
            yield np.asarray(generate(z), np.float32)
            continue
        labels = (np.arange(start, start + len(z)) % num_classes).astype(np.int32)
        yield np.asarray(generate(z, labels), np.float32), labels


def array_batches(images: np.ndarray, num: int):
    """Batches of the first `num` uint8 images, scaled to [-1, 1]."""
    for start in range(0, min(num, len(images)), EVAL_BATCH):
        yield images_lib.to_unit_range(images[start : min(start + EVAL_BATCH, num)])


def real_stats(cfg: Config, net: FeatureNet, num: int, split: str) -> FeatureStats:
    """Statistics of `num` real images of the configured data set's `split` (first images, fixed order)."""
    source = data.load_source(cfg, split)
    if source.images is None:
        images = images_lib.to_uint8(data.take_images(source, num, cfg))
    else:
        images = source.images
    if len(images) < num:
        raise ConfigError(
            f'The {split} split of {cfg.dataset} has {len(images)} images, fewer than the {num} asked for; '
            f'lower --eval_samples / --eval_real_samples.'
        )
    return accumulate(net, array_batches(images, num), cfg.seed + 1)


def keras_generate(generator: keras.Model, num_classes: int) -> Callable:
    """generate(z) (or generate(z, labels) for a conditional G) -> [-1, 1] images, BatchNorm in inference."""
    if not num_classes:
        return lambda z: generator(z, training=False)
    return lambda z, labels: generator(
        [tf.convert_to_tensor(z), tf.one_hot(labels, num_classes)], training=False
    )


def _generator_from_source(cfg: Config, workdir: str):
    """(generate, z_dim, num_classes, description) for --eval_source=generator/untrained."""
    if cfg.eval_source == 'untrained':
        if cfg.conditional and not cfg.num_classes:
            raise ConfigError(
                '--eval_source=untrained --conditional needs --num_classes, the width of the G.'
            )
        generator = models.build_generator(cfg)
        classes = cfg.num_classes if cfg.conditional else 0
        return (
            keras_generate(generator, classes),
            cfg.z_dim,
            classes,
            f'untrained generator (seed {cfg.seed})',
        )
    if cfg.saved_model:
        loaded = export.load(cfg.saved_model, cfg.sampler)
        return (
            lambda z, labels=None: images_lib.to_unit_range(loaded.generate(z, labels=labels)),
            loaded.z_dim,
            loaded.num_classes,
            f'SavedModel {cfg.saved_model} ({cfg.sampler}, step {loaded.metadata.get("step")})',
        )
    run_cfg, generator, ema_generator, step = export.restore_generators(workdir)
    chosen = ema_generator if (ema_generator is not None and cfg.sampler == 'ema') else generator
    kind = 'ema' if chosen is ema_generator else 'raw'
    classes = run_cfg.num_classes if run_cfg.conditional else 0
    return (
        keras_generate(chosen, classes),
        run_cfg.z_dim,
        classes,
        f'checkpoint of {workdir} ({kind}, step {step})',
    )


# --- during training: periodic evaluation and the best checkpoint ---


def best_dir(checkpoint_dir: str) -> str:
    """Where the best-evaluated checkpoint lives: beside the rolling ones, never rotated out by them."""
    return os.path.join(checkpoint_dir, BEST_DIR)


def read_best(directory: str) -> dict[str, Any] | None:
    """{'step', 'metric', 'value', 'checkpoint'} of the best evaluation so far, or None."""
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
        self.cfg = cfg
        self.trainer = trainer
        self.net = build_feature_net(cfg)
        self.real = real_stats(cfg, self.net, cfg.eval_real_samples or cfg.eval_samples, cfg.eval_real_split)
        self.best_dir = best_dir(trainer.manager.directory)
        self.manager = tf.train.CheckpointManager(
            trainer.checkpoint, self.best_dir, max_to_keep=1, step_counter=trainer.step
        )
        self.last: dict[str, float] = {}  # The latest evaluation's metrics.
        best = read_best(self.best_dir)
        self.best = best if best and best.get('metric') == cfg.eval_metric else None
        self.writer = (
            tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard', 'eval'))
            if trainer.is_chief
            else tf.summary.create_noop_writer()
        )

    def __call__(self, step: int) -> dict[str, float]:
        """Evaluates now; saves a best checkpoint when the metric improved. Returns the metrics."""
        start = time.perf_counter()
        generator = getattr(self.trainer, 'ema_generator', None)
        generator = self.trainer.generator if generator is None else generator
        classes = self.cfg.num_classes if self.cfg.conditional else 0
        batches = generator_batches(
            keras_generate(generator, classes), self.cfg.z_dim, self.cfg.eval_samples, self.cfg.seed, classes
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
        self.last = metrics
        return metrics


def restore_best_generators(workdir: str):
    """(cfg, generator, ema_generator or None, step) from `<workdir>/checkpoints/best`."""
    return export.restore_generators(
        workdir,
        checkpoint_dir=best_dir(os.path.join(workdir, 'checkpoints')),
        missing='has no best checkpoint: train with --eval_every > 0 to keep one',
    )


def export_best(workdir: str, path: str | None = None) -> str:
    """`--export_best`: the best-evaluated checkpoint -> a SavedModel (default `<workdir>/saved_model`)."""
    path, target = export.default_target(workdir, path)
    export.check_target(path, target)
    cfg, generator, ema_generator, step = restore_best_generators(workdir)
    logging.info('Exporting the best checkpoint (step %d) to %s.', step, path)
    classes = workdir_lib.read_class_names(workdir)
    return export.save(path, generator, cfg, step, ema_generator, class_names=classes, target=target)


# --- --mode=evaluate ---


def small_sample_warning(num: int, dim: int) -> str | None:
    """Why figures from `num` samples of `dim`-dimensional features mean little, or None."""
    if num >= max(MIN_MEANINGFUL_SAMPLES, dim):
        return None
    singular = ''
    if num <= dim:
        singular = f', fewer than the {dim} feature dimensions, so the covariance is singular'
    return (
        f'only {num} samples{singular}: FID and KID from so few are biased upwards and noisy; compare '
        f'figures measured on 10,000 or more (papers use 50,000)'
    )


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
    if result.get('warning'):
        lines.append(f'warning: {result["warning"]}')
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
        generate, z_dim, classes, description = _generator_from_source(cfg, workdir)
        batches = generator_batches(generate, z_dim, cfg.eval_samples, cfg.seed, classes)
        generated = accumulate(net, batches, cfg.seed)
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
    dim = 0 if generated.gaussian.total is None else len(generated.gaussian.total)
    warning = small_sample_warning(min(generated.count, real.count), dim)
    if warning:
        result['warning'] = warning
        logging.warning('%s.', warning[0].upper() + warning[1:])
    print(json.dumps(result), flush=True)
    print(format_table(result), flush=True)
    return result
