"""A Config's flagfile form: written to a run's config.cfg, read back by resume, export and the Python API."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from dcgan_tf import flagfiles
from dcgan_tf.config import (
    FIELDS,
    NOT_RECORDED,
    Config,
    ConfigError,
)
from dcgan_tf.validation import validate, validate_model_flags


def to_flagfile(cfg: Config) -> str:
    """The Config as an absl flagfile that re-runs the same training (`--flagfile=config.cfg`)."""
    lines = [f'{flagfiles.CONFIG_HEADER}; re-run (or resume) it with --flagfile=<this file>.']
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


def typed_config(base: Config, values: dict[str, Any], where: str) -> Config:
    """`base` with `values`, each checked to be a known field of its type."""
    for name, value in values.items():
        if name not in FIELDS:
            raise ConfigError(
                f'{where}: there is no setting {name!r}; the names are the flags of --helpfull.'
            )
        kind = FIELDS[name].type
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
    except ConfigError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f'{path} cannot be read as a flagfile ({e}).') from None
    return validate(typed_config(config_from_flagfile('\n'.join(lines), path), overrides, 'from_flagfile'))


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
