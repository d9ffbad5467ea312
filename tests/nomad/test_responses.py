"""The response models read Nomad's answers as Nomad writes them: every field an allocation listing carries, nulls
for empty maps and lists, and the one part of `AllocatedResources` that is read (the group's ports)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nomad_gpustack.answers import WrongShape, shaped
from nomad_gpustack.nomad.responses import Allocation, Deployment, JobStub

# One allocation of `/v1/allocations?resources=true` as Nomad 1.8 lists it (api.AllocationListStub), with its
# AllocatedResources whole: every task's resources, the lifecycles, the shared disk, networks and ports.
ALLOCATION: dict[str, Any] = {
    "ID": "b2b51c89-b7e7-45aa-94b8-9580e20f2946",
    "EvalID": "297c80f3-f653-46e4-878b-2f6420620ca6",
    "Name": "m0.inference[0]",
    "Namespace": "default",
    "NodeID": "e381750f-4c3a-4b8b-8c76-597282da1a66",
    "NodeName": "gpu-1",
    "JobID": "m0",
    "JobType": "service",
    "JobVersion": 0,
    "TaskGroup": "inference",
    "DesiredStatus": "run",
    "DesiredDescription": "",
    "ClientStatus": "running",
    "ClientDescription": "Tasks are running",
    "DesiredTransition": {"Migrate": None, "Reschedule": None, "ForceReschedule": None},
    "TaskStates": {
        "llama-cpp": {
            "State": "running",
            "Failed": False,
            "Restarts": 0,
            "StartedAt": "2024-06-01T10:00:00Z",
            "FinishedAt": None,
            "Events": [{"Type": "Started", "Time": 1, "Details": None, "DisplayMessage": "Task started by client"}],
        }
    },
    "DeploymentStatus": {"Healthy": True, "Timestamp": "2024-06-01T10:01:00Z", "Canary": False, "ModifyIndex": 9},
    "FollowupEvalID": "",
    "RescheduleTracker": None,
    "CreateIndex": 7,
    "ModifyIndex": 9,
    "CreateTime": 1717236000000000000,
    "ModifyTime": 1717236060000000000,
    "AllocatedResources": {
        "Tasks": {
            "download-model": {
                "Cpu": {"CpuShares": 1000, "ReservedCores": None},
                "Memory": {"MemoryMB": 2048, "MemoryMaxMB": 0},
                "Networks": None,
                "Devices": None,
            },
            "llama-cpp": {
                "Cpu": {"CpuShares": 4000, "ReservedCores": [0, 1]},
                "Memory": {"MemoryMB": 4096, "MemoryMaxMB": 0},
                "Networks": None,
                "Devices": [{"Vendor": "nvidia", "Type": "gpu", "Name": "A10", "DeviceIDs": ["GPU-0"]}],
            },
        },
        "TaskLifecycles": {"download-model": {"Hook": "prestart", "Sidecar": False}, "llama-cpp": None},
        "Shared": {
            "DiskMB": 300,
            "Networks": [
                {
                    "Mode": "host",
                    "IP": "10.0.0.5",
                    "DynamicPorts": [{"Label": "http", "Value": 20000, "To": 0, "HostIP": "10.0.0.5"}],
                    "ReservedPorts": None,
                }
            ],
            "Ports": [
                {"Label": "metrics", "Value": 20001, "To": 0, "HostIP": "10.0.0.5"},
                {"Label": "http", "Value": 20000, "To": 8080, "HostIP": "10.0.0.5"},
            ],
        },
    },
}


def _listed(*allocations: dict[str, Any]) -> list[Allocation]:
    """The allocations as `status` reads them: raw JSON bytes through pydantic's parser."""
    return shaped(list[Allocation], json.dumps(list(allocations)).encode(), "/v1/allocations")


def test_a_port_is_read_from_an_answer_with_every_resource() -> None:
    (alloc,) = _listed(ALLOCATION)
    assert alloc.port("http") == ("10.0.0.5", 20000)
    assert alloc.port("metrics") == ("10.0.0.5", 20001)
    assert alloc.port("grpc") is None


def test_a_port_of_an_answer_with_nulls_is_none() -> None:
    no_ports = {**ALLOCATION, "AllocatedResources": {**ALLOCATION["AllocatedResources"], "Shared": {"Ports": None}}}
    no_shared = {**ALLOCATION, "AllocatedResources": {"Tasks": None, "Shared": None}}
    no_resources = {**ALLOCATION, "AllocatedResources": None}
    left_out = {k: v for k, v in ALLOCATION.items() if k != "AllocatedResources"}  # without ?resources=true
    for alloc in _listed(no_ports, no_shared, no_resources, left_out):
        assert alloc.port("http") is None


def test_an_allocation_is_read_whole() -> None:
    (alloc,) = _listed(ALLOCATION)
    assert (alloc.index, alloc.healthy, alloc.NodeName, alloc.CreateIndex) == (0, True, "gpu-1", 7)
    (task,) = alloc.TaskStates.values()
    assert task.State == "running" and task.FinishedAt is None
    assert task.Events[0].Details == {} and task.Events[0].text == "Task started by client"


def test_nulls_read_as_empty_maps_and_lists() -> None:
    (alloc,) = _listed({**ALLOCATION, "TaskStates": None, "DeploymentStatus": None})
    assert alloc.TaskStates == {} and alloc.DeploymentStatus is None and alloc.healthy is None
    (task,) = _listed({**ALLOCATION, "TaskStates": {"t": {"State": "pending", "Events": None}}})[0].TaskStates.values()
    assert task.Events == []
    (job,) = shaped(list[JobStub], b'[{"ID": "m0", "Meta": null, "TaskGroups": null, "JobSummary": null}]', "/v1/jobs")
    assert (job.Meta, job.TaskGroups, job.JobSummary) == ({}, [], None)
    (deployment,) = shaped(list[Deployment], b'[{"ID": "d", "TaskGroups": null}]', "/v1/deployments")
    assert deployment.TaskGroups == {}


def test_a_collection_of_the_wrong_kind_is_told_as_before() -> None:
    """A null reads as empty; anything else that is not a map is still told as such (not read as empty)."""
    with pytest.raises(WrongShape, match=r"^'TaskStates' of item 1 in the answer to /v1/allocations is not an object$"):
        _listed({**ALLOCATION, "TaskStates": "none"})
    with pytest.raises(WrongShape, match=r"^'Events' of 't' of 'TaskStates' of item 1 .* is not a list$"):
        _listed({**ALLOCATION, "TaskStates": {"t": {"Events": {}}}})
