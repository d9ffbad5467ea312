"""`nomadgs render` remembers what it rendered: unchanged inputs give the same files without loading the compiler.

Compiling is pure: the same deployment file, backend files, format and nomadgs give the same job text and the
same warnings and notes. A render whose deployments are all remembered prints them from the cache folder without
importing pydantic or PyYAML, which cost most of a render's start: a render repeated while editing a set of
deployments, or one deployment among unchanged ones, answers in a fraction of the time. An entry's key covers,
by content, everything the output depends on: the deployment file's bytes and the name messages give it, the
bytes of every `--backends` file and of the built-in catalog, nomadgs's code and libraries (`cachekey`), and
the format. A compile that looked up model metadata (`auto`, `--model`) is never remembered: its output depends
on more than files. `render --check` never uses the memo: it answers from a fresh compile.

Entries are JSON documents, checked when read: the key they were written for, and the fields and their types;
anything else, an entry not owned by the current user, or a folder others can write (`cachefolder`) is a miss.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cachefolder import read_entry, write_entry
from ..cachekey import content_digest, environment
from ..spec.files import builtin_catalog_dir, display_path, yaml_files

FORMAT_VERSION = 3  # of the entries: a new layout makes old entries misses


@dataclass(frozen=True)
class Remembered:
    """One deployment's rendering, as `render` prints or writes it."""

    job_id: str
    text: str
    warnings: tuple[str, ...]
    notes: tuple[str, ...] = ()


class RenderMemo:
    """Remembered renderings for one set of backend files and one format, in `folder`."""

    def __init__(self, folder: Path, base: str) -> None:
        self.folder = folder
        self._base = base

    @classmethod
    def open(cls, cache: Path, backends: Sequence[Path], fmt: str) -> RenderMemo | None:
        """The memo for these backend files and format; None when nomadgs's code or libraries cannot be
        identified, or a backend file cannot be read (the render then reports it as usual)."""
        env = environment()
        if env is None:
            return None
        digest = hashlib.sha256(f"{FORMAT_VERSION}\0{env}\0{fmt}".encode())
        try:
            content_digest(((f"built-in {p.name}", p) for p in yaml_files(builtin_catalog_dir())), digest)
            content_digest(((display_path(f), f) for path in backends for f in yaml_files(path)), digest)
        except OSError:
            return None
        return cls(cache / "renders", digest.hexdigest())

    def _key(self, deployment: Path) -> str | None:
        try:
            digest = content_digest([(display_path(deployment), deployment)], hashlib.sha256(self._base.encode()))
        except OSError:
            return None
        return digest.hexdigest()

    def recall(self, deployment: Path) -> Remembered | None:
        """The remembered rendering of this file as it is now, or None."""
        key = self._key(deployment)
        if key is None:
            return None
        data = read_entry(self.folder, f"{key[:40]}.json")
        if data is None:
            return None
        try:
            document = json.loads(data.decode("utf-8"))
        except ValueError:  # not UTF-8, not JSON: not an entry
            return None
        return _checked(document, key)

    def remember(self, deployment: Path, rendering: Remembered) -> None:
        """Keep a rendering for the next run; a cache that cannot be written is no error."""
        key = self._key(deployment)
        if key is None:
            return
        document = {
            "key": key,
            "job_id": rendering.job_id,
            "text": rendering.text,
            "warnings": list(rendering.warnings),
            "notes": list(rendering.notes),
        }
        write_entry(self.folder, f"{key[:40]}.json", json.dumps(document, ensure_ascii=False).encode("utf-8"))


def _checked(document: Any, key: str) -> Remembered | None:
    """The rendering an entry holds when it is one, written for `key` (not another entry renamed), else None."""
    if not isinstance(document, dict) or set(document) != {"key", "job_id", "text", "warnings", "notes"}:
        return None
    job_id, text, warnings, notes = document["job_id"], document["text"], document["warnings"], document["notes"]
    if document["key"] != key or not isinstance(job_id, str) or not job_id or not isinstance(text, str):
        return None
    for messages in (warnings, notes):
        if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
            return None
    return Remembered(job_id, text, tuple(warnings), tuple(notes))
