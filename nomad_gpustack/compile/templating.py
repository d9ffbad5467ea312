"""The one template expander: GPUStack's `{{placeholder}}` syntax in run commands, entrypoints and files.

GPUStack replaces `{{model_path}}`, `{{port}}`, `{{worker_ip}}`, `{{model_name}}`, `{{gpu_count}}` and
`{{gpu_ids}}`, then `{{VAR}}` from the deployment's environment, and leaves anything else as literal text,
which then reaches the engine as a broken argument. We refuse unknown placeholders instead.

`{{ model_path }}` with spaces inside the braces is the same placeholder (GPUStack users write both). Commands
are split at spaces before placeholders are filled, so `prepare` checks every placeholder of a command and
writes it without the spaces first: split, a spaced placeholder would be three arguments nobody fills.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import did_you_mean

PLACEHOLDERS = ("model_path", "port", "worker_ip", "model_name", "gpu_count", "gpu_ids")
_BRACES = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class PlaceholderError(Exception):
    """A placeholder that cannot be filled; `str()` says what is wrong, `hint` how to fix it."""

    @property
    def hint(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class UnknownPlaceholder(PlaceholderError):
    """A `{{name}}` that is neither a GPUStack placeholder nor a variable of the deployment's env."""

    name: str
    known: tuple[str, ...]
    env: tuple[str, ...]

    def __str__(self) -> str:
        return f"unknown placeholder {{{{{self.name}}}}}"

    @property
    def hint(self) -> str:
        guess = did_you_mean(self.name.strip(), [*self.known, *self.env])
        if guess:
            return f"did you mean {{{{{guess}}}}}?"
        listed = ", ".join(f"{{{{{n}}}}}" for n in self.known)
        env = ", ".join(self.env) if self.env else "none"
        return f"known placeholders: {listed}; env variables: {env}"


@dataclass(frozen=True)
class UnclosedPlaceholder(PlaceholderError):
    """A `{{` with no `}}` after it."""

    text: str

    def __str__(self) -> str:
        return f"'{{{{' is not closed in '{self.text}'"

    @property
    def hint(self) -> str:
        return "write placeholders as {{name}}, e.g. {{model_path}}"


def placeholders_in(text: str) -> list[str]:
    """The names of the `{{...}}` placeholders in a text, in order."""
    return [m.group(1) for m in _BRACES.finditer(text)]


def prepare(text: str, values: Mapping[str, str], env: Mapping[str, str]) -> str:
    """A command with every placeholder checked and written without spaces (`{{ port }}` -> `{{port}}`).

    Raises PlaceholderError for an unknown or unclosed placeholder, so nothing is left to the split.
    """

    def tidy(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values or (_ENV_NAME.fullmatch(name) and name in env):
            return "{{" + name + "}}"
        raise UnknownPlaceholder(name, tuple(values), tuple(sorted(env)))

    tidied = _BRACES.sub(tidy, text)
    rest = _BRACES.sub("", tidied)
    if "{{" in rest:
        start = rest.index("{{")
        raise UnclosedPlaceholder(rest[start : start + 40])
    return tidied


def expand(text: str, values: Mapping[str, str], env: Mapping[str, str], *, strict: bool = True) -> str:
    """Replace every `{{name}}` (or `{{ name }}`) with its value. Raises UnknownPlaceholder for a name we cannot fill.

    With `strict=False` (files rendered by Nomad's template engine) anything else between double braces
    is left for consul-template: `{{ env "X" }}`, `{{ end }}`.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values:
            return values[name]
        if _ENV_NAME.fullmatch(name) and name in env:
            return env[name]
        if not strict:
            return match.group(0)
        raise UnknownPlaceholder(name, tuple(values), tuple(sorted(env)))

    return _BRACES.sub(replace, text)
