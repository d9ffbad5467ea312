"""`nomadgs backends list|show|validate`: the backend catalog."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import EXIT_OK, InputError, Problem, exit_code_for
from . import output as say
from .base import group
from .completion import complete_backend_names
from .options import backends_option, format_option


@group(
    "backends",
    short_help="list, show and validate inference backends (GPUStack backend YAML)",
    help="List, show and validate inference backends (GPUStack backend YAML).",
)
def backends() -> None:
    pass


def _summary(backend: Any) -> dict[str, Any]:
    from ..compile.resolve import resolve_version

    spec = backend.spec
    return {
        "name": spec.backend_name,
        "default_version": resolve_version(spec, None),
        "versions": {name: v.frameworks for name, v in spec.versions.items()},
        "health_check_path": spec.health_check_path,
        "file": backend.filename,
    }


@backends.command("list", short_help="list the backends of the catalog", help="List the backends of the catalog.")
@backends_option
@format_option()
def list_backends(backends: tuple[Path, ...], fmt: str) -> int:
    from ..spec.loader import load_catalog

    catalog = load_catalog(backends)
    rows = [_summary(b) for b in catalog]
    if fmt == "json":
        say.emit_json(rows)
        return EXIT_OK
    print(f"{'BACKEND':<28} {'DEFAULT':<14} {'FRAMEWORKS':<28} VERSIONS")
    for row in rows:
        frameworks = sorted({f for fws in row["versions"].values() for f in fws})
        print(
            f"{row['name']:<28} {row['default_version'] or '-':<14} {','.join(frameworks):<28} {len(row['versions'])}"
        )
    return EXIT_OK


@backends.command(
    "show",
    short_help="print one backend's definition",
    help="Print one backend's definition. NAME: backend name (case-insensitive).",
)
@click.argument("name", metavar="NAME", shell_complete=complete_backend_names)
@backends_option
@format_option("yaml", "json")
def show(name: str, backends: tuple[Path, ...], fmt: str) -> int:
    from ..spec.catalog import CUSTOM
    from ..spec.loader import load_catalog

    catalog = load_catalog(backends)
    found = catalog.find(name)
    if found is not None:
        data = found.spec.model_dump(mode="json", exclude_none=True)
        origin = found.filename
    elif name.lower() == CUSTOM.lower():  # built in, without a file (unless a user file replaces it)
        from ..compile.custom import custom_backend

        data, origin = custom_backend(), "built in: GPUStack's Custom backend has no backend file"
    else:
        guess = catalog.closest(name)
        hint = f"did you mean '{guess}'?" if guess else "see `nomadgs backends list`"
        raise InputError(Problem(f"unknown backend '{name}'", hint=hint))
    if fmt == "json":
        say.emit_json(data)
    else:
        import yaml

        sys.stdout.write(f"# {origin}\n")
        yaml.safe_dump(data, sys.stdout, sort_keys=False, allow_unicode=True, width=100)
    return EXIT_OK


@backends.command(
    "validate",
    short_help="check backend files (GPUStack YAML, one backend or a list)",
    help="Check backend files (GPUStack YAML, one backend or a list). FILE: backend YAML files or folders.",
)
@click.argument("files", metavar="FILE...", nargs=-1, required=True, type=click.Path(path_type=Path))
@format_option()
def validate(files: tuple[Path, ...], fmt: str) -> int:
    from ..compile.backend_notes import backend_notes
    from ..spec.loader import read_backend_files

    results: list[dict[str, Any]] = []
    errors: list[InputError] = []
    for file, loaded in read_backend_files(files):
        if isinstance(loaded, InputError):
            errors.append(loaded)
            results.append({"file": file, "valid": False, "errors": [str(p) for p in loaded.problems]})
            continue
        results.append(
            {"file": file, "valid": True, "backends": [{**_summary(b), "notes": backend_notes(b)} for b in loaded]}
        )
    if fmt == "json":
        json.dump(results, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return exit_code_for(InputError.merge(errors)) if errors else EXIT_OK
    for result in results:
        if not result["valid"]:
            continue
        for backend in result["backends"]:
            versions = ", ".join(backend["versions"])
            print(f"ok  {result['file']}: {backend['name']} ({versions})")
            for message in backend["notes"]:
                say.note(f"{result['file']}: {message}")
    if errors:
        raise InputError.merge(errors)
    return EXIT_OK
