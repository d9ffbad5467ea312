"""Putting compiled jobs on Nomad: scoping, ownership, server validation, plan, check-and-set register, stop.

What `nomadgs submit`, `plan` and `stop` do, and the Ansible modules with them. The functions call the Nomad
client and return typed results; printing is the caller's business. Progress notes go to a `Notes` sink
(the CLI prints them, the Ansible module collects them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ..contract import metadata
from ..contract.deploymentjob import DeploymentJob
from ..errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_PLACEMENT,
    EXIT_TIMEOUT,
    PLAN_CHANGES,
    PLAN_NO_CHANGES,
    InputError,
    NomadgsError,
    Problem,
)
from ..settings import NomadSettings
from .client import IndexConflict, JobRefused, NomadAPI, TransientError, multierror_lines
from .explain import placement_failure, upgrade_needs
from .feed import Feed
from .responses import JobStub, PlanResponse, RegisterResponse
from .rollout import Rollback, Verdict
from .watcher import Reporter, WatchResult, watch

REGISTER_ATTEMPTS = 4


class Notes(Protocol):
    """Where progress notes and warnings go."""

    def info(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...


class AfterRegistration(NomadgsError):
    """A failure after the job was registered: the job stays on Nomad, and the message says how to follow it.
    Its exit code is the cause's (5 when Nomad became unreachable, 1 otherwise: see errors.EXIT_CODES)."""

    def __init__(self, job_id: str, cause: NomadgsError, doing: str) -> None:
        super().__init__(
            f"{job_id} is registered on Nomad, but {doing} failed: {cause}. "
            f"It keeps rolling out; follow it with `nomadgs status {job_id}`"
        )
        self.cause = cause


def is_managed(job: JobStub) -> bool:
    """Whether nomadgs created this job (its meta says so)."""
    return metadata.is_managed(job.Meta)


def is_foreign(job: JobStub | None) -> bool:
    """Whether a job stands on Nomad (not stopped) that nomadgs did not create: submit replaces it only with force."""
    return job is not None and not job.Stop and not is_managed(job)


def scoped_settings(settings: NomadSettings, compiled: DeploymentJob) -> NomadSettings:
    """The settings scoped to the namespace and region the deployment's job names.

    A deployment that names a namespace (or region) other than NOMAD_NAMESPACE (or the flag) is refused:
    one of the two is a mistake, and guessing which could register the model in the wrong place.
    """
    for key, env in (("namespace", "NOMAD_NAMESPACE"), ("region", "NOMAD_REGION")):
        wanted = str(compiled.job.get(key.capitalize()) or "")
        current = getattr(settings, key)
        if wanted and current and wanted != current:
            raise InputError(
                Problem(
                    f"the deployment's nomad.{key} is '{wanted}' but {env} (or --{key}) says '{current}'",
                    compiled.file,
                    field=f"nomad.{key}",
                    hint=f"unset {env}, or make them agree",
                )
            )
        if wanted and not current:
            settings = replace(settings, namespace=wanted) if key == "namespace" else replace(settings, region=wanted)
    return settings


def check_ownership(api: NomadAPI, job_id: str, *, force: bool) -> JobStub | None:
    """The job as it stands on Nomad (None when absent); InputError when it is someone else's and not `force`."""
    existing = api.job(job_id)
    if is_foreign(existing) and not force:
        raise InputError(
            Problem(
                f"job '{job_id}' exists on Nomad but was not created by nomadgs",
                hint="use --force to replace it, or set nomad.job_id to another name",
            )
        )
    return existing


def _refused(compiled: DeploymentJob, problems: list[str]) -> InputError:
    """Nomad's reasons for refusing the job, one problem each, located at the deployment file."""
    return InputError([Problem(f"Nomad refused the job: {p}", compiled.file, field="job") for p in problems])


@contextlib.contextmanager
def _refusals_as_input(compiled: DeploymentJob) -> Iterator[None]:
    """A plan or register that Nomad refuses as invalid is bad input (exit 2), said as validation says it."""
    try:
        yield
    except JobRefused as exc:
        raise _refused(compiled, list(exc.problems)) from None


def server_validate(api: NomadAPI, compiled: DeploymentJob, notes: Notes) -> None:
    """Nomad's own validation of the job (`/v1/validate/job`); InputError with every reason it gives."""
    result = api.validate(compiled.job)
    _warn(compiled, result.Warnings, notes)
    errors = result.ValidationErrors or ([result.Error] if result.Error else [])
    if errors:
        # An error of a task group or task nests its own list: one problem a line, after its parents' words.
        raise _refused(compiled, [line for e in errors for line in multierror_lines(e) or [e.strip()]])


def _warn(compiled: DeploymentJob, warnings: str, notes: Notes) -> None:
    if warnings:
        notes.warning(f"{compiled.file}: Nomad: {warnings.strip()}")


def checked_plan(api: NomadAPI, compiled: DeploymentJob, notes: Notes) -> PlanResponse:
    """Nomad's plan for the job, which is also its validation: the plan runs the admission controllers that
    `/v1/validate/job` runs, mutators and validators, and answers their warnings (nomad/job_endpoint.go Plan:
    `j.admissionControllers`; Validate: `admissionMutators`, `admissionValidators`). One request where two were
    made; only a job Nomad refuses is sent to `/v1/validate/job`, which lists the reasons one by one."""
    try:
        response = api.plan(compiled.job)
    except JobRefused as exc:
        server_validate(api, compiled, notes)  # raises with the reasons listed, when validation gives them
        raise _refused(compiled, list(exc.problems)) from None
    _warn(compiled, response.Warnings, notes)
    return response


def register(api: NomadAPI, compiled: DeploymentJob, plan_index: int, notes: Notes) -> RegisterResponse:
    """Register with EnforceIndex and return Nomad's answer; a lost answer never registers twice.

    After a dropped connection or a 5xx the request is sent again with the same index: if the first one
    did arrive, Nomad refuses the second as a conflict, and the plan then shows no difference from ours.
    The resends keep to the client's retry limits (`NomadAPI.pause_before_retry`: --timeout among them).
    """
    job_id = compiled.job_id
    answer_lost = False
    started = time.monotonic()
    for attempt in range(REGISTER_ATTEMPTS):
        try:
            with _refusals_as_input(compiled):
                preserve = compiled.counts_follow_load
                return api.register(compiled.job, modify_index=plan_index, preserve_counts=preserve)
        except TransientError as exc:
            if attempt == REGISTER_ATTEMPTS - 1:
                raise
            pause = api.pause_before_retry(exc, attempt, started, announce=False)
            answer_lost = True
            notes.warning(f"registering {job_id}: {exc}; sending it again")
            time.sleep(pause)
        except IndexConflict:
            with _refusals_as_input(compiled):
                plan = api.plan(compiled.job) if answer_lost else None
            if plan is not None and plan.Diff is not None and plan.Diff.Type == "None":
                # Our earlier request arrived; only its answer was lost: its evaluation, and no indexes to trust.
                return RegisterResponse(EvalID=api.latest_evaluation(job_id))
            if not plan_index:
                raise NomadgsError(
                    f"job '{job_id}' was registered by someone else while nomadgs checked the deployments; "
                    "nothing was registered. Check `nomadgs status`, then run submit again."
                ) from None
            raise NomadgsError(
                f"job '{job_id}' was changed by someone else since nomadgs planned it "
                f"(expected modify index {plan_index}); nothing was registered. "
                "Check `nomadgs status`, then run submit again to apply this version over theirs."
            ) from None
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Registration:
    """A compiled job put on Nomad (or found unchanged there)."""

    compiled: DeploymentJob
    version: int | None
    eval_id: str  # "" when nothing was registered because nothing changed
    plan: PlanResponse | None  # None: a new job of a fleet, validated only (`preview`)
    stable_version: int | None = None  # the job's version before, when it was stable: where an auto-revert goes
    earlier_versions: bool = True  # False: this registration made the job (nothing to roll back to)
    job_create_index: int = 0  # the job's CreateIndex as read back (0: not known)

    @property
    def changed(self) -> bool:
        return bool(self.eval_id) or self.plan is None or self.plan.Diff is None or self.plan.Diff.Type != "None"


@dataclass(frozen=True)
class Preview:
    """What a submit finds before it registers anything: the job on Nomad, and Nomad's plan for ours (None: no
    job was there to plan against, and ours was validated only)."""

    existing: JobStub | None
    plan: PlanResponse | None

    @property
    def index(self) -> int:
        """The JobModifyIndex the register's check-and-set holds the job to (0: there must be none)."""
        return self.plan.JobModifyIndex if self.plan is not None else 0

    @property
    def unchanged(self) -> bool:
        """The job runs on Nomad as it is compiled: a submit registers nothing."""
        e, diff = self.existing, self.plan.Diff if self.plan is not None else None
        return e is not None and not e.Stop and diff is not None and diff.Type == "None"


def preview(api: NomadAPI, compiled: DeploymentJob, *, force: bool, notes: Notes, absent: bool = False) -> Preview:
    """The first half of a submit, which changes nothing (a dry run stops here): check ownership, and plan (which
    validates with the server).

    `absent`: a listing has just shown no such job (a fleet lists its jobs at once). It is neither read nor
    planned, only validated: there is no job to diff against or to keep, and the register's check-and-set at
    index 0 refuses it if one has appeared since (job_endpoint.go Register, EnforceIndex: "job already exists").
    Nomad's plan runs the scheduler; its validation does not."""
    if absent:
        server_validate(api, compiled, notes)
        return Preview(None, None)
    existing = check_ownership(api, compiled.job_id, force=force)
    plan = checked_plan(api, compiled, notes)
    if plan.JobModifyIndex != _job_index(existing):
        # The job changed between the read and the plan: the register's check-and-set holds to the plan's
        # index, so the ownership check must see the job the plan saw.
        existing = check_ownership(api, compiled.job_id, force=force)
    return Preview(existing, plan)


def _job_index(job: JobStub | None) -> int:
    """The JobModifyIndex a plan reports for this job as read (0: no job; job_endpoint.go Plan)."""
    return job.JobModifyIndex if job is not None else 0


def submit(api: NomadAPI, compiled: DeploymentJob, *, force: bool, notes: Notes) -> Registration:
    """Validate with the server, check ownership, plan, and register unless nothing changed."""
    return apply(api, compiled, preview(api, compiled, force=force, notes=notes), notes)


def apply(api: NomadAPI, compiled: DeploymentJob, found: Preview, notes: Notes) -> Registration:
    """The second half of a submit: register with the plan's check-and-set index, unless nothing changed."""
    job_id = compiled.job_id
    plan = found.plan
    if found.unchanged and found.existing is not None:
        notes.info(f"{job_id}: no changes; checking the running version {found.existing.Version}")
        return Registration(
            compiled,
            found.existing.Version,
            "",
            plan,
            *_before(found.existing),
            job_create_index=found.existing.CreateIndex,
        )
    response = register(api, compiled, found.index, notes)
    eval_id = response.EvalID
    written = written_version(found, response)
    if written is None:
        try:
            current = api.job(job_id)
        except NomadgsError as exc:  # the client retried for a while already
            raise AfterRegistration(job_id, exc, "reading it back") from None
        written = (current.Version, current.CreateIndex) if current else None
    version, create_index = written if written else (None, 0)
    notes.info(f"{job_id}: registered version {version} (evaluation {eval_id[:8] or '-'})")
    return Registration(
        compiled,
        version,
        eval_id,
        plan,
        *_before(found.existing),
        job_create_index=create_index,
    )


def written_version(found: Preview, response: RegisterResponse) -> tuple[int, int] | None:
    """(version, CreateIndex) of the job a register wrote, known without reading it back; None when the answer
    does not pin them (the job is then read back).

    A register that writes the job answers the raft index of that write as both JobModifyIndex and
    EvalCreateIndex; one that finds the spec unchanged writes no version and answers the job's old ModifyIndex
    beside a later evaluation's index (nomad/job_endpoint.go Register). The check-and-set held the job at the
    preview's index (the plan's, or 0 where there was no job), so when that is the index of the job read
    before, the write made that job's version + 1 with its CreateIndex, and where no job was, version 0 created
    at the write's index (nomad/state/state_store.go upsertJobImpl; nomadgs never sends a Version, which
    api.Job.Canonicalize makes 0)."""
    index = response.JobModifyIndex
    if not response.EvalID or not index or index != response.EvalCreateIndex:
        return None
    existing = found.existing
    if found.index != _job_index(existing):
        return None
    return (existing.Version + 1, existing.CreateIndex) if existing is not None else (0, index)


def _before(existing: JobStub | None) -> tuple[int | None, bool]:
    """(the stable version an auto-revert would go back to, whether there are earlier versions), from the job
    as it stood before the register. A version that is not stable says nothing of which one is (the newest
    stable one may be any earlier version): None."""
    if existing is None:
        return None, False
    return (existing.Version if existing.Stable else None), True


async def watch_registration(
    api: NomadAPI,
    registration: Registration,
    *,
    reporter: Reporter,
    timeout: float | None,
    wait_for_capacity: bool = False,
    feed: Feed | None = None,
) -> WatchResult:
    """Watch the registered version until it is healthy, failed, or `timeout` seconds pass: the one watch of a
    registration, for a single one (`follow`) and for each member of a fleet (`fleet.run`, on its shared `feed`).

    The watch retries passing failures until `timeout`; any other failure (a revoked token, ...) is raised as
    AfterRegistration, which says the job stays registered and how to follow it."""
    job_id = registration.compiled.job_id
    try:
        return await watch(
            api,
            job_id=job_id,
            version=registration.version,
            eval_id=registration.eval_id or None,
            request=registration.compiled.request,
            reporter=reporter,
            timeout=timeout,
            wait_for_capacity=wait_for_capacity,
            stable_version=registration.stable_version,
            earlier_versions=registration.earlier_versions,
            job_create_index=registration.job_create_index,
            feed=feed,
        )
    except NomadgsError as exc:
        raise AfterRegistration(job_id, exc, "watching its rollout") from None


def follow(
    api: NomadAPI,
    registration: Registration,
    *,
    reporter: Reporter,
    timeout: float | None,
    wait_for_capacity: bool = False,
) -> WatchResult:
    """`watch_registration` of one registration, from synchronous code (revert, the Ansible modules)."""
    return asyncio.run(
        watch_registration(api, registration, reporter=reporter, timeout=timeout, wait_for_capacity=wait_for_capacity)
    )


def verdict_exit_code(verdict: Verdict | None) -> int | None:
    """The exit code of a rollout's verdict (`Assessment.verdict`); None while there is none."""
    codes: dict[Verdict, int] = {
        "succeeded": EXIT_OK,
        "failed": EXIT_FAILURE,  # a crash loop ended early too: Nomad keeps trying, but this version does not run
        "placement-failed": EXIT_PLACEMENT,
        "awaiting-promotion": EXIT_OK,  # healthy canaries serve beside the old version; a person promotes them
    }
    return codes[verdict] if verdict is not None else None


def outcome(result: WatchResult) -> tuple[str, int]:
    """(status word, exit code) of a finished watch."""
    if result.timed_out:
        return "timeout", EXIT_TIMEOUT
    return result.assessment.phase, verdict_exit_code(result.assessment.verdict) or EXIT_OK


def result_document(registration: Registration, result: WatchResult | None, status: str, code: int) -> dict[str, Any]:
    """One deployment's result as `submit --output json` and the Ansible module report it."""
    compiled = registration.compiled
    data: dict[str, Any] = {
        "deployment_file": compiled.file,
        "model": compiled.model,
        "job": compiled.job_id,
        "version": registration.version,
        "eval_id": registration.eval_id or None,
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
            nomad_continues=a.aftermath,
            rollback=_rollback_document(result.rollback),
            logs=result.logs,
            endpoints=result.endpoints,
            elapsed_seconds=round(result.elapsed, 3),
        )
    return data


def _rollback_document(rollback: Rollback | None) -> dict[str, Any] | None:
    if rollback is None:
        return None
    return {
        "to_version": rollback.to_version,
        "job_version": rollback.job_version,
        "status": rollback.status,
        "description": rollback.description,
        "healthy": rollback.healthy,
        "desired": rollback.desired,
        "message": rollback.summary,
    }


# --- plan ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanSummary:
    """What the scheduler's dry run says a submit would change."""

    job_id: str
    diff: str  # Added | Edited | Deleted | None
    changes: int
    job_modify_index: int
    updates: dict[str, dict[str, int]]  # group -> DesiredTGUpdates counts
    placement: list[str]  # plain-words placement failures
    warnings: str
    response: PlanResponse | None = field(default=None, compare=False, repr=False)  # Diff for `nomad.plandiff`
    foreign: bool = False  # the job exists on Nomad and nomadgs did not create it: submit needs --force
    upgrade: str = ""  # the upgrade strategy and what it needs (`explain.upgrade_needs`)

    @property
    def exit_code(self) -> int:
        return PLAN_NO_CHANGES if self.diff == "None" and self.changes == 0 else PLAN_CHANGES

    @property
    def job_diff(self) -> dict[str, Any] | None:
        """Nomad's field-level diff (`api.JobDiff`) as it answered it; `plandiff.format_job_diff` prints it."""
        if self.response is None or self.response.Diff is None:
            return None
        return self.response.Diff.model_dump()

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job_id,
            "diff": self.diff,
            "changes": self.changes,
            "job_modify_index": self.job_modify_index,
            "updates": self.updates,
            "placement": self.placement,
            "warnings": self.warnings,
            "job_diff": self.job_diff,
            "foreign": self.foreign,
            "upgrade": self.upgrade,
            "exit_code": self.exit_code,
        }


def plan(api: NomadAPI, compiled: DeploymentJob) -> PlanSummary:
    """Nomad's plan for the compiled job, summarised; `foreign` when submit would need --force."""
    foreign = is_foreign(api.job(compiled.job_id))
    with _refusals_as_input(compiled):
        response = api.plan(compiled.job)
    return replace(summarise_plan(compiled, response), foreign=foreign)


def summarise_plan(compiled: DeploymentJob, response: PlanResponse) -> PlanSummary:
    """A plan answer for the compiled job (from `plan`, or the one `submit` made) in summary."""
    placement = [
        line for metric in response.FailedTGAllocs.values() for line in placement_failure(compiled.request, metric)
    ]
    updates = response.Annotations.DesiredTGUpdates if response.Annotations else {}
    return PlanSummary(
        job_id=compiled.job_id,
        diff=response.Diff.Type if response.Diff else "Unknown",
        changes=response.changes,
        job_modify_index=response.JobModifyIndex,
        updates={group: u.model_dump() for group, u in updates.items()},
        placement=placement,
        warnings=response.Warnings,
        response=response,
        upgrade=upgrade_needs(compiled.request),
    )


# --- stop ---------------------------------------------------------------------------------------------


def check_stoppable(job: JobStub, *, force: bool) -> None:
    """InputError when the job is someone else's and not `force`: `stop` checks it, and so does a dry run."""
    if not is_managed(job) and not force:
        raise InputError(Problem(f"job '{job.ID}' was not created by nomadgs", hint="use --force to stop it anyway"))


def stop(api: NomadAPI, job: JobStub, *, purge: bool = False, force: bool = False) -> str:
    """Stop (and with `purge`, remove) a job nomadgs created; returns the evaluation ID."""
    check_stoppable(job, force=force)
    return api.stop(job.ID, purge=purge).EvalID
