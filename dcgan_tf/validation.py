"""Checks of a Config's values and combinations, each failing with one sentence (ConfigError), and the
parsers of flags whose values have a syntax (crops, indices, label counts, augmentation policies).

TensorFlow-free, so a bad flag fails before any heavy import.
"""

from __future__ import annotations

import dataclasses
import os
import re

from dcgan_tf import paths
from dcgan_tf.bounds import bound_of, check_number, require
from dcgan_tf.config import (
    DATASET_PREFIXES,
    DATASETS,
    FIELDS,
    MAX_SAMPLES,
    MAX_SEED,
    MAX_STREAMED_SAMPLES,
    MODEL_FLAGS,
    RESOLUTIONS,
    SAVED_MODEL_MODES,
    Config,
    ConfigError,
    is_url,
)

# Flags that only some modes read: given on the command line to another mode, each is refused rather than
# silently ignored (e.g. --z_file with --mode=interpolate).
MODE_FLAGS = {
    'overwrite': ('train',),
    'num': ('sample', 'ablate', 'visualize'),
    'out': ('sample', 'interpolate', 'arithmetic', 'ablate', 'export'),
    'out_dir': ('sample', 'prepare', 'visualize'),
    'label': ('sample', 'interpolate', 'arithmetic', 'explore'),
    'saved_model': ('sample', 'interpolate', 'arithmetic', 'explore', 'evaluate', 'export'),
    'sampler': (
        'sample',
        'interpolate',
        'arithmetic',
        'explore',
        'evaluate',
        'export',
        'ablate',
        'visualize',
    ),
    'z_file': ('sample', 'arithmetic'),
    'num_walks': ('interpolate',),
    'interp_steps': ('interpolate',),
    'interpolation': ('interpolate',),
    'group_a': ('arithmetic',),
    'group_b': ('arithmetic',),
    'group_c': ('arithmetic',),
    'perturb_scale': ('arithmetic',),
    'ablate_layer': ('ablate',),
    'ablate_filters': ('ablate',),
    'num_features': ('visualize',),
    'port': ('explore',),
    'host': ('explore',),
    'format': ('export',),
    'serving_version': ('export',),
    'model': ('sample',),
    'export_best': ('export', 'train'),
    'eval_source': ('evaluate',),
    'probe_labels_per_class': ('probe',),
    'probe_test_examples': ('probe',),
    'classifier_epochs': ('train_classifier',),
    'classifier_train_examples': ('train_classifier',),
    'shard_mb': ('prepare',),
    **{name: ('bench',) for name in FIELDS if name.startswith('bench')},
    # How a run trains: the train step's flags (which --mode=bench times too), then the loop's.
    **dict.fromkeys(
        ('g_lr', 'd_lr', 'beta_1', 'beta_2', 'lr_decay', 'lr_decay_start', 'update', 'steps_per_call'),
        ('train', 'bench'),
    ),
    **dict.fromkeys(
        (
            'train_steps',
            'epochs',
            'log_every',
            'sample_every',
            'checkpoint_every',
            'keep_checkpoints',
            'num_grid',
            'on_nan',
            'max_rollbacks',
            'collapse_threshold',
            'export_at_end',
            'eval_every',
            'ema_warmup',
        ),
        ('train',),
    ),
}


def check_mode_flags(cfg: Config, given: list[str] | set[str]) -> None:
    """Refuses a flag given for a mode that does not read it (one sentence), instead of ignoring it.

    `given`: the names set on the command line itself (or by Config.create), not those of a flagfile,
    which may hold flags for several modes.
    """
    for name in given:
        modes = MODE_FLAGS.get(name)
        if modes is not None and cfg.mode not in modes:
            raise ConfigError(
                f'--{name} applies to --mode={" or ".join(modes)}, not --mode={cfg.mode}, which would ignore '
                f'it; drop it.'
            )


def validate_model_flags(cfg: Config) -> None:
    """The checks a model can be built from (also run on a workdir's recorded flags)."""
    require(
        cfg.resolution in RESOLUTIONS,
        f'--resolution={cfg.resolution} is not supported; use one of {", ".join(map(str, RESOLUTIONS))}.',
    )
    require(cfg.channels in (1, 3), f'--channels={cfg.channels} must be 1 or 3.')
    for name in MODEL_FLAGS:  # Resolution and channels were checked against their lists above.
        if name not in ('resolution', 'channels') and bound_of(FIELDS[name]) is not None:
            check_number(FIELDS[name], getattr(cfg, name))
    require(
        not (cfg.conditional and cfg.arch == 'tutorial'),
        '--conditional builds a class-conditional dcgan pair; it does not apply to --arch=tutorial.',
    )
    if cfg.info_code:
        require(
            cfg.arch == 'dcgan' and not cfg.conditional,
            '--info_code is an unsupervised code of the unconditional dcgan pair; with --arch=tutorial or '
            '--conditional add --info_code=0 (configs/demo.cfg sets 10).',
        )
        require(
            1 < cfg.info_code <= cfg.z_dim,
            f"--info_code={cfg.info_code} reads the code off z's first entries: use 2 to --z_dim "
            f'({cfg.z_dim}), or 0 for none.',
        )
    require(
        cfg.arch != 'tutorial' or (cfg.resolution == 28 and cfg.channels == 1),
        f"--arch=tutorial is the TF tutorial's MNIST pair: it needs --resolution=28 and "
        f'--channels=1, not {cfg.resolution} and {cfg.channels}.',
    )


AUGMENT_OPS = ('color', 'translation', 'cutout')
# Data sets without class labels (--conditional cannot train on them).
UNLABELLED_DATASETS = ('synthetic', 'celeb_a', 'lsun_lmdb')


def parse_augment_policy(policy: str) -> tuple[str, ...]:
    """'color,translation' -> ('color', 'translation'); ConfigError naming an unknown part."""
    parts = tuple(p.strip() for p in policy.split(',') if p.strip())
    unknown = [p for p in parts if p not in AUGMENT_OPS]
    require(
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
            require(value in choices, f'--{f.name}={value!r} is not one of: {", ".join(choices)}.')
    for f in dataclasses.fields(Config):
        if bound_of(f) is not None and f.name not in MODEL_FLAGS:
            check_number(f, getattr(cfg, f.name))
    validate_model_flags(cfg)
    if cfg.augment == 'diffaugment':
        parse_augment_policy(cfg.augment_policy)
    if cfg.mode == 'train':
        require(
            cfg.train_steps > 0 or cfg.epochs > 0, 'Set --train_steps or --epochs to say how long to train.'
        )
    if cfg.dataset == 'folder':
        _check_data_dir(cfg.data_dir, '--dataset=folder needs --data_dir, a folder of images.')
    if cfg.dataset in ('mnist', 'fashion_mnist') and cfg.data_dir:
        _check_data_dir(cfg.data_dir, '')
    require(bool(cfg.workdir), '--workdir must not be empty.')
    if cfg.out_dir and cfg.mode in ('sample', 'prepare', 'visualize'):
        found = paths.kind(cfg.out_dir)
        require(
            found in ('missing', 'folder', 'url'),
            f'--out_dir={cfg.out_dir} is a {found}, not a folder; give a folder to write into.',
        )
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
    require(
        os.path.splitext(cfg.inception_weights)[1].lower() not in ('.pb', '.pth', '.pt'),
        f'--inception_weights={cfg.inception_weights} looks like the FID Inception graph of published '
        f'FIDs, which --feature_net=inception cannot load (it takes Keras InceptionV3 .h5 weights); for '
        f'paper-comparable FIDs write a folder with --mode=sample --out_dir and score it with clean-fid.',
    )
    require(
        cfg.format == 'saved_model' or cfg.mode == 'export',
        f'--format={cfg.format} applies to --mode=export, not --mode={cfg.mode}.',
    )
    require(
        not cfg.serving_version or cfg.format == 'saved_model',
        f'--serving_version={cfg.serving_version} applies to --format=saved_model (TF Serving serves '
        f'SavedModels), not {cfg.format}.',
    )
    require(
        not cfg.serving_version or cfg.mode == 'export',
        f'--serving_version={cfg.serving_version} applies to --mode=export, not --mode={cfg.mode}.',
    )
    if cfg.model:
        require(
            cfg.mode == 'sample',
            f'--model={cfg.model} (a TFLite generator) is read by --mode=sample only; --mode={cfg.mode} '
            f'takes --saved_model.',
        )
        paths.require_file(cfg.model, '--model', '; write one with --mode=export --format=tflite')


def _validate_inside(cfg: Config) -> None:
    require(bool(cfg.host.strip()), '--host must not be empty (127.0.0.1 serves this machine only).')
    if cfg.mode == 'visualize':
        require(bool(cfg.out_dir), '--mode=visualize needs --out_dir, the folder to write its pictures into.')
        if cfg.classifier_path:
            paths.require_file(
                cfg.classifier_path, '--classifier_path', '; train one with --mode=train_classifier'
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
    require(bool(counts), '--probe_labels_per_class is empty: give counts and/or all, e.g. 100,all.')
    return counts


def _validate_evaluation(cfg: Config) -> None:
    positive = ('eval_samples', 'kid_subsets', 'kid_subset_size', 'classifier_epochs', 'probe_test_examples')
    for name in positive:
        value = getattr(cfg, name)
        require(value > 0, f'--{name}={value} must be a positive integer.')
    for name in ('eval_every', 'eval_real_samples', 'classifier_train_examples'):
        value = getattr(cfg, name)
        require(value >= 0, f'--{name}={value} must not be negative.')
    require(cfg.eval_samples >= 2, f'--eval_samples={cfg.eval_samples} must be at least 2 (a covariance).')
    parse_labels_per_class(cfg.probe_labels_per_class)
    needs_classifier = cfg.feature_net != 'inception' and (
        cfg.mode == 'evaluate' or (cfg.mode == 'train' and cfg.eval_every > 0)
    )
    if needs_classifier:
        require(
            bool(cfg.classifier_path),
            f'--feature_net={cfg.feature_net} needs --classifier_path, a .keras file written by '
            f'--mode=train_classifier --dataset={cfg.feature_net}.',
        )
        paths.require_file(
            cfg.classifier_path, '--classifier_path', '; train one with --mode=train_classifier'
        )
    weights = cfg.inception_weights
    if cfg.feature_net == 'inception' and weights not in ('imagenet', 'none'):
        paths.require_file(weights, '--inception_weights', ' (or give imagenet or none)')
    require(
        not (cfg.mode == 'evaluate' and cfg.eval_source == 'real' and cfg.dataset == 'embedded'),
        '--eval_source=real --dataset=embedded would compare the embedded digits with themselves (they are '
        'the one MNIST test split, so train and test are the same images); measure the floor with '
        '--dataset=mnist --data_dir=<the four MNIST IDX files>.',
    )
    if cfg.mode == 'train_classifier':
        require(
            cfg.dataset in ('mnist', 'fashion_mnist'),
            f'--mode=train_classifier needs --dataset=mnist or fashion_mnist, not {cfg.dataset}.',
        )


# 'GPU:0', '/gpu:1', '/device:CPU:0', '/job:worker/replica:0/task:1/device:GPU:0'.
_DEVICE_RE = re.compile(r'^(/job:\w+(/replica:\d+)?(/task:\d+)?)?/?(device:)?(cpu|gpu|tpu):\d+$', re.I)


def _validate_distribution(cfg: Config) -> None:
    devices = [d.strip() for d in cfg.devices.split(',') if d.strip()]
    for device in devices:
        require(
            bool(_DEVICE_RE.match(device)),
            f'--devices={cfg.devices} has {device!r}, which is not a device name like GPU:0 or CPU:0.',
        )
    require(
        not devices or cfg.strategy in ('one_device', 'mirrored', 'auto'),
        f'--devices only applies to --strategy=one_device or mirrored, not {cfg.strategy}.',
    )
    require(
        cfg.strategy != 'one_device' or len(devices) <= 1,
        f'--strategy=one_device takes one device, not {cfg.devices}; use --strategy=mirrored for several.',
    )
    require(
        not cfg.tpu or cfg.strategy in ('tpu', 'auto'),
        f'--tpu={cfg.tpu} only applies to --strategy=tpu (or auto), not {cfg.strategy}.',
    )


def parse_indices(text: str, flag: str) -> list[int]:
    """'1,2, 5' -> [1, 2, 5]; ConfigError naming the flag when it is empty or not integers."""
    try:
        values = [int(part) for part in text.split(',') if part.strip()]
    except ValueError:
        raise ConfigError(f'--{flag}={text!r} must be comma-separated integers, e.g. 0,4,7.') from None
    require(bool(values), f'--{flag} is empty: give comma-separated indices, e.g. 0,4,7.')
    return values


def _validate_sampling(cfg: Config) -> None:
    require(0 <= cfg.ema_decay < 1, f'--ema_decay={cfg.ema_decay} must be in [0, 1) (0 turns it off).')
    require(
        2 <= cfg.ema_warmup <= 1e6,
        f'--ema_warmup={cfg.ema_warmup} must be between 2 (a plain mean of every step) and 1e6.',
    )
    if cfg.mode not in (*SAVED_MODEL_MODES, 'ablate'):
        return
    require(0 <= cfg.seed <= MAX_SEED, f'--seed={cfg.seed} must be between 0 and 2**63 - 1.')
    # One call holds its images in memory; --mode=sample --out_dir streams them to files instead.
    streamed = cfg.mode == 'sample' and cfg.out_dir
    limit = MAX_STREAMED_SAMPLES if streamed else MAX_SAMPLES
    more = (
        f' (up to {MAX_STREAMED_SAMPLES:,} with --out_dir, streamed to files)' if cfg.mode == 'sample' else ''
    )
    require(0 < cfg.num <= limit, f'--num={cfg.num} must be between 1 and {limit:,} images{more}.')
    require(0 < cfg.num_walks <= 256, f'--num_walks={cfg.num_walks} must be between 1 and 256.')
    require(2 <= cfg.interp_steps <= 1024, f'--interp_steps={cfg.interp_steps} must be between 2 and 1024.')
    require(
        0 <= cfg.perturb_scale < 100 and cfg.perturb_scale == cfg.perturb_scale,
        f'--perturb_scale={cfg.perturb_scale} must be a small non-negative number.',
    )
    if cfg.mode in SAVED_MODEL_MODES and not cfg.model:
        check_saved_model(cfg.saved_model or os.path.join(cfg.workdir, 'saved_model'))
    if cfg.mode == 'arithmetic':
        require(bool(cfg.z_file), '--mode=arithmetic needs --z_file, the z .npy written by --mode=sample.')
    if cfg.z_file:
        paths.require_file(cfg.z_file, '--z_file', '; give the .npy of z written by --mode=sample')
    if cfg.mode == 'arithmetic':
        for name in ('group_a', 'group_b', 'group_c'):
            indices = parse_indices(getattr(cfg, name), name)
            require(min(indices) >= 0, f'--{name}={getattr(cfg, name)} has a negative index.')
    if cfg.mode == 'ablate' and cfg.ablate_filters and not cfg.ablate_filters.startswith('top:'):
        parse_indices(cfg.ablate_filters, 'ablate_filters')


def check_saved_model(path: str, flag: str = '--saved_model') -> None:
    """One sentence unless `path` is a SavedModel folder (URLs are checked when loaded)."""
    if is_url(path):
        return
    found = paths.kind(path)
    if found == 'file':
        hint = {
            '.tflite': f'; a TFLite generator goes to --model={path} (with --mode=sample)',
            '.keras': ' (a Keras model file, such as --classifier_path takes)',
            '.h5': ' (a Keras weights file)',
        }.get(os.path.splitext(path)[1].lower(), '')
        raise ConfigError(
            f'{flag}={path} is a file, not a SavedModel folder{hint}; give the folder --mode=export wrote '
            f'(e.g. <workdir>/saved_model).'
        )
    paths.require_folder(path, flag, '; export one with --mode=export --workdir=<run>')
    pb = os.path.join(path, 'saved_model.pb')
    require(
        paths.kind(pb) != 'missing', f'{flag}={path} is not a SavedModel folder (no saved_model.pb in it).'
    )
    paths.require_no_special_files(path, flag)
    paths.require_file(pb, f'{flag}={path}: its saved_model.pb')


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
    require(
        dataset in DATASETS or (prefix is not None and len(dataset) > len(prefix)),
        f'--dataset={dataset!r} is not one of: {", ".join(DATASETS)}, lsun/<category>, tfds:<name>, '
        f'tfrecord:<folder>.',
    )
    parse_crop(cfg.crop)
    unlabelled = dataset in UNLABELLED_DATASETS or dataset.startswith('lsun/')
    require(
        not (cfg.conditional and unlabelled),
        f'--conditional needs class labels, and --dataset={dataset} has none; use embedded, mnist, '
        f'fashion_mnist, a folder with one subfolder per class, or a tfds set with a label feature.',
    )
    require(cfg.eval_holdout >= 0, f'--eval_holdout={cfg.eval_holdout} must not be negative.')
    require(cfg.shard_mb > 0, f'--shard_mb={cfg.shard_mb} must be a positive integer.')
    require(cfg.cache_mb >= 0, f'--cache_mb={cfg.cache_mb} must not be negative.')
    if dataset == 'lsun_lmdb':
        _check_data_dir(cfg.data_dir, '--dataset=lsun_lmdb needs --data_dir, e.g. .../bedroom_train_lmdb.')
        if not is_url(cfg.data_dir):
            require(
                os.path.isfile(os.path.join(cfg.data_dir, 'data.mdb')),
                f'--data_dir={cfg.data_dir} is not an LMDB folder (no data.mdb in it).',
            )
    folder = dataset[len('tfrecord:') :]
    if dataset.startswith('tfrecord:') and not is_url(folder):
        require(
            os.path.isfile(os.path.join(folder, 'manifest.json')),
            f'--dataset={dataset}: {folder} holds no manifest.json; write one with --mode=prepare '
            f'--out_dir={folder}.',
        )
    if cfg.mode == 'prepare':
        require(bool(cfg.out_dir), '--mode=prepare needs --out_dir, the folder to write TFRecords into.')
        require(
            os.path.abspath(cfg.out_dir) != os.path.abspath(cfg.data_dir or '.'),
            f'--out_dir={cfg.out_dir} must differ from --data_dir (prepare writes beside the source).',
        )


def _check_data_dir(path: str, missing_message: str) -> None:
    if is_url(path):
        return  # Checked by TensorFlow's file system when read; not reachable without it.
    require(bool(path), missing_message)
    paths.require_folder(path, '--data_dir')
    require(
        any(files for _, _, files in os.walk(path)),
        f"--data_dir={path} is empty: put the data set's files there.",
    )
