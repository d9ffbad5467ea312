"""resolve(): GPUStack's rules for picking version, framework, GPUs, weights, argv and env, read from Resolved."""

from __future__ import annotations

from typing import Any

import pytest

from nomad_gpustack.compile.resolve import (
    Download,
    Lifecycle,
    Placement,
    Resolved,
    Resources,
    ServiceSettings,
    Weights,
    resolve,
)
from nomad_gpustack.durations import MINUTE, SECOND
from nomad_gpustack.errors import InputError, Problem
from nomad_gpustack.sizes import GIB

from ..support.helpers import catalog_with, deployment

# A backend built for these tests: every version key sorts differently as text and as a version.
VERSIONS = """
backend_name: ver-custom
default_run_command: serve
version_configs:
  "0.9.1": {image_name: "v:0.9.1", custom_framework: cpu}
  "0.10.0": {image_name: "v:0.10.0", custom_framework: cpu}
  "0.9.10": {image_name: "v:0.9.10", custom_framework: cpu}
  "0.2.0": {image_name: "v:0.2.0", custom_framework: cpu}
"""

ENGINE = """
backend_name: engine-custom
health_check_path: /health
parameter_format: {fmt}
default_entrypoint: /bin/engine --verbose
default_run_command: >-
  serve {{{{model_path}}}} --port {{{{port}}}} --host {{{{worker_ip}}}} --name "{{{{model_name}}}}"
  --gpus {{{{gpu_count}}}} --ids={{{{gpu_ids}}}} --cache {{{{CACHE}}}}
default_env:
  CACHE: /from-backend
  LEVEL: info
  ONLY_BACKEND: b
version_configs:
  cuda:
    image_name: engine:cuda
    custom_framework: cuda
    env:
      CACHE: /from-version
      LEVEL: debug
  multi:
    image_name: engine:multi
    custom_framework: rocm
    built_in_frameworks: [cuda, cann]
  cpu:
    image_name: engine:cpu
    custom_framework: cpu
"""

RAW_EXEC = """
backend_name: local-custom
default_run_command: --model {{model_path}} --port {{port}}
version_configs:
  v1:
    custom_framework: cpu
    entrypoint: /usr/bin/python3 -m server
nomad:
  driver: raw_exec
"""


def engine(fmt: str = "null") -> str:
    return ENGINE.format(fmt=fmt)


def engine_deployment(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "my-model", "huggingface_repo_id": "org/repo", "backend": "engine-custom"}
    data.update(extra)
    return data


def resolved(data: dict[str, Any], *backends: str) -> Resolved:
    return resolve(deployment(data), catalog_with(*backends))


def problem(data: dict[str, Any], *backends: str) -> Problem:
    with pytest.raises(InputError) as info:
        resolved(data, *backends)
    (found,) = info.value.problems
    return found


# --- version -----------------------------------------------------------------------------------------


def test_the_requested_version_wins() -> None:
    r = resolved({"name": "m", "backend": "ver-custom", "backend_version": "0.2.0"}, VERSIONS)
    assert (r.version, r.image) == ("0.2.0", "v:0.2.0")


def test_default_version_comes_before_the_newest() -> None:
    backend = VERSIONS + 'default_version: "0.9.1"\n'
    assert resolved({"name": "m", "backend": "ver-custom"}, backend).version == "0.9.1"
    assert resolved({"name": "m", "backend": "ver-custom", "backend_version": "0.2.0"}, backend).version == "0.2.0"


def test_without_a_default_the_newest_version_in_natural_order() -> None:
    # As text, "0.9.10" > "0.9.1" > "0.2.0" > "0.10.0"; as versions 0.10.0 is the newest.
    assert resolved({"name": "m", "backend": "ver-custom"}, VERSIONS).version == "0.10.0"
    without = VERSIONS.replace('  "0.10.0": {image_name: "v:0.10.0", custom_framework: cpu}\n', "")
    assert resolved({"name": "m", "backend": "ver-custom"}, without).version == "0.9.10"


def test_a_default_version_that_does_not_exist_falls_back_to_the_newest() -> None:
    backend = VERSIONS + 'default_version: "1.0.0"\n'
    assert resolved({"name": "m", "backend": "ver-custom"}, backend).version == "0.10.0"


def test_an_unknown_version_suggests_the_closest() -> None:
    found = problem({"name": "m", "backend": "ver-custom", "backend_version": "0.10.1"}, VERSIONS)
    assert (found.file, found.field) == ("deploy.yaml", "backend_version")
    assert found.message == "backend 'ver-custom' has no version '0.10.1'"
    assert found.hint == "did you mean '0.10.0'?"


def test_a_backend_without_versions_is_an_error_in_the_backend_file() -> None:
    found = problem({"name": "m", "backend": "empty-custom"}, "backend_name: empty-custom\n")
    assert found.file == "backend0.yaml" and "defines no versions" in found.message


# --- framework and GPUs ------------------------------------------------------------------------------


def test_the_first_framework_of_the_version_is_the_default() -> None:
    r = resolved(engine_deployment(backend_version="multi"), engine())
    assert r.framework.name == "rocm"  # custom_framework comes before built_in_frameworks


def test_nomad_framework_picks_one_the_version_is_built_for() -> None:
    r = resolved(engine_deployment(backend_version="multi", nomad={"framework": "CANN"}), engine())
    assert r.framework.name == "cann"
    found = problem(engine_deployment(backend_version="multi", nomad={"framework": "musa"}), engine())
    assert found.field == "nomad.framework"
    assert found.message == "version 'multi' of engine-custom runs on rocm, cuda, cann, not musa"


def test_an_unknown_framework_suggests_a_known_one() -> None:
    found = problem(engine_deployment(backend_version="cuda", nomad={"framework": "cudaa"}), engine())
    assert (found.field, found.message) == ("nomad.framework", "unknown framework 'cudaa'")
    assert found.hint == "did you mean 'cuda'?"


def test_a_version_without_a_framework_is_an_error_in_the_backend_file() -> None:
    backend = "backend_name: nofw-custom\nversion_configs:\n  v1:\n    image_name: x:1\n"
    found = problem({"name": "m", "backend": "nofw-custom"}, backend)
    assert found.file == "backend0.yaml" and found.message == "version 'v1' has no custom_framework"


def test_custom_backend_framework_follows_the_gpus() -> None:
    custom = {"name": "m", "backend": "Custom", "image_name": "x:1", "run_command": "serve"}
    assert resolved(custom).framework.name == "cpu"
    assert resolved({**custom, "nomad": {"gpus": 2}}).framework.name == "cuda"
    assert resolved({**custom, "nomad": {"gpus": 1, "framework": "rocm"}}).framework.name == "rocm"


@pytest.mark.parametrize(("version", "requested", "expected"), [("cuda", None, 1), ("cuda", 4, 4), ("cpu", None, 0)])
def test_gpus_per_framework(version: str, requested: int | None, expected: int) -> None:
    nomad = {"gpus": requested} if requested is not None else {}
    r = resolved(engine_deployment(backend_version=version, nomad=nomad), engine())
    assert r.resources.gpus == expected


def test_a_cpu_version_refuses_gpus_and_a_gpu_version_refuses_zero() -> None:
    found = problem(engine_deployment(backend_version="cpu", nomad={"gpus": 2}), engine())
    assert (found.field, found.message) == ("nomad.gpus", "this version runs on the CPU but 2 GPU(s) were requested")
    found = problem(engine_deployment(backend_version="cuda", nomad={"gpus": 0}), engine())
    assert (found.field, found.message) == ("nomad.gpus", "framework cuda needs at least one accelerator")


# --- weights -----------------------------------------------------------------------------------------


def test_huggingface_weights_are_downloaded_into_the_volume() -> None:
    r = resolved(
        engine_deployment(
            backend_version="cpu",
            huggingface_filename="model-q4.gguf",
            nomad={"token_variable": "nomad/jobs/m", "models_volume": "llm-cache", "downloader_image": "py:3"},
        ),
        engine(),
    )
    assert r.weights == Weights(
        source="huggingface",
        repo="org/repo",
        file="model-q4.gguf",
        path="/models/huggingface/org/repo/model-q4.gguf",
        ref="org/repo/model-q4.gguf",
        mount="/models",
        volume="llm-cache",
        download=Download(directory="/models/huggingface/org/repo", image="py:3", token_variable="nomad/jobs/m"),
    )


def test_model_scope_weights_without_a_file_use_the_repository_directory() -> None:
    r = resolved(
        {
            "name": "m",
            "model_scope_model_id": "qwen/Qwen2",
            "backend": "engine-custom",
            "backend_version": "cpu",
            "nomad": {"models_mount": "/data"},
        },
        engine(),
    )
    w = r.weights
    assert (w.source, w.repo, w.file, w.ref) == ("model_scope", "qwen/Qwen2", None, "qwen/Qwen2")
    assert w.path == "/data/model_scope/qwen/Qwen2"
    assert w.download == Download("/data/model_scope/qwen/Qwen2", "python:3.12-slim", None)
    assert (w.mount, w.volume) == ("/data", "models")


def test_a_local_path_is_relative_to_the_volume_and_needs_no_download() -> None:
    r = resolved({"name": "m", "local_path": "qwen/7b", "backend": "engine-custom", "backend_version": "cpu"}, engine())
    assert r.weights == Weights("local_path", path="/models/qwen/7b", ref="qwen/7b", mount="/models", volume="models")
    assert r.args[1] == "/models/qwen/7b"


def test_an_absolute_local_path_must_be_inside_the_models_mount() -> None:
    data = {"name": "m", "local_path": "/srv/models/qwen", "backend": "engine-custom", "backend_version": "cpu"}
    found = problem(data, engine())
    assert found.field == "local_path" and "outside the models volume, which is mounted at /models" in found.message
    assert found.hint is not None and "(e.g. /srv/models)" in found.hint
    r = resolved({**data, "nomad": {"models_mount": "/srv/models"}}, engine())
    assert (r.weights.path, r.weights.mount) == ("/srv/models/qwen", "/srv/models")
    escape = problem({**data, "local_path": "../../etc/passwd"}, engine())
    assert escape.field == "local_path" and escape.hint is not None
    assert "e.g." not in escape.hint and "../" not in escape.hint, "no relative path is a models_mount to suggest"
    assert "leave out the '..'" in escape.hint


def test_raw_exec_reads_local_paths_on_the_host_and_cannot_download() -> None:
    r = resolved({"name": "m", "local_path": "/opt/m.gguf", "backend": "local-custom"}, RAW_EXEC)
    assert r.weights == Weights("local_path", path="/opt/m.gguf", ref="/opt/m.gguf")
    assert r.weights.mount is None and r.weights.volume is None
    found = problem({"name": "m", "local_path": "m.gguf", "backend": "local-custom"}, RAW_EXEC)
    assert found.message == "the raw_exec driver needs an absolute local_path on the node"
    found = problem({"name": "m", "huggingface_repo_id": "o/r", "backend": "local-custom"}, RAW_EXEC)
    assert found.field == "source" and "needs the docker driver; this backend uses raw_exec" in found.message


def test_exec_drivers_run_the_entrypoint_as_the_command() -> None:
    r = resolved({"name": "m", "local_path": "/opt/m.gguf", "backend": "local-custom"}, RAW_EXEC)
    assert (r.driver, r.command, r.image, r.entrypoint) == ("raw_exec", "/usr/bin/python3", None, ())
    assert r.args == ("-m", "server", "--model", "/opt/m.gguf", "--port", "${NOMAD_PORT_http}")


BARE_EXEC = "backend_name: bin-custom\nversion_configs:\n  v1: {custom_framework: cpu}\nnomad: {driver: raw_exec}\n"


def test_exec_drivers_take_the_program_from_the_run_commands_first_word() -> None:
    run = "/opt/llama/llama-server -m {{model_path}} --port {{port}}"
    data = {"name": "m", "local_path": "/opt/m.gguf", "backend": "bin-custom", "run_command": run,
            "backend_parameters": ["--ctx-size 4096"]}  # fmt: skip
    r = resolved(data, BARE_EXEC)
    assert (r.driver, r.command, r.entrypoint) == ("raw_exec", "/opt/llama/llama-server", ())
    assert r.args == ("-m", "/opt/m.gguf", "--port", "${NOMAD_PORT_http}", "--ctx-size", "4096")
    found = problem({**data, "run_command": "--port {{port}}"}, BARE_EXEC)
    assert (found.file, found.field, found.message) == (
        "deploy.yaml",
        "run_command",
        "the raw_exec driver needs the program to run",
    )
    assert found.hint is not None and "set the backend's entrypoint or nomad.command" in found.hint
    found = problem({**data, "run_command": None}, BARE_EXEC)
    assert (found.file, found.field) == ("backend0.yaml", "nomad")


@pytest.mark.parametrize(
    ("extra", "field", "text"),
    [
        ({"huggingface_repo_id": "no-slash"}, "huggingface_repo_id", "is not a repository id"),
        ({"huggingface_filename": "*Q4*.gguf"}, "huggingface_filename", "must name one file of the repository"),
        ({"huggingface_filename": "../m.gguf"}, "huggingface_filename", "must name one file of the repository"),
        ({"source": "model_scope"}, "source", "source 'model_scope' needs model_scope_model_id"),
    ],
)
def test_weights_refused(extra: dict[str, Any], field: str, text: str) -> None:
    found = problem(engine_deployment(backend_version="cpu", **extra), engine())
    assert found.field == field and text in found.message


def test_no_model_means_no_weights_and_model_path_is_an_error() -> None:
    custom = {"name": "m", "backend": "Custom", "image_name": "x:1", "run_command": "serve --port {{port}}"}
    assert resolved(custom).weights == Weights(source=None)
    found = problem({**custom, "run_command": "serve {{model_path}}"})
    assert found.field == "source" and "uses {{model_path}} but the deployment names no model" in found.message


# --- argv and placeholders ---------------------------------------------------------------------------


def test_the_command_is_split_before_placeholders_are_filled() -> None:
    r = resolved(engine_deployment(backend_version="cuda", nomad={"gpus": 2}), engine())
    assert r.entrypoint == ("/bin/engine", "--verbose")
    assert r.args == (
        "serve", "/models/huggingface/org/repo", "--port", "${NOMAD_PORT_http}", "--host", "${NOMAD_IP_http}",
        "--name", "my-model", "--gpus", "2", "--ids=0,1", "--cache", "/from-version",
    )  # fmt: skip
    spaced = {"name": "m", "local_path": "dir with space/m.gguf", "backend": "engine-custom", "backend_version": "cpu"}
    assert resolved(spaced, engine()).args[:2] == ("serve", "/models/dir with space/m.gguf"), (
        "a value stays one argument"
    )


def test_an_unknown_placeholder_names_the_closest_or_lists_them() -> None:
    found = problem(engine_deployment(backend_version="cuda", run_command="serve {{model_pth}}"), engine())
    assert (found.file, found.field) == ("deploy.yaml", "run_command")
    assert (found.message, found.hint) == ("unknown placeholder {{model_pth}}", "did you mean {{model_path}}?")
    found = problem(engine_deployment(backend_version="cuda", run_command="serve {{zzz}}"), engine())
    assert found.hint is not None and found.hint.startswith("known placeholders: {{model_path}}, {{port}}")
    assert "env variables: CACHE, LEVEL, ONLY_BACKEND" in found.hint


def test_placeholders_with_spaces_inside_the_braces_are_filled() -> None:
    run = "serve {{ model_path }} --port {{  port  }} --cache {{ CACHE }}"
    params = ["--name {{ model_name }}", "--ids={{ gpu_ids }}"]
    r = resolved(engine_deployment(backend_version="cuda", run_command=run, backend_parameters=params), engine())
    assert r.args == (
        "serve", "/models/huggingface/org/repo", "--port", "${NOMAD_PORT_http}", "--cache", "/from-version",
        "--name", "my-model", "--ids=0",
    )  # fmt: skip
    backend = engine().replace("--port {{port}}", "--port {{ port }}")
    assert "${NOMAD_PORT_http}" in resolved(engine_deployment(backend_version="cpu"), backend).args


@pytest.mark.parametrize(
    ("run_command", "message", "hint"),
    [
        ("serve {{ modle_path }}", "unknown placeholder {{modle_path}}", "did you mean {{model_path}}?"),
        ("serve {{ model path }}", "unknown placeholder {{model path}}", "did you mean {{model_path}}?"),
        ("serve {{model_path --port 1", "'{{' is not closed in '{{model_path --port 1'",
         "write placeholders as {{name}}, e.g. {{model_path}}"),
    ],
)  # fmt: skip
def test_a_placeholder_that_cannot_be_filled_is_reported_not_split(run_command: str, message: str, hint: str) -> None:
    found = problem(engine_deployment(backend_version="cuda", run_command=run_command), engine())
    assert (found.field, found.message, found.hint) == ("run_command", message, hint)
    found = problem(engine_deployment(backend_version="cuda", backend_parameters=["--x", run_command]), engine())
    assert (found.field, found.message, found.hint) == ("backend_parameters[1]", message, hint)


def test_template_files_fill_placeholders_with_or_without_spaces_and_leave_nomads_own() -> None:
    data = 'port={{port}} p={{ port }} m={{ model_name }} home={{ env "HOME" }}{{ end }}'
    backend = engine() + f"nomad:\n  templates: [{{destination: local/c, data: '{data}'}}]\n"
    (template,) = resolved(engine_deployment(backend_version="cpu"), backend).templates
    assert template.data == (
        'port={{ env "NOMAD_PORT_http" }} p={{ env "NOMAD_PORT_http" }} m=my-model home={{ env "HOME" }}{{ end }}'
    )


def test_a_placeholder_error_in_the_backend_points_at_the_backend_file() -> None:
    backend = engine().replace("--cache {{CACHE}}", "--cache {{CAHCE}}")
    found = problem(engine_deployment(backend_version="cuda"), backend)
    assert (found.file, found.field) == ("backend0.yaml", "default_run_command")
    assert found.hint == "did you mean {{CACHE}}?"


def test_unbalanced_quotes_in_the_command() -> None:
    found = problem(engine_deployment(backend_version="cuda", run_command="serve 'oops"), engine())
    assert found.field == "run_command" and found.message.startswith("cannot split the command")


# --- env -----------------------------------------------------------------------------------------------


def test_env_precedence_default_then_version_then_deployment() -> None:
    r = resolved(engine_deployment(backend_version="cuda", env={"LEVEL": "trace", "EXTRA": 1}), engine())
    assert r.env == {"CACHE": "/from-version", "LEVEL": "trace", "ONLY_BACKEND": "b", "EXTRA": "1"}
    r = resolved(engine_deployment(backend_version="multi"), engine())
    assert r.env == {"CACHE": "/from-backend", "LEVEL": "info", "ONLY_BACKEND": "b"}
    r = resolved(engine_deployment(backend_version="cuda", env={"CACHE": "/mine"}), engine())
    assert r.args[-1] == "/mine", "placeholders read the merged env"


# --- backend_parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "params", "expected"),
    [
        ("null", ["--max-model-len 8192", "--dtype=half", "-tp 2", "--offset -1"],
         ["--max-model-len", "8192", "--dtype=half", "-tp", "2", "--offset", "-1"]),
        ("space", ["--max-model-len=8192", '--override {"a": 1}', "--lora a b"],
         ["--max-model-len", "8192", "--override", '{"a": 1}', "--lora", "a", "b"]),
        ("equal", ["--max-model-len 8192", "--flag", "--lora a b", "-t 2"],
         ["--max-model-len=8192", "--flag", "--lora", "a", "b", "-t", "2"]),
        ("null", ["--name 'two words'", "positional value"], ["--name", "two words", "positional value"]),
        ("null", ["--served-model-name {{model_name}}", "--cache {data_dir}/c"],
         ["--served-model-name", "my-model", "--cache", "/models/c"]),
    ],
)  # fmt: skip
def test_backend_parameters_are_tokenised_and_formatted(fmt: str, params: list[str], expected: list[str]) -> None:
    r = resolved(engine_deployment(backend_version="cpu", backend_parameters=params), engine(fmt))
    assert list(r.args[-len(expected) :]) == expected
    assert r.args[: -len(expected)][-2:] == ("--cache", "/from-backend"), "parameters come after the run command"


def test_backend_parameter_errors_point_at_the_element() -> None:
    found = problem(engine_deployment(backend_version="cpu", backend_parameters=["--a 1", "--b 'x"]), engine())
    assert found.field == "backend_parameters[1]" and found.message.startswith("cannot split the parameter")
    found = problem(engine_deployment(backend_version="cpu", backend_parameters=["--a {{nope}}"]), engine())
    assert found.field == "backend_parameters[0]" and found.message == "unknown placeholder {{nope}}"


# --- platform ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "platform"),
    [
        ("x/mis:7.3.0-800I-A2-aarch64", "arm64"),
        ("x/vllm:v0.9-arm64", "arm64"),
        ("x/vllm:v0.9_x86_64", "amd64"),
        ("x/vllm:amd64", "amd64"),
        ("x/vllm:v0.9", None),
        ("registry:5000/arm64/vllm", None),  # a registry port is not a tag
        ("x/aarch64tools:1", None),
    ],
)
def test_platform_from_the_image_tag(image: str, platform: str | None) -> None:
    r = resolved({"name": "m", "backend": "Custom", "image_name": image, "run_command": "serve"})
    assert r.placement.platform == platform


def test_the_backend_platform_overrides_the_tag_and_exec_drivers_have_none() -> None:
    backend = engine() + "nomad:\n  platform: amd64\n"
    r = resolved(engine_deployment(backend_version="cpu", image_name="x:1-aarch64"), backend)
    assert r.placement.platform == "amd64"
    r = resolved({"name": "m", "local_path": "/opt/m-aarch64", "backend": "local-custom"}, RAW_EXEC)
    assert r.placement.platform is None


# --- settings the compiler reads --------------------------------------------------------------------------


def test_defaults_are_resolved_in_final_units() -> None:
    r = resolved(
        {"name": "Qwen2.5_7B", "huggingface_repo_id": "o/r", "backend": "engine-custom", "backend_version": "cuda"},
        engine(),
    )
    assert (r.model_name, r.job_id, r.service_name) == ("Qwen2.5_7B", "qwen2-5-7b", "qwen2-5-7b")
    assert r.resources == Resources(
        cpu=4000, memory_mib=16384, memory_max_mib=None, gpus=1, gpu_memory=None, gpu_model=None, shm_size=10 * GIB
    )
    assert r.placement == Placement(
        replicas=1, strategy="spread", datacenters=(), namespace=None, region=None, node_pool=None, priority=None,
        worker_selector={}, platform=None,
    )  # fmt: skip
    assert r.service == ServiceSettings(
        provider="consul", tags=(), health_check_path="/health", check_interval=10 * SECOND, check_timeout=5 * SECOND
    )
    assert r.lifecycle == Lifecycle(
        startup_timeout=30 * MINUTE, image_pull_timeout=30 * MINUTE, shutdown_delay=30 * SECOND, restart_on_error=True
    )
    assert (r.categories, r.meta, r.description) == ((), {}, None)


def test_deployment_settings_reach_resolved() -> None:
    nomad = {
        "job_id": "job-1", "service_name": "svc-1", "cpu": 8000, "memory": "1.5 GiB", "memory_max": "2 GiB",
        "gpu_memory": "24 GiB", "gpu_model": "L4", "shm_size": "1 GiB", "datacenters": ["dc1"], "namespace": "ml",
        "region": "eu", "node_pool": "gpu", "priority": 70, "service_provider": "nomad", "tags": ["x"],
        "check_interval": "20s", "check_timeout": "2s", "startup_timeout": "1h", "image_pull_timeout": 90,
        "shutdown_delay": "2m",
    }  # fmt: skip
    r = resolved(
        engine_deployment(
            backend_version="cuda",
            replicas=3,
            placement_strategy="binpack",
            worker_selector={"zone": "a"},
            restart_on_error=False,
            categories=["llm"],
            meta={"team": "search", "cost": 3, "tags": ["a", "b"]},
            description="A model.",
            nomad=nomad,
        ),
        engine(),
    )
    assert (r.job_id, r.service_name) == ("job-1", "svc-1")
    assert r.resources == Resources(
        cpu=8000, memory_mib=1536, memory_max_mib=2048, gpus=1, gpu_memory=24 * GIB, gpu_model="L4", shm_size=GIB
    )
    assert r.placement == Placement(
        replicas=3, strategy="binpack", datacenters=("dc1",), namespace="ml", region="eu", node_pool="gpu",
        priority=70, worker_selector={"zone": "a"}, platform=None,
    )  # fmt: skip
    assert r.service == ServiceSettings(
        provider="nomad", tags=("x",), health_check_path="/health", check_interval=20 * SECOND, check_timeout=2 * SECOND
    )
    assert r.lifecycle == Lifecycle(
        startup_timeout=60 * MINUTE, image_pull_timeout=90 * SECOND, shutdown_delay=2 * MINUTE, restart_on_error=False
    )
    assert r.categories == ("llm",) and r.description == "A model."
    assert r.meta == {"team": "search", "cost": "3", "tags": '["a", "b"]'}, "meta values become text, JSON if not"


def test_shm_size_from_gpustack_env_and_only_for_docker() -> None:
    r = resolved(engine_deployment(backend_version="cpu", env={"GPUSTACK_MODEL_RUNTIME_SHM_SIZE_GIB": "2"}), engine())
    assert r.resources.shm_size == 2 * GIB
    found = problem(
        engine_deployment(backend_version="cpu", env={"GPUSTACK_MODEL_RUNTIME_SHM_SIZE_GIB": "x"}), engine()
    )
    assert found.field == "env.GPUSTACK_MODEL_RUNTIME_SHM_SIZE_GIB"
    r = resolved(
        {"name": "m", "local_path": "/opt/m", "backend": "local-custom", "nomad": {"shm_size": "1 GiB"}}, RAW_EXEC
    )
    assert r.resources.shm_size is None


def test_health_check_path_precedence_and_switch() -> None:
    assert resolved(engine_deployment(backend_version="cpu"), engine()).service.health_check_path == "/health"
    env = {"GPUSTACK_MODEL_HEALTH_CHECK_PATH": "/ready"}
    assert resolved(engine_deployment(backend_version="cpu", env=env), engine()).service.health_check_path == "/ready"
    custom = {"name": "m", "backend": "Custom", "image_name": "x:1", "run_command": "serve"}
    assert resolved(custom).service.health_check_path == "/v1/models"  # GPUStack's default
    off = resolved(engine_deployment(backend_version="cpu", nomad={"health_check": False}), engine())
    assert off.service.health_check_path is None


def test_check_timing_is_checked() -> None:
    found = problem(engine_deployment(backend_version="cpu", nomad={"check_timeout": "20s"}), engine())
    assert found.field == "nomad.check_timeout"
    found = problem(
        engine_deployment(backend_version="cpu", nomad={"check_interval": "500ms", "check_timeout": "100ms"}), engine()
    )
    assert found.field == "nomad.check_interval" and "at least 1s" in found.message


# --- warnings ---------------------------------------------------------------------------------------------


def test_no_warnings_for_a_plain_deployment() -> None:
    assert resolved(engine_deployment(backend_version="cuda", nomad={"gpu_memory": "24 GiB"}), engine()).warnings == ()


def test_locked_down_docker_modes_warn() -> None:
    backend = engine() + "nomad:\n  docker:\n    pid_mode: host\n    ipc_mode: host\n"
    warnings = resolved(engine_deployment(backend_version="cpu"), backend).warnings
    assert len(warnings) == 2
    assert warnings[0].startswith("docker option ipc_mode fails on Nomad >= 2.0.4")
    assert warnings[1].startswith("docker option pid_mode fails on Nomad >= 2.0.4")


def test_gpu_memory_and_model_without_a_device_plugin_warn() -> None:
    r = resolved(engine_deployment(backend_version="multi", nomad={"gpu_memory": "24 GiB"}), engine())
    (warning,) = r.warnings
    assert warning.startswith("nomad.gpu_memory is only enforced for frameworks with a Nomad device plugin (cuda), "
                              "not rocm")  # fmt: skip
    r = resolved(engine_deployment(backend_version="multi", nomad={"gpu_model": "MI300X"}), engine())
    assert r.warnings == (
        "nomad.gpu_model is only enforced for frameworks with a Nomad device plugin (cuda), not rocm: "
        "the job does not use it",
    )
    cuda = resolved(engine_deployment(backend_version="cuda", nomad={"gpu_model": "L4"}), engine())
    assert cuda.warnings == () and cuda.resources.gpu_model == "L4"


def test_a_command_that_never_uses_the_port_warns() -> None:
    custom = {"name": "m", "backend": "Custom", "image_name": "x:1", "run_command": "serve --listen 8080"}
    (warning,) = resolved(custom).warnings
    assert warning.startswith(
        "the command never uses {{port}}: the engine does not listen on the port Nomad allocated, so the health "
        "check targets a port nothing listens on and the model never becomes healthy"
    )
    (warning,) = resolved({**custom, "nomad": {"health_check": False}}).warnings
    assert "so the service points at a port nothing listens on" in warning
    for run_command in (
        "serve --port {{ port }}",
        "serve --port ${NOMAD_PORT_http}",
        "serve --bind {{worker_ip}}:{{port}}",
    ):
        assert resolved({**custom, "run_command": run_command}).warnings == (), run_command
    in_a_file = (
        engine().replace("--port {{port}}", "")
        + "nomad:\n  templates: [{destination: local/c, data: 'port={{port}}'}]\n"
    )
    assert resolved(engine_deployment(backend_version="cpu"), in_a_file).warnings == ()


def test_backend_parameters_that_repeat_the_commands_flags_warn_with_the_consequence() -> None:
    vllm = {"name": "qwen", "huggingface_repo_id": "o/r", "backend": "vLLM", "nomad": {"gpus": 2}}
    params = ["--served-model-name other", "--tensor-parallel-size 4", "--max-model-len 4096"]
    assert resolved({**vllm, "backend_parameters": params}).warnings == (
        "backend_parameters sets --served-model-name, which the run command already sets: the engine serves "
        "the model under another name than 'qwen', the name clients and `nomadgs gateway` ask for",
        "backend_parameters sets --tensor-parallel-size, which the run command already sets: the engine "
        "splits the model over another number of GPUs than the 2 Nomad reserves for it (set nomad.gpus instead)",
    )
    (warning,) = resolved({**vllm, "backend_parameters": ["-tp 1"]}).warnings
    assert warning.startswith("backend_parameters sets -tp, which the run command already sets: the engine splits")
    (warning,) = resolved(engine_deployment(backend_version="cpu", backend_parameters=["--gpus=3"]), engine()).warnings
    assert warning.endswith("sets --gpus, which the run command already sets: most engines take the last value, "
                            "so it replaces the backend's")  # fmt: skip
    assert resolved({**vllm, "backend_parameters": ["--max-model-len 4096", "--enable-prefix-caching"]}).warnings == ()
