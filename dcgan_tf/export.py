"""SavedModel export of the generator (EMA and raw weights) with signatures, and its loader.

The export needs nothing of this package to be used: any TensorFlow program calls its signatures.
`load` is the small Python helper every sampling tool goes through; this module imports no training
code at import time (the checkpoint-to-export path imports the model builders inside the function).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from dcgan_tf import workdir as workdir_lib
from dcgan_tf.config import MAX_SAMPLES, Config, ConfigError, to_flagfile
from dcgan_tf.workdir import checkpoints as workdir_checkpoints

EXPORT_DIR = workdir_lib.EXPORT_DIR
SERVING_DIR = 'serving'  # <workdir>/serving/<version>/: TF Serving's model_base_path layout.
Z_DISTRIBUTION = 'normal(0, 1)'  # What the Trainer draws z from (tf.random.Generator.normal).
MAX_INTERP_STEPS = 1024
# z is drawn from N(0, 1), where |z| > 10 has odds of 1e-23: a far larger value is a broken input, and
# one large enough overflows the generator's float32 into NaN pixels.
MAX_ABS_Z = 100.0
METADATA_FILE = 'dcgan_metadata.json'  # Beside the SavedModel in assets.extra/, readable without TF.


# --- the exported module ---


def scale_to_uint8(images: tf.Tensor) -> tf.Tensor:
    """tanh range [-1, 1] -> uint8, with no checks (the form converters such as TFLite's take)."""
    images = tf.cast(images, tf.float32)
    return tf.cast(tf.clip_by_value(tf.round((images + 1.0) * 127.5), 0.0, 255.0), tf.uint8)


def _to_uint8(images: tf.Tensor) -> tf.Tensor:
    """tanh range [-1, 1] -> uint8, refusing NaN/Inf rather than writing them as black pixels."""
    images = tf.debugging.assert_all_finite(
        tf.cast(images, tf.float32), 'the generator produced NaN or Inf pixels; its weights are broken'
    )
    return scale_to_uint8(images)


def tf_variables(model) -> list[tf.Variable]:
    """The tf.Variables under a Keras 3 model's own Variables.

    A tf.Module that tracks these (and not the Keras model) saves a graph that TensorFlow's session-based
    loaders (saved_model_cli run, TF Serving) can run, and hands the TFLite converter the weights: with the
    Keras Variables tracked, both find no value for the variables the graph reads.
    """
    return [v.value for v in model.variables]


def _interpolation_path(z0: tf.Tensor, z1: tf.Tensor, steps: tf.Tensor, spherical: tf.Tensor) -> tf.Tensor:
    """`steps` points from z0 to z1, both included: a straight line, or a great circle whose radius
    goes linearly from |z0| to |z1| (so the norm stays where Gaussian z's live, not inside the ball)."""
    t = tf.linspace(0.0, 1.0, steps)[:, None]
    line = (1.0 - t) * z0 + t * z1
    norm0, norm1 = tf.norm(z0), tf.norm(z1)
    u0, u1 = z0 / tf.maximum(norm0, 1e-12), z1 / tf.maximum(norm1, 1e-12)
    omega = tf.acos(tf.clip_by_value(tf.reduce_sum(u0 * u1), -1.0, 1.0))
    sin_omega = tf.sin(omega)
    # Nearly parallel directions: the great circle is the line (and sin(omega) ~ 0 would divide by 0).
    safe = sin_omega > 1e-6
    denominator = tf.where(safe, sin_omega, 1.0)
    w0 = tf.where(safe, tf.sin((1.0 - t) * omega) / denominator, 1.0 - t)
    w1 = tf.where(safe, tf.sin(t * omega) / denominator, t)
    direction = w0 * u0 + w1 * u1
    direction /= tf.maximum(tf.norm(direction, axis=1, keepdims=True), 1e-12)
    arc = direction * ((1.0 - t) * norm0 + t * norm1)
    path = tf.where(spherical, arc, line)
    # The end points are exactly z0 and z1, whatever the rounding above.
    return tf.concat([z0[None], path[1:-1], z1[None]], axis=0)


class _Sampler(tf.Module):
    """One generator's three signatures (the graph functions a SavedModel user calls).

    A conditional generator's (`num_classes` > 0) take the class as well: `label` int32 [N] beside z in
    serving_default, one scalar `label` in sample (-1: every class in turn) and `label0`/`label1` in
    interpolate (the walk blends the two classes as it goes; equal labels keep one class).
    """

    def __init__(self, generator, z_dim: int, name: str, num_classes: int = 0):
        super().__init__(name=name)
        # The weights as plain tf.Variables; the Keras model itself stays untracked (only the functions'
        # closures hold it), so each value is saved once and every loader finds it (see tf_variables).
        self.weights = tf_variables(generator)
        self._model = lambda inputs: generator(inputs, training=False)
        self.z_dim, self.num_classes = z_dim, num_classes
        spec = tf.TensorSpec
        z_spec = spec([None, z_dim], tf.float32, name='z')
        if num_classes:
            self.serving_default = tf.function(
                self._generate_labels, input_signature=[z_spec, spec([None], tf.int32, name='label')]
            )
            label_specs = [spec([], tf.int32, name='label')]
            walk_specs = [spec([], tf.int32, name='label0'), spec([], tf.int32, name='label1')]
            # Classes as weights [N, num_classes]: one-hot, or a mix of classes.
            float_specs = [z_spec, spec([None, num_classes], tf.float32, name='classes')]
        else:
            self.serving_default = tf.function(self._generate, input_signature=[z_spec])
            label_specs, walk_specs, float_specs = [], [], [z_spec]
        self.sample = tf.function(
            self._sample,
            input_signature=[spec([], tf.int32, name='num'), spec([], tf.int64, name='seed'), *label_specs],
        )
        # Not a signature: a plain function of the module, for callers that differentiate through G
        # (image to z); the signatures end in a uint8 cast, which has no gradient.
        self.generate_float = tf.function(self._generate_float, input_signature=float_specs)
        self.interpolate = tf.function(
            self._interpolate,
            input_signature=[
                spec([z_dim], tf.float32, name='z0'),
                spec([z_dim], tf.float32, name='z1'),
                spec([], tf.int32, name='steps'),
                spec([], tf.bool, name='spherical'),
                *walk_specs,
            ],
        )

    def _forward(self, z, classes=None):
        return self._model(z if classes is None else [z, classes])

    def _generate(self, z, classes=None):
        return {'images': _to_uint8(self._forward(z, classes))}

    def _one_hot(self, labels):
        check = tf.debugging.assert_less(
            tf.cast(labels, tf.int64),
            tf.constant(self.num_classes, tf.int64),
            message=f'label must be between 0 and {self.num_classes - 1}',
        )
        positive = tf.debugging.assert_non_negative(labels, message='label must not be negative')
        with tf.control_dependencies([check, positive]):
            return tf.one_hot(labels, self.num_classes)

    def _generate_labels(self, z, label):
        return self._generate(z, self._one_hot(label))

    def _generate_float(self, z, classes=None):
        return tf.cast(self._forward(z, classes), tf.float32)

    def _sample(self, num, seed, label=None):
        checks = [
            tf.debugging.assert_positive(num, message='num must be at least 1'),
            tf.debugging.assert_less_equal(num, MAX_SAMPLES, message=f'num must be at most {MAX_SAMPLES}'),
        ]
        with tf.control_dependencies(checks):
            # Stateless: the same (num, seed) gives the same z on any machine, in any order of calls.
            z = tf.random.stateless_normal(tf.stack([num, self.z_dim]), seed=tf.stack([seed, 0]))
        if label is None:
            return {'images': self._generate(z)['images'], 'z': z}
        # -1: sample i draws class i mod num_classes, so every class is as frequent.
        labels = tf.where(label < 0, tf.range(num) % self.num_classes, tf.fill([num], label))
        return {'images': self._generate(z, self._one_hot(labels))['images'], 'z': z, 'label': labels}

    def _interpolate(self, z0, z1, steps, spherical, label0=None, label1=None):
        checks = [
            tf.debugging.assert_greater_equal(steps, 2, message='steps must be at least 2'),
            tf.debugging.assert_less_equal(
                steps, MAX_INTERP_STEPS, message=f'steps must be at most {MAX_INTERP_STEPS}'
            ),
        ]
        with tf.control_dependencies(checks):
            z = _interpolation_path(z0, z1, steps, spherical)
        if label0 is None:
            return {'images': self._generate(z)['images'], 'z': z}
        t = tf.linspace(0.0, 1.0, steps)[:, None]
        classes = (1.0 - t) * self._one_hot(label0)[None] + t * self._one_hot(label1)[None]
        return {'images': self._generate(z, classes)['images'], 'z': z, 'classes': classes}


class _Export(tf.Module):
    """The SavedModel's root: `ema` (default sampler), `raw`, and the facts a user needs."""

    def __init__(self, ema_generator, generator, metadata: dict[str, Any]):
        super().__init__(name='dcgan_generator')
        num_classes = metadata.get('num_classes', 0)
        self.ema = _Sampler(ema_generator, metadata['z_dim'], 'ema', num_classes)
        self.raw = _Sampler(generator, metadata['z_dim'], 'raw', num_classes)
        self.z_dim = tf.Variable(metadata['z_dim'], trainable=False, dtype=tf.int32, name='z_dim')
        self.resolution = tf.Variable(metadata['resolution'], False, dtype=tf.int32, name='resolution')
        self.channels = tf.Variable(metadata['channels'], False, dtype=tf.int32, name='channels')
        self.step = tf.Variable(metadata['step'], False, dtype=tf.int64, name='step')
        self.metadata_json = tf.Variable(json.dumps(metadata), trainable=False, name='metadata_json')
        self.metadata = tf.function(self._metadata, input_signature=[])

    def _metadata(self):
        return {
            'z_dim': self.z_dim.read_value(),
            'resolution': self.resolution.read_value(),
            'channels': self.channels.read_value(),
            'step': self.step.read_value(),
            'json': self.metadata_json.read_value(),
        }

    def signatures(self) -> dict[str, Any]:
        functions = {}
        for prefix, sampler in (('', self.ema), ('raw_', self.raw)):
            functions[f'{prefix}serving_default'] = sampler.serving_default
            functions[f'{prefix}sample'] = sampler.sample
            functions[f'{prefix}interpolate'] = sampler.interpolate
        functions['metadata'] = self.metadata
        return functions


def make_metadata(
    cfg: Config,
    step: int,
    has_ema: bool,
    flags: str | None = None,
    class_names: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """The facts a SavedModel user needs, as JSON-able values (`flags`: the run's flagfile text).

    A conditional generator's also say how many classes it draws and their names, in label order
    (`class_names`; numbers where the run recorded none).
    """
    conditional = {}
    if cfg.conditional:
        names = list(class_names) if class_names else [str(i) for i in range(cfg.num_classes)]
        conditional = {'num_classes': cfg.num_classes, 'class_names': names}
    return {
        'z_dim': cfg.z_dim,
        'z_distribution': Z_DISTRIBUTION,
        'resolution': cfg.resolution,
        'channels': cfg.channels,
        'step': int(step),
        'arch': cfg.arch,
        'default_sampler': 'ema' if has_ema else 'raw (no EMA was trained; ema = raw)',
        'ema_decay': cfg.ema_decay if has_ema else 0.0,
        'flags': flags if flags is not None else to_flagfile(cfg),
        **conditional,
    }


def _recover_killed_export(path: str) -> None:
    """Tidies what a process killed mid-export left: its half-written `.tmp<pid>` folder is dropped,
    and a good export it had moved aside (`.old<pid>`, killed between the two renames) is put back."""
    for old in sorted(tf.io.gfile.glob(f'{path}.old*')):
        if not tf.io.gfile.exists(path):
            tf.io.gfile.rename(old, path)
        else:
            tf.io.gfile.rmtree(old)
    for tmp in tf.io.gfile.glob(f'{path}.tmp*'):
        tf.io.gfile.rmtree(tmp)


def save(
    path: str,
    generator,
    cfg: Config,
    step: int,
    ema_generator=None,
    flags: str | None = None,
    class_names: tuple[str, ...] | None = None,
) -> str:
    """Writes the SavedModel to `path` atomically: into a temporary folder, then renamed over the old one.

    Args:
      path: the export folder, e.g. `<workdir>/saved_model`.
      generator: the raw (trained) Keras generator.
      cfg: the run's Config (its flags are stored in the export).
      step: the training step of these weights.
      ema_generator: the moving-average generator; None exports the raw one as the default too.
      flags: the run's flagfile text to record (default: `cfg` written as one).
      class_names: a conditional generator's class names, in label order.

    Returns:
      `path`.
    """
    metadata = make_metadata(cfg, step, ema_generator is not None, flags, class_names)
    module = _Export(ema_generator if ema_generator is not None else generator, generator, metadata)
    parent = os.path.dirname(path.rstrip('/')) or '.'
    tf.io.gfile.makedirs(parent)
    if workdir_lib.is_url(path):  # No (atomic) folder rename on object stores or ram://: write in place.
        tmp = path
    else:
        tmp = f'{path.rstrip("/")}.tmp{os.getpid()}'
        _recover_killed_export(path.rstrip('/'))
    tf.saved_model.save(module, tmp, signatures=module.signatures())
    extra = os.path.join(tmp, 'assets.extra')
    tf.io.gfile.makedirs(extra)
    with tf.io.gfile.GFile(os.path.join(extra, METADATA_FILE), 'w') as f:
        f.write(json.dumps(metadata, indent=2) + '\n')
    if tmp != path:
        old = f'{path.rstrip("/")}.old{os.getpid()}'
        if tf.io.gfile.exists(path):
            tf.io.gfile.rename(path, old)
        tf.io.gfile.rename(tmp, path)
        if tf.io.gfile.exists(old):
            tf.io.gfile.rmtree(old)
    return path


# --- loading ---


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


# --- from a training checkpoint ---


def run_config(workdir: str) -> Config:
    """The Config a run in `workdir` was trained with (its config.cfg), for rebuilding its models."""
    return workdir_lib.recorded_config(workdir)


def require_unconditional(cfg: Config, workdir: str, mode: str) -> None:
    """One sentence where a tool built for an unconditional pair meets a conditional run."""
    if cfg.conditional:
        raise ConfigError(
            f'--mode={mode} reads unconditional runs, and {workdir} holds a conditional one (its G and D '
            f'also take the class); sample, interpolate, arithmetic, evaluate and explore take --label.'
        )


def restore_models(
    workdir: str,
    cfg: Config,
    builders: dict,
    checkpoint_dir: str | None = None,
    missing: str = 'has no checkpoint yet; train first (--mode=train)',
) -> tuple[dict, int]:
    """({name: model}, step) from the newest checkpoint of a run that restores, one model per builder.

    `builders` maps checkpoint names ('generator', 'discriminator', ...) to functions of the Config; a
    name ending in '?' is optional (built only where the checkpoint holds it). Nothing in the workdir
    is changed: a damaged latest checkpoint falls back to the one before with a warning.
    """
    built = {}

    def restore(prefix: str) -> None:
        names = workdir_checkpoints.checkpoint_objects(prefix)
        built.clear()
        for name, build in builders.items():
            if not name.endswith('?') or name[:-1] in names:
                built[name.rstrip('?')] = build(cfg)
        built['step'] = tf.Variable(0, dtype=tf.int64)
        tf.train.Checkpoint(**built).restore(prefix).expect_partial().assert_existing_objects_matched()

    directory = checkpoint_dir or workdir_lib.checkpoint_dir(workdir)
    restored, _ = workdir_checkpoints.restore_newest(directory, restore, workdir)
    if restored is None:
        raise ConfigError(f'--workdir={workdir} {missing}.')
    step = int(built.pop('step'))
    return built, step


def restore_generators(
    workdir: str,
    cfg: Config | None = None,
    checkpoint_dir: str | None = None,
    missing: str = 'has no checkpoint yet; train first (--mode=train)',
):
    """(cfg, generator, ema_generator or None, step) from the newest checkpoint of a run that restores.

    `checkpoint_dir` defaults to `<workdir>/checkpoints` (evaluation passes its `best/` folder);
    `missing` completes the sentence raised when it holds no checkpoint.
    """
    from dcgan_tf import models  # noqa: PLC0415 - only this path needs the model builders.

    cfg = cfg or run_config(workdir)
    builders = {'generator': models.build_generator, 'ema_generator?': models.build_generator}
    built, step = restore_models(workdir, cfg, builders, checkpoint_dir, missing)
    return cfg, built['generator'], built.get('ema_generator'), step


def export_from_checkpoint(workdir: str, path: str | None = None) -> str:
    """`--mode=export`: the latest checkpoint of the run in `workdir` -> `<workdir>/saved_model`."""
    cfg, generator, ema_generator, step = restore_generators(workdir)
    # The run's own config.cfg, not the Config rebuilt from it (which fills in today's defaults).
    flags = workdir_lib.read_config_text(workdir)
    classes = workdir_lib.read_class_names(workdir)
    return save(path or workdir_lib.export_path(workdir), generator, cfg, step, ema_generator, flags, classes)


def serving_path(cfg: Config) -> str:
    """`<base>/<--serving_version>`; base: --saved_model, else `<workdir>/serving` (a model_base_path)."""
    return os.path.join(cfg.saved_model or os.path.join(cfg.workdir, SERVING_DIR), str(cfg.serving_version))


def _check_new_version(path: str, version: int) -> None:
    if not tf.io.gfile.exists(path):
        return
    base = os.path.dirname(path)
    taken = [int(n.rstrip('/')) for n in tf.io.gfile.listdir(base) if n.rstrip('/').isdigit()]
    raise ConfigError(
        f'--serving_version={version}: {path} exists already, and TF Serving serves a version as it was '
        f'written; export as --serving_version={max(taken + [version]) + 1}.'
    )


def run(cfg: Config) -> str:
    """`--mode=export`: the latest checkpoint of the run in --workdir (its best with --export_best) ->
    a SavedModel (--saved_model, default `<workdir>/saved_model`), version --serving_version of a TF
    Serving model, or a TFLite file (--format, written to --out). Returns the path written."""
    from dcgan_tf.quality import evaluate  # noqa: PLC0415 - the checkpoint paths need the model builders.

    if cfg.format != 'saved_model':
        from dcgan_tf import tflite  # noqa: PLC0415

        restore = evaluate.restore_best_generators if cfg.export_best else restore_generators
        run_cfg, generator, ema_generator, step = restore(cfg.workdir)
        if run_cfg.conditional:
            raise ConfigError(
                f'--format={cfg.format} writes a generator of z alone, and {cfg.workdir} holds a conditional '
                f'one; export it as a SavedModel (--format=saved_model), whose signatures take the label.'
            )
        path = cfg.out or tflite.default_path(cfg.workdir, cfg.format)
        tflite.export_generators(generator, ema_generator, run_cfg.z_dim, path, cfg.format, cfg.sampler)
        logging.info(
            'Wrote the step-%d generator as %s (%d bytes).', step, path, tf.io.gfile.stat(path).length
        )
        return path
    path = cfg.saved_model or None
    if cfg.serving_version:
        path = serving_path(cfg)
        _check_new_version(path, cfg.serving_version)
    if cfg.export_best:
        return evaluate.export_best(cfg.workdir, path)
    return export_from_checkpoint(cfg.workdir, path)
