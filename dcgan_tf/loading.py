"""The loader every sampling tool goes through: an export written by export.save, numpy in and out.

`load` gives a LoadedGenerator (its signatures behind checks that fail in one sentence); ClassGenerator
is one class of a conditional export with the calls of an unconditional one. TensorFlow only: no
model code, so a tool that samples needs nothing of the training.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import tensorflow as tf

from dcgan_tf.config import MAX_SAMPLES, ConfigError
from dcgan_tf.workdir import checkpoints as workdir_checkpoints

MAX_INTERP_STEPS = 1024
# z is drawn from N(0, 1), where |z| > 10 has odds of 1e-23: a far larger value is a broken input, and
# one large enough overflows the generator's float32 into NaN pixels.
MAX_ABS_Z = 100.0


def check_z(z: np.ndarray, z_dim: int, what: str = 'z') -> np.ndarray:
    """z as float32 [N, z_dim]; ConfigError for strings, another shape, NaN/Inf or absurd sizes."""
    z = np.asarray(z)
    if z.dtype.kind not in 'fiu':
        raise ConfigError(f'{what} holds {z.dtype} values, not numbers; z vectors are floats.')
    if z.ndim != 2 or z.shape[1] != z_dim:
        raise ConfigError(f'{what} has shape {z.shape}, but this generator takes z of shape [N, {z_dim}].')
    wide = z.astype(np.float64)
    if not np.isfinite(wide).all():
        raise ConfigError(f'{what} holds NaN or Inf values; z vectors are finite draws from N(0, 1).')
    if wide.size and np.abs(wide).max() > MAX_ABS_Z:
        raise ConfigError(
            f'{what} holds values up to {np.abs(wide).max():.3g}; z vectors are draws from N(0, 1), '
            f'accepted within +-{MAX_ABS_Z:g}.'
        )
    return z.astype(np.float32)


def check_sample_args(num: int, seed: int) -> None:
    """The `sample` signature's bounds, as one sentence before any graph runs."""
    if not 0 < num <= MAX_SAMPLES:
        raise ConfigError(f'num={num} must be between 1 and {MAX_SAMPLES}.')
    if not 0 <= seed < 2**63:
        raise ConfigError(f'seed={seed} must be between 0 and 2**63 - 1.')


def sample_z(num: int, seed: int, z_dim: int) -> np.ndarray:
    """The z's the `sample` signature draws for (num, seed), computed outside the SavedModel."""
    return tf.random.stateless_normal([num, z_dim], seed=tf.constant([seed, 0], tf.int64)).numpy()


def check_labels(labels, num_classes: int, num: int, what: str = 'label') -> np.ndarray | None:
    """A conditional export's labels as int32 [num] (one label is repeated; -1: every class in turn).

    None for an unconditional one, which refuses labels other than None and -1; ConfigError with one
    sentence for a label outside [0, num_classes).
    """
    if not num_classes:
        if labels is not None and np.any(np.asarray(labels) != -1):
            raise ConfigError(f'This generator is unconditional: it draws no classes, so drop {what}.')
        return None
    if labels is None or np.ndim(labels) == 0:
        label = -1 if labels is None else int(labels)
        labels = np.arange(num) % num_classes if label == -1 else np.full(num, label)
    labels = np.asarray(labels)
    if labels.dtype.kind not in 'iu' or labels.shape != (num,):
        raise ConfigError(
            f'{what} must be {num} integer class labels, not {labels.dtype} of shape {labels.shape}.'
        )
    if labels.size and not 0 <= labels.min() <= labels.max() < num_classes:
        raise ConfigError(
            f'{what} {labels.min() if labels.min() < 0 else labels.max()} is not a class of this generator: '
            f'it draws classes 0 to {num_classes - 1}.'
        )
    return labels.astype(np.int32)


class LoadedGenerator:
    """A loaded export: numpy in, numpy out; `metadata` holds z_dim, resolution, step, flags, ...

    A conditional one (`num_classes` > 0, `class_names`) draws the class its calls give (`labels`, or
    one `label`; -1 or None: every class in turn).

    Args:
      module: the object `tf.saved_model.load` returned.
      sampler: 'ema' (default) or 'raw'.
    """

    def __init__(self, module, sampler: str = 'ema'):
        if sampler not in ('ema', 'raw'):
            raise ConfigError(f'sampler={sampler!r} must be ema or raw.')
        self.module = module
        self.sampler = getattr(module, sampler)
        self.metadata = json.loads(module.metadata_json.numpy().decode())
        self.z_dim = int(self.metadata['z_dim'])
        self.num_classes = int(self.metadata.get('num_classes', 0))
        self.class_names = tuple(self.metadata.get('class_names', ()))
        # z [N, z_dim] (and classes [N, num_classes]) -> float32 images in [-1, 1], differentiable; None
        # in exports made before it.
        self.generate_float = getattr(self.sampler, 'generate_float', None)
        # What a folder of its samples records: the same run, step and sampler give the same images.
        text = module.metadata_json.numpy() + sampler.encode()
        self.fingerprint = hashlib.sha256(text).hexdigest()

    def check_z(self, z: np.ndarray, what: str = 'z') -> np.ndarray:
        """z as float32 [N, z_dim]; ConfigError for strings, another shape, NaN/Inf or absurd sizes."""
        return check_z(z, self.z_dim, what)

    def labels(self, labels, num: int) -> np.ndarray | None:
        """`check_labels` for this generator: int32 [num] labels, or None when it is unconditional."""
        return check_labels(labels, self.num_classes, num)

    def generate(self, z: np.ndarray, batch_size: int = 256, labels=None) -> np.ndarray:
        """uint8 images [N, H, W, C] for z [N, z_dim] (and `labels`), in batches to bound memory."""
        z = self.check_z(z)
        labels = self.labels(labels, len(z))
        parts = []
        for i in range(0, len(z), batch_size):
            args = [tf.constant(z[i : i + batch_size])]
            if labels is not None:
                args.append(tf.constant(labels[i : i + batch_size]))
            parts.append(self.sampler.serving_default(*args)['images'].numpy())
        return np.concatenate(parts) if parts else np.zeros((0,), np.uint8)

    def sample(self, num: int, seed: int, label: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images, z) for `num` z's drawn from `seed`; the same seed gives the same images."""
        check_sample_args(num, seed)
        self.labels(label, num)  # The label's checks, as one sentence before the graph runs.
        args = [tf.constant(num, tf.int32), tf.constant(seed, tf.int64)]
        if self.num_classes:
            args.append(tf.constant(-1 if label is None else label, tf.int32))
        out = self.sampler.sample(*args)
        return out['images'].numpy(), out['z'].numpy()

    def interpolate(
        self,
        z0: np.ndarray,
        z1: np.ndarray,
        steps: int,
        spherical: bool = True,
        label0: int | None = None,
        label1: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images, z) along the path from z0 to z1, both ends included; a conditional generator
        walks from class `label0` to `label1` (both 0 when not given)."""
        if not 2 <= steps <= MAX_INTERP_STEPS:
            raise ConfigError(f'steps={steps} must be between 2 and {MAX_INTERP_STEPS}.')
        z0 = self.check_z(np.reshape(z0, (1, -1)), 'z0')[0]
        z1 = self.check_z(np.reshape(z1, (1, -1)), 'z1')[0]
        args = [tf.constant(z0), tf.constant(z1), tf.constant(steps, tf.int32), tf.constant(bool(spherical))]
        if self.num_classes:
            ends = [0 if label is None else label for label in (label0, label1)]
            args += [tf.constant(int(self.labels(ends, 2)[i]), tf.int32) for i in range(2)]
        else:  # Refuses labels, with one sentence.
            self.labels([-1 if label is None else label for label in (label0, label1)], 2)
        out = self.sampler.interpolate(*args)
        return out['images'].numpy(), out['z'].numpy()


class ClassGenerator:
    """One class of a conditional LoadedGenerator, with the calls of an unconditional one (generate(z),
    sample, interpolate, generate_float(z)), for tools that work in one class at a time (the explorer)."""

    def __init__(self, generator: LoadedGenerator, label: int):
        generator.labels(label, 1)  # One sentence for a label it cannot draw.
        self.generator, self.label = generator, label
        self.z_dim, self.metadata, self.fingerprint = (
            generator.z_dim,
            generator.metadata,
            generator.fingerprint,
        )
        self.num_classes = 0  # Its calls take no labels.
        self.class_name = generator.class_names[label] if label < len(generator.class_names) else str(label)
        self.generate_float = None
        if generator.generate_float is not None:
            one_hot = tf.one_hot([label], generator.num_classes)
            self.generate_float = lambda z: generator.generate_float(z, tf.tile(one_hot, [tf.shape(z)[0], 1]))

    def check_z(self, z: np.ndarray, what: str = 'z') -> np.ndarray:
        return self.generator.check_z(z, what)

    def generate(self, z: np.ndarray, batch_size: int = 256, labels=None) -> np.ndarray:
        del labels  # Always this view's class.
        return self.generator.generate(z, batch_size, labels=self.label)

    def sample(self, num: int, seed: int, label: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        del label
        return self.generator.sample(num, seed, label=self.label)

    def interpolate(self, z0, z1, steps: int, spherical: bool = True, label0=None, label1=None):
        del label0, label1
        return self.generator.interpolate(z0, z1, steps, spherical, self.label, self.label)


def load(path: str, sampler: str = 'ema') -> LoadedGenerator:
    """Loads an export written by `save`; ConfigError with one sentence if `path` is not one."""
    if not tf.io.gfile.isdir(path):
        raise ConfigError(f'SavedModel folder {path} does not exist; export one with --mode=export.')
    if not tf.io.gfile.exists(os.path.join(path, 'saved_model.pb')):
        raise ConfigError(f'{path} is not a SavedModel folder (no saved_model.pb in it).')
    try:
        module = tf.saved_model.load(path)
    except Exception as e:  # noqa: BLE001 - whatever a damaged file makes TensorFlow or protobuf raise.
        # A missing or cut-short variables/ folder, a damaged graph: TensorFlow's reasons run to pages.
        reason = workdir_checkpoints.restore_failure(e)
        raise ConfigError(
            f'SavedModel {path} cannot be loaded ({reason}: its variables/ or saved_model.pb is missing or '
            f'damaged); export it again with --mode=export --workdir=<run>.'
        ) from None
    if not hasattr(module, 'metadata_json'):
        raise ConfigError(f'{path} is a SavedModel, but not a dcgan_tf generator export.')
    return LoadedGenerator(module, sampler)
