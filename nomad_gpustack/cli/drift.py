"""`nomadgs render --check`: how the job files on disk drift from what the deployments render to.

For CI pipelines that keep rendered jobs in git: nothing is written; a unified diff of every differing file
goes to stdout (a missing file is diffed against nothing), one line per problem to stderr.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Mapping
from pathlib import Path

from ..errors import EXIT_FAILURE, EXIT_OK
from . import output


def _on_disk(path: Path) -> str | None:
    """The file's text, or None when it is missing (or not a readable text file, which differs all the same)."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def report_drift(rendered: Mapping[Path, str], folder: Path | None = None, suffix: str = "") -> int:
    """Compare each path's text on disk with its rendering; print the differences; exit 0 or 1.

    With `folder`, files there ending in `suffix` that no deployment renders to are pointed out (a note: the
    folder may also hold jobs rendered from other deployments)."""
    differing = 0
    for path, text in rendered.items():
        current = _on_disk(path)
        if current == text:
            continue
        differing += 1
        if current is None:
            reason = "is missing" if not path.exists() else "cannot be read as a text file"
            output.error(f"{path}: {reason}")
        else:
            output.error(f"{path}: differs from the rendering")
        before = "/dev/null" if current is None else f"{path} (on disk)"
        diff = difflib.unified_diff(
            (current or "").splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=before,
            tofile=f"{path} (rendered)",
        )
        for line in diff:
            sys.stdout.write(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    if folder is not None:
        for stale in sorted(p for p in _files(folder) if p.name.endswith(suffix) and p not in rendered):
            output.note(f"{stale}: no deployment given renders to this file (a removed deployment?)")
    if differing:
        output.info(f"{differing} of {len(rendered)} job file(s) differ; render again without --check to update them")
        return EXIT_FAILURE
    count = len(rendered)
    if folder is None:
        output.note(f"{next(iter(rendered))} is up to date")
    else:
        output.note(
            f"{count} job file{'s' if count != 1 else ''} in {folder}/ {'are' if count != 1 else 'is'} up to date"
        )
    return EXIT_OK


def _files(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_file()]
    except OSError:
        return []
