"""Nomad's rescheduling rules for failed allocations, as pure functions over the double's allocation JSON.

Sources: nomad/structs/alloc.go (LastEventTime, NextDelay, NextRescheduleTime, RescheduleEligible),
nomad/structs/structs.go (ReschedulePolicy.Enabled, RescheduleTracker.RescheduleEligible, rescheduleInfo) and
scheduler/generic_sched.go (UpdateRescheduleTracker). Times are unix nanoseconds of the double's clock.
"""

from __future__ import annotations

from .jobspec import JSON, group_named
from .objects import parse_rfc3339

MAX_PAST_RESCHEDULE_EVENTS = 5  # scheduler/generic_sched.go maxPastRescheduleEvents
LAST_RESCHEDULE_OK = "ok"  # structs.LastRescheduleSuccess
LAST_RESCHEDULE_NO_PLACEMENT = "no placement"  # structs.LastRescheduleFailedToPlace


def policy_of(alloc: JSON) -> JSON | None:
    """Allocation.ReschedulePolicy: the policy of the allocation's own job version."""
    try:
        policy: JSON | None = group_named(alloc["Job"], alloc["TaskGroup"]).get("ReschedulePolicy")
    except KeyError:
        return None
    return policy


def enabled(policy: JSON | None) -> bool:
    """ReschedulePolicy.Enabled: Attempts > 0 or Unlimited."""
    return policy is not None and (int(policy.get("Attempts") or 0) > 0 or bool(policy.get("Unlimited")))


def events(alloc: JSON) -> list[JSON]:
    tracker = alloc.get("RescheduleTracker") or {}
    found: list[JSON] = tracker.get("Events") or []
    return found


def last_event_time(alloc: JSON) -> int:
    """Allocation.LastEventTime: the latest FinishedAt of its tasks, else its ModifyTime (the failure time)."""
    finished = [parse_rfc3339(s.get("FinishedAt")) for s in (alloc.get("TaskStates") or {}).values()]
    latest = max(finished, default=0)
    return latest or int(alloc.get("ModifyTime") or 0)


def reschedule_info(tracker: JSON | None, policy: JSON | None, fail_time: int) -> tuple[int, int]:
    """RescheduleTracker.rescheduleInfo: (attempts made within the interval before `fail_time`, attempts)."""
    if policy is None:
        return 0, 0
    attempts = int(policy.get("Attempts") or 0)
    interval = int(policy.get("Interval") or 0)
    attempted = 0
    if tracker is not None and attempts > 0:
        attempted = sum(1 for e in tracker.get("Events") or [] if fail_time - e["RescheduleTime"] < interval)
    return attempted, attempts


def eligible(tracker: JSON | None, policy: JSON | None, fail_time: int) -> bool:
    """RescheduleTracker.RescheduleEligible: whether the policy allows another attempt at `fail_time`."""
    if not enabled(policy):
        return False
    assert policy is not None
    if policy.get("Unlimited"):
        return True
    attempts = int(policy.get("Attempts") or 0)
    if (tracker is None or not tracker.get("Events")) and attempts > 0:
        return True
    attempted, _ = reschedule_info(tracker, policy, fail_time)
    return attempted < attempts


def next_delay(alloc: JSON) -> int:
    """Allocation.NextDelay: the policy's Delay, grown by its DelayFunction from the last attempts, capped at
    MaxDelay; an allocation that ran longer than the cap since its last reschedule starts the series again."""
    policy = policy_of(alloc)
    if policy is None:
        return 0
    delay = int(policy.get("Delay") or 0)
    past = events(alloc)
    if not past:
        return delay
    function = policy.get("DelayFunction")
    last = past[-1]
    if function == "exponential":
        delay = int(last["Delay"]) * 2
    elif function == "fibonacci":
        if len(past) >= 2:
            before = past[-2]
            max_delay = int(policy.get("MaxDelay") or 0)
            if int(before["Delay"]) == max_delay and int(last["Delay"]) == int(policy.get("Delay") or 0):
                delay = int(last["Delay"])  # the series was reset
            else:
                delay = int(last["Delay"]) + int(before["Delay"])
    else:  # constant: MaxDelay never applies
        return delay
    max_delay = int(policy.get("MaxDelay") or 0)
    if max_delay > 0 and delay > max_delay:
        delay = max_delay
        if last_event_time(alloc) - int(last["RescheduleTime"]) > delay:
            delay = int(policy.get("Delay") or 0)
    return delay


def next_reschedule_time(alloc: JSON) -> tuple[int, bool]:
    """Allocation.NextRescheduleTime: (failure time + NextDelay, whether the policy allows it)."""
    fail_time = last_event_time(alloc)
    policy = policy_of(alloc)
    batch_reschedule = alloc["Job"].get("Type") == "batch" and bool(
        (alloc.get("DesiredTransition") or {}).get("Reschedule")
    )
    if not enabled(policy):
        return 0, False
    assert policy is not None
    stopped_ok = alloc["DesiredStatus"] == "stop" and not last_reschedule_failed(alloc)
    failed_or_lost = alloc["ClientStatus"] in ("failed", "lost")
    if stopped_ok or (not batch_reschedule and not failed_or_lost) or fail_time == 0:
        return 0, False
    delay = next_delay(alloc)
    attempts = int(policy.get("Attempts") or 0)
    tracker = alloc.get("RescheduleTracker")
    ok = bool(policy.get("Unlimited")) or (attempts > 0 and tracker is None)
    if attempts > 0 and tracker is not None and tracker.get("Events") is not None:
        attempted, _ = reschedule_info(tracker, policy, fail_time)
        ok = attempted < attempts and delay < int(policy.get("Interval") or 0)
    return fail_time + delay, ok


def last_reschedule_failed(alloc: JSON) -> bool:
    """Allocation.LastRescheduleFailed: the last attempt to replace it found no node."""
    last = (alloc.get("RescheduleTracker") or {}).get("LastReschedule") or ""
    return last not in ("", LAST_RESCHEDULE_OK)


def replacement_tracker(previous: JSON, now: int) -> JSON:
    """UpdateRescheduleTracker: the replacement's tracker, the previous events carried (those within the
    interval with Attempts, the last 5 when Unlimited) plus this attempt."""
    policy = policy_of(previous) or {}
    past = events(previous)
    if int(policy.get("Attempts") or 0) > 0:
        interval = int(policy.get("Interval") or 0)
        carried = [dict(e) for e in past if interval > 0 and now - int(e["RescheduleTime"]) <= interval]
    else:
        carried = [dict(e) for e in past[-MAX_PAST_RESCHEDULE_EVENTS:]]
    event = {
        "RescheduleTime": now,
        "PrevAllocID": previous["ID"],
        "PrevNodeID": previous["NodeID"],
        "Delay": next_delay(previous),
    }
    return {"Events": [*carried, event], "LastReschedule": LAST_RESCHEDULE_OK}
