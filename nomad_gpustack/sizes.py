"""The one size parser: "24 GiB", "512MiB", "16 GB" to bytes, and back to the unit strings Nomad compares."""

from __future__ import annotations

import re
from fractions import Fraction

from .errors import HintedValueError

KIB = 1024
MIB = KIB**2
GIB = KIB**3
TIB = KIB**4
PIB = KIB**5

_UNITS = {
    "b": 1,
    "kib": KIB, "mib": MIB, "gib": GIB, "tib": TIB, "pib": PIB,
    "ki": KIB, "mi": MIB, "gi": GIB, "ti": TIB, "pi": PIB,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4, "pb": 1000**5,
}  # fmt: skip
# One letter is binary to Docker (`16g` is 16 GiB) and decimal to Kubernetes (`16G` is 16 GB): refused.
_AMBIGUOUS = frozenset("kmgtp")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")


def _number_text(number: float) -> str:
    return str(int(number)) if number == int(number) else str(number)


def _needs_unit(number: float) -> HintedValueError:
    """A bare number: say what it would mean and how to write it, assuming Nomad's habit of MiB."""
    text = _number_text(number)
    if number >= 1024 and number % 1024 == 0:
        fix = f"write '{_number_text(number / 1024)} GiB' or '{text} MiB'"
    else:
        fix = f"write '{text} GiB' or '{text} MiB'"
    return HintedValueError(f"a size needs a unit; {text} alone would be read as bytes", fix)


def parse_size(value: str | int | float) -> int:
    """Parse a size with its unit ("24 GiB", "512MiB", "16 GB") into bytes. Raises ValueError.

    A size without a unit is refused, and so are the one-letter units `k`, `m`, `g`, `t`: Nomad users mean
    MiB by a bare number, Docker means GiB by `g`, Kubernetes GB by `G`. The errors carry how to fix them.
    """
    if isinstance(value, bool):
        raise ValueError("expected a size such as '24 GiB'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a size cannot be negative")
        raise _needs_unit(value)
    match = _SIZE.fullmatch(value)
    if not match:
        raise ValueError(f"'{value}' is not a size; write it like '24 GiB' or '512 MiB'")
    number, unit = match.groups()
    if not unit:
        raise _needs_unit(float(number))
    if unit.lower() in _AMBIGUOUS:
        letter = unit.upper()
        raise HintedValueError(
            f"'{value}' is ambiguous: Docker reads '{unit}' as {letter}iB (binary), Kubernetes as {letter}B (decimal)",
            f"write '{number} {letter}iB' or '{number} {letter}B'",
        )
    factor = _UNITS.get(unit.lower())
    if factor is None:
        units = "B, KiB, MiB, GiB, TiB or PiB (or kB, MB, GB, TB, PB)"
        raise ValueError(f"unknown unit '{unit}' in '{value}'; use {units}")
    return int(Fraction(number) * factor)  # exact: a float would round big sizes, and overflow on huge ones


def to_mib(size_bytes: int) -> int:
    """Bytes to whole MiB, rounding up (Nomad's MemoryMB is MiB despite the name)."""
    return -(-size_bytes // MIB)


def nomad_size(size_bytes: int) -> str:
    """A unit string Nomad's attribute parser understands ("24 GiB", "40960 MiB"); never a bare number."""
    for unit, factor in (("TiB", TIB), ("GiB", GIB), ("MiB", MIB)):
        if size_bytes % factor == 0 and size_bytes >= factor:
            return f"{size_bytes // factor} {unit}"
    return f"{to_mib(size_bytes)} MiB"


def human_size(size_bytes: int) -> str:
    """Short human form for messages: 24 GiB, 1.5 GiB, 300 MiB."""
    for unit, factor in (("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size_bytes >= factor:
            value = size_bytes / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size_bytes} B"
