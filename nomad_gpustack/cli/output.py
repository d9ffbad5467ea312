"""How the CLI talks to people: errors and warnings on stderr, results on stdout, colour only on a terminal."""

from __future__ import annotations

import json
import os
import sys
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
