"""How the CLI talks to people: errors and warnings on stderr, results on stdout, colour only on a terminal.

A reader that leaves early (`nomadgs render ... --check | head -5`) only silences the output: the command goes
on to its outcome, and its outcome decides the exit code (`quiet_when_readers_leave`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import InputError

if TYPE_CHECKING:
    from ..errors import NomadgsError


def _colour(stream: TextIO, code: str, text: str) -> str:
    if os.environ.get("NO_COLOR") or not stream.isatty():
        return text
    return f"\033[{code}m{text}\033[0m"


def error(message: str) -> None:
    print(f"{_colour(sys.stderr, '31;1', 'error:')} {message}", file=sys.stderr)


def warning(message: str) -> None:
    print(f"{_colour(sys.stderr, '33;1', 'warning:')} {message}", file=sys.stderr)


def note(message: str) -> None:
    print(f"{_colour(sys.stderr, '36', 'note:')} {message}", file=sys.stderr)


def info(message: str) -> None:
    print(message, file=sys.stderr)


def problem_lines(exc: NomadgsError) -> list[str]:
    """What went wrong, one line per problem (never a traceback)."""
    if isinstance(exc, InputError):
        return [str(problem) for problem in exc.problems]
    return str(exc).splitlines() or ["failed"]


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def emit_failure(code: int, errors: Sequence[str], **extra: Any) -> None:
    """The one JSON document of a command run with `--format json` that failed, on stdout: the exit code and
    one line per problem (the same lines as on stderr), plus what the command had done before (`extra`)."""
    emit_json({"ok": False, "exit_code": code, "errors": list(errors), **extra})


class _Quiet:
    """A standard stream whose reader may leave: the first broken pipe points the stream at /dev/null and every
    later write is dropped, instead of raising into the command (which would lose its outcome)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._leave()
        return len(text)

    def writelines(self, lines: Iterator[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._leave()

    def _leave(self) -> None:
        self.gone = True
        # Flushing at exit must not meet the broken pipe again: what is still buffered goes to /dev/null.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, buffer ...
        return getattr(self._stream, name)


@contextlib.contextmanager
def quiet_when_readers_leave() -> Iterator[None]:
    """Within this block, a closed stdout or stderr silences that stream and nothing else."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Quiet(sys.stdout), _Quiet(sys.stderr)
    try:
        yield
    finally:
        quiet = sys.stdout, sys.stderr
        for stream in quiet:
            stream.flush()  # a pipe that broke now is still silenced, not raised
        sys.stdout, sys.stderr = saved


def reader_left() -> bool:
    """Whether stdout's reader has gone (`nomadgs logs -f NAME | head`): a command that streams ends then."""
    return isinstance(sys.stdout, _Quiet) and sys.stdout.gone


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> list[str]:
    """Rows in columns as wide as their widest cell: nothing is cut (a long backend name keeps its version).

    `right` lists the columns aligned to the right (numbers); the last column is not padded.
    """
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = []
    for row in [list(headers), *map(list, rows)]:
        cells = [
            cell.rjust(widths[i]) if i in right else (cell if i == len(row) - 1 else cell.ljust(widths[i]))
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines
