"""`nomadgs render` remembers what it rendered: unchanged inputs give the same files without loading the compiler.

Compiling is pure: the same deployment file, backend files, format and nomadgs give the same job text and the
same warnings. A render whose deployments are all remembered prints them from the cache folder without
importing pydantic or PyYAML, which cost most of a render's start (CI pipelines run `render --check` over
unchanged files again and again). An entry's key covers everything the output depends on: the deployment
file's bytes and the name messages give it, the bytes of every `--backends` file, the built-in catalog and
nomadgs's code and libraries (`cachekey`), and the format. A compile that looked up model metadata (`auto`,
`--model`) is never remembered: its output depends on more than files. Anything unreadable is a miss.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..cachekey import environment, stat_digest
from ..spec.files import builtin_catalog_dir, display_path, yaml_files

FORMAT_VERSION = 1  # of the entries: a new layout makes old entries misses


@dataclass(frozen=True)
class Remembered:
    """One deployment's rendering, as `render` prints or writes it."""

    job_id: str
    text: str
    warnings: tuple[str, ...]


class RenderMemo:
    """Remembered renderings for one set of backend files and one format, in `folder`."""

    def __init__(self, folder: Path, base: str) -> None:
        self.folder = folder
        self._base = base

    @classmethod
    def open(cls, cache: Path, backends: Sequence[Path], fmt: str) -> RenderMemo | None:
        """The memo for these backend files and format; None when a backend file cannot be read (the render
        then reports it as usual)."""
        digest = hashlib.sha256(f"{FORMAT_VERSION}\0{environment()}\0{fmt}".encode())
        catalog = builtin_catalog_dir()
        stat_digest(sorted(str(p) for p in yaml_files(catalog)), digest)
        try:
            for path in backends:
                for file in yaml_files(path):
                    digest.update(f"\0{display_path(file)}\0".encode() + file.read_bytes())
        except OSError:
            return None
        return cls(cache / "renders", digest.hexdigest())

    def _entry(self, deployment: Path) -> Path | None:
        try:
            data = deployment.read_bytes()
        except OSError:
            return None
        key = hashlib.sha256(f"{self._base}\0{display_path(deployment)}\0".encode() + data).hexdigest()
        return self.folder / f"{key[:40]}.json"

    def recall(self, deployment: Path) -> Remembered | None:
        """The remembered rendering of this file as it is now, or None."""
        entry = self._entry(deployment)
        if entry is None:
            return None
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            data = json.loads(entry.read_text(encoding="utf-8"))
            return Remembered(str(data["job_id"]), str(data["text"]), tuple(str(w) for w in data["warnings"]))
        return None

    def remember(self, deployment: Path, rendering: Remembered) -> None:
        """Keep a rendering for the next run; a cache that cannot be written is no error."""
        entry = self._entry(deployment)
        if entry is None:
            return
        import tempfile  # only when writing

        document = {"job_id": rendering.job_id, "text": rendering.text, "warnings": list(rendering.warnings)}
        with contextlib.suppress(OSError):
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".render-", suffix=".tmp", dir=self.folder)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(document, f, ensure_ascii=False)
                os.replace(tmp, entry)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
