"""The cache folder is used only when it is the current user's own, and its entries only when they are theirs;
what the cache keys on identifies the libraries by their installed records."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from nomad_gpustack import cachefolder, cachekey
from nomad_gpustack.cachefolder import cache_folder, read_entry, write_entry
from nomad_gpustack.cli.rendermemo import Remembered, RenderMemo


def someone_else(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, the current user is another one (as root under `sudo -E` reading a user's cache)."""
    other = os.geteuid() + 1
    monkeypatch.setattr(cachefolder, "_uid", lambda: other)


def test_entries_are_written_private_and_read_back(tmp_path: Path) -> None:
    folder = tmp_path / "home" / ".cache" / "nomadgs" / "renders"
    (tmp_path / "home").mkdir()
    write_entry(folder, "a.json", b"{}")
    assert read_entry(folder, "a.json") == b"{}"
    for path in (folder, folder.parent, folder.parent.parent):
        assert path.stat().st_mode & 0o777 == 0o700, path
    assert (folder / "a.json").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in folder.iterdir()] == ["a.json"], "no temporary file left"
    assert read_entry(folder, "missing.json") is None


def test_the_cache_folder_is_created_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home" / ".cache"))
    previous = os.umask(0o002)  # a umask that would let the group write
    try:
        folder = cache_folder()
    finally:
        os.umask(previous)
    assert folder == tmp_path / "home" / ".cache" / "nomadgs"
    for path in (folder, folder.parent):
        assert path.stat().st_mode & 0o777 == 0o700, path
    assert cache_folder() == folder, "and used"


def test_a_folder_others_can_write_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "nomadgs"
    write_entry(folder, "a.json", b"{}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_folder() == folder
    for mode in (0o770, 0o707, 0o777):
        folder.chmod(mode)
        assert read_entry(folder, "a.json") is None, oct(mode)
        write_entry(folder, "b.json", b"{}")
        assert not (folder / "b.json").exists(), oct(mode)
        assert cache_folder() is None, oct(mode)
    folder.chmod(0o755)  # others may read, not write
    assert read_entry(folder, "a.json") == b"{}" and cache_folder() == folder


def test_another_users_folder_is_neither_read_nor_created_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "nomadgs"
    write_entry(folder, "a.json", b"{}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    someone_else(monkeypatch)
    assert read_entry(folder, "a.json") is None
    assert cache_folder() is None, "another user's cache folder: not used"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "fresh"))
    assert cache_folder() is None, "nor created in a folder of another user"
    write_entry(tmp_path / "fresh" / "nomadgs", "a.json", b"{}")
    assert not (tmp_path / "fresh").exists()


def test_an_entry_that_is_no_regular_file_of_the_user_is_ignored(tmp_path: Path) -> None:
    folder = tmp_path / "nomadgs"
    write_entry(folder, "a.json", b"mine")
    (folder / "link.json").symlink_to(folder / "a.json")
    assert read_entry(folder, "link.json") is None, "a symbolic link"
    (folder / "dir.json").mkdir()
    assert read_entry(folder, "dir.json") is None
    os.mkfifo(folder / "fifo.json")
    assert read_entry(folder, "fifo.json") is None, "a FIFO (and the read does not wait for a writer)"
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    os.chown(folder / "a.json", 4242, 4242)
    assert read_entry(folder, "a.json") is None, "another user's entry in the user's own folder"


def test_the_memo_follows_the_folder_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    memo = RenderMemo.open(tmp_path, (), "json")
    assert memo is not None
    deployment = tmp_path / "d.yaml"
    deployment.write_text("name: x\n")
    memo.remember(deployment, Remembered("x", "text\n", ()))
    assert memo.recall(deployment) is not None
    someone_else(monkeypatch)
    assert memo.recall(deployment) is None


def test_libraries_are_identified_by_their_installed_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    (site / "fakelib").mkdir(parents=True)
    (site / "fakelib" / "__init__.py").write_text("")
    record = site / "fake_lib-1.0.dist-info"
    record.mkdir()
    (record / "RECORD").write_text("fakelib/__init__.py,sha256=abc,0\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()

    def identity() -> bytes | None:
        cachekey._records.cache_clear()
        return cachekey.library_record("fakelib", "Fake-Lib")

    first = identity()
    assert first is not None and b"fake_lib-1.0.dist-info" in first
    (record / "RECORD").write_text("fakelib/__init__.py,sha256=abd,0\n")  # the same version, rebuilt
    second = identity()
    assert second not in (None, first)
    record.rename(site / "fake_lib-1.1.dist-info")
    third = identity()
    assert third not in (None, first, second)
    (site / "fake_lib-1.1.dist-info" / "RECORD").unlink()
    assert identity() is None, "no record: unknown"
    assert cachekey.library_record("no_such_module_here", "no-such") is None


def test_without_a_fingerprint_nothing_is_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cachekey, "LIBRARIES", {**cachekey.LIBRARIES, "no_such_module_here": "no-such"})
    cachekey.environment.cache_clear()
    try:
        assert cachekey.environment() is None
        assert RenderMemo.open(tmp_path, (), "json") is None
    finally:
        cachekey.environment.cache_clear()
