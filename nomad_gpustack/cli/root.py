"""The `nomadgs` group, and the one place where a failure becomes a message and an exit code."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from .. import __version__
from ..errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, NomadgsError
from . import output
from .base import RUNNING, LazyGroup, preformatted

COMPLETE_VAR = "_NOMADGS_COMPLETE"

EPILOG = preformatted("""\
exit codes:
  0    success
  1    the operation ran and failed (deployment failed, model unhealthy, ...)
  2    bad input: a file, flag or name is wrong; nothing was sent anywhere
  3    Nomad cannot place the model (no node with the GPUs, memory, drivers ...)
  4    --timeout passed before the model was healthy
  5    Nomad or Consul unreachable, or refused the request (TLS, ACL token, ...)
  130  interrupted (Ctrl-C); a submitted job keeps running

Run `nomadgs COMMAND --help` for the options of one command.
Shell completion: eval "$(_NOMADGS_COMPLETE=bash_source nomadgs)" (zsh_source, fish_source)
""")

# Which module holds each command; only the module of the command being run is imported.
COMMANDS: dict[str, str] = {
    "render": "nomad_gpustack.cli.render_cmds:render",
    "validate": "nomad_gpustack.cli.render_cmds:validate",
    "estimate": "nomad_gpustack.cli.estimate_cmds:estimate",
    "backends": "nomad_gpustack.cli.backend_cmds:backends",
    "submit": "nomad_gpustack.cli.cluster_cmds:submit",
    "plan": "nomad_gpustack.cli.cluster_cmds:plan",
    "status": "nomad_gpustack.cli.cluster_cmds:status",
    "logs": "nomad_gpustack.cli.cluster_cmds:logs",
    "stop": "nomad_gpustack.cli.cluster_cmds:stop",
    "endpoints": "nomad_gpustack.cli.endpoint_cmds:endpoints",
    "chat": "nomad_gpustack.cli.endpoint_cmds:chat",
    "gateway": "nomad_gpustack.cli.endpoint_cmds:gateway",
}


class RootGroup(LazyGroup):
    """The `nomadgs` group. Its `main` maps every outcome to an exit code itself (see `exit_code`) instead of
    Click's standalone handling, so `nomadgs`, `python -m nomad_gpustack`, `main()` and CliRunner agree."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        prog = prog_name or "nomadgs"
        instruction = os.environ.get(complete_var or COMPLETE_VAR)
        if instruction:
            from click.shell_completion import shell_complete

            code: int = shell_complete(self, extra, prog, complete_var or COMPLETE_VAR, instruction)
        else:
            code = self.run(prog, argv, extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def run(self, prog: str, argv: list[str], extra: dict[str, Any]) -> int:
        ctx: click.Context | None = None
        try:
            ctx = self.make_context(prog, argv, **extra)
            with ctx:
                result = self.invoke(ctx)
            return result if isinstance(result, int) else EXIT_OK
        except click.exceptions.Exit as exc:  # --help, --version
            return exc.exit_code
        except (Exception, KeyboardInterrupt) as exc:
            failed = exc.ctx.command if isinstance(exc, click.UsageError) and exc.ctx else None
            if failed is None and ctx is not None:
                failed = ctx.meta.get(RUNNING)
            return exit_code(exc, failed)


def exit_code(exc: BaseException, command: click.Command | None = None) -> int:
    """Say what went wrong, in one line per problem and never as a traceback; return the exit code.

    Usage errors (unknown flag, missing argument, bad choice) exit 2 with Click's message, `NomadgsError`s
    with the code of their class; a command's `error_exit_code` (plan: 255) replaces both.
    """
    if isinstance(exc, click.UsageError):
        if exc.ctx is not None:
            output.info(exc.ctx.get_usage())
            output.info(f"Try '{exc.ctx.command_path} --help' for help.")
        output.error(exc.format_message())
        code = exc.exit_code
    elif isinstance(exc, click.ClickException):
        output.error(exc.format_message())
        code = exc.exit_code
    elif isinstance(exc, NomadgsError):
        output.report(exc)
        code = exc.exit_code
    elif isinstance(exc, KeyboardInterrupt | click.Abort):
        output.error("interrupted")
        return EXIT_INTERRUPTED
    elif isinstance(exc, BrokenPipeError):
        # `nomadgs render ... | head`: the reader left; that is not an error of ours.
        _silence_stdout()
        return EXIT_OK
    elif isinstance(exc, RecursionError):
        output.error("the input nests too deeply to process")
        code = EXIT_BAD_INPUT
    else:
        raise exc
    override = getattr(command, "error_exit_code", None)
    return override if override is not None else code


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not raise a second broken pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


@click.group(
    "nomadgs",
    cls=RootGroup,
    lazy_subcommands=COMMANDS,
    no_args_is_help=False,
    help="Serve AI models on HashiCorp Nomad with GPUStack inference backends.",
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "terminal_width": 100, "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="nomadgs", message="%(prog)s %(version)s")
def nomadgs() -> None:
    pass
