"""The `nomadgs` command line. Each subcommand lives in its own module and imports what it needs lazily,
so `nomadgs render` does not pay for the HTTP clients of `nomadgs submit`."""

from __future__ import annotations

import argparse
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nomadgs",
        description="Serve AI models on HashiCorp Nomad with GPUStack inference backends.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"nomadgs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True

    from . import backend_cmds, cluster_cmds, endpoint_cmds, render_cmds

    for module in (render_cmds, backend_cmds, cluster_cmds, endpoint_cmds):
        module.register(sub, _Formatter)
    return parser


Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `nomadgs` command."""
    parser = build_parser()
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
    sys.exit(main())
