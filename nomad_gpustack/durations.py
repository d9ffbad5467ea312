"""The one duration parser: Go-style duration strings ("30m", "1h30m", "500ms") to and from nanoseconds.

Nomad's JSON API takes durations as integer nanoseconds; its HCL takes Go duration strings.
"""

from __future__ import annotations

import re
from fractions import Fraction

NANOSECOND = 1
MICROSECOND = 1_000
MILLISECOND = 1_000_000
SECOND = 1_000_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

_UNITS = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "µs": MICROSECOND,
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_WHOLE = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+")


def parse_duration(text: str) -> int:
    """Parse a Go duration string into nanoseconds. Raises ValueError with a readable message."""
    value = text.strip()
    if value == "0":
        return 0
    if not _WHOLE.fullmatch(value):
        raise ValueError(f"'{text}' is not a duration; write it like 30s, 10m or 1h30m")
    total = Fraction(0)  # exact: a float would overflow on a huge number instead of giving one to refuse
    for number, unit in _PART.findall(value):
        total += Fraction(number) * _UNITS[unit]
    return round(total)


def format_duration(ns: int) -> str:
    """Format nanoseconds as a short Go duration string ("1h30m", "10s", "500ms")."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns % SECOND:
        for unit, size in (("ms", MILLISECOND), ("us", MICROSECOND)):
            if ns % size == 0:
                return f"{sign}{ns // size}{unit}"
        return f"{sign}{ns}ns"
    out = ""
    for unit, size in (("h", HOUR), ("m", MINUTE), ("s", SECOND)):
        if ns >= size:
            out += f"{ns // size}{unit}"
            ns %= size
    return sign + out
