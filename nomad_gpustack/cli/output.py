"""How the CLI talks to people: errors and warnings on stderr, results on stdout, colour only on a terminal."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

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


def report(exc: NomadgsError) -> None:
    """One line per problem; never a traceback."""
    from ..errors import InputError

    if isinstance(exc, InputError):
        for problem in exc.problems:
            error(str(problem))
    else:
        for line in str(exc).splitlines() or ["failed"]:
            error(line)


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


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
