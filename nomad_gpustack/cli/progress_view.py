"""Showing a rollout's progress: a live block on a terminal, plain timestamped lines anywhere else."""

from __future__ import annotations

import os
import shutil
import sys
from typing import TextIO

from ..nomad.rollout import Assessment, Replica

_STATE_COLOURS = {
    "pending": "2",
    "scheduled": "36",
    "downloading": "34",
    "starting": "33",
    "running": "32",
    "error": "31;1",
}
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _replica_line(replica: Replica, colour: bool) -> str:
    state = f"{replica.state:<11}"
    if colour:
        state = f"\033[{_STATE_COLOURS[replica.state]}m{state}\033[0m"
    node = f" on {replica.node}" if replica.node else ""
    return f"  replica {replica.index}  {state} {replica.detail}{node if replica.state != 'scheduled' else ''}"


class LiveView:
    """Redraws a small block in place: one header line and one line per replica."""

    def __init__(self, title: str, stream: TextIO | None = None) -> None:
        self.title = title
        self.stream = stream or sys.stderr
        self.colour = not os.environ.get("NO_COLOR")
        self.drawn = 0
        self.frame = 0

    def _clear(self) -> None:
        if self.drawn:
            self.stream.write(f"\033[{self.drawn}F\033[J")
            self.drawn = 0

    def update(self, assessment: Assessment, elapsed: float) -> None:
        self._clear()
        self.frame += 1
        mark = "" if assessment.done else _SPINNER[self.frame % len(_SPINNER)] + " "
        lines = [f"{mark}{self.title} · {assessment.phase} · {assessment.headline} · {_clock(elapsed)}"]
        lines += [_replica_line(r, self.colour) for r in assessment.replicas]
        for line in lines:
            self.stream.write(line[:300] + "\n")
        self.stream.flush()
        self.drawn = len(lines)

    def note(self, message: str) -> None:
        self._clear()
        self.stream.write(f"  ! {message}\n")
        self.stream.flush()


class PlainView:
    """One timestamped line per change, for logs and CI."""

    def __init__(self, title: str, stream: TextIO | None = None) -> None:
        self.title = title
        self.stream = stream or sys.stderr
        self.last_header = ""
        self.last_replicas: dict[int, tuple[str, str]] = {}

    def update(self, assessment: Assessment, elapsed: float) -> None:
        stamp = f"[{_clock(elapsed)}]"
        header = f"{assessment.phase}: {assessment.headline}"
        if header != self.last_header:
            self.stream.write(f"{stamp} {self.title}: {header}\n")
            self.last_header = header
        for replica in assessment.replicas:
            key = (replica.state, replica.detail)
            if self.last_replicas.get(replica.index) != key:
                self.last_replicas[replica.index] = key
                node = f" [{replica.node}]" if replica.node and replica.state != "scheduled" else ""
                self.stream.write(f"{stamp}   replica {replica.index}: {replica.state} - {replica.detail}{node}\n")
        self.stream.flush()

    def note(self, message: str) -> None:
        self.stream.write(f"  ! {message}\n")
        self.stream.flush()


def view_for(title: str) -> LiveView | PlainView:
    """Live on a terminal, plain lines when stderr is a pipe or a file."""
    if sys.stderr.isatty() and os.environ.get("TERM") != "dumb":
        return LiveView(title)
    return PlainView(title)


class FleetView:
    """A fleet's rollouts on a terminal: a block redrawn in place, one line per rollout in flight (as many as the
    terminal has room for) under a count of those done; a rollout that ends leaves the block as one line above
    it, so the block never grows past the screen whatever the size of the fleet."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.live: dict[str, str] = {}
        self.ended = 0
        self.drawn = 0
        self.frame = 0

    def reporter(self, title: str) -> _FleetRow:
        return _FleetRow(self, title)

    def show(self, title: str, assessment: Assessment, elapsed: float) -> None:
        self.frame += 1
        mark = "" if assessment.done else _SPINNER[self.frame % len(_SPINNER)] + " "
        self.live[title] = f"{mark}{title} · {assessment.phase} · {assessment.headline} · {_clock(elapsed)}"
        self._draw()

    def ended_with(self, title: str, line: str) -> None:
        """The rollout of `title` is over: its line leaves the block, printed once above it."""
        self.live.pop(title, None)
        self.ended += 1
        self._clear()
        self.stream.write(line[:300] + "\n")
        self._draw()

    def note(self, message: str) -> None:
        self._clear()
        self.stream.write(f"  ! {message}\n")
        self._draw()

    def _clear(self) -> None:
        if self.drawn:
            self.stream.write(f"\033[{self.drawn}F\033[J")
            self.drawn = 0

    def _draw(self) -> None:
        self._clear()
        room = max(1, shutil.get_terminal_size().lines - 3)
        rows = list(self.live.values())
        lines = [f"{self.ended}/{self.total} done, {len(rows)} rolling out", *rows[:room]]
        if len(rows) > room:
            lines.append(f"… and {len(rows) - room} more")
        for line in lines:
            self.stream.write(line[:300] + "\n")
        self.stream.flush()
        self.drawn = len(lines)


class _FleetRow:
    """One rollout's reporter in a `FleetView`."""

    def __init__(self, view: FleetView, title: str) -> None:
        self.view, self.title = view, title

    def update(self, assessment: Assessment, elapsed: float) -> None:
        self.view.show(self.title, assessment, elapsed)

    def note(self, message: str) -> None:
        self.view.note(f"{self.title}: {message}")


def fleet_view_for(total: int) -> FleetView | None:
    """A fleet's live block on a terminal; None elsewhere (each rollout then writes plain lines)."""
    if sys.stderr.isatty() and os.environ.get("TERM") != "dumb":
        return FleetView(total)
    return None
