"""The README's test command on a clone of the repository alone: GPUStack's published backend files (beside the
checkout) are tested when present, skipped loudly when not, and required in CI; the project's own always run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .support.components import ROOT


def run_backend_tests(shared: Path, *, require: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NOMADGS_REQUIRE_COMPONENTS"}
    env["NOMADGS_SHARED_BACKENDS"] = str(shared)
    if require:
        env["NOMADGS_REQUIRE_COMPONENTS"] = "1"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
               "tests/spec/test_backends.py", "-k", "every_version"]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_without_gpustacks_files_their_tests_skip_loudly_and_the_projects_run(tmp_path: Path) -> None:
    run = run_backend_tests(tmp_path / "missing", require=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed, 1 skipped" in run.stdout
    assert "COMPONENT UNAVAILABLE, TEST SKIPPED" in run.stdout and "NOMADGS_SHARED_BACKENDS" in run.stdout


def test_ci_requires_gpustacks_files(tmp_path: Path) -> None:
    run = run_backend_tests(tmp_path / "missing", require=True)
    assert run.returncode == 1
    assert "1 passed" in run.stdout and "1 error" in run.stdout  # the project's files pass; the fixture fails
    assert "NOMADGS_REQUIRE_COMPONENTS is set" in run.stdout


def test_nomadgs_shared_backends_points_at_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "gpustack-backends"
    (folder / "a").mkdir(parents=True)
    for name in ("one", "two"):
        (folder / "a" / f"{name}.yaml").write_text(
            f"backend_name: {name}-custom\nversion_configs:\n  v1: {{image_name: 'x:1', custom_framework: cpu}}\n"
        )
    run = run_backend_tests(folder, require=True)
    assert run.returncode == 1  # found and read: too few files for GPUStack's published set
    assert f"{folder} lost files" in run.stdout
