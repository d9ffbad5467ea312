"""What every spec model shares: the base model and the annotated value types with their validators.

Backend and deployment files use the same rules for environments, sizes, durations and Nomad names; they
live here once, so a change to one rule (a unit, a name pattern) lands in one place.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from ..durations import SECOND, parse_duration
from ..sizes import parse_size

NOMAD_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")  # RFC 1123 label: job IDs and service names


class SpecModel(BaseModel):
    """Base of the input models: unknown keys are errors, models are built on first use."""

    model_config = ConfigDict(extra="forbid", defer_build=True, str_strip_whitespace=False)


def _text_scalar(value: Any) -> Any:
    """Env values: YAML reads `8000` and `true` as a number and a bool; an environment only holds text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


EnvValue = Annotated[str, BeforeValidator(_text_scalar)]


def _env_map(value: Any) -> Any:
    if isinstance(value, dict):
        for key in value:
            if not key or "=" in key or "\x00" in key:
                raise ValueError(f"'{key}' is not a valid environment variable name")
    return value


EnvMap = Annotated[dict[str, EnvValue], BeforeValidator(_env_map)]


def _duration(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("expected a duration such as '30m'")
    if isinstance(value, int):
        return value * SECOND  # a bare number in a YAML file means seconds, like Consul's and systemd's
    return parse_duration(value)


def _size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("expected a size such as '24 GiB'")
    return parse_size(value)


def _positive(value: int) -> int:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


Duration = Annotated[int, BeforeValidator(_duration), AfterValidator(_positive)]  # nanoseconds
Size = Annotated[int, BeforeValidator(_size), AfterValidator(_positive)]  # bytes


AUTO = "auto"  # nomad.gpus / nomad.gpu_memory: let the estimate choose (nomad_gpustack.estimate)
MAX_GPUS = 64


def _gpu_count_or_auto(value: Any) -> Any:
    if value == AUTO:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a number of GPUs (0-{MAX_GPUS}) or 'auto'")
    if not 0 <= value <= MAX_GPUS:
        raise ValueError(f"must be between 0 and {MAX_GPUS}, or 'auto'")
    return value


def _size_or_auto(value: Any) -> Any:
    if value == AUTO:
        return value
    return _positive(_size(value))


# Kept apart from Size so the rules for sizes and counts can change without touching `auto`.
GpuCount = Annotated[int | Literal["auto"], BeforeValidator(_gpu_count_or_auto)]
GpuMemory = Annotated[int | Literal["auto"], BeforeValidator(_size_or_auto)]


def _nomad_name(value: str) -> str:
    if not NOMAD_NAME.fullmatch(value):
        raise ValueError(f"'{value}' must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'")
    return value


NomadName = Annotated[str, AfterValidator(_nomad_name)]
