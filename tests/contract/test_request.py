"""The replica's request: written into the compiled job, read back as GroupRequest (compile/request.py)."""

from __future__ import annotations

from typing import Any

import pytest

from nomad_gpustack.contract.request import GroupRequest, group_request, requested_device
from nomad_gpustack.durations import MINUTE
from nomad_gpustack.sizes import GIB, MIB, parse_size

from ..support.helpers import compile_yaml


def test_group_request_reads_back_what_the_compiler_wrote() -> None:
    compiled = compile_yaml(
        {
            "name": "q",
            "huggingface_repo_id": "o/r",
            "backend": "vLLM",
            "replicas": 2,
            "nomad": {
                "gpus": 2,
                "gpu_memory": "40 GiB",
                "gpu_model": "NVIDIA A100-SXM4-80GB",
                "memory": "64 GiB",
                "cpu": 6000,
                "startup_timeout": "45m",
                "datacenters": ["dc1", "dc2"],
                "node_pool": "gpu",
            },
        }
    )
    r = compiled.resolved
    req = group_request(dict(compiled.job))
    assert req == GroupRequest(
        group="inference",
        count=r.placement.replicas,
        cpu=r.resources.cpu,
        memory_mb=r.resources.memory_mib,
        device="nvidia/gpu",
        gpus=r.resources.gpus,
        gpu_memory="40 GiB",
        gpu_model=r.resources.gpu_model,
        datacenters=r.placement.datacenters,
        node_pool=r.placement.node_pool,
        health_path=r.service.health_check_path,
        startup_timeout_ns=r.lifecycle.startup_timeout,
        max_parallel=r.update.max_parallel,
        auto_revert=r.update.auto_revert,
        progress_deadline_ns=r.update.progress_deadline,
    )
    # The numbers behind the request, in case a default changes without the reader following.
    assert (req.count, req.cpu, req.memory_mb, req.gpus) == (2, 6000, 64 * 1024, 2)
    assert (req.health_path, req.startup_timeout_ns) == ("/v1/models", 45 * MINUTE)
    assert r.resources.gpu_memory is not None and parse_size(req.gpu_memory or "") == r.resources.gpu_memory


def test_the_download_task_is_not_part_of_the_request() -> None:
    job = compile_yaml({"name": "q", "huggingface_repo_id": "o/r", "backend": "vLLM", "nomad": {"cpu": 3000}}).job
    assert [t["Name"] for t in job["TaskGroups"][0]["Tasks"]] == ["download-model", "vllm"]
    assert group_request(dict(job)).cpu == 3000


def test_a_cpu_job_requests_no_device() -> None:
    compiled = compile_yaml({"name": "c", "local_path": "m.gguf", "backend": "llama.cpp", "backend_version": "cpu"})
    req = group_request(dict(compiled.job))
    assert (req.device, req.gpus, req.gpu_memory, req.gpu_model) == (None, 0, None, None)


@pytest.mark.parametrize("size", [24 * GIB, 40960 * MIB, 1536 * MIB, 80 * GIB + 512 * MIB])
def test_gpu_memory_round_trips_through_the_constraint(size: int) -> None:
    device: Any = requested_device("nvidia/gpu", 1, size, "L4")
    job = {"TaskGroups": [{"Name": "g", "Tasks": [{"Resources": {"Devices": [device]}}]}]}
    req = group_request(job)
    assert req.gpu_memory is not None and parse_size(req.gpu_memory) == size
    assert req.gpu_memory.endswith("iB"), "Nomad compares device memory only with a value that has a unit"
    assert (req.device, req.gpus, req.gpu_model) == ("nvidia/gpu", 1, "L4")


def test_no_constraints_without_memory_or_model() -> None:
    device = requested_device("nvidia/gpu", 3, None, None)
    assert device == {"Name": "nvidia/gpu", "Count": 3}
