"""Where nomad-gpustack keeps what it can reuse between runs: `render`'s renderings of unchanged inputs, and the
model headers read from the Hugging Face Hub. The command line, the Ansible module and the filters use this one
folder, so what one of them looked up the others find.

A cache is only as trustworthy as whoever can write it, and a cache folder can cross users (`sudo -E`,
Ansible's `become` keeping the environment, a CI cache shared between jobs). So the folder is used only when it
is the current user's own: owned by them and writable by no one else (or, before it exists, when the nearest
existing folder above it is theirs, so that root under `sudo -E` never creates a folder in a user's home that
the user then cannot use). Entries are read only when they are regular files owned by the current user, through
the folder as opened and checked (no window between the check and the read). Entries are data, never code.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


def cache_folder() -> Path | None:
    """$XDG_CACHE_HOME/nomadgs, else ~/.cache/nomadgs, created private when missing; None when that folder is
    not the current user's own (see the module's docstring): then nothing is read from it or written to it."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = Path(base) / "nomadgs"
    if not _usable(folder):
        return None
    _create(folder)  # private from the start, whoever writes first (the Hub's headers are written with mkdir)
    return folder


def _uid() -> int | None:
    """The effective user's id; None where there is none (not POSIX): no cache there."""
    geteuid = getattr(os, "geteuid", None)
    return geteuid() if geteuid is not None else None


def _private(st: os.stat_result, uid: int) -> bool:
    """A folder of this user that no one else can write."""
    return stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _usable(folder: Path) -> bool:
    """Whether `folder` is this user's own, or would be created in a folder that is theirs."""
    uid = _uid()
    if uid is None:
        return False
    try:
        return _private(os.stat(folder), uid)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    for above in folder.parents:
        try:
            st = os.stat(above)
        except FileNotFoundError:
            continue
        except OSError:
            return False
        return stat.S_ISDIR(st.st_mode) and st.st_uid == uid
    return False


def _create(folder: Path) -> None:
    """Create `folder` and the folders above it that are missing, each private (os.makedirs would give those
    above it the umask's mode); trouble is no error (the folder is then not used)."""
    if os.path.isdir(folder):
        return
    missing = [folder, *(p for p in folder.parents if not os.path.isdir(p))]
    with contextlib.suppress(OSError):
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o700)


def _open_folder(folder: Path, *, create: bool) -> int | None:
    """A descriptor of `folder` when it is this user's own (created, private, when `create`), else None."""
    uid = _uid()
    if uid is None:
        return None
    if create and _usable(folder):
        _create(folder)
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if _private(os.fstat(fd), uid):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def read_entry(folder: Path, name: str) -> bytes | None:
    """The bytes of the entry `name` of `folder`, or None: missing, unreadable, not a regular file, not owned by
    the current user, or in a folder that is not the current user's own. What the bytes say is the caller's to
    check."""
    fd = _open_folder(folder, create=False)
    if fd is None:
        return None
    try:
        # O_NONBLOCK: a FIFO planted under an entry's name must not hang the command (files ignore it).
        entry = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        st = os.fstat(entry)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != _uid():
            return None
        with os.fdopen(entry, "rb", closefd=False) as f:
            return f.read()
    except OSError:
        return None
    finally:
        os.close(entry)


def write_entry(folder: Path, name: str, data: bytes) -> None:
    """Keep `data` as the entry `name` of `folder` (created, private, if need be), whole or not at all; a cache
    that cannot be written is no error."""
    fd = _open_folder(folder, create=True)
    if fd is None:
        return
    tmp = f".{name}.{os.urandom(8).hex()}.tmp"  # secrets.token_hex, without importing secrets (random)
    try:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd)
        with os.fdopen(out, "wb") as f:
            f.write(data)
        os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=fd)
    finally:
        os.close(fd)
