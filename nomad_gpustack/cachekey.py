"""What cached results depend on besides their own input files: nomadgs's code and the libraries that read input.

One fingerprint for every cache (the validated built-in catalog, remembered renders): the package's .py files
by size and modification time (as Python's own .pyc check does), the version of nomadgs and of Python, and
the installed pydantic, pydantic-core and PyYAML (by their files, found without importing them, so a cache
hit never pays for loading them). Anything that changes how input is read or compiled changes it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
LIBRARIES = ("pydantic", "pydantic_core", "yaml")


def stat_digest(paths: Iterable[str | Path], digest: hashlib._Hash | None = None) -> hashlib._Hash:
    """A digest of the paths with their sizes and modification times (a missing file counts as such)."""
    digest = digest or hashlib.sha256()
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
        except OSError:
            digest.update(f"\0{path}\0missing".encode())
    return digest


@cache
def environment() -> str:
    """The fingerprint of nomadgs's code and of the libraries that read and validate input."""
    from . import __version__

    sources = sorted(
        os.path.join(top, name) for top, _, names in os.walk(PACKAGE) for name in names if name.endswith(".py")
    )
    libraries = []
    for name in LIBRARIES:
        spec = importlib.util.find_spec(name)  # finds a top-level package without running it
        libraries.append(spec.origin if spec is not None and spec.origin else f"{name}: not installed")
    digest = hashlib.sha256(f"{__version__}\0{sys.version}".encode())
    return stat_digest([*sources, *libraries], digest).hexdigest()
