"""What a remembered rendering depends on besides its own input files: nomadgs's code and the libraries that
read input.

By content, never by size and modification time: `cp -p`, `rsync -a` and `tar x` keep a changed file's time,
and an edit can keep its size. The fingerprint covers the bytes of every .py file of the package (about 650 KB:
a few milliseconds to hash), nomadgs's and Python's versions, and the installed pydantic, pydantic-core and
PyYAML by their distribution records (the dist-info folder: its name carries the version, its RECORD the digest
of every file installed), found without importing them, so a cache hit never pays for loading them. When a
library's record cannot be found there is no fingerprint, and nothing is remembered.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from . import __version__

PACKAGE = Path(__file__).resolve().parent
# The libraries that read and validate input: the module imported, and the distribution that installs it.
LIBRARIES = {"pydantic": "pydantic", "pydantic_core": "pydantic_core", "yaml": "PyYAML"}


def content_digest(files: Iterable[tuple[str, str | Path]], digest: hashlib._Hash | None = None) -> hashlib._Hash:
    """A digest of each file's name (as given) and bytes. Raises OSError when one cannot be read."""
    digest = digest or hashlib.sha256()
    for name, path in files:
        with open(path, "rb") as f:
            data = f.read()
        digest.update(f"\0{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest


def _normalized(name: str) -> str:
    """A distribution's name as records spell it, whatever the case and separators (no regex: a cache hit
    should not pay for compiling one)."""
    return name.lower().replace("-", "_").replace(".", "_")


def library_record(module: str, distribution: str) -> bytes | None:
    """What identifies the installed `distribution` that provides `module`: its dist-info (or egg-info) folder's
    name, with the version, and its RECORD (or metadata); None when the module or its record is not found."""
    spec = importlib.util.find_spec(module)  # finds a top-level module without running it
    if spec is None or not spec.origin or not os.path.isabs(spec.origin):
        return None
    origin = Path(spec.origin)
    site = origin.parent.parent if spec.submodule_search_locations is not None else origin.parent
    record = b""
    try:
        for name in _records(str(site)).get(_normalized(distribution), []):
            folder = site / name
            found = next((f for f in ("RECORD", "METADATA", "PKG-INFO") if (folder / f).is_file()), None)
            if found is not None:
                record += f"\0{name}\0".encode() + (folder / found).read_bytes()
    except OSError:
        return None
    return record or None


@cache
def _records(site: str) -> dict[str, list[str]]:
    """The distribution records (dist-info, egg-info folders) of a site folder, by normalized name."""
    found: dict[str, list[str]] = {}
    try:
        names = sorted(os.listdir(site))
    except OSError:
        return found
    for name in names:
        stem, dot, kind = name.rpartition(".")
        if dot and kind in ("dist-info", "egg-info"):
            found.setdefault(_normalized(stem.split("-")[0]), []).append(name)
    return found


@cache
def environment() -> str | None:
    """The fingerprint of nomadgs's code and of the libraries that read and validate input; None when one of
    them cannot be identified (then nothing may be remembered)."""
    root = len(str(PACKAGE)) + 1  # names relative to the package: the same code elsewhere is the same code
    sources = sorted(
        os.path.join(top, name) for top, _, names in os.walk(PACKAGE) for name in names if name.endswith(".py")
    )
    digest = hashlib.sha256(f"{__version__}\0{sys.version}\0{sys.implementation.cache_tag}".encode())
    try:
        content_digest(((path[root:], path) for path in sources), digest)
    except OSError:
        return None
    for module, distribution in LIBRARIES.items():
        record = library_record(module, distribution)
        if record is None:
            return None
        digest.update(f"\0{module}\0".encode() + record)
    return digest.hexdigest()
