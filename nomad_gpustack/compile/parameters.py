"""Deployment `backend_parameters` to argv, as GPUStack's `_flatten_backend_param` builds them.

Each list element that starts with a flag (`-x`, `--x`, not a negative number) is split like a shell would,
except that a JSON value after the flag stays one argument; other elements stay one argument each. With the
backend's `parameter_format`, each `--key value` pair becomes `--key value` (space) or `--key=value` (equal);
options with several values stay space-separated and single-dash options stay as written.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..spec.deployment import Deployment
    from ..spec.specfile import Sourced

_FLAG = re.compile(r"-{1,2}[A-Za-z]")
_KEY_REST = re.compile(r"(-{1,2}[^\s=]+)(?:=|\s+)(.*)", re.S)


@lru_cache(maxsize=4096)
def split_words(text: str) -> tuple[str, ...]:
    """Words of a command as a POSIX shell splits them (quotes, escapes), never running a shell.

    Cached: the same backend command is split for every deployment that uses it, and shlex reads one
    character at a time. Raises ValueError on unbalanced quotes.
    """
    return tuple(shlex.split(text, comments=False, posix=True))


def is_flag(token: str) -> bool:
    """`--max-model-len` and `-m` are flags; `-1` and `-0.5` are values."""
    return bool(_FLAG.match(token))


def _tokens(element: str) -> list[str]:
    if not is_flag(element):
        return [element]
    match = _KEY_REST.fullmatch(element.strip())
    if match:
        key, rest = match.groups()
        rest = rest.strip()
        if rest[:1] in "{[":
            try:
                json.loads(rest)
            except ValueError:
                pass
            else:
                return [key, rest]
    return list(split_words(element))


def tokenize(element: str) -> list[str]:
    """argv tokens of one backend_parameters element. Raises ValueError on unbalanced quotes."""
    return _tokens(element)


def split_parameter(deployment: Sourced[Deployment], index: int, element: str) -> list[str]:
    """argv tokens of the deployment's backend_parameters[index] (`element`, its text as far as it is filled in).

    Raises InputError at that element when its quotes do not close: the one message for the argv and the estimate.
    """
    try:
        return _tokens(element)
    except ValueError as exc:
        raise deployment.error(
            ("backend_parameters", index), f"cannot split the parameter: {exc}", hint="check the quotes"
        ) from None


def apply_format(tokens: Sequence[str], parameter_format: str | None) -> list[str]:
    """Rewrite `--key value` pairs as the backend's parameter_format asks; no format keeps them as they are."""
    if parameter_format not in ("space", "equal"):
        return list(tokens)
    out: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("--"):
            out.append(token)
            continue
        key, eq, value = token.partition("=")
        values = [value] if eq else []
        while i < len(tokens) and not is_flag(tokens[i]):
            values.append(tokens[i])
            i += 1
        if parameter_format == "equal" and len(values) == 1:
            out.append(f"{key}={values[0]}")
        else:
            out.append(key)
            out.extend(values)
    return out
