"""The value types shared by backend and deployment files (spec/base.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from nomad_gpustack.durations import HOUR, MINUTE, SECOND, parse_duration
from nomad_gpustack.sizes import GIB, MIB, PIB, TIB, parse_size
from nomad_gpustack.spec.base import Duration, EnvMap, NomadName, Size, SpecModel


class Sample(SpecModel):
    env: EnvMap | None = None
    size: Size | None = None
    duration: Duration | None = None
    name: NomadName | None = None


def check(**data: Any) -> Sample:
    return Sample.model_validate(data)


def refused(**data: Any) -> str:
    with pytest.raises(ValidationError) as info:
        Sample.model_validate(data)
    return str(info.value)


def test_unknown_keys_are_refused() -> None:
    assert "Extra inputs are not permitted" in refused(sise="1 GiB")


def test_env_values_become_text_and_names_are_checked() -> None:
    assert check(env={"PORT": 8000, "DEBUG": True, "OFF": False, "RATE": 0.5, "S": "x"}).env == {
        "PORT": "8000",
        "DEBUG": "true",
        "OFF": "false",
        "RATE": "0.5",
        "S": "x",
    }
    assert "'A=B' is not a valid environment variable name" in refused(env={"A=B": "1"})
    assert "'' is not a valid environment variable name" in refused(env={"": "1"})


def test_sizes_take_units_and_must_be_positive() -> None:
    assert check(size="24 GiB").size == 24 * GIB
    assert check(size="512MiB").size == 512 * MIB
    assert "expected a size such as '24 GiB'" in refused(size=True)
    assert "must be greater than zero" in refused(size="0 GiB")


def test_durations_take_units_and_bare_numbers_are_seconds() -> None:
    assert check(duration="30m").duration == 30 * MINUTE
    assert check(duration=15).duration == 15 * SECOND
    assert "expected a duration such as '30m'" in refused(duration=1.5)
    assert "must be greater than zero" in refused(duration=0)


def test_sizes_and_durations_are_read_exactly_and_huge_ones_refused_not_overflowed() -> None:
    assert parse_size("99999999999999 TiB") == 99999999999999 * TIB  # no float rounding
    assert parse_size("1 PiB") == PIB and parse_size("0.5 GiB") == GIB // 2
    assert parse_duration("1h0.5s") == HOUR + SECOND // 2
    assert check(size="1 PiB").size == PIB and check(duration="168h").duration == 168 * HOUR
    assert "is more than any node has" in refused(size="9" * 400 + " GiB")
    assert "is longer than a week" in refused(duration="9" * 400 + "h")
    assert "is longer than a week" in refused(duration=7 * 24 * 3600 + 1)


@pytest.mark.parametrize("name", ["Qwen", "-qwen", "qwen-", "q_1", "a" * 64])
def test_nomad_names_follow_rfc_1123(name: str) -> None:
    assert "must be 1-63 lowercase letters, digits or '-'" in refused(name=name)


def test_valid_nomad_name() -> None:
    assert check(name="qwen2-5-7b").name == "qwen2-5-7b"
