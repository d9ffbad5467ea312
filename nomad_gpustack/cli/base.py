"""The Click classes every `nomadgs` command is built from: the help layout, option sections, the lazy group.

Command modules use `command` and `group` from here, so each command gets the same help style (lowercase
headings as `exit codes:` and `environment:`, preformatted tables kept as written, the `environment:` block
last) and records itself and the result format it was asked for when it starts, so that errors can be mapped
to the exit codes of the command that failed, and answered in JSON when JSON was asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import EXIT_OK, suggestion

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

F = TypeVar("F", bound=Callable[..., Any])

# Where the command that is being parsed or run is recorded (ctx.meta is shared by a context and its children).
RUNNING = "nomadgs.command"
# Where the result format it was asked for (`--format json`) is recorded, read from the command line before Click
# parses it, so that a usage error is answered in that format too.
RESULT_FORMAT = "nomadgs.format"
# What a command did before it failed, for the JSON document of the failure (fields added to it).
PARTIAL_RESULT = "nomadgs.partial"


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


class AliasedOption(click.Option):
    """An option whose older spellings (`aliases`) still work, but are neither shown in `--help` nor completed.
    `result_format`: the option chooses the format of the command's result (`--format text|json`)."""

    def __init__(
        self,
        param_decls: Sequence[str],
        *args: Any,
        aliases: Sequence[str] = (),
        result_format: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__([*param_decls, *aliases], *args, **kwargs)
        self.aliases = tuple(aliases)
        self.result_format = result_format

    def _visible(self) -> list[str]:
        return [name for name in self.opts if name not in self.aliases]

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        every = self.opts
        self.opts = self._visible()
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = every

    def get_error_hint(self, ctx: click.Context | None) -> str:
        return " / ".join(f"'{name}'" for name in self._visible())


def _requested_format(command: click.Command, args: Sequence[str]) -> str | None:
    """The value given to the command's result-format option on the command line (the last one), if any."""
    names = [n for p in command.params if isinstance(p, AliasedOption) and p.result_format for n in p.opts]
    found = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        for name in names:
            if arg == name and i + 1 < len(args):
                found = args[i + 1]
            elif arg.startswith(name + "="):
                found = arg[len(name) + 1 :]
    return found


class Command(click.Command):
    """A nomadgs command. `plan_exit_codes`: every error (usage errors included) exits `errors.PLAN_ERROR`
    (255), as `nomad job plan` does. `environment`: the variables the command reads, as (name, what) rows of the
    `environment:` section that ends its help."""

    context_class = Context

    def __init__(
        self,
        *args: Any,
        plan_exit_codes: bool = False,
        environment: Sequence[tuple[str, str]] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.plan_exit_codes = plan_exit_codes
        self.environment = tuple(environment)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[RUNNING] = self
        ctx.meta[RESULT_FORMAT] = _requested_format(self, args)
        rest = super().parse_args(ctx, args)
        for param in self.params:
            if isinstance(param, AliasedOption) and param.result_format and param.name:
                ctx.meta[RESULT_FORMAT] = ctx.params.get(param.name)
        return rest

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        aliases = {name for p in self.params if isinstance(p, AliasedOption) for name in p.aliases}
        return [item for item in super().shell_complete(ctx, incomplete) if item.value not in aliases]

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        if self.environment:  # last, in every command: after the options and any epilog
            with formatter.section("environment"):
                formatter.write_dl(list(self.environment))

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
    """A nomadgs command group: its subcommands are nomadgs commands, listed in the order they were added.

    Without a command, a group prints its help on stdout and succeeds, as `--help` does (the help is what was
    asked for); an unknown command is a usage error that suggests the closest one."""

    context_class = Context
    command_class = Command

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.update(invoke_without_command=True, no_args_is_help=False)
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[RUNNING] = self
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        result = super().invoke(ctx)
        if ctx.invoked_subcommand is None:
            click.echo(ctx.get_help(), color=ctx.color)
            return EXIT_OK
        return result

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as exc:
            hint = suggestion(exc.command_name, self.list_commands(ctx))
            raise click.UsageError(
                f"No such command '{exc.command_name}'" + (f" ({hint})" if hint else ""), ctx
            ) from None

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
    """`@click.command` making a nomadgs `Command` (`environment=` rows: see Command)."""
    made: Callable[[Callable[..., Any]], Command] = click.command(name, cls=Command, **attrs)
    return made


def group(name: str, **attrs: Any) -> Callable[[Callable[..., Any]], Group]:
    """`@click.group` making a nomadgs `Group` (without a subcommand, it prints its help)."""
    made: Callable[[Callable[..., Any]], Group] = click.group(name, cls=Group, **attrs)
    return made


def preformatted(text: str) -> str:
    """Help text whose paragraphs (tables, examples) Click must print as written, not rewrap."""
    return "\n\n".join(f"\b\n{paragraph}" for paragraph in text.strip("\n").split("\n\n"))


def apply(decorators: Sequence[Callable[[F], F]], f: F) -> F:
    """Apply Click decorators so that they appear in `--help` in the order listed."""
    for decorator in reversed(decorators):
        f = decorator(f)
    return f
