"""The run's configuration: one frozen dataclass of every flag, with its bounds and help.

Every command-line flag is a field here (main.py defines the absl flags from these fields), so library
code and tests build a Config directly. Its checks are in validation.py and its text form in
flagfile_io.py; both are re-exported here. Nothing imports TensorFlow: validation runs before any heavy
import, so a bad value fails in well under a second.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dcgan_tf.bounds import (
    POSITIVE,
    Bound,
    ConfigError,
    bound_of,
)

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
    'conditional',
    'num_classes',
    'conditional_d',
    'info_code',
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


def is_url(path: str) -> bool:
    """gs://, s3://, ram://, hdfs://...: a path only TensorFlow's file systems reach, never os.path.

    Validation cannot check these without importing TensorFlow; they are checked when first read.
    """
    return '://' in path


def _field(
    default: Any,
    help: str,  # noqa: A002
    choices: tuple[str, ...] | None = None,
    bound: Bound | None = None,
) -> Any:
    return dataclasses.field(default=default, metadata={'help': help, 'choices': choices, 'bound': bound})


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
    conditional: bool = _field(
        False,
        'Class-conditional dcgan: G takes z and a class, D the image and its class (needs a labelled data '
        'set: embedded, mnist, fashion_mnist, a folder of class subfolders, a tfds set with labels, '
        'prepared TFRecords with labels).',
    )
    num_classes: int = _field(
        0, 'Classes of a --conditional model (0: as many as the data set has).', bound=Bound(0, 100000)
    )
    conditional_d: str = _field(
        'projection',
        "How a --conditional D reads the class: projection (an embedding of the class dotted with D's "
        "last features, Miyato & Koyama 2018) or concat (one-hot maps beside the image, the paper's code).",
        ('projection', 'concat'),
    )
    info_code: int = _field(
        0,
        "InfoGAN's categorical code (Chen et al. 2016), unsupervised: the index of the largest of z's first "
        'N entries is a code that D learns to read back from the image and G is rewarded for showing, so '
        'the samples sort into N distinct kinds (0: off).',
        bound=Bound(0, 1000),
    )
    info_weight: float = _field(
        1.0,
        "Weight of --info_code's loss (the code's cross-entropy from D's reading) in both models' losses.",
        bound=Bound(0, 1e3, low_open=True),
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
    lr_decay: str = _field(
        'none',
        'Schedule of both learning rates: none (constant) or linear (from --g_lr/--d_lr down to 0 at the '
        'last step, starting at --lr_decay_start; sharpens the samples of short runs).',
        ('none', 'linear'),
    )
    lr_decay_start: float = _field(
        0.5,
        'Share of the training steps after which --lr_decay=linear starts lowering the rates.',
        bound=Bound(0, 1, high_open=True),
    )
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
    label: int = _field(
        -1,
        'Class a --conditional export draws (sample, interpolate, arithmetic, explore); -1: every class in '
        'turn (sample, interpolate) or the class of each z (arithmetic).',
        bound=Bound(-1, 100000),
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
        cfg = validate(typed_config(cls(), values, 'Config.create'))
        check_mode_flags(cfg, list(values))
        return cfg


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def field_help(name: str) -> tuple[str, tuple[str, ...] | None]:
    """Help text and choices of one Config field, for defining its flag."""
    field = {f.name: f for f in dataclasses.fields(Config)}[name]
    return field.metadata['help'], field.metadata['choices']


# The checks and the flagfile form live in their own modules; `config.validate` etc. stay the API.
from dcgan_tf.flagfile_io import (  # noqa: E402
    config_from_flagfile,
    from_flagfile,
    parse_flagfile,
    to_flagfile,
    typed_config,
)
from dcgan_tf.validation import (  # noqa: E402
    AUGMENT_OPS,
    check_mode_flags,
    parse_augment_policy,
    parse_crop,
    parse_indices,
    parse_labels_per_class,
    validate,
    validate_model_flags,
)

__all__ = [
    'AUGMENT_OPS',
    'Bound',
    'bound_of',
    'check_mode_flags',
    'Config',
    'ConfigError',
    'config_from_flagfile',
    'field_help',
    'from_flagfile',
    'is_url',
    'parse_augment_policy',
    'parse_crop',
    'parse_flagfile',
    'parse_indices',
    'parse_labels_per_class',
    'to_flagfile',
    'validate',
    'validate_model_flags',
]
