"""The one error hierarchy: errors that reach the user in plain words, never as a traceback.

Every domain error subclasses one of the classes below; its class decides the exit code.

    NomadgsError              1  the operation ran and failed
    │   └── serving.gateway.GatewayError      the gateway cannot start (address taken, ...)
    ├── InputError            2  bad input (a file, flag or name); nothing was sent anywhere
    ├── ServiceError          1  a service (Nomad, Consul, a model server) answered with an error
    │   ├── nomad.client.NomadError           Nomad answered an error status
    │   │   ├── NomadRejected              2  400: Nomad refused the request as malformed
    │   │   │   └── JobRefused             2  a 500 listing the job's validation errors (final)
    │   │   ├── IndexConflict                 check-and-set lost a race
    │   │   ├── TransientError                worth retrying (5xx, connection trouble)
    │   │   └── NomadDenied                5  403 (also an AccessError)
    │   ├── serving.chat.ChatError            a model endpoint failed
    │   └── serving.discovery.NoInstanceError the model has no (healthy) instance
    ├── EstimateError         1  the memory estimate cannot be made
    │   ├── estimate.gguf.GGUFError, estimate.safetensors.SafetensorsError, estimate.facts.ModelFactsError
    │   │                                     a model's headers are damaged, or lack what the estimate needs
    │   ├── estimate.local.ModelReadError  2  a local model path that cannot be read as a model
    │   ├── estimate.plan.NoFit               no number or size of GPUs fits the model
    │   └── estimate.hub.HubUnavailable       the Hub has no answer (not found, refused, offline)
    │       └── HubUnreachable             5  no answer at all (also an UnreachableError)
    └── UnreachableError      5  a service cannot be reached, or refuses us (TLS, ACL)
        ├── nomad.client.NomadUnavailable     a 5xx or a broken connection (also a TransientError: retried first)
        ├── nomad.client.NotNomad             the address answers, but not as Nomad's HTTP API
        └── serving.discovery.DiscoveryError  Consul unreachable or unusable

Input problems name the file, line and field, say what is wrong and how to fix it (`Problem`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

# Exit codes shared by every command (documented in the README and in `--help`).
EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran but the outcome is a failure (deployment failed, ...)
EXIT_BAD_INPUT = 2  # the input files or arguments are wrong; nothing was sent anywhere
EXIT_PLACEMENT = 3  # Nomad cannot place the job (no node fits)
EXIT_TIMEOUT = 4  # --timeout passed before the deployment finished
EXIT_CONNECTION = 5  # Nomad (or Consul) could not be reached or refused the request
EXIT_INTERRUPTED = 130  # Ctrl-C


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

    exit_code = EXIT_FAILURE


class ServiceError(NomadgsError):
    """A service answered, with an error."""

    exit_code = EXIT_FAILURE


class UnreachableError(NomadgsError):
    """A service could not be reached, or refused access (TLS, ACL token)."""

    exit_code = EXIT_CONNECTION


class EstimateError(NomadgsError):
    """The memory estimate cannot be made: a model's metadata cannot be had or read, or no GPUs fit it."""

    exit_code = EXIT_FAILURE


class InputError(NomadgsError):
    """Bad input: a file or an argument that cannot be used as it is."""

    exit_code = EXIT_BAD_INPUT

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
    import difflib

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
