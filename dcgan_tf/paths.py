"""Paths a user names with a flag: what kind of thing each is before it is read or written, and any I/O
error on one of them as one sentence that names the flag. TensorFlow-free, so it runs before any import.

A FIFO, a socket or a device (or a symlink to one) is never read as a file: reading /dev/zero fills
memory and a FIFO blocks forever. URLs (gs://, ram://) are left to TensorFlow's file systems.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Mapping

from dcgan_tf.bounds import ConfigError

# A PNG this program wrote carries this tEXt chunk (keyword, NUL, text): the proof that replacing the file
# loses nothing of the user's.
PNG_MARKER = b'tEXtSoftware\x00dcgan_tf'
# The first bytes of the kinds of file the tools write beside their pictures.
NPY_MAGIC = b'\x93NUMPY'
TFLITE_IDENTIFIER = b'TFL3'  # A TFLite flatbuffer's file identifier, at bytes 4-8.


def is_url(path: str) -> bool:
    """gs://, s3://, ram://...: reachable only through TensorFlow's file systems, never os.path."""
    return '://' in path


def kind(path: str) -> str:
    """'missing', 'file', 'folder', 'FIFO', 'socket', 'device', 'broken symlink' or 'special file'
    (symlinks followed); 'url' for paths only TensorFlow reaches."""
    if is_url(path):
        return 'url'
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return 'broken symlink' if os.path.islink(path) else 'missing'
    except NotADirectoryError:
        return 'missing'  # A parent is a file: nothing can be there.
    except OSError:
        return 'special file'  # Unreadable metadata (a loop of symlinks, a permission): not a plain file.
    if stat.S_ISREG(mode):
        return 'file'
    if stat.S_ISDIR(mode):
        return 'folder'
    if stat.S_ISFIFO(mode):
        return 'FIFO'
    if stat.S_ISSOCK(mode):
        return 'socket'
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return 'device'
    return 'special file'


def _article(what: str) -> str:
    return 'an' if what[0] in 'aeiou' else 'a'


def require_file(path: str, flag: str, advice: str = '') -> None:
    """ConfigError (one sentence naming `flag`) unless `path` is a regular file (or a URL)."""
    found = kind(path)
    if found in ('file', 'url'):
        return
    if found == 'missing':
        raise ConfigError(f'{flag}={path} does not exist{advice}.')
    raise ConfigError(f'{flag}={path} is {_article(found)} {found}, not a regular file{advice}.')


def require_folder(path: str, flag: str, advice: str = '') -> None:
    """ConfigError unless `path` is a folder (or a URL)."""
    found = kind(path)
    if found in ('folder', 'url'):
        return
    if found == 'missing':
        raise ConfigError(f'{flag}={path} does not exist{advice}.')
    raise ConfigError(f'{flag}={path} is {_article(found)} {found}, not a folder{advice}.')


def require_no_special_files(folder: str, flag: str) -> None:
    """ConfigError naming the first FIFO, socket or device (or link to one) under a local `folder`."""
    if kind(folder) != 'folder':
        return
    for root, dirs, names in os.walk(folder):
        for name in sorted(dirs + names):
            found = kind(os.path.join(root, name))
            if found not in ('file', 'folder', 'missing'):
                raise ConfigError(
                    f'{flag}={folder} holds {os.path.join(root, name)}, {_article(found)} {found} where only '
                    f'files and folders belong; remove it.'
                )


def _read_head(path: str, size: int) -> bytes:
    with open(path, 'rb') as f:
        return f.read(size)


def is_own_output(path: str) -> bool:
    """Whether the regular file at `path` is of a kind the tools write and may replace: a PNG with this
    program's marker, a .npy array (z's and labels beside a picture), a TFLite flatbuffer, or a GIF beside
    a PNG of ours."""
    try:
        head = _read_head(path, 4096)
    except OSError:
        return False
    if head.startswith(b'\x89PNG'):
        return PNG_MARKER in head
    if head.startswith(NPY_MAGIC):
        return True
    if head[4:8] == TFLITE_IDENTIFIER:
        return True
    if head.startswith(b'GIF8'):
        picture = os.path.splitext(path)[0] + '.png'
        return kind(picture) == 'file' and is_own_output(picture)
    return False


def check_output(path: str, flag: str, example: str = 'out.png') -> None:
    """ConfigError unless `path` may be (re)written: absent, or a regular file this program wrote.

    A folder, a FIFO or a device is refused, and so is a file of the user's: an output never replaces
    anything it cannot prove is its own.
    """
    found = kind(path)
    if found in ('missing', 'url'):
        return
    if found == 'folder':
        raise ConfigError(f'{flag}={path} is a folder; give a file name, e.g. {os.path.join(path, example)}.')
    if found != 'file':
        raise ConfigError(f'{flag}={path} is {_article(found)} {found}; give the name of a new file.')
    if not is_own_output(path):
        raise ConfigError(
            f'{flag}={path} exists and is not a file this program wrote, so it is left alone; give another '
            f'name, or delete it first.'
        )


# --- I/O errors as one sentence ---

_REASONS = (
    ((errno.ENOSPC, errno.EDQUOT), ('No space left on device', 'Disk quota exceeded'), 'the disk is full'),
    (
        (errno.EACCES, errno.EPERM, errno.EROFS),
        ('Permission denied', 'Operation not permitted', 'Read-only file system'),
        'cannot be written',
    ),
    ((errno.EISDIR,), ('Is a directory',), 'is a folder where a file belongs'),
    ((errno.ENOTDIR,), ('is not a directory', 'Not a directory'), 'is a file where a folder belongs'),
    ((errno.ENOENT,), ('No such file or directory', 'not found'), 'does not exist'),
)


def _is_io_error(error: BaseException) -> bool:
    # TensorFlow's OpErrors are recognised by module, so this stays importable without TensorFlow.
    return isinstance(error, OSError) or (
        type(error).__module__.startswith('tensorflow') and hasattr(error, 'error_code')
    )


def error_text(error: BaseException) -> str:
    """The first line of an error's message, at most 200 characters (TensorFlow's `{{function_node
    ...}}` prefix left out)."""
    text = getattr(error, 'message', None) or getattr(error, 'strerror', None) or str(error)
    text = re.sub(r'^\{\{function_node [^}]*\}\}\s*', '', str(text).strip())
    return (text.splitlines() or [type(error).__name__])[0][:200]


def _error_path(error: BaseException) -> str | None:
    """The path an I/O error is about, from OSError.filename or TensorFlow's '<path>; <reason>' text."""
    filename = getattr(error, 'filename', None)
    if filename:
        return os.fsdecode(filename)
    text = error_text(error)
    for separator in ('; ', ' is not a directory', ': '):
        if separator in text:
            return text.split(separator, 1)[0].strip() or None
    return None


def _owner(path: str | None, text: str, named: Mapping[str, str]) -> tuple[str, str] | None:
    """(flag, value) of the named path an error is about: the longest value the error's path lies at or
    under (or beside, as its temporary `.tmp<pid>`), or on the way to (a parent that is a file)."""
    candidates = []
    for flag, value in named.items():
        if not value:
            continue
        base = os.path.normpath(value)
        if path is not None:
            norm = os.path.normpath(path)
            if (
                norm == base
                or norm.startswith(base + os.sep)
                or norm.startswith(base + '.')
                or base.startswith(norm + os.sep)
            ):
                candidates.append((len(base), flag, value))
        elif value in text:
            candidates.append((len(base), flag, value))
    return max(candidates)[1:] if candidates else None


def _reason_text(text: str, path: str | None) -> str:
    """TensorFlow's '<path>; <reason>' without the path, which the sentence names already."""
    if path and text.startswith(path):
        return text[len(path) :].lstrip(';: ').strip() or text
    return text


def io_error_message(
    error: BaseException, named: Mapping[str, str], *, resumable_workdir: str | None = None
) -> str | None:
    """One sentence for an I/O error (OSError or TensorFlow's OpError) on a path the user named; None for
    any other error.

    Args:
      error: what was raised.
      named: {'--flag': value} of the paths the command was given.
      resumable_workdir: the --workdir of a training run, whose sentences end in how to resume it.
    """
    if not _is_io_error(error):
        return None
    text = error_text(error)
    whole = f'{getattr(error, "strerror", None) or ""} {getattr(error, "message", None) or error}'
    code = getattr(error, 'errno', None)
    reason = next(
        (words for codes, texts, words in _REASONS if code in codes or any(t in whole for t in texts)), None
    )
    path = _error_path(error)
    owner = _owner(path, text, named)
    text = _reason_text(text, path)
    resume = ': it resumes from the last complete checkpoint'
    if reason == 'the disk is full':
        where = f'{owner[0]}={owner[1]}' if owner else (path or 'the output')
        tail = f'rerun the same command{resume}' if resumable_workdir else 'rerun the same command'
        return f'The disk holding {where} is full ({text}); free some space and {tail}.'
    if owner is None:
        if reason is None:
            return None  # Not about any path the user named: not ours to explain.
        return f'{path or "a file"} {reason} ({text}).'
    flag, value = owner
    beside = path is not None and os.path.normpath(path).startswith(os.path.normpath(value) + '.')
    subject = f'{flag}={value}' if path in (None, value) or beside else f'{flag}={value}: {path}'
    if resumable_workdir is not None and flag == '--workdir' and reason == 'cannot be written':
        return (
            f'{subject} became unwritable during the run ({text}); fix its permissions and rerun the same '
            f'command{resume}.'
        )
    what = reason or f'could not be used ({text})'
    detail = f' ({text})' if reason else ''
    return f'{subject} {what}{detail}; fix it or give another {flag}.'
