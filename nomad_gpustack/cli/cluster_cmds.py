"""`nomadgs submit`, `plan`, `status`, `logs`, `stop`: the commands that talk to a Nomad cluster."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import EXIT_INTERRUPTED, EXIT_OK, InputError, Problem, exit_code_for
from . import output as say
from .base import PARTIAL_RESULT, command, preformatted
from .connection import NOMAD_ENV, nomad_options, nomad_settings
from .options import (
    backends_option,
    deployment_argument,
    deployments_argument,
    duration_seconds,
    format_option,
    model_option,
)

if TYPE_CHECKING:
    from ..compile.build import Compiled
    from ..nomad.client import NomadAPI
    from ..nomad.runner import Registration
    from ..nomad.watcher import WatchResult

SUBMIT_HELP = preformatted(
    """\
Render each deployment, validate it with the server, register it with check-and-set (EnforceIndex,
so a concurrent change is detected, never overwritten), then follow the rollout until every replica
answers its health check, or explain why it cannot.

Several deployments (a fleet): all are checked by Nomad before any is registered (one bad file
registers nothing), then registered and followed together, with one summary; --max-parallel N rolls
out N at a time and starts no further one after a failure.

replica states (as in GPUStack):
  pending      not placed on a node yet
  scheduled    placed; the task is being set up
  downloading  pulling the image or downloading the model weights
  starting     the engine runs and loads the model; its health check does not pass yet
  running      healthy: the health check passes
  error        failed: see the explanation and the log lines printed with it

exit codes:
  0    every replica is running and healthy (or --detach: registered)
  1    the rollout failed (crash loop, OOM kill, image pull, unhealthy, deployment failed, conflict)
  2    bad input (files, flags), or Nomad's validation refused the job; nothing was registered
  3    Nomad cannot place the model (no node with the GPUs / memory / drivers it needs)
  4    --timeout passed; the job keeps running (follow it with `nomadgs status NAME`)
  5    Nomad unreachable, or refused the request (TLS, ACL token)
  130  interrupted with Ctrl-C; the job keeps running
  a fleet exits with the highest code of its deployments
"""
)

PLAN_HELP = preformatted(
    "Dry-run the scheduler for a deployment. Exit codes as `nomad job plan`: 0 no changes, 1 changes,\n"
    "255 error (bad input included)."
)


# --- submit -------------------------------------------------------------------------------------------


class _Notes:
    """Runner notes on stderr."""

    def info(self, message: str) -> None:
        say.info(message)

    def warning(self, message: str) -> None:
        say.warning(message)


def _api(connection: Mapping[str, Any], compiled: Compiled | None = None) -> NomadAPI:
    """A client for the cluster; for a deployment, scoped to the namespace and region its job names."""
    from ..nomad.client import NomadAPI
    from ..nomad.runner import scoped_settings

    settings = nomad_settings(connection)
    scoped = scoped_settings(settings, compiled) if compiled is not None else settings
    return NomadAPI(scoped, on_retry=say.warning)


def _print_outcome(registration: Registration, result: WatchResult) -> None:
    from ..nomad import verdict

    a = result.assessment
    job_id = registration.compiled.job_id
    if a.phase == "succeeded":
        print(verdict.headline(registration, result))
        for url in result.endpoints:
            print(f"  OpenAI base URL: {url}")
        return
    if a.phase == "awaiting-promotion":
        print(verdict.headline(registration, result))
    else:
        say.error(verdict.headline(registration, result))
    steps = verdict.next_steps(
        result,
        follow=f"`nomadgs status {job_id}`",
        remove=f"`nomadgs stop {job_id}`",
        revert=f"`nomadgs revert {job_id}`",
        promote=f"`nomadgs promote {job_id}`",
    )
    for line in [*verdict.explanation(registration, result), *steps]:
        say.info(f"  {line}")


@command(
    "submit",
    short_help="register deployments on Nomad and wait until the models answer their health checks",
    help=SUBMIT_HELP,
    environment=NOMAD_ENV,
)
@deployments_argument
@backends_option
@model_option
@click.option("--timeout", default="2h", metavar="DURATION", help="give up watching after this (default 2h)")
@click.option("--detach", is_flag=True, help="return once the jobs are registered")
@click.option(
    "--max-parallel",
    type=click.IntRange(min=1),
    metavar="N",
    help="roll out N deployments at once, the next when one ends; stop starting new ones after a failure "
    "(default: all at once)",
)
@click.option(
    "--wait-for-capacity",
    is_flag=True,
    help="when no node fits yet, wait for one (autoscaling) instead of failing with exit 3",
)
@click.option("--force", is_flag=True, help="take over a job that nomadgs did not create")
@format_option()
@nomad_options
def submit(
    deployments: tuple[Path, ...],
    backends: tuple[Path, ...],
    model: Path | None,
    timeout: str,
    detach: bool,
    max_parallel: int | None,
    wait_for_capacity: bool,
    force: bool,
    fmt: str,
    **connection: Any,
) -> int:
    import asyncio

    from ..nomad import fleet
    from .progress_view import fleet_view_for, view_for
    from .render_cmds import compile_all

    if detach and max_parallel is not None:
        raise InputError(Problem("--max-parallel paces rollouts that submit follows: not with --detach"))
    seconds = duration_seconds(timeout, "--timeout")
    compiled_all = compile_all(list(deployments), backends, check=True, model=model, hub=True)
    members = _members(connection, compiled_all)  # every namespace conflict before anything is sent
    deadline = time.monotonic() + seconds
    for api in {id(m.api): m.api for m in members}.values():
        api.deadline = deadline  # retrying a failing Nomad keeps to --timeout too
    results: list[dict[str, Any]] = []
    # A failure before the end: the JSON document of the failure still lists what was done.
    click.get_current_context().meta[PARTIAL_RESULT] = {"results": results}
    notes = _Notes()
    fleet.check_all(members, force=force, notes=notes)  # checked by Nomad, all of them, before any register

    live = fleet_view_for(len(members)) if len(members) > 1 and not detach else None

    def title(member: fleet.Member) -> str:
        version = member.registration.version if member.registration is not None else None
        return f"{member.compiled.model} (job {member.compiled.job_id} v{version})"

    def reporter_for(member: fleet.Member) -> Any:
        return live.reporter(title(member)) if live is not None else view_for(title(member))

    def on_done(member: fleet.Member) -> None:
        results.append(member.document())
        if live is not None:
            live.ended_with(title(member), _ended_line(member))

    try:
        asyncio.run(
            fleet.run(
                members,
                notes=notes,
                reporter_for=reporter_for,
                note=live.note if live is not None else say.warning,
                timeout=seconds,
                wait_for_capacity=wait_for_capacity,
                max_parallel=max_parallel,
                detach=detach,
                on_done=on_done,
            )
        )
    except KeyboardInterrupt:
        registered = [m.compiled.job_id for m in members if m.registration is not None]
        if len(registered) == 1:
            say.info(f"\nstopped watching; the job keeps running. Resume with: nomadgs status {registered[0]}")
        else:
            say.info(f"\nstopped watching; {len(registered)} registered jobs keep running. See: nomadgs status")
        if fmt == "json":
            documents = [m.document() if m.done else {**m.document(), "status": "interrupted"} for m in members]
            say.emit_failure(EXIT_INTERRUPTED, ["interrupted"], results=documents)
        return EXIT_INTERRUPTED
    if len(members) == 1 and members[0].failure is not None:
        raise members[0].failure  # one deployment: its error is the command's, said as every command says one
    code = fleet.worst([m.code for m in members])
    if fmt == "json":
        documents = [m.document() for m in members]
        counts: dict[str, int] = {}
        for m in members:
            counts[m.status] = counts.get(m.status, 0) + 1
        say.emit_json({"ok": code == 0, "exit_code": code, "summary": counts, "results": documents})
        return code
    for member in members:
        _print_member(member)
    if len(members) > 1:
        _print_fleet_summary(members)
    return code


def _members(connection: Mapping[str, Any], compiled_all: list[Compiled]) -> list[Any]:
    """The fleet's members, with one client per cluster scope (namespace, region) that their jobs name."""
    from ..nomad.fleet import Member

    apis: dict[tuple[str, str], NomadAPI] = {}
    members = []
    for compiled in compiled_all:
        api = _api(connection, compiled)
        scope = (api.settings.namespace or "", api.settings.region or "")
        members.append(Member(apis.setdefault(scope, api), compiled))
    return members


def _ended_line(member: Any) -> str:
    """One line for a rollout that ended, in the fleet's live view."""
    from ..nomad import verdict

    if member.registration is not None and member.result is not None:
        line = verdict.headline(member.registration, member.result)
        return ("✓ " if member.code == 0 else "✗ ") + line
    return f"✗ {member.compiled.model}: {member.status}: {member.error}"


def _print_member(member: Any) -> None:
    job_id = member.compiled.job_id
    if member.result is not None and member.registration is not None:
        _print_outcome(member.registration, member.result)
    elif member.status == "registered":
        print(f"{job_id}: registered; follow it with `nomadgs status {job_id}`")
    elif member.failure is not None:
        for line in say.problem_lines(member.failure):
            say.error(line if line.startswith(member.compiled.file) else f"{member.compiled.model}: {line}")
    elif member.error:
        say.error(f"{member.compiled.model}: {member.status}: {member.error}")


def _print_fleet_summary(members: list[Any]) -> None:
    """The fleet in a few lines: how many are healthy, and each one that is not, with why."""
    healthy = [m for m in members if m.code == 0]
    print(
        f"fleet: {len(healthy)} of {len(members)} "
        + ("registered" if healthy and all(m.status == "registered" for m in healthy) else "healthy")
    )
    for m in members:
        if m.code == 0:
            continue
        why = m.result.assessment.headline if m.result is not None else m.error
        say.error(f"  {m.compiled.model} (job {m.compiled.job_id}): {m.status}, exit {m.code}: {why}")


# --- plan ---------------------------------------------------------------------------------------------


@command(
    "plan",
    short_help="show what submitting a deployment would change (exit 0: no changes, 1: changes, 255: error)",
    help=PLAN_HELP,
    environment=NOMAD_ENV,
    plan_exit_codes=True,  # every error, bad input included, exits errors.PLAN_ERROR, as `nomad job plan`
)
@deployment_argument
@backends_option
@model_option
@format_option()
@nomad_options
def plan(deployment: Path, backends: tuple[Path, ...], model: Path | None, fmt: str, **connection: Any) -> int:
    from ..nomad import runner
    from .render_cmds import compile_all

    # The job `submit` would register: compiled with the same model metadata (auto, checked sizes).
    (compiled,) = compile_all([deployment], backends, check=True, model=model, hub=True)
    summary = runner.plan(_api(connection, compiled), compiled)
    if fmt == "json":
        say.emit_json(summary.to_json())
        return summary.exit_code
    from ..nomad.plandiff import format_job_diff

    # As `nomad job plan`: the field-level diff, then the scheduler's dry run.
    print(format_job_diff(summary.job_diff).rstrip() or f"job {summary.job_id}: {summary.diff}")
    print("\nScheduler dry-run:")
    if summary.placement:
        print("- WARNING: Failed to place all allocations.")
        for line in summary.placement:
            print(f"    {line}")
    else:
        print("- All tasks successfully allocated.")
    if any(counts.get("DestructiveUpdate") or counts.get("Canary") for counts in summary.updates.values()):
        print(f"- Destructive update, each new replica loads its model: {summary.upgrade}")
    if summary.warnings:
        say.warning(summary.warnings.strip())
    force = ""
    if summary.foreign:
        owner = "exists on Nomad but was not created by nomadgs"
        say.warning(f"job '{summary.job_id}' {owner}: submit replaces it only with --force")
        force = "--force "
    print(f"\nsubmit with check-and-set index {summary.job_modify_index}: nomadgs submit {force}{deployment}")
    return summary.exit_code


# --- status, logs, stop -------------------------------------------------------------------------------


@command(
    "status",
    short_help="list deployed models, or show one in detail",
    help="List deployed models, or show one in detail. NAME: job ID or model name.",
    environment=NOMAD_ENV,
)
@click.argument("name", metavar="[NAME]", required=False)
@format_option()
@nomad_options
def status(name: str | None, fmt: str, **connection: Any) -> int:
    import asyncio

    from ..nomad.status import all_model_statuses, find_job, model_status

    api = _api(connection)
    if name:
        view = asyncio.run(model_status(api, find_job(api, name)))
        if fmt == "json":
            say.emit_json(view.to_json())
            return EXIT_OK
        if view.managed:
            backend = f"{view.backend} {view.backend_version}".strip()
            print(f"model      {view.model}" + (f"  ({backend})" if backend else ""))
        else:
            print(f"model      none: job {view.job} was not created by nomadgs")
        print(f"job        {view.job} version {view.job_version}, {view.status}")
        if view.deployment:
            d = view.deployment
            print(f"deployment {d.ID[:8]} {d.Status}: {d.StatusDescription}")
        if view.status == "stopped":
            print("replicas   none: the job is stopped")
        else:
            print(f"replicas   {view.healthy}/{view.desired} healthy")
        for r in view.replicas:
            print(f"  replica {r.index}  {r.state:<11} {r.detail}" + (f" on {r.node}" if r.node else ""))
        for trouble in view.ranks:
            print(f"  {trouble}")
        for url in view.endpoints:
            print(f"endpoint   {url}")
        return EXIT_OK

    views = asyncio.run(all_model_statuses(api))
    if fmt == "json":
        say.emit_json([v.to_json() for v in views])
        return EXIT_OK
    if not views:
        print("no models deployed by nomadgs in this namespace")
        return EXIT_OK
    rows = [
        (
            v.model or v.job,
            v.job,
            str(v.job_version),
            f"{v.backend} {v.backend_version}".strip() or "-",
            v.status,
            "-" if v.status == "stopped" else f"{v.healthy}/{v.desired}",
            v.endpoints[0] if v.endpoints else "-",
        )
        for v in views
    ]
    # The job's version beside the job, named so: the backend's own version is in BACKEND.
    headers = ("MODEL", "JOB", "JOB VER", "BACKEND", "STATUS", "HEALTHY", "ENDPOINT")
    for line in say.table(headers, rows, right=(2, 5)):
        print(line)
    return EXIT_OK


@command(
    "logs",
    short_help="print or follow a model server's log",
    help="Print or follow a model server's log. NAME: job ID or model name.",
    environment=NOMAD_ENV,
)
@click.argument("name", metavar="NAME")
@click.option("--stderr", is_flag=True, help="stderr instead of stdout")
@click.option("--follow", "-f", is_flag=True, help="keep printing new lines")
@click.option("--replica", type=int, metavar="N", help="replica number (default: the first running one)")
@click.option("--task", metavar="TASK", help="task (default: the model server; download-model for the download)")
@click.option(
    "--tail", type=click.IntRange(min=0), default=100, metavar="LINES", help="lines to print first (default 100)"
)
@nomad_options
def logs(
    name: str, stderr: bool, follow: bool, replica: int | None, task: str | None, tail: int, **connection: Any
) -> int:
    import asyncio

    from ..nomad import logs as nomad_logs
    from ..nomad.status import find_job

    api = _api(connection)
    job = find_job(api, name)
    stream = "stderr" if stderr else "stdout"

    async def run() -> int:
        async with api.async_client() as http:
            source = await nomad_logs.log_source(api, http, job, replica=replica, task=task)
            if not follow:
                sys.stdout.write(await nomad_logs.tail(api, http, source, stream=stream, lines=tail))
                return EXIT_OK
            async with contextlib.aclosing(nomad_logs.follow(api, http, source, stream=stream, lines=tail)) as pieces:
                async for piece in pieces:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
                    if say.reader_left():  # `nomadgs logs -f NAME | head`: following ends with the reader
                        break
        return EXIT_OK

    try:
        return asyncio.run(run())
    except KeyboardInterrupt as interrupted:  # the way to end `logs -f`: quietly, but with Ctrl-C's exit code
        return exit_code_for(interrupted)


@command(
    "stop",
    short_help="stop a deployed model",
    help="Stop a deployed model. NAME: job ID or model name.",
    environment=NOMAD_ENV,
)
@click.argument("name", metavar="NAME")
@click.option("--purge", is_flag=True, help="also remove the job from Nomad's state")
@click.option("--force", is_flag=True, help="stop a job that nomadgs did not create")
@nomad_options
def stop(name: str, purge: bool, force: bool, **connection: Any) -> int:
    from ..nomad import runner
    from ..nomad.status import find_job

    api = _api(connection)
    job = find_job(api, name)
    eval_id = runner.stop(api, job, purge=purge, force=force)
    what = "stopped and purged" if purge else "stopped"
    print(f"{job.ID}: {what} (evaluation {eval_id[:8] or '-'})")
    return EXIT_OK
