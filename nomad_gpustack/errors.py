"""The one error hierarchy: errors that reach the user in plain words, never as a traceback.

Every domain error subclasses one of the classes below. Its exit code is decided in one table, `EXIT_CODES`
(read through `exit_code_for`), with a row for every class, so that no code depends on the order of a class's
bases (NomadDenied is a NomadError and an UnreachableError: its row says 5).

    NomadgsError                                    1  the operation ran and failed
    ├── InputError                                  2  bad input (a file, flag or name); nothing was sent anywhere
    ├── ServiceError                                1  a service (Nomad, Consul, a model server) answered an error
    │   ├── nomad.client.NomadError                 1  Nomad answered an error status
    │   │   ├── NomadRejected                       2  400: Nomad refused the request as malformed
    │   │   │   └── JobRefused                      2  a 500 listing the job's validation errors (final)
    │   │   ├── IndexConflict                       1  check-and-set lost a race
    │   │   ├── TransientError                      1  worth retrying (5xx, connection trouble)
    │   │   │   └── NomadUnavailable                5  ... that persists (also an UnreachableError)
    │   │   ├── NomadDenied                         5  403: no token, an unknown one (also an UnreachableError)
    │   │   └── NotNomad                            5  the address answers, but not as Nomad's API (also one)
    │   ├── nomad.logs.NoLogYet                     1  the task has not written its log yet
    │   ├── serving.chat.ChatError                  1  a model endpoint failed
    │   └── serving.discovery.NoInstanceError       1  the model has no (healthy) instance
    ├── EstimateError                               1  the memory estimate cannot be made
    │   ├── estimate.gguf.GGUFError                 1  a GGUF header this reader does not understand
    │   ├── estimate.safetensors.SafetensorsError   1  a safetensors header (or index) it does not understand
    │   ├── estimate.facts.ModelFactsError          1  the headers lack something the estimate needs
    │   ├── estimate.local.ModelReadError           2  a local model path that cannot be read as a model
    │   ├── estimate.plan.NoFit                     1  no number or size of GPUs fits the model
    │   └── estimate.hub.HubUnavailable             1  the Hub has no answer (refused, offline)
    │       ├── NotFound                            1  the Hub answered 404 for a file
    │       └── HubUnreachable                      5  no answer at all (also an UnreachableError)
    ├── UnreachableError                            5  a service cannot be reached, or refuses us (TLS, ACL token)
    │   └── serving.discovery.DiscoveryError        5  Consul unreachable or unusable
    │       └── serving.consul.ConsulDenied         5  Consul refused the request: the token lacks a permission
    ├── nomad.runner.AfterRegistration              -  its cause's code: a failure after the job was registered
    └── serving.gateway.errors.GatewayError         1  the gateway cannot start (address taken, ...)

Input problems name the file, line and field, say what is wrong and how to fix it (`Problem`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import overload

# Exit codes shared by every command (documented in the README and in `--help`).
EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran but the outcome is a failure (deployment failed, ...)
EXIT_BAD_INPUT = 2  # the input files or arguments are wrong; nothing was sent anywhere
EXIT_PLACEMENT = 3  # Nomad cannot place the job (no node fits)
EXIT_TIMEOUT = 4  # --timeout passed before the deployment finished
EXIT_CONNECTION = 5  # Nomad (or Consul) could not be reached or refused the request
EXIT_INTERRUPTED = 130  # Ctrl-C

# `nomadgs plan` keeps the exit codes of `nomad job plan` instead: every error, bad input included, is 255.
PLAN_NO_CHANGES, PLAN_CHANGES, PLAN_ERROR = 0, 1, 255

# The exit code of every error, by the class's full name (this module, at the bottom of the package, imports
# none of them). Every NomadgsError subclass of the package has its row: tests/test_errors.py checks that, and
# that each row names a class that exists. None: the code of the error it wraps (its `cause`).
EXIT_CODES: dict[str, int | None] = {
    "nomad_gpustack.errors.NomadgsError": EXIT_FAILURE,
    "nomad_gpustack.errors.InputError": EXIT_BAD_INPUT,
    "nomad_gpustack.errors.ServiceError": EXIT_FAILURE,
    "nomad_gpustack.errors.UnreachableError": EXIT_CONNECTION,
    "nomad_gpustack.nomad.client.NomadError": EXIT_FAILURE,
    "nomad_gpustack.nomad.client.NomadRejected": EXIT_BAD_INPUT,
    "nomad_gpustack.nomad.client.JobRefused": EXIT_BAD_INPUT,
    "nomad_gpustack.nomad.client.IndexConflict": EXIT_FAILURE,
    "nomad_gpustack.nomad.client.TransientError": EXIT_FAILURE,
    "nomad_gpustack.nomad.client.NomadUnavailable": EXIT_CONNECTION,
    "nomad_gpustack.nomad.client.NomadDenied": EXIT_CONNECTION,
    "nomad_gpustack.nomad.client.NotNomad": EXIT_CONNECTION,
    "nomad_gpustack.nomad.logs.NoLogYet": EXIT_FAILURE,
    "nomad_gpustack.nomad.runner.AfterRegistration": None,
    "nomad_gpustack.serving.chat.ChatError": EXIT_FAILURE,
    "nomad_gpustack.serving.discovery.NoInstanceError": EXIT_FAILURE,
    "nomad_gpustack.serving.discovery.DiscoveryError": EXIT_CONNECTION,
    "nomad_gpustack.serving.consul.ConsulDenied": EXIT_CONNECTION,
    "nomad_gpustack.serving.gateway.errors.GatewayError": EXIT_FAILURE,
    "nomad_gpustack.errors.EstimateError": EXIT_FAILURE,
    "nomad_gpustack.estimate.gguf.GGUFError": EXIT_FAILURE,
    "nomad_gpustack.estimate.safetensors.SafetensorsError": EXIT_FAILURE,
    "nomad_gpustack.estimate.facts.ModelFactsError": EXIT_FAILURE,
    "nomad_gpustack.estimate.local.ModelReadError": EXIT_BAD_INPUT,  # a --model path: the user's input
    "nomad_gpustack.estimate.plan.NoFit": EXIT_FAILURE,
    "nomad_gpustack.estimate.hub.HubUnavailable": EXIT_FAILURE,
    "nomad_gpustack.estimate.hub.NotFound": EXIT_FAILURE,
    "nomad_gpustack.estimate.hub.HubUnreachable": EXIT_CONNECTION,  # also a HubUnavailable (1): its own row
    # Not ours, but ending a command all the same:
    "builtins.KeyboardInterrupt": EXIT_INTERRUPTED,
    "click.exceptions.Abort": EXIT_INTERRUPTED,  # Click's Ctrl-C (at a prompt)
    "click.exceptions.UsageError": EXIT_BAD_INPUT,  # unknown flag, missing argument, bad choice
    "click.exceptions.ClickException": EXIT_FAILURE,
    "builtins.RecursionError": EXIT_BAD_INPUT,  # input nested too deeply to process
    "builtins.BrokenPipeError": EXIT_FAILURE,  # a reader left before the outcome was known: no success
}


@overload
def exit_code_for(exc: NomadgsError | KeyboardInterrupt) -> int: ...


@overload
def exit_code_for(exc: BaseException) -> int | None: ...


def exit_code_for(exc: BaseException) -> int | None:
    """The exit code of `exc`: its class's row in `EXIT_CODES` (a class without one, defined outside the
    package, takes the row of its nearest ancestor that has one); None for an exception no row covers (a bug)."""
    for cls in type(exc).__mro__:
        name = f"{cls.__module__}.{cls.__qualname__}"
        if name in EXIT_CODES:
            code = EXIT_CODES[name]
            if code is None:
                cause = getattr(exc, "cause", None)
                return exit_code_for(cause) if isinstance(cause, BaseException) else EXIT_FAILURE
            return code
    return None


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, located as precisely as we know."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    field: str | None = None
    hint: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line:
                where += f":{self.line}"
                if self.column:
                    where += f":{self.column}"
            where += ": "
        field = f"{self.field}: " if self.field else ""
        text = f"{where}{field}{self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


class HintedValueError(ValueError):
    """A bad value and how to fix it, raised by validators: becomes a Problem's message and hint."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


class NomadgsError(Exception):
    """Base class of errors shown to the user without a traceback."""

    @property
    def exit_code(self) -> int:
        """The exit code the error ends a command with (`exit_code_for`)."""
        return exit_code_for(self)


class ServiceError(NomadgsError):
    """A service answered, with an error."""


class UnreachableError(NomadgsError):
    """A service could not be reached, or refused access (TLS, ACL token)."""


class EstimateError(NomadgsError):
    """The memory estimate cannot be made: a model's metadata cannot be had or read, or no GPUs fit it."""


class InputError(NomadgsError):
    """Bad input: a file or an argument that cannot be used as it is."""

    def __init__(self, problems: Problem | Sequence[Problem]) -> None:
        self.problems: tuple[Problem, ...] = in_line_order((problems,) if isinstance(problems, Problem) else problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def merge(cls, errors: Iterable[InputError]) -> InputError:
        return cls([p for e in errors for p in e.problems])

    def reworded(self, words: Sequence[tuple[str, str]]) -> InputError:
        """The same problems with each `(text, replacement)` applied to their messages, fields and hints: the
        command's flags named as another interface names them (a filter's arguments)."""

        def sub(text: str | None) -> str | None:
            if text is None:
                return None
            for old, new in words:
                text = text.replace(old, new)
            return text

        return InputError(
            [replace(p, message=sub(p.message) or "", field=sub(p.field), hint=sub(p.hint)) for p in self.problems]
        )


def in_line_order(problems: Iterable[Problem]) -> tuple[Problem, ...]:
    """Problems file by file (in the order the files first appear), each file's from top to bottom; those
    without a line (about the whole file, or "... and 5 more problems") after the located ones."""
    listed = list(problems)
    files: dict[str | None, int] = {}
    for problem in listed:
        files.setdefault(problem.file, len(files))
    unlocated = float("inf")
    return tuple(sorted(listed, key=lambda p: (files[p.file], p.line or unlocated, p.column or 0)))


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """Return the candidate closest to `word` (case-insensitive), or None when nothing is close."""
    options = {c.lower(): c for c in candidates}
    lowered = word.lower()
    if lowered in options:
        return options[lowered]
    match = difflib.get_close_matches(lowered, list(options), n=1, cutoff=0.6)
    return options[match[0]] if match else None


def suggestion(word: str, candidates: Iterable[str], *, quote: str = "'") -> str | None:
    """A "did you mean" hint, or None."""
    best = did_you_mean(word, candidates)
    return f"did you mean {quote}{best}{quote}?" if best else None
