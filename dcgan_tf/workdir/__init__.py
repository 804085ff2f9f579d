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

from dcgan_tf import images
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
    text = getattr(error, 'message', None) or getattr(error, 'strerror', None) or str(error)
    return (text.strip().splitlines() or [type(error).__name__])[0][:200]


# --- the folder: overwrite and the writability probe ---


def check_overwrite(workdir: str) -> None:
    """Refuses --overwrite of a folder that is not a run: `--workdir=. --overwrite` cannot wipe a project."""
    if not tf.io.gfile.isdir(workdir):
        return
    entries = [e.rstrip('/') for e in tf.io.gfile.listdir(workdir)]
    if [e for e in entries if e != LOCK_FILE] and CONFIG_FILE not in entries:
        raise ConfigError(
            f'--overwrite refuses to delete --workdir={workdir}: it holds files but no {CONFIG_FILE}, '
            f'so it is not a dcgan_tf run folder.'
        )


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


def clear(workdir: str) -> None:
    """--overwrite: deletes everything in the workdir but the lock of the trainer doing it."""
    check_overwrite(workdir)
    for entry in tf.io.gfile.listdir(workdir):
        entry = entry.rstrip('/')
        path = os.path.join(workdir, entry)
        if entry == LOCK_FILE:
            continue
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        else:
            tf.io.gfile.remove(path)
    logging.info('--overwrite: deleted the previous run in %s.', workdir)


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


def check_config(workdir: str, cfg: Config) -> None:
    """Refuses to resume a workdir whose recorded model flags differ from `cfg`'s."""
    text = read_config_text(workdir)
    if text is None:
        return
    old = parse_flagfile(text, config_path(workdir))
    new = parse_flagfile(to_flagfile(cfg), 'the flags')
    differing = [n for n in MODEL_FLAGS if n in old and old[n] != new[n]]
    if differing:
        raise ConfigError(
            f'--workdir={workdir} holds a run with other model flags ('
            + ', '.join(f'--{n}={old[n]} there, {new[n]} now' for n in differing)
            + '); use another --workdir or --overwrite to start afresh.'
        )


def write_config(workdir: str, cfg: Config) -> None:
    write_file(config_path(workdir), to_flagfile(cfg).encode())


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
