"""`nomadgs render` and `nomadgs validate` as a user runs them: real processes, exit codes, messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..support.components import ROOT
from ..support.helpers import nomadgs

EXAMPLE = ROOT / "examples" / "vllm-qwen2.5-7b-instruct.yaml"
GOOD = "name: tiny\nlocal_path: tiny.gguf\nbackend: llama.cpp\n"


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_render_prints_api_json_and_hcl() -> None:
    run = nomadgs("render", EXAMPLE)
    assert run.code == 0, run.err
    job = json.loads(run.out)["Job"]
    assert job["ID"] == "qwen2-5-7b-instruct" and job["TaskGroups"][0]["Count"] == 1
    hcl = nomadgs("render", EXAMPLE, "--format", "hcl")
    assert hcl.code == 0 and hcl.out.startswith('job "qwen2-5-7b-instruct" {')


def test_render_to_a_file_and_to_a_folder(tmp_path: Path) -> None:
    target = tmp_path / "job.json"
    assert nomadgs("render", EXAMPLE, "-o", target).code == 0
    assert json.loads(target.read_text())["Job"]["ID"] == "qwen2-5-7b-instruct"
    second = write(tmp_path, "b.yaml", GOOD)
    out = tmp_path / "out"
    run = nomadgs("render", EXAMPLE, second, "--output", out, "--format", "hcl")
    assert run.code == 0, run.err
    assert sorted(p.name for p in out.iterdir()) == ["qwen2-5-7b-instruct.nomad.hcl", "tiny.nomad.hcl"]


def test_several_deployments_need_a_folder(tmp_path: Path) -> None:
    run = nomadgs("render", EXAMPLE, write(tmp_path, "b.yaml", GOOD))
    assert run.code == 2 and "several deployments need --output FOLDER" in run.err and run.out == ""


def test_nothing_is_written_when_one_deployment_is_bad(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "name: tiny\nbackend: llama.cpp\nreplicas: many\n")
    out = tmp_path / "out"
    run = nomadgs("render", EXAMPLE, bad, "--output", out)
    assert run.code == 2
    assert not out.exists()
    existing = tmp_path / "keep.json"
    existing.write_text("previous")
    assert nomadgs("render", bad, "-o", existing).code == 2
    assert existing.read_text() == "previous"


def test_duplicate_job_ids_are_refused_with_both_places(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", GOOD)
    b = write(tmp_path, "b.yaml", "# the same model, from another file\n" + GOOD.replace("tiny.gguf", "other.gguf"))
    c = write(tmp_path, "c.yaml", "name: other\nlocal_path: c.gguf\nbackend: llama.cpp\nnomad:\n  job_id: tiny\n")
    run = nomadgs("validate", a, b, c)
    assert run.code == 2
    assert run.err.splitlines() == [
        f"error: {b}:2:7: name: job 'tiny' is also produced by {a}:1 (give the models different names, or set "
        "nomad.job_id)",
        f"error: {c}:5:11: nomad.job_id: job 'tiny' is also produced by {a}:1 (give the models different names, "
        "or set nomad.job_id)",
    ]


def test_problems_are_printed_in_line_order(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "name: tiny\nnomad:\n  gpus: -1\nlocal_path: t.gguf\nreplicas: -2\nbogus: 1\n")
    run = nomadgs("validate", bad)
    assert run.code == 2
    assert [line.split(":")[2] for line in run.err.splitlines()] == ["3", "5", "6"], run.err


BAD_INPUTS = {
    "syntax": ("name: [tiny\nbackend: vLLM\n", "bad.yaml:2:", "YAML syntax error"),
    "duplicate": ("name: a\nname: b\n", "bad.yaml:2:1: name:", "duplicate key 'name' (first defined on line 1)"),
    "unknown key": ("name: tiny\nreplica: 2\n", "bad.yaml:2:1: replica:", "did you mean 'replicas'?"),
    "nested unknown key": ("name: tiny\nnomad:\n  gpu: 2\n", "bad.yaml:3:3: nomad.gpu:", "did you mean 'gpus'?"),
    "wrong type": ("name: tiny\nreplicas: [1]\n", "bad.yaml:2:11: replicas:", "expected a whole number"),
    "unknown backend": ("name: tiny\nlocal_path: m\nbackend: llamacpp\n", "bad.yaml:3:10: backend:",
                        "unknown backend 'llamacpp' (did you mean 'llama.cpp'?"),
    "unknown version": ("name: tiny\nlocal_path: m\nbackend: llama.cpp\nbackend_version: cuda12\n",
                        "bad.yaml:4:18: backend_version:", "has no version 'cuda12' (did you mean 'cuda'?)"),
    "unknown placeholder": ("name: tiny\nlocal_path: m\nbackend: llama.cpp\nrun_command: -m {{model}}\n",
                            "bad.yaml:4:14: run_command:", "unknown placeholder {{model}}"),
    "size without unit": ("name: tiny\nlocal_path: m\nbackend: llama.cpp\nnomad:\n  memory: 16384\n",
                          "bad.yaml:5:11: nomad.memory:",
                          "a size needs a unit; 16384 alone would be read as bytes (write '16 GiB' or '16384 MiB')"),
    "coerced count": ("name: tiny\nlocal_path: m\nbackend: llama.cpp\nreplicas: true\n", "bad.yaml:4:11: replicas:",
                      "expected a whole number, got true or false (true)"),
    "cpu in cores": ("name: tiny\nlocal_path: m\nbackend: llama.cpp\nnomad:\n  cpu: 4\n", "bad.yaml:5:8: nomad.cpu:",
                     "cpu is in MHz, not cores: 4 MHz is below the floor of 100 MHz (4 cores at 2.5 GHz: write 10000)"),
    "missing image": ("name: tiny\nbackend: Custom\nrun_command: serve\n", "bad.yaml:", "needs image_name"),
    "invalid name": ("name: 'no spaces allowed'\n", "bad.yaml:1:7: name:", "is not a valid model name"),
    "not a mapping": ("- a\n- b\n", "bad.yaml:1:1:", "expected a mapping (key: value), got a list"),
    "wrong file": ("user: root\nshell: /bin/sh\n", "bad.yaml:1:1:", "this is not a deployment file"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_gives_one_clear_message(tmp_path: Path, case: str) -> None:
    text, where, what = BAD_INPUTS[case]
    bad = write(tmp_path, "bad.yaml", text)
    for command in ("render", "validate"):
        run = nomadgs(command, bad.name, cwd=tmp_path)  # named in messages as given: bad.yaml
        assert run.code == 2, (command, run.err)
        assert run.out == ""
        assert "Traceback" not in run.err
        (line,) = run.err.strip().splitlines()
        assert line.startswith(f"error: {where}"), line
        assert what in line, line


def test_huge_files_alias_bombs_and_unreadable_files(tmp_path: Path) -> None:
    huge = write(tmp_path, "huge.yaml", "a: " + "x" * (5 * 1024 * 1024) + "\n")
    run = nomadgs("render", huge, cwd=tmp_path)
    assert run.code == 2 and "huge.yaml: the file is" in run.err and "the limit is" in run.err
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    )
    run = nomadgs("validate", write(tmp_path, "bomb.yaml", bomb), cwd=tmp_path)
    assert run.code == 2 and "alias bomb" in run.err and "Traceback" not in run.err
    run = nomadgs("render", write(tmp_path, "bin.yaml", b"name: \xff\n"), cwd=tmp_path)
    assert run.code == 2 and "bin.yaml:1: the file is not valid UTF-8 text" in run.err
    run = nomadgs("render", tmp_path / "missing.yaml", cwd=tmp_path)
    assert run.code == 2 and "missing.yaml: no such file" in run.err
    run = nomadgs("render", tmp_path, cwd=tmp_path)
    assert run.code == 2 and "is a folder, not a file" in run.err


def test_bad_backend_file_given_with_backends_is_located(tmp_path: Path) -> None:
    backend = write(tmp_path, "b.yaml", "backend_name: x-custom\nversion_configs:\n  v1:\n    image: a\n")
    run = nomadgs("validate", EXAMPLE, "--backends", backend, cwd=tmp_path)
    assert run.code == 2
    assert "b.yaml:4:5: version_configs.v1.image: unknown key 'image' (did you mean 'image_name'?)" in run.err


def test_validate_reports_each_deployment_and_json() -> None:
    run = nomadgs("validate", *sorted(p.relative_to(ROOT) for p in (ROOT / "examples").glob("*.yaml")))
    assert run.code == 0, run.err
    assert (
        "ok  examples/vllm-qwen2.5-7b-instruct.yaml: job qwen2-5-7b-instruct (vLLM 0.19.0, 1 replica, 1 cuda GPU each)"
        in run.out
    )
    data = json.loads(nomadgs("validate", EXAMPLE, "--output", "json").out)
    assert data["valid"] is True and data["deployments"][0]["gpus"] == 1


def test_help_and_usage_errors() -> None:
    run = nomadgs("--help")
    assert run.code == 0 and "exit codes:" in run.out and "render" in run.out
    run = nomadgs("render")
    assert run.code == 2 and "usage:" in run.err
    run = nomadgs("render", EXAMPLE, "--format", "yaml")
    assert run.code == 2 and "invalid choice" in run.err


def test_jobs_folder_is_in_sync_with_examples(tmp_path: Path) -> None:
    """The one check that jobs/ holds what examples/ renders to, byte for byte, and nothing else."""
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    for fmt in ("json", "hcl"):
        out = tmp_path / fmt
        run = nomadgs("render", *examples, "--output", f"{out}/", "--format", fmt)
        assert run.code == 0, run.err
        for rendered in sorted(out.iterdir()):
            checked_in = ROOT / "jobs" / rendered.name
            assert checked_in.exists(), f"jobs/{rendered.name} is missing"
            assert checked_in.read_text() == rendered.read_text(), (
                f"jobs/{rendered.name} is stale: run `nomadgs render examples/*.yaml --output jobs/ --format {fmt}`"
            )
    expected = {p.name for fmt in ("json", "hcl") for p in (tmp_path / fmt).iterdir()}
    expected |= {"nomadgs-gateway.nomad.json", "nomadgs-gateway.nomad.hcl"}  # `nomadgs gateway-job` (tests/cli)
    assert {p.name for p in (ROOT / "jobs").iterdir()} == expected, "jobs/ holds files no example produces"


def test_many_problems_are_capped(tmp_path: Path) -> None:
    text = "name: tiny\n" + "".join(f"unknown_{i}: 1\n" for i in range(15))
    run = nomadgs("validate", write(tmp_path, "many.yaml", text).name, cwd=tmp_path)
    assert run.code == 2
    lines = run.err.strip().splitlines()
    assert len(lines) == 11 and lines[-1] == "error: many.yaml: ... and 5 more problems"


@pytest.mark.parametrize("where", ["under a file", "a read-only place"])
def test_an_unwritable_output_is_one_line_of_bad_input(tmp_path: Path, where: str) -> None:
    blocker = write(tmp_path, "blocker", "a file")
    target = blocker / "job.json" if where == "under a file" else Path("/proc/nomadgs-job.json")
    run = nomadgs("render", EXAMPLE, "-o", target)
    assert run.code == 2 and "Traceback" not in run.err, run.err
    (line,) = run.err.splitlines()
    assert line.startswith(f"error: {target}: cannot write")
    assert blocker.read_text() == "a file"


def test_a_full_disk_leaves_no_file_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno
    import os

    from nomad_gpustack.cli import main

    real_fsync = os.fsync
    calls: list[int] = []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the second job file does not fit
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    second = write(tmp_path, "b.yaml", GOOD)
    out = tmp_path / "jobs"
    assert main(["render", str(EXAMPLE), str(second), "-o", str(out)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "cannot write the file: No space left on device" in line
    assert list(out.iterdir()) == [], "neither the first file nor a temporary one is left"


def test_a_file_name_for_several_deployments_is_refused(tmp_path: Path) -> None:
    second = write(tmp_path, "b.yaml", GOOD)
    target = tmp_path / "out.json"
    run = nomadgs("render", EXAMPLE, second, "-o", target)
    assert run.code == 2 and not target.exists(), "no folder named out.json"
    (line,) = run.err.splitlines()
    assert f"several deployments need --output FOLDER, and '{target}' names a file" in line
    assert nomadgs("render", EXAMPLE, second, "-o", f"{tmp_path / 'jobs.d'}/").code == 0, "a trailing / is a folder"
    assert len(list((tmp_path / "jobs.d").iterdir())) == 2
