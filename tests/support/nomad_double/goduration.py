"""Go `time.Duration` text: parsing (`?wait=5s`) and formatting (`30m0s` in messages, Consul intervals)."""

from __future__ import annotations

import re

SECOND = 10**9
NANOS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": SECOND,
    "m": 60 * SECOND,
    "h": 3600 * SECOND,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> int:
    """Parse a Go duration (`300ms`, `1m30s`, `0`) into nanoseconds; ValueError like time.ParseDuration."""
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0
    pos, total = 0, 0.0
    while pos < len(body):
        m = _PART.match(body, pos)
        if not m:
            raise ValueError(f"time: invalid duration {text!r}")
        total += float(m[1]) * NANOS[m[2]]
        pos = m.end()
    if not body:
        raise ValueError(f"time: invalid duration {text!r}")
    return -round(total) if text.startswith("-") else round(total)


def format_duration(nanos: int) -> str:
    """Format nanoseconds like Go's Duration.String: `0s`, `500ms`, `10s`, `5m0s`, `1h0m0s`."""
    if nanos == 0:
        return "0s"
    sign, n = ("-", -nanos) if nanos < 0 else ("", nanos)
    if n < SECOND:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if n >= size or unit == "ns":
                return sign + _decimal(n, size) + unit
    hours, rest = divmod(n, 3600 * SECOND)
    minutes, rest = divmod(rest, 60 * SECOND)
    text = _decimal(rest, SECOND) + "s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text


def _decimal(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = str(frac).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"
