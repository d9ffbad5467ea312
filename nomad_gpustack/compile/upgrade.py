"""How a changed deployment replaces its replicas: `nomad.upgrade` and `nomad.update` made one `UpdatePolicy`.

`nomad.upgrade` names a strategy, `nomad.update` sets Nomad's own update keys; a key the user writes overrides
the strategy's value, unless it contradicts the strategy itself (a canary count under `rolling`), which is
refused rather than guessed at. The defaults are chosen for model servers (the README says why):

- rolling (the default): one replica at a time (max_parallel 1), no canary; needs no GPU beyond the model's;
- canary: one canary per group beside the running replicas, promoted once healthy (auto_promote), then the
  rest one at a time; needs one more replica's GPUs while both versions run;
- recreate: every replica replaced at once (max_parallel = replicas); Nomad stops each old allocation in the
  plan that places its replacement (scheduler/generic_sched.go computePlacements, "stop the allocation before
  trying to place the new alloc because this frees the resources"), so no spare GPU is needed; the model is down.

Every strategy keeps auto_revert on, and the deadlines fit slow model loads: the healthy deadline is
`nomad.startup_timeout` (also the health check's grace: one setting for "how long a load may take"), the
progress deadline that plus PROGRESS_MARGIN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..durations import MINUTE, SECOND, format_duration
from ..errors import InputError
from ..spec.deployment import Deployment, UpgradeStrategy
from ..spec.specfile import Sourced

DEFAULT_STRATEGY: UpgradeStrategy = "rolling"  # needs no spare GPU: the one that works on a full cluster
MIN_HEALTHY_TIME = 10 * SECOND  # how long a new replica must stay healthy before the next one is replaced
PROGRESS_MARGIN = 10 * MINUTE  # progress deadline = healthy deadline + this (Nomad needs it strictly longer)


@dataclass(frozen=True)
class UpdatePolicy:
    """The group's update block, every default applied (durations in nanoseconds)."""

    strategy: Literal["canary", "rolling", "recreate"]
    max_parallel: int
    canary: int
    auto_promote: bool
    auto_revert: bool
    min_healthy_time: int
    healthy_deadline: int
    progress_deadline: int
    stagger: int | None  # None: Nomad's default


def _contradiction(sourced: Sourced[Deployment], strategy: UpgradeStrategy) -> InputError | None:
    """A `nomad.update` key that makes the update another strategy than the `nomad.upgrade` written."""
    d = sourced.spec
    keys = d.nomad.update
    if keys is None:
        return None
    if strategy in ("rolling", "recreate") and keys.canary:
        return sourced.error(
            ("nomad", "update", "canary"),
            f"canary: {keys.canary} contradicts nomad.upgrade: {strategy}, which starts no canary",
            hint="write nomad.upgrade: canary, or leave canary out",
        )
    if strategy == "canary" and keys.canary == 0:
        return sourced.error(
            ("nomad", "update", "canary"),
            "canary: 0 contradicts nomad.upgrade: canary",
            hint="leave canary out for one canary, or choose nomad.upgrade: rolling",
        )
    if strategy == "recreate" and keys.max_parallel is not None and keys.max_parallel < d.replicas:
        return sourced.error(
            ("nomad", "update", "max_parallel"),
            f"max_parallel: {keys.max_parallel} contradicts nomad.upgrade: recreate, which replaces all "
            f"{d.replicas} replicas at once",
            hint="leave max_parallel out, or choose nomad.upgrade: rolling",
        )
    return None


def plan_update(sourced: Sourced[Deployment]) -> UpdatePolicy:
    """The update policy of a deployment; InputError located at the key that Nomad (or the strategy) refuses."""
    nomad = sourced.spec.nomad
    if nomad.upgrade is not None and (problem := _contradiction(sourced, nomad.upgrade)) is not None:
        raise problem
    strategy, canary, max_parallel, auto_promote = _shape(sourced)
    min_healthy, healthy_deadline, progress = _deadlines(sourced)
    auto_revert = _written(sourced, "auto_revert")
    stagger = _written(sourced, "stagger")
    return UpdatePolicy(
        strategy=strategy,
        max_parallel=max_parallel,
        canary=canary,
        auto_promote=auto_promote,
        auto_revert=True if auto_revert is None else auto_revert,
        min_healthy_time=min_healthy,
        healthy_deadline=healthy_deadline,
        progress_deadline=progress,
        stagger=stagger,
    )


def _written(sourced: Sourced[Deployment], key: str) -> Any:
    """The value of `nomad.update.<key>` as written; None when the deployment does not set it."""
    keys = sourced.spec.nomad.update
    return None if keys is None else getattr(keys, key)


def _shape(sourced: Sourced[Deployment]) -> tuple[UpgradeStrategy, int, int, bool]:
    """(strategy, canaries, max_parallel, auto_promote): how many replicas are replaced at once, and how."""
    d = sourced.spec
    canary = _written(sourced, "canary")
    if canary is None:
        canary = 1 if d.nomad.upgrade == "canary" else 0
    strategy: UpgradeStrategy = d.nomad.upgrade or ("canary" if canary else DEFAULT_STRATEGY)
    max_parallel = _written(sourced, "max_parallel")
    if max_parallel is None:
        max_parallel = max(d.replicas, 1) if strategy == "recreate" else 1
    if max_parallel == 0:
        raise sourced.error(
            ("nomad", "update", "max_parallel"),
            "max_parallel: 0 turns Nomad's deployments off: no health-checked update, no auto-revert",
            hint="write at least 1 (the default)",
        )
    auto_promote = _written(sourced, "auto_promote")
    if auto_promote is None:
        auto_promote = canary > 0
    if auto_promote and not canary:
        raise sourced.error(
            ("nomad", "update", "auto_promote"),
            "auto_promote needs a canary: Nomad promotes canaries, and this update starts none",
            hint="write nomad.upgrade: canary (or canary: 1), or leave auto_promote out",
        )
    return strategy, canary, max_parallel, auto_promote


def _deadlines(sourced: Sourced[Deployment]) -> tuple[int, int, int]:
    """(min_healthy_time, healthy_deadline, progress_deadline), checked as Nomad checks them."""
    min_healthy = _written(sourced, "min_healthy_time")
    written_deadline = _written(sourced, "healthy_deadline")
    healthy_deadline = written_deadline if written_deadline is not None else sourced.spec.nomad.startup_timeout
    if (min_healthy if min_healthy is not None else MIN_HEALTHY_TIME) >= healthy_deadline:
        _refuse_min_healthy(sourced, min_healthy, written_deadline)
    progress = _written(sourced, "progress_deadline")
    if progress is not None and progress <= healthy_deadline:
        raise sourced.error(
            ("nomad", "update", "progress_deadline"),
            f"progress_deadline ({format_duration(progress)}) must be longer than the healthy deadline "
            f"({format_duration(healthy_deadline)}); Nomad refuses it otherwise",
            hint="leave it out: it is then the healthy deadline plus 10m",
        )
    return (
        min_healthy if min_healthy is not None else MIN_HEALTHY_TIME,
        healthy_deadline,
        progress if progress is not None else healthy_deadline + PROGRESS_MARGIN,
    )


def _refuse_min_healthy(sourced: Sourced[Deployment], min_healthy: int | None, written_deadline: int | None) -> None:
    """min_healthy_time is not below the healthy deadline: said at the key the user wrote."""
    if min_healthy is None and written_deadline is None:
        raise sourced.error(
            ("nomad", "startup_timeout"),
            f"startup_timeout must be longer than {format_duration(MIN_HEALTHY_TIME)}, the time a replica "
            "must stay healthy (Nomad needs min_healthy_time < healthy_deadline)",
            hint="loading a model takes minutes: the default is 30m",
        )
    deadline = sourced.spec.nomad.startup_timeout if written_deadline is None else written_deadline
    where = "nomad.startup_timeout" if written_deadline is None else "healthy_deadline"
    key = "min_healthy_time" if min_healthy is not None else "healthy_deadline"
    raise sourced.error(
        ("nomad", "update", key),
        f"min_healthy_time ({format_duration(min_healthy or MIN_HEALTHY_TIME)}) must be shorter than the "
        f"healthy deadline ({format_duration(deadline)}, {where}); Nomad refuses it otherwise",
        hint="a replica must stay healthy for min_healthy_time within the deadline for loading the model",
    )
