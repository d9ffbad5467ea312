"""A few of Nomad's server-side job checks (`Job.Validate` in nomad/structs), on the canonicalized job.

Only the rules the reference lists (nomad-api.md §1.3) are modelled, plus `Resources.Validate` (task minimums).
The message texts follow Nomad's where the reference or common knowledge gives them, and are close paraphrases
otherwise; clients should not parse them.
Errors are joined the way hashicorp/go-multierror prints them, which is what Nomad returns.
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

from .goduration import SECOND, format_duration
from .jobspec import JSON, groups, ports, services

JOB_TYPES = ("service", "batch", "system", "sysbatch")
HEALTH_CHECKS = ("checks", "task_states", "manual")
LIFECYCLE_HOOKS = ("prestart", "poststart", "poststop")
CHECK_TYPES = ("http", "tcp", "script", "grpc")
CONSTRAINT_OPERANDS = frozenset(
    {
        *("=", "==", "is", "!=", "not", "<", "<=", ">", ">=", "regexp", "version", "semver"),
        *("set_contains", "set_contains_all", "set_contains_any", "is_set", "is_not_set"),
        *("distinct_hosts", "distinct_property"),
    }
)
# ServiceCheck fields that only Consul understands; a nomad-provider check must leave them unset.
CONSUL_ONLY_CHECK_FIELDS = (
    "GRPCService",
    "GRPCUseTLS",
    "SuccessBeforePassing",
    "FailuresBeforeCritical",
    "FailuresBeforeWarning",
    "Expose",
    "Notes",
)
_RFC1123 = re.compile(r"^(?i:[a-z0-9]|[a-z0-9][a-z0-9\-]{0,61}[a-z0-9])$")


def multierror(errors: list[str]) -> str:
    """go-multierror's list format: `1 error occurred:\\n\\t* msg\\n\\n`."""
    head = "1 error occurred:" if len(errors) == 1 else f"{len(errors)} errors occurred:"
    return head + "\n" + "".join(f"\t* {e}\n" for e in errors) + "\n"


def validate(job: JSON, *, job_max_count: int = 0) -> list[str]:
    """The top-level validation errors of a canonicalized job (empty when it is valid). `job_max_count` is the
    server's limit on a job's instances, which `jobValidate.Validate` (nomad/job_endpoint_hooks.go) checks
    after `Job.Validate`; 0 means none."""
    errors: list[str] = []
    job_id = job.get("ID") or ""
    if not job_id:
        errors.append("Missing job ID")
    elif " " in job_id:
        errors.append("Job ID contains a space")
    elif "\x00" in job_id:
        errors.append("Job ID contains a null character")
    if not job.get("Name"):
        errors.append("Missing job name")
    if job.get("Type") not in JOB_TYPES:
        errors.append(f"Invalid job type: {job.get('Type')!r}")
    if not 1 <= int(job.get("Priority") or 0) <= 100:
        errors.append("Job priority must be between [1, 100]")
    errors += _constraints(job.get("Constraints"))
    if not groups(job):
        errors.append("Missing job task groups")
    seen: dict[str, int] = {}
    for index, group in enumerate(groups(job)):
        name = group.get("Name") or ""
        if name in seen:
            errors.append(f"Job task group {index + 1} redefines '{name}' from group {seen[name] + 1}")
        else:
            seen[name] = index
        group_errors = _group(job, group)
        if group_errors:
            errors.append(f"Task group {name} validation failed: {multierror(group_errors)}")
    total = sum(int(group.get("Count") or 0) for group in groups(job))
    if job_max_count > 0 and total > job_max_count:
        errors.append(f"total count was greater than configured job_max_count: {total} > {job_max_count}")
    return errors


def _constraints(constraints: list[JSON] | None) -> list[str]:
    return [
        f"Unknown constraint type {c.get('Operand')!r}"
        for c in constraints or []
        if (c.get("Operand") or "=") not in CONSTRAINT_OPERANDS
    ]


def _group(job: JSON, group: JSON) -> list[str]:
    errors: list[str] = []
    if not group.get("Name"):
        errors.append("Missing task group name")
    if (group.get("Count") or 0) < 0:
        errors.append("Task group count can't be negative")
    if not group.get("Tasks"):
        errors.append("Missing tasks for task group")
    errors += _constraints(group.get("Constraints"))
    if group.get("Scaling") is not None:
        errors += _scaling(group["Scaling"], group.get("Count") or 0)
    update = group.get("Update")
    if update and job.get("Type") == "service":
        errors += _update(update)
    if job.get("Type") not in ("system", "sysbatch"):
        errors += reschedule_errors(group.get("ReschedulePolicy") or {})
    labels = {p.label for p in ports(group)}
    for service, _owner in services(group):
        errors += _service(service, labels)
    disk = (group.get("EphemeralDisk") or {}).get("SizeMB") or 0
    seen: dict[str, int] = {}
    for index, task in enumerate(group.get("Tasks") or []):
        name = task.get("Name") or ""
        if name in seen:
            errors.append(f"Task {index + 1} redefines '{name}' from task {seen[name] + 1}")
        else:
            seen[name] = index
        task_errors = _task(job, group, task, disk)
        if task_errors:
            errors.append(f"Task {name} validation failed: {multierror(task_errors)}")
    return errors


def _scaling(policy: JSON, count: int) -> list[str]:
    """nomad/structs/structs.go `ScalingPolicy.Validate` (CE `validateType`: a group's policy is horizontal) and
    `TaskGroup.validateScalingPolicy` (the count within min and max). Max is -1 when the JSON leaves it out
    (command/agent/scaling_endpoint.go `ApiScalingPolicyToStructs`: "catch this in Validate")."""
    errors: list[str] = []
    kind = policy.get("Type") or ""
    if not kind:
        errors.append("missing scaling policy type")
    elif kind != "horizontal":
        errors.append(f'scaling policy type "{kind}" is not valid')
    low = policy["Min"] if policy.get("Min") is not None else count
    high = policy["Max"] if policy.get("Max") is not None else -1
    if high < 0:
        errors.append("maximum count must be specified and non-negative")
    elif high < low:
        errors.append("maximum count must not be less than minimum count")
    if low < 0:
        errors.append("minimum count must be specified and non-negative")
    if high < count:
        errors.append("task group count must not be greater than maximum count in scaling policy")
    if count < low:
        errors.append("task group count must not be less than minimum count in scaling policy")
    return [f"Scaling policy invalid: {e}" for e in errors]


RESCHEDULE_MIN_DELAY = 5 * SECOND  # structs.ReschedulePolicyMinDelay
RESCHEDULE_MIN_INTERVAL = 15 * SECOND  # structs.ReschedulePolicyMinInterval
DELAY_FUNCTIONS = ("constant", "exponential", "fibonacci")  # structs.RescheduleDelayFunctions


def reschedule_errors(r: JSON) -> list[str]:
    """nomad/structs/structs.go ReschedulePolicy.Validate (skipped when rescheduling is disabled)."""
    attempts, interval = int(r.get("Attempts") or 0), int(r.get("Interval") or 0)
    delay, max_delay = int(r.get("Delay") or 0), int(r.get("MaxDelay") or 0)
    unlimited, function = bool(r.get("Unlimited")), r.get("DelayFunction") or ""
    if not (attempts > 0 or unlimited):
        return []
    errors: list[str] = []
    if attempts > 0:
        if interval <= 0:
            errors.append("Interval must be a non zero value if Attempts > 0")
        if unlimited:
            errors.append(
                f"Reschedule Policy with Attempts = {attempts}, Interval = {format_duration(interval)}, and "
                "Unlimited = true is ambiguous"
            )
            errors.append("If Attempts >0, Unlimited cannot also be set to true")
    precheck = True
    if delay < RESCHEDULE_MIN_DELAY:
        errors.append(f"Delay cannot be less than 5s (got {format_duration(delay)})")
        precheck = False
    if function not in DELAY_FUNCTIONS:
        errors.append(f'Invalid delay function "{function}", must be one of ["constant" "exponential" "fibonacci"]')
        precheck = False
    if function != "constant":
        if max_delay < RESCHEDULE_MIN_DELAY:
            # Nomad prints the Delay here, not the MaxDelay.
            errors.append(f"Max Delay cannot be less than 5s (got {format_duration(delay)})")
            precheck = False
        if max_delay < delay:
            got = format_duration(max_delay)
            errors.append(f"Max Delay cannot be less than Delay {format_duration(delay)} (got {got})")
            precheck = False
    if not unlimited:
        if interval < RESCHEDULE_MIN_INTERVAL:
            errors.append(f"Interval cannot be less than 15s (got {format_duration(interval)})")
        if precheck:
            errors += _viable_attempts(attempts, interval, delay, max_delay, function)
    return errors


def _viable_attempts(attempts: int, interval: int, delay: int, max_delay: int, function: str) -> list[str]:
    """ReschedulePolicy.validateDelayParams / viableAttempts: the attempts the interval leaves room for."""
    possible, recommended, valid = 0, 0, True
    if function == "constant":
        recommended = attempts * delay
        if interval < recommended:
            possible, valid = interval // delay, False
    elif function == "exponential":
        for i in range(attempts):
            next_delay = 2**i * delay
            if next_delay > max_delay:
                recommended += max_delay
            else:
                recommended = next_delay
            if recommended < interval:
                possible += 1
        valid = possible >= attempts
    else:  # fibonacci
        slots, ceiling = [delay, delay], False
        for i in range(2, attempts):
            if ceiling:
                next_delay = slots[i - 1] + max_delay
            else:
                next_delay = slots[i - 1] + slots[i - 2]
                if next_delay > max_delay:
                    next_delay, ceiling = max_delay, True
            slots.append(next_delay)
        recommended = slots[-1]
        if interval < recommended:
            valid = False
            possible = next((i for i, slot in enumerate(slots) if slot > interval), 0)
    if valid:
        return []
    if function == "constant":
        first = (
            f"Nomad can only make {possible} attempts in {format_duration(interval)} with initial delay "
            f'{format_duration(delay)} and delay function "{function}"'
        )
    else:
        first = (
            f"Nomad can only make {possible} attempts in {format_duration(interval)} with initial delay "
            f'{format_duration(delay)}, delay function "{function}", and delay ceiling {format_duration(max_delay)}'
        )
    rounded = (recommended + SECOND // 2) // SECOND * SECOND
    return [first, f"Set the interval to at least {format_duration(rounded)} to accommodate {attempts} attempts"]


def _update(u: JSON) -> list[str]:
    errors: list[str] = []
    min_healthy, healthy, progress = u["MinHealthyTime"], u["HealthyDeadline"], u["ProgressDeadline"]
    if u["HealthCheck"] not in HEALTH_CHECKS:
        errors.append(f"Invalid health check given: {u['HealthCheck']!r}")
    if u["MaxParallel"] < 0:
        errors.append(f"Max parallel can not be less than zero: {u['MaxParallel']} < 0")
    if u["Canary"] < 0:
        errors.append(f"Canary count can not be less than zero: {u['Canary']} < 0")
    if min_healthy < 0:
        errors.append(f"Minimum healthy time may not be less than zero: {format_duration(min_healthy)}")
    if healthy <= 0:
        errors.append(f"Healthy deadline must be greater than zero: {format_duration(healthy)}")
    if progress < 0:
        errors.append(f"Progress deadline must be zero or greater: {format_duration(progress)}")
    if min_healthy >= healthy:
        errors.append(
            "Minimum healthy time must be less than healthy deadline: "
            f"{format_duration(min_healthy)} > {format_duration(healthy)}"
        )
    if progress != 0 and healthy >= progress:
        errors.append(
            "Healthy deadline must be less than progress deadline: "
            f"{format_duration(healthy)} > {format_duration(progress)}"
        )
    if u["Stagger"] <= 0:
        errors.append(f"Stagger must be greater than zero: {format_duration(u['Stagger'])}")
    if u["AutoPromote"] and u["Canary"] == 0:
        errors.append("Auto Promote requires a Canary count greater than zero")
    return errors


def _service(service: JSON, port_labels: set[str]) -> list[str]:
    errors: list[str] = []
    name = service.get("Name") or ""
    provider = service.get("Provider")
    if not _RFC1123.match(name):
        errors.append(
            f"Service name must be valid per RFC 1123 and can contain only alphanumeric characters or dashes: {name!r}"
        )
    if provider not in ("consul", "nomad"):
        errors.append(f'Service {name} has invalid provider {provider!r}, must be "consul" or "nomad"')
    if provider == "nomad" and service.get("Connect"):
        errors.append(f"Service {name} with provider nomad cannot include Connect blocks")
    port = service.get("PortLabel")
    if port and not port.isdigit() and port not in port_labels:
        errors.append(f"Port label {port!r} referenced by services [{name}] does not exist")
    for check in service.get("Checks") or []:
        errors += [f"Check {check.get('Name') or name} invalid: {e}" for e in _check(check, provider, port_labels)]
    return errors


def _check(check: JSON, provider: str | None, port_labels: set[str]) -> list[str]:
    errors: list[str] = []
    kind = check.get("Type") or ""
    if kind not in CHECK_TYPES:
        errors.append(f"invalid type ({kind!r})")
    if provider == "nomad":
        if kind not in ("http", "tcp"):
            errors.append(f"check type {kind!r} is not supported by the nomad provider, only http and tcp")
        errors += [
            f"{field} is only valid for Consul service checks" for field in CONSUL_ONLY_CHECK_FIELDS if check.get(field)
        ]
    interval, timeout = check.get("Interval") or 0, check.get("Timeout") or 0
    if interval < SECOND:
        errors.append(f"interval ({format_duration(interval)}) cannot be lower than 1s")
    if timeout < SECOND:
        errors.append(f"timeout ({format_duration(timeout)}) is lower than required minimum timeout 1s")
    if kind == "http":
        path = check.get("Path") or ""
        if not path:
            errors.append("http type must have http path")
        elif urlparse(path).scheme:
            errors.append(f"http path {path!r} must be relative")
    port = check.get("PortLabel")
    if port and not port.isdigit() and port not in port_labels:
        errors.append(f"port label {port!r} does not exist in the group network")
    if check.get("OnUpdate") == "ignore" and check.get("CheckRestart"):
        errors.append("on_update 'ignore' is incompatible with check_restart")
    return errors


def _task(job: JSON, group: JSON, task: JSON, disk_mb: int) -> list[str]:
    errors: list[str] = []
    name = task.get("Name") or ""
    if not name:
        errors.append("Missing task name")
    elif name == "alloc":
        errors.append('Task name cannot be "alloc"')
    elif "/" in name or "\\" in name:
        errors.append("Task name cannot include slashes")
    if not task.get("Driver"):
        errors.append("Missing task driver")
    hook = (task.get("Lifecycle") or {}).get("Hook")
    if task.get("Lifecycle") and hook not in LIFECYCLE_HOOKS:
        errors.append(f"invalid hook: {hook!r}")
    errors += _constraints(task.get("Constraints"))
    progress = (group.get("Update") or {}).get("ProgressDeadline") or 0
    kill_timeout = task.get("KillTimeout") or 0
    if job.get("Type") == "service" and progress and kill_timeout > progress:
        errors.append(
            f"KillTimeout ({format_duration(kill_timeout)}) longer than the group's ProgressDeadline "
            f"({format_duration(progress)})"
        )
    errors += _resources(task.get("Resources") or {})
    logs = task.get("LogConfig") or {}
    log_mb = (logs.get("MaxFiles") or 0) * (logs.get("MaxFileSizeMB") or 0)
    if log_mb >= disk_mb:
        errors.append(f"log storage ({log_mb} MB) must be less than requested disk capacity ({disk_mb} MB)")
    return errors


def _resources(resources: JSON) -> list[str]:
    """`Resources.Validate`: the minimums of `MinResources()` and memory_max over memory (-1 means no limit)."""
    errors: list[str] = []
    cpu, memory, memory_max = (resources.get(k) or 0 for k in ("CPU", "MemoryMB", "MemoryMaxMB"))
    if cpu < 1 and not resources.get("Cores"):
        errors.append(f"minimum CPU value is 1; got {cpu}")
    if memory < 10:
        errors.append(f"minimum MemoryMB value is 10; got {memory}")
    if memory_max not in (0, -1) and memory_max < memory:
        errors.append(f"MemoryMaxMB value ({memory_max}) should be larger than MemoryMB value ({memory})")
    return errors
