"""The labels compiled jobs carry (job meta, service tags, service meta), written and read back in one place.

The compiler writes them; discovery, status, stop and submit read them from Nomad and Consul. Each format
has its writer next to its reader, so the two cannot drift apart. This module imports nothing from the
rest of the package: the spec models use `RESERVED_META` to refuse our keys in a deployment's own meta.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

# Meta keys, shared by the job and its service so discovery can read them back (Consul allows [A-Za-z0-9_-]).
META_MODEL = "gpustack_model"
META_BACKEND = "gpustack_backend"
META_VERSION = "gpustack_backend_version"
META_FRAMEWORK = "gpustack_framework"
META_SOURCE = "gpustack_source"
META_MODEL_REF = "gpustack_model_ref"
META_CATEGORIES = "gpustack_categories"
META_GPUS = "gpustack_gpus"
META_API = "gpustack_api"
META_MANAGED = "nomadgs_managed"
META_SERVICE = "nomadgs_service"
META_JOB = "nomadgs_job"
META_ESTIMATE = "nomadgs_estimate"  # the memory estimate in words ("vLLM needs 17.2 GiB per GPU at ...")
META_GPU_NEED = "nomadgs_gpu_need"  # bytes each GPU needs for the engine to start, as a Nomad size ("18 GiB")
META_AUTO = "nomadgs_auto"  # why `auto` chose the GPUs and memory it did
RESERVED_META = frozenset(
    {META_MODEL, META_BACKEND, META_VERSION, META_FRAMEWORK, META_SOURCE, META_MODEL_REF, META_CATEGORIES,
     META_GPUS, META_API, META_MANAGED, META_SERVICE, META_ESTIMATE, META_GPU_NEED, META_AUTO}
)  # fmt: skip

# The prestart task that downloads the weights; the watcher reports it as "downloading".
DOWNLOAD_TASK = "download-model"

# Service tags; `model=<name>` etc. carry the metadata for Nomad's native services, which have no meta.
TAG_MARKER = "nomadgs"
TAG_API = "openai"
TAG_MODEL = "model="
TAG_BACKEND = "backend="
TAG_VERSION = "version="
# The tag a canary instance carries in Consul while its deployment is unpromoted (the group's `canary_tags`):
# the compiler writes it, the gateway reads it to give canaries their share of traffic.
TAG_CANARY = "canary"


@dataclass(frozen=True)
class JobLabels:
    """What a compiled job says about the model it serves."""

    model: str
    backend: str
    version: str | None
    framework: str
    source: str | None  # huggingface | model_scope | local_path; None: the image brings its own model
    model_ref: str  # repo[/file] or local path; "" for none
    gpus: int
    job_id: str
    service: str
    categories: tuple[str, ...] = ()
    estimate: str | None = None  # META_ESTIMATE
    gpu_need: str | None = None  # META_GPU_NEED, a Nomad size
    auto: str | None = None  # META_AUTO


class ModelLabels(NamedTuple):
    """Model, backend and version as read back from a job's or a service's meta and tags."""

    model: str
    backend: str | None
    version: str | None


# --- writers ---------------------------------------------------------------------------------------------


def job_meta(labels: JobLabels, user_meta: Mapping[str, str]) -> dict[str, str]:
    """The job's Meta: our keys, then the deployment's own (which never hide ours)."""
    meta = {
        META_MODEL: labels.model,
        META_BACKEND: labels.backend,
        META_VERSION: labels.version or "",
        META_FRAMEWORK: labels.framework,
        META_SOURCE: labels.source or "image",
        META_MODEL_REF: labels.model_ref,
        META_GPUS: str(labels.gpus),
        META_SERVICE: labels.service,
        META_MANAGED: "true",
    }
    if labels.categories:
        meta[META_CATEGORIES] = ",".join(labels.categories)
    for key, value in ((META_ESTIMATE, labels.estimate), (META_GPU_NEED, labels.gpu_need), (META_AUTO, labels.auto)):
        if value:
            meta[key] = value
    for key, value in user_meta.items():
        if key in RESERVED_META:
            continue  # the deployment model refuses these keys; never let user meta hide ours
        meta[key] = value
    return meta


def service_tags(labels: JobLabels, extra: Sequence[str] = ()) -> list[str]:
    """The service's Tags: the marker, the API, model/backend/version, the categories, then `extra`."""
    tags = [TAG_MARKER, TAG_API, f"{TAG_MODEL}{labels.model}", f"{TAG_BACKEND}{labels.backend}"]
    if labels.version:
        tags.append(f"{TAG_VERSION}{labels.version}")
    tags.extend(labels.categories)
    tags.extend(extra)
    return tags


def service_meta(labels: JobLabels) -> dict[str, str]:
    """The service's Meta (Consul only: Nomad's native services have no meta, the tags carry the same facts)."""
    meta = {
        META_MODEL: labels.model,
        META_BACKEND: labels.backend,
        META_VERSION: labels.version or "",
        META_FRAMEWORK: labels.framework,
        META_API: TAG_API,
        META_JOB: labels.job_id,
    }
    if labels.categories:
        meta[META_CATEGORIES] = ",".join(labels.categories)
    return meta


# --- readers ---------------------------------------------------------------------------------------------


def is_managed(meta: Mapping[str, str]) -> bool:
    """Whether a job's Meta says nomadgs compiled it."""
    return meta.get(META_MANAGED) == "true"


def model_name(meta: Mapping[str, str]) -> str | None:
    """The model a job serves, from its Meta; None for jobs without one."""
    return meta.get(META_MODEL) or None


def is_ours(tags: Any) -> bool:
    """Whether a service's tags carry the marker of services nomadgs compiled."""
    return isinstance(tags, list) and TAG_MARKER in tags


def tag_value(tags: Sequence[Any], prefix: str) -> str | None:
    """The value of the first `prefix<value>` tag, or None."""
    for tag in tags:
        if isinstance(tag, str) and tag.startswith(prefix) and len(tag) > len(prefix):
            return tag[len(prefix) :]
    return None


def model_labels(name: str, tags: Sequence[Any], meta: Mapping[str, str]) -> ModelLabels:
    """Model, backend and version: meta first (job meta, Consul service meta), then tags (Nomad services).

    `name` (the service's or the job's) stands in for the model when neither says.
    """
    model = meta.get(META_MODEL) or tag_value(tags, TAG_MODEL) or name
    backend = meta.get(META_BACKEND) or tag_value(tags, TAG_BACKEND)
    version = meta.get(META_VERSION) or tag_value(tags, TAG_VERSION)
    return ModelLabels(model, backend, version)


def gpu_need(meta: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The estimate's per-GPU need (a Nomad size) and its words, from a job's Meta; None where it has none."""
    return meta.get(META_GPU_NEED) or None, meta.get(META_ESTIMATE) or None


def service_job(meta: Mapping[str, str]) -> str | None:
    """The job ID a Consul service's Meta names; None when it names none."""
    return meta.get(META_JOB) or None
