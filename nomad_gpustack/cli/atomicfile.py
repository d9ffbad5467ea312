"""Writing output files so that a reader never sees half a file, even if we are killed mid-write, and a place
that cannot be written (under a file, read-only, a full disk) is one line of bad input, not a traceback."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ..errors import InputError, Problem


def _unwritable(path: Path, exc: OSError) -> InputError:
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        what = f"cannot write here: {blocker} is a file, not a folder"
    else:
        what = f"cannot write the file: {exc.strerror or type(exc).__name__}"
    return InputError(Problem(what, str(path), hint="choose another --output"))


def _stage(path: Path, text: str) -> str:
    """`text` in a temporary file beside `path`, flushed to disk; returns the temporary file's name."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(path, exc) from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _unwritable(path, exc) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _unwritable(path, exc) from None
        raise
    return tmp


def write_all_atomic(files: Mapping[Path, str]) -> None:
    """Write every file, or none: each is staged as a temporary file in its folder, then all are renamed into
    place (an atomic rename each, so a reader never sees half a file).

    A failure while staging (no space left, a read-only place) removes what was staged and leaves every
    target as it was; InputError names the file and the reason.
    """
    staged: list[tuple[str, Path]] = []
    try:
        for path, text in files.items():
            staged.append((_stage(path, text), path))
        for tmp, path in staged:
            try:
                os.replace(tmp, path)
            except OSError as exc:
                raise _unwritable(path, exc) from None
    finally:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
