"""The Click classes every `nomadgs` command is built from: the help layout, option sections, the lazy group.

Command modules use `command` and `group` from here, so each command gets the same help style (lowercase
headings as `exit codes:` and `environment:` in the epilogs, preformatted tables kept as written) and
records itself when it starts, so that errors can be mapped to the exit codes of the command that failed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

# Where the command that is being parsed or run is recorded (ctx.meta is shared by a context and its children).
RUNNING = "nomadgs.command"


class HelpFormatter(click.HelpFormatter):
    """Click's formatter with lowercase headings (`usage:`, `options:`), like the epilogs' tables."""

    def write_usage(self, prog: str, args: str = "", prefix: str | None = None) -> None:
        super().write_usage(prog, args, "usage: " if prefix is None else prefix)

    def write_heading(self, heading: str) -> None:
        # Click's own headings ("Options", "Commands") only; ours are written as they should read.
        super().write_heading(heading.lower() if heading.isalpha() else heading)


class Context(click.Context):
    formatter_class = HelpFormatter


class SectionOption(click.Option):
    """An option listed under its own heading in `--help` (e.g. the Nomad connection flags)."""

    def __init__(self, *args: Any, section: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.section = section


class Command(click.Command):
    """A nomadgs command. `error_exit_code` replaces the exit code of every error (usage errors included):
    `plan` answers 255 for any error, as `nomad job plan` does."""

    context_class = Context

    def __init__(self, *args: Any, error_exit_code: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.error_exit_code = error_exit_code

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[RUNNING] = self
        return super().parse_args(ctx, args)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {"Options": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None or isinstance(param, click.Argument):
                continue
            sections.setdefault(param.section if isinstance(param, SectionOption) else "Options", []).append(record)
        for heading, records in sections.items():
            if records:
                with formatter.section(heading):
                    formatter.write_dl(records)


class Group(click.Group):
    """A nomadgs command group: its subcommands are nomadgs commands, listed in the order they were added."""

    context_class = Context
    command_class = Command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[RUNNING] = self
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


class LazyGroup(Group):
    """A group whose subcommands are imported only when used, as in Click's documentation ("Lazily loading
    subcommands"): `lazy_subcommands` maps a command name to "package.module:attribute"."""

    def __init__(self, *args: Any, lazy_subcommands: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = dict(lazy_subcommands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *self.lazy_subcommands]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_subcommands:
            return self._lazy_load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def _lazy_load(self, cmd_name: str) -> click.Command:
        module_name, _, attribute = self.lazy_subcommands[cmd_name].partition(":")
        loaded = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(loaded, click.Command):
            raise TypeError(f"{self.lazy_subcommands[cmd_name]} is not a Click command")
        return loaded


def command(name: str, **attrs: Any) -> Callable[[Callable[..., Any]], Command]:
    """`@click.command` making a nomadgs `Command`."""
    made: Callable[[Callable[..., Any]], Command] = click.command(name, cls=Command, **attrs)
    return made


def group(name: str, **attrs: Any) -> Callable[[Callable[..., Any]], Group]:
    """`@click.group` making a nomadgs `Group` (subcommands required; a missing one is a usage error)."""
    made: Callable[[Callable[..., Any]], Group] = click.group(name, cls=Group, no_args_is_help=False, **attrs)
    return made


def preformatted(text: str) -> str:
    """Help text whose paragraphs (tables, examples) Click must print as written, not rewrap."""
    return "\n\n".join(f"\b\n{paragraph}" for paragraph in text.strip("\n").split("\n\n"))


def apply(decorators: Sequence[Callable[[F], F]], f: F) -> F:
    """Apply Click decorators so that they appear in `--help` in the order listed."""
    for decorator in reversed(decorators):
        f = decorator(f)
    return f
