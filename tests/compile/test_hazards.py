"""Setups that compile but will not work as meant (compile/hazards.py), through the compiler and directly."""

from __future__ import annotations

import pytest
import yaml

from nomad_gpustack.compile.build import build
from nomad_gpustack.compile.hazards import shell_drops_arguments
from nomad_gpustack.spec.catalog import Catalog
from nomad_gpustack.spec.loader import load_backend_file

from ..support.backend_files import PROJECT_BACKENDS
from ..support.helpers import compile_yaml, deployment, main_task

# GPUStack's UI template: `entrypoint: /bin/sh -c` before a run command of many words.
SHELL_BACKEND = """
backend_name: shell-custom
version_configs:
  v1:
    image_name: lm/vllm:latest
    entrypoint: "/bin/sh -c"
    run_command: "{{model_path}} --port {{port}} --served-model-name {{model_name}}"
    custom_framework: cuda
"""
MODEL = {"name": "m", "huggingface_repo_id": "org/m", "backend": "shell-custom", "nomad": {"gpus": 1}}


def shell_warnings(compiled_warnings: tuple[str, ...]) -> list[str]:
    return [w for w in compiled_warnings if w.startswith("the task runs `")]


def test_sh_c_with_arguments_after_its_command_is_warned_naming_the_fix() -> None:
    compiled = compile_yaml(MODEL, SHELL_BACKEND)
    assert main_task(compiled)["Config"]["entrypoint"] == ["/bin/sh", "-c"]
    (warning,) = shell_warnings(compiled.resolved.warnings)
    assert warning == (
        "the task runs `/bin/sh -c` with 5 arguments after it: the shell runs only the first, "
        "'/models/huggingface/org/m' (the model's path), as its command, and hands the other 4 ('--port', ...) "
        "to it as $0, $1, ...; put the whole command in one argument (quote the run command as one word), or "
        "drop the shell (make the entrypoint the program itself)"
    )


def test_the_projects_ui_template_file_is_warned_too() -> None:
    (backend,) = load_backend_file(PROJECT_BACKENDS / "single" / "ui-template-custom.yaml")
    data = {"name": "m", "huggingface_repo_id": "org/m", "backend": "sglang-custom", "nomad": {"gpus": 1}}
    compiled = build(deployment({**data, "backend_version": "v0.5.2"}), Catalog().adding([backend]))
    (warning,) = shell_warnings(compiled.resolved.warnings)
    assert "the shell runs only the first, 'exec', as its command" in warning
    rocm = build(deployment({**data, "backend_version": "v0.5.1-rocm"}), Catalog().adding([backend]))
    assert shell_warnings(rocm.resolved.warnings) == [], "no shell, no warning"


@pytest.mark.parametrize(
    "run_command",
    [
        "'vllm serve {{model_path}} --port {{port}}'",  # the whole command in one argument
        '\'exec vllm serve "$0" "$@"\' {{model_path}} --port {{port}}',  # a script that takes its arguments
    ],
)
def test_one_command_string_or_a_script_reading_its_arguments_is_not_warned(run_command: str) -> None:
    backend = yaml.safe_load(SHELL_BACKEND)
    backend["version_configs"]["v1"]["run_command"] = run_command
    compiled = compile_yaml(MODEL, yaml.safe_dump(backend))
    assert shell_warnings(compiled.resolved.warnings) == []


@pytest.mark.parametrize(
    ("argv", "warned"),
    [
        (["/bin/sh", "-c", "serve", "--port", "1"], True),
        (["bash", "-ec", "serve", "x"], True),
        (["/usr/bin/bash", "-o", "pipefail", "-c", "serve", "x"], True),
        (["sh", "-c", "serve --port 1"], False),
        (["sh", "-c", 'serve "$@"', "sh", "--port", "1"], False),
        (["sh", "start.sh", "--port", "1"], False),  # a script file takes its arguments
        (["python3", "-c", "print(1)", "x"], False),
        (["sh", "-c"], False),
        ([], False),
    ],
)
def test_the_check_reads_shell_options_as_the_shell_does(argv: list[str], warned: bool) -> None:
    assert (shell_drops_arguments(argv, model_path=None) is not None) is warned
