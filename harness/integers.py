"""Integers the user types: one parser for options, comma-separated lists and ``--set`` values.

Python's ``int`` accepts more than a researcher means by a number (``int("١٢")``, ``"1_000"``),
``str.isdigit`` accepts digits ``int`` refuses (``"²"``), and neither bounds the value, so a
seed of 10^20 trains and then overflows the store's int64 columns. :func:`parse_int` takes an
optional sign and ASCII digits only, and checks the value against bounds that default to the
int64 range; :class:`Integer` is the same as a click option type.
"""

from __future__ import annotations

import click

from .errors import BadInput

#: The largest value of the store's int64 columns (``seed``, ``split_seed``, ``epochs``, ...).
INT64_MAX = 2 ** 63 - 1
INT64_MIN = -2 ** 63
# More significant digits than INT64_MAX has: out of every range this module checks, decided
# without int(), which refuses strings of more than 4300 digits.
_MAX_DIGITS = len(str(INT64_MAX))


def _shown(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:20]}…{text[-8:]} ({len(text)} characters)"


def parse_int(text: str, what: str, least: int = INT64_MIN, most: int = INT64_MAX) -> int:
    """``text`` as an integer in ``least`` … ``most``: an optional ``+`` or ``-`` and ASCII
    digits, surrounding blanks ignored. ``what`` names the value in the one-line
    :class:`BadInput` otherwise (e.g. ``"--epochs"``, ``"seed"``, ``"--set pad"``)."""
    stripped = text.strip()
    digits = stripped[1:] if stripped[:1] in ("+", "-") else stripped
    if not (digits.isascii() and digits.isdigit()):
        raise BadInput(f"{what} '{_shown(text)}' is not an integer")
    too_long = len(digits.lstrip("0")) > _MAX_DIGITS
    value = None if too_long else int(stripped)
    if (stripped.startswith("-") if too_long else value < least):
        raise BadInput(f"{what} must be at least {least}, got {_shown(stripped)}")
    if too_long or value > most:
        raise BadInput(f"{what} must be at most {most}, got {_shown(stripped)}")
    return value


def parse_int_list(text: str, what: str, least: int = 0, most: int = INT64_MAX) -> list[int]:
    """``'0,1,2'`` → ``[0, 1, 2]``: each item by :func:`parse_int` (non-negative by default),
    duplicates dropped, order kept; empty items are ignored, no item at all is bad input."""
    values = [parse_int(part, what, least, most) for part in text.split(",") if part.strip()]
    if not values:
        raise BadInput(f"no {what} in '{text}'")
    return list(dict.fromkeys(values))


class Integer(click.ParamType):
    """A click option type parsed by :func:`parse_int` with the option's own name, so a bad
    value is the same one ``Error:`` line as any other bad input."""

    name = "integer"

    def __init__(self, least: int = INT64_MIN, most: int = INT64_MAX):
        self.least, self.most = least, most

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int):  # a default, already an integer
            return value
        what = param.opts[0] if param is not None and param.opts else "value"
        return parse_int(str(value), what, self.least, self.most)
