"""`nomadgs submit`, `plan`, `status`, `logs`, `stop`: the commands that talk to a Nomad cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..compile.metadata import DOWNLOAD_TASK, is_managed, model_labels, model_name
from ..errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
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


def _timeout(text: str) -> float:
    from ..durations import SECOND, parse_duration

    try:
        return parse_duration(text) / SECOND
    except ValueError as exc:
        raise InputError(Problem(str(exc), field="--timeout")) from None


def _api(args: argparse.Namespace, compiled: Compiled | None = None) -> NomadAPI:
    """A client for the cluster; for a deployment, scoped to the namespace and region its job names."""
    from dataclasses import replace

    from ..nomad.client import NomadAPI

    settings = nomad_settings(args)
    if compiled is not None:
        for key, env in (("namespace", "NOMAD_NAMESPACE"), ("region", "NOMAD_REGION")):
            wanted = str(compiled.job.get(key.capitalize()) or "")
            current = getattr(settings, key)
            if wanted and current and wanted != current:
                raise InputError(
                    Problem(
                        f"the deployment's nomad.{key} is '{wanted}' but {env} (or --{key}) says '{current}'",
                        compiled.source.filename,
                        field=f"nomad.{key}",
                        hint=f"unset {env}, or make them agree",
                    )
                )
            if wanted and not current:
                settings = (
                    replace(settings, namespace=wanted) if key == "namespace" else replace(settings, region=wanted)
                )
    return NomadAPI(settings)


def _check_ownership(api: NomadAPI, job_id: str, *, force: bool) -> Any:
    existing = api.job(job_id)
    if existing is not None and not existing.Stop and not is_managed(existing.Meta) and not force:
        raise InputError(
            Problem(
                f"job '{job_id}' exists on Nomad but was not created by nomadgs",
                hint="use --force to replace it, or set nomad.job_id to another name",
            )
        )
    return existing


def _server_validate(api: NomadAPI, compiled: Compiled) -> None:
    result = api.validate(compiled.job)
    if result.Warnings:
        output.warning(f"{compiled.source.filename}: Nomad: {result.Warnings.strip()}")
    errors = result.ValidationErrors or ([result.Error] if result.Error else [])
    if errors:
        raise InputError(
            [Problem(f"Nomad refused the job: {e}", compiled.source.filename, field="job") for e in errors]
        )


def _register(api: NomadAPI, compiled: Compiled, plan_index: int) -> str:
    """Register with EnforceIndex and return the evaluation ID; a lost answer never registers twice.

    After a dropped connection or a 5xx the request is sent again with the same index: if the first one
    did arrive, Nomad refuses the second as a conflict, and the plan then shows no difference from ours.
    """
    import asyncio

    from ..nomad.client import IndexConflict, TransientError, sleep_backoff

    job_id = compiled.job_id
    answer_lost = False
    for attempt in range(4):
        try:
            return api.register(compiled.job, modify_index=plan_index).EvalID
        except TransientError as exc:
            if attempt == 3:
                raise
            answer_lost = True
            output.warning(f"registering {job_id}: {exc}; sending it again")
            asyncio.run(sleep_backoff(attempt))
        except IndexConflict:
            plan = api.plan(compiled.job) if answer_lost else None
            if plan is not None and plan.Diff is not None and plan.Diff.Type == "None":
                return api.latest_evaluation(job_id)  # our earlier request arrived; only its answer was lost
            raise NomadgsError(
                f"job '{job_id}' was changed by someone else since nomadgs planned it "
                f"(expected modify index {plan_index}); nothing was registered. "
                "Check `nomadgs status`, then run submit again to apply this version over theirs."
            ) from None
    raise AssertionError("unreachable")


def _result_json(
    compiled: Compiled, version: int | None, eval_id: str, result: WatchResult | None, status: str, code: int
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "deployment_file": compiled.source.filename,
        "model": compiled.resolved.model_name,
        "job": compiled.job_id,
        "version": version,
        "eval_id": eval_id or None,
        "status": status,
        "exit_code": code,
    }
    if result is not None:
        a = result.assessment
        data.update(
            phase=a.phase,
            message=a.headline,
            details=list(a.details),
            replicas=[
                {"index": r.index, "state": r.state, "detail": r.detail, "alloc_id": r.alloc_id, "node": r.node}
                for r in a.replicas
            ],
            failures=[
                {"replica": f.replica, "task": f.task, "kind": f.kind, "summary": f.summary, "hint": f.hint}
                for f in a.failures
            ],
            rollback_to_version=a.rollback_to,
            logs=result.logs,
            endpoints=result.endpoints,
            elapsed_seconds=round(result.elapsed, 3),
        )
    return data


def _print_outcome(compiled: Compiled, result: WatchResult) -> None:
    a = result.assessment
    name = compiled.resolved.model_name
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
    import asyncio

    from ..compile.request import group_request
    from ..nomad.watcher import watch
    from .progress_view import view_for
    from .render_cmds import compile_all

    timeout = _timeout(args.timeout)
    compiled_all = compile_all([Path(p) for p in args.deployments], args.backends, check=True)
    apis = [_api(args, compiled) for compiled in compiled_all]  # every namespace conflict before any submit
    results: list[dict[str, Any]] = []
    worst = EXIT_OK
    for compiled, api in zip(compiled_all, apis, strict=True):
        job_id = compiled.job_id
        _server_validate(api, compiled)
        existing = _check_ownership(api, job_id, force=args.force)
        plan = api.plan(compiled.job)
        unchanged = existing is not None and not existing.Stop and plan.Diff is not None and plan.Diff.Type == "None"
        if unchanged:
            eval_id, version = "", existing.Version
            output.info(f"{job_id}: no changes; checking the running version {version}")
        else:
            eval_id = _register(api, compiled, plan.JobModifyIndex)
            current = api.job(job_id)
            version = current.Version if current else None
            output.info(f"{job_id}: registered version {version} (evaluation {eval_id[:8] or '-'})")
        if args.detach:
            results.append(_result_json(compiled, version, eval_id, None, "registered", EXIT_OK))
            if args.output == "text":
                print(f"{job_id}: registered; follow it with `nomadgs status {job_id}`")
            continue
        request = group_request(dict(compiled.job))
        view = view_for(f"{compiled.resolved.model_name} (job {job_id} v{version})")
        try:
            result = asyncio.run(
                watch(
                    api,
                    job_id=job_id,
                    version=version,
                    eval_id=eval_id or None,
                    request=request,
                    reporter=view,
                    timeout=timeout,
                    wait_for_capacity=args.wait_for_capacity,
                )
            )
        except KeyboardInterrupt:
            output.info(f"\nstopped watching; the job keeps running. Resume with: nomadgs status {job_id}")
            if args.output == "json":
                results.append(_result_json(compiled, version, eval_id, None, "interrupted", EXIT_INTERRUPTED))
                output.emit_json({"ok": False, "exit_code": EXIT_INTERRUPTED, "results": results})
            return EXIT_INTERRUPTED
        code = EXIT_TIMEOUT if result.timed_out else (result.assessment.exit_code or EXIT_OK)
        status = "timeout" if result.timed_out else result.assessment.phase
        results.append(_result_json(compiled, version, eval_id, result, status, code))
        if args.output == "text":
            _print_outcome(compiled, result)
        worst = max(worst, code)
    if args.output == "json":
        output.emit_json({"ok": worst == EXIT_OK, "exit_code": worst, "results": results})
    return worst


# --- plan ---------------------------------------------------------------------------------------------

PLAN_NO_CHANGES, PLAN_CHANGES, PLAN_ERROR = 0, 1, 255


def cmd_plan(args: argparse.Namespace) -> int:
    from ..compile.request import group_request
    from ..nomad.explain import placement_failure
    from .render_cmds import compile_all

    try:
        (compiled,) = compile_all([Path(args.deployment)], args.backends, check=True)
        api = _api(args, compiled)
        plan = api.plan(compiled.job)
    except NomadgsError as exc:
        output.report(exc)
        return PLAN_ERROR
    diff = plan.Diff.Type if plan.Diff else "Unknown"
    request = group_request(dict(compiled.job))
    explanation = [line for metric in plan.FailedTGAllocs.values() for line in placement_failure(request, metric)]
    updates = {g: u.model_dump() for g, u in (plan.Annotations.DesiredTGUpdates if plan.Annotations else {}).items()}
    code = PLAN_NO_CHANGES if diff == "None" and plan.changes == 0 else PLAN_CHANGES
    if args.output == "json":
        output.emit_json(
            {
                "job": compiled.job_id,
                "diff": diff,
                "changes": plan.changes,
                "job_modify_index": plan.JobModifyIndex,
                "updates": updates,
                "placement": explanation,
                "warnings": plan.Warnings,
                "exit_code": code,
            }
        )
        return code
    what = {"Added": "new job", "Edited": "changes", "Deleted": "removal", "None": "no changes"}.get(diff, diff)
    print(f"job {compiled.job_id}: {what}")
    for group, counts in updates.items():
        parts = [f"{k.lower()} {v}" for k, v in counts.items() if v]
        print(f"  group {group}: {', '.join(parts) or 'nothing to do'}")
        if counts.get("DestructiveUpdate"):
            print("    (destructive: replicas are replaced one at a time; models reload)")
    for line in explanation:
        print(f"  placement: {line}")
    if plan.Warnings:
        output.warning(plan.Warnings.strip())
    print(f"submit with check-and-set index {plan.JobModifyIndex}: nomadgs submit {args.deployment}")
    return code


# --- status, logs, stop -------------------------------------------------------------------------------


def _managed(api: NomadAPI) -> list[Any]:
    return [j for j in api.jobs() if is_managed(j.Meta)]


def _find_job(api: NomadAPI, name: str) -> Any:
    job = api.job(name)
    if job is not None:
        return job
    managed = _managed(api)
    for candidate in managed:
        if (model_name(candidate.Meta) or "").lower() == name.lower():
            return api.job(candidate.ID)
    from ..errors import suggestion

    names = [j.ID for j in managed] + [model_name(j.Meta) or "" for j in managed]
    raise InputError(Problem(f"no job or model named '{name}'", hint=suggestion(name, names) or "see `nomadgs status`"))


async def _job_view(api: NomadAPI, job: Any) -> dict[str, Any]:
    """One job's deployment, replicas and endpoints, read without blocking."""
    import asyncio

    from ..compile.request import GroupRequest
    from ..nomad.responses import Evaluation
    from ..nomad.rollout import Snapshot, assess
    from ..nomad.watcher import running_endpoints

    async with api.async_client() as http:
        (allocs, _), (deployment, _) = await asyncio.gather(
            api.allocations(http, job.ID), api.latest_deployment(http, job.ID)
        )
        group = job.TaskGroups[0] if job.TaskGroups else {}
        request = GroupRequest(group=group.get("Name", ""), count=int(group.get("Count", 0) or 0))
        snapshot = Snapshot(job.ID, job.Version, Evaluation(ID="", Status="complete"), None, deployment, tuple(allocs))
        assessment = assess(snapshot, request)
        endpoints = await running_endpoints(api, http, assessment)
    labels = model_labels(job.Name, (), job.Meta)
    return {
        "job": job.ID,
        "model": labels.model,
        "backend": labels.backend or "",
        "backend_version": labels.version or "",
        "job_version": job.Version,
        "job_status": "stopped" if job.Stop else job.Status,
        "deployment": {"id": deployment.ID, "status": deployment.Status, "description": deployment.StatusDescription}
        if deployment
        else None,
        "healthy": assessment.healthy,
        "desired": request.count,
        "replicas": [
            {"index": r.index, "state": r.state, "detail": r.detail, "node": r.node} for r in assessment.replicas
        ],
        "endpoints": endpoints,
    }


def cmd_status(args: argparse.Namespace) -> int:
    import asyncio

    api = _api(args)
    if args.name:
        job = _find_job(api, args.name)
        view = asyncio.run(_job_view(api, job))
        if args.output == "json":
            output.emit_json(view)
            return EXIT_OK
        print(f"model      {view['model']}  ({view['backend']} {view['backend_version']})")
        print(f"job        {view['job']} version {view['job_version']}, {view['job_status']}")
        if view["deployment"]:
            d = view["deployment"]
            print(f"deployment {d['id'][:8]} {d['status']}: {d['description']}")
        print(f"replicas   {view['healthy']}/{view['desired']} healthy")
        for r in view["replicas"]:
            print(f"  replica {r['index']}  {r['state']:<11} {r['detail']}" + (f" on {r['node']}" if r["node"] else ""))
        for url in view["endpoints"]:
            print(f"endpoint   {url}")
        return EXIT_OK

    async def all_views() -> list[dict[str, Any]]:
        jobs = [api.job(j.ID) for j in _managed(api)]
        return list(await asyncio.gather(*(_job_view(api, j) for j in jobs if j is not None)))

    views = asyncio.run(all_views())
    if args.output == "json":
        output.emit_json(views)
        return EXIT_OK
    if not views:
        print("no models deployed by nomadgs in this namespace")
        return EXIT_OK
    print(f"{'MODEL':<30} {'JOB':<28} {'BACKEND':<20} {'VER':>4} {'HEALTHY':>8}  ENDPOINT")
    for v in views:
        backend = f"{v['backend']} {v['backend_version']}".strip()
        endpoint = v["endpoints"][0] if v["endpoints"] else "-"
        print(
            f"{v['model'][:30]:<30} {v['job'][:28]:<28} {backend[:20]:<20} {v['job_version']:>4} "
            f"{v['healthy']:>3}/{v['desired']:<4}  {endpoint}"
        )
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib

    api = _api(args)
    job = _find_job(api, args.name)

    async def run() -> int:
        async with api.async_client() as http:
            allocs, _ = await api.allocations(http, job.ID)
            live = [a for a in allocs if a.DesiredStatus == "run"] or allocs
            if args.replica is not None:
                live = [a for a in live if a.index == args.replica]
            live.sort(key=lambda a: (a.ClientStatus != "running", -a.CreateIndex))
            if not live:
                raise InputError(
                    Problem(
                        f"job '{job.ID}' has no allocation"
                        + (f" for replica {args.replica}" if args.replica is not None else "")
                    )
                )
            alloc = live[0]
            task = args.task or next((t for t in alloc.TaskStates if t != DOWNLOAD_TASK), None)
            if task is None:
                group = job.TaskGroups[0] if job.TaskGroups else {}
                task = next((t["Name"] for t in group.get("Tasks", []) if not t.get("Lifecycle")), "")
            stream = "stderr" if args.stderr else "stdout"
            if not args.follow:
                text = await api.log_tail(http, alloc.ID, task, stream=stream, tail_bytes=256 * 1024)
                sys.stdout.write("\n".join(text.splitlines()[-args.tail :]) + ("\n" if text else ""))
                return EXIT_OK
            # One stream from the last 256 KiB on: a separate read of the tail would lose or repeat the lines
            # written between the two requests. What arrives in the first moment is the backlog: only its last
            # --tail lines are shown. A reader task feeds a queue, so waiting with a timeout never cancels the
            # stream itself.
            queue: asyncio.Queue[str | None] = asyncio.Queue()

            async def pump() -> None:
                try:
                    async for chunk in api.follow_logs(
                        http, alloc.ID, task, stream=stream, origin="end", offset=256 * 1024
                    ):
                        await queue.put(chunk)
                finally:
                    await queue.put(None)

            reader = asyncio.create_task(pump())
            backlog: list[str] = []
            with contextlib.suppress(TimeoutError):
                while (chunk := await asyncio.wait_for(queue.get(), timeout=0.3)) is not None:
                    backlog.append(chunk)
            sys.stdout.write("".join("".join(backlog).splitlines(keepends=True)[-args.tail :]))
            sys.stdout.flush()
            while not reader.done() or not queue.empty():
                chunk = await queue.get()
                if chunk is None:
                    break
                sys.stdout.write(chunk)
                sys.stdout.flush()
            await reader  # a broken stream raises here, as a NomadError
        return EXIT_OK

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    api = _api(args)
    job = _find_job(api, args.name)
    if not is_managed(job.Meta) and not args.force:
        raise InputError(Problem(f"job '{job.ID}' was not created by nomadgs", hint="use --force to stop it anyway"))
    result = api.stop(job.ID, purge=args.purge)
    what = "stopped and purged" if args.purge else "stopped"
    print(f"{job.ID}: {what} (evaluation {str(result.get('EvalID', ''))[:8] or '-'})")
    return EXIT_OK
