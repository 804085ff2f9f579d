"""checkpoints/ of a workdir: which checkpoint a run resumes from, so a damaged one is never the end.

The state file (`checkpoints/checkpoint`) is trusted first, as TensorFlow does; when it is missing,
garbage, or names a checkpoint that does not restore, the newest checkpoint that restores is used with
a warning, and the state file is pointed at it so tf.train.CheckpointManager goes on from there.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

import tensorflow as tf
from absl import logging

from dcgan_tf.config import ConfigError
from dcgan_tf.workdir import error_line, is_url, read_bytes, write_file

STATE_FILE = 'checkpoint'  # CheckpointManager's record of its checkpoints.
_CHECKPOINT_FILE_RE = re.compile(r'(ckpt-(\d+))(\.index|\.data-\d+-of-\d+)$')


def _checkpoint_files(directory: str) -> dict[str, int]:
    """Prefix -> step of every ckpt-N.index / ckpt-N.data-* file (a prefix missing either is listed too)."""
    found = {}
    for path in tf.io.gfile.glob(os.path.join(directory, 'ckpt-*')):
        match = _CHECKPOINT_FILE_RE.fullmatch(os.path.basename(path))
        if match:
            found[os.path.join(directory, match.group(1))] = int(match.group(2))
    return found


def _state_file_checkpoint(directory: str) -> tuple[str | None, str]:
    """(the prefix checkpoints/checkpoint names, or None; what is wrong with it when None)."""
    path = os.path.join(directory, STATE_FILE)
    if not tf.io.gfile.exists(path):
        return None, f'{path} is missing'
    text = read_bytes(path).decode('utf-8', errors='replace')
    match = re.search(r'^model_checkpoint_path:\s*"([^"]+)"\s*$', text, re.MULTILINE)
    if not match:
        return None, f'{path} is not a checkpoint state file'
    name = match.group(1)
    return (name if os.path.isabs(name) or is_url(name) else os.path.join(directory, name)), ''


def checkpoints_to_try(directory: str) -> tuple[list[str], list[str]]:
    """(checkpoint prefixes to restore from, best first; what is wrong with the folder's records).

    The state file's latest comes first, as TensorFlow would choose; then every other checkpoint, newest
    first, so a damaged latest one falls back to the one before. An empty folder gives ([], []).
    """
    files = _checkpoint_files(directory)
    named, problem = _state_file_checkpoint(directory)
    order = sorted(files, key=files.get, reverse=True)
    problems = []
    if named is not None and named in files:
        order.remove(named)
        order.insert(0, named)
    elif named is not None:
        problems.append(
            f'{os.path.join(directory, STATE_FILE)} names {os.path.basename(named)}, which does not exist'
        )
    elif files or tf.io.gfile.exists(os.path.join(directory, STATE_FILE)):
        problems.append(problem)
    return order, problems


def checkpoint_objects(prefix: str) -> set[str]:
    """The top-level objects a checkpoint holds ('generator', 'ema_generator', 'step', ...).

    Read with the checkpoint reader itself: tf.train.list_variables takes `prefix` for a folder on
    ram://, which calls a path a folder when other paths start with it.
    """
    reader = tf.compat.v1.train.NewCheckpointReader(prefix)
    return {name.split('/')[0] for name in reader.get_variable_to_shape_map()}


def write_checkpoint_state(directory: str, restored: str) -> None:
    """Points checkpoints/checkpoint at `restored` (after a fallback), listing the complete older ones, so
    the CheckpointManager's next save, rotation and rollback go on from it."""
    files = _checkpoint_files(directory)
    older = sorted(
        (
            p
            for p, step in files.items()
            if step < files.get(restored, 0) and tf.io.gfile.exists(p + '.index')
        ),
        key=files.get,
    )
    kept = [*older, restored]
    lines = [f'model_checkpoint_path: "{os.path.basename(restored)}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"' for p in kept]
    # Timestamps after last_preserved_timestamp: without them the manager would keep these forever.
    now = time.time()
    lines += [f'all_model_checkpoint_timestamps: {now:.3f}' for _ in kept]
    lines.append(f'last_preserved_timestamp: {now - 1:.3f}')
    write_file(os.path.join(directory, STATE_FILE), ('\n'.join(lines) + '\n').encode())


_SHAPE_ERROR_RE = re.compile(
    r'incompatible tensor with shape (\(.*?\)) when attempting to restore variable with shape (\(.*?\)) '
    r'and name (\S+?)(?::\d+)?\.'
)


def restore_failure(error: BaseException) -> str:
    """Why a checkpoint did not restore, in a few words."""
    if isinstance(error, tf.errors.NotFoundError):
        return 'files missing'
    if isinstance(error, (tf.errors.DataLossError, IndexError, tf.errors.OutOfRangeError)):
        return 'damaged or cut short'
    return error_line(error)


def restore_newest(directory: str, restore: Callable[[str], None], workdir: str) -> tuple[str | None, str]:
    """Restores the newest checkpoint in `directory` that restores, so a damaged one is never the end.

    Args:
      directory: a checkpoints/ folder.
      restore: restores one checkpoint prefix into the caller's objects, raising if it cannot.
      workdir: the run folder, for the messages.

    Returns:
      (the prefix restored, or None for a folder without checkpoints; '' or, after a fallback, the
      warning already logged, which names what could not be restored and what was used instead).

    Raises:
      ConfigError: one sentence when the checkpoints are of another model (a variable of another shape,
        or objects the checkpoint lacks), or when none of them restores; no file was changed.
    """
    order, problems = checkpoints_to_try(directory)
    for prefix in order:
        try:
            restore(prefix)
        except ValueError as e:
            shape = _SHAPE_ERROR_RE.search(str(e))
            if not shape:
                problems.append(f'{os.path.basename(prefix)}: {restore_failure(e)}')
                continue
            there, here, name = shape.groups()
            raise ConfigError(
                f'--workdir={workdir} holds a checkpoint of another model ({os.path.basename(prefix)}: '
                f'{name} has shape {there} there, {here} with these flags); resume with the model flags it '
                f'was trained with or use another --workdir.'
            ) from None
        except AssertionError:  # assert_existing_objects_matched: a layer the checkpoint lacks.
            held = ', '.join(sorted(checkpoint_objects(prefix)))
            raise ConfigError(
                f'--workdir={workdir} holds a checkpoint of another model ({os.path.basename(prefix)} lacks '
                f'parts of this one; it holds {held}); resume with the model flags it was trained with or '
                f'use another --workdir.'
            ) from None
        except (tf.errors.OpError, IndexError, OSError) as e:
            problems.append(f'{os.path.basename(prefix)}: {restore_failure(e)}')
            continue
        warning = ''
        if problems:
            warning = (
                f'{"; ".join(problems)}: resumed from {prefix} instead, the newest checkpoint that restores.'
            )
            logging.warning('%s', warning)
        return prefix, warning
    if problems:
        raise ConfigError(
            f'--workdir={workdir} holds checkpoints but none of them restores ({"; ".join(problems[:4])}); '
            f'nothing was changed: repair or remove {directory}, or start afresh with --overwrite.'
        )
    return None, ''


def remove_unfinished_saves(directory: str) -> None:
    """Half-written checkpoints of a killed run (`*_temp` folders): never referenced, only clutter."""
    for stale in tf.io.gfile.glob(os.path.join(directory, '*_temp')):
        tf.io.gfile.rmtree(stale)
