"""The run folder (workdir): its layout, and every read and write of it, through tf.io.gfile.

A local path, gs://, s3:// or ram:// (TensorFlow's in-memory file system) behave alike: nothing here
hands a workdir path to open(), glob or os. The layout:

  config.cfg      the flags that re-run the same training (never --overwrite or --mode)
  checkpoints/    tf.train.CheckpointManager's files, and best/ (periodic evaluation): checkpoints.py
  tensorboard/    train/ and eval/ event files
  samples/        step_XXXXXXX.png fixed-z grids, progress.gif, losses.png
  metrics.jsonl   one JSON object of averaged metrics per --log_every steps
  saved_model/    the exported generator
  lock.json       present while a trainer runs, one trainer per workdir: lock.py

This module holds the layout, config.cfg, metrics.jsonl, the pictures, --overwrite and the writability
probe; checkpoints.py chooses the checkpoint a run resumes from; lock.py keeps a second trainer out.
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf
from absl import logging

from dcgan_tf import images, paths
from dcgan_tf.config import (
    MODEL_FLAGS,
    Config,
    ConfigError,
    config_from_flagfile,
    parse_flagfile,
    to_flagfile,
)

CONFIG_FILE = 'config.cfg'
CLASSES_FILE = 'classes.txt'
CHECKPOINT_DIR = 'checkpoints'
TENSORBOARD_DIR = 'tensorboard'
SAMPLES_DIR = 'samples'
METRICS_FILE = 'metrics.jsonl'
EXPORT_DIR = 'saved_model'
LOCK_FILE = 'lock.json'


def is_url(path: str) -> bool:
    """gs://, s3://, ram://...: object stores and in-memory file systems, reachable only through gfile."""
    return '://' in path


def config_path(workdir: str) -> str:
    return os.path.join(workdir, CONFIG_FILE)


def classes_path(workdir: str) -> str:
    return os.path.join(workdir, CLASSES_FILE)


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(workdir, CHECKPOINT_DIR)


def summary_dir(workdir: str, split: str = 'train') -> str:
    return os.path.join(workdir, TENSORBOARD_DIR, split)


def samples_dir(workdir: str) -> str:
    return os.path.join(workdir, SAMPLES_DIR)


def metrics_path(workdir: str) -> str:
    return os.path.join(workdir, METRICS_FILE)


def export_path(workdir: str) -> str:
    return os.path.join(workdir, EXPORT_DIR)


def lock_path(workdir: str) -> str:
    return os.path.join(workdir, LOCK_FILE)


def sample_grid_path(workdir: str, step: int) -> str:
    return os.path.join(samples_dir(workdir), f'step_{step:07d}.png')


def write_file(path: str, data: bytes) -> None:
    """Whole or not at all: through a temporary name and a rename (see images.write_file)."""
    images.write_file(path, data)


def read_bytes(path: str) -> bytes:
    with tf.io.gfile.GFile(path, 'rb') as f:
        return f.read()


def error_line(error: BaseException) -> str:
    """The first line of an error's message, at most 200 characters."""
    return paths.error_text(error)


# --- the folder: the writability probe ---


_FILES = (CONFIG_FILE, CLASSES_FILE, METRICS_FILE, LOCK_FILE, os.path.join(CHECKPOINT_DIR, 'checkpoint'))
_FOLDERS = (CHECKPOINT_DIR, TENSORBOARD_DIR, SAMPLES_DIR, EXPORT_DIR)


def _wrong_kind(path: str, expected: str) -> str | None:
    """What `path` is when it exists and is not a `expected` ('file' or 'folder'); None otherwise."""
    if is_url(path):
        if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path) == (expected == 'folder'):
            return None
        return 'a folder' if expected == 'file' else 'a file'
    found = paths.kind(path)
    if found in ('missing', expected):
        return None
    return f'an {found}' if found[0] in 'aeiou' else f'a {found}'


def check_layout(workdir: str) -> None:
    """ConfigError (one sentence) when an entry of the run folder is of the wrong kind: a folder where the run
    keeps a file (lock.json, metrics.jsonl, checkpoints/checkpoint, ...), a file where it keeps a folder
    (samples/, checkpoints/, ...), or a FIFO, socket or device anywhere in it (reading one blocks forever)."""
    wrong = _wrong_kind(workdir, 'folder')
    if wrong:
        raise ConfigError(f'--workdir={workdir} is {wrong}, not a folder; give a folder for the run.')
    for names, expected in ((_FILES, 'file'), (_FOLDERS, 'folder')):
        for name in names:
            path = os.path.join(workdir, name)
            wrong = _wrong_kind(path, expected)
            if wrong:
                raise ConfigError(
                    f'--workdir={workdir}: {path} is {wrong} where the run keeps a {expected}; move it away '
                    f'and rerun.'
                )
    if not is_url(workdir):
        paths.require_no_special_files(workdir, '--workdir')


def ensure_writable(folder: str, flag: str = '--workdir', advice: str = '') -> None:
    """Creates `folder` and writes (then deletes) a probe file; ConfigError naming `flag` if it cannot."""
    probe = os.path.join(folder, f'.write_test{os.getpid()}')
    try:
        tf.io.gfile.makedirs(folder)
        with tf.io.gfile.GFile(probe, 'w') as f:
            f.write('ok')
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as e:
        raise ConfigError(f'{flag}={folder} is not writable ({error_line(e)}){advice}.') from None


# --- config.cfg ---


def read_config_text(workdir: str) -> str | None:
    """config.cfg's text, or None when the workdir has none; ConfigError when it is not text."""
    path = config_path(workdir)
    if not tf.io.gfile.exists(path):
        return None
    try:
        return read_bytes(path).decode('utf-8')
    except UnicodeDecodeError:
        raise ConfigError(
            f'{path} is not a text flagfile (it holds binary data); restore it, or delete it to record '
            f"this run's flags afresh."
        ) from None


def recorded_config(workdir: str) -> Config:
    """The Config the run in `workdir` was trained with, from its config.cfg."""
    text = read_config_text(workdir)
    if text is None:
        raise ConfigError(f'--workdir={workdir} has no {CONFIG_FILE}: it is not a training run folder.')
    return config_from_flagfile(text, config_path(workdir))


def check_config(workdir: str, cfg: Config) -> Config | None:
    """Refuses to resume a workdir whose recorded model flags differ from `cfg`'s; returns the recorded
    Config (None for a folder without config.cfg), so the caller can see what else changed."""
    text = read_config_text(workdir)
    if text is None:
        return None
    old = parse_flagfile(text, config_path(workdir))
    new = parse_flagfile(to_flagfile(cfg), 'the flags')
    differing = [n for n in MODEL_FLAGS if n in old and old[n] != new[n]]
    if differing:
        raise ConfigError(
            f'--workdir={workdir} holds a run with other model flags ('
            + ', '.join(f'--{n}={old[n]} there, {new[n]} now' for n in differing)
            + '); use another --workdir or --overwrite to start afresh.'
        )
    recorded = config_from_flagfile(text, config_path(workdir))
    if (recorded.ema_decay > 0) != (cfg.ema_decay > 0):
        # The averaged generator is part of the checkpoints (or not): the run keeps what it started with.
        there, now = f'{recorded.ema_decay:g}', f'{cfg.ema_decay:g}'
        raise ConfigError(
            f'--workdir={workdir} holds a run trained {"with" if recorded.ema_decay else "without"} the '
            f'averaged generator (--ema_decay={there} there, {now} now); resume with --ema_decay={there}, '
            f'or start afresh in another --workdir or with --overwrite.'
        )
    return recorded


def export_step(path: str) -> int | None:
    """The step an export of ours was written at, from its metadata file; None where there is none."""
    metadata = os.path.join(path, 'assets.extra', 'dcgan_metadata.json')
    try:
        return int(json.loads(read_bytes(metadata).decode('utf-8'))['step'])
    except (tf.errors.OpError, OSError, ValueError, KeyError, TypeError):
        return None


def progress_without_checkpoint(workdir: str, checkpoint_every: int) -> str | None:
    """What shows that the run in `workdir` once had a checkpoint (when it has none now), or None.

    A run saves a checkpoint every `checkpoint_every` steps (and at its end, before exporting): metrics or
    a sample grid beyond the first of those steps, or an export, were written after one. A run killed
    before its first checkpoint shows none of these, and starts again from step 0.
    """
    records = read_metrics(workdir)
    logged = max((r['step'] for r in records), default=0)
    grids = tf.io.gfile.glob(os.path.join(samples_dir(workdir), 'step_*.png'))
    drawn = max(
        (int(os.path.basename(g)[5:12]) for g in grids if os.path.basename(g)[5:12].isdigit()), default=0
    )
    exported = export_step(export_path(workdir))
    if exported:
        return f'an export at step {exported} ({export_path(workdir)})'
    if logged > checkpoint_every:
        return f'metrics up to step {logged} ({metrics_path(workdir)})'
    if drawn > checkpoint_every:
        return f'sample grids up to step {drawn} ({samples_dir(workdir)})'
    return None


def write_config(workdir: str, cfg: Config) -> None:
    """config.cfg, its --workdir absolute: `--flagfile=<run>/config.cfg` means the same run from anywhere."""
    where = workdir if is_url(workdir) else os.path.abspath(workdir)
    write_file(config_path(workdir), to_flagfile(cfg.replace(workdir=where)).encode())


# --- classes.txt ---


def write_class_names(workdir: str, names: tuple[str, ...]) -> None:
    """A conditional run's class names, one a line in label order (the export's metadata lists them)."""
    write_file(classes_path(workdir), ''.join(f'{name}\n' for name in names).encode())


def read_class_names(workdir: str) -> tuple[str, ...] | None:
    """The class names a conditional run recorded, or None where it recorded none."""
    path = classes_path(workdir)
    if not tf.io.gfile.exists(path):
        return None
    return tuple(read_bytes(path).decode('utf-8').splitlines())


# --- metrics.jsonl ---


def _load_metrics(path: str) -> tuple[list[dict[str, Any]], list[int], bool]:
    """(records, numbers of the lines that are not JSON objects with an integer step, whether the text
    ends mid-line)."""
    if not tf.io.gfile.exists(path):
        return [], [], False
    text = read_bytes(path).decode('utf-8', errors='replace')
    records, bad = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get('step'), int):
            records.append(record)
        else:
            bad.append(number)
    return records, bad, bool(text) and not text.endswith('\n')


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """The logged records of a run (lines that are not JSON objects with a step are left out)."""
    return _load_metrics(metrics_path(workdir))[0]


class MetricsLog:
    """metrics.jsonl, holding each logged step once.

    A run resumed from step S drops the records after S (the steps it trains again), and lines that are
    not JSON objects with a step (a hand edit, a line cut short by a killed process) are dropped with a
    warning. Object stores cannot append, so on a URL workdir the file is rewritten whole at each log
    step (through a temporary name, so a reader never sees half of it); a local file is appended to.

    Args:
      workdir: the run folder.
      resume_step: the step training resumes from (0 for a fresh run).
      write: False on the non-chief tasks of a multi-worker job, which keep nothing.
    """

    def __init__(self, workdir: str, *, resume_step: int, write: bool = True):
        self.path = metrics_path(workdir)
        self.write = write
        self.records: list[dict[str, Any]] = []
        if not write:
            return
        records, bad, cut = _load_metrics(self.path)
        self.records = [r for r in records if r['step'] <= resume_step]
        later = len(records) - len(self.records)
        if bad:
            logging.warning(
                'Dropped %d line(s) of %s that are not JSON objects with a step (first: line %d).',
                len(bad),
                self.path,
                bad[0],
            )
        if later:
            logging.info(
                'Dropped %d record(s) after step %d from %s: this run logs those steps again.',
                later,
                resume_step,
                self.path,
            )
        if bad or later or cut:
            self._rewrite()

    def _rewrite(self) -> None:
        write_file(self.path, ''.join(json.dumps(r) + '\n' for r in self.records).encode())

    def append(self, step: int, values: dict[str, float]) -> None:
        record = {'step': step, **values}
        self.records.append(record)
        if not self.write:
            return
        if is_url(self.path):
            self._rewrite()
        else:
            with tf.io.gfile.GFile(self.path, 'a') as f:
                f.write(json.dumps(record) + '\n')


# --- samples/ ---


def write_final_pictures(workdir: str, history: list[dict[str, Any]]) -> None:
    """samples/progress.gif from the fixed-z grids (when they share one size) and samples/losses.png."""
    folder = samples_dir(workdir)
    grids = sorted(tf.io.gfile.glob(os.path.join(folder, 'step_*.png')))
    if grids:
        import imageio.v3 as iio

        frames = [iio.imread(read_bytes(p)) for p in grids]
        if len({f.shape for f in frames}) == 1:
            images.save_gif(os.path.join(folder, 'progress.gif'), frames)
    if history:
        images.plot_losses(
            os.path.join(folder, 'losses.png'),
            {
                k: [(h['step'], h[k]) for h in history if isinstance(h.get(k), (int, float))]
                for k in ('d_loss', 'g_loss')
            },
        )
