"""Continuous chat traffic through the gateway, for rollouts: client threads that send streamed and plain chat
requests back to back and note how each one went.

A request fails when it gets a 5xx (or any status other than 200), when its stream ends without `data: [DONE]`
or is cut, or on a connection error. The pause a client saw is the longest wait for the next piece of an
answer: for a plain request the whole request, for a stream the wait for its first chunk and between chunks.
Used by tests/test_e2e_rollout.py and bench/rollout_bench.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

PROMPT = "Count from one to five."


@dataclass(frozen=True)
class Outcome:
    """One request: when it started and ended (monotonic), the longest pause within it, and what went wrong."""

    started: float
    ended: float
    streamed: bool
    pause: float
    failure: str = ""  # empty when it succeeded


@dataclass
class Window:
    """The requests that started within a span of time, summed up."""

    outcomes: list[Outcome]

    @property
    def served(self) -> int:
        return sum(1 for o in self.outcomes if not o.failure)

    @property
    def failures(self) -> list[str]:
        return [o.failure for o in self.outcomes if o.failure]

    @property
    def streams(self) -> int:
        return sum(1 for o in self.outcomes if o.streamed and not o.failure)

    @property
    def longest_pause(self) -> float:
        return max((o.pause for o in self.outcomes), default=0.0)


@dataclass
class Traffic:
    """`clients` threads sending requests to `base_url` (the gateway's /v1) until stopped; client i streams
    every other request, starting with a stream when i is even."""

    base_url: str
    model: str
    clients: int = 2
    max_tokens: int = 8
    timeout: float = 60.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for i in range(self.clients):
            thread = threading.Thread(target=self._client, args=(i,), name=f"traffic-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def mark(self) -> float:
        """A point in time to count from (see `since`)."""
        return time.monotonic()

    def since(self, mark: float, until: float | None = None) -> Window:
        """The requests that started at or after `mark` (and before `until`) and have ended."""
        with self._lock:
            return Window([o for o in self.outcomes if o.started >= mark and (until is None or o.started < until)])

    def served_since(self, mark: float) -> int:
        return self.since(mark).served

    def _client(self, index: int) -> None:
        with httpx.Client(timeout=self.timeout) as http:
            turn = index
            while not self._stop.is_set():
                outcome = self._one(http, stream=turn % 2 == 0)
                turn += 1
                with self._lock:
                    self.outcomes.append(outcome)

    def _one(self, http: httpx.Client, stream: bool) -> Outcome:
        body = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "stream": stream,
            "messages": [{"role": "user", "content": PROMPT}],
        }
        started = last = time.monotonic()
        pause = 0.0
        failure = ""
        try:
            with http.stream("POST", f"{self.base_url}/chat/completions", json=body) as response:
                if response.status_code != 200:
                    failure = f"HTTP {response.status_code}: {response.read().decode(errors='replace')[:300]}"
                elif stream:
                    done = False
                    for line in response.iter_lines():
                        now = time.monotonic()
                        pause, last = max(pause, now - last), now
                        if line.strip() == "data: [DONE]":
                            done = True
                    if not done:
                        failure = "the stream ended without data: [DONE]"
                else:
                    answer = json.loads(response.read())
                    if not answer.get("choices"):
                        failure = f"an answer without choices: {answer}"
        except (httpx.HTTPError, ValueError) as exc:
            failure = f"{type(exc).__name__}: {exc}"
        ended = time.monotonic()
        pause = max(pause, ended - last)
        return Outcome(started, ended, stream, pause, failure)


@contextmanager
def running_traffic(base_url: str, model: str, clients: int = 2, max_tokens: int = 8) -> Iterator[Traffic]:
    """Traffic for the duration of the block."""
    traffic = Traffic(base_url, model, clients=clients, max_tokens=max_tokens)
    traffic.start()
    try:
        yield traffic
    finally:
        traffic.stop()
