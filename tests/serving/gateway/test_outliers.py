"""Passive outlier detection, rule by rule, on a clock the tests move by hand."""

from __future__ import annotations

import pytest

from nomad_gpustack.serving.discovery import Endpoint, build_table
from nomad_gpustack.serving.gateway import MAX_MULTIPLIER, OutlierDetector


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def instance(port: int, model: str = "m", **fields: str) -> Endpoint:
    values = {"model": model, "service": model, "service_id": f"{model}-{port}", "address": "10.0.0.1",
              "port": port, "health": "passing", **fields}  # fmt: skip
    return Endpoint(**values)  # type: ignore[arg-type]


A, B, C = instance(1), instance(2), instance(3)
PEERS = (A, B, C)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def detector(clock: Clock, **options: float) -> OutlierDetector:
    return OutlierDetector(clock=clock, **options)  # type: ignore[arg-type]


def eject(outliers: OutlierDetector, endpoint: Endpoint, peers: tuple[Endpoint, ...] = PEERS) -> float:
    """Fail `endpoint` until it is ejected; returns the length of the ejection."""
    for _ in range(outliers.eject_after - 1):
        assert outliers.failed(endpoint, peers).outcome == "counted"
    failure = outliers.failed(endpoint, peers)
    assert failure.outcome == "ejected" and failure.ejection is not None
    return failure.ejection.seconds


def test_consecutive_failures_eject_an_instance(clock: Clock) -> None:
    outliers = detector(clock)
    assert [outliers.failed(A, PEERS).failures for _ in range(2)] == [1, 2]
    assert outliers.in_rotation(PEERS) == PEERS  # tried last, but not out yet
    failure = outliers.failed(A, PEERS)
    assert (failure.outcome, failure.failures) == ("ejected", 3)
    assert failure.ejection is not None and (failure.ejection.times, failure.ejection.seconds) == (1, 30.0)
    assert outliers.in_rotation(PEERS) == (B, C)
    assert outliers.ejected() == [A]


def test_an_answer_ends_a_run_of_failures(clock: Clock) -> None:
    outliers = detector(clock)
    for _ in range(2):
        outliers.failed(A, PEERS)
    outliers.succeeded(A)  # any answer relayed in full, 5xx included
    assert [outliers.failed(A, PEERS).outcome for _ in range(3)] == ["counted", "counted", "ejected"]


def test_an_instance_that_just_failed_is_tried_last_for_a_while(clock: Clock) -> None:
    outliers = detector(clock, try_last_seconds=5.0)
    assert not outliers.active
    outliers.failed(A, PEERS)
    assert outliers.active and outliers.tried_last(A, clock()) and not outliers.tried_last(B, clock())
    clock.advance(5.0)
    assert not outliers.tried_last(A, clock()) and not outliers.active


def test_ejected_instance_comes_back_after_the_ejection_time(clock: Clock) -> None:
    outliers = detector(clock, eject_for=30.0)
    eject(outliers, A)
    clock.advance(29.9)
    assert outliers.ejected() == [A] and outliers.returned() == []
    clock.advance(0.1)
    assert outliers.in_rotation(PEERS) == PEERS  # no health check had to change
    [back] = outliers.returned()
    assert (back.endpoint, back.seconds) == (A, 30.0)
    assert outliers.returned() == []  # said once
    # Counted afresh: one more failure does not eject it again at once.
    assert outliers.failed(A, PEERS).outcome == "counted"


def test_ejection_time_grows_with_each_ejection_in_a_row_up_to_a_limit(clock: Clock) -> None:
    outliers = detector(clock, eject_for=30.0)
    lengths = []
    for _ in range(MAX_MULTIPLIER + 2):
        lengths.append(eject(outliers, A))
        clock.advance(lengths[-1])  # back, and failing again at once
    assert lengths == [30.0 * n for n in range(1, MAX_MULTIPLIER + 1)] + [30.0 * MAX_MULTIPLIER] * 2


def test_ejection_time_shrinks_again_while_the_instance_stays_in_rotation(clock: Clock) -> None:
    outliers = detector(clock, eject_for=30.0)
    for expected in (30.0, 60.0, 90.0):
        assert eject(outliers, A) == expected
        clock.advance(expected)
    clock.advance(30.0)  # one ejection time back in rotation without failing: one step down
    assert eject(outliers, A) == 90.0  # 3 - 1, then one more for this ejection
    clock.advance(90.0 + 3 * 30.0)  # back long enough to forget all of it
    assert eject(outliers, A) == 30.0


def test_timeout_while_the_instance_answers_others_is_busy_not_dead(clock: Clock) -> None:
    outliers = detector(clock, eject_after=1)
    sent = clock()
    clock.advance(0.5)
    outliers.answered(A)  # another request's answer started while this one waited in the queue
    clock.advance(1.5)
    assert outliers.timed_out(A, sent, PEERS).outcome == "busy"
    assert outliers.ejected() == [] and not outliers.active  # not even tried last: least-loaded takes care
    # A request sent after the last answer started, that gets none: nobody is answered, however many wait.
    sent = clock()
    clock.advance(2.0)
    failure = outliers.timed_out(A, sent, PEERS)
    assert failure.outcome == "ejected"


def test_busy_timeouts_leave_a_run_of_failures_as_it_was(clock: Clock) -> None:
    outliers = detector(clock)
    outliers.failed(A, PEERS)
    sent = clock()
    clock.advance(1.0)
    outliers.answered(A)
    assert outliers.timed_out(A, sent, PEERS).outcome == "busy"
    assert outliers.failed(A, PEERS).failures == 2


def test_the_last_instance_in_rotation_is_never_ejected(clock: Clock) -> None:
    outliers = detector(clock)
    alone = (A,)
    outcomes = [outliers.failed(A, alone).outcome for _ in range(5)]
    assert outcomes == ["counted", "counted", "kept", "counted", "counted"]  # "kept" said once
    assert outliers.in_rotation(alone) == alone and outliers.ejected() == []


def test_the_last_healthy_instance_not_ejected_is_kept_until_another_is_back(clock: Clock) -> None:
    outliers = detector(clock, eject_for=30.0)
    pair = (A, B)
    eject(outliers, A, pair)
    assert [outliers.failed(B, pair).outcome for _ in range(3)] == ["counted", "counted", "kept"]
    assert outliers.in_rotation(pair) == (B,)
    clock.advance(30.0)  # A is back: B's next failure in the run ejects it
    assert outliers.failed(B, pair).outcome == "ejected"
    assert outliers.in_rotation(pair) == (A,)


def test_an_instance_not_passing_does_not_keep_another_in_rotation(clock: Clock) -> None:
    """ "Last" counts the instances that take requests: passing in the table and not ejected."""
    outliers = detector(clock)
    sick = instance(2, health="critical")
    table = build_table([A, sick])
    peers = table.routes["m"]
    assert peers == (A,)
    assert [outliers.failed(A, peers).outcome for _ in range(3)] == ["counted", "counted", "kept"]


def test_when_the_table_leaves_only_ejected_instances_they_are_used_anyway(clock: Clock) -> None:
    outliers = detector(clock)
    eject(outliers, A, (A, B))
    # B's check failed: A is all there is. A slow or failing answer beats a 503.
    assert outliers.in_rotation((A,)) == (A,)


def test_failures_of_an_ejected_instance_are_not_counted(clock: Clock) -> None:
    outliers = detector(clock, eject_for=30.0)
    eject(outliers, A)
    # Requests sent before it was ejected time out afterwards: they say nothing new.
    assert [outliers.failed(A, PEERS).outcome for _ in range(3)] == ["out"] * 3
    clock.advance(30.0)
    assert outliers.failed(A, PEERS).failures == 1


def test_failure_of_an_instance_the_table_no_longer_routes_to_is_not_counted(clock: Clock) -> None:
    outliers = detector(clock, eject_after=1)
    assert outliers.failed(A, (B, C)).outcome == "gone"
    assert outliers.timed_out(A, clock(), (B, C)).outcome == "gone"
    changed = instance(1, version="2")  # same address, registered anew
    assert outliers.failed(A, (changed, B)).outcome == "gone"
    assert not outliers.active


def test_a_table_change_forgets_an_instance_and_its_ejections(clock: Clock) -> None:
    outliers = detector(clock, eject_for=30.0)
    eject(outliers, A)
    clock.advance(30.0)
    assert eject(outliers, A) == 60.0
    assert outliers.observe(build_table(PEERS)) == []  # as it was: still ejected
    assert outliers.ejected() == [A]
    assert outliers.observe(build_table([B, C])) == [A]  # its check failed, or it was deregistered
    assert outliers.ejected() == []
    outliers.observe(build_table(PEERS))  # it passes again: a clean record
    assert eject(outliers, A) == 30.0


def test_eject_for_zero_ejects_nothing(clock: Clock) -> None:
    outliers = detector(clock, eject_for=0.0)
    assert {outliers.failed(A, PEERS).outcome for _ in range(10)} == {"counted"}
    assert outliers.in_rotation(PEERS) == PEERS and outliers.tried_last(A, clock())
