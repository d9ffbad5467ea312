"""`nomadgs backends list|show|validate`: the backend catalog."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError, Problem
from . import output
from .render_cmds import add_input_options


def register(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    backends = sub.add_parser(
        "backends",
        help="list, show and validate inference backends (GPUStack backend YAML)",
        formatter_class=formatter,
    )
    bsub = backends.add_subparsers(dest="backends_command", metavar="SUBCOMMAND")
    bsub.required = True

    ls = bsub.add_parser("list", help="list the backends of the catalog", formatter_class=formatter)
    add_input_options(ls)
    ls.add_argument("--output", choices=("text", "json"), default="text", help="result format")
    ls.set_defaults(handler=cmd_list)

    show = bsub.add_parser("show", help="print one backend's definition", formatter_class=formatter)
    show.add_argument("name", metavar="NAME", help="backend name (case-insensitive)")
    add_input_options(show)
    show.add_argument("--format", choices=("yaml", "json"), default="yaml", help="output format (default: yaml)")
    show.set_defaults(handler=cmd_show)

    validate = bsub.add_parser(
        "validate",
        help="check backend files (GPUStack YAML, one backend or a list)",
        formatter_class=formatter,
    )
    validate.add_argument("files", metavar="FILE", nargs="+", type=Path, help="backend YAML files or folders")
    validate.add_argument("--output", choices=("text", "json"), default="text", help="result format")
    validate.set_defaults(handler=cmd_validate)


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


def cmd_list(args: argparse.Namespace) -> int:
    from ..spec.loader import load_catalog

    catalog = load_catalog(args.backends)
    rows = [_summary(b) for b in catalog]
    if args.output == "json":
        output.emit_json(rows)
        return 0
    print(f"{'BACKEND':<28} {'DEFAULT':<14} {'FRAMEWORKS':<28} VERSIONS")
    for row in rows:
        frameworks = sorted({f for fws in row["versions"].values() for f in fws})
        print(
            f"{row['name']:<28} {row['default_version'] or '-':<14} {','.join(frameworks):<28} {len(row['versions'])}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from ..spec.loader import load_catalog

    catalog = load_catalog(args.backends)
    found = catalog.find(args.name)
    if found is None:
        guess = catalog.closest(args.name)
        hint = f"did you mean '{guess}'?" if guess else "see `nomadgs backends list`"
        raise InputError(Problem(f"unknown backend '{args.name}'", hint=hint))
    data = found.spec.model_dump(mode="json", exclude_none=True)
    if args.format == "json":
        output.emit_json(data)
    else:
        import yaml

        sys.stdout.write(f"# {found.filename}\n")
        yaml.safe_dump(data, sys.stdout, sort_keys=False, allow_unicode=True, width=100)
    return 0


def backend_notes(backend: Any) -> list[str]:
    """Things GPUStack would do differently with this file: worth knowing, not errors."""
    from ..compile.resolve import resolve_version
    from ..compile.templating import PLACEHOLDERS, placeholders_in
    from ..spec.backend import BUILT_IN_NAMES

    spec = backend.spec
    notes: list[str] = []
    name = spec.backend_name
    if not name.endswith("-custom") and name.lower() not in {n.lower() for n in BUILT_IN_NAMES}:
        notes.append(
            f"GPUStack's YAML import only takes custom backend names ending in '-custom' ('{name}' does not); "
            "nomadgs accepts it"
        )
    if spec.default_version and spec.default_version not in spec.versions:
        notes.append(
            f"default_version '{spec.default_version}' is not one of the versions; "
            f"the newest version '{resolve_version(spec, None)}' is used, as GPUStack does"
        )
    env = set(spec.default_env or {})
    for version, config in spec.versions.items():
        texts = [
            config.run_command or spec.default_run_command or "",
            config.entrypoint or spec.default_entrypoint or "",
        ]
        version_env = env | set(config.env or {})
        for text in texts:
            for placeholder in placeholders_in(text):
                if placeholder not in PLACEHOLDERS and placeholder not in version_env:
                    notes.append(
                        f"version '{version}': {{{{{placeholder}}}}} is not a GPUStack placeholder; "
                        "each deployment must set it in env"
                    )
    return notes


def cmd_validate(args: argparse.Namespace) -> int:
    from ..spec.loader import load_backend_file, yaml_files

    results: list[dict[str, Any]] = []
    errors: list[InputError] = []
    for path in args.files:
        if not path.exists():
            errors.append(InputError(Problem("no such file or folder", str(path))))
            continue
        for file in yaml_files(path):
            try:
                backends = load_backend_file(file)
            except InputError as exc:
                errors.append(exc)
                results.append({"file": str(file), "valid": False, "errors": [str(p) for p in exc.problems]})
                continue
            results.append(
                {
                    "file": str(file),
                    "valid": True,
                    "backends": [{**_summary(b), "notes": backend_notes(b)} for b in backends],
                }
            )
    if args.output == "json":
        json.dump(results, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 2 if errors else 0
    for result in results:
        if not result["valid"]:
            continue
        for backend in result["backends"]:
            versions = ", ".join(backend["versions"])
            print(f"ok  {result['file']}: {backend['name']} ({versions})")
            for message in backend["notes"]:
                output.note(f"{result['file']}: {message}")
    if errors:
        raise InputError.merge(errors)
    return 0
