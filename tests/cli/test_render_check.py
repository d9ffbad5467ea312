"""`nomadgs render --output PATH --check`: compare the job files on disk with the rendering; write nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..support.components import ROOT
from ..support.helpers import nomadgs

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
VLLM = ROOT / "examples" / "vllm-qwen2.5-7b-instruct.yaml"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_differences_missing_files_and_nothing_written(tmp_path: Path) -> None:
    out = tmp_path / "jobs"
    assert nomadgs("render", *EXAMPLES, "--output", out).code == 0
    edited = out / "qwen2-5-7b-instruct.nomad.json"
    edited.write_text(edited.read_text().replace('"Count": 1', '"Count": 3'))
    (out / "bge-m3.nomad.json").unlink()
    before = snapshot(out)
    run = nomadgs("render", *EXAMPLES, "--output", out, "--check")
    assert run.code == 1
    assert snapshot(out) == before, "--check writes nothing"
    assert f"error: {out}/bge-m3.nomad.json: is missing\n" in run.err
    assert f"error: {edited}: differs from the rendering\n" in run.err
    assert "2 of 8 job file(s) differ" in run.err
    lines = run.out.splitlines()
    assert f"--- {edited} (on disk)" in lines and f"+++ {edited} (rendered)" in lines
    assert '-        "Count": 3,' in lines and '+        "Count": 1,' in lines
    assert "--- /dev/null" in lines and f"+++ {out}/bge-m3.nomad.json (rendered)" in lines
    assert all(line.startswith(("--- ", "+++ ", "@@ ", "-", "+", " ")) for line in lines), "only a unified diff"


def test_a_single_file_and_a_stale_file(tmp_path: Path) -> None:
    target = tmp_path / "job.hcl"
    run = nomadgs("render", VLLM, "-o", target, "--format", "hcl", "--check")
    assert run.code == 1 and f"error: {target}: is missing" in run.err and not target.exists()
    assert nomadgs("render", VLLM, "-o", target, "--format", "hcl").code == 0
    run = nomadgs("render", VLLM, "-o", target, "--format", "hcl", "--check")
    assert run.code == 0 and run.err == f"note: {target} is up to date\n" and run.out == ""
    out = tmp_path / "out"
    assert nomadgs("render", VLLM, "-o", f"{out}/").code == 0
    (out / "removed-model.nomad.json").write_text("{}\n")
    (out / "other.nomad.hcl").write_text("")  # another format: not this render's business
    run = nomadgs("render", VLLM, "-o", f"{out}/", "--check")
    assert run.code == 0
    assert f"note: {out}/removed-model.nomad.json: no deployment given renders to this file" in run.err
    assert "other.nomad.hcl" not in run.err


def test_check_needs_an_output_and_bad_input_is_still_bad_input(tmp_path: Path) -> None:
    run = nomadgs("render", VLLM, "--check")
    assert run.code == 2 and "--check compares with files on disk" in run.err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: tiny\nreplicas: many\n")
    run = nomadgs("render", bad, "-o", tmp_path / "out", "--check")
    assert run.code == 2 and "bad.yaml:2:11: replicas:" in run.err and not (tmp_path / "out").exists()


def closed_reader(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run nomadgs with a stdout whose reader is gone before the first byte (`| head -0`): exit code, stderr."""
    read, write = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nomad_gpustack", *map(str, args)],
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    os.close(write)
    os.close(read)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_a_reader_that_leaves_early_does_not_pass_a_stale_tree(tmp_path: Path) -> None:
    # Every file missing: the diff (tens of KB) breaks the pipe long before the check ends.
    code, err = closed_reader("render", *EXAMPLES, "-o", f"{tmp_path}/", "--check")
    assert code == 1, err
    assert f"{len(EXAMPLES)} of {len(EXAMPLES)} job file(s) differ" in err and "Traceback" not in err
    code, err = closed_reader("render", VLLM, "-o", tmp_path / "job.json", "--check", env={"PYTHONUNBUFFERED": "1"})
    assert code == 1, err
    assert nomadgs("render", *EXAMPLES, "-o", f"{tmp_path}/").code == 0
    code, err = closed_reader("render", *EXAMPLES, "-o", f"{tmp_path}/", "--check")
    assert code == 0 and err == f"note: {len(EXAMPLES)} job files in {tmp_path}/ are up to date\n"
