"""Options and arguments shared by several commands, as Click decorators."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

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


def output_option(f: F) -> F:
    """`--output text|json`: the result format on stdout."""
    return click.option(
        "--output", type=Choice(("text", "json")), default="text", help="result format (default: text)"
    )(f)


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


def duration_seconds(text: str, flag: str) -> float:
    """A duration flag (`30s`, `10m`, `2h`) in seconds; InputError naming the flag when it is not one."""
    from ..durations import SECOND, parse_duration
    from ..errors import InputError, Problem

    try:
        return parse_duration(text) / SECOND
    except ValueError as exc:
        raise InputError(Problem(str(exc), field=flag)) from None
