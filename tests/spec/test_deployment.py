"""Deployment values that YAML or a habit from another tool would misread: refused with the fix, or read as meant."""

from __future__ import annotations

from typing import Any

import pytest

from nomad_gpustack.errors import InputError
from nomad_gpustack.sizes import GIB, MIB

from ..support.helpers import backends, compile_yaml, deployment, main_task


def main_task_image(job: Any) -> str:
    image: str = job["TaskGroups"][0]["Tasks"][-1]["Config"]["image"]
    return image


def problems(text: str) -> list[str]:
    with pytest.raises(InputError) as info:
        deployment(text)
    return [str(p) for p in info.value.problems]


def nomad_block(key: str, value: str) -> str:
    return f"name: m\nnomad:\n  {key}: {value}\n"


# --- sizes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "fix"),
    [
        ("memory", "16384", "write '16 GiB' or '16384 MiB'"),  # the Nomad habit: MB
        ("gpu_memory", "24", "write '24 GiB' or '24 MiB'"),
        ("shm_size", "64", "write '64 GiB' or '64 MiB'"),
        ("memory", "'16384'", "write '16 GiB' or '16384 MiB'"),
        ("memory_max", "0.5", "write '0.5 GiB' or '0.5 MiB'"),
    ],
)
def test_a_size_without_a_unit_is_refused_with_the_fix(key: str, value: str, fix: str) -> None:
    (message,) = problems(nomad_block(key, value))
    number = value.strip("'")
    assert message == (
        f"deploy.yaml:3:{len(key) + 5}: nomad.{key}: a size needs a unit; {number} alone would be read as bytes ({fix})"
    )


@pytest.mark.parametrize("value", ["16g", "16G", "512m", "64k", "1.5 g"])
def test_one_letter_units_are_ambiguous_and_refused(value: str) -> None:
    (message,) = problems(nomad_block("memory", value))
    number, letter = value[:-1].strip(), value[-1].upper()
    assert f"'{value}' is ambiguous: Docker reads '{value[-1]}' as {letter}iB (binary)" in message
    assert message.endswith(f"(write '{number} {letter}iB' or '{number} {letter}B')")


@pytest.mark.parametrize(
    ("value", "size"),
    [("16 GiB", 16 * GIB), ("16Gi", 16 * GIB), ("16384 MiB", 16 * GIB), ("16 GB", 16 * 10**9), ("512MB", 512 * 10**6),
     ("1.5 GiB", 1536 * MIB), ("1048576 B", MIB)],
)  # fmt: skip
def test_sizes_with_units_are_read_binary_or_decimal_as_written(value: str, size: int) -> None:
    assert deployment(nomad_block("memory", value)).spec.nomad.memory == size


# --- text as written ----------------------------------------------------------------------------------------


def test_env_values_are_text_as_written_not_yaml_numbers_or_booleans() -> None:
    spec = deployment("name: m\nenv: {H: 017, D: 1.10, G: yes, P: 8000, T: true, X: 0x1F, DAY: 2024-01-01}\n").spec
    assert spec.env == {"H": "017", "D": "1.10", "G": "yes", "P": "8000", "T": "true", "X": "0x1F", "DAY": "2024-01-01"}


def test_backend_env_values_are_text_as_written() -> None:
    (backend,) = backends(
        "backend_name: b-custom\ndefault_env: {A: 1.10}\nversion_configs:\n  v1:\n    env: {B: 017, C: off}\n"
    )
    assert backend.spec.default_env == {"A": "1.10"}
    assert backend.spec.versions["v1"].env == {"B": "017", "C": "off"}
    listed = backends(
        "- backend_name: a-custom\n  default_env: {X: 1.10}\n- backend_name: b-custom\n  default_env: {Y: 017}\n"
    )
    assert [b.spec.default_env for b in listed] == [{"X": "1.10"}, {"Y": "017"}]  # a catalog list, too


def test_the_job_gets_env_values_as_written() -> None:
    text = "name: m\nlocal_path: m.gguf\nbackend: llama.cpp\nbackend_version: cpu\nenv: {H: 017, D: 1.10, G: yes}\n"
    env = main_task(compile_yaml(text))["Env"]
    assert (env["H"], env["D"], env["G"]) == ("017", "1.10", "yes")


def test_backend_version_node_meta_and_job_meta_are_text_as_written() -> None:
    spec = deployment("name: m\nbackend_version: 1.10\nworker_selector: {cuda: 12.10}\nmeta: {v: 1.10, on: yes}\n").spec
    assert (spec.backend_version, spec.worker_selector, spec.meta) == (
        "1.10",
        {"cuda": "12.10"},
        {"v": "1.10", "on": "yes"},
    )
    versions = "backend_name: v-custom\nversion_configs:\n  '1.1': {image_name: 'a:1', custom_framework: cpu}\n" \
               "  '1.10': {image_name: 'a:2', custom_framework: cpu}\n"  # fmt: skip
    job = compile_yaml("name: m\nbackend: v-custom\nbackend_version: 1.10\n", versions).job
    assert main_task_image(job) == "a:2"


def test_other_text_fields_ask_for_quotes_with_the_value_as_written() -> None:
    assert problems("name: m\nnomad:\n  tags: [1.10]\n") == [
        "deploy.yaml:3:10: nomad.tags[0]: expected text, got a number (1.10) (quote it: '1.10')"
    ]
    assert problems("name: m\nenv: {EMPTY: }\n") == [
        "deploy.yaml:2:14: env.EMPTY: expected text, got nothing (write '' for empty text)"
    ]


# --- strict types ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("replicas: true\n", "2:11: replicas: expected a whole number, got true or false (true)"),
        ("nomad:\n  gpus: true\n", "3:9: nomad.gpus: expected a whole number, got true or false (true)"),
        ("nomad:\n  gpus: '2'\n", "3:9: nomad.gpus: expected a whole number, got text ('2') (write 2 without quotes)"),
        ("nomad:\n  gpus: 2.0\n", "3:9: nomad.gpus: expected a whole number, got a number (2.0)"),
        ("nomad:\n  priority: yes\n", "3:13: nomad.priority: expected a whole number, got true or false (yes)"),
        ("nomad:\n  cpu: '4000'\n",
         "3:8: nomad.cpu: expected a whole number, got text ('4000') (write 4000 without quotes)"),
        ("restart_on_error: 1\n", "2:19: restart_on_error: expected true or false, got a whole number (1)"),
        ("nomad:\n  health_check: 'no'\n", "3:17: nomad.health_check: expected true or false, got text ('no')"),
    ],
)  # fmt: skip
def test_counts_and_switches_are_not_coerced(text: str, expected: str) -> None:
    assert problems("name: m\n" + text) == [f"deploy.yaml:{expected}"]


def test_backend_switches_are_not_coerced() -> None:
    with pytest.raises(InputError) as info:
        backends("backend_name: b-custom\nnomad:\n  health_check: 0\n")
    assert str(info.value) == "backend.yaml:3:17: nomad.health_check: expected true or false, got a whole number (0)"
