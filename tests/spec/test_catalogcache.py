"""The validated built-in catalog kept in a cache folder: the same catalog, reused, and never wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from nomad_gpustack.spec import loader
from nomad_gpustack.spec.catalogcache import cache_key, cached_backends
from nomad_gpustack.spec.files import builtin_catalog_dir, display_path
from nomad_gpustack.spec.loader import load_backend_files, load_catalog

BACKEND = "backend_name: {name}\nversion_configs:\n  v1:\n    image_name: me/engine:1\n"


def summary(catalog: loader.Catalog) -> list[tuple[str, str, object]]:
    return [(b.filename, b.spec.backend_name, b.spec.model_dump(mode="json")) for b in catalog]


def test_the_cached_catalog_is_the_validated_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = summary(load_catalog())
    assert summary(load_catalog(cache=tmp_path)) == fresh  # validated, then written
    assert len(list(tmp_path.glob("catalog-*.pickle"))) == 1

    def no_validation(paths: object) -> list[object]:
        raise AssertionError("the built-in catalog was validated again")

    monkeypatch.setattr(loader, "load_backend_files", no_validation)
    assert summary(load_catalog(cache=tmp_path)) == fresh  # read back
    # File names in messages stay relative to the working directory of each run.
    monkeypatch.chdir(tmp_path)
    assert [b.filename for b in load_catalog(cache=tmp_path)] == [
        display_path(builtin_catalog_dir() / Path(name).name) for name, _, _ in fresh
    ]


def test_a_changed_file_is_validated_again(tmp_path: Path) -> None:
    folder = tmp_path / "catalog"
    folder.mkdir()
    (folder / "a.yaml").write_text(BACKEND.format(name="first-custom"))
    cache = tmp_path / "cache"

    def load(f: Path) -> list[object]:
        return list(load_backend_files([f]))

    assert [b.spec.backend_name for b in cached_backends(folder, cache, load, display_path)] == ["first-custom"]
    key = cache_key(folder)
    (folder / "a.yaml").write_text(BACKEND.format(name="second-name-custom"))
    assert cache_key(folder) != key
    assert [b.spec.backend_name for b in cached_backends(folder, cache, load, display_path)] == ["second-name-custom"]


def test_a_broken_or_unwritable_cache_is_ignored(tmp_path: Path) -> None:
    fresh = summary(load_catalog())
    cache = tmp_path / "cache"
    load_catalog(cache=cache)
    (entry,) = cache.glob("catalog-*.pickle")
    entry.write_bytes(b"not a pickle")
    assert summary(load_catalog(cache=cache)) == fresh
    assert entry.read_bytes() != b"not a pickle", "rewritten after validating"
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert summary(load_catalog(cache=blocked / "cache")) == fresh
