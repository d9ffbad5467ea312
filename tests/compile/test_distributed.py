"""Distributed replicas (`nomad.nodes`): the leader group, one group per worker rank, the templates that find
the other ranks, and the built-in backends' commands (ARCHITECTURE.md, "Distributed replicas")."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from nomad_gpustack.compile.build import Compiled
from nomad_gpustack.errors import InputError
from nomad_gpustack.nomad.render import render_text

from ..support.components import ROOT
from ..support.helpers import compile_yaml
from ..support.nomad_double.jobspec import canonicalize
from ..support.nomad_double.strict import check_job
from ..support.nomad_double.validation import validate

GOLDEN = ROOT / "tests" / "data" / "golden"
LLAMA_RPC: dict[str, Any] = {
    "name": "qwen-rpc",
    "huggingface_repo_id": "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
    "huggingface_filename": "qwen2.5-0.5b-instruct-q4_k_m.gguf",
    "backend": "llama.cpp",
    "backend_version": "cpu",
    "nomad": {"nodes": 3, "memory": "2 GiB"},
}
VLLM_2 = {
    "name": "llama-70b",
    "huggingface_repo_id": "meta-llama/Llama-3.3-70B-Instruct",
    "backend": "vLLM",
    "backend_version": "0.19.0",
    "backend_parameters": ["--max-model-len=8192"],
    "nomad": {"nodes": 2, "gpus": 8},
}
SGLANG_2 = {
    "name": "llama-70b",
    "huggingface_repo_id": "meta-llama/Llama-3.3-70B-Instruct",
    "backend": "SGLang",
    "backend_parameters": ["--context-length 8192"],
    "nomad": {"nodes": 2, "gpus": 8},
}


def groups(compiled: Compiled) -> dict[str, Any]:
    return {g["Name"]: g for g in compiled.job["TaskGroups"]}


def engine(group: Any) -> Any:
    return group["Tasks"][-1]


def error_of(data: dict[str, Any], *backends: str) -> InputError:
    with pytest.raises(InputError) as info:
        compile_yaml(data, *backends)
    return info.value


def test_llama_cpp_over_three_nodes_is_a_leader_and_two_rpc_server_groups() -> None:
    compiled = compile_yaml(LLAMA_RPC)
    by_name = groups(compiled)
    assert list(by_name) == ["inference", "worker-0-1", "worker-0-2"]
    leader = engine(by_name["inference"])
    assert leader["Config"]["args"][leader["Config"]["args"].index("--rpc") + 1] == "${NOMADGS_WORKER_ADDRESSES}"
    # The leader alone serves the model: its service and HTTP check are the one-node job's.
    assert [s["Name"] for s in leader["Services"]] == ["qwen-rpc"]
    assert leader["Services"][0]["Checks"][0]["Type"] == "http"
    (env_file,) = [t for t in leader["Templates"] if t["Envvars"]]
    assert env_file["ChangeMode"] == "restart"
    data = env_file["EmbeddedTmpl"]
    assert "loop 1 3" in data and "replica-%s-rank-%d.qwen-rpc-worker" in data and 'env "NOMAD_ALLOC_INDEX"' in data
    assert 'key "nomadgs/wait/qwen-rpc/workers"' in data  # blocks while a rank is missing
    # A restart renders the template again: a leader whose worker left waits for it instead of failing again.
    assert by_name["inference"]["RestartPolicy"]["RenderTemplates"] is True
    for rank in (1, 2):
        group = by_name[f"worker-0-{rank}"]
        assert group["Count"] == 1
        worker = engine(group)
        assert worker["Config"]["entrypoint"] == ["/app/ggml-rpc-server"]
        assert worker["Config"]["args"] == ["--host", "${NOMAD_IP_http}", "--port", "${NOMAD_PORT_http}"]
        assert worker["Env"]["NOMADGS_NODE_RANK"] == str(rank)
        (service,) = worker["Services"]
        assert service["Name"] == "qwen-rpc-worker" and f"replica-0-rank-{rank}" in service["Tags"]
        assert [c["Type"] for c in service["Checks"]] == ["tcp"]
        # An RPC server reads no model file: no download, no volume, no leader to find.
        assert [t["Name"] for t in group["Tasks"]] == ["llama-cpp"] and "Volumes" not in group
        assert "Templates" not in worker
        assert "RenderTemplates" not in group["RestartPolicy"]  # nothing to render
    assert {"Operand": "distinct_hosts", "RTarget": "true"} in compiled.job["Constraints"]
    check_job(compiled.job)
    assert validate(canonicalize(dict(compiled.job), "default")) == []


def test_each_replica_has_its_own_workers_and_finds_them_by_its_allocation_index() -> None:
    compiled = compile_yaml({**LLAMA_RPC, "replicas": 2, "nomad": {"nodes": 2}})
    by_name = groups(compiled)
    assert list(by_name) == ["inference", "worker-0-1", "worker-1-1"]
    assert by_name["inference"]["Count"] == 2
    assert "replica-1-rank-1" in engine(by_name["worker-1-1"])["Services"][0]["Tags"]
    assert [c for c in compiled.job["Constraints"] if c["Operand"] == "distinct_hosts"] == [
        {"Operand": "distinct_hosts", "RTarget": "true"}
    ]


def test_one_node_is_the_job_as_before() -> None:
    one = compile_yaml({**LLAMA_RPC, "nomad": {"memory": "2 GiB"}})
    also = compile_yaml({**LLAMA_RPC, "nomad": {"nodes": 1, "memory": "2 GiB"}})
    assert one.job == also.job
    assert [g["Name"] for g in one.job["TaskGroups"]] == ["inference"]
    assert "--rpc" not in engine(one.job["TaskGroups"][0])["Config"]["args"]


def test_a_backend_without_a_distributed_block_is_refused_at_nodes() -> None:
    error = error_of({"name": "m", "image_name": "x:1", "backend": "Custom", "nomad": {"nodes": 2}})
    assert "nodes" in str(error) and "nomad.distributed" in str(error)


def test_nomad_native_services_are_refused_for_several_nodes() -> None:
    error = error_of({**LLAMA_RPC, "nomad": {"nodes": 2, "service_provider": "nomad"}})
    assert "service_provider" in str(error) and "Consul" in str(error)


RANKS_BACKEND = """
backend_name: ranks
health_check_path: /health
default_run_command: serve {{model_path}} --port {{port}}
version_configs:
  v1: {image_name: "ranks:1", custom_framework: cpu}
nomad:
  distributed:
    leader_command: serve {{model_path}} --port {{port}} --rank {{node_rank}}
    worker_command: %s
"""


def test_a_worker_cannot_be_given_the_worker_addresses() -> None:
    error = error_of(
        {"name": "m", "local_path": "m", "backend": "ranks", "nomad": {"nodes": 2}},
        RANKS_BACKEND % "join {{worker_addresses}}",
    )
    assert "{{worker_addresses}}" in str(error) and "worker_command" in str(error)


def test_distributed_placeholders_are_unknown_on_one_node() -> None:
    error = error_of(
        {"name": "m", "local_path": "m", "backend": "ranks", "run_command": "serve --rank {{node_rank}}"},
        RANKS_BACKEND % "join",
    )
    assert "{{node_rank}}" in str(error)


def test_the_deployments_run_command_is_the_leaders() -> None:
    compiled = compile_yaml(
        {
            "name": "m",
            "local_path": "m",
            "backend": "ranks",
            "run_command": "own {{node_count}}",
            "nomad": {"nodes": 3},
        },
        RANKS_BACKEND % "join {{leader_ip}}:{{leader_port}} --rank {{node_rank}}",
    )
    by_name = groups(compiled)
    assert engine(by_name["inference"])["Config"]["args"] == ["own", "3"]
    assert engine(by_name["worker-0-2"])["Config"]["args"] == [
        "join", "${NOMADGS_LEADER_IP}:${NOMADGS_LEADER_PORT}", "--rank", "${NOMADGS_NODE_RANK}"
    ]  # fmt: skip


def _golden(name: str, compiled: Compiled) -> None:
    for fmt in ("json", "hcl"):
        path = GOLDEN / f"{name}.nomad.{fmt}"
        text = render_text(compiled.job, fmt)  # type: ignore[arg-type]
        if os.environ.get("NOMADGS_UPDATE_GOLDEN"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        assert path.read_text() == text, f"{path.name} differs: review it, then NOMADGS_UPDATE_GOLDEN=1"


def test_vllm_over_two_nodes_golden() -> None:
    """Reviewed by hand against vLLM's docs/serving/parallelism_scaling.md (multiprocessing multi-node: the head
    `vllm serve ... --nnodes 2 --node-rank 0 --master-addr <head ip>`, each other node the same with its
    `--node-rank` and `--headless`; tensor parallel = GPUs per node, pipeline parallel = nodes, "the common
    practice") and vllm/config/parallel.py (`master_port`, `distributed_executor_backend` "mp")."""
    compiled = compile_yaml(VLLM_2)
    _golden("vllm-llama-70b-2nodes", compiled)
    by_name = groups(compiled)
    leader, worker = engine(by_name["inference"]), engine(by_name["worker-0-1"])
    head = leader["Config"]["args"]
    assert head[head.index("--tensor-parallel-size") + 1] == "8"
    assert head[head.index("--pipeline-parallel-size") + 1] == "2"
    assert head[head.index("--nnodes") + 1] == "2" and head[head.index("--node-rank") + 1] == "0"
    assert head[head.index("--master-addr") + 1] == "${NOMAD_IP_http}"
    assert head[head.index("--master-port") + 1] == "${NOMAD_PORT_dist}"
    assert "--headless" not in head and "--max-model-len=8192" in head
    rest = worker["Config"]["args"]
    assert rest[rest.index("--node-rank") + 1] == "${NOMADGS_NODE_RANK}" and "--headless" in rest
    assert rest[rest.index("--master-addr") + 1] == "${NOMADGS_LEADER_IP}"
    assert "--port" not in rest and "--max-model-len=8192" in rest  # headless: no API server, same engine flags
    assert "Checks" not in worker["Services"][0]  # a headless rank listens on no port of its own
    # The workers find the leader's rendezvous service, which only the leader registers.
    assert [s["Name"] for s in leader["Services"]] == ["llama-70b", "llama-70b-leader"]
    assert leader["Services"][1]["Tags"] == ["replica-${NOMAD_ALLOC_INDEX}"]
    (tmpl,) = worker["Templates"]
    assert 'service "replica-0.llama-70b-leader"' in tmpl["EmbeddedTmpl"] and tmpl["Envvars"]
    # Both read the weights: each has the download and the models volume; each asks for 8 GPUs.
    assert [t["Name"] for t in by_name["worker-0-1"]["Tasks"]] == ["download-model", "vllm"]
    assert worker["Resources"]["Devices"][0]["Count"] == 8
    check_job(compiled.job)
    assert validate(canonicalize(dict(compiled.job), "default")) == []


def test_sglang_over_two_nodes_golden() -> None:
    """Reviewed by hand against SGLang's references/multi_node_deployment/multi_node (every node:
    `launch_server --nnodes 2 --node-rank <i> --dist-init-addr <rank 0 ip>:<port>`, rank 0 with the API's
    --host/--port), server arguments (`--tp-size`, `--pp-size`) and srt/entrypoints/engine.py (a rank >= 1
    serves a health server on its own --host/--port: launch_dummy_health_check_server)."""
    compiled = compile_yaml(SGLANG_2)
    _golden("sglang-llama-70b-2nodes", compiled)
    by_name = groups(compiled)
    head = engine(by_name["inference"])["Config"]["args"]
    assert head[head.index("--dist-init-addr") + 1] == "${NOMAD_IP_http}:${NOMAD_PORT_dist}"
    assert head[head.index("--node-rank") + 1] == "0" and head[head.index("--nnodes") + 1] == "2"
    assert head[head.index("--tp-size") + 1] == "8" and head[head.index("--pp-size") + 1] == "2"
    worker = engine(by_name["worker-0-1"])
    rest = worker["Config"]["args"]
    assert rest[rest.index("--dist-init-addr") + 1] == "${NOMADGS_LEADER_IP}:${NOMADGS_LEADER_PORT}"
    assert rest[rest.index("--port") + 1] == "${NOMAD_PORT_http}" and "--context-length" in rest
    assert [c["Type"] for c in worker["Services"][0]["Checks"]] == ["tcp"]
    check_job(compiled.job)
    assert validate(canonicalize(dict(compiled.job), "default")) == []
    assert json.loads(render_text(compiled.job, "json"))["Job"]["ID"] == "llama-70b"


def test_scaling_by_count_is_refused_for_several_nodes() -> None:
    """The Autoscaler and the gateway change the `inference` group's count: the leaders, not their workers."""
    scaling = {"min": 1, "max": 3, "target_in_flight": 4}
    error = error_of({**LLAMA_RPC, "nomad": {"nodes": 2, "scaling": scaling}})
    assert "nomad.scaling" in str(error) and "several nodes" in str(error)
