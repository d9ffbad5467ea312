"""A job's versions, and the two manual steps of a rollout: promoting a canary deployment, reverting to an
older version.

What `nomadgs history`, `promote` and `revert` do, and the Ansible `model_rollout` module with them. Reading the
history and choosing what to revert to or whether there is anything to promote are pure functions over Nomad's
answers; `promote` and `revert` make the one write each. A revert returns a `runner.Registration`, so the caller
follows the deployment it starts with `runner.follow`, as after a submit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from ..contract.deploymentjob import DeploymentJob
from ..contract.jobspec import Job
from ..contract.metadata import model_name
from ..errors import InputError, NomadgsError, Problem
from .client import JobRefused, NomadAPI, NomadError
from .plandiff import changed_fields, diff_texts, format_job_diff
from .responses import Deployment, JobStub, JobVersion, PlanDiff, PlanResponse
from .runner import Registration, is_managed

ACTIVE = ("running", "pending", "paused", "blocked", "unblocking", "initializing")  # structs.Deployment.Active


def check_owned(job: JobStub, *, force: bool, verb: str) -> None:
    """InputError when nomadgs did not create the job and not `force`: as `stop`, a job of someone else's is
    changed only when asked to."""
    if not is_managed(job) and not force:
        raise InputError(Problem(f"job '{job.ID}' was not created by nomadgs", hint=f"use --force to {verb} it anyway"))


# --- history ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionEntry:
    """One version of a job: when it was submitted, whether it is stable, and what changed from the one before
    (`diff`, Nomad's `api.JobDiff`; None for the oldest version kept)."""

    version: int
    stable: bool
    submit_time: int  # Unix nanoseconds
    diff: dict[str, Any] | None

    @property
    def submitted(self) -> str:
        """The submit time as `nomad job history` prints it (command/helpers.go formatTime: ISO 8601, local)."""
        if self.submit_time < 10**9:
            return ""
        local = datetime.fromtimestamp(self.submit_time / 1e9, tz=UTC).astimezone()
        text = local.isoformat(timespec="seconds")
        return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text

    @property
    def changes(self) -> list[str]:
        """The changed fields in words, one a line (`plandiff.changed_fields`)."""
        return changed_fields(self.diff)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "stable": self.stable,
            "submitted": self.submitted,
            "submit_time": self.submit_time,
            "changes": self.changes,
            "diff": self.diff,
        }


def version_entries(versions: Sequence[JobVersion], diffs: Sequence[PlanDiff]) -> list[VersionEntry]:
    """The versions as Nomad lists them (newest first), each with the diff from the version before it:
    `diffs[i]` compares `versions[i + 1]` with `versions[i]` (nomad/job_endpoint.go GetJobVersions)."""
    return [
        VersionEntry(v.Version, v.Stable, v.SubmitTime, diffs[i].model_dump() if i < len(diffs) else None)
        for i, v in enumerate(versions)
    ]


def history(api: NomadAPI, job: JobStub) -> list[VersionEntry]:
    """The job's kept versions, newest first."""
    answer = api.versions(job.ID)
    return version_entries(answer.Versions, answer.Diffs)


def format_history(entries: Sequence[VersionEntry]) -> str:
    """The versions as `nomad job history -p` prints them (command/job_history.go formatJobVersion: columns
    glued with ` = `, the diff under `Diff =` as `nomad job plan` prints it, a blank line between versions)."""
    blocks = []
    for entry in entries:
        rows = [("Version", str(entry.version)), ("Stable", str(entry.stable).lower())]
        rows.append(("Submit Date", entry.submitted))
        diff = entry.diff
        if diff is not None and diff.get("Type") != "None":
            rows.append(("Diff", "\n" + format_job_diff(diff).strip()))
        width = max(len(name) for name, _ in rows)
        blocks.append("\n".join(f"{name:<{width}} = {value}" for name, value in rows))
    return "\n\n".join(blocks)


# --- revert -----------------------------------------------------------------------------------------------


def revert_target(versions: Sequence[JobVersion], current: int, to: int | None) -> JobVersion:
    """The version to revert to: `to`, or by default the newest stable version older than `current`.
    InputError, saying which versions there are, when there is none or `to` is not a kept older version."""
    kept = ", ".join(str(v.Version) for v in versions)
    if to is not None:
        if to == current:
            raise InputError(Problem(f"version {to} is the current version: nothing to revert", field="--to"))
        found = next((v for v in versions if v.Version == to), None)
        if found is None:
            hint = f"Nomad keeps versions {kept}; see `nomadgs history`"
            raise InputError(Problem(f"the job has no version {to}", field="--to", hint=hint))
        return found
    stable = [v for v in versions if v.Stable and v.Version < current]
    if not stable:
        raise InputError(
            Problem(
                f"no stable version older than the current version {current} to revert to",
                hint=f"name one with --to VERSION (kept versions: {kept}; see `nomadgs history`)",
            )
        )
    return max(stable, key=lambda v: v.Version)


@dataclass(frozen=True)
class RevertPlan:
    """What a revert would do: the job as read, the version it goes back to, and Nomad's diff from that version
    to the current one (`diff`: old is the target, new the current; None when Nomad sent none)."""

    job: JobStub
    target: JobVersion
    diff: dict[str, Any] | None

    @property
    def unchanged(self) -> bool:
        """The current version's spec is the target's already: a revert would change nothing that runs."""
        return self.diff is not None and self.diff.get("Type") == "None"

    def diff_texts(self) -> tuple[str, str]:
        """(before, after) of the revert, one field a line, for a diff viewer (`plandiff.diff_texts`)."""
        target_side, current_side = diff_texts(self.diff)
        return current_side, target_side


def plan_revert(api: NomadAPI, job: JobStub, to: int | None, *, force: bool = False) -> RevertPlan:
    """Choose the version to revert to (`revert_target`) and read what reverting would change; writes nothing."""
    check_owned(job, force=force, verb="revert")
    target = revert_target(api.versions(job.ID).Versions, job.Version, to)
    compared = api.versions(job.ID, diff_version=target.Version)
    index = next((i for i, v in enumerate(compared.Versions) if v.Version == job.Version), None)
    diff = compared.Diffs[index].model_dump() if index is not None and index < len(compared.Diffs) else None
    return RevertPlan(job, target, diff)


def revert(api: NomadAPI, plan: RevertPlan) -> Registration:
    """Register the planned older version again (Nomad's job revert), with check-and-set on the current
    version: if someone changed the job since it was read, nothing is reverted. Returns the registration of the
    new version, to follow with `runner.follow` as after a submit."""
    job, target = plan.job, plan.target
    try:
        answer = api.revert(job.ID, target.Version, prior_version=job.Version)
    except NomadError as exc:
        if "enforcing version" in str(exc):  # nomad/job_endpoint.go Revert: EnforcePriorVersion did not match
            raise NomadgsError(
                f"job '{job.ID}' changed since nomadgs read it at version {job.Version}; nothing was reverted. "
                "Check `nomadgs history`, then run revert again."
            ) from None
        raise
    current = api.job(job.ID)
    spec = cast(Job, target.spec)
    compiled = DeploymentJob(job=spec, model=model_name(job.Meta) or job.ID, file=f"job {job.ID}")
    plan_answer = PlanResponse(JobModifyIndex=answer.JobModifyIndex)
    return Registration(compiled, current.Version if current else None, answer.EvalID, plan_answer)


# --- promote ----------------------------------------------------------------------------------------------


def nothing_to_promote(deployment: Deployment | None) -> str | None:
    """Why the job's latest deployment has nothing to promote, in words; None when it waits for a promotion.
    Promotion is per group with canaries (state_store.go UpdateDeploymentPromotion)."""
    if deployment is None:
        return "the job has no deployment"
    canary_groups = [g for g in deployment.TaskGroups.values() if g.DesiredCanaries > 0]
    what = f"deployment {deployment.ID[:8]} (job version {deployment.JobVersion})"
    if not canary_groups:
        return f"{what} has no canaries: it needs no promotion"
    if all(g.Promoted for g in canary_groups):
        return f"{what} is already promoted ({deployment.Status})"
    if deployment.Status not in ACTIVE:
        return f"{what} is {deployment.Status}: {deployment.StatusDescription}"
    return None


@dataclass(frozen=True)
class Promotion:
    """What `promote` did: the deployment, and its evaluation ("" when nothing was promoted)."""

    job_id: str
    deployment: Deployment | None
    eval_id: str
    message: str
    promoted: bool

    def to_json(self) -> dict[str, Any]:
        d = self.deployment
        return {
            "job": self.job_id,
            "deployment": {"id": d.ID, "job_version": d.JobVersion, "status": d.Status} if d else None,
            "promoted": self.promoted,
            "eval_id": self.eval_id or None,
            "message": self.message,
        }


def promote(api: NomadAPI, job: JobStub, *, force: bool = False) -> Promotion:
    """Promote the canaries of the job's latest deployment, every group (`All`), once they are healthy.

    Already promoted: nothing to do, said so (not an error, so it can be repeated). No deployment, none with
    canaries, or a deployment that ended: NomadgsError saying which. Canaries not healthy yet: NomadgsError with
    Nomad's count of healthy canaries."""
    check_owned(job, force=force, verb="promote")
    deployment = api.deployment(job.ID)
    reason = nothing_to_promote(deployment)
    if deployment is not None and reason is not None:
        promoted = [g for g in deployment.TaskGroups.values() if g.DesiredCanaries > 0]
        if promoted and all(g.Promoted for g in promoted):
            return Promotion(job.ID, deployment, "", f"{job.ID}: {reason}; nothing to do", False)
    if reason is not None:
        raise NomadgsError(f"{job.ID}: nothing to promote: {reason}")
    assert deployment is not None
    try:
        answer = api.promote(deployment.ID)
    except JobRefused as exc:  # the multierror of UpdateDeploymentPromotion: "Task group "x" has 0/1 healthy ..."
        raise NomadgsError(
            f"{job.ID}: Nomad did not promote deployment {deployment.ID[:8]}: {'; '.join(exc.problems)}. "
            f"Promote once the canaries are healthy (see `nomadgs status {job.ID}`)."
        ) from None
    message = f"{job.ID}: promoted deployment {deployment.ID[:8]} (job version {deployment.JobVersion})"
    return Promotion(job.ID, deployment, answer.EvalID, message, True)
