"""The `nomadgs` command line, on Click. The root group (cli/root.py) loads each command's module only when
that command runs, and command modules import the library inside their functions, so `nomadgs render` does
not pay for the HTTP clients of `nomadgs submit`."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .. import __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run `nomadgs` with `argv` (default: the process's arguments) and return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args == ["--version"] and not os.environ.get("_NOMADGS_COMPLETE"):
            # Answered before Click and the command table are imported; the same text as the group's --version.
            print(f"nomadgs {__version__}")
            return 0  # errors.EXIT_OK, not imported here: that would load dataclasses and inspect
        from .root import nomadgs

        code: int = nomadgs.main(args, prog_name="nomadgs", standalone_mode=False)
        return code
    except KeyboardInterrupt as exc:  # Ctrl-C while starting, before the root group handles it
        from ..errors import exit_code_for

        print("error: interrupted", file=sys.stderr)
        return exit_code_for(exc)


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
