"""A finished watch in plain words: what `nomadgs submit` prints, and the Ansible module's `msg` on failure.

Pure: a `Registration` and its `WatchResult` in, lines out. The next steps are said once here; callers name
them in their own terms (a CLI command, an Ansible task).
"""

from __future__ import annotations

from ..contract.metadata import scale_to_zero
from .explain import rolled_back
from .runner import Registration
from .watcher import WatchResult

EVENTS_SHOWN = 5  # task events per failure
FAILURES_SHOWN = 3


def headline(registration: Registration, result: WatchResult) -> str:
    """One line: the model and how its rollout ended."""
    a = result.assessment
    compiled = registration.compiled
    name = compiled.model
    if a.phase == "succeeded" and not a.replicas and not registration.compiled.request.count:
        scaling = scale_to_zero(registration.compiled.job.get("Meta") or {})
        if scaling is not None:  # registered asleep: nothing runs until a request arrives
            return (
                f"{name}: registered at 0 replicas, scaled to zero (job {compiled.job_id}): a request for it "
                f"through `nomadgs gateway` (with NOMAD_ADDR set) scales it to 1 and waits for it; after "
                f"{scaling.idle_after} without a request it goes back to 0"
            )
    if a.phase == "succeeded":
        after = f" after {result.elapsed:.0f}s" if a.replicas else ""  # replicas: 0 waits for nothing
        return f"{name}: {a.headline}{after} (job {compiled.job_id})"
    if result.timed_out:
        return f"{name}: timed out while {a.phase}: {a.headline}"
    rollback = result.rollback
    if a.phase == "failed" and rollback is not None and rollback.status == "successful":
        return f"{name}: {rolled_back(a.headline, rollback.to_version, registration.version)}"
    return f"{name}: {a.headline}"


def explanation(registration: Registration, result: WatchResult) -> list[str]:
    """Why the rollout did not succeed: details, hints, the last task events, the rollback, stderr tails."""
    a = result.assessment
    lines = list(a.details)
    for failure in a.failures[:FAILURES_SHOWN]:
        if failure.hint and failure.hint not in a.details:
            lines.append(f"hint: {failure.hint}")
        for event in failure.events[-EVENTS_SHOWN:]:
            lines.append(f"event: {event.Type}: {event.text}")
    if result.rollback is not None:
        lines.append(f"auto-revert: {result.rollback.summary}")
        if not result.rollback.done:
            lines.append("(still rolling back when the timeout passed)")
    elif a.rollback_to is not None:
        lines.append(f"Nomad is rolling back to job version {a.rollback_to} (auto-revert)")
    for label, text in result.logs.items():
        lines.append(f"last lines of {label} stderr:")
        lines.extend(f"  | {line}" for line in text.splitlines())
    return lines


def next_steps(
    result: WatchResult, *, follow: str, remove: str, revert: str | None = None, promote: str | None = None
) -> list[str]:
    """What is left on the cluster after a watch that did not succeed, and what to do about it: a timeout or an
    unfinished rollback leaves the job running (`follow`: how the caller follows it), a placement failure
    leaves it queued (`remove`: how the caller removes it), a failing replica is replaced by Nomad until its
    progress deadline (`revert`: how the caller goes back now), healthy canaries wait for `promote`."""
    a = result.assessment
    if a.aftermath and not result.timed_out:
        now = f"{revert} or {remove}" if revert else remove
        return [f"{a.aftermath}; {now} now"]
    if a.phase == "awaiting-promotion" and promote:
        return [f"{promote} replaces the other replicas" + (f"; {revert} drops the canary" if revert else "")]
    if result.timed_out or (result.rollback is not None and not result.rollback.done):
        return [f"the job keeps running; follow it with {follow}"]
    if result.assessment.phase == "placement-failed":
        return [f"{remove} removes it from the queue"]
    return []
