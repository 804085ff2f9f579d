"""SavedModel export of the generator (EMA and raw weights) with signatures, from a Trainer or a checkpoint.

The export needs nothing of this package to be used: any TensorFlow program calls its signatures.
`load` (loading.py, re-exported here) is the small Python helper every sampling tool goes through; this
module imports no training code at import time (the checkpoint-to-export path imports the model builders
inside the function).
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf
from absl import logging

from dcgan_tf import paths
from dcgan_tf import workdir as workdir_lib
from dcgan_tf.config import MAX_SAMPLES, Config, ConfigError, to_flagfile
from dcgan_tf.loading import (  # noqa: F401 - the loader's names, as every tool has called them.
    MAX_ABS_Z,
    MAX_INTERP_STEPS,
    ClassGenerator,
    LoadedGenerator,
    check_labels,
    check_sample_args,
    check_z,
    load,
    sample_z,
)
from dcgan_tf.workdir import checkpoints as workdir_checkpoints
from dcgan_tf.workdir import ownership

EXPORT_DIR = workdir_lib.EXPORT_DIR
SERVING_DIR = 'serving'  # <workdir>/serving/<version>/: TF Serving's model_base_path layout.
Z_DISTRIBUTION = 'normal(0, 1)'  # What the Trainer draws z from (tf.random.Generator.normal).
METADATA_FILE = ownership.METADATA_FILE  # Beside the SavedModel in assets.extra/, readable without TF.


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
    (`class_names`; numbers where the run recorded none); an --info_code generator's, its number of codes.
    """
    conditional = {}
    if cfg.conditional:
        names = list(class_names) if class_names else [str(i) for i in range(cfg.num_classes)]
        conditional = {'num_classes': cfg.num_classes, 'class_names': names}
    if cfg.info_code:
        # Which kind a z draws: the index of the largest of its first info_code entries.
        conditional = {'info_code': cfg.info_code}
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
    """Tidies what a process killed mid-export left: its half-written `.tmp<pid>` folder is dropped, and a
    good export it had moved aside (`.old<pid>`, killed between the two renames) is put back. Only names
    of processes that are gone are touched, and an `.old` folder only when it is an export of ours: a
    user's `saved_model.old` backup stays."""
    parent = os.path.dirname(path) or '.'
    base = os.path.basename(path)
    if not tf.io.gfile.isdir(parent):
        return
    names = sorted(n.rstrip('/') for n in tf.io.gfile.listdir(parent) if n.startswith(base + '.'))
    for name in names:
        temp = ownership.stale_temp(name, base)
        if temp is None:
            continue
        leftover = os.path.join(parent, name)
        if temp == 'old' and ownership.is_own_export(leftover):
            if not tf.io.gfile.exists(path):
                tf.io.gfile.rename(leftover, path)
            else:
                tf.io.gfile.rmtree(leftover)
        elif temp == 'tmp' and tf.io.gfile.isdir(leftover):
            tf.io.gfile.rmtree(leftover)


def check_target(path: str, target: str) -> None:
    """ConfigError (one sentence) unless an export may be written to `path`: nothing there, an empty
    folder, or an export of ours, which it replaces. `target` names the path in the sentence."""
    if not tf.io.gfile.exists(path):
        return
    if not tf.io.gfile.isdir(path):
        raise ConfigError(f'{target} is a file, not an export folder; give a folder name for the SavedModel.')
    entries = [os.path.join(path, n.rstrip('/')) for n in sorted(tf.io.gfile.listdir(path))]
    if entries and not ownership.is_own_export(path):
        raise ConfigError(
            f'{target} holds files that are not an export of this program '
            f'({ownership.describe_foreign(entries)}); an export replaces only an export: give a new or '
            f'empty folder.'
        )


def save(
    path: str,
    generator,
    cfg: Config,
    step: int,
    ema_generator=None,
    flags: str | None = None,
    class_names: tuple[str, ...] | None = None,
    target: str | None = None,
) -> str:
    """Writes the SavedModel to `path` atomically: into a temporary folder, then renamed over the old one.

    Only an export of this program (or an empty folder) is replaced; anything else at `path` is refused.

    Args:
      path: the export folder, e.g. `<workdir>/saved_model`.
      generator: the raw (trained) Keras generator.
      cfg: the run's Config (its flags are stored in the export).
      step: the training step of these weights.
      ema_generator: the moving-average generator; None exports the raw one as the default too.
      flags: the run's flagfile text to record (default: `cfg` written as one).
      class_names: a conditional generator's class names, in label order.
      target: how the refusal names `path` (default `--saved_model=<path>`).

    Returns:
      `path`.

    Raises:
      ConfigError: `path` is a file, or a folder holding something other than an export of ours.
    """
    path = path.rstrip('/') or path
    target = target or f'--saved_model={path}'
    if not workdir_lib.is_url(path):
        _recover_killed_export(path)
    check_target(path, target)
    metadata = make_metadata(cfg, step, ema_generator is not None, flags, class_names)
    module = _Export(ema_generator if ema_generator is not None else generator, generator, metadata)
    tf.io.gfile.makedirs(os.path.dirname(path) or '.')
    if workdir_lib.is_url(path):  # No (atomic) folder rename on object stores or ram://: write in place.
        tmp = path
    else:
        tmp = f'{path}.tmp{os.getpid()}'
    try:
        tf.saved_model.save(module, tmp, signatures=module.signatures())
        extra = os.path.join(tmp, 'assets.extra')
        tf.io.gfile.makedirs(extra)
        with tf.io.gfile.GFile(os.path.join(extra, METADATA_FILE), 'w') as f:
            f.write(json.dumps(metadata, indent=2) + '\n')
    except BaseException:
        if tmp != path and tf.io.gfile.isdir(tmp):  # This process's half-written folder.
            tf.io.gfile.rmtree(tmp)
        raise
    if tmp != path:
        old = f'{path}.old{os.getpid()}'
        if tf.io.gfile.exists(path):
            tf.io.gfile.rename(path, old)
        tf.io.gfile.rename(tmp, path)
        if tf.io.gfile.exists(old):
            tf.io.gfile.rmtree(old)
    return path


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


def default_target(workdir: str, path: str | None) -> tuple[str, str]:
    """(the export folder, how a refusal names it): --saved_model when given, else the run's own."""
    if path:
        return path, f'--saved_model={path}'
    path = workdir_lib.export_path(workdir)
    return path, f'--workdir={workdir}: {path}'


def export_from_checkpoint(workdir: str, path: str | None = None) -> str:
    """`--mode=export`: the latest checkpoint of the run in `workdir` -> `<workdir>/saved_model`."""
    path, target = default_target(workdir, path)
    check_target(path, target)  # Before the slow restore: a refusal costs nothing.
    cfg, generator, ema_generator, step = restore_generators(workdir)
    # The run's own config.cfg, not the Config rebuilt from it (which fills in today's defaults).
    flags = workdir_lib.read_config_text(workdir)
    classes = workdir_lib.read_class_names(workdir)
    return save(path, generator, cfg, step, ema_generator, flags, classes, target=target)


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

        path = cfg.out or tflite.default_path(cfg.workdir, cfg.format)
        paths.check_output(path, '--out', os.path.basename(tflite.default_path('', cfg.format)))
        restore = evaluate.restore_best_generators if cfg.export_best else restore_generators
        run_cfg, generator, ema_generator, step = restore(cfg.workdir)
        if run_cfg.conditional:
            raise ConfigError(
                f'--format={cfg.format} writes a generator of z alone, and {cfg.workdir} holds a conditional '
                f'one; export it as a SavedModel (--format=saved_model), whose signatures take the label.'
            )
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
