"""What this program can prove it wrote, so that --overwrite and an export delete nothing else.

A run folder is ours when its config.cfg carries the header this program writes; inside it, only the
entries a run writes (checkpoints, event files, sample grids, an export with its metadata, ...) may go.
An export is ours when its metadata says so. A `.tmp<pid>` or `.old<pid>` name is a temporary of ours
only while no process of that PID runs.
"""

from __future__ import annotations

import json
import os
import re

import tensorflow as tf
from absl import logging

from dcgan_tf.config import ConfigError
from dcgan_tf.flagfiles import CONFIG_HEADER
from dcgan_tf.workdir import (
    CHECKPOINT_DIR,
    CLASSES_FILE,
    CONFIG_FILE,
    EXPORT_DIR,
    LOCK_FILE,
    METRICS_FILE,
    SAMPLES_DIR,
    TENSORBOARD_DIR,
    read_bytes,
)

METADATA_FILE = 'dcgan_metadata.json'  # An export's assets.extra/ file (export.METADATA_FILE).
SERVING_DIR = 'serving'
# Files a run (or a tool pointed at it) writes at the top of its folder.
_TOP_FILES = re.compile(
    rf'({re.escape(CONFIG_FILE)}|{re.escape(CLASSES_FILE)}|{re.escape(LOCK_FILE)}|{re.escape(METRICS_FILE)}'
    r'|generator(_float16)?\.tflite|classifier\.(keras|json)|\.lock|\.write_test\d+)'
)
_TEMP = re.compile(r'(?P<base>.+)\.(?P<kind>tmp|old)(?P<pid>\d+)$')
_CHECKPOINT_FILES = re.compile(r'(checkpoint|best\.json|ckpt-\d+\.(index|data-\d+-of-\d+))$')
_SAMPLE_FILES = re.compile(r'(step_\d{7}\.png|progress\.gif|losses\.png)$')


def pid_alive(pid: int) -> bool:
    """Whether a process of this PID runs on this host (another user's counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def stale_temp(name: str, base: str | None = None) -> str | None:
    """'tmp' or 'old' for `<base>.tmp<pid>` / `<base>.old<pid>` of a process that is gone, else None (also
    where `base` is given and the name is another file's)."""
    match = _TEMP.fullmatch(name)
    if not match or (base is not None and match.group('base') != base) or pid_alive(int(match.group('pid'))):
        return None
    return match.group('kind')


def _is_temp_of(name: str, allowed: re.Pattern) -> bool:
    """Whether `name` is the temporary name (`.tmp<pid>`, `.old<pid>`) of a file `allowed` names."""
    match = _TEMP.fullmatch(name)
    return bool(match and allowed.fullmatch(match.group('base')))


def _entries(folder: str) -> list[str]:
    return sorted(e.rstrip('/') for e in tf.io.gfile.listdir(folder))


def is_own_config(path: str) -> bool:
    """Whether `path` is a config.cfg this program wrote (its header line)."""
    try:
        if tf.io.gfile.isdir(path):
            return False
        return read_bytes(path)[: len(CONFIG_HEADER)].decode('utf-8', 'replace') == CONFIG_HEADER
    except (tf.errors.OpError, OSError):
        return False


def is_own_export(path: str) -> bool:
    """Whether `path` is a SavedModel this program exported (its metadata, or for the earliest exports,
    the metadata variable its graph names)."""
    try:
        if not tf.io.gfile.isdir(path):
            return False
        metadata = os.path.join(path, 'assets.extra', METADATA_FILE)
        if tf.io.gfile.exists(metadata):
            return 'z_dim' in json.loads(read_bytes(metadata).decode('utf-8'))
        graph = os.path.join(path, 'saved_model.pb')
        return tf.io.gfile.exists(graph) and b'metadata_json' in read_bytes(graph)
    except (tf.errors.OpError, OSError, ValueError, AttributeError, TypeError):
        return False


def _foreign_under(folder: str, allowed: re.Pattern, subfolders: tuple[str, ...] = ()) -> list[str]:
    found = []
    for name in _entries(folder):
        path = os.path.join(folder, name)
        if tf.io.gfile.isdir(path):
            if name in subfolders or name.endswith('_temp'):  # CheckpointManager's unfinished saves.
                found += _foreign_under(path, allowed, subfolders) if name in subfolders else []
            else:
                found.append(path)
        elif not (allowed.fullmatch(name) or _is_temp_of(name, allowed)):
            found.append(path)
    return found


def _foreign_in_tensorboard(folder: str) -> list[str]:
    """Event files (and the plugins' folders, profiles included) are ours; anything else is not."""
    found = []
    for root, _, names in tf.io.gfile.walk(folder):
        if '/plugins' in root.replace(os.sep, '/')[len(folder) :]:
            continue
        found += [os.path.join(root, n) for n in names if not n.startswith('events.out.tfevents.')]
    return found


def foreign_entries(workdir: str) -> list[str]:
    """What a run folder holds that no run of this program wrote ([] for a run folder of ours).

    The folder must have a config.cfg of ours (or hold nothing but a lock); under it only the run's own
    layout: checkpoints, event files, sample grids, exports with their metadata, TFLite files, temporary
    names of processes that are gone.
    """
    if not tf.io.gfile.isdir(workdir):
        return []
    entries = _entries(workdir)
    config = os.path.join(workdir, CONFIG_FILE)
    if [e for e in entries if e != LOCK_FILE] and not is_own_config(config):
        return [config if CONFIG_FILE in entries else workdir]
    found = []
    for name in entries:
        path = os.path.join(workdir, name)
        is_dir = tf.io.gfile.isdir(path)
        temp = _TEMP.fullmatch(name)
        if name == CHECKPOINT_DIR and is_dir:
            found += _foreign_under(path, _CHECKPOINT_FILES, ('best',))
        elif name == SAMPLES_DIR and is_dir:
            found += _foreign_under(path, _SAMPLE_FILES)
        elif name == TENSORBOARD_DIR and is_dir:
            found += _foreign_in_tensorboard(path)
        elif name == EXPORT_DIR or (is_dir and temp and temp.group('base') == EXPORT_DIR):
            found += [] if is_own_export(path) or stale_temp(name) else [path]
        elif name == SERVING_DIR and is_dir:
            found += [p for p in (os.path.join(path, v) for v in _entries(path)) if not is_own_export(p)]
        elif is_dir or not (_TOP_FILES.fullmatch(name) or _is_temp_of(name, _TOP_FILES)):
            found.append(path)
    return found


def describe_foreign(found: list[str]) -> str:
    """'a, b and 3 more' for a refusal's sentence."""
    shown = ', '.join(found[:3])
    return shown + (f' and {len(found) - 3} more' if len(found) > 3 else '')


def check_overwrite(workdir: str) -> None:
    """Refuses --overwrite of a folder holding anything a run of this program did not write: `--workdir=.
    --overwrite` in a project, or a folder whose config.cfg is someone else's, is never wiped."""
    found = foreign_entries(workdir)
    if not found:
        return
    if found == [workdir] or os.path.basename(found[0]) == CONFIG_FILE and len(found) == 1:
        why = (
            f'its {CONFIG_FILE} was not written by this program'
            if found != [workdir]
            else f'it holds files but no {CONFIG_FILE}'
        )
        raise ConfigError(
            f'--overwrite refuses to delete --workdir={workdir}: {why}, so it is not a dcgan_tf run folder; '
            f'use another --workdir.'
        )
    raise ConfigError(
        f'--overwrite refuses to delete --workdir={workdir}: it holds {describe_foreign(found)}, which no '
        f'run of this program wrote; move that elsewhere, or use another --workdir.'
    )


def clear(workdir: str) -> None:
    """--overwrite: deletes a run folder's entries (all of them this program's) but the running lock."""
    check_overwrite(workdir)
    for entry in _entries(workdir):
        path = os.path.join(workdir, entry)
        if entry == LOCK_FILE:
            continue
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        else:
            tf.io.gfile.remove(path)
    logging.info('--overwrite: deleted the previous run in %s.', workdir)
