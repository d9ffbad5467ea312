"""Read a GGUF header with the standard library: the metadata and the tensor infos, never the tensor data.

The format (ggml/docs/gguf.md): `b"GGUF"`, u32 version, u64 tensor count, u64 metadata count, the metadata
key/value pairs, the tensor infos (name, dims, ggml type, offset), then the data, aligned to
`general.alignment` (32 by default). Only versions 2 and 3 (64-bit counts) exist in the wild.

Reading goes through a `ByteSource`, so the same parser works on a local file (which seeks over what it does
not keep) and on ranges of a file on the Hugging Face Hub. Large arrays (the tokenizer's tokens, scores and
merges) are skipped and only their length kept: the vocabulary size is all the estimate needs of them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import EstimateError
from .ggml import GGML_TYPES, row_size

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
KEPT_ARRAY_LENGTH = 4096  # per-layer arrays (head_count_kv, sliding-window flags) are kept; vocabularies are not

# GGUF value types: id -> struct format of a scalar (8 = string, 9 = array are handled apart).
_SCALARS: dict[int, str] = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d",
}  # fmt: skip
_STRING, _ARRAY = 8, 9
MAX_STRING = 1 << 24  # a longer key or value means a damaged (or hostile) header
MAX_COUNT = 1 << 32
_U64 = struct.Struct("<Q")
SKIP_BLOCK = 1 << 20  # bytes read at a time while skipping an array of strings


class GGUFError(EstimateError):
    """The bytes are not a GGUF header this reader understands."""


class ByteSource(Protocol):
    """Where header bytes come from: `read` returns exactly `n` bytes (or raises), `skip` moves past `n`."""

    def read(self, n: int) -> bytes: ...

    def skip(self, n: int) -> None: ...


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it."""

    name: str
    dims: tuple[int, ...]  # ne[0] first: the innermost (row) dimension comes first, as ggml stores it
    type_id: int
    offset: int  # from the start of the data section

    @property
    def elements(self) -> int:
        n = 1
        for d in self.dims:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor's data: whole rows of its type (`ggml_nbytes` for contiguous tensors)."""
        if not self.dims:
            return 0
        rows = self.elements // self.dims[0] if self.dims[0] else 0
        return row_size(self.type_id, self.dims[0]) * rows


@dataclass(frozen=True)
class GGUFHeader:
    """The metadata and tensor infos of a GGUF file."""

    version: int
    metadata: dict[str, Any]
    array_lengths: dict[str, int]  # every array's length, including the skipped ones
    tensors: tuple[TensorInfo, ...]
    data_offset: int  # where the tensor data starts in the file (the header's size, padded)

    @property
    def tensor_bytes(self) -> int:
        """Sum of the tensors' data bytes, as llama.cpp loads them (padding between tensors not counted)."""
        return sum(t.nbytes for t in self.tensors)


class _Reader:
    def __init__(self, source: ByteSource) -> None:
        self.source = source
        self.position = 0

    def take(self, n: int) -> bytes:
        data = self.source.read(n)
        if len(data) != n:
            raise GGUFError("the file ends inside its header")
        self.position += n
        return data

    def skip(self, n: int) -> None:
        self.source.skip(n)
        self.position += n

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def u32(self) -> int:
        return int(self.scalar("<I"))

    def u64(self) -> int:
        return int(self.scalar("<Q"))

    def string(self) -> str:
        n = self.u64()
        if n > MAX_STRING:
            raise GGUFError(f"a string of {n} bytes in the header: not a GGUF file, or a damaged one")
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, kind: int, key: str, lengths: dict[str, int]) -> Any:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item = self.u32()
            count = self.u64()
            if count > MAX_COUNT:
                raise GGUFError(f"'{key}' claims {count} elements")
            lengths[key] = count
            if count > KEPT_ARRAY_LENGTH or item == _ARRAY:
                self.skip_array(item, count)
                return None
            if item == _STRING:
                return [self.string() for _ in range(count)]
            if item not in _SCALARS:
                raise GGUFError(f"'{key}' has elements of unknown type {item}")
            fmt = _SCALARS[item]
            size = struct.calcsize(fmt)
            raw = self.take(size * count)
            return list(struct.unpack(f"<{count}{fmt[1]}", raw))
        raise GGUFError(f"'{key}' has a value of unknown type {kind}")

    def skip_strings(self, count: int) -> None:
        """Move past `count` strings (a vocabulary: 10^5 of them) in few reads, never reading past the array:
        each string left takes at least its 8-byte length, so `8 × left` bytes ahead are still inside it."""
        carry = b""
        while count:
            block = carry + self.take(min(8 * count, SKIP_BLOCK) - len(carry))
            end, position = len(block), 0
            unpack = _U64.unpack_from
            while count and position + 8 <= end:
                n = unpack(block, position)[0]
                if n > MAX_STRING:
                    raise GGUFError(f"a string of {n} bytes in the header: not a GGUF file, or a damaged one")
                position += 8 + n
                count -= 1
            if position > end:
                self.skip(position - end)  # the last string goes on past the block
                carry = b""
            else:
                carry = block[position:]  # the start of the next length

    def skip_array(self, item: int, count: int) -> None:
        if item in _SCALARS:
            self.skip(struct.calcsize(_SCALARS[item]) * count)
        elif item == _STRING:
            self.skip_strings(count)
        elif item == _ARRAY:
            for _ in range(count):
                inner, n = self.u32(), self.u64()
                self.skip_array(inner, n)
        else:
            raise GGUFError(f"an array has elements of unknown type {item}")


def read_header(source: ByteSource) -> GGUFHeader:
    """Parse a GGUF header from `source`, positioned at the start of the file. Raises GGUFError."""
    r = _Reader(source)
    if r.take(4) != MAGIC:
        raise GGUFError("not a GGUF file (no GGUF magic at its start)")
    version = r.u32()
    if version not in (2, 3):
        raise GGUFError(f"GGUF version {version} is not supported (2 and 3 are)")
    n_tensors, n_kv = r.u64(), r.u64()
    if n_tensors > MAX_COUNT or n_kv > MAX_COUNT:
        raise GGUFError("the header claims an impossible number of entries")
    metadata: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    for _ in range(n_kv):
        key = r.string()
        metadata[key] = r.value(r.u32(), key, lengths)
    tensors = []
    unknown: set[int] = set()
    for _ in range(n_tensors):
        name = r.string()
        n_dims = r.u32()
        if n_dims > 8:
            raise GGUFError(f"tensor '{name}' has {n_dims} dimensions")
        dims = tuple(r.u64() for _ in range(n_dims))
        type_id, offset = r.u32(), r.u64()
        if type_id not in GGML_TYPES:
            unknown.add(type_id)
            continue
        tensors.append(TensorInfo(name, dims, type_id, offset))
    if unknown:
        raise GGUFError(f"tensor types {sorted(unknown)} are unknown to this reader")
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    # llama.cpp (gguf.cpp) refuses a file whose alignment is not a power of two rather than guess one.
    if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFError(f"general.alignment is {alignment}, where a power of two belongs")
    align = alignment
    data_offset = -(-r.position // align) * align
    return GGUFHeader(version, metadata, lengths, tuple(tensors), data_offset)
