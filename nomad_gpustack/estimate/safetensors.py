"""Read safetensors headers with the standard library: tensor names, dtypes and shapes, never the data.

A safetensors file starts with a little-endian u64 N and N bytes of JSON: `{name: {dtype, shape,
data_offsets: [begin, end]}, "__metadata__": {...}}`; the data follows. Sharded checkpoints add
`model.safetensors.index.json`, whose `metadata.total_size` is the bytes of every shard's tensors.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, TypeGuard

from ..errors import EstimateError

MAX_HEADER = 100 * 1024 * 1024  # safetensors itself refuses headers over 100 MB
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class SafetensorsError(EstimateError):
    """The bytes are not a safetensors header (or index) this reader understands."""


@dataclass(frozen=True)
class SafetensorsHeader:
    """The tensors one safetensors file holds."""

    tensors: dict[str, tuple[str, tuple[int, ...]]]  # name -> (dtype, shape)
    data_bytes: int  # the end of the last tensor's data: the file's size less the header


def header_length(prefix: bytes) -> int:
    """N, from the file's first 8 bytes. Raises SafetensorsError."""
    if len(prefix) < 8:
        raise SafetensorsError("the file is shorter than a safetensors header")
    (n,) = struct.unpack("<Q", prefix[:8])
    if n == 0 or n > MAX_HEADER:
        raise SafetensorsError(f"a header of {n} bytes: not a safetensors file, or a damaged one")
    return int(n)


def parse_header(raw: bytes) -> SafetensorsHeader:
    """The tensors of a header's JSON (the N bytes after the length). Raises SafetensorsError."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SafetensorsError(f"the header is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise SafetensorsError("the header is not a JSON object")
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    end = 0
    for name, info in doc.items():
        if name == "__metadata__":
            continue
        # Read as the safetensors library reads them (typed, no conversion): "8" is not a dimension.
        fields = info if isinstance(info, dict) else {}
        dtype, shape, offsets = fields.get("dtype"), fields.get("shape"), fields.get("data_offsets")
        if not isinstance(dtype, str) or not _whole_numbers(shape) or not _whole_numbers(offsets, length=2):
            raise SafetensorsError(
                f"tensor '{name}' needs a dtype (text), a shape and two data_offsets (whole numbers of zero or more)"
            )
        begin, stop = offsets
        if stop < begin:
            raise SafetensorsError(f"tensor '{name}' has data_offsets that end before they begin")
        tensors[name] = (dtype, tuple(shape))
        end = max(end, stop)
    return SafetensorsHeader(tensors, end)


def _whole_numbers(value: Any, length: int | None = None) -> TypeGuard[list[int]]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        return False
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)


def index_total_size(raw: bytes) -> tuple[int, list[str]]:
    """`metadata.total_size` of a `model.safetensors.index.json`, and the shard files it names."""
    try:
        doc: Any = json.loads(raw)
        total = doc["metadata"]["total_size"]
        shards = sorted(set(doc.get("weight_map", {}).values()))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise SafetensorsError(f"{INDEX_FILE} has no metadata.total_size") from None
    # A JSON number, whole (some writers give 16060522496.0); text such as "16060522496" is refused, not read.
    if isinstance(total, float) and total.is_integer():
        total = int(total)
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        shown = f'the text "{total}"' if isinstance(total, str) else json.dumps(total)
        raise SafetensorsError(f"{INDEX_FILE}: metadata.total_size is {shown}, where a number of bytes belongs")
    return total, shards
