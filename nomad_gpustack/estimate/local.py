"""Model metadata from local files, reading headers only: a GGUF file, or a folder with config.json and
safetensors headers (or model.safetensors.index.json). The thin I/O part beside the pure readers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import EstimateError
from .facts import ModelFacts, config_object, from_config, from_gguf
from .gguf import GGUFHeader, read_header
from .safetensors import INDEX_FILE, header_length, index_total_size, parse_header

_SPLIT = re.compile(r"^(?P<stem>.*)-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf$")


class ModelReadError(EstimateError):
    """A local model path that cannot be read as a model; the message names the path (exit 2: the user's input)."""


@dataclass
class ReadStats:
    """Bytes read from disk, and from how many files: the proof that only headers were read."""

    bytes_read: int = 0
    files: int = 0


class FileSource:
    """A `ByteSource` over an open binary file: skips are seeks, reads are counted."""

    def __init__(self, handle: BinaryIO, stats: ReadStats) -> None:
        self.handle = handle
        self.stats = stats

    def read(self, n: int) -> bytes:
        data = self.handle.read(n)
        self.stats.bytes_read += len(data)
        return data

    def skip(self, n: int) -> None:
        self.handle.seek(n, 1)


def _gguf_header(path: Path, stats: ReadStats) -> GGUFHeader:
    with path.open("rb") as handle:
        stats.files += 1
        return read_header(FileSource(handle, stats))


def _gguf(path: Path, stats: ReadStats) -> ModelFacts:
    header = _gguf_header(path, stats)
    count = header.metadata.get("split.count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ModelReadError(f"{path}: split.count is {count}, where a number of files belongs")
    match = _SPLIT.match(path.name)
    if count is not None and count > 1 and match:
        # A split GGUF: the first part has the metadata, every part has tensor infos.
        tensors = list(header.tensors)
        for part in range(2, count + 1):
            sibling = path.with_name(f"{match['stem']}-{part:05d}-of-{count:05d}.gguf")
            if not sibling.is_file():
                raise ModelReadError(f"{sibling}: part {part} of {count} of the split GGUF is missing")
            tensors.extend(_gguf_header(sibling, stats).tensors)
        header = GGUFHeader(header.version, header.metadata, header.array_lengths, tuple(tensors), header.data_offset)
    return from_gguf(header, f"{path} (GGUF header)")


def _safetensors_bytes(path: Path, stats: ReadStats) -> int:
    with path.open("rb") as handle:
        stats.files += 1
        prefix = handle.read(8)
        n = header_length(prefix)
        raw = handle.read(n)
        stats.bytes_read += len(prefix) + len(raw)
    return parse_header(raw).data_bytes


def _folder(path: Path, stats: ReadStats) -> ModelFacts:
    config_path = path / "config.json"
    if not config_path.is_file():
        ggufs = sorted(p for p in path.glob("*.gguf") if not _SPLIT.match(p.name) or "-00001-of-" in p.name)
        if len(ggufs) == 1:
            return _gguf(ggufs[0], stats)
        raise ModelReadError(f"{path}: no config.json (and not exactly one GGUF file) in the folder")
    raw_config = config_path.read_bytes()
    stats.files += 1
    stats.bytes_read += len(raw_config)
    try:
        config = config_object(json.loads(raw_config))  # before the weights: the error is about this file
    except ValueError as exc:
        raise ModelReadError(f"{config_path}: not JSON: {exc}") from None
    index = path / INDEX_FILE
    if index.is_file():
        raw = index.read_bytes()
        stats.files += 1
        stats.bytes_read += len(raw)
        weights, _ = index_total_size(raw)
    else:
        shards = sorted(path.glob("*.safetensors"))
        if not shards:
            raise ModelReadError(f"{path}: no {INDEX_FILE} and no .safetensors file beside config.json")
        weights = sum(_safetensors_bytes(p, stats) for p in shards)
    return from_config(config, weights, f"{path} (config.json, safetensors headers)")


def read_local_model(path: str | Path, stats: ReadStats | None = None) -> ModelFacts:
    """The facts of a local model: a GGUF file, or a folder. Reads headers only. Raises ModelReadError."""
    target = Path(path).expanduser()
    counter = stats if stats is not None else ReadStats()
    try:
        if target.is_dir():
            return _folder(target, counter)
        if target.is_file():
            return _gguf(target, counter)
    except ModelReadError:
        raise
    except (OSError, ValueError, EstimateError) as exc:  # the headers' own errors, said with the path
        raise ModelReadError(f"{target}: {exc}") from None
    raise ModelReadError(f"{target}: no such file or folder")
