"""What every spec model shares: the base model and the annotated value types with their validators.

Backend and deployment files use the same rules for environments, sizes, durations and Nomad names; they
live here once, so a change to one rule (a unit, a name pattern) lands in one place.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Tag, field_validator
from pydantic_core import PydanticCustomError

from ..durations import HOUR, SECOND, parse_duration
from ..errors import HintedValueError
from ..sizes import PIB, TIB, parse_size

NOMAD_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")  # RFC 1123 label: job IDs and service names


class AsWritten:
    """Marks text read as it is written in the file: YAML 1.1 would make `017` 15, `1.10` 1.1 and `yes` true.

    `specfile.validate` puts the scalar's own text back before validation wherever this marker sits.
    """

    def __repr__(self) -> str:
        return "AS_WRITTEN"


AS_WRITTEN = AsWritten()


class SpecModel(BaseModel):
    """Base of the input models: unknown keys are errors, models are built on first use."""

    model_config = ConfigDict(extra="forbid", defer_build=True, str_strip_whitespace=False, strict=True)


def _text_scalar(value: Any) -> Any:
    """Env values are text. Values from a file arrive as written (AS_WRITTEN); these are for values built in code."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


EnvValue = Annotated[str, AS_WRITTEN, BeforeValidator(_text_scalar)]
WrittenText = Annotated[str, AS_WRITTEN]  # a version, a node meta value: `1.10` stays "1.10"


def _env_name(key: str) -> str:
    if not key or "=" in key or "\x00" in key:
        raise ValueError(f"'{key}' is not a valid environment variable name")
    return key


# Checked as keys, not as the whole mapping: a problem then points at the key's line, not the block's.
EnvMap = dict[Annotated[str, AfterValidator(_env_name)], EnvValue]


# Upper bounds of the values that reach an integer field of Nomad's job (int64 there: MemoryMB, the docker
# driver's shm_size in bytes, durations in nanoseconds). Each is far beyond any real setting and far inside
# int64, so a slip of the unit (TiB for GiB, h for m) is refused here, located, not by Nomad at submit.
MAX_MEMORY = PIB  # memory, memory_max, shm_size: more than any node has
MAX_GPU_MEMORY = 16 * TIB  # per GPU: some 60 times the largest GPU made
MAX_DURATION = 7 * 24 * HOUR  # a week: startup and image pull timeouts are minutes to hours
MAX_DURATION_TEXT = "168h (a week)"


def _written(value: Any) -> str:
    """A value echoed in a message: as written, cut short (a 400-digit number says nothing more than 40)."""
    text = str(value).strip()
    return text if len(text) <= 40 else text[:37] + "..."


def _duration(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("expected a duration such as '30m'")
    # A bare number in a YAML file means seconds, like Consul's and systemd's.
    ns = value * SECOND if isinstance(value, int) else parse_duration(value)
    if ns > MAX_DURATION:
        written = f"{_written(value)} seconds" if isinstance(value, int) else _written(value)
        raise HintedValueError(f"{written} is longer than a week", f"write at most {MAX_DURATION_TEXT}, e.g. 30m")
    return ns


def _size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("expected a size such as '24 GiB'")
    return parse_size(value)  # a bare number is refused: MiB to Nomad users, bytes to the parser


def _size_at_most(limit: int, too_much: str, fix: str) -> Callable[[Any], int]:
    """A size parser that refuses more than `limit`: "<as written> is <too_much>" (fix)."""

    def parse(value: Any) -> int:
        size = _size(value)
        if size > limit:
            raise HintedValueError(f"{_written(value)} is {too_much}", fix)
        return size

    return parse


def _positive(value: int) -> int:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


CPU_MIN_MHZ = 100  # Nomad's own default for a task; below it, the number was surely meant as cores
CPU_MAX_MHZ = 10_000_000  # a node offers cores × clock: 10 THz is more than any machine has


def _cpu_mhz(value: int) -> int:
    if value <= 0:
        hint = "write the MHz one replica reserves, e.g. 4000"
        raise HintedValueError(f"cpu must be at least {CPU_MIN_MHZ} MHz", hint)
    if value < CPU_MIN_MHZ:
        raise HintedValueError(
            f"cpu is in MHz, not cores: {value} MHz is below the floor of {CPU_MIN_MHZ} MHz",
            f"{value} cores at 2.5 GHz: write {value * 2500}",
        )
    if value > CPU_MAX_MHZ:
        raise HintedValueError(
            f"{value} MHz is more than any Nomad node offers (a node's cpu is its cores × clock in MHz)",
            f"64 cores at 3 GHz are 192000; the most this accepts is {CPU_MAX_MHZ}",
        )
    return value


_size_of_node = _size_at_most(MAX_MEMORY, "more than any node has", "write a size up to 1 PiB, e.g. '16 GiB'")
_memory_size = _size_at_most(
    MAX_MEMORY, "more than any node has", "write a size from 10 MiB to 1 PiB per replica, e.g. '64 GiB'"
)

Duration = Annotated[int, BeforeValidator(_duration), AfterValidator(_positive)]  # nanoseconds
Size = Annotated[int, BeforeValidator(_size_of_node), AfterValidator(_positive)]  # bytes, of a node
MemorySize = Annotated[int, BeforeValidator(_memory_size), AfterValidator(_positive)]  # a replica's memory
CpuMHz = Annotated[int, AfterValidator(_cpu_mhz)]  # Nomad's `cpu`: MHz of the node's total compute


AUTO = "auto"  # nomad.gpus / nomad.gpu_memory: let the estimate choose (nomad_gpustack.estimate)
MAX_GPUS = 64


def _gpu_count_or_auto(value: Any) -> Any:
    if value == AUTO:
        return value
    if isinstance(value, str) and not value.strip().isdigit():
        raise HintedValueError(f"'{value}' is not a number of GPUs", "write a whole number, or auto")
    if isinstance(value, bool) or not isinstance(value, int):
        # The strict-int error: the problem then reads as every other count's ("got text ('2')", the quote hint).
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    if not 0 <= value <= MAX_GPUS:
        raise ValueError(f"must be between 0 and {MAX_GPUS}, or 'auto'")
    return value


_gpu_size = _size_at_most(
    MAX_GPU_MEMORY, "more than any GPU has", "write each GPU's memory, up to 16 TiB (e.g. '80 GiB'), or auto"
)


def _size_or_auto(value: Any) -> Any:
    if value == AUTO:
        return value
    return _positive(_gpu_size(value))


# Kept apart from Size so the rules for sizes and counts can change without touching `auto`.
GpuCount = Annotated[int | Literal["auto"], BeforeValidator(_gpu_count_or_auto)]
GpuMemory = Annotated[int | Literal["auto"], BeforeValidator(_size_or_auto)]


def _nomad_name(value: str) -> str:
    if not NOMAD_NAME.fullmatch(value):
        raise ValueError(f"'{value}' must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'")
    return value


NomadName = Annotated[str, AfterValidator(_nomad_name)]


PORT_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # Nomad's port labels become env names: NOMAD_PORT_<label>


class MetricsEndpoint(SpecModel):
    """Where an engine serves its Prometheus metrics: `nomad.metrics` of a backend, a version or a deployment."""

    path: str
    port: str | None = None  # a port label: "http" (the default) or one of the backend's nomad.ports
    flag: str | None = None  # the engine's switch that turns them on, added to the command unless it is there

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise HintedValueError(f"the metrics path '{value}' must start with '/'", "write it like /metrics")
        return value

    @field_validator("port")
    @classmethod
    def _port(cls, value: str | None) -> str | None:
        if value is not None and not PORT_LABEL.fullmatch(value):
            raise HintedValueError(f"'{value}' is not a port label", "name http or one of the backend's nomad.ports")
        return value

    @field_validator("flag")
    @classmethod
    def _flag(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("-") or len(value.split()) != 1):
            raise HintedValueError(f"'{value}' is not a command-line flag", "write one flag, like --metrics")
        return value


def _metrics_setting(value: Any) -> Any:
    if value is False or isinstance(value, dict):
        return value
    shown = "true" if value is True else "nothing" if value is None else f"'{_written(value)}'"
    raise HintedValueError(
        f"expected {{path: /metrics}} or false, got {shown}",
        "give the path where the engine serves Prometheus metrics, with flag: --switch if it needs one to "
        "serve them; or false when it serves none",
    )


# `{path: ...}` or `false`. The tags are in brackets: located problems leave such parts out of the key's path.
Metrics = Annotated[
    Annotated[MetricsEndpoint, Tag("[endpoint]")] | Annotated[Literal[False], Tag("[off]")],
    Discriminator(lambda value: "[off]" if value is False else "[endpoint]"),
    BeforeValidator(_metrics_setting),
]
