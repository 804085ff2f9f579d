"""The configs shipped inside the package, reachable by name after a plain pip install.

`--flagfile=demo`, `--flagfile=demo.cfg` or `--flagfile=configs/demo.cfg` name the package's copy when no
such file exists where the command runs (in a checkout of the repository, configs/ is that same folder).
A shipped config's flags are put in its place on the command line, its own nested `--flagfile=` lines
resolved the same way, so absl never looks for configs/... relative to the current folder.
"""

from __future__ import annotations

import os

from dcgan_tf import paths
from dcgan_tf.bounds import ConfigError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')
_MAX_DEPTH = 10  # Nesting deeper than this is a loop (a config that names itself).
# The first line of every run's config.cfg (every version's starts so): what proves the file is ours.
CONFIG_HEADER = '# Resolved flags of this run'
RUN_CONFIG_NAME = 'config.cfg'


def shipped_config(name: str) -> str | None:
    """The path of the shipped config `name` names, or None (a path elsewhere, or no such config)."""
    if os.path.dirname(name) not in ('', 'configs'):
        return None
    base = os.path.basename(name)
    for candidate in (base, base + '.cfg'):
        path = os.path.join(CONFIG_DIR, candidate)
        if candidate and os.path.isfile(path):
            return path
    return None


def shipped_names() -> list[str]:
    """The shipped configs' names, e.g. ['demo', 'mnist', ...]."""
    if not os.path.isdir(CONFIG_DIR):
        return []
    return sorted(n[: -len('.cfg')] for n in os.listdir(CONFIG_DIR) if n.endswith('.cfg'))


def _flagfile_value(arg: str) -> str | None:
    for prefix in ('--flagfile=', '-flagfile='):
        if arg.startswith(prefix):
            return arg[len(prefix) :]
    return None


def _flagfile_args(args: list[str]) -> list[tuple[int, str]]:
    """(index, path) of each --flagfile=PATH (or `--flagfile PATH`) among command-line `args`."""
    found = []
    for i, arg in enumerate(args):
        value = _flagfile_value(arg)
        if value is None and arg in ('--flagfile', '-flagfile') and i + 1 < len(args):
            value = args[i + 1]
        if value is not None:
            found.append((i, value))
    return found


def _not_found(path: str) -> ConfigError:
    names = ', '.join(shipped_names())
    return ConfigError(f'--flagfile={path} is neither a file nor a shipped config ({names}).')


def check_flagfiles(args: list[str], depth: int = 0) -> None:
    """ConfigError (one sentence) for a --flagfile that is missing (and no shipped config's name), or not a
    regular file (a FIFO would block absl's reader forever); nested ones too."""
    if depth > _MAX_DEPTH:
        raise ConfigError(f'--flagfile nests more than {_MAX_DEPTH} flagfiles deep (one names itself?).')
    for _, path in _flagfile_args(args):
        found = paths.kind(path)
        if found == 'missing' and shipped_config(path):
            continue  # expand() puts the shipped config's flags in its place.
        if found == 'missing':
            raise _not_found(path)
        paths.require_file(path, '--flagfile', '; give a text file of --name=value lines')
        if found == 'file':
            with open(path, 'rb') as f:
                lines = f.read().decode('utf-8', 'replace').splitlines()
            check_flagfiles([line.strip() for line in lines], depth + 1)


def explicit_names(args: list[str]) -> list[str]:
    """The flag names given on the command line itself, in order (not by a flagfile); `--noname` gives
    'noname', which the caller maps to `name`."""
    names = []
    for arg in args:
        if arg.startswith('-') and _flagfile_value(arg) is None and arg not in ('--flagfile', '-flagfile'):
            names.append(arg.lstrip('-').split('=', 1)[0])
    return names


def is_run_config(path: str) -> bool:
    """Whether `path` is a run's config.cfg written by this program (its name and first line)."""
    if os.path.basename(path) != RUN_CONFIG_NAME or paths.kind(path) != 'file':
        return False
    with open(path, 'rb') as f:
        return f.read(len(CONFIG_HEADER)).decode('utf-8', 'replace') == CONFIG_HEADER


def run_folder(args: list[str]) -> str | None:
    """The run folder whose own config.cfg the command line resumes, or None.

    config.cfg records --workdir as it was typed, relative to where the run started; `--flagfile=
    <run>/config.cfg` given from another folder means that run, so its folder is the workdir, unless
    --workdir follows the flagfile on the command line.
    """
    files = [(i, p) for i, p in _flagfile_args(args) if is_run_config(p)]
    if not files:
        return None
    index, path = files[-1]
    later = explicit_names(args[index + 1 :])
    if 'workdir' in later:
        return None
    return os.path.dirname(path) or '.'


def _expand_shipped(path: str, depth: int) -> list[str]:
    if depth > _MAX_DEPTH:
        raise ValueError(f'--flagfile={path} nests more than {_MAX_DEPTH} flagfiles deep (one names itself?)')
    args = []
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.strip()
            if not line.startswith('-'):  # Blank lines and comments, as absl skips them.
                continue
            nested = _flagfile_value(line)
            inner = shipped_config(nested) if nested is not None else None
            args += _expand_shipped(inner, depth + 1) if inner else [line]
    return args


def expand(argv: list[str]) -> list[str]:
    """argv with each --flagfile= that names a shipped config (and no file here) replaced by its flags."""
    out = argv[:1]
    for arg in argv[1:]:
        value = _flagfile_value(arg)
        path = shipped_config(value) if value is not None and not os.path.exists(value) else None
        out += _expand_shipped(path, 0) if path else [arg]
    return out


def read_flags(path: str, depth: int = 0) -> list[str]:
    """The flag lines of the flagfile at `path` (or of the shipped config it names), nested ones expanded.

    Raises FileNotFoundError when `path` is neither a file nor a shipped config's name.
    """
    if depth > _MAX_DEPTH:
        raise ValueError(f'--flagfile={path} nests more than {_MAX_DEPTH} flagfiles deep (one names itself?)')
    kind = paths.kind(path)
    found = path if kind == 'file' else shipped_config(path) if kind == 'missing' else None
    if found is None and kind != 'missing':
        paths.require_file(path, '--flagfile')  # A FIFO or a device: one sentence, never a read.
    if found is None:
        raise FileNotFoundError(path)
    args = []
    with open(found, encoding='utf-8') as f:
        for line in f:
            line = line.strip()
            if not line.startswith('-'):
                continue
            nested = _flagfile_value(line)
            args += read_flags(nested, depth + 1) if nested is not None else [line]
    return args
