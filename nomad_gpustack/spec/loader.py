"""Reading backend and deployment files from disk (the I/O shell around the pure parsers)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError, Problem
from .backend import Backend
from .catalog import Catalog, backends_from_document
from .deployment import Deployment
from .files import builtin_catalog_dir, display_path, yaml_files
from .specfile import Sourced, validate
from .yamlsource import MAX_FILE_BYTES, Mark, SourceMap, decode_text, parse_yaml, too_large
from .yamlsource import Path as ValuePath


def read_text(path: Path) -> str:
    """A file's text, refusing directories, missing files, huge files and non-UTF-8 bytes."""
    name = display_path(path)
    try:
        if path.is_dir():
            raise InputError(Problem("is a folder, not a file", name))
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            # Check before reading: a multi-gigabyte file must not be pulled into memory to be refused.
            raise too_large(size, name)
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(Problem("no such file", name)) from None
    except PermissionError:
        raise InputError(Problem("permission denied", name)) from None
    except OSError as exc:
        raise InputError(Problem(f"cannot read: {exc.strerror}", name)) from None
    return decode_text(data, name)


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


def load_catalog(extra: Sequence[str | Path] = ()) -> Catalog:
    """The built-in backends plus those of `extra` files or folders; later ones replace earlier ones.

    Read and validated on every call: kept between runs, the validated catalog saved no time (a render
    validates its deployment with the same pydantic machinery), and a cache of it was one more thing to trust.
    """
    catalog = Catalog().adding(load_backend_files([builtin_catalog_dir()]))
    return catalog.adding(load_backend_files([Path(p) for p in extra])) if extra else catalog


def load_deployment(path: str | Path) -> Sourced[Deployment]:
    """A deployment file, validated; InputError with located problems when it is wrong."""
    path = Path(path)
    name = display_path(path)
    data, source = parse_yaml(read_text(path), name)
    return validate(Deployment, data, source)


def deployment_from_data(
    data: Any,
    filename: str,
    *,
    marks: Mapping[ValuePath, Mark] | None = None,
    key_marks: Mapping[ValuePath, Mark] | None = None,
) -> Sourced[Deployment]:
    """A deployment given as data (a playbook's inline `definition`, a Jinja2 filter's input), validated.

    `filename` names the source in messages; `marks` and `key_marks` place values and keys in it when the
    caller knows where they were written (an Ansible task's lines), as `parse_yaml` does for a file.
    """
    source = SourceMap(filename, dict(marks or {}), dict(key_marks or {}))
    return validate(Deployment, _plain(data), source)


def _plain(value: Any) -> Any:
    """Plain values with keys as text, as the YAML reader builds them (a version key `1.9` is a name).

    Templating engines hand over subclasses of the builtin types (Ansible tags its values); the compiler
    gets the builtins.
    """
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    for kind in (bool, str, int, float):
        if isinstance(value, kind):
            return kind(value)
    return value
