"""The run's configuration: one frozen dataclass, its validation, and its flagfile form.

Every command-line flag is a field here (main.py defines the absl flags from these fields), so library
code and tests build a Config directly. Nothing in this module imports TensorFlow: validation runs
before any heavy import, so a bad value fails in well under a second.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

MODES = (
    'train',
    'export',
    'sample',
    'interpolate',
    'arithmetic',
    'ablate',
    'evaluate',
    'probe',
    'train_classifier',
    'prepare',
    'bench',
)
DATASETS = ('embedded', 'synthetic', 'mnist', 'fashion_mnist', 'folder')
RESOLUTIONS = (16, 28, 32, 64, 128)
# Flags that change the shape of a model or its checkpoint: a workdir trained with other values
# cannot be resumed with these.
MODEL_FLAGS = ('arch', 'resolution', 'channels', 'z_dim', 'gf_dim', 'df_dim')


class ConfigError(ValueError):
    """A flag value or combination that cannot work; the message is one sentence for the user."""


def _field(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:  # noqa: A002
    return dataclasses.field(default=default, metadata={'help': help, 'choices': choices})


@dataclasses.dataclass(frozen=True)
class Config:
    """All settings of a run. Defaults are the paper's (DESIGN.md section 4) unless noted."""

    # --- run ---
    mode: str = _field('train', 'What to do.', MODES)
    workdir: str = _field('runs/default', 'Run directory: checkpoints, TensorBoard, samples, export.')
    seed: int = _field(0, 'Seed for weights, noise and data order.')
    overwrite: bool = _field(False, 'Delete an existing workdir and start afresh.')
    # --- data ---
    dataset: str = _field(
        'embedded',
        'Training data: embedded (10k MNIST digits shipped in the '
        'package), synthetic, mnist, fashion_mnist or folder.',
        DATASETS,
    )
    data_dir: str = _field('', 'Folder of images (folder), IDX files (mnist) or tfds data_dir.')
    resolution: int = _field(28, 'Image height and width: 16 (tests), 28, 32, 64 or 128.')
    channels: int = _field(1, 'Image channels: 1 (grayscale) or 3 (RGB).')
    download: bool = _field(
        True,
        'Let tensorflow-datasets download a data set not prepared yet '
        '(false: fail at once, e.g. on machines without internet).',
    )
    shuffle_buffer: int = _field(
        100000, 'Keys (indices or file names) in the shuffle buffer; the whole data set up to this size.'
    )
    synthetic_examples: int = _field(1024, 'Number of generated shapes in the synthetic data set.')
    # --- model ---
    arch: str = _field(
        'dcgan', 'dcgan (the paper) or tutorial (the TF tutorial MNIST pair).', ('dcgan', 'tutorial')
    )
    z_dim: int = _field(100, 'Size of the latent vector z.')
    gf_dim: int = _field(64, "Width of the generator's last hidden layer (doubles per layer).")
    df_dim: int = _field(64, "Width of the discriminator's first layer (doubles per layer).")
    # --- optimisation ---
    batch_size: int = _field(128, 'Global batch size (split across replicas).')
    g_lr: float = _field(2e-4, 'Generator Adam learning rate.')
    d_lr: float = _field(2e-4, 'Discriminator Adam learning rate.')
    beta_1: float = _field(0.5, 'Adam beta_1 (the paper lowers it from 0.9 for stability).')
    beta_2: float = _field(0.999, 'Adam beta_2.')
    train_steps: int = _field(0, 'Training length in steps (0: use --epochs).')
    epochs: int = _field(0, 'Training length in passes over the data (used when --train_steps=0).')
    # --- distribution and speed ---
    strategy: str = _field(
        'auto',
        'tf.distribute strategy.',
        ('auto', 'default', 'one_device', 'mirrored', 'multi_worker', 'tpu'),
    )
    devices: str = _field('', 'Comma-separated devices for one_device/mirrored, e.g. GPU:0,GPU:1.')
    tpu: str = _field('', 'TPU name or grpc:// address for --strategy=tpu.')
    precision: str = _field(
        'float32', 'Keras mixed-precision policy.', ('float32', 'mixed_float16', 'mixed_bfloat16')
    )
    jit_compile: str = _field(
        'auto',
        'XLA-compile the train step: auto (on for GPU/TPU, off on '
        'CPU, where it was measured slower), true or false.',
        ('auto', 'true', 'false'),
    )
    steps_per_call: int = _field(1, 'Train steps run inside one tf.function call.')
    sync_bn: bool = _field(False, 'Synchronise BatchNorm statistics across replicas.')
    run_eagerly: bool = _field(False, 'Run the train step eagerly (debugging).')
    # --- monitoring and checkpoints ---
    log_every: int = _field(100, 'Steps between TensorBoard scalars and progress-bar updates.')
    sample_every: int = _field(500, 'Steps between fixed-z sample grids (TensorBoard and PNG).')
    checkpoint_every: int = _field(1000, 'Steps between checkpoints.')
    keep_checkpoints: int = _field(3, 'Rolling checkpoints kept.')
    num_grid: int = _field(64, 'Images in each fixed-z sample grid (a square number reads best).')
    # --- robustness (issue 8) ---
    on_nan: str = _field(
        'stop',
        'On a NaN/Inf loss: stop (keep the last good checkpoint) or rollback (restore it, halve the '
        'learning rates, go on).',
        ('stop', 'rollback'),
    )
    max_rollbacks: int = _field(3, 'Most rollbacks one run makes with --on_nan=rollback before it stops.')
    collapse_threshold: float = _field(
        0.1,
        'Warn of mode collapse when the fixed-z samples differ less than this fraction of real images '
        'do (mean pairwise distance; 0: off).',
    )

    @property
    def model_flags(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in MODEL_FLAGS}

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def field_help(name: str) -> tuple[str, tuple[str, ...] | None]:
    """Help text and choices of one Config field, for defining its flag."""
    field = {f.name: f for f in dataclasses.fields(Config)}[name]
    return field.metadata['help'], field.metadata['choices']


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate(cfg: Config) -> Config:
    """Checks values and combinations; raises ConfigError with one sentence naming the culprit."""
    for f in dataclasses.fields(Config):
        choices = f.metadata['choices']
        value = getattr(cfg, f.name)
        if choices is not None:
            _require(value in choices, f'--{f.name}={value!r} is not one of: {", ".join(choices)}.')
    _require(
        cfg.resolution in RESOLUTIONS,
        f'--resolution={cfg.resolution} is not supported; use one of {", ".join(map(str, RESOLUTIONS))}.',
    )
    _require(cfg.channels in (1, 3), f'--channels={cfg.channels} must be 1 or 3.')
    for name in (
        'z_dim',
        'gf_dim',
        'df_dim',
        'batch_size',
        'shuffle_buffer',
        'synthetic_examples',
        'log_every',
        'sample_every',
        'checkpoint_every',
        'keep_checkpoints',
        'num_grid',
        'steps_per_call',
    ):
        value = getattr(cfg, name)
        _require(value > 0, f'--{name}={value} must be a positive integer.')
    for name in ('g_lr', 'd_lr'):
        value = getattr(cfg, name)
        _require(0 < value < 1e3 and value == value, f'--{name}={value} must be a positive number.')
    for name in ('beta_1', 'beta_2'):
        value = getattr(cfg, name)
        _require(0 <= value < 1, f'--{name}={value} must be in [0, 1).')
    for name in ('train_steps', 'epochs'):
        value = getattr(cfg, name)
        _require(value >= 0, f'--{name}={value} must not be negative.')
    if cfg.mode == 'train':
        _require(
            cfg.train_steps > 0 or cfg.epochs > 0, 'Set --train_steps or --epochs to say how long to train.'
        )
    _require(
        cfg.arch != 'tutorial' or (cfg.resolution == 28 and cfg.channels == 1),
        f"--arch=tutorial is the TF tutorial's MNIST pair: it needs --resolution=28 and "
        f'--channels=1, not {cfg.resolution} and {cfg.channels}.',
    )
    if cfg.dataset == 'folder':
        _check_data_dir(cfg.data_dir, '--dataset=folder needs --data_dir, a folder of images.')
    if cfg.dataset in ('mnist', 'fashion_mnist') and cfg.data_dir:
        _check_data_dir(cfg.data_dir, '')
    _require(bool(cfg.workdir), '--workdir must not be empty.')
    _validate_robustness(cfg)
    return cfg


def _validate_robustness(cfg: Config) -> None:
    _require(
        0 <= cfg.max_rollbacks <= 100, f'--max_rollbacks={cfg.max_rollbacks} must be between 0 and 100.'
    )
    _require(
        0 <= cfg.collapse_threshold < 1,
        f'--collapse_threshold={cfg.collapse_threshold} must be in [0, 1) (0 turns the warning off).',
    )


def _check_data_dir(path: str, missing_message: str) -> None:
    if path.startswith('gs://'):
        return  # Checked by TensorFlow's file system when read; not reachable without it.
    _require(bool(path), missing_message)
    _require(os.path.isdir(path), f'--data_dir={path} does not exist or is not a folder.')
    _require(
        any(files for _, _, files in os.walk(path)),
        f"--data_dir={path} is empty: put the data set's files there.",
    )


def to_flagfile(cfg: Config) -> str:
    """The Config as an absl flagfile that re-runs the same training (`--flagfile=config.cfg`)."""
    lines = ['# Resolved flags of this run; re-run with --flagfile=<this file>.']
    for f in dataclasses.fields(Config):
        value = getattr(cfg, f.name)
        if isinstance(value, bool):
            value = 'true' if value else 'false'
        lines.append(f'--{f.name}={value}')
    return '\n'.join(lines) + '\n'


def from_flagfile_text(text: str) -> dict[str, str]:
    """Parses `--name=value` lines back into raw strings (used to compare a workdir's flags)."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith('--') and '=' in line:
            name, value = line[2:].split('=', 1)
            values[name] = value
    return values
