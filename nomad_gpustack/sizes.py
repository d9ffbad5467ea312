"""The one size parser: "24 GiB", "512MiB", "16G" to bytes, and back to the unit strings Nomad compares."""

from __future__ import annotations

import re

KIB = 1024
MIB = KIB**2
GIB = KIB**3
TIB = KIB**4

_UNITS = {
    "b": 1,
    "kib": KIB, "mib": MIB, "gib": GIB, "tib": TIB,
    "ki": KIB, "mi": MIB, "gi": GIB, "ti": TIB,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
}  # fmt: skip
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")


def parse_size(value: str | int) -> int:
    """Parse a size into bytes. A bare number is bytes. Raises ValueError with a readable message."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as '24 GiB'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    match = _SIZE.fullmatch(value)
    if not match:
        raise ValueError(f"'{value}' is not a size; write it like '24 GiB' or '512 MiB'")
    number, unit = match.groups()
    factor = _UNITS.get(unit.lower() or "b")
    if factor is None:
        raise ValueError(f"unknown unit '{unit}' in '{value}'; use B, KiB, MiB, GiB or TiB (or kB, MB, GB, TB)")
    return int(float(number) * factor)


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
