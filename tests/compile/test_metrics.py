"""Prometheus metrics of the engines: the service says where they are (tag and meta, as Prometheus' Consul
discovery reads them), and the switch an engine needs to serve them is added to its command."""

from __future__ import annotations

from typing import Any

import pytest

from nomad_gpustack.contract.metadata import META_METRICS_PATH, META_METRICS_PORT, TAG_METRICS
from nomad_gpustack.errors import InputError

from ..support.helpers import compile_yaml, main_task

LLAMA: dict[str, Any] = {"name": "tiny", "local_path": "tiny.gguf", "backend": "llama.cpp"}
SGLANG: dict[str, Any] = {"name": "qwen", "huggingface_repo_id": "Qwen/Qwen2.5-7B-Instruct", "backend": "SGLang"}
VLLM: dict[str, Any] = {"name": "qwen", "huggingface_repo_id": "Qwen/Qwen2.5-7B-Instruct", "backend": "vLLM"}
MINDIE: dict[str, Any] = {"name": "qwen", "huggingface_repo_id": "Qwen/Qwen2.5-7B-Instruct", "backend": "MindIE"}
CUSTOM: dict[str, Any] = {
    "name": "tgi", "huggingface_repo_id": "org/model", "backend": "Custom", "image_name": "tgi:3",
    "run_command": "--model-id {{model_path}} --port {{port}}",
}  # fmt: skip

ENGINE = """
backend_name: engine-custom
default_run_command: serve {{{{model_path}}}} --port {{{{port}}}}
version_configs:
  v1: {{image_name: "engine:1", custom_framework: cpu}}
nomad:
  ports: [stats]
  metrics: {metrics}
"""


def engine(metrics: str) -> str:
    return ENGINE.format(metrics=metrics)


def with_nomad(data: dict[str, Any], **nomad: Any) -> dict[str, Any]:
    return {**data, "nomad": {**data.get("nomad", {}), **nomad}}


def service_of(data: dict[str, Any], *backends: str) -> Any:
    (service,) = main_task(compile_yaml(data, *backends))["Services"]
    return service


def args_of(data: dict[str, Any], *backends: str) -> list[str]:
    return list(main_task(compile_yaml(data, *backends))["Config"]["args"])


def problems_of(data: dict[str, Any], *backends: str) -> list[str]:
    with pytest.raises(InputError) as info:
        compile_yaml(data, *backends)
    return [str(p) for p in info.value.problems]


def test_llama_cpp_gets_metrics_switched_on_and_its_service_says_where() -> None:
    compiled = compile_yaml(LLAMA)
    assert main_task(compiled)["Config"]["args"][-1] == "--metrics"
    (service,) = main_task(compiled)["Services"]
    assert TAG_METRICS in service["Tags"]
    assert service["Meta"][META_METRICS_PATH] == "/metrics" and META_METRICS_PORT not in service["Meta"]
    (note,) = compiled.resolved.notes
    assert note.startswith("--metrics was added to the command: llama.cpp serves Prometheus metrics at /metrics")


@pytest.mark.parametrize("parameters", [["--metrics"], ["--ctx-size 4096", "--metrics"]], ids=["alone", "among others"])
def test_a_switch_already_on_the_command_is_not_added_again(parameters: list[str]) -> None:
    compiled = compile_yaml({**LLAMA, "backend_parameters": parameters})
    assert main_task(compiled)["Config"]["args"].count("--metrics") == 1
    assert compiled.resolved.notes == ()
    assert compiled.resolved.metrics is not None and compiled.resolved.metrics.flag_added is None


def test_sglang_gets_its_own_switch_and_vllm_needs_none() -> None:
    assert args_of(SGLANG)[-1] == "--enable-metrics"
    compiled = compile_yaml(VLLM)
    assert "--metrics" not in main_task(compiled)["Config"]["args"] and compiled.resolved.notes == ()
    assert service_of(VLLM)["Meta"][META_METRICS_PATH] == "/metrics"


def test_false_in_the_deployment_turns_the_backends_metrics_off() -> None:
    service = service_of(with_nomad(LLAMA, metrics=False))
    assert TAG_METRICS not in service["Tags"] and META_METRICS_PATH not in service["Meta"]
    assert "--metrics" not in args_of(with_nomad(LLAMA, metrics=False))


def test_a_custom_deployment_says_where_its_engine_serves_metrics() -> None:
    assert TAG_METRICS not in service_of(CUSTOM)["Tags"], "nomadgs cannot know: no tag unless told"
    service = service_of(with_nomad(CUSTOM, metrics={"path": "/metrics"}))
    assert TAG_METRICS in service["Tags"] and service["Meta"][META_METRICS_PATH] == "/metrics"


def test_the_deployments_setting_wins_over_the_backends() -> None:
    compiled = compile_yaml(with_nomad(LLAMA, metrics={"path": "/prom", "flag": "--prometheus"}))
    assert main_task(compiled)["Config"]["args"][-1] == "--prometheus"
    assert "--metrics" not in main_task(compiled)["Config"]["args"]
    assert main_task(compiled)["Services"][0]["Meta"][META_METRICS_PATH] == "/prom"


def test_metrics_on_another_port_name_it_as_nomad_fills_it_in() -> None:
    meta = service_of(MINDIE)["Meta"]
    assert meta[META_METRICS_PATH] == "/metrics" and meta[META_METRICS_PORT] == "${NOMAD_PORT_metrics}"
    own = service_of({**CUSTOM, "backend": "engine-custom"}, engine("{path: /m, port: stats}"))["Meta"]
    assert own[META_METRICS_PORT] == "${NOMAD_PORT_stats}"
    main_port = service_of({**CUSTOM, "backend": "engine-custom"}, engine("{path: /m, port: http}"))["Meta"]
    assert META_METRICS_PORT not in main_port


def test_a_port_the_backend_does_not_declare_is_refused_where_it_is_written() -> None:
    (message,) = problems_of({**CUSTOM, "backend": "engine-custom"}, engine("{path: /m, port: metric}"))
    assert message.startswith("backend0.yaml:8:")
    assert "nomad.metrics.port: metrics are on port 'metric', which the backend does not declare" in message
    assert "name one of http, stats" in message
    # Set on a version, over the backend's `false`: located at the version's key.
    version = "custom_framework: cpu, nomad: {metrics: {path: /m, port: x}}}"
    (message,) = problems_of(
        {**CUSTOM, "backend": "engine-custom"}, engine("false").replace("custom_framework: cpu}", version)
    )
    assert message.startswith("backend0.yaml:5:")
    assert "version_configs.v1.nomad.metrics.port: metrics are on port 'x'" in message
    (message,) = problems_of(with_nomad(CUSTOM, metrics={"path": "/m", "port": "stats"}))
    assert message.startswith("deploy.yaml:") and "nomad.metrics.port" in message and "name one of http" in message


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        (True, "nomad.metrics: expected {path: /metrics} or false, got true"),
        ("yes", "nomad.metrics: expected {path: /metrics} or false, got 'yes'"),
        ({}, "nomad.metrics: required key 'path' is missing"),
        ({"path": "metrics"}, "nomad.metrics.path: the metrics path 'metrics' must start with '/'"),
        ({"path": "/m", "flag": "metrics"}, "nomad.metrics.flag: 'metrics' is not a command-line flag"),
        ({"path": "/m", "pth": 1}, "nomad.metrics.pth: unknown key 'pth' (did you mean 'path'?)"),
    ],
)
def test_bad_settings_are_refused_located(metrics: Any, expected: str) -> None:
    (message,) = problems_of(with_nomad(LLAMA, metrics=metrics))
    assert message.startswith("deploy.yaml:") and expected in message, message


def test_a_backend_file_setting_is_checked_as_the_backends_other_keys() -> None:
    (message,) = problems_of({**CUSTOM, "backend": "engine-custom"}, engine("'on'"))
    assert message.startswith("backend0.yaml:8:") and "nomad.metrics: expected {path: /metrics} or false" in message


def test_a_shell_command_gets_no_switch_and_no_tag_but_a_warning() -> None:
    shell = {
        **CUSTOM,
        "run_command": "sh -c 'serve {{model_path}} --port {{port}}' extra",
        "nomad": {"metrics": {"path": "/metrics", "flag": "--metrics"}},
    }
    compiled = compile_yaml(shell)
    assert "--metrics" not in main_task(compiled)["Config"]["args"]
    assert TAG_METRICS not in main_task(compiled)["Services"][0]["Tags"]
    assert any("serves Prometheus metrics only with --metrics, which nomadgs cannot add" in w
               for w in compiled.resolved.warnings)  # fmt: skip
    # The switch inside the shell's script counts as there.
    inside = {**shell, "run_command": "sh -c 'serve {{model_path}} --port {{port}} --metrics'"}
    compiled = compile_yaml(inside)
    assert TAG_METRICS in main_task(compiled)["Services"][0]["Tags"] and compiled.resolved.notes == ()
