"""The configs shipped inside the package, reachable by name after a plain pip install.

`--flagfile=demo`, `--flagfile=demo.cfg` or `--flagfile=configs/demo.cfg` name the package's copy when no
such file exists where the command runs (in a checkout of the repository, configs/ is that same folder).
A shipped config's flags are put in its place on the command line, its own nested `--flagfile=` lines
resolved the same way, so absl never looks for configs/... relative to the current folder.
"""

from __future__ import annotations

import os

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')
_MAX_DEPTH = 10  # Nesting deeper than this is a loop (a config that names itself).


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
    found = path if os.path.isfile(path) else shipped_config(path)
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
