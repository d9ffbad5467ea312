"""The one blocking-query loop: index rules, change detection, retries with backoff."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from nomad_gpustack.nomad import blocking
from nomad_gpustack.nomad.blocking import follow, header_index, next_index


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


def test_next_index_follows_consuls_rules() -> None:
    assert next_index(10, 12) == 12
    assert next_index(10, 10) == 10
    assert next_index(10, 3) == 0  # went backwards: read everything again
    assert next_index(0, 0) == 1  # never 0 again after an answer, else the next query returns at once


def test_header_index_reads_the_header_or_zero() -> None:
    assert header_index({"X-Nomad-Index": "42"}, "X-Nomad-Index") == 42
    assert header_index({}, "X-Nomad-Index") == 0
    assert header_index({"X-Consul-Index": "x"}, "X-Consul-Index") == 0
    assert header_index({"X-Consul-Index": ""}, "X-Consul-Index") == 0


class Script:
    """A query that answers from a script and records the index of every call."""

    def __init__(self, answers: list[tuple[str, int] | Exception]) -> None:
        self.answers: Iterator[tuple[str, int] | Exception] = iter(answers)
        self.indexes: list[int] = []

    async def __call__(self, index: int) -> tuple[str, int]:
        self.indexes.append(index)
        answer = next(self.answers, None)
        if answer is None:
            await asyncio.sleep(3600)  # like a blocking query with nothing new
            raise AssertionError("unreachable")
        if isinstance(answer, Exception):
            raise answer
        await asyncio.sleep(0.06)  # slower than a spin: the loop must not pause for it
        return answer


async def collect(script: Script, count: int, **kwargs: object) -> list[str]:
    out: list[str] = []

    async def run() -> None:
        async for value in follow(script, retry_on=Flaky, on_retry=lambda e, d: None, **kwargs):  # type: ignore[arg-type]
            out.append(value)
            if len(out) == count:
                return

    await asyncio.wait_for(run(), timeout=10)
    return out


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    attempts: list[int] = []

    async def instant(attempt: int, **_: float) -> float:
        attempts.append(attempt)
        return 0.0

    monkeypatch.setattr(blocking, "sleep_backoff", instant)
    return attempts


def test_yields_the_first_answer_then_only_changes() -> None:
    script = Script([("a", 5), ("a", 5), ("b", 7), ("c", 9)])
    assert asyncio.run(collect(script, 3)) == ["a", "b", "c"]
    assert script.indexes == [0, 5, 5, 7]  # a plain read first, then each blocking query from the last index


def test_resumes_from_a_given_index() -> None:
    script = Script([("same", 3), ("new", 4)])
    assert asyncio.run(collect(script, 1, index=3)) == ["new"]
    assert script.indexes == [3, 3]


def test_an_index_that_goes_backwards_starts_over_with_a_plain_read() -> None:
    script = Script([("a", 10), ("restored", 4), ("b", 6)])
    assert asyncio.run(collect(script, 3)) == ["a", "restored", "b"]
    assert script.indexes == [0, 10, 0]


def test_retries_transient_errors_with_backoff_and_keeps_the_index(no_backoff: list[int]) -> None:
    heard: list[str] = []
    script = Script([("a", 5), Flaky("500"), Flaky("500"), ("b", 6), Flaky("again"), ("c", 8)])

    async def run() -> list[str]:
        out: list[str] = []
        async for value in follow(script, retry_on=Flaky, on_retry=lambda e, d: heard.append(str(e))):
            out.append(value)
            if len(out) == 3:
                break
        return out

    assert asyncio.run(asyncio.wait_for(run(), 10)) == ["a", "b", "c"]
    assert heard == ["500", "500", "again"]
    assert no_backoff == [0, 1, 0], "the backoff grows while failures repeat, and starts over after a success"
    assert script.indexes == [0, 5, 5, 5, 6, 6]


def test_other_errors_end_the_loop() -> None:
    script = Script([("a", 5), Fatal("403")])
    with pytest.raises(Fatal):
        asyncio.run(collect(script, 2))


class FakeClock:
    """blocking's clock and sleep: time passes only when the loop sleeps, and each sleep is recorded."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def test_min_interval_spaces_the_queries_so_changes_gather(monkeypatch: pytest.MonkeyPatch) -> None:
    """A query whose state changes all the time answers at once every time: with `min_interval`, each query
    starts that long after the one before, the first at once (the changes between gather into one answer)."""
    clock = FakeClock()
    monkeypatch.setattr(blocking, "time", clock)
    monkeypatch.setattr(blocking, "asyncio", clock)
    starts: list[float] = []

    async def busy(index: int) -> tuple[int, int]:
        starts.append(clock.now)
        clock.now += 0.01  # the answer takes 10 ms
        return index + 1, index + 1  # a new index at every answer

    async def run(**kwargs: float) -> None:
        async for value in follow(busy, retry_on=Flaky, on_retry=lambda e, d: None, **kwargs):
            if value >= 4:
                return

    asyncio.run(run(min_interval=0.25))
    assert [round(s - starts[0], 6) for s in starts] == [0.0, 0.25, 0.5, 0.75]
    assert clock.sleeps == [0.24, 0.24, 0.24], "only the time the last query did not take is slept"

    starts.clear(), clock.sleeps.clear()
    asyncio.run(run())
    assert clock.sleeps == [], "without it, a changed state is asked again at once"
