"""Speed measurement (`--mode=bench`): images/s of our train step, of the straightforward step, of the input.

Training runs on in-memory data; tracing and compiling happen in a warm-up that is not timed; then several
timed windows, reported by their median. With `--bench_baseline` the tutorial-style step (one `tf.function`
step per call, two tapes, float32, no XLA, no prefetch) runs on the same model in windows interleaved with
ours, so a speed-up is a ratio measured in one run on one (possibly busy) machine; `--bench_xla_baseline`
adds that step compiled with XLA on in-memory batches, the fair reference on GPUs.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dcgan_tf import data, distribute, losses, models, train
from dcgan_tf import images as images_lib
from dcgan_tf.config import Config, ConfigError
from dcgan_tf.inside import summary

# In-memory images per benchmark: enough for several distinct batches, small enough for any host.
NUM_EXAMPLES = 1024
# Classes of a --conditional bench whose --num_classes is 0 (as many as MNIST's).
BENCH_CLASSES = 10


def _device_name() -> str:
    """The accelerator's name, else the CPU's model name (what the speed belongs to)."""
    for gpu in tf.config.list_physical_devices('GPU'):
        details = tf.config.experimental.get_device_details(gpu)
        return f'GPU: {details.get("device_name", gpu.name)}'
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return f'CPU: {line.split(":", 1)[1].strip()} ({_cpu_count()} cores)'
    except OSError:
        pass
    return f'CPU: {platform.processor() or platform.machine()} ({_cpu_count()} cores)'


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == 'darwin' else peak / 2**10


def model_name(cfg: Config) -> str:
    """e.g. 'dcgan-64x64x3 (gf 64, df 64, z 100, kernel 5)'."""
    size = f'{cfg.resolution}x{cfg.resolution}x{cfg.channels}'
    if cfg.arch == 'tutorial':
        return f'tutorial-{size} (z {cfg.z_dim})'
    return f'{cfg.arch}-{size} (gf {cfg.gf_dim}, df {cfg.df_dim}, z {cfg.z_dim}, kernel {cfg.kernel_size})'


def _in_memory_source(cfg: Config) -> data.MemorySource:
    # Random pixels (and classes): the step's cost does not depend on what the images show.
    rng = np.random.default_rng(cfg.seed)
    shape = (NUM_EXAMPLES, cfg.resolution, cfg.resolution, cfg.channels)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    if not cfg.conditional:
        return data.MemorySource(name='in-memory random', images=pixels)
    classes = cfg.num_classes or BENCH_CLASSES
    return data.MemorySource(
        name='in-memory random',
        images=pixels,
        labels=rng.integers(0, classes, NUM_EXAMPLES),
        class_names=tuple(str(i) for i in range(classes)),
    )


def _whole_batches(images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    count = max(1, len(images) // batch_size)
    return [images[i * batch_size : (i + 1) * batch_size] for i in range(count)]


def train_flops_per_image(cfg: Config) -> int:
    """Floating-point operations one training step spends per image (multiply-adds count 2).

    G runs forward once and D twice (real and fake); the backward pass of each costs about twice its
    forward (gradients for the inputs and for the weights), so a step is about 3x the forward work.
    """
    described = summary.summarize(cfg)
    forward_g = sum(r.flops for r in described['generator'])
    forward_d = sum(r.flops for r in described['discriminator'])
    return 3 * (forward_g + 2 * forward_d)


def _timed_windows(run_window: Callable[[], None], num_windows: int) -> list[float]:
    seconds = []
    for _ in range(num_windows):
        start = time.perf_counter()
        run_window()
        seconds.append(time.perf_counter() - start)
    return seconds


# --- the two steps ---


class _OurStep:
    """The Trainer's step exactly as training runs it (strategy, precision, XLA, steps per call)."""

    def __init__(self, cfg: Config, source: data.Source, workdir: str):
        self.cfg = cfg
        self.trainer = train.Trainer(cfg, workdir, source=source)

    def run(self, num_steps: int) -> None:
        done = 0
        while done < num_steps:
            n = min(self.cfg.steps_per_call, num_steps - done)
            self.trainer.train_steps(n)  # Returns Python floats: the work is finished.
            done += n


class _BaselineStep:
    """The TF DCGAN tutorial's loop on the same model: what most TensorFlow DCGANs copy.

    One `tf.function` step per Python call, two tapes, Keras defaults (float32), noise drawn with
    `tf.random.normal`. Without XLA it reads a dataset of float32 images shuffled and batched without
    prefetch; with `jit_compile` (the XLA baseline) the step is compiled whole and reads batches kept as
    tensors, with no tf.data, as a user following TensorFlow's XLA guide writes it.
    """

    def __init__(self, cfg: Config, source: data.Source, jit_compile: bool = False):
        self.cfg = cfg
        policy = keras.mixed_precision.global_policy().name
        keras.mixed_precision.set_global_policy('float32')
        # Keras' own BatchNormalization, convolutions and dropout, as the tutorial's code gets.
        plain = cfg.replace(fused_batch_norm='false', fast_conv='off', fast_layers='false')
        try:
            self.generator = models.build_generator(plain)
            self.discriminator = models.build_discriminator(plain)
        finally:
            keras.mixed_precision.set_global_policy(policy)
        self.g_optimizer = keras.optimizers.Adam(cfg.g_lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2)
        self.d_optimizer = keras.optimizers.Adam(cfg.d_lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2)
        images = images_lib.to_unit_range(source.images)
        if jit_compile:
            # What the XLA guide's reader writes: one compiled step, batches already in device memory.
            batches = [tf.constant(b) for b in _whole_batches(images, cfg.batch_size)]
            self.iterator = itertools.cycle(batches)
        else:
            dataset = tf.data.Dataset.from_tensor_slices(images).shuffle(len(images), seed=cfg.seed)
            self.iterator = iter(dataset.repeat().batch(cfg.batch_size, drop_remainder=True))
        self.step_fn = tf.function(self._step, jit_compile=jit_compile)

    def _step(self, images: tf.Tensor) -> tf.Tensor:
        noise = tf.random.normal([self.cfg.batch_size, self.cfg.z_dim])
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = self.generator(noise, training=True)
            real_logits = self.discriminator(images, training=True)
            fake_logits = self.discriminator(fake, training=True)
            g_loss = tf.reduce_mean(losses.generator_loss(fake_logits))
            d_loss = tf.reduce_mean(losses.discriminator_loss(real_logits, fake_logits))
        g_vars = self.generator.trainable_variables
        d_vars = self.discriminator.trainable_variables
        self.g_optimizer.apply_gradients(zip(g_tape.gradient(g_loss, g_vars), g_vars, strict=True))
        self.d_optimizer.apply_gradients(zip(d_tape.gradient(d_loss, d_vars), d_vars, strict=True))
        return d_loss

    def run(self, num_steps: int) -> None:
        d_loss = None
        for _ in range(num_steps):
            d_loss = self.step_fn(next(self.iterator))
        if d_loss is not None:
            d_loss.numpy()  # Waits for the last step (a no-op on CPU, where calls are synchronous).


# --- reports ---


def _report(
    cfg: Config,
    kind: str,
    seconds: list[float],
    warmup_s: float,
    steps_per_window: int,
    options: dict[str, Any],
) -> dict[str, Any]:
    rates = [steps_per_window * cfg.batch_size / s for s in seconds]
    median = statistics.median(rates)
    return {
        'bench': kind,
        'images_per_second': round(median, 2),
        'ms_per_step': round(1000 * cfg.batch_size / median, 3),
        'window_images_per_second': [round(r, 2) for r in rates],
        'model': model_name(cfg),
        'batch_size': cfg.batch_size,
        **options,
        'steps_per_window': steps_per_window,
        'warmup_s': round(warmup_s, 2),
        'onednn': distribute.onednn_enabled(),
        'tensorflow': tf.__version__,
        'keras': keras.__version__,
        'device': _device_name(),
        'peak_memory_mb': round(peak_memory_mb(), 1),
    }


def bench_input(cfg: Config) -> dict[str, Any]:
    """Images/s of the configured input pipeline alone (`--bench=input`): data.make_dataset on its source."""
    source = data.load_source(cfg)
    iterator = iter(data.make_dataset(cfg, source))
    start = time.perf_counter()
    for _ in range(max(1, cfg.bench_warmup_steps)):
        next(iterator)
    warmup_s = time.perf_counter() - start

    def window() -> None:
        for _ in range(cfg.bench_steps):
            next(iterator)

    seconds = _timed_windows(window, cfg.bench_windows)
    options = {'dataset': data.describe(source), 'resolution': cfg.resolution, 'channels': cfg.channels}
    return _report(cfg, 'input', seconds, warmup_s, cfg.bench_steps, options)


def bench_step(cfg: Config) -> list[dict[str, Any]]:
    """Times our train step and, when asked, the straightforward ones, in interleaved windows.

    --bench_baseline adds the tutorial-style step, --bench_xla_baseline the same step compiled with XLA.

    Returns:
      One report per step measured: the baselines' first, then ours, which carries
      `speedup_vs_baseline` / `speedup_vs_baseline_xla` (ratios of the medians). Every report carries
      the model's training FLOPs per image and the arithmetic throughput they imply.
    """
    if (cfg.conditional or cfg.info_code) and (cfg.bench_baseline or cfg.bench_xla_baseline):
        raise ConfigError(
            'The baseline steps of --bench_baseline / --bench_xla_baseline are the plain DCGAN step: '
            'unconditional, without --info_code.'
        )
    source = _in_memory_source(cfg)
    cfg = data.resolve_classes(cfg, source)
    workdir = tempfile.mkdtemp(prefix='dcgan_bench_')
    # The Trainer sets Keras' global policy; put it back so later models in this process are unaffected.
    policy = keras.mixed_precision.global_policy().name
    try:
        ours = _OurStep(cfg, source, workdir)
        # Whole calls only, so every timed call runs the traced loop at its usual length.
        steps = max(cfg.bench_steps, cfg.steps_per_call)
        steps -= steps % cfg.steps_per_call
        candidates = {'ours': (ours, steps)}
        if cfg.bench_xla_baseline:
            xla = _BaselineStep(cfg, source, jit_compile=True)
            candidates = {'baseline_xla': (xla, cfg.bench_steps), **candidates}
        if cfg.bench_baseline:
            candidates = {'baseline': (_BaselineStep(cfg, source), cfg.bench_steps), **candidates}
        warmups = {}
        for name, (step, _) in candidates.items():
            start = time.perf_counter()
            # Two calls at least: the first traces; the second runs anything built lazily on first use.
            per_call = cfg.steps_per_call if name == 'ours' else 1
            step.run(max(cfg.bench_warmup_steps, 2 * per_call))
            warmups[name] = time.perf_counter() - start
        seconds = {name: [] for name in candidates}
        for _ in range(cfg.bench_windows):
            # Interleaved windows: a neighbour's load slows both steps alike, so the ratio holds.
            for name, (step, n) in candidates.items():
                seconds[name] += _timed_windows(lambda step=step, n=n: step.run(n), 1)
        reports, baselines = [], {}
        for name in ('baseline', 'baseline_xla'):
            if name not in candidates:
                continue
            options = {
                'precision': 'float32',
                'jit_compile': name == 'baseline_xla',
                'steps_per_call': 1,
                'fused_batch_norm': False,
                'fast_conv': 'off',
                'fast_layers': False,
                'replicas': 1,
            }
            baselines[name] = _report(cfg, name, seconds[name], warmups[name], cfg.bench_steps, options)
            reports.append(baselines[name])
        trainer = ours.trainer
        options = {
            'precision': trainer.generator.dtype_policy.name,
            'jit_compile': trainer.use_jit,
            'steps_per_call': cfg.steps_per_call,
            'fused_batch_norm': models.use_fast_layer(cfg.fused_batch_norm),
            'fast_conv': cfg.fast_conv,
            'fast_layers': models.use_fast_layer(cfg.fast_layers),
            'strategy': type(trainer.strategy).__name__,
            'replicas': trainer.num_replicas,
            'device_kind': distribute.device_kind(),
        }
        report = _report(cfg, 'step', seconds['ours'], warmups['ours'], steps, options)
        for name, baseline in baselines.items():
            ratio = report['images_per_second'] / baseline['images_per_second']
            report[f'speedup_vs_{name}'] = round(ratio, 3)
        reports.append(report)
        flops = train_flops_per_image(cfg)
        for r in reports:
            # Images/s as arithmetic throughput, to read against the device's peak.
            r['train_gflop_per_image'] = float(f'{flops / 1e9:.4g}')
            r['achieved_tflop_per_second'] = float(f'{flops * r["images_per_second"] / 1e12:.4g}')
        return reports
    finally:
        keras.mixed_precision.set_global_policy(policy)
        shutil.rmtree(workdir, ignore_errors=True)


def run(cfg: Config) -> list[dict[str, Any]]:
    """`--mode=bench`: measures, prints one JSON line per measured step on stdout, returns the reports."""
    reports = [bench_input(cfg)] if cfg.bench == 'input' else bench_step(cfg)
    for report in reports:
        print(json.dumps(report), flush=True)
    return reports
