"""Options and arguments shared by several commands, as Click decorators.

One scheme for every command: `--format FORMAT` says how the result is printed (text or json; yaml for `backends
show`; json or hcl for the job files of `render`), `-o/--output PATH` says where a command writes files (only
`render` does). `--output FORMAT`, the older spelling of `--format` on the commands that print results, still
works and is no longer shown.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..errors import InputError, Problem
from .base import AliasedOption
from .completion import complete_deployment_files

F = TypeVar("F", bound=Callable[..., Any])


class Choice(click.Choice):  # type: ignore[type-arg]  # generic only in newer Click releases
    """Click's Choice, whose error keeps the words `nomadgs` always used: "invalid choice: 'yaml' (choose from
    json, hcl)". Completion of the choices is Click's."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value in self.choices:
            return value
        choices = ", ".join(str(c) for c in self.choices)
        self.fail(f"invalid choice: {value!r} (choose from {choices})", param, ctx)


def backends_option(f: F) -> F:
    """`--backends PATH` (repeatable): backend files or folders added to the built-in catalog."""
    return click.option(
        "--backends",
        metavar="PATH",
        type=click.Path(path_type=Path),
        multiple=True,
        help="backend YAML file or folder added to the built-in catalog (repeatable; later ones override)",
    )(f)


def model_option(f: F) -> F:
    """`--model PATH`: the model's headers on this machine, for the memory estimate (instead of the Hub)."""
    return click.option(
        "--model",
        "model",
        metavar="PATH",
        type=click.Path(path_type=Path),
        help="the model on this machine (a GGUF file, or a folder with config.json and safetensors headers) "
        "for the memory estimate; only headers are read (default: the Hugging Face Hub and its cache)",
    )(f)


def format_option(*choices: str) -> Callable[[F], F]:
    """`--format text|json` (or the `choices` given, the first the default): how the result is printed on
    stdout. With json, every outcome, a failure included, is one JSON document (see root.exit_code)."""
    formats = choices or ("text", "json")

    def decorate(f: F) -> F:
        return click.option(
            "--format",
            "fmt",
            cls=AliasedOption,
            aliases=("--output",),  # the older spelling
            result_format=True,
            type=Choice(formats),
            default=formats[0],
            show_choices=True,
            help=f"result format (default: {formats[0]})",
        )(f)

    return decorate


def deployments_argument(f: F) -> F:
    """DEPLOYMENT...: one or more deployment files (checked by the loader, which reports every bad file)."""
    return click.argument(
        "deployments",
        metavar="DEPLOYMENT...",
        nargs=-1,
        required=True,
        type=click.Path(path_type=Path),
        shell_complete=complete_deployment_files,
    )(f)


def deployment_argument(f: F) -> F:
    """DEPLOYMENT: exactly one deployment file."""
    return click.argument(
        "deployment",
        metavar="DEPLOYMENT",
        type=click.Path(path_type=Path),
        shell_complete=complete_deployment_files,
    )(f)


def size_bytes(text: str, flag: str) -> int:
    """A size flag (`128MiB`, `1GiB`) in bytes; InputError naming the flag when it is not one."""
    from ..sizes import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise InputError(Problem(str(exc), field=flag)) from None


def duration_seconds(text: str, flag: str) -> float:
    """A duration flag (`30s`, `10m`, `2h`) in seconds; InputError naming the flag when it is not one."""
    from ..durations import SECOND, parse_duration

    try:
        return parse_duration(text) / SECOND
    except ValueError as exc:
        raise InputError(Problem(str(exc), field=flag)) from None
