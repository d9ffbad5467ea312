"""`nomad.scaling:` of a deployment: the Nomad Autoscaler's policy for the model's group, and scale to zero.

The keys are nomadgs's own, except `schedule`, which takes GPUStack's `scaling_schedule` as it is
(`gpustack/schemas/models.py` `ScalingSchedule`, `ScalingScheduleRule`: `baseline_replicas`, `rules` of
`start_cron`, `duration_seconds`, `replicas`, `name`). What the keys mean together (min against replicas, a
schedule against scale to zero) is checked by `compile.scaling`, which turns them into the group's `scaling`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from ..durations import SECOND, parse_duration
from ..errors import HintedValueError
from .base import Duration, SpecModel

ReplicaCount = Annotated[int, Field(ge=0, le=1000)]
MAX_WINDOW_SECONDS = 366 * 24 * 3600  # GPUStack's cap on a window (MAX_SCALING_WINDOW_SECONDS)

# The fields of a cron line as the Autoscaler reads them (hashicorp/cronexpr, 5 fields: its sdk/schedule.go
# refuses any other count): name, lowest, highest, the names it takes.
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),  # 7 is Sunday too
)
_CRON_ITEM = re.compile(r"(?P<range>\*|\?|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(?P<step>\d+))?")
CRON_HINT = "write 5 fields, minute hour day-of-month month day-of-week, in UTC: e.g. '0 8 * * MON-FRI'"


def _cron_value(text: str, field: tuple[str, int, int, tuple[str, ...]]) -> int:
    name, low, high, names = field
    upper = text.upper()
    if upper in names:
        return names.index(upper) + (1 if names is _MONTHS else 0)
    if not text.isdigit() or not low <= int(text) <= high:
        raise HintedValueError(f"'{text}' is not a {name} ({low}-{high})", CRON_HINT)
    return int(text)


def _cron_field(text: str, field: tuple[str, int, int, tuple[str, ...]]) -> None:
    for item in text.split(","):
        match = _CRON_ITEM.fullmatch(item)
        if match is None:
            raise HintedValueError(f"'{item}' is not a {field[0]} value, range or step", CRON_HINT)
        if match["range"] == "?" and field[0] not in ("day of month", "day of week"):
            raise HintedValueError(f"'?' is not a {field[0]}: only the days take it", CRON_HINT)
        if match["step"] is not None and int(match["step"]) == 0:
            raise HintedValueError(f"'{item}' steps by 0", CRON_HINT)
        if match["range"] in ("*", "?"):
            continue
        first, _, last = match["range"].partition("-")
        if _cron_value(first, field) > (_cron_value(last, field) if last else _cron_value(first, field)):
            raise HintedValueError(f"the range '{match['range']}' runs backwards", CRON_HINT)


def _cron(value: Any) -> str:
    if not isinstance(value, str):
        raise HintedValueError("expected a cron line in quotes", CRON_HINT)
    fields = value.split()
    if len(fields) == 6:
        raise HintedValueError(
            f"'{value}' has 6 fields: the Nomad Autoscaler takes 5 (no seconds), and GPUStack, which accepts 6, "
            "never opens such a window",
            CRON_HINT,
        )
    if len(fields) != 5:
        raise HintedValueError(f"'{value}' has {len(fields)} fields, not 5", CRON_HINT)
    for text, field in zip(fields, _CRON_FIELDS, strict=True):
        _cron_field(text, field)
    return " ".join(fields)


Cron = Annotated[str, BeforeValidator(_cron)]


def _window(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("expected a duration such as '8h'")
    ns = value * SECOND if isinstance(value, int) else parse_duration(value)
    if not 0 < ns <= MAX_WINDOW_SECONDS * SECOND:
        raise HintedValueError("a window lasts more than 0s and at most 8784h (366 days)", "write it like 8h")
    return ns


def _target(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise HintedValueError("expected a number greater than 0", "write the requests one replica should have, e.g. 8")
    return value


Target = Annotated[float | int, BeforeValidator(_target)]


def _rule_name(value: str) -> str:
    if not value.strip() or len(value) > 63:
        raise HintedValueError(f"'{value}' cannot name a window", "write 1 to 63 characters, e.g. workday")
    return value


def _unique_names(rules: list[ScheduleRule]) -> list[ScheduleRule]:
    seen: set[str] = set()
    for rule in rules:
        if rule.name is not None and rule.name in seen:
            raise HintedValueError(f"two rules are named '{rule.name}'", "give each rule a name of its own")
        if rule.name is not None:
            seen.add(rule.name)
    return rules


class ScheduleRule(SpecModel):
    """One window of GPUStack's `scaling_schedule`: from each `start_cron` for the duration, `replicas`."""

    start_cron: Cron
    duration_seconds: Annotated[int, Field(gt=0, le=MAX_WINDOW_SECONDS)] | None = None  # GPUStack's key
    duration: Annotated[int, BeforeValidator(_window)] | None = None  # the same as a duration ("8h"), ns
    replicas: ReplicaCount
    name: Annotated[str, AfterValidator(_rule_name)] | None = None


class ScalingSchedule(SpecModel):
    """GPUStack's `scaling_schedule`: `baseline_replicas` outside the windows, each rule's `replicas` inside."""

    enabled: bool = True  # GPUStack's default is false; a schedule written here is meant to run
    baseline_replicas: ReplicaCount
    rules: Annotated[list[ScheduleRule], Field(min_length=1), AfterValidator(_unique_names)]


ScalingMetric = Literal["in_flight", "queue", "none"]


class ScalingKeys(SpecModel):
    """`nomad.scaling`: the group's `scaling` block for the Nomad Autoscaler (see compile.scaling)."""

    min: ReplicaCount | None = None  # None: 1
    max: ReplicaCount
    enabled: bool | None = None  # None: on when the policy has a check
    metric: ScalingMetric = "in_flight"
    target_in_flight: Target | None = None  # None: the engine's concurrency (compile.scaling)
    target_queue: Target | None = None  # None: 1 request waiting per replica
    cooldown: Duration | None = None  # None: the Autoscaler's default (5m)
    evaluation_interval: Duration | None = None  # None: the Autoscaler's default (10s)
    query_window: Duration | None = None  # None: 1m, the Autoscaler's default
    schedule: ScalingSchedule | None = None
    idle_after: Duration | None = None  # scale to zero by the gateway after this long without a request
