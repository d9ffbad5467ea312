"""The `nomadgs` command line. Each subcommand lives in its own module and imports what it needs lazily,
so `nomadgs render` does not pay for the HTTP clients of `nomadgs submit`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from ..errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, NomadgsError
from . import output

EPILOG = """\
exit codes:
  0    success
  1    the operation ran and failed (deployment failed, model unhealthy, ...)
  2    bad input: a file, flag or name is wrong; nothing was sent anywhere
  3    Nomad cannot place the model (no node with the GPUs, memory, drivers ...)
  4    --timeout passed before the model was healthy
  5    Nomad or Consul unreachable, or refused the request (TLS, ACL token, ...)
  130  interrupted (Ctrl-C); a submitted job keeps running

Run `nomadgs COMMAND --help` for the options of one command.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


# Which module registers each command; only the module of the command being run is imported.
COMMANDS: dict[str, str] = {
    "render": "render_cmds",
    "validate": "render_cmds",
    "backends": "backend_cmds",
    "submit": "cluster_cmds",
    "plan": "cluster_cmds",
    "status": "cluster_cmds",
    "logs": "cluster_cmds",
    "stop": "cluster_cmds",
    "endpoints": "endpoint_cmds",
    "chat": "endpoint_cmds",
    "gateway": "endpoint_cmds",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with `command`, only that command's module is loaded (faster start)."""
    parser = argparse.ArgumentParser(
        prog="nomadgs",
        description="Serve AI models on HashiCorp Nomad with GPUStack inference backends.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"nomadgs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True

    import importlib

    wanted = COMMANDS.get(command or "")
    names = [wanted] if wanted else list(dict.fromkeys(COMMANDS.values()))
    for name in names:
        importlib.import_module(f".{name}", __name__).register(sub, _Formatter)
    return parser


Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `nomadgs` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:  # answered before the parser loads every command module
        print(f"nomadgs {__version__}")
        return 0
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in COMMANDS else None)
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except NomadgsError as exc:
        output.report(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        output.error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `nomadgs render ... | head`: the reader left; that is not an error of ours.
        sys.stderr.close()
        return 0
    except RecursionError:
        output.error("the input nests too deeply to process")
        return EXIT_BAD_INPUT


def run() -> None:
    """Console entry point. Exits without tearing the interpreter down: nothing is left to clean up once
    output is flushed, and module teardown would add a fifth to the run time of quick commands."""
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    os._exit(code)
