"""`nomadgs promote`, `revert`, `history`: a job's versions, and the manual steps of a rollout."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import EXIT_OK, exit_code_for
from . import output as say
from .base import PARTIAL_RESULT, command, preformatted
from .connection import NOMAD_ENV, nomad_options
from .options import duration_seconds, format_option

if TYPE_CHECKING:
    from ..nomad.client import NomadAPI
    from ..nomad.responses import JobStub

PROMOTE_HELP = preformatted(
    """\
Promote the canaries of a model's latest deployment (Nomad's deployment promote, every group):
once they are healthy, Nomad replaces the remaining replicas with the new version. Needed when
the update has `canary` without `auto_promote`. NAME: job ID or model name.

A deployment that is already promoted is left alone (exit 0). Nothing waiting for promotion (no
deployment, no canaries, a deployment that failed or was cancelled) or canaries not healthy yet:
exit 1, saying which.

examples:
  nomadgs promote qwen2-5-7b-instruct
  nomadgs promote Qwen2.5-7B-Instruct --format json
"""
)

REVERT_HELP = preformatted(
    """\
Revert a model to an older job version (Nomad's job revert), then follow the deployment that
starts until every replica is healthy, as submit does. By default the target is the newest stable
version older than the current one (stable: its deployment succeeded); --to names another.
NAME: job ID or model name.

The revert is a check-and-set on the current version: if the job changed since nomadgs read it,
nothing is reverted (exit 1). No stable version to go back to: exit 2, and nothing is sent.

exit codes as submit: 0 healthy, 1 failed, 2 bad input, 3 placement, 4 --timeout, 5 unreachable.

examples:
  nomadgs revert qwen2-5-7b-instruct
  nomadgs revert qwen2-5-7b-instruct --to 3 --detach
  nomadgs history qwen2-5-7b-instruct   # which versions there are
"""
)

F = TypeVar("F", bound=Callable[..., Any])

HISTORY_HELP = preformatted(
    """\
List a model's job versions, newest first, as `nomad job history -p` does: when each was
submitted, whether it is stable (its deployment succeeded), and the fields that changed from the
version before. NAME: job ID or model name.

examples:
  nomadgs history qwen2-5-7b-instruct
  nomadgs history Qwen2.5-7B-Instruct --format json
"""
)


def _named_job(connection: dict[str, Any], name: str) -> tuple[NomadAPI, JobStub]:
    """A client for the cluster, and the job NAME names (its ID, or a nomadgs model's name)."""
    from ..nomad.status import find_job
    from .cluster_cmds import _api

    api = _api(connection)
    return api, find_job(api, name)


def _force_option(verb: str) -> Callable[[F], F]:
    """`--force`: act on a job that nomadgs did not create, as `stop --force` does."""
    return click.option("--force", is_flag=True, help=f"{verb} a job that nomadgs did not create")


@command(
    "promote",
    short_help="promote the canaries of a model's deployment",
    help=PROMOTE_HELP,
    environment=NOMAD_ENV,
)
@click.argument("name", metavar="NAME")
@_force_option("promote")
@format_option()
@nomad_options
def promote(name: str, force: bool, fmt: str, **connection: Any) -> int:
    from ..nomad import versions

    api, job = _named_job(connection, name)
    promotion = versions.promote(api, job, force=force)
    if fmt == "json":
        say.emit_json({"ok": True, "exit_code": EXIT_OK, **promotion.to_json()})
        return EXIT_OK
    print(promotion.message)
    if promotion.promoted:
        print(f"  Nomad now replaces the other replicas; follow it with `nomadgs status {promotion.job_id}`")
    return EXIT_OK


@command(
    "revert",
    short_help="revert a model to an older job version and follow the rollout",
    help=REVERT_HELP,
    environment=NOMAD_ENV,
)
@click.argument("name", metavar="NAME")
@click.option(
    "--to",
    "to",
    type=click.IntRange(min=0),
    metavar="VERSION",
    help="the job version to revert to (default: the newest stable one older than the current)",
)
@click.option("--timeout", default="2h", metavar="DURATION", help="give up watching after this (default 2h)")
@click.option("--detach", is_flag=True, help="return once the revert is registered")
@_force_option("revert")
@format_option()
@nomad_options
def revert(name: str, to: int | None, timeout: str, detach: bool, force: bool, fmt: str, **connection: Any) -> int:
    from ..nomad import runner, versions
    from .cluster_cmds import _print_outcome
    from .progress_view import view_for

    seconds = duration_seconds(timeout, "--timeout")
    api, job = _named_job(connection, name)
    api.deadline = time.monotonic() + seconds
    plan = versions.plan_revert(api, job, to, force=force)
    registration, target = versions.revert(api, plan), plan.target
    job_id = job.ID
    if fmt == "text":
        new = registration.version
        say.info(f"{job_id}: reverted from version {job.Version} to {target.Version}, as version {new}")
    base = {"reverted_from": job.Version, "reverted_to": target.Version}
    click.get_current_context().meta[PARTIAL_RESULT] = base
    if detach or not registration.eval_id:
        document = runner.result_document(registration, None, "registered", EXIT_OK)
        if fmt == "json":
            say.emit_json({"ok": True, "exit_code": EXIT_OK, **base, **document})
        else:
            print(f"{job_id}: version {registration.version} registered; follow it with `nomadgs status {job_id}`")
        return EXIT_OK
    view = view_for(f"{registration.compiled.model} (job {job_id} v{registration.version})")
    try:
        result = runner.follow(api, registration, reporter=view, timeout=seconds)
    except KeyboardInterrupt as interrupted:
        say.info(f"\nstopped watching; the job keeps running. Resume with: nomadgs status {job_id}")
        return exit_code_for(interrupted)
    status, code = runner.outcome(result)
    if fmt == "json":
        document = runner.result_document(registration, result, status, code)
        say.emit_json({"ok": code == EXIT_OK, "exit_code": code, **base, **document})
    else:
        _print_outcome(registration, result)
    return code


@command(
    "history",
    short_help="list a model's job versions and what changed between them",
    help=HISTORY_HELP,
    environment=NOMAD_ENV,
)
@click.argument("name", metavar="NAME")
@format_option()
@nomad_options
def history(name: str, fmt: str, **connection: Any) -> int:
    from ..contract.metadata import model_name
    from ..nomad import versions

    api, job = _named_job(connection, name)
    entries = versions.history(api, job)
    if fmt == "json":
        say.emit_json(
            {
                "job": job.ID,
                "model": model_name(job.Meta),
                "current_version": job.Version,
                "versions": [e.to_json() for e in entries],
            }
        )
        return EXIT_OK
    print(versions.format_history(entries))
    return EXIT_OK
