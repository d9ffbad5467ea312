"""`nomadgs render` and `nomadgs validate`: deployments to Nomad job files, no cluster needed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError, Problem
from . import output

if TYPE_CHECKING:
    from ..compile.build import Compiled


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that reads deployment files."""
    parser.add_argument(
        "--backends",
        metavar="PATH",
        type=Path,
        action="append",
        default=[],
        help="backend YAML file or folder added to the built-in catalog (repeatable; later ones override)",
    )


def register(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    render = sub.add_parser(
        "render",
        help="compile deployments into Nomad job files (JSON or HCL)",
        description=(
            'Compile deployment files into Nomad jobs. JSON is the API form ({"Job": ...}) that\n'
            "`nomad job run -json`, the HTTP API and Terraform's nomad_job (json = true) take; HCL is\n"
            "a jobspec for `nomad job run` and Terraform's jobspec."
        ),
        formatter_class=formatter,
    )
    render.add_argument("deployments", metavar="DEPLOYMENT", nargs="+", type=Path, help="deployment YAML file(s)")
    add_input_options(render)
    render.add_argument("--format", choices=("json", "hcl"), default="json", help="output format (default: json)")
    render.add_argument(
        "--output",
        "-o",
        metavar="PATH",
        help="write to this file, or into this folder as <job>.nomad.json|hcl (required for several deployments)",
    )
    render.set_defaults(handler=cmd_render)

    validate = sub.add_parser(
        "validate",
        help="check deployments: files, backends, versions, placeholders and the resulting job",
        formatter_class=formatter,
    )
    validate.add_argument("deployments", metavar="DEPLOYMENT", nargs="+", type=Path)
    add_input_options(validate)
    validate.add_argument("--output", choices=("text", "json"), default="text", help="result format")
    validate.set_defaults(handler=cmd_validate)


def compile_all(paths: list[Path], backends: list[Path], *, check: bool = False) -> list[Compiled]:
    """Load the catalog and compile every deployment; report every failing file, not only the first."""
    from ..compile.build import build
    from ..spec.loader import load_catalog, load_deployment

    catalog = load_catalog(backends)
    compiled = []
    errors: list[InputError] = []
    for path in paths:
        try:
            compiled.append(build(load_deployment(path), catalog, check=check))
        except InputError as exc:
            errors.append(exc)
    if errors:
        raise InputError.merge(errors)
    seen: dict[str, str] = {}
    for item in compiled:
        if item.job_id in seen:
            raise InputError(
                Problem(
                    f"job '{item.job_id}' is also produced by {seen[item.job_id]}",
                    item.source.filename,
                    field="name",
                    hint="give the models different names, or set nomad.job_id",
                )
            )
        seen[item.job_id] = item.source.filename
    for item in compiled:
        for message in item.resolved.warnings:
            output.warning(f"{item.source.filename}: {message}")
    return compiled


def cmd_render(args: argparse.Namespace) -> int:
    from ..nomad.render import SUFFIXES, render_text
    from .atomicfile import write_atomic

    compiled = compile_all(args.deployments, args.backends)
    texts = [(item, render_text(item.job, args.format)) for item in compiled]
    if args.output is None:
        if len(texts) > 1:
            raise InputError(
                Problem("several deployments need --output FOLDER", hint="each job is written to its own file")
            )
        sys.stdout.write(texts[0][1])
        return 0
    target = Path(args.output)
    as_folder = target.is_dir() or len(texts) > 1 or args.output.endswith(("/", "\\"))
    if as_folder and target.exists() and not target.is_dir():
        raise InputError(Problem("is a file, but several jobs need a folder", str(target)))
    # Everything compiled before anything is written: a bad deployment leaves no partial output.
    for item, text in texts:
        path = target / f"{item.job_id}{SUFFIXES[args.format]}" if as_folder else target
        write_atomic(path, text)
        output.info(f"wrote {path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    compiled = compile_all(args.deployments, args.backends, check=True)
    results = []
    for item in compiled:
        r = item.resolved
        results.append(
            {
                "file": item.source.filename,
                "job": item.job_id,
                "service": r.service_name,
                "backend": r.backend_name,
                "version": r.version,
                "framework": r.framework.name,
                "gpus": r.resources.gpus,
                "replicas": r.placement.replicas,
                "image": r.image,
            }
        )
    if args.output == "json":
        output.emit_json({"valid": True, "deployments": results})
    else:
        for res in results:
            replicas = f"{res['replicas']} replica{'s' if res['replicas'] != 1 else ''}"
            where = (
                f"{res['gpus']} {res['framework']} GPU{'s' if res['gpus'] != 1 else ''} each" if res["gpus"] else "CPU"
            )
            version = f" {res['version']}" if res["version"] else ""
            print(f"ok  {res['file']}: job {res['job']} ({res['backend']}{version}, {replicas}, {where})")
    return 0
