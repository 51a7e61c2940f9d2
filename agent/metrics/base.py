"""The metric record and the number handling every metrics parser shares."""

from __future__ import annotations

import math
import re
from typing import NamedTuple


class Metric(NamedTuple):
    """One number a run left behind.

    `step` None: a final value; else one point of the series `key`. `value` None
    with `text` set: a value that is not a finite number (NaN, Infinity), kept as
    written. `wall`: Unix seconds where the file says when, else None.
    """

    key: str
    step: float | None
    value: float | None
    text: str | None = None
    wall: float | None = None


# A whole token that is a number as programs print them (no thousands separators,
# no units): anything else is not a metric value.
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_NONFINITE = {"nan": "nan", "+nan": "nan", "-nan": "nan",
              "inf": "inf", "+inf": "inf", "infinity": "inf", "+infinity": "inf",
              "-inf": "-inf", "-infinity": "-inf"}


def number(token: str) -> tuple[float | None, str | None] | None:
    """(value, None) for a finite number, (None, text) for NaN/Infinity, None otherwise."""
    token = token.strip()
    if _NUMBER.fullmatch(token):
        value = float(token)
        if math.isfinite(value):
            return value, None
        return None, "inf" if value > 0 else "-inf"  # 1e999: too big for a double
    text = _NONFINITE.get(token.lower())
    if text is not None:
        return None, text
    return None


def from_float(value: float) -> tuple[float | None, str | None]:
    """A parsed float as (value, text): NaN and infinities become text."""
    if math.isfinite(value):
        return float(value), None
    if math.isnan(value):
        return None, "nan"
    return None, "inf" if value > 0 else "-inf"


def decode(data: bytes) -> str:
    """Text of a metrics file: UTF-8 (a BOM dropped), undecodable bytes replaced."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", errors="replace")


def complete_lines(text: str) -> list[str]:
    """The lines of `text`, without a last line the writer has not finished."""
    lines = text.split("\n")
    # After the last "\n" is either "" (complete) or a torn line: drop it either way.
    lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def wall_seconds(value: float) -> float | None:
    """Unix seconds from a timestamp column written in s, ms or us; None if implausible."""
    for scale in (1.0, 1e3, 1e6, 1e9):
        seconds = value / scale
        if 315532800 <= seconds <= 4102444800:  # 1980 .. 2100
            return seconds
    return None
