"""Injected faults and actions: the next requests matching a path pattern get an error status, a dropped
connection, or trigger an action (a concurrent change) just before their answer is sent."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Fault:
    pattern: re.Pattern[str]
    method: str | None  # None: any method
    remaining: int
    drop: bool  # close the connection without answering
    status: int = 500
    body: str = ""
    action: Callable[[], object] | None = None  # instead of a fault: run this, then answer normally


class Faults:
    """Rules are consumed in the order they were added; each applies to its next `count` matching requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []

    def fail(
        self,
        path_regex: str,
        status: int = 500,
        count: int = 1,
        body: str = "injected fault",
        method: str | None = None,
    ) -> None:
        """The next `count` requests whose path matches `path_regex` (re.search) get `status` with a text body."""
        self._add(Fault(re.compile(path_regex), method, count, drop=False, status=status, body=body))

    def drop(self, path_regex: str, count: int = 1, method: str | None = None) -> None:
        """The next `count` matching requests see their connection closed with no response at all."""
        self._add(Fault(re.compile(path_regex), method, count, drop=True))

    def after(self, method: str, path_regex: str, action: Callable[[], object], count: int = 1) -> None:
        """Run `action` when the next `count` matching requests have been handled, just before their answer
        is sent: the client gets the answer computed before the action, and its next request sees the action's
        effect, without a race."""
        self._add(Fault(re.compile(path_regex), method, count, drop=False, action=action))

    def _add(self, fault: Fault) -> None:
        if fault.remaining < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._rules.append(fault)

    def take(self, method: str, path: str, actions: bool = False) -> Fault | None:
        """The first fault (or, with `actions`, the first action) for this request, consuming one use."""
        with self._lock:
            for fault in self._rules:
                kind_matches = (fault.action is not None) == actions
                if kind_matches and fault.pattern.search(path) and fault.method in (None, method):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._rules.remove(fault)
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
