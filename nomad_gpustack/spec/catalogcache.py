"""The built-in catalog, validated once and kept in a cache folder, for a quicker start of the command line.

The built-in backends are files shipped with nomadgs: trusted, and the same on every run. Reading them means
parsing YAML and building and running the backend models' validators. The validated backends are pickled
into the cache folder under a key made of everything they depend on: the catalog files (by size and
modification time) and nomadgs's code and libraries (`cachekey.environment`). Any change makes a new key;
any trouble reading or writing the cache means validating as usual. Files given with `--backends` are never
cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..cachekey import environment, stat_digest
from .backend import Backend
from .specfile import Sourced

Backends = list[Sourced[Backend]]


def cache_key(folder: Path) -> str:
    """A digest of everything the validated backends of `folder` depend on."""
    digest = hashlib.sha256(f"{environment()}\0{folder}".encode())
    return stat_digest(sorted(entry.path for entry in os.scandir(folder) if entry.is_file()), digest).hexdigest()[:32]


def cached_backends(
    folder: Path, cache: Path, load: Callable[[Path], Backends], display: Callable[[Path], str]
) -> Backends:
    """The backends of `folder`: from `cache` when it holds them for the current key, else `load(folder)`,
    then kept there. `display` names each file in messages, as the loader does (not kept: the
    folder may move)."""
    try:
        entry = cache / f"catalog-{cache_key(folder)}.pickle"
    except OSError:
        return load(folder)
    with contextlib.suppress(Exception):  # missing, partial or foreign: validate instead
        with entry.open("rb") as f:
            backends: Backends = pickle.load(f)
        for backend in backends:
            backend.source.filename = display(folder / Path(backend.source.filename).name)
        return backends
    backends = load(folder)
    with contextlib.suppress(OSError):
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".catalog-", suffix=".tmp", dir=cache)
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(backends, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, entry)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return backends
