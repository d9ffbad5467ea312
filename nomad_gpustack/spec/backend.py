"""GPUStack inference backend definitions, read exactly as GPUStack's YAML import reads them.

Field names and meanings follow `gpustack/schemas/inference_backend.py`. Two differences, both on purpose:
unknown keys are errors (GPUStack drops typos silently), and an optional `nomad:` block, on the backend or
on one version, carries what GPUStack has no field for (driver, extra docker options, ports, devices, ...).
GPUStack ignores that block on import, so the files stay importable there.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from ..contract.drivers import COMPILER_OWNED, DOCKER_KEYS
from ..contract.frameworks import FRAMEWORKS
from ..errors import suggestion
from .base import PORT_LABEL, EnvMap, Metrics, SpecModel
from .distributed import Distributed

# Keys GPUStack writes when it exports a backend but ignores when it imports one.
EXPORT_ONLY_KEYS = frozenset(
    {
        "is_built_in",
        "icon",
        "framework_index_map",
        "built_in_version_configs",
        "id",
        "created_at",
        "updated_at",
        "deleted_at",
        "owner_principal_id",
    }
)
BUILT_IN_NAMES = ("vLLM", "SGLang", "MindIE", "VoxBox", "Custom")
# GPUStack's SourceTypeEnum (gpustack/schemas/source.py): where a content source's document comes from.
SourceType = Literal["builtin", "official", "file", "url"]
VERSION_KEY = re.compile(r"[A-Za-z0-9._-]+")


# Keys and items are checked one by one, so a problem points at the key's (or item's) own line.


def _docker_key(key: str) -> str:
    if key in COMPILER_OWNED:
        raise ValueError(f"'{key}' is set by nomadgs from image_name, entrypoint and run_command; set those instead")
    if key not in DOCKER_KEYS:
        hint = suggestion(key, DOCKER_KEYS)
        raise ValueError(f"'{key}' is not a docker driver option" + (f"; {hint}" if hint else ""))
    return key


def _port_label(label: str) -> str:
    if not PORT_LABEL.fullmatch(label) or label == "http":
        raise ValueError(f"'{label}' cannot be a port label: use letters, digits and _ ('http' is the main port)")
    return label


def _version_key(key: str) -> str:
    if not VERSION_KEY.fullmatch(key):
        raise ValueError(f"version '{key}' may only use letters, digits, '.', '_' and '-'")
    return key


DockerKey = Annotated[str, AfterValidator(_docker_key)]
PortLabel = Annotated[str, AfterValidator(_port_label)]
VersionKey = Annotated[str, AfterValidator(_version_key)]


class DeviceFile(SpecModel):
    """A host device file handed to the container (docker `devices`)."""

    host_path: str
    container_path: str | None = None
    cgroup_permissions: str | None = None


class TemplateFile(SpecModel):
    """A file rendered into the task before it starts. Placeholders ({{port}}, ...) work in `data`."""

    destination: str
    data: str
    env: bool = False

    @field_validator("destination", "data")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("cannot be empty: Nomad needs a template's destination and its data")
        return value


class NomadExtras(SpecModel):
    """Nomad-only settings for a backend or one of its versions (GPUStack ignores this block)."""

    driver: Literal["docker", "exec", "raw_exec"] | None = None
    command: str | None = Field(default=None, description="program to run, for the exec and raw_exec drivers")
    docker: dict[DockerKey, Any] | None = None
    ports: list[PortLabel] | None = None
    devices: list[DeviceFile] | None = None
    templates: list[TemplateFile] | None = None
    health_check: bool | None = None
    platform: Literal["amd64", "arm64"] | None = None
    metrics: Metrics | None = None  # where the engine serves Prometheus metrics; false: it serves none
    distributed: Distributed | None = None  # how a replica starts across nomad.nodes clients; None: it cannot

    def merged_over(self, base: NomadExtras | None) -> NomadExtras:
        """This (version-level) block over a backend-level one: set fields win, docker options merge."""
        if base is None:
            return self
        data = base.model_dump(exclude_none=True)
        mine = self.model_dump(exclude_none=True)
        docker = {**(base.docker or {}), **(self.docker or {})}
        data.update(mine)
        if docker:
            data["docker"] = docker
        return NomadExtras.model_validate(data)


def _frameworks(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class VersionConfig(SpecModel):
    """One version of a backend: `version_configs.<version>`."""

    image_name: str | None = None
    run_command: str | None = None
    entrypoint: str | None = None
    custom_framework: str | None = None
    built_in_frameworks: Annotated[list[str] | None, BeforeValidator(_frameworks)] = None
    env: EnvMap | None = None
    nomad: NomadExtras | None = None
    # Where a GPUStack content source put this version (its export writes them); no meaning on Nomad.
    source_name: str | None = None
    source_type: SourceType | None = None

    @field_validator("custom_framework")
    @classmethod
    def _known_framework(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.lower() not in FRAMEWORKS:
            hint = suggestion(value, FRAMEWORKS)
            raise ValueError(
                f"unknown framework '{value}'" + (f"; {hint}" if hint else f"; use one of {', '.join(FRAMEWORKS)}")
            )
        return value.lower()

    @field_validator("built_in_frameworks")
    @classmethod
    def _known_frameworks(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out = []
        for name in value:
            checked = cls._known_framework(name)
            assert checked is not None
            out.append(checked)
        return out

    @property
    def frameworks(self) -> list[str]:
        """GPUStack moves `custom_framework` into `built_in_frameworks` for catalog backends; read both."""
        names = [self.custom_framework] if self.custom_framework else []
        return names + [f for f in self.built_in_frameworks or [] if f not in names]


class Backend(SpecModel):
    """An inference backend (`InferenceBackendBase` plus the `nomad:` block)."""

    kind: ClassVar[str] = "backend"
    ignored_keys: ClassVar[frozenset[str]] = EXPORT_ONLY_KEYS

    backend_name: str
    version_configs: dict[VersionKey, VersionConfig] | None = None
    default_version: str | None = None
    default_backend_param: list[str] | None = None
    default_run_command: str | None = None
    default_entrypoint: str | None = None
    health_check_path: str | None = None
    description: str | None = None
    default_env: EnvMap | None = None
    enabled: bool | None = None
    backend_source: Literal["custom", "built_in", "community"] | None = None
    parameter_format: Literal["space", "equal"] | None = None
    common_parameters: list[str] | None = None
    # Versions hidden from GPUStack's deploy dropdown: a deployment may still name one (with a warning), and
    # the default (or newest) version is chosen among the others.
    disabled_versions: list[str] | None = None
    source_name: str | None = None  # the GPUStack content source that produced the backend: no meaning here
    source_type: SourceType | None = None
    nomad: NomadExtras | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_export_only(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in EXPORT_ONLY_KEYS}
        return data

    @field_validator("backend_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("backend_name cannot be empty")
        if len(value) > 128 or any(ord(c) < 0x20 for c in value):
            raise ValueError("backend_name must be one line of at most 128 characters")
        return value

    @field_validator("version_configs", mode="before")
    @classmethod
    def _null_versions(cls, value: Any) -> Any:
        # The UI template leaves a version's optional keys empty (`env:`); a whole version may be empty too.
        if isinstance(value, dict):
            return {k: ({} if v is None else v) for k, v in value.items()}
        return value

    @field_validator("health_check_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value and not value.startswith("/"):
            raise ValueError(f"health_check_path must start with '/', like '/{value}'")
        return value

    @property
    def versions(self) -> dict[str, VersionConfig]:
        return self.version_configs or {}

    def disabled(self, version: str) -> bool:
        """Whether GPUStack hides this version from its deploy dropdown (`disabled_versions`)."""
        return version in (self.disabled_versions or ())
