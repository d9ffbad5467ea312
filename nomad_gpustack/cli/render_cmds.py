"""`nomadgs render` and `nomadgs validate`: deployments to Nomad job files, no cluster needed."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import EXIT_OK, InputError, Problem
from . import output as say
from .base import command, preformatted
from .options import Choice, backends_option, deployments_argument, format_option, model_option

if TYPE_CHECKING:
    from ..compile.build import Compiled
    from ..nomad.render import Format
    from .rendermemo import Remembered


RENDER_HELP = preformatted("""\
Compile deployment files into Nomad jobs. --format is the job files' format: JSON is the API
form ({"Job": ...}) that `nomad job run -json`, the HTTP API and Terraform's nomad_job
(json = true) take; HCL is a jobspec for `nomad job run` and Terraform's jobspec.
-o/--output PATH is where they are written (default: stdout).

With --check, nothing is written: the files in --output FOLDER are compared with what the
deployments render to (exit 0: up to date; exit 1: a unified diff of what differs, on stdout).
For CI pipelines that keep rendered jobs in git.
""")


def compile_all(
    paths: list[Path],
    backends: tuple[Path, ...],
    *,
    check: bool = False,
    model: Path | None = None,
    hub: bool = False,
) -> list[Compiled]:
    """Load the catalog and compile every deployment; report every failing file, not only the first.

    `model`: a local model for the memory estimate (one deployment only); `hub`: whether explicit values
    are checked with metadata looked up anywhere, the Hugging Face Hub included (validate, submit).
    """
    from ..cachefolder import cache_folder
    from ..compile.build import build
    from ..compile.estimation import metadata_for_compile
    from ..spec.loader import load_catalog, load_deployment

    if model is not None and len(paths) > 1:
        raise InputError(Problem("--model describes one model: give one deployment with it", field="--model"))
    catalog = load_catalog(backends)
    cache = cache_folder()  # the Hub's model headers; None when the folder is not the user's own
    compiled = []
    errors: list[InputError] = []
    for path in paths:
        try:
            deployment = load_deployment(path)
            metadata = metadata_for_compile(deployment.spec, model_path=model, cache_dir=cache, hub=hub)
            compiled.append(build(deployment, catalog, check=check, model=metadata))
        except InputError as exc:
            errors.append(exc)
    if errors:
        raise InputError.merge(errors)
    seen: dict[str, Problem] = {}
    collisions: list[Problem] = []
    for item in compiled:
        # Located at the key the job ID comes from: nomad.job_id when set, else the model's name.
        key = ("nomad", "job_id") if item.source.spec.nomad.job_id else ("name",)
        here = item.source.problem(key, "")
        first = seen.setdefault(item.job_id, here)
        if first is not here:
            where = f"{first.file}:{first.line}" if first.line else str(first.file)
            message = f"job '{item.job_id}' is also produced by {where}"
            collisions.append(
                replace(here, message=message, hint="give the models different names, or set nomad.job_id")
            )
    if collisions:
        raise InputError(collisions)
    for item in compiled:
        for message in item.resolved.warnings:
            say.warning(f"{item.source.filename}: {message}")
    return compiled


def _renderings(
    deployments: list[Path], backends: tuple[Path, ...], model: Path | None, fmt: Format, *, remembered: bool
) -> list[Remembered]:
    """Each deployment's job text: remembered from an earlier run when `remembered` and every input is unchanged,
    else compiled (and then remembered, unless the compile looked up model metadata)."""
    from ..cachefolder import cache_folder
    from ..spec.files import display_path
    from .rendermemo import Remembered, RenderMemo

    cache = cache_folder() if remembered and model is None else None
    memo = RenderMemo.open(cache, backends, fmt) if cache is not None else None
    if memo is not None:
        recalled = [memo.recall(path) for path in deployments]
        hits = [r for r in recalled if r is not None]
        if len(hits) == len(deployments) and len({r.job_id for r in hits}) == len(hits):
            for path, hit in zip(deployments, hits, strict=True):
                for message in hit.warnings:
                    say.warning(f"{display_path(path)}: {message}")
            return hits
    from ..nomad.render import render_text

    renderings = []
    for path, item in zip(deployments, compile_all(deployments, backends, model=model), strict=True):
        rendering = Remembered(item.job_id, render_text(item.job, fmt), item.resolved.warnings)
        if memo is not None and item.resolved.sizing is None:
            memo.remember(path, rendering)
        renderings.append(rendering)
    return renderings


@command("render", short_help="compile deployments into Nomad job files (JSON or HCL)", help=RENDER_HELP)
@deployments_argument
@backends_option
@model_option
@click.option("--format", "fmt", type=Choice(("json", "hcl")), default="json", help="job file format (default: json)")
@click.option(
    "--output",
    "-o",
    metavar="PATH",
    type=click.Path(),  # a file or a folder, existing or not; the shell completes paths
    help="write to this file, or into this folder as <job>.nomad.json|hcl (required for several deployments)",
)
@click.option(
    "--check",
    is_flag=True,
    help="write nothing; exit 1 and print a diff when the files in --output differ from the rendering",
)
def render(
    deployments: tuple[Path, ...],
    backends: tuple[Path, ...],
    model: Path | None,
    fmt: Format,
    output: str | None,
    check: bool,
) -> int:
    from ..nomad.render import SUFFIXES

    if check and output is None:
        raise InputError(Problem("--check compares with files on disk: give them with --output PATH"))
    # --check answers from a fresh compile: what it vouches for never rests on a cache.
    texts = _renderings(list(deployments), backends, model, fmt, remembered=not check)
    if output is None:
        if len(texts) > 1:
            raise InputError(
                Problem("several deployments need --output FOLDER", hint="each job is written to its own file")
            )
        sys.stdout.write(texts[0].text)
        return EXIT_OK
    target = Path(output)
    as_folder = target.is_dir() or len(texts) > 1 or output.endswith(("/", "\\"))
    if as_folder and target.exists() and not target.is_dir():
        raise InputError(Problem("is a file, but several jobs need a folder", str(target)))
    if as_folder and not target.exists() and target.suffix and not output.endswith(("/", "\\")):
        # `-o out.json` with two deployments: a folder named like a file is surely not what was meant.
        raise InputError(
            Problem(
                f"several deployments need --output FOLDER, and '{output}' names a file",
                hint=f"give a folder, e.g. --output {target.with_suffix('')}/ (a trailing / creates it)",
            )
        )
    files = {(target / f"{r.job_id}{SUFFIXES[fmt]}" if as_folder else target): r.text for r in texts}
    if check:
        from .drift import report_drift

        return report_drift(files, target if as_folder else None, SUFFIXES[fmt])
    from .atomicfile import write_all_atomic  # tempfile and friends: only when writing

    # Everything compiled before anything is written, and every file or none: no partial output.
    write_all_atomic(files)
    for path in files:
        say.info(f"wrote {path}")
    return EXIT_OK


@command(
    "validate",
    short_help="check deployments: files, backends, versions, placeholders and the resulting job",
    help="Check deployments: files, backends, versions, placeholders and the resulting job.",
)
@deployments_argument
@backends_option
@model_option
@format_option()
def validate(deployments: tuple[Path, ...], backends: tuple[Path, ...], model: Path | None, fmt: str) -> int:
    from ..nomad.explain import upgrade_needs

    compiled = compile_all(list(deployments), backends, check=True, model=model, hub=True)
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
                "gpu_memory": r.resources.gpu_memory,
                "estimate": r.sizing.need if r.sizing else None,
                "auto": r.sizing.auto if r.sizing else None,
                "upgrade": upgrade_needs(item.request),
            }
        )
    if fmt == "json":
        say.emit_json({"valid": True, "deployments": results})
    else:
        for res in results:
            replicas = f"{res['replicas']} replica{'s' if res['replicas'] != 1 else ''}"
            where = (
                f"{res['gpus']} {res['framework']} GPU{'s' if res['gpus'] != 1 else ''} each" if res["gpus"] else "CPU"
            )
            version = f" {res['version']}" if res["version"] else ""
            print(f"ok  {res['file']}: job {res['job']} ({res['backend']}{version}, {replicas}, {where})")
            if res["auto"]:
                print(f"    auto: {res['auto']}")
            elif res["estimate"]:
                print(f"    estimate: {res['estimate']}")
            print(f"    upgrade: {res['upgrade']}")
    return EXIT_OK
