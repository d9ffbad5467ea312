"""HCL output: python-hcl2 parses it back into the very job the JSON describes."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nomad_gpustack.compile.build import build
from nomad_gpustack.contract.jobspec import Job, validate_job
from nomad_gpustack.nomad.hcl import quote, render_hcl
from nomad_gpustack.spec.catalog import Catalog
from nomad_gpustack.spec.loader import load_backend_file, load_catalog, load_deployment

from ..support.backend_files import PROJECT_BACKENDS, BackendCorpus
from ..support.components import ROOT
from ..support.hcl_reader import job_from_hcl, parse
from ..support.helpers import compile_yaml, deployment

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def round_trip(job: Job) -> None:
    validate_job(job)  # every rendered job is accepted by the strict models
    back = job_from_hcl(parse(render_hcl(job)))
    assert back == job


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_round_trip_through_hcl(example: Path) -> None:
    round_trip(build(load_deployment(example), load_catalog()).job)


def version_jobs(files: list[Path]) -> Iterator[tuple[str, Job]]:
    """A job for every version of every backend in `files`: two replicas, two GPUs of 16 GiB where it has GPUs."""
    for file in files:
        for backend in load_backend_file(file):
            for version, config in backend.spec.versions.items():
                nomad = {} if "cpu" in config.frameworks else {"gpus": 2, "gpu_memory": "16 GiB"}
                spec = deployment({"name": "m", "huggingface_repo_id": "o/r", "backend": backend.spec.backend_name,
                                   "backend_version": version, "replicas": 2, "nomad": nomad})  # fmt: skip
                yield f"{file.name} {version}", build(spec, Catalog().adding([backend])).job


BUILTIN = sorted((ROOT / "backends").glob("*.yaml"))


def test_every_builtin_backend_version_round_trips() -> None:
    count = 0
    for _, job in version_jobs(BUILTIN):
        round_trip(job)
        count += 1
    assert count >= 20


def test_every_backend_version_of_each_corpus_round_trips(backend_corpus: BackendCorpus) -> None:
    count = 0
    for _, job in version_jobs(backend_corpus.files()):
        round_trip(job)
        count += 1
    assert count >= backend_corpus.min_versions


def test_hcl_names_match_nomads_jobspec() -> None:
    """Written by hand from Nomad's jobspec docs, not by our renderer: checks the HCL name mapping itself."""
    text = """
job "tiny-llm" {
  datacenters = ["dc1"]
  type        = "service"

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  group "server" {
    count = 1

    network {
      port "http" {
        to = 8000
      }
      port "admin" {
        static = 9000
      }
    }

    volume "models" {
      type      = "host"
      source    = "models"
      read_only = true
    }

    restart {
      attempts = 2
      interval = "30m"
    }

    service {
      name     = "tiny-llm"
      port     = "http"
      provider = "consul"
      tags     = ["inference", "openai"]

      check {
        type     = "http"
        path     = "/v1/models"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "vllm" {
      driver = "docker"

      config {
        image = "vllm/vllm-openai:v0.6.3"
        ports = ["http"]
        args  = ["--model", "${NOMAD_META_model}", "--tensor-parallel-size", "1"]
      }

      env {
        HF_HOME = "/local/hf"
      }

      volume_mount {
        volume      = "models"
        destination = "/models"
      }

      resources {
        cpu    = 4000
        memory = 16384

        device "nvidia/gpu" {
          count = 1

          constraint {
            attribute = "${device.attr.memory}"
            operator  = ">="
            value     = "40 GiB"
          }
        }
      }
    }
  }
}
"""
    job: Any = job_from_hcl(parse(text))
    assert job["ID"] == "tiny-llm" and job["Constraints"] == [{"LTarget": "${attr.kernel.name}", "RTarget": "linux"}]
    group = job["TaskGroups"][0]
    assert group["Networks"][0]["DynamicPorts"] == [{"Label": "http", "To": 8000}]
    assert group["Networks"][0]["ReservedPorts"] == [{"Label": "admin", "Value": 9000}]
    assert group["Volumes"] == {"models": {"Name": "models", "Type": "host", "Source": "models", "ReadOnly": True}}
    assert group["RestartPolicy"] == {"Attempts": 2, "Interval": 30 * 60 * 10**9}
    check = group["Services"][0]["Checks"][0]
    assert group["Services"][0]["PortLabel"] == "http"
    assert check == {"Type": "http", "Path": "/v1/models", "Interval": 10 * 10**9, "Timeout": 2 * 10**9}
    task = group["Tasks"][0]
    assert task["Config"]["args"][1] == "${NOMAD_META_model}"
    assert task["VolumeMounts"] == [{"Volume": "models", "Destination": "/models"}]
    assert task["Resources"]["MemoryMB"] == 16384
    assert task["Resources"]["Devices"] == [
        {"Name": "nvidia/gpu", "Count": 1,
         "Constraints": [{"LTarget": "${device.attr.memory}", "Operand": ">=", "RTarget": "40 GiB"}]}
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", '"plain"'),
        ('say "hi"\\n', '"say \\"hi\\"\\\\n"'),
        ("line\nnext", '"line\\nnext"'),
        ("${NOMAD_PORT_http}", '"${NOMAD_PORT_http}"'),
        ("${attr.cpu.arch}", '"${attr.cpu.arch}"'),
        ("${FOO:-bar}", '"$${FOO:-bar}"'),
        ("%{ if x }", '"%%{ if x }"'),
    ],
)
def test_quoting_keeps_runtime_variables_and_escapes_the_rest(text: str, expected: str) -> None:
    assert quote(text) == expected
    assert parse(f"x = {expected}\n")["x"].replace("$${", "${").replace("%%{", "%{") == text


def test_layout_looks_like_nomad_fmt() -> None:
    job = build(load_deployment(EXAMPLES[0]), load_catalog()).job
    text = render_hcl(job)
    lines = text.splitlines()
    assert lines[0].startswith('job "') and lines[-1] == "}"
    assert all((len(line) - len(line.lstrip(" "))) % 2 == 0 for line in lines)
    assert "\t" not in text and not any(line != line.rstrip() for line in lines)
    # `=` aligned over runs of single-line attributes (hclwrite's rule)
    run: list[str] = []
    for line in [*lines, ""]:
        if " = " in line and not line.rstrip().endswith(("[", "{")):
            run.append(line)
            continue
        if len(run) > 1:
            assert len({r.index(" = ") for r in run}) == 1, run
        run = []


def test_jobs_json_equals_hcl_for_every_checked_in_job() -> None:
    for json_file in sorted((ROOT / "jobs").glob("*.nomad.json")):
        hcl_file = json_file.with_name(json_file.name.replace(".json", ".hcl"))
        from_json = json.loads(json_file.read_text())["Job"]
        from_hcl = job_from_hcl(parse(hcl_file.read_text()))
        assert from_hcl == from_json, json_file.name


# --- multi-line text as heredocs ------------------------------------------------------------------------------


def templated_job(text: str) -> Job:
    """A job whose one template holds `text` (no model: no download task)."""
    backend = {
        "backend_name": "t-custom",
        "default_run_command": "serve --port {{port}}",
        "version_configs": {"v1": {"image_name": "a:1", "custom_framework": "cpu"}},
        "nomad": {"templates": [{"destination": "local/f", "data": text}]},
    }
    return compile_yaml({"name": "m", "backend": "t-custom"}, yaml.safe_dump(backend)).job


HEREDOC_TEXTS = {
    "script": ('#!/bin/sh\n  indented ${HOME} %{ if } \\n back\\slash "q"\n\ttab\n\nlast ${NOMAD_PORT_http}\n', "EOT"),
    "marker in the text": ("EOT\n  EOT\nnext\n", "EOF"),
    "every line indented": ("  all\n  indented\n", None),
    "whitespace-only line": ("a\n   \nb\n", None),
    "no final newline": ("a\nb", None),
    "one line": ("one line\n", None),
    "control character": ("a\x1bb\nc\n", None),
}


@pytest.mark.parametrize("case", list(HEREDOC_TEXTS), ids=list(HEREDOC_TEXTS))
def test_multi_line_text_is_a_heredoc_where_that_is_exact(case: str) -> None:
    text, marker = HEREDOC_TEXTS[case]
    job = templated_job(text)
    rendered = render_hcl(job)
    heredocs = re.findall(r"= <<-([A-Z]+)$", rendered, re.M)
    assert heredocs == ([marker] if marker else []), rendered
    round_trip(job)


def test_the_download_script_is_a_heredoc_with_the_attributes_aligned_around_it() -> None:
    text = render_hcl(build(load_deployment(ROOT / "examples" / "vllm-qwen2.5-7b-instruct.yaml"), load_catalog()).job)
    assert '        destination = "local/download.sh"\n        data        = <<-EOT\n          #!/bin/sh\n' in text
    assert '\n        EOT\n        change_mode = "noop"\n        perms       = "0755"\n' in text
    assert "\\n" not in text  # no escaped newlines left: every multi-line text is a heredoc


# --- the layout, checked by the formatter Nomad and Terraform share -------------------------------------------

_INTERPOLATION_ONLY = re.compile(r'^(\s*\S+\s*= )"\$\{([A-Za-z_][A-Za-z0-9_.-]*)\}"$', re.M)


def terraform_fmt(binary: str, text: str) -> str:
    run = subprocess.run([binary, "fmt", "-no-color", "-"], input=text, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


def rendered_jobs() -> dict[str, str]:
    """Every HCL file this project renders: the checked-in jobs, every version of the built-in and the project's
    backend files, the heredoc cases."""
    jobs = {path.name: path.read_text() for path in sorted((ROOT / "jobs").glob("*.nomad.hcl"))}
    for name, job in version_jobs([*BUILTIN, *sorted(PROJECT_BACKENDS.rglob("*.yaml"))]):
        jobs[name] = render_hcl(job)
    for case, (text, _) in HEREDOC_TEXTS.items():
        jobs[f"heredoc: {case}"] = render_hcl(templated_job(text))
    return jobs


def test_rendered_hcl_is_what_terraform_fmt_writes(terraform_binary: str) -> None:
    """`terraform fmt` is hclwrite's formatter, as `nomad fmt` is: it may only unwrap `"${x}"` to `x`."""
    jobs = rendered_jobs()
    assert len(jobs) >= 7 + 20 + 24 + len(HEREDOC_TEXTS)
    together = "\n".join(jobs.values())
    if terraform_fmt(terraform_binary, together) == _INTERPOLATION_ONLY.sub(r"\1\2", together):
        return
    differ = [name for name, text in jobs.items()
              if terraform_fmt(terraform_binary, text) != _INTERPOLATION_ONLY.sub(r"\1\2", text)]  # fmt: skip
    pytest.fail(f"terraform fmt changes the layout of: {', '.join(differ)}")


def test_the_fmt_check_sees_a_misaligned_attribute(terraform_binary: str) -> None:
    text = render_hcl(templated_job("a\nb\n")).replace("destination = ", "destination  = ", 1)
    assert terraform_fmt(terraform_binary, text) != _INTERPOLATION_ONLY.sub(r"\1\2", text)


def test_terraform_fmt_check_fails_exactly_on_the_jobs_with_an_interpolation_only_string(
    terraform_binary: str,
) -> None:
    """What the README says of `terraform fmt -check`: exit 3 on each checked-in job that holds a string such as
    `"${attr.driver.docker.runtimes}"`, because of that rewrite alone; 0 once the rewrite is applied."""

    def check(text: str) -> int:
        run = subprocess.run([terraform_binary, "fmt", "-check", "-no-color", "-"], input=text, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        return run.returncode

    jobs = {path.name: path.read_text() for path in sorted((ROOT / "jobs").glob("*.nomad.hcl"))}
    quoted = {name for name, text in jobs.items() if _INTERPOLATION_ONLY.search(text)}
    assert len(jobs) == 9 and len(quoted) == 7, "the README counts them"
    assert {name for name, text in jobs.items() if check(text) == 3} == quoted
    assert all(check(_INTERPOLATION_ONLY.sub(r"\1\2", text)) == 0 for text in jobs.values())
