"""Files on disk: refused with their real size, named in messages as the user wrote them."""

from __future__ import annotations

from pathlib import Path

import pytest

from nomad_gpustack.errors import InputError
from nomad_gpustack.spec.loader import load_backend_files, load_deployment


def test_a_file_over_the_limit_is_reported_with_its_real_size(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"a" * 10_000_135)
    with pytest.raises(InputError) as caught:
        load_deployment(huge)
    (problem,) = caught.value.problems
    assert problem.message == "the file is 10,000,135 bytes; the limit is 4,194,304 bytes"


def test_paths_in_messages_are_as_the_user_wrote_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "06-binary.yaml").write_bytes(b"backend_name: \xff\n")
    (tmp_path / "deploy.yaml").write_text("name: m\nreplicas: two\n")
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")  # relative to here, the absolute paths are shorter as ../...
    absolute = tmp_path / "bad"
    with pytest.raises(InputError) as caught:
        load_backend_files([absolute])
    assert caught.value.problems[0].file == f"{absolute}/06-binary.yaml"
    with pytest.raises(InputError) as caught:
        load_deployment(tmp_path / "deploy.yaml")
    assert caught.value.problems[0].file == f"{tmp_path}/deploy.yaml"
    with pytest.raises(InputError) as caught:
        load_deployment(Path("../deploy.yaml"))
    assert caught.value.problems[0].file == "../deploy.yaml"
