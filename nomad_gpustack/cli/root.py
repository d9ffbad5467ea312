"""The `nomadgs` group, and the one place where a failure becomes a message and an exit code."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from .. import __version__
from ..errors import EXIT_INTERRUPTED, EXIT_OK, PLAN_ERROR, NomadgsError, exit_code_for
from . import output
from .base import PARTIAL_RESULT, RESULT_FORMAT, RUNNING, LazyGroup, preformatted

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

flags: --format FORMAT is how a command prints its result (text, json; with json, one
document on stdout for every outcome, errors included); -o/--output PATH is where `render`
writes job files. A reader that leaves early only silences the output, never the exit code.

Run `nomadgs COMMAND --help` for the options of one command (`nomadgs` alone prints this help).
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
    "promote": "nomad_gpustack.cli.rollout_cmds:promote",
    "revert": "nomad_gpustack.cli.rollout_cmds:revert",
    "history": "nomad_gpustack.cli.rollout_cmds:history",
    "endpoints": "nomad_gpustack.cli.endpoint_cmds:endpoints",
    "chat": "nomad_gpustack.cli.endpoint_cmds:chat",
    "gateway": "nomad_gpustack.cli.endpoint_cmds:gateway",
    "gateway-job": "nomad_gpustack.cli.endpoint_cmds:gateway_job",
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
            with output.quiet_when_readers_leave():  # a reader that leaves early silences output, not the outcome
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
            meta = exc.ctx.meta if isinstance(exc, click.UsageError) and exc.ctx else ctx.meta if ctx else {}
            if failed is None:
                failed = meta.get(RUNNING)
            as_json = meta.get(RESULT_FORMAT) == "json"
            return exit_code(exc, failed, as_json=as_json, partial=meta.get(PARTIAL_RESULT))


def exit_code(
    exc: BaseException,
    command: click.Command | None = None,
    *,
    as_json: bool = False,
    partial: dict[str, Any] | None = None,
) -> int:
    """Say what went wrong, in one line per problem and never as a traceback; return the exit code.

    The code is the error's row in `errors.EXIT_CODES` (usage errors 2, Ctrl-C 130, a `NomadgsError` its
    class's); a command with `plan_exit_codes` (plan) exits `PLAN_ERROR` instead, but when interrupted. An
    exception the table does not know is a bug: it is raised again. `as_json` (the command was run with
    `--format json`): the same lines also go to stdout as one JSON document, with what the command had done
    before it failed (`partial`, e.g. submit's results of the deployments before).
    """
    code = exit_code_for(exc)
    if code is None:
        raise exc
    if isinstance(exc, click.UsageError):
        if exc.ctx is not None:
            output.info(exc.ctx.get_usage())
            output.info(f"Try '{exc.ctx.command_path} --help' for help.")
        lines = [exc.format_message()]
    elif isinstance(exc, click.ClickException):
        lines = [exc.format_message()]
    elif isinstance(exc, NomadgsError):
        lines = output.problem_lines(exc)
    elif isinstance(exc, BrokenPipeError):
        # A stream nomadgs did not get to silence (see output.quiet_when_readers_leave): nobody reads a line.
        return code
    elif isinstance(exc, RecursionError):
        lines = ["the input nests too deeply to process"]
    elif isinstance(exc, KeyboardInterrupt | click.Abort):
        lines = ["interrupted"]
    else:  # a row of the table this function has no words for
        raise exc
    for line in lines:
        output.error(line)
    if getattr(command, "plan_exit_codes", False) and code != EXIT_INTERRUPTED:
        code = PLAN_ERROR
    if as_json:
        output.emit_failure(code, lines, **(partial or {}))
    return code


@click.group(
    "nomadgs",
    cls=RootGroup,
    lazy_subcommands=COMMANDS,
    help="Serve AI models on HashiCorp Nomad with GPUStack inference backends.",
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "terminal_width": 100, "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="nomadgs", message="%(prog)s %(version)s")
def nomadgs() -> None:
    pass
