"""Nomad's own job validation, applied before anything is sent: a deployment we accept compiles to a job that
the Nomad double's validation (`Job.Validate`'s rules) accepts, and one Nomad would refuse is refused here,
located in the deployment file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nomad_gpustack.compile.build import build
from nomad_gpustack.errors import InputError
from nomad_gpustack.spec.loader import load_catalog, load_deployment

from ..support.components import ROOT
from ..support.helpers import compile_yaml, main_task
from ..support.nomad_double.jobspec import canonicalize
from ..support.nomad_double.strict import check_job
from ..support.nomad_double.validation import validate

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
LLAMA_CPU: dict[str, Any] = {"name": "m", "local_path": "m.gguf", "backend": "llama.cpp", "backend_version": "cpu"}


def nomad_errors(job: Any) -> list[str]:
    return validate(canonicalize(dict(job), "default"))


@pytest.mark.parametrize(
    "nomad",
    [
        {"cpu": 100},
        {"cpu": 10_000_000},
        {"memory": "10 MiB"},
        {"memory": "1 GiB", "memory_max": "1 GiB"},
        {"check_interval": "1s", "check_timeout": "1s"},
        {"startup_timeout": "11s"},
        {"datacenters": ["dc1", "dc2"]},
    ],
)
def test_the_edges_we_accept_are_jobs_nomad_accepts(nomad: dict[str, Any]) -> None:
    assert nomad_errors(compile_yaml({**LLAMA_CPU, "nomad": nomad}).job) == []


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_is_a_job_nomad_accepts(example: Path) -> None:
    assert nomad_errors(build(load_deployment(example), load_catalog()).job) == []


@pytest.mark.parametrize(
    ("nomad", "expected"),
    [
        ({"cpu": 4}, "3:8: nomad.cpu: cpu is in MHz, not cores: 4 MHz is below the floor of 100 MHz "
                     "(4 cores at 2.5 GHz: write 10000)"),
        ({"cpu": 0}, "3:8: nomad.cpu: cpu must be at least 100 MHz (write the MHz one replica reserves, e.g. 4000)"),
        ({"cpu": 99999999999}, "3:8: nomad.cpu: 99999999999 MHz is more than any Nomad node offers"),
        ({"memory": "9 MiB"}, "3:11: nomad.memory: 9 MiB is below Nomad's minimum of 10 MiB"),
        ({"memory": "16 GiB", "memory_max": "8 GiB"},
         "4:15: nomad.memory_max: memory_max (8 GiB) is below memory (16 GiB); Nomad refuses such a job"),
        ({"check_timeout": "500ms"}, "3:18: nomad.check_timeout: check_timeout must be at least 1s (Nomad's minimum)"),
        ({"startup_timeout": "10s"}, "3:20: nomad.startup_timeout: startup_timeout must be longer than 10s"),
        ({"datacenters": ["dc1", " "]}, "5:5: nomad.datacenters[1]: a datacenter name cannot be empty"),
    ],
)  # fmt: skip
def test_values_nomad_would_refuse_are_located_errors(nomad: dict[str, Any], expected: str) -> None:
    with pytest.raises(InputError) as info:
        compile_yaml({"name": "m", "nomad": nomad, "local_path": "m.gguf", "backend": "llama.cpp"})
    (problem,) = info.value.problems
    assert str(problem).startswith(f"deploy.yaml:{expected}"), str(problem)


# The largest value of each size and duration (spec/base.py), in the fields of Nomad's job they reach.
LARGEST: dict[str, Any] = {
    "memory": "1 PiB", "memory_max": "1 PiB", "shm_size": "1 PiB", "gpu_memory": "16 TiB",
    "check_interval": "168h", "check_timeout": "168h", "startup_timeout": "168h", "image_pull_timeout": "168h",
}  # fmt: skip
VLLM: dict[str, Any] = {"name": "m", "huggingface_repo_id": "o/r", "backend": "vLLM"}


def test_the_largest_sizes_and_durations_fit_the_fields_of_nomads_job() -> None:
    job = compile_yaml({**VLLM, "nomad": LARGEST}).job
    check_job(dict(job))  # every integer within its Go type's range (the double's strict decoder)
    assert nomad_errors(job) == []
    task = main_task(compile_yaml({**VLLM, "nomad": LARGEST}))
    assert task["Resources"]["MemoryMB"] == 1024**3 and task["Config"]["shm_size"] == 1024**5


@pytest.mark.parametrize(
    ("nomad", "expected"),
    [
        ({"memory": "99999999999999 TiB"}, "5:11: nomad.memory: 99999999999999 TiB is more than any node has "
                                           "(write a size from 10 MiB to 1 PiB per replica, e.g. '64 GiB')"),
        ({"memory_max": "1025 TiB"}, "5:15: nomad.memory_max: 1025 TiB is more than any node has "
                                     "(write a size from 10 MiB to 1 PiB per replica, e.g. '64 GiB')"),
        ({"shm_size": "2 PiB"}, "5:13: nomad.shm_size: 2 PiB is more than any node has "
                                "(write a size up to 1 PiB, e.g. '16 GiB')"),
        ({"gpu_memory": "99999999 TiB"}, "5:15: nomad.gpu_memory: 99999999 TiB is more than any GPU has "
                                         "(write each GPU's memory, up to 16 TiB (e.g. '80 GiB'), or auto)"),
        ({"startup_timeout": "169h"}, "5:20: nomad.startup_timeout: 169h is longer than a week "
                                      "(write at most 168h (a week), e.g. 30m)"),
        ({"check_interval": 99999999999}, "5:19: nomad.check_interval: 99999999999 seconds is longer than a week"),
        ({"image_pull_timeout": "9" * 400 + "h"},
         "5:23: nomad.image_pull_timeout: 9999999999999999999999999999999999999... is longer than a week"),
        ({"memory": "9" * 400 + " GiB"},
         "5:11: nomad.memory: 9999999999999999999999999999999999999... is more than any node has"),
    ],
)  # fmt: skip
def test_sizes_and_durations_beyond_nomads_fields_are_refused_at_validate(nomad: dict[str, Any], expected: str) -> None:
    with pytest.raises(InputError) as info:
        compile_yaml({**VLLM, "nomad": nomad})
    (problem,) = info.value.problems
    assert str(problem).startswith(f"deploy.yaml:{expected}"), str(problem)


def test_a_shared_memory_size_from_gpustacks_env_is_bounded_as_shm_size() -> None:
    with pytest.raises(InputError) as info:
        compile_yaml({**VLLM, "env": {"GPUSTACK_MODEL_RUNTIME_SHM_SIZE_GIB": "99999999999"}})
    (problem,) = info.value.problems
    assert problem.field == "env.GPUSTACK_MODEL_RUNTIME_SHM_SIZE_GIB"
    assert problem.message == "99999999999 GiB is more than any node has"


@pytest.mark.parametrize(
    ("backend_name", "task"), [("alloc", "alloc-server"), ("download-model", "download-model-server")]
)
def test_a_backend_name_nomad_reserves_is_not_the_task_name(backend_name: str, task: str) -> None:
    backend = f"backend_name: {backend_name}\nversion_configs:\n  v1: {{image_name: 'a:1', custom_framework: cpu}}\n"
    compiled = compile_yaml({"name": "m", "huggingface_repo_id": "o/r", "backend": backend_name}, backend)
    assert main_task(compiled)["Name"] == task
    assert nomad_errors(compiled.job) == []


def test_templates_need_a_destination_and_data() -> None:
    backend = "backend_name: t-custom\nnomad:\n  templates: [{destination: local/x, data: ''}]\n"
    with pytest.raises(InputError) as info:
        compile_yaml({"name": "m", "backend": "t-custom"}, backend)
    assert "backend0.yaml:3:44: nomad.templates[0].data: cannot be empty" in str(info.value)
