"""The values a number flag accepts (Bound, kept in each Config field's metadata), the checks derived from
them, and the one-sentence error every bad flag raises. TensorFlow-free."""

from __future__ import annotations

import dataclasses
import math


class ConfigError(ValueError):
    """A flag value or combination that cannot work; the message is one sentence for the user."""


@dataclasses.dataclass(frozen=True)
class Bound:
    """The values a number flag accepts, `validate`'s check and its message in one place.

    `low`/`high` are None for no limit; `low_open`/`high_open` refuse the limit itself. `text`, when
    given, replaces the generated description (to say why the range is what it is).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    text: str = ''

    def accepts(self, value: float) -> bool:
        if value != value:  # NaN
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self, is_int: bool) -> str:
        if self.text:
            return self.text
        what = 'integer' if is_int else 'number'
        low, high = _number(self.low), _number(self.high)
        if self.low == 0 and self.high is None:
            return f'a positive {what}' if self.low_open else f'a non-negative {what}'
        if self.low == 0 and self.low_open:
            return f'a positive {what} below {high}'
        if self.low_open or self.high_open:
            return f'in {"(" if self.low_open else "["}{low}, {high}{")" if self.high_open else "]"}'
        return f'between {low} and {high}'


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _number(value: float | None) -> str:
    return str(int(value)) if value is not None and value == int(value) else str(value)


POSITIVE = Bound(0, None, low_open=True)
NON_NEGATIVE = Bound(0)  # Every number flag's bound unless its field names another.
INT_LIMIT = 2**62  # Beyond int64 would overflow TensorFlow's step counter with a stack trace.


def bound_of(field: dataclasses.Field) -> Bound | None:
    """A number field's Bound (NON_NEGATIVE when it names none); None for other fields."""
    if field.type not in ('int', 'float'):
        return None
    return field.metadata['bound'] or NON_NEGATIVE


def check_number(field: dataclasses.Field, value: float) -> None:
    is_int = field.type == 'int'
    bound = bound_of(field)
    if is_int:
        require(abs(value) < INT_LIMIT, f'--{field.name}={value} must be {bound.describe(True)} below 2**62.')
    else:
        require(math.isfinite(value), f'--{field.name}={value} must be a finite number.')
    require(bound.accepts(value), f'--{field.name}={value} must be {bound.describe(is_int)}.')
