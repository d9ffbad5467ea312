"""Deployment values that YAML or a habit from another tool would misread: refused with the fix, or read as meant."""

from __future__ import annotations

import pytest

from nomad_gpustack.errors import InputError
from nomad_gpustack.sizes import GIB, MIB

from ..support.helpers import deployment


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
