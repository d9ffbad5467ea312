"""`nomadgs submit`, `plan`, `status`, `logs`, `stop`: the commands that talk to a Nomad cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    InputError,
    NomadgsError,
    Problem,
)
from . import output
from .connection import NOMAD_ENV_HELP, add_nomad_options, nomad_settings
from .render_cmds import add_input_options

if TYPE_CHECKING:
    from ..compile.build import Compiled
    from ..nomad.client import NomadAPI
    from ..nomad.runner import Registration
    from ..nomad.watcher import WatchResult

SUBMIT_HELP = (
    """\
Render each deployment, validate it with the server, register it with check-and-set (EnforceIndex,
so a concurrent change is detected, never overwritten), then follow the rollout until every replica
answers its health check, or explain why it cannot.

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

"""
    + NOMAD_ENV_HELP
)


def register(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    submit = sub.add_parser(
        "submit",
        help="register deployments on Nomad and wait until the models answer their health checks",
        description=SUBMIT_HELP,
        formatter_class=formatter,
    )
    submit.add_argument("deployments", metavar="DEPLOYMENT", nargs="+", help="deployment YAML file(s)")
    add_input_options(submit)
    submit.add_argument("--timeout", default="2h", metavar="DURATION", help="give up watching after this (default 2h)")
    submit.add_argument("--detach", action="store_true", help="return once the job is registered")
    submit.add_argument(
        "--wait-for-capacity",
        action="store_true",
        help="when no node fits yet, wait for one (autoscaling) instead of failing with exit 3",
    )
    submit.add_argument("--force", action="store_true", help="take over a job that nomadgs did not create")
    submit.add_argument("--output", choices=("text", "json"), default="text", help="result format on stdout")
    add_nomad_options(submit)
    submit.set_defaults(handler=cmd_submit)

    plan = sub.add_parser(
        "plan",
        help="show what submitting a deployment would change (exit 0: no changes, 1: changes, 255: error)",
        description="Dry-run the scheduler for a deployment. Exit codes as `nomad job plan`: "
        "0 no changes, 1 changes, 255 error.\n\n" + NOMAD_ENV_HELP,
        formatter_class=formatter,
    )
    plan.add_argument("deployment", metavar="DEPLOYMENT")
    add_input_options(plan)
    plan.add_argument("--output", choices=("text", "json"), default="text")
    add_nomad_options(plan)
    plan.set_defaults(handler=cmd_plan)

    status = sub.add_parser(
        "status",
        help="list deployed models, or show one in detail",
        description=NOMAD_ENV_HELP,
        formatter_class=formatter,
    )
    status.add_argument("name", metavar="NAME", nargs="?", help="job ID or model name")
    status.add_argument("--output", choices=("text", "json"), default="text")
    add_nomad_options(status)
    status.set_defaults(handler=cmd_status)

    logs = sub.add_parser("logs", help="print or follow a model server's log", formatter_class=formatter)
    logs.add_argument("name", metavar="NAME", help="job ID or model name")
    logs.add_argument("--stderr", action="store_true", help="stderr instead of stdout")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    logs.add_argument("--replica", type=int, metavar="N", help="replica number (default: the first running one)")
    logs.add_argument(
        "--task", metavar="TASK", help="task (default: the model server; download-model for the download)"
    )
    logs.add_argument("--tail", type=int, default=100, metavar="LINES", help="lines to print first (default 100)")
    add_nomad_options(logs)
    logs.set_defaults(handler=cmd_logs)

    stop = sub.add_parser("stop", help="stop a deployed model", formatter_class=formatter)
    stop.add_argument("name", metavar="NAME", help="job ID or model name")
    stop.add_argument("--purge", action="store_true", help="also remove the job from Nomad's state")
    stop.add_argument("--force", action="store_true", help="stop a job that nomadgs did not create")
    add_nomad_options(stop)
    stop.set_defaults(handler=cmd_stop)


# --- submit -------------------------------------------------------------------------------------------


class _Notes:
    """Runner notes on stderr."""

    def info(self, message: str) -> None:
        output.info(message)

    def warning(self, message: str) -> None:
        output.warning(message)


def _timeout(text: str) -> float:
    from ..durations import SECOND, parse_duration

    try:
        return parse_duration(text) / SECOND
    except ValueError as exc:
        raise InputError(Problem(str(exc), field="--timeout")) from None


def _api(args: argparse.Namespace, compiled: Compiled | None = None) -> NomadAPI:
    """A client for the cluster; for a deployment, scoped to the namespace and region its job names."""
    from ..nomad.client import NomadAPI
    from ..nomad.runner import scoped_settings

    settings = nomad_settings(args)
    return NomadAPI(scoped_settings(settings, compiled) if compiled is not None else settings)


def _print_outcome(registration: Registration, result: WatchResult) -> None:
    a = result.assessment
    compiled = registration.compiled
    name = compiled.source.spec.name
    if a.phase == "succeeded":
        print(f"{name}: {a.headline} after {result.elapsed:.0f}s (job {compiled.job_id})")
        for url in result.endpoints:
            print(f"  OpenAI base URL: {url}")
        return
    if result.timed_out:
        output.error(f"{name}: timed out while {a.phase}: {a.headline}")
    else:
        output.error(f"{name}: {a.headline}")
    for line in a.details:
        output.info(f"  {line}")
    for failure in a.failures[:3]:
        if failure.hint and failure.hint not in a.details:
            output.info(f"  hint: {failure.hint}")
        for event in failure.events[-5:]:
            output.info(f"  event: {event.Type}: {event.text}")
    if a.rollback_to is not None:
        output.info(f"  Nomad is rolling back to job version {a.rollback_to} (auto-revert)")
    for label, text in result.logs.items():
        output.info(f"  last lines of {label} stderr:")
        for line in text.splitlines():
            output.info(f"    | {line}")
    if result.timed_out:
        output.info(f"  the job keeps running; follow it with `nomadgs status {compiled.job_id}`")
    elif a.phase == "placement-failed":
        output.info(f"  `nomadgs stop {compiled.job_id}` removes it from the queue")


def cmd_submit(args: argparse.Namespace) -> int:
    from ..nomad import runner
    from .progress_view import view_for
    from .render_cmds import compile_all

    timeout = _timeout(args.timeout)
    compiled_all = compile_all([Path(p) for p in args.deployments], args.backends, check=True)
    apis = [_api(args, compiled) for compiled in compiled_all]  # every namespace conflict before any submit
    results: list[dict[str, Any]] = []
    worst = EXIT_OK
    for compiled, api in zip(compiled_all, apis, strict=True):
        job_id = compiled.job_id
        registration = runner.submit(api, compiled, force=args.force, notes=_Notes())
        if args.detach:
            results.append(runner.result_document(registration, None, "registered", EXIT_OK))
            if args.output == "text":
                print(f"{job_id}: registered; follow it with `nomadgs status {job_id}`")
            continue
        view = view_for(f"{compiled.source.spec.name} (job {job_id} v{registration.version})")
        try:
            result = runner.follow(
                api, registration, reporter=view, timeout=timeout, wait_for_capacity=args.wait_for_capacity
            )
        except KeyboardInterrupt:
            output.info(f"\nstopped watching; the job keeps running. Resume with: nomadgs status {job_id}")
            if args.output == "json":
                results.append(runner.result_document(registration, None, "interrupted", EXIT_INTERRUPTED))
                output.emit_json({"ok": False, "exit_code": EXIT_INTERRUPTED, "results": results})
            return EXIT_INTERRUPTED
        status, code = runner.outcome(result)
        results.append(runner.result_document(registration, result, status, code))
        if args.output == "text":
            _print_outcome(registration, result)
        worst = max(worst, code)
    if args.output == "json":
        output.emit_json({"ok": worst == EXIT_OK, "exit_code": worst, "results": results})
    return worst


# --- plan ---------------------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    from ..nomad import runner
    from .render_cmds import compile_all

    try:
        (compiled,) = compile_all([Path(args.deployment)], args.backends, check=True)
        summary = runner.plan(_api(args, compiled), compiled)
    except NomadgsError as exc:
        output.report(exc)
        return runner.PLAN_ERROR
    if args.output == "json":
        output.emit_json(summary.to_json())
        return summary.exit_code
    what = {"Added": "new job", "Edited": "changes", "Deleted": "removal", "None": "no changes"}.get(
        summary.diff, summary.diff
    )
    print(f"job {summary.job_id}: {what}")
    for group, counts in summary.updates.items():
        parts = [f"{k.lower()} {v}" for k, v in counts.items() if v]
        print(f"  group {group}: {', '.join(parts) or 'nothing to do'}")
        if counts.get("DestructiveUpdate"):
            print("    (destructive: replicas are replaced one at a time; models reload)")
    for line in summary.placement:
        print(f"  placement: {line}")
    if summary.warnings:
        output.warning(summary.warnings.strip())
    print(f"submit with check-and-set index {summary.job_modify_index}: nomadgs submit {args.deployment}")
    return summary.exit_code


# --- status, logs, stop -------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    import asyncio

    from ..nomad.status import all_model_statuses, find_job, model_status

    api = _api(args)
    if args.name:
        view = asyncio.run(model_status(api, find_job(api, args.name)))
        if args.output == "json":
            output.emit_json(view.to_json())
            return EXIT_OK
        print(f"model      {view.model}  ({view.backend} {view.backend_version})")
        print(f"job        {view.job} version {view.job_version}, {view.job_status}")
        if view.deployment:
            d = view.deployment
            print(f"deployment {d.ID[:8]} {d.Status}: {d.StatusDescription}")
        print(f"replicas   {view.healthy}/{view.desired} healthy")
        for r in view.replicas:
            print(f"  replica {r.index}  {r.state:<11} {r.detail}" + (f" on {r.node}" if r.node else ""))
        for url in view.endpoints:
            print(f"endpoint   {url}")
        return EXIT_OK

    views = asyncio.run(all_model_statuses(api))
    if args.output == "json":
        output.emit_json([v.to_json() for v in views])
        return EXIT_OK
    if not views:
        print("no models deployed by nomadgs in this namespace")
        return EXIT_OK
    print(f"{'MODEL':<30} {'JOB':<28} {'BACKEND':<20} {'VER':>4} {'HEALTHY':>8}  ENDPOINT")
    for v in views:
        backend = f"{v.backend} {v.backend_version}".strip()
        endpoint = v.endpoints[0] if v.endpoints else "-"
        print(
            f"{v.model[:30]:<30} {v.job[:28]:<28} {backend[:20]:<20} {v.job_version:>4} "
            f"{v.healthy:>3}/{v.desired:<4}  {endpoint}"
        )
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    import asyncio

    from ..nomad import logs
    from ..nomad.status import find_job

    api = _api(args)
    job = find_job(api, args.name)
    stream = "stderr" if args.stderr else "stdout"

    async def run() -> int:
        async with api.async_client() as http:
            source = await logs.log_source(api, http, job, replica=args.replica, task=args.task)
            if not args.follow:
                sys.stdout.write(await logs.tail(api, http, source, stream=stream, lines=args.tail))
                return EXIT_OK
            async for piece in logs.follow(api, http, source, stream=stream, lines=args.tail):
                sys.stdout.write(piece)
                sys.stdout.flush()
        return EXIT_OK

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    from ..nomad import runner
    from ..nomad.status import find_job

    api = _api(args)
    job = find_job(api, args.name)
    eval_id = runner.stop(api, job, purge=args.purge, force=args.force)
    what = "stopped and purged" if args.purge else "stopped"
    print(f"{job.ID}: {what} (evaluation {eval_id[:8] or '-'})")
    return EXIT_OK
