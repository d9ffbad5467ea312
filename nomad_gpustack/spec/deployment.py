"""A deployment file: one model to serve, with GPUStack's model fields plus a `nomad:` block for the cluster.

Top-level keys are those of GPUStack's `ModelSpecBase` (`gpustack/schemas/models.py`) that mean something
on Nomad. GPUStack fields without a Nomad meaning (gpu_selector, ...) are refused with a hint, not ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..contract.metadata import RESERVED_META
from ..durations import SECOND
from ..errors import HintedValueError
from .base import (
    AS_WRITTEN,
    AUTO,
    CpuMHz,
    Duration,
    EnvMap,
    GpuCount,
    GpuMemory,
    MemorySize,
    Metrics,
    NomadName,
    Size,
    SpecModel,
    WrittenText,
)
from .scaling import ScalingKeys

NODE_META_KEY = re.compile(r"[A-Za-z0-9_.\-]+")
MODEL_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")  # GPUStack UI's rule

# GPUStack model fields with no meaning on Nomad, and what to use instead.
UNSUPPORTED_GPUSTACK_FIELDS = {
    "gpu_selector": "pick GPUs with nomad.gpus, nomad.gpu_model and nomad.gpu_memory",
    "gpu_type_selector": "pick GPUs with nomad.gpu_model and nomad.gpu_memory",
    "distributed_inference_across_workers": "spread a replica over several Nomad nodes with nomad.nodes",
    "distributable": "spread a replica over several Nomad nodes with nomad.nodes",
    "extended_kv_cache": "pass the engine's own flags in backend_parameters",
    "speculative_config": "pass the engine's own flags in backend_parameters",
    "lora_list": "pass the engine's LoRA flags in backend_parameters",
    "scaling_schedule": "write it under nomad.scaling.schedule (the same keys), with nomad.scaling.min and max",
    "cluster_id": "choose the cluster with NOMAD_ADDR",
    "generic_proxy": "use `nomadgs gateway`",
}


def _meta_key(key: str) -> str:
    if key in RESERVED_META:
        raise ValueError(f"'{key}' is set by nomadgs; choose another meta key")
    return key


def _node_meta_key(key: str) -> str:
    if not NODE_META_KEY.fullmatch(key):
        raise ValueError(f"'{key}' cannot be a node meta key")
    return key


# Checked key by key, so a problem points at the key's own line.
MetaKey = Annotated[str, AfterValidator(_meta_key)]
NodeMetaKey = Annotated[str, AfterValidator(_node_meta_key)]


UpgradeStrategy = Literal["canary", "rolling", "recreate"]
ReplicaCount = Annotated[int, Field(ge=0, le=1000)]
MAX_NODES = 256


def _node_count_or_auto(value: Any) -> Any:
    if value == AUTO:
        return value
    if isinstance(value, str) and not value.strip().isdigit():
        raise HintedValueError(f"'{value}' is not a number of nodes", "write a whole number, or auto")
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("int_type", "Input should be a valid integer")  # as GpuCount: the quote hint
    if not 1 <= value <= MAX_NODES:
        raise ValueError(f"must be between 1 and {MAX_NODES}, or 'auto'")
    return value


# "auto" (with gpus: auto): the fewest nodes whose GPUs hold the model (compile.sizing, estimate.plan.fewest_nodes)
NodeCount = Annotated[int | Literal["auto"], BeforeValidator(_node_count_or_auto)]


class UpdateKeys(SpecModel):
    """`nomad.update:` Nomad's update block, with Nomad's names; what is left out comes from `nomad.upgrade`
    and nomadgs's defaults (`compile.upgrade`)."""

    max_parallel: ReplicaCount | None = None
    canary: ReplicaCount | None = None
    auto_promote: bool | None = None
    auto_revert: bool | None = None
    min_healthy_time: Duration | None = None
    healthy_deadline: Duration | None = None
    progress_deadline: Duration | None = None
    stagger: Duration | None = None


class DeploymentNomad(SpecModel):
    """Where and how the model runs on Nomad."""

    job_id: NomadName | None = None
    service_name: NomadName | None = None
    datacenters: list[str] | None = None
    namespace: str | None = None
    region: str | None = None
    node_pool: str | None = None
    priority: Annotated[int, Field(ge=1, le=100)] | None = None

    framework: str | None = None
    gpus: GpuCount | None = None  # "auto": the fewest GPUs the estimate says the model fits on
    gpu_memory: GpuMemory | None = None  # "auto": what each GPU needs, by the estimate
    gpu_model: str | None = None
    nodes: NodeCount = 1  # Nomad clients per replica: a leader and nodes-1 workers (compile/distributed.py); or auto
    cpu: CpuMHz = 4000
    memory: MemorySize = 16 * 1024**3
    memory_max: MemorySize | None = None
    shm_size: Size | None = None

    models_volume: str = "models"
    models_mount: str = "/models"
    token_variable: str | None = None
    downloader_image: str = "python:3.12-slim"

    service_provider: Literal["consul", "nomad"] = "consul"
    tags: list[str] | None = None
    health_check: bool | None = None
    check_interval: Duration = 10 * SECOND
    check_timeout: Duration = 5 * SECOND
    startup_timeout: Duration = 30 * 60 * SECOND
    image_pull_timeout: Duration = 30 * 60 * SECOND
    metrics: Metrics | None = None  # over the backend's nomad.metrics; false: no metrics tag, no flag added
    shutdown_delay: Duration = 30 * SECOND  # out of Consul this long before the engine is stopped
    upgrade: UpgradeStrategy | None = None  # None: rolling (compile.upgrade says why)
    update: UpdateKeys | None = None
    scaling: ScalingKeys | None = None  # the Nomad Autoscaler's policy, and scale to zero (compile.scaling)

    @field_validator("models_mount")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path inside the task, such as /models")
        return value.rstrip("/") or "/"

    @field_validator("datacenters")
    @classmethod
    def _non_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("list at least one datacenter, or leave the key out for all of them ('*')")
        return value


class Deployment(SpecModel):
    """One deployed model (GPUStack's model fields) and its Nomad settings."""

    refused_keys: ClassVar[dict[str, str]] = UNSUPPORTED_GPUSTACK_FIELDS
    kind: ClassVar[str] = "deployment"

    name: str
    source: Literal["huggingface", "model_scope", "local_path"] | None = None
    huggingface_repo_id: str | None = None
    huggingface_filename: str | None = None
    model_scope_model_id: str | None = None
    model_scope_file_path: str | None = None
    local_path: str | None = None
    replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    backend: str | None = None
    backend_version: WrittenText | None = None  # `1.10` is the version 1.10, as the version keys
    backend_parameters: list[str] | None = None
    env: EnvMap | None = None
    image_name: str | None = None
    run_command: str | None = None
    worker_selector: dict[NodeMetaKey, WrittenText] | None = None
    placement_strategy: Literal["spread", "binpack"] = "spread"
    cpu_offloading: bool | None = None
    description: str | None = None
    meta: dict[MetaKey, Annotated[Any, AS_WRITTEN]] | None = None
    categories: list[str] | None = None
    restart_on_error: bool = True
    nomad: DeploymentNomad = Field(default_factory=DeploymentNomad)

    @model_validator(mode="before")
    @classmethod
    def _null_nomad(cls, data: Any) -> Any:
        if isinstance(data, dict) and "nomad" in data and data["nomad"] is None:
            return {k: v for k, v in data.items() if k != "nomad"}
        return data

    @field_validator("name")
    @classmethod
    def _model_name(cls, value: str) -> str:
        if not MODEL_NAME.fullmatch(value):
            raise ValueError(
                f"'{value}' is not a valid model name: use 1-63 letters, digits, '.', '_' or '-', "
                "starting and ending with a letter or digit"
            )
        return value

    @property
    def model_source(self) -> str | None:
        """The source, given or implied by the one source field that is set."""
        if self.source:
            return self.source
        if self.huggingface_repo_id:
            return "huggingface"
        if self.model_scope_model_id:
            return "model_scope"
        if self.local_path:
            return "local_path"
        return None

    @property
    def model_file(self) -> str | None:
        """The single file of the model (a GGUF, ...), when the source names one."""
        if self.model_source == "huggingface":
            return self.huggingface_filename
        if self.model_source == "model_scope":
            return self.model_scope_file_path
        return None
