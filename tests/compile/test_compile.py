"""The compiler: GPUStack semantics in, a Nomad job out."""

from __future__ import annotations

from typing import Any

import pytest

from nomad_gpustack.contract.jobspec import validate_job
from nomad_gpustack.durations import MINUTE, SECOND
from nomad_gpustack.errors import InputError

from ..support.helpers import compile_yaml, main_task

VLLM_QWEN: dict[str, Any] = {
    "name": "Qwen2.5-7B-Instruct",
    "huggingface_repo_id": "Qwen/Qwen2.5-7B-Instruct",
    "backend": "vLLM",
    "nomad": {"gpus": 1, "gpu_memory": "24 GiB"},
}

ECHO_BACKEND = """
backend_name: echo-custom
health_check_path: /health
parameter_format: {fmt}
default_entrypoint: /bin/echo-server --verbose
default_run_command: >-
  serve {{{{model_path}}}} --port {{{{port}}}} --host {{{{worker_ip}}}} --name "{{{{model_name}}}}"
  --gpus {{{{gpu_count}}}} --ids={{{{gpu_ids}}}} --cache {{{{CACHE}}}}
default_env:
  CACHE: /from-backend
  LEVEL: info
version_configs:
  v1:
    image_name: echo:1
    custom_framework: cuda
    env:
      CACHE: /from-version
  v2:
    image_name: echo:2
    custom_framework: rocm
    entrypoint: /bin/v2
  cpu:
    image_name: echo:cpu
    custom_framework: cpu
"""


def echo(fmt: str = "null") -> str:
    return ECHO_BACKEND.format(fmt=fmt)


def echo_deployment(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "my-model.v1", "huggingface_repo_id": "org/repo", "backend": "echo-custom"}
    data.update(extra)
    return data


def errors_of(data: dict[str, Any] | str, *backends: str) -> list[str]:
    with pytest.raises(InputError) as info:
        compile_yaml(data, *backends)
    return [str(p) for p in info.value.problems]


# --- placeholders, argv, env ---------------------------------------------------------------------


def test_placeholders_become_nomad_runtime_values() -> None:
    compiled = compile_yaml(echo_deployment(backend_version="v1", nomad={"gpus": 2}), echo())
    config = main_task(compiled)["Config"]
    assert config["entrypoint"] == ["/bin/echo-server", "--verbose"]
    assert config["args"] == [
        "serve", "/models/huggingface/org/repo", "--port", "${NOMAD_PORT_http}", "--host", "${NOMAD_IP_http}",
        "--name", "my-model.v1", "--gpus", "2", "--ids=0,1", "--cache", "/from-version",
    ]  # fmt: skip


def test_deployment_env_wins_and_fills_placeholders() -> None:
    compiled = compile_yaml(echo_deployment(backend_version="v1", env={"CACHE": "/mine", "EXTRA": "1"}), echo())
    task = main_task(compiled)
    assert task["Config"]["args"][-1] == "/mine"
    assert task["Env"]["CACHE"] == "/mine" and task["Env"]["LEVEL"] == "info" and task["Env"]["EXTRA"] == "1"


def test_values_with_spaces_stay_one_argument() -> None:
    compiled = compile_yaml(
        {"name": "m", "local_path": "dir with space/model.gguf", "backend": "echo-custom", "backend_version": "cpu"},
        echo(),
    )
    assert "/models/dir with space/model.gguf" in main_task(compiled)["Config"]["args"]


def test_unknown_placeholder_points_at_the_backend_file() -> None:
    backend = echo().replace("--cache {{CACHE}}", "--cache {{CAHCE}}")
    (message,) = errors_of(echo_deployment(backend_version="v1"), backend)
    assert message.startswith("backend0.yaml:")
    assert "default_run_command: unknown placeholder {{CAHCE}} (did you mean {{CACHE}}?)" in message


def test_unknown_placeholder_lists_the_known_ones() -> None:
    (message,) = errors_of(echo_deployment(backend_version="v1", run_command="serve {{weights}}"), echo())
    assert message.startswith("deploy.yaml:")
    assert "unknown placeholder {{weights}}" in message
    assert "{{model_path}}, {{port}}, {{worker_ip}}, {{model_name}}, {{gpu_count}}, {{gpu_ids}}" in message


def test_model_path_without_a_model_is_an_error() -> None:
    (message,) = errors_of({"name": "m", "backend": "echo-custom", "backend_version": "v1"}, echo())
    assert "uses {{model_path}} but the deployment names no model" in message


@pytest.mark.parametrize(
    ("fmt", "params", "expected"),
    [
        ("null", ["--max-model-len 8192", "--dtype=half", "-tp 2", "--offset -1"],
         ["--max-model-len", "8192", "--dtype=half", "-tp", "2", "--offset", "-1"]),
        ("equal", ["--max-model-len 8192", "--flag", "--lora a b", "-t 2"],
         ["--max-model-len=8192", "--flag", "--lora", "a", "b", "-t", "2"]),
        ("space", ["--max-model-len=8192", "--override {\"a\": 1}"],
         ["--max-model-len", "8192", "--override", "{\"a\": 1}"]),
        ("null", ["--name 'two words'", "positional value"], ["--name", "two words", "positional value"]),
    ],
)  # fmt: skip
def test_backend_parameters_follow_parameter_format(fmt: str, params: list[str], expected: list[str]) -> None:
    compiled = compile_yaml(echo_deployment(backend_version="v1", backend_parameters=params), echo(fmt))
    assert main_task(compiled)["Config"]["args"][-len(expected) :] == expected


def test_unbalanced_quotes_in_parameters() -> None:
    (message,) = errors_of(echo_deployment(backend_version="v1", backend_parameters=["--name 'oops"]), echo())
    assert "backend_parameters[0]: cannot split the parameter" in message


# --- backends, versions -----------------------------------------------------------------------------


def test_unknown_backend_and_version_suggest_names() -> None:
    (message,) = errors_of({**VLLM_QWEN, "backend": "vlm"})
    assert "deploy.yaml:" in message and "backend: unknown backend 'vlm'" in message and "'vLLM'" in message
    (message,) = errors_of({**VLLM_QWEN, "backend_version": "0.19"})
    assert "backend_version: backend 'vLLM' has no version '0.19'" in message
    assert "did you mean '0.19.0'?" in message


def test_default_backend_is_vllm_or_custom_for_gguf() -> None:
    compiled = compile_yaml({k: v for k, v in VLLM_QWEN.items() if k != "backend"})
    assert compiled.resolved.backend_name == "vLLM"
    errors = errors_of({"name": "g", "huggingface_repo_id": "o/r", "huggingface_filename": "m.gguf"})
    assert "the Custom backend needs image_name" in errors[0]


def test_custom_backend_takes_image_and_command_from_the_deployment() -> None:
    compiled = compile_yaml(
        {"name": "tgi", "huggingface_repo_id": "o/r", "backend": "Custom", "image_name": "tgi:3",
         "run_command": "--model-id {{model_path}} --port {{port}}", "nomad": {"gpus": 1}}
    )  # fmt: skip
    task = main_task(compiled)
    assert task["Config"]["image"] == "tgi:3" and "entrypoint" not in task["Config"]
    assert task["Config"]["args"] == ["--model-id", "/models/huggingface/o/r", "--port", "${NOMAD_PORT_http}"]
    assert task["Resources"]["Devices"][0]["Name"] == "nvidia/gpu"


def test_missing_image_points_at_the_version() -> None:
    backend = "backend_name: noimg-custom\nversion_configs:\n  v1:\n    custom_framework: cpu\n"
    (message,) = errors_of({"name": "m", "backend": "noimg-custom"}, backend)
    assert message.startswith("backend0.yaml:3:") and "version 'v1' of noimg-custom has no image_name" in message


def test_unsupported_gpustack_field_gets_a_hint() -> None:
    (message,) = errors_of({**VLLM_QWEN, "gpu_selector": {"gpu_ids": ["w:cuda:0"]}})
    assert "unknown key 'gpu_selector'" in message and "nomad.gpus" in message


def test_invalid_names() -> None:
    assert "is not a valid model name" in errors_of({**VLLM_QWEN, "name": "-bad name-"})[0]
    assert "job_id" in errors_of({**VLLM_QWEN, "nomad": {"job_id": "Bad_ID"}})[0]
    assert "owner/name" in errors_of({**VLLM_QWEN, "huggingface_repo_id": "no-slash"})[0]


def test_wrong_types_and_units() -> None:
    assert "expected a whole number" in errors_of({**VLLM_QWEN, "replicas": "two"})[0]
    assert "unknown unit 'GX'" in errors_of({**VLLM_QWEN, "nomad": {"gpu_memory": "24 GX"}})[0]
    assert "is not a size" in errors_of({**VLLM_QWEN, "nomad": {"gpu_memory": "lots"}})[0]
    assert "is not a duration" in errors_of({**VLLM_QWEN, "nomad": {"startup_timeout": "soon"}})[0]


# --- frameworks and devices -------------------------------------------------------------------------


def test_cuda_requests_nvidia_gpus_with_unit_constraints() -> None:
    compiled = compile_yaml(
        {**VLLM_QWEN, "nomad": {"gpus": 2, "gpu_memory": "40960 MiB", "gpu_model": "NVIDIA A100-SXM4-80GB"}}
    )
    (device,) = main_task(compiled)["Resources"]["Devices"]
    assert device["Name"] == "nvidia/gpu" and device["Count"] == 2
    assert [(c.get("LTarget"), c.get("Operand"), c.get("RTarget")) for c in device["Constraints"]] == [
        ("${device.attr.memory}", ">=", "40 GiB"),
        ("${device.model}", "=", "NVIDIA A100-SXM4-80GB"),
    ]
    assert ("${attr.driver.docker.runtimes}", "set_contains", "nvidia") in [
        (c.get("LTarget"), c.get("Operand"), c.get("RTarget")) for c in compiled.job["Constraints"]
    ]
    assert main_task(compiled)["Env"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert "--tensor-parallel-size" in main_task(compiled)["Config"]["args"]


def test_rocm_gets_device_files_and_node_constraints() -> None:
    compiled = compile_yaml(echo_deployment(backend_version="v2", replicas=2, nomad={"gpus": 2}), echo())
    task = main_task(compiled)
    assert task["Config"]["entrypoint"] == ["/bin/v2"]
    assert task["Config"]["devices"] == [{"host_path": "/dev/kfd"}, {"host_path": "/dev/dri"}]
    assert task["Config"]["group_add"] == ["video", "render"]
    assert task["Env"]["HIP_VISIBLE_DEVICES"] == "0,1"
    assert "Devices" not in task["Resources"]
    constraints = [(c.get("LTarget"), c.get("Operand"), c.get("RTarget")) for c in compiled.job["Constraints"]]
    assert ("${meta.gpu_vendor}", "=", "amd") in constraints
    assert (None, "distinct_hosts", "true") in constraints


def test_cann_gets_davinci_devices_and_driver_mounts() -> None:
    compiled = compile_yaml({"name": "m", "huggingface_repo_id": "o/r", "backend": "MindIE", "nomad": {"gpus": 2}})
    task = main_task(compiled)
    hosts = [d["host_path"] for d in task["Config"]["devices"]]
    assert hosts == ["/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc", "/dev/davinci0", "/dev/davinci1"]
    assert {"type": "bind", "source": "/usr/local/dcmi", "target": "/usr/local/dcmi", "readonly": True} in task[
        "Config"
    ]["mount"]
    assert task["Templates"][0]["DestPath"] == "local/mindie-launch.py"
    labels = [p["Label"] for p in compiled.job["TaskGroups"][0]["Networks"][0]["DynamicPorts"]]
    assert labels == ["http", "management", "metrics"]


def test_cpu_versions_request_no_device_and_refuse_gpus() -> None:
    compiled = compile_yaml(echo_deployment(backend_version="cpu"), echo())
    assert "Devices" not in main_task(compiled)["Resources"]
    assert "--gpus" in main_task(compiled)["Config"]["args"]
    assert main_task(compiled)["Config"]["args"][main_task(compiled)["Config"]["args"].index("--gpus") + 1] == "0"
    (message,) = errors_of(echo_deployment(backend_version="cpu", nomad={"gpus": 1}), echo())
    assert "runs on the CPU but 1 GPU(s) were requested" in message


def test_arm64_images_constrain_the_cpu_architecture() -> None:
    compiled = compile_yaml(
        {"name": "m", "huggingface_repo_id": "o/r", "backend": "MindIE", "image_name": "x/mis:7.3.0-800I-A2-aarch64"}
    )
    assert ("${attr.cpu.arch}", "=", "arm64") in [
        (c.get("LTarget"), c.get("Operand"), c.get("RTarget")) for c in compiled.job["Constraints"]
    ]


# --- service, health, deadlines ---------------------------------------------------------------------


def test_service_health_check_and_deadlines() -> None:
    compiled = compile_yaml({**VLLM_QWEN, "nomad": {"gpus": 1, "startup_timeout": "45m", "check_interval": "15s"}})
    group = compiled.job["TaskGroups"][0]
    (service,) = main_task(compiled)["Services"]
    assert (
        service["Name"] == "qwen2-5-7b-instruct" and service["PortLabel"] == "http" and service["Provider"] == "consul"
    )
    assert "model=Qwen2.5-7B-Instruct" in service["Tags"] and service["Meta"]["gpustack_model"] == "Qwen2.5-7B-Instruct"
    (check,) = service["Checks"]
    assert (check["Type"], check["Path"], check["Interval"]) == ("http", "/v1/models", 15 * SECOND)
    assert check["CheckRestart"]["Grace"] == 45 * MINUTE
    update = group["Update"]
    assert update["AutoRevert"] is True and update["HealthCheck"] == "checks"
    assert update["MinHealthyTime"] < update["HealthyDeadline"] < update["ProgressDeadline"]
    assert update["HealthyDeadline"] == 45 * MINUTE
    assert main_task(compiled)["KillTimeout"] <= update["ProgressDeadline"]
    config = main_task(compiled)["Config"]
    assert config["image_pull_timeout"] == "30m" and config["network_mode"] == "host"
    assert config["shm_size"] == 10 * 1024**3 and "ipc_mode" not in config


def test_replicas_leave_consul_before_they_stop_so_requests_in_flight_finish() -> None:
    # A replica being replaced is out of Consul shutdown_delay before its engine gets the stop signal
    # (Nomad's task_runner.go handleKill); without it the gateway's streams to that replica are cut.
    assert main_task(compile_yaml({**VLLM_QWEN, "nomad": {"gpus": 1}}))["ShutdownDelay"] == 30 * SECOND
    written = compile_yaml({**VLLM_QWEN, "nomad": {"gpus": 1, "shutdown_delay": "2m"}})
    assert main_task(written)["ShutdownDelay"] == 2 * MINUTE


def test_health_path_from_backend_env_override_or_off() -> None:
    compiled = compile_yaml(echo_deployment(backend_version="v1"), echo())
    assert main_task(compiled)["Services"][0]["Checks"][0]["Path"] == "/health"
    compiled = compile_yaml(
        echo_deployment(backend_version="v1", env={"GPUSTACK_MODEL_HEALTH_CHECK_PATH": "/ready"}), echo()
    )
    assert main_task(compiled)["Services"][0]["Checks"][0]["Path"] == "/ready"
    compiled = compile_yaml(echo_deployment(backend_version="v1", nomad={"health_check": False}), echo())
    assert "Checks" not in main_task(compiled)["Services"][0]
    assert compiled.job["TaskGroups"][0]["Update"]["HealthCheck"] == "task_states"


def test_nomad_service_provider_and_names() -> None:
    compiled = compile_yaml({**VLLM_QWEN, "nomad": {"gpus": 1, "service_provider": "nomad", "service_name": "qwen"}})
    (service,) = main_task(compiled)["Services"]
    assert service["Provider"] == "nomad" and service["Name"] == "qwen" and "Meta" not in service


def test_restart_on_error_false_disables_restarts_and_rescheduling() -> None:
    group = compile_yaml({**VLLM_QWEN, "restart_on_error": False}).job["TaskGroups"][0]
    assert group["RestartPolicy"]["Attempts"] == 0 and group["ReschedulePolicy"]["Attempts"] == 0
    assert group["ReschedulePolicy"]["Unlimited"] is False


def test_spread_and_worker_selector() -> None:
    job = compile_yaml({**VLLM_QWEN, "replicas": 3, "worker_selector": {"zone": "a"}}).job
    assert job["Spreads"][0]["Attribute"] == "${node.unique.id}"
    assert ("${meta.zone}", "=", "a") in [
        (c.get("LTarget"), c.get("Operand"), c.get("RTarget")) for c in job["Constraints"]
    ]
    assert "Spreads" not in compile_yaml({**VLLM_QWEN, "replicas": 3, "placement_strategy": "binpack"}).job


# --- weights ----------------------------------------------------------------------------------------


def test_huggingface_weights_are_downloaded_once_by_a_prestart_task() -> None:
    compiled = compile_yaml({**VLLM_QWEN, "nomad": {"gpus": 1, "token_variable": "nomad/jobs/qwen"}})
    group = compiled.job["TaskGroups"][0]
    download, main = group["Tasks"]
    assert download["Lifecycle"]["Hook"] == "prestart" and download["Lifecycle"]["Sidecar"] is False
    assert download["Env"]["NOMADGS_MODEL_DIR"] == "/models/huggingface/Qwen/Qwen2.5-7B-Instruct"
    script, token = download["Templates"]
    assert ".nomadgs-complete" in script["EmbeddedTmpl"] and "${" not in script["EmbeddedTmpl"]
    assert token["Envvars"] is True and token["DestPath"].startswith("secrets/")
    assert 'nomadVar "nomad/jobs/qwen"' in token["EmbeddedTmpl"] and "HF_TOKEN" in token["EmbeddedTmpl"]
    assert group["Volumes"]["models"]["Type"] == "host" and group["Volumes"]["models"]["Source"] == "models"
    assert main["VolumeMounts"][0]["Destination"] == "/models"


def test_no_token_template_without_a_variable_and_no_secret_in_the_job() -> None:
    compiled = compile_yaml({**VLLM_QWEN, "env": {"HF_ENDPOINT": "https://mirror.example"}})
    download = compiled.job["TaskGroups"][0]["Tasks"][0]
    assert len(download["Templates"]) == 1
    assert download["Env"]["HF_ENDPOINT"] == "https://mirror.example"


def test_the_download_task_gets_only_what_a_download_needs_of_the_env() -> None:
    env = {
        "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "https://mirror.example", "HF_HUB_DOWNLOAD_TIMEOUT": "60",
        "HTTPS_PROXY": "http://proxy:3128", "no_proxy": "localhost", "PIP_INDEX_URL": "https://pypi.example/simple",
        "HF_TOKEN": "hf_0123456789abcdef", "HF_HOME": "/root/.cache/hf", "VLLM_USE_V1": "1", "MODELSCOPE_DOMAIN": "ms",
    }  # fmt: skip
    compiled = compile_yaml({**VLLM_QWEN, "env": env})
    download, main = compiled.job["TaskGroups"][0]["Tasks"]
    passed = {k: v for k, v in download["Env"].items() if not k.startswith("NOMADGS_")}
    assert passed == {
        "HF_ENDPOINT": "https://mirror.example", "HF_HUB_DOWNLOAD_TIMEOUT": "60", "HTTPS_PROXY": "http://proxy:3128",
        "no_proxy": "localhost", "PIP_INDEX_URL": "https://pypi.example/simple",
    }  # fmt: skip
    assert main["Env"]["HF_HUB_OFFLINE"] == "1" and main["Env"]["HF_TOKEN"] == env["HF_TOKEN"]  # the engine's env
    scope = compile_yaml({**VLLM_QWEN, "huggingface_repo_id": None, "model_scope_model_id": "q/w", "env": env})
    passed = {k for k in scope.job["TaskGroups"][0]["Tasks"][0]["Env"] if not k.startswith("NOMADGS_")}
    assert passed == {"MODELSCOPE_DOMAIN", "HTTPS_PROXY", "no_proxy", "PIP_INDEX_URL"}


def test_secrets_in_env_are_warned_about_without_their_value() -> None:
    env = {"HF_TOKEN": "hf_0123456789abcdef", "OPENAI_API_KEY": "sk-abcdef123456", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}
    warnings = compile_yaml({**VLLM_QWEN, "env": env}).resolved.warnings
    assert warnings == (
        "env HF_TOKEN is written into the job in clear text, and the download task does not get it: put the token "
        "in a Nomad Variable and set nomad.token_variable",
        "env OPENAI_API_KEY looks like a secret and is written into the job in clear text: keep it in a Nomad "
        "Variable and read it with a template (the backend's nomad.templates, env: true)",
    )
    assert not any(value in warning for value in env.values() for warning in warnings if len(value) > 1)
    custom = {"name": "m", "backend": "Custom", "image_name": "x:1", "run_command": "serve --port {{port}}"}
    assert compile_yaml({**custom, "env": {"HF_TOKEN": "hf_0123456789abcdef"}}).resolved.warnings == (
        "env HF_TOKEN is written into the job in clear text: put the token in a Nomad Variable and set "
        "nomad.token_variable",
    )  # no download task, so nothing is said about one


def test_local_path_needs_no_download_and_must_be_in_the_volume() -> None:
    compiled = compile_yaml({**VLLM_QWEN, "huggingface_repo_id": None, "local_path": "qwen/7b"})
    assert [t["Name"] for t in compiled.job["TaskGroups"][0]["Tasks"]] == ["vllm"]
    assert main_task(compiled)["Config"]["args"][0] == "/models/qwen/7b"
    (message,) = errors_of({**VLLM_QWEN, "huggingface_repo_id": None, "local_path": "/srv/models/qwen"})
    assert "outside the models volume" in message and "models_mount" in message
    compiled = compile_yaml(
        {
            **VLLM_QWEN,
            "huggingface_repo_id": None,
            "local_path": "/srv/models/qwen",
            "nomad": {"models_mount": "/srv/models"},
        }
    )
    assert main_task(compiled)["Config"]["args"][0] == "/srv/models/qwen"


def test_modelscope_file_and_glob_refusal() -> None:
    compiled = compile_yaml(
        {
            "name": "g",
            "model_scope_model_id": "qwen/Qwen2-GGUF",
            "model_scope_file_path": "q4.gguf",
            "backend": "llama.cpp",
        }
    )
    assert main_task(compiled)["Config"]["args"][1] == "/models/model_scope/qwen/Qwen2-GGUF/q4.gguf"
    (message,) = errors_of(
        {"name": "g", "huggingface_repo_id": "o/r", "huggingface_filename": "*Q4*.gguf", "backend": "llama.cpp"}
    )
    assert "huggingface_filename" in message and "exactly" in message


def test_raw_exec_backend_runs_a_command_without_volumes() -> None:
    backend = """
backend_name: local-llama-custom
default_run_command: --model {{model_path}} --port {{port}} --alias {{model_name}}
version_configs:
  v1:
    custom_framework: cpu
    nomad:
      driver: raw_exec
      command: /usr/bin/python3
nomad:
  driver: raw_exec
"""
    compiled = compile_yaml({"name": "smol", "local_path": "/opt/m.gguf", "backend": "local-llama-custom"}, backend)
    task = main_task(compiled)
    assert task["Driver"] == "raw_exec" and "VolumeMounts" not in task
    assert task["Config"] == {
        "command": "/usr/bin/python3",
        "args": ["--model", "/opt/m.gguf", "--port", "${NOMAD_PORT_http}", "--alias", "smol"],
    }
    assert "Volumes" not in compiled.job["TaskGroups"][0]
    (message,) = errors_of({"name": "smol", "huggingface_repo_id": "o/r", "backend": "local-llama-custom"}, backend)
    assert "needs the docker driver" in message


# --- job level --------------------------------------------------------------------------------------


def test_job_metadata_and_ui() -> None:
    nomad = {"gpus": 1, "datacenters": ["dc1"], "namespace": "ml", "node_pool": "gpu"}
    job = compile_yaml({**VLLM_QWEN, "meta": {"team": "search", "cost": 3}, "categories": ["llm"], "nomad": nomad}).job
    assert (job["ID"], job["Name"], job["Namespace"], job["NodePool"]) == (
        "qwen2-5-7b-instruct",
        "Qwen2.5-7B-Instruct",
        "ml",
        "gpu",
    )
    assert job["Meta"]["gpustack_backend"] == "vLLM" and job["Meta"]["gpustack_categories"] == "llm"
    assert job["Meta"]["team"] == "search" and job["Meta"]["cost"] == "3"
    assert job["UI"]["Links"][0]["URL"] == "https://huggingface.co/Qwen/Qwen2.5-7B-Instruct"
    assert "served by vLLM 0.19.0 on 1× cuda" in job["UI"]["Description"]
    assert "reserved" not in str(errors_of({**VLLM_QWEN, "meta": {"gpustack_model": "x"}}))
    assert "is set by nomadgs" in errors_of({**VLLM_QWEN, "meta": {"gpustack_model": "x"}})[0]


def test_the_strict_job_model_refuses_unknown_and_mistyped_fields() -> None:
    job: Any = compile_yaml(VLLM_QWEN).job
    validate_job(job)
    job["TaskGroups"][0]["Tasks"][1]["Resources"]["MemoryMb"] = 1
    with pytest.raises(ValueError, match="MemoryMb"):
        validate_job(job)
    job = compile_yaml(VLLM_QWEN).job
    job["TaskGroups"][0]["Update"]["HealthyDeadline"] = "30m"
    with pytest.raises(ValueError, match="HealthyDeadline"):
        validate_job(job)
    job = compile_yaml(VLLM_QWEN).job
    job["TaskGroups"][0]["Update"]["HealthyDeadline"] = -1
    with pytest.raises(ValueError, match="HealthyDeadline"):
        validate_job(job)
