"""Reading backend and deployment files from disk (the I/O shell around the pure parsers)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import InputError, Problem
from .backend import Backend
from .catalog import Catalog, backends_from_document
from .deployment import Deployment
from .specfile import Sourced, validate
from .yamlsource import MAX_FILE_BYTES, decode_text, parse_yaml

YAML_SUFFIXES = (".yaml", ".yml")


def display_path(path: Path) -> str:
    """Paths in messages: relative to the working directory when that is shorter."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if len(rel) < len(str(path)) else str(path)


def read_text(path: Path) -> str:
    """A file's text, refusing directories, missing files, huge files and non-UTF-8 bytes."""
    name = display_path(path)
    try:
        if path.is_dir():
            raise InputError(Problem("is a folder, not a file", name))
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            # Check before reading: a multi-gigabyte file must not be pulled into memory to be refused.
            return decode_text(b"\0" * (MAX_FILE_BYTES + 1), name)
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(Problem("no such file", name)) from None
    except PermissionError:
        raise InputError(Problem("permission denied", name)) from None
    except OSError as exc:
        raise InputError(Problem(f"cannot read: {exc.strerror}", name)) from None
    return decode_text(data, name)


def yaml_files(path: Path) -> list[Path]:
    """The path itself, or the YAML files of a folder (sorted, not recursive)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())
    return [path]


def load_backend_file(path: Path) -> list[Sourced[Backend]]:
    name = display_path(path)
    data, source = parse_yaml(read_text(path), name)
    return backends_from_document(data, source)


def read_backend_files(paths: Iterable[Path]) -> list[tuple[str, list[Sourced[Backend]] | InputError]]:
    """Each YAML file of `paths` (files or folders), in order, with its backends or the error that stopped it."""
    results: list[tuple[str, list[Sourced[Backend]] | InputError]] = []
    for path in paths:
        if not path.exists():
            results.append((display_path(path), InputError(Problem("no such file or folder", display_path(path)))))
            continue
        for file in yaml_files(path):
            try:
                results.append((display_path(file), load_backend_file(file)))
            except InputError as exc:
                results.append((display_path(file), exc))
    return results


def load_backend_files(paths: Iterable[Path]) -> list[Sourced[Backend]]:
    """Backends from files and folders, in order. All files are read; all their problems are reported."""
    results = read_backend_files(paths)
    errors = [r for _, r in results if isinstance(r, InputError)]
    if errors:
        raise InputError.merge(errors)
    return [b for _, r in results if not isinstance(r, InputError) for b in r]


def builtin_catalog_dir() -> Path:
    """The built-in catalog: inside the installed package, or `backends/` of a source checkout."""
    here = Path(__file__).resolve().parent.parent  # the package root
    packaged = here / "_catalog"
    return packaged if packaged.is_dir() else here.parent / "backends"


def load_catalog(extra: Sequence[str | Path] = (), *, cache: Path | None = None) -> Catalog:
    """The built-in backends plus those of `extra` files or folders; later ones replace earlier ones.

    With `cache`, a folder, the validated built-in backends are kept there for the next call (catalogcache.py).
    """
    folder = builtin_catalog_dir()
    if cache is None:
        builtins = load_backend_files([folder])
    else:
        from .catalogcache import cached_backends

        builtins = cached_backends(folder, cache, lambda f: load_backend_files([f]), display_path)
    catalog = Catalog().adding(builtins)
    return catalog.adding(load_backend_files([Path(p) for p in extra])) if extra else catalog


def load_deployment(path: str | Path) -> Sourced[Deployment]:
    """A deployment file, validated; InputError with located problems when it is wrong."""
    path = Path(path)
    name = display_path(path)
    data, source = parse_yaml(read_text(path), name)
    return validate(Deployment, data, source)
