"""The run's configuration: one frozen dataclass, its validation, and its flagfile form.

Every command-line flag is a field here (main.py defines the absl flags from these fields), so library
code and tests build a Config directly. Nothing in this module imports TensorFlow: validation runs
before any heavy import, so a bad value fails in well under a second.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any

from dcgan_tf import flagfiles

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
    'summary',
    'visualize',
    'explore',
)
DATASETS = ('embedded', 'synthetic', 'mnist', 'fashion_mnist', 'folder', 'celeb_a', 'lsun_lmdb')
# Open-ended --dataset values: lsun/<category>, tfds:<any tfds image data set>, tfrecord:<prepared folder>.
DATASET_PREFIXES = ('lsun/', 'tfds:', 'tfrecord:')
RESOLUTIONS = (16, 28, 32, 64, 128)
# Flags that change the shape of a model or its checkpoint: a workdir trained with other values
# cannot be resumed with these.
MODEL_FLAGS = (
    'arch',
    'resolution',
    'channels',
    'z_dim',
    'gf_dim',
    'df_dim',
    'kernel_size',
    'g_extra_layers',
    'd_extra_layers',
    'upsample',
)
# Flags that act on a folder or pick a tool rather than define the training, so a workdir's config.cfg
# leaves them out: re-running it must never delete the run (--overwrite), switch to another mode, or
# write a sampling tool's output (--out, --out_dir, --saved_model) where the run was started from.
NOT_RECORDED = ('mode', 'overwrite', 'out', 'out_dir', 'saved_model', 'format', 'serving_version', 'model')
FEATURE_NETS = ('inception', 'mnist', 'fashion_mnist')
EVAL_SOURCES = ('generator', 'untrained', 'real')
# Modes that read an exported SavedModel; ablate reads a checkpoint.
SAVED_MODEL_MODES = ('sample', 'interpolate', 'arithmetic', 'explore')
# Enough for any grid a person looks at; more would be one giant batch in memory.
MAX_SAMPLES = 4096
# --mode=sample --out_dir streams PNGs chunk by chunk, so its size is bounded by the disk, not memory;
# a million (20 times what FID papers draw) keeps the file names at six digits.
MAX_STREAMED_SAMPLES = 1_000_000
EXPORT_FORMATS = ('saved_model', 'tflite', 'tflite_float16')
MAX_SEED = 2**63 - 1  # The SavedModel's seed is an int64.


class ConfigError(ValueError):
    """A flag value or combination that cannot work; the message is one sentence for the user."""


def is_url(path: str) -> bool:
    """gs://, s3://, ram://, hdfs://...: a path only TensorFlow's file systems reach, never os.path.

    Validation cannot check these without importing TensorFlow; they are checked when first read.
    """
    return '://' in path


@dataclasses.dataclass(frozen=True)
class Bound:
    """The values a number flag accepts, `validate`'s check and its message in one place.

    `low`/`high` are None for no limit; `low_open`/`high_open` refuse the limit itself. `text`, when
    given, replaces the generated description (to say why the range is what it is).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    text: str = ''

    def accepts(self, value: float) -> bool:
        if value != value:  # NaN
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self, is_int: bool) -> str:
        if self.text:
            return self.text
        what = 'integer' if is_int else 'number'
        low, high = _number(self.low), _number(self.high)
        if self.low == 0 and self.high is None:
            return f'a positive {what}' if self.low_open else f'a non-negative {what}'
        if self.low == 0 and self.low_open:
            return f'a positive {what} below {high}'
        if self.low_open or self.high_open:
            return f'in {"(" if self.low_open else "["}{low}, {high}{")" if self.high_open else "]"}'
        return f'between {low} and {high}'


def _number(value: float | None) -> str:
    return str(int(value)) if value is not None and value == int(value) else str(value)


POSITIVE = Bound(0, None, low_open=True)
NON_NEGATIVE = Bound(0)  # Every number flag's bound unless its field names another.
INT_LIMIT = 2**62  # Beyond int64 would overflow TensorFlow's step counter with a stack trace.


def _field(
    default: Any,
    help: str,  # noqa: A002
    choices: tuple[str, ...] | None = None,
    bound: Bound | None = None,
) -> Any:
    return dataclasses.field(default=default, metadata={'help': help, 'choices': choices, 'bound': bound})


def bound_of(field: dataclasses.Field) -> Bound | None:
    """A number field's Bound (NON_NEGATIVE when it names none); None for other fields."""
    if field.type not in ('int', 'float'):
        return None
    return field.metadata['bound'] or NON_NEGATIVE


def _check_number(field: dataclasses.Field, value: float) -> None:
    is_int = field.type == 'int'
    bound = bound_of(field)
    if is_int:
        _require(
            abs(value) < INT_LIMIT, f'--{field.name}={value} must be {bound.describe(True)} below 2**62.'
        )
    else:
        _require(math.isfinite(value), f'--{field.name}={value} must be a finite number.')
    _require(bound.accepts(value), f'--{field.name}={value} must be {bound.describe(is_int)}.')


@dataclasses.dataclass(frozen=True)
class Config:
    """All settings of a run. Defaults are the paper's (Radford et al. 2016) unless noted."""

    # --- run ---
    mode: str = _field('train', 'What to do.', MODES)
    workdir: str = _field('runs/default', 'Run directory: checkpoints, TensorBoard, samples, export.')
    seed: int = _field(0, 'Seed for weights, noise and data order.')
    overwrite: bool = _field(False, 'Delete an existing workdir and start afresh.')
    # --- data ---
    dataset: str = _field(
        'embedded',
        'Training data: embedded (10k MNIST digits shipped in the package), synthetic, mnist, '
        'fashion_mnist, folder, celeb_a, lsun/<category>, lsun_lmdb, tfds:<name> or tfrecord:<folder> '
        '(made by --mode=prepare).',
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
        100000,
        'Keys (indices or file names) in the shuffle buffer; the whole data set up to this size.',
        bound=POSITIVE,
    )
    synthetic_examples: int = _field(
        1024, 'Number of generated shapes in the synthetic data set.', bound=POSITIVE
    )
    # --- model ---
    arch: str = _field(
        'dcgan', 'dcgan (the paper) or tutorial (the TF tutorial MNIST pair).', ('dcgan', 'tutorial')
    )
    z_dim: int = _field(
        100, 'Size of the latent vector z.', bound=Bound(0, 2**31, low_open=True, high_open=True)
    )
    gf_dim: int = _field(
        64,
        "Width of the generator's last hidden layer (doubles per layer).",
        bound=Bound(0, 2**31, low_open=True, high_open=True),
    )
    df_dim: int = _field(
        64,
        "Width of the discriminator's first layer (doubles per layer).",
        bound=Bound(0, 2**31, low_open=True, high_open=True),
    )
    kernel_size: int = _field(
        5,
        "Side of every convolution kernel of the dcgan G and D (5 in the paper's code; 4, a multiple of the "
        'stride 2, gives every output pixel as many taps: no checkerboard from uneven overlap).',
        bound=Bound(2, 9, text='between 2 (the stride: no output pixel left out) and 9'),
    )
    upsample: str = _field(
        'transpose',
        "How the dcgan G doubles its maps: transpose (stride-2 transposed convolutions, the paper's) or "
        'resize (nearest-neighbour upsampling, then a stride-1 convolution: no checkerboard artifacts).',
        ('transpose', 'resize'),
    )
    g_extra_layers: int = _field(
        0,
        "Stride-1 3x3 convolutions (BatchNorm + ReLU) after the dcgan generator's projection, at its "
        'smallest map: depth where few stride-2 layers fit (two at 28x28).',
        bound=Bound(0, 8),
    )
    d_extra_layers: int = _field(
        0,
        "Stride-1 3x3 convolutions (BatchNorm + LeakyReLU) after the dcgan discriminator's last "
        'stride-2 layer.',
        bound=Bound(0, 8),
    )
    # --- optimisation ---
    augment: str = _field(
        'none',
        'Augment every image D sees, real and fake, differentiably (diffaugment: DiffAugment, Zhao et al. '
        '2020), so D cannot memorise a small data set; none: off.',
        ('none', 'diffaugment'),
    )
    augment_policy: str = _field(
        'color,translation,cutout',
        'The transformations of --augment=diffaugment, comma-separated, applied in order: color, '
        'translation, cutout.',
    )
    batch_size: int = _field(128, 'Global batch size (split across replicas).', bound=POSITIVE)
    g_lr: float = _field(
        2e-4, 'Generator Adam learning rate.', bound=Bound(0, 1e3, low_open=True, high_open=True)
    )
    d_lr: float = _field(
        2e-4, 'Discriminator Adam learning rate.', bound=Bound(0, 1e3, low_open=True, high_open=True)
    )
    beta_1: float = _field(
        0.5, 'Adam beta_1 (the paper lowers it from 0.9 for stability).', bound=Bound(0, 1, high_open=True)
    )
    beta_2: float = _field(0.999, 'Adam beta_2.', bound=Bound(0, 1, high_open=True))
    update: str = _field(
        'simultaneous',
        'Order of the two updates in a step: simultaneous (D and G gradients from one forward pass, the TF '
        "tutorial's) or alternating (D first, then G against the updated D: the paper's Algorithm 1).",
        ('simultaneous', 'alternating'),
    )
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
        'float32',
        'Keras mixed-precision policy; auto: mixed_float16 on GPUs, mixed_bfloat16 on TPUs and on CPUs with '
        'bfloat16 instructions (AVX512_BF16/AMX), float32 otherwise.',
        ('float32', 'mixed_float16', 'mixed_bfloat16', 'auto'),
    )
    jit_compile: str = _field(
        'auto',
        'XLA-compile the train step: auto (on for GPU/TPU, off on '
        'CPU, where it was measured slower), true or false.',
        ('auto', 'true', 'false'),
    )
    steps_per_call: int = _field(1, 'Train steps run inside one tf.function call.', bound=POSITIVE)
    sync_bn: bool = _field(False, 'Synchronise BatchNorm statistics across replicas.')
    run_eagerly: bool = _field(False, 'Run the train step eagerly (debugging).')
    # --- monitoring and checkpoints ---
    log_every: int = _field(
        100, 'Steps between TensorBoard scalars and progress-bar updates.', bound=POSITIVE
    )
    sample_every: int = _field(
        500, 'Steps between fixed-z sample grids (TensorBoard and PNG).', bound=POSITIVE
    )
    checkpoint_every: int = _field(1000, 'Steps between checkpoints.', bound=POSITIVE)
    keep_checkpoints: int = _field(3, 'Rolling checkpoints kept.', bound=POSITIVE)
    num_grid: int = _field(
        64, 'Images in each fixed-z sample grid (a square number reads best).', bound=POSITIVE
    )
    # --- export and sampling ---
    ema_decay: float = _field(
        0.999, 'Decay of the moving average of G weights, exported as the default sampler (0: off).'
    )
    ema_warmup: float = _field(
        10.0,
        'Warm-up N of that average: its decay at step t is min(--ema_decay, (1 + t) / (N + t)), which weighs '
        'step s by about (s / t)^(N - 2): 10 as in tf.train.ExponentialMovingAverage; 2 averages every '
        'step alike.',
    )
    export_at_end: bool = _field(True, 'Export <workdir>/saved_model when training ends.')
    saved_model: str = _field(
        '', 'SavedModel folder for the sampling modes (default: <workdir>/saved_model).'
    )
    sampler: str = _field(
        'ema', 'Which exported generator to use: ema (averaged weights) or raw.', ('ema', 'raw')
    )
    num: int = _field(64, 'Images to sample (sample) or to render with and without filters (ablate).')
    out: str = _field(
        '',
        'Output PNG (default: <mode>.png here); the z .npy and the GIF go beside it. With --mode=export '
        '--format=tflite*: the .tflite file (default: <workdir>/generator[_float16].tflite).',
    )
    out_dir: str = _field(
        '',
        'Also write one PNG per sample into this folder, streamed and resumable, their z in z.npy '
        '(sample); where --mode=prepare writes TFRecords.',
    )
    num_walks: int = _field(4, 'Latent walks, one grid row each (interpolate).')
    interp_steps: int = _field(8, 'Images per walk, end points included (interpolate).')
    interpolation: str = _field(
        'slerp', 'Path between two z: slerp (on the sphere) or lerp.', ('slerp', 'lerp')
    )
    z_file: str = _field('', 'A .npy of z vectors written by --mode=sample (arithmetic).')
    group_a: str = _field('', 'Comma-separated indices into --z_file for group A (arithmetic: A - B + C).')
    group_b: str = _field('', 'Indices into --z_file for group B (subtracted).')
    group_c: str = _field('', 'Indices into --z_file for group C (added).')
    perturb_scale: float = _field(
        0.25, 'Uniform noise added to A - B + C for the 8 outer cells (paper: 0.25).'
    )
    ablate_layer: str = _field(
        '', 'Generator layer whose feature maps are zeroed (default: the last hidden one).'
    )
    ablate_filters: str = _field('', 'Feature maps to zero: indices like 0,5,7 or top:N (the N most active).')
    # --- looking inside (visualize, explore) ---
    num_features: int = _field(
        6,
        "Features of D's last convolution shown by --mode=visualize (the most active ones; paper: 6).",
        bound=Bound(1, 64),
    )
    port: int = _field(7860, 'Port of the --mode=explore page.', bound=Bound(1, 65535))
    host: str = _field(
        '127.0.0.1', 'Address the --mode=explore page listens on (0.0.0.0: every network interface).'
    )
    # --- the rest of the TensorFlow world: TFLite, TF Serving ---
    format: str = _field(
        'saved_model',
        'What --mode=export writes: saved_model, tflite (a TFLite file of serving_default, float32) or '
        'tflite_float16 (its weights stored in float16: half the size).',
        EXPORT_FORMATS,
    )
    serving_version: int = _field(
        0,
        '--mode=export: write the SavedModel as version N of a TF Serving model, <base>/<N>/ where <base> is '
        '--saved_model (default <workdir>/serving); 0: off. An existing version is never replaced.',
    )
    model: str = _field(
        '', 'A .tflite generator (--format=tflite) that --mode=sample uses instead of the SavedModel.'
    )
    # --- robustness ---
    on_nan: str = _field(
        'stop',
        'On a NaN/Inf loss: stop (keep the last good checkpoint) or rollback (restore it, halve the '
        'learning rates, go on).',
        ('stop', 'rollback'),
    )
    max_rollbacks: int = _field(
        3,
        'Most rollbacks one run makes with --on_nan=rollback before it stops (0: stop at the first).',
        bound=Bound(0, 100),
    )
    collapse_threshold: float = _field(
        0.1,
        'Warn of mode collapse when the fixed-z samples differ less than this fraction of real images '
        'do (mean pairwise distance; 0: off).',
        bound=Bound(0, 1, high_open=True, text='in [0, 1) (0 turns the warning off)'),
    )
    # --- benchmark (--mode=bench) ---
    bench: str = _field(
        'step',
        'What --mode=bench times: step (training on in-memory data) or input (the pipeline).',
        ('step', 'input'),
    )
    bench_baseline: bool = _field(
        False, 'Also time the straightforward tutorial-style step, interleaved with ours (--mode=bench).'
    )
    bench_xla_baseline: bool = _field(
        False,
        'Also time the straightforward step compiled with XLA on in-memory batches, interleaved with ours '
        '(--mode=bench); the fair reference on GPUs.',
    )
    bench_warmup_steps: int = _field(4, 'Untimed steps first: tracing and warm caches (--mode=bench).')
    bench_steps: int = _field(10, 'Steps per timed window (--mode=bench).', bound=POSITIVE)
    bench_windows: int = _field(5, 'Timed windows; the median is reported (--mode=bench).', bound=POSITIVE)
    # --- speed: the same maths on faster kernels ---
    fused_batch_norm: str = _field(
        'auto',
        "Train BatchNorm with TensorFlow's fused kernel (same maths): auto (yes, but not on a CPU where "
        "TensorFlow runs its Eigen kernels, oneDNN off, where Keras' ops measured faster), true or false.",
        ('auto', 'true', 'false'),
    )
    fast_layers: str = _field(
        'auto',
        'Dropout and LeakyReLU reimplemented for speed with the same maths (dcgan_tf/layers/dropout.py, '
        "leaky_relu.py): auto (yes, but not on a CPU running TensorFlow's Eigen kernels), true or false.",
        ('auto', 'true', 'false'),
    )
    fast_conv: str = _field(
        'auto',
        'Convolutions train with faster exact rewrites of slow oneDNN ops (dcgan_tf/layers/fast_conv.py): '
        "auto (on a CPU, where they are faster), off (TensorFlow's ops) or all (wherever possible).",
        ('auto', 'off', 'all'),
    )
    # --- evaluation and probe ---
    feature_net: str = _field(
        'inception',
        'Feature network of the quality metrics: inception (InceptionV3 at 299x299) or the '
        "project's mnist / fashion_mnist classifier (--classifier_path).",
        FEATURE_NETS,
    )
    inception_weights: str = _field(
        'imagenet', "InceptionV3 weights: imagenet (Keras downloads them), a local .h5 file, or 'none'."
    )
    classifier_path: str = _field(
        '', 'Classifier .keras file (feature nets mnist/fashion_mnist; where train_classifier saves it).'
    )
    classifier_epochs: int = _field(12, 'Training epochs of --mode=train_classifier.')
    classifier_train_examples: int = _field(0, 'Train on only the first N examples (0: all; for tests).')
    eval_source: str = _field(
        'generator',
        'What --mode=evaluate measures against the real split: generator (--saved_model, else the latest '
        'checkpoint in --workdir), untrained (a freshly initialised G: the ceiling) or real (train-split '
        'images: the floor).',
        EVAL_SOURCES,
    )
    eval_every: int = _field(0, 'Steps between quality evaluations during training (0: off).')
    eval_samples: int = _field(5000, 'Generated images per evaluation (papers use 50000).')
    eval_real_samples: int = _field(0, 'Real images per evaluation (0: as many as --eval_samples).')
    eval_real_split: str = _field('test', 'Split the real reference images come from.', ('test', 'train'))
    eval_metric: str = _field(
        'fid', 'Metric that picks the best checkpoint during training.', ('fid', 'kid', 'score', 'coverage')
    )
    kid_subsets: int = _field(100, 'Random subsets the KID is averaged over (its std is over them too).')
    kid_subset_size: int = _field(1000, 'Samples per KID subset (capped at the smaller set).')
    export_best: bool = _field(
        False, 'Export the best-evaluated checkpoint (checkpoints/best) instead of the latest.'
    )
    probe_labels_per_class: str = _field(
        '100,all', 'Labelled examples per class for the linear probe: comma-separated counts and/or all.'
    )
    probe_test_examples: int = _field(10000, 'Test images the probe is scored on (at most the split).')
    # --- data sets and prepared data ---
    crop: str = _field(
        'center',
        'Square crop before resizing: center (largest centred square), center:N (an N x N centred '
        'square, e.g. 108 for CelebA at 64x64) or none (squash the whole image).',
    )
    eval_holdout: int = _field(
        0,
        'Hold out the last N training examples (a fixed slice) as the test split, e.g. for LSUN whose '
        "validation split has 300 images (0: use the data set's own test split).",
    )
    tfds_manual_dir: str = _field('', "tensorflow-datasets' manual_dir (archives downloaded by hand).")
    shard_mb: int = _field(128, 'Target size of each TFRecord shard written by --mode=prepare.')
    cache_mb: int = _field(
        4096,
        'Prepared TFRecords (tfrecord:<folder>) up to this size are read into memory once (fastest); '
        'larger ones stream from disk.',
    )

    @property
    def model_flags(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in MODEL_FLAGS}

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    @classmethod
    def create(cls, **values: Any) -> Config:
        """A validated Config from keyword arguments (for notebooks); ConfigError, one sentence, if bad."""
        return validate(_typed(cls(), values, 'Config.create'))


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def field_help(name: str) -> tuple[str, tuple[str, ...] | None]:
    """Help text and choices of one Config field, for defining its flag."""
    field = {f.name: f for f in dataclasses.fields(Config)}[name]
    return field.metadata['help'], field.metadata['choices']


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate_model_flags(cfg: Config) -> None:
    """The checks a model can be built from (also run on a workdir's recorded flags)."""
    _require(
        cfg.resolution in RESOLUTIONS,
        f'--resolution={cfg.resolution} is not supported; use one of {", ".join(map(str, RESOLUTIONS))}.',
    )
    _require(cfg.channels in (1, 3), f'--channels={cfg.channels} must be 1 or 3.')
    for name in ('z_dim', 'gf_dim', 'df_dim', 'kernel_size', 'g_extra_layers', 'd_extra_layers'):
        _check_number(_FIELDS[name], getattr(cfg, name))
    _require(
        cfg.arch != 'tutorial' or (cfg.resolution == 28 and cfg.channels == 1),
        f"--arch=tutorial is the TF tutorial's MNIST pair: it needs --resolution=28 and "
        f'--channels=1, not {cfg.resolution} and {cfg.channels}.',
    )


AUGMENT_OPS = ('color', 'translation', 'cutout')


def parse_augment_policy(policy: str) -> tuple[str, ...]:
    """'color,translation' -> ('color', 'translation'); ConfigError naming an unknown part."""
    parts = tuple(p.strip() for p in policy.split(',') if p.strip())
    unknown = [p for p in parts if p not in AUGMENT_OPS]
    _require(
        parts and not unknown,
        f'--augment_policy={policy!r} is not a comma-separated list of {", ".join(AUGMENT_OPS)} '
        f'({"unknown: " + ", ".join(unknown) if unknown else "empty"}).',
    )
    return parts


def validate(cfg: Config) -> Config:
    """Checks values and combinations; raises ConfigError with one sentence naming the culprit."""
    for f in dataclasses.fields(Config):
        choices = f.metadata['choices']
        value = getattr(cfg, f.name)
        if choices is not None:
            _require(value in choices, f'--{f.name}={value!r} is not one of: {", ".join(choices)}.')
    for f in dataclasses.fields(Config):
        if bound_of(f) is not None and f.name not in MODEL_FLAGS:
            _check_number(f, getattr(cfg, f.name))
    validate_model_flags(cfg)
    if cfg.augment == 'diffaugment':
        parse_augment_policy(cfg.augment_policy)
    if cfg.mode == 'train':
        _require(
            cfg.train_steps > 0 or cfg.epochs > 0, 'Set --train_steps or --epochs to say how long to train.'
        )
    if cfg.dataset == 'folder':
        _check_data_dir(cfg.data_dir, '--dataset=folder needs --data_dir, a folder of images.')
    if cfg.dataset in ('mnist', 'fashion_mnist') and cfg.data_dir:
        _check_data_dir(cfg.data_dir, '')
    _require(bool(cfg.workdir), '--workdir must not be empty.')
    _validate_sampling(cfg)
    _validate_distribution(cfg)
    _validate_evaluation(cfg)
    _validate_data_sets(cfg)
    _validate_inside(cfg)
    _validate_tf_tools(cfg)
    return cfg


def _validate_tf_tools(cfg: Config) -> None:
    # The 2015-12-05 graph that published FIDs use is a TF1 GraphDef (pytorch-fid and clean-fid ship it as
    # a .pth); Keras' InceptionV3 cannot load either, so say what to use instead of failing inside Keras.
    _require(
        os.path.splitext(cfg.inception_weights)[1].lower() not in ('.pb', '.pth', '.pt'),
        f'--inception_weights={cfg.inception_weights} looks like the FID Inception graph of published '
        f'FIDs, which --feature_net=inception cannot load (it takes Keras InceptionV3 .h5 weights); for '
        f'paper-comparable FIDs write a folder with --mode=sample --out_dir and score it with clean-fid.',
    )
    _require(
        cfg.format == 'saved_model' or cfg.mode == 'export',
        f'--format={cfg.format} applies to --mode=export, not --mode={cfg.mode}.',
    )
    _require(
        not cfg.serving_version or cfg.format == 'saved_model',
        f'--serving_version={cfg.serving_version} applies to --format=saved_model (TF Serving serves '
        f'SavedModels), not {cfg.format}.',
    )
    _require(
        not cfg.serving_version or cfg.mode == 'export',
        f'--serving_version={cfg.serving_version} applies to --mode=export, not --mode={cfg.mode}.',
    )
    if cfg.model:
        _require(
            cfg.mode == 'sample',
            f'--model={cfg.model} (a TFLite generator) is read by --mode=sample only; --mode={cfg.mode} '
            f'takes --saved_model.',
        )
        _require(
            is_url(cfg.model) or os.path.isfile(cfg.model),
            f'--model={cfg.model} does not exist; write one with --mode=export --format=tflite.',
        )


def _validate_inside(cfg: Config) -> None:
    _require(bool(cfg.host.strip()), '--host must not be empty (127.0.0.1 serves this machine only).')
    if cfg.mode == 'visualize':
        _require(
            bool(cfg.out_dir), '--mode=visualize needs --out_dir, the folder to write its pictures into.'
        )
        path = cfg.classifier_path
        _require(
            not path or path.startswith('gs://') or os.path.isfile(path),
            f'--classifier_path={path} does not exist; train one with --mode=train_classifier.',
        )


def parse_labels_per_class(text: str) -> list[int]:
    """'10,100,all' -> [10, 100, 0] (0: every labelled example); ConfigError on anything else."""
    counts = []
    for part in (p.strip() for p in text.split(',') if p.strip()):
        if part == 'all':
            counts.append(0)
        elif part.isdigit() and int(part) > 0:
            counts.append(int(part))
        else:
            raise ConfigError(
                f'--probe_labels_per_class={text!r} must be positive counts and/or all, e.g. 10,100,all.'
            )
    _require(bool(counts), '--probe_labels_per_class is empty: give counts and/or all, e.g. 100,all.')
    return counts


def _validate_evaluation(cfg: Config) -> None:
    positive = ('eval_samples', 'kid_subsets', 'kid_subset_size', 'classifier_epochs', 'probe_test_examples')
    for name in positive:
        value = getattr(cfg, name)
        _require(value > 0, f'--{name}={value} must be a positive integer.')
    for name in ('eval_every', 'eval_real_samples', 'classifier_train_examples'):
        value = getattr(cfg, name)
        _require(value >= 0, f'--{name}={value} must not be negative.')
    _require(cfg.eval_samples >= 2, f'--eval_samples={cfg.eval_samples} must be at least 2 (a covariance).')
    parse_labels_per_class(cfg.probe_labels_per_class)
    needs_classifier = cfg.feature_net != 'inception' and (
        cfg.mode == 'evaluate' or (cfg.mode == 'train' and cfg.eval_every > 0)
    )
    if needs_classifier and not is_url(cfg.classifier_path):
        _require(
            bool(cfg.classifier_path),
            f'--feature_net={cfg.feature_net} needs --classifier_path, a .keras file written by '
            f'--mode=train_classifier --dataset={cfg.feature_net}.',
        )
        _require(
            os.path.isfile(cfg.classifier_path),
            f'--classifier_path={cfg.classifier_path} does not exist; train one with '
            f'--mode=train_classifier.',
        )
    weights = cfg.inception_weights
    if cfg.feature_net == 'inception' and weights not in ('imagenet', 'none') and not is_url(weights):
        _require(os.path.isfile(weights), f'--inception_weights={weights} is not a file (or imagenet, none).')
    _require(
        not (cfg.mode == 'evaluate' and cfg.eval_source == 'real' and cfg.dataset == 'embedded'),
        '--eval_source=real --dataset=embedded would compare the embedded digits with themselves (they are '
        'the one MNIST test split, so train and test are the same images); measure the floor with '
        '--dataset=mnist --data_dir=<the four MNIST IDX files>.',
    )
    if cfg.mode == 'train_classifier':
        _require(
            cfg.dataset in ('mnist', 'fashion_mnist'),
            f'--mode=train_classifier needs --dataset=mnist or fashion_mnist, not {cfg.dataset}.',
        )


# 'GPU:0', '/gpu:1', '/device:CPU:0', '/job:worker/replica:0/task:1/device:GPU:0'.
_DEVICE_RE = re.compile(r'^(/job:\w+(/replica:\d+)?(/task:\d+)?)?/?(device:)?(cpu|gpu|tpu):\d+$', re.I)


def _validate_distribution(cfg: Config) -> None:
    devices = [d.strip() for d in cfg.devices.split(',') if d.strip()]
    for device in devices:
        _require(
            bool(_DEVICE_RE.match(device)),
            f'--devices={cfg.devices} has {device!r}, which is not a device name like GPU:0 or CPU:0.',
        )
    _require(
        not devices or cfg.strategy in ('one_device', 'mirrored', 'auto'),
        f'--devices only applies to --strategy=one_device or mirrored, not {cfg.strategy}.',
    )
    _require(
        cfg.strategy != 'one_device' or len(devices) <= 1,
        f'--strategy=one_device takes one device, not {cfg.devices}; use --strategy=mirrored for several.',
    )
    _require(
        not cfg.tpu or cfg.strategy in ('tpu', 'auto'),
        f'--tpu={cfg.tpu} only applies to --strategy=tpu (or auto), not {cfg.strategy}.',
    )


def parse_indices(text: str, flag: str) -> list[int]:
    """'1,2, 5' -> [1, 2, 5]; ConfigError naming the flag when it is empty or not integers."""
    try:
        values = [int(part) for part in text.split(',') if part.strip()]
    except ValueError:
        raise ConfigError(f'--{flag}={text!r} must be comma-separated integers, e.g. 0,4,7.') from None
    _require(bool(values), f'--{flag} is empty: give comma-separated indices, e.g. 0,4,7.')
    return values


def _validate_sampling(cfg: Config) -> None:
    _require(0 <= cfg.ema_decay < 1, f'--ema_decay={cfg.ema_decay} must be in [0, 1) (0 turns it off).')
    _require(
        2 <= cfg.ema_warmup <= 1e6,
        f'--ema_warmup={cfg.ema_warmup} must be between 2 (a plain mean of every step) and 1e6.',
    )
    if cfg.mode not in (*SAVED_MODEL_MODES, 'ablate'):
        return
    _require(0 <= cfg.seed <= MAX_SEED, f'--seed={cfg.seed} must be between 0 and 2**63 - 1.')
    # One call holds its images in memory; --mode=sample --out_dir streams them to files instead.
    streamed = cfg.mode == 'sample' and cfg.out_dir
    limit = MAX_STREAMED_SAMPLES if streamed else MAX_SAMPLES
    more = (
        f' (up to {MAX_STREAMED_SAMPLES:,} with --out_dir, streamed to files)' if cfg.mode == 'sample' else ''
    )
    _require(0 < cfg.num <= limit, f'--num={cfg.num} must be between 1 and {limit:,} images{more}.')
    _require(0 < cfg.num_walks <= 256, f'--num_walks={cfg.num_walks} must be between 1 and 256.')
    _require(2 <= cfg.interp_steps <= 1024, f'--interp_steps={cfg.interp_steps} must be between 2 and 1024.')
    _require(
        0 <= cfg.perturb_scale < 100 and cfg.perturb_scale == cfg.perturb_scale,
        f'--perturb_scale={cfg.perturb_scale} must be a small non-negative number.',
    )
    if cfg.mode in SAVED_MODEL_MODES and not cfg.model:
        path = cfg.saved_model or os.path.join(cfg.workdir, 'saved_model')
        if not is_url(path):
            _require(
                os.path.isdir(path),
                f'--saved_model={path} does not exist; export one with --mode=export --workdir=<run>.',
            )
            _require(
                os.path.isfile(os.path.join(path, 'saved_model.pb')),
                f'--saved_model={path} is not a SavedModel folder (no saved_model.pb in it).',
            )
    if cfg.mode == 'arithmetic':
        _require(bool(cfg.z_file), '--mode=arithmetic needs --z_file, the z .npy written by --mode=sample.')
        _require(is_url(cfg.z_file) or os.path.isfile(cfg.z_file), f'--z_file={cfg.z_file} does not exist.')
        for name in ('group_a', 'group_b', 'group_c'):
            indices = parse_indices(getattr(cfg, name), name)
            _require(min(indices) >= 0, f'--{name}={getattr(cfg, name)} has a negative index.')
    if cfg.mode == 'ablate' and cfg.ablate_filters and not cfg.ablate_filters.startswith('top:'):
        parse_indices(cfg.ablate_filters, 'ablate_filters')


def parse_crop(text: str) -> tuple[str, int]:
    """'center' -> ('center', 0); 'center:108' -> ('center', 108); 'none' -> ('none', 0)."""
    kind, _, size = text.partition(':')
    if kind == 'none' and not size:
        return 'none', 0
    if kind == 'center' and (not size or (size.isdigit() and int(size) > 0)):
        return 'center', int(size or 0)
    raise ConfigError(f'--crop={text!r} must be center, center:N (N a positive size, e.g. 108) or none.')


def _validate_data_sets(cfg: Config) -> None:
    dataset = cfg.dataset
    prefix = next((p for p in DATASET_PREFIXES if dataset.startswith(p)), None)
    _require(
        dataset in DATASETS or (prefix is not None and len(dataset) > len(prefix)),
        f'--dataset={dataset!r} is not one of: {", ".join(DATASETS)}, lsun/<category>, tfds:<name>, '
        f'tfrecord:<folder>.',
    )
    parse_crop(cfg.crop)
    _require(cfg.eval_holdout >= 0, f'--eval_holdout={cfg.eval_holdout} must not be negative.')
    _require(cfg.shard_mb > 0, f'--shard_mb={cfg.shard_mb} must be a positive integer.')
    _require(cfg.cache_mb >= 0, f'--cache_mb={cfg.cache_mb} must not be negative.')
    if dataset == 'lsun_lmdb':
        _check_data_dir(cfg.data_dir, '--dataset=lsun_lmdb needs --data_dir, e.g. .../bedroom_train_lmdb.')
        if not is_url(cfg.data_dir):
            _require(
                os.path.isfile(os.path.join(cfg.data_dir, 'data.mdb')),
                f'--data_dir={cfg.data_dir} is not an LMDB folder (no data.mdb in it).',
            )
    folder = dataset[len('tfrecord:') :]
    if dataset.startswith('tfrecord:') and not is_url(folder):
        _require(
            os.path.isfile(os.path.join(folder, 'manifest.json')),
            f'--dataset={dataset}: {folder} holds no manifest.json; write one with --mode=prepare '
            f'--out_dir={folder}.',
        )
    if cfg.mode == 'prepare':
        _require(bool(cfg.out_dir), '--mode=prepare needs --out_dir, the folder to write TFRecords into.')
        _require(
            os.path.abspath(cfg.out_dir) != os.path.abspath(cfg.data_dir or '.'),
            f'--out_dir={cfg.out_dir} must differ from --data_dir (prepare writes beside the source).',
        )


def _check_data_dir(path: str, missing_message: str) -> None:
    if is_url(path):
        return  # Checked by TensorFlow's file system when read; not reachable without it.
    _require(bool(path), missing_message)
    _require(os.path.isdir(path), f'--data_dir={path} does not exist or is not a folder.')
    _require(
        any(files for _, _, files in os.walk(path)),
        f"--data_dir={path} is empty: put the data set's files there.",
    )


def to_flagfile(cfg: Config) -> str:
    """The Config as an absl flagfile that re-runs the same training (`--flagfile=config.cfg`)."""
    lines = ['# Resolved flags of this run; re-run (or resume) it with --flagfile=<this file>.']
    for f in dataclasses.fields(Config):
        if f.name in NOT_RECORDED:
            continue
        value = getattr(cfg, f.name)
        if isinstance(value, bool):
            value = 'true' if value else 'false'
        lines.append(f'--{f.name}={value}')
    return '\n'.join(lines) + '\n'


_FLAG_LINE = re.compile(r'--?[A-Za-z_]\w*(=.*)?')
_BOOLS = {'true': True, '1': True, 't': True, 'false': False, '0': False, 'f': False}  # absl's spellings.


def parse_flagfile(text: str, where: str) -> dict[str, str]:
    """`--name=value` lines (absl's flagfile form) -> raw strings by name.

    Blank and `#` lines are skipped; `--flag` / `--noflag` are booleans. Raises ConfigError naming
    `where` (e.g. the file) and the first line that is not a flag.
    """
    fields = {f.name for f in dataclasses.fields(Config)}
    values = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        if not _FLAG_LINE.fullmatch(line):
            raise ConfigError(
                f'{where} is not a flagfile: line {number} ({line[:40]!r}) is not a --name=value flag; '
                f'correct or remove that line.'
            )
        name, equals, value = line.lstrip('-').partition('=')
        if not equals:
            name, value = (
                (name[2:], 'false') if name.startswith('no') and name[2:] in fields else (name, 'true')
            )
        values[name] = value
    return values


def _parse_value(field: dataclasses.Field, text: str, where: str) -> Any:
    kinds = {'int': 'an integer', 'float': 'a number', 'bool': 'true or false', 'str': 'text'}
    try:
        if field.type == 'bool':
            return _BOOLS[text.lower()]
        value = {'int': int, 'float': float, 'str': str}[field.type](text)
    except (KeyError, ValueError):
        value = None
    choices = field.metadata['choices']
    if value is None or (choices and value not in choices):
        expected = f'one of {", ".join(choices)}' if choices else kinds[field.type]
        raise ConfigError(
            f'{where} holds --{field.name}={text}, which is not {expected}; correct it to the value the run '
            f'was started with.'
        )
    return value


_TYPES = {'int': (int,), 'float': (int, float), 'bool': (bool,), 'str': (str,)}


def _typed(base: Config, values: dict[str, Any], where: str) -> Config:
    """`base` with `values`, each checked to be a known field of its type."""
    for name, value in values.items():
        if name not in _FIELDS:
            raise ConfigError(
                f'{where}: there is no setting {name!r}; the names are the flags of --helpfull.'
            )
        kind = _FIELDS[name].type
        if not isinstance(value, _TYPES[kind]) or (kind != 'bool' and isinstance(value, bool)):
            raise ConfigError(f'{where}: {name}={value!r} is not a{"n" if kind == "int" else ""} {kind}.')
    return base.replace(**values)


def from_flagfile(path: str, **overrides: Any) -> Config:
    """A validated Config from a flagfile (or a shipped config's name, e.g. 'demo'), then `overrides`."""
    try:
        lines = flagfiles.read_flags(path)
    except FileNotFoundError:
        names = ', '.join(flagfiles.shipped_names())
        raise ConfigError(f'{path} is neither a flagfile nor a shipped config ({names}).') from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f'{path} cannot be read as a flagfile ({e}).') from None
    return validate(_typed(config_from_flagfile('\n'.join(lines), path), overrides, 'from_flagfile'))


def config_from_flagfile(text: str, where: str) -> Config:
    """The Config a flagfile (e.g. a workdir's config.cfg) describes; flags it omits keep their defaults.

    Unknown names are ignored (a file of another version of this program); a value that does not parse
    or a model that cannot be built raises ConfigError naming `where`.
    """
    raw = parse_flagfile(text, where)
    fields = [f for f in dataclasses.fields(Config) if f.name in raw]
    cfg = Config(**{f.name: _parse_value(f, raw[f.name], where) for f in fields})
    try:
        validate_model_flags(cfg)
    except ConfigError as e:
        raise ConfigError(f'{where} holds a model that cannot be built: {e}') from None
    return cfg
