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
# Scale to zero (`nomad.scaling.min: 0` with `idle_after`): the gateway scales the task group META_SCALE_GROUP
# to 0 after META_IDLE_AFTER (a Nomad duration, "15m") without a request, and back to 1 when one arrives.
# Only jobs that may be scaled to zero carry them.
META_IDLE_AFTER = "nomadgs_idle_after"
META_SCALE_GROUP = "nomadgs_scale_group"
RESERVED_META = frozenset(
    {META_MODEL, META_BACKEND, META_VERSION, META_FRAMEWORK, META_SOURCE, META_MODEL_REF, META_CATEGORIES,
     META_GPUS, META_API, META_MANAGED, META_SERVICE, META_ESTIMATE, META_GPU_NEED, META_AUTO, META_IDLE_AFTER,
     META_SCALE_GROUP}
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

# Prometheus: a service tagged TAG_METRICS serves Prometheus metrics (a `consul_sd_configs` `tags` filter keeps
# it), at the path in its META_METRICS_PATH, on the port in META_METRICS_PORT when that is not the service's.
# Prometheus' Consul discovery turns them into `__meta_consul_service_metadata_metrics_path` / `..._port`.
TAG_METRICS = "nomadgs-metrics"
META_METRICS_PATH = "metrics_path"
META_METRICS_PORT = "metrics_port"
# The gateway's series that the compiled scaling policies query (compile.scaling writes the PromQL, the
# gateway's metrics module declares them): one name for each, here. prometheus_client adds `_total` to a
# counter's name in the exposition.
GATEWAY_METRIC_PREFIX = "nomadgs_gateway_"
GATEWAY_IN_FLIGHT = GATEWAY_METRIC_PREFIX + "requests_in_flight"
GATEWAY_HELD = GATEWAY_METRIC_PREFIX + "requests_held"
GATEWAY_INSTANCES = GATEWAY_METRIC_PREFIX + "instances"
GATEWAY_REQUESTS = GATEWAY_METRIC_PREFIX + "requests"  # a counter: `nomadgs_gateway_requests_total`
# The gateway's own name as a scrape target (its Consul service, when it runs as a Nomad job, and the target
# its HTTP service discovery lists for itself).
GATEWAY_SERVICE = "nomadgs-gateway"


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
    metrics_path: str | None = None  # where the engine serves Prometheus metrics; None: it serves none
    metrics_port: str | None = None  # the port, when not the service's: a Nomad interpolation ${NOMAD_PORT_x}
    idle_after: str | None = None  # META_IDLE_AFTER, a Nomad duration; None: never scaled to zero
    scale_group: str | None = None  # META_SCALE_GROUP: the group scaled to zero and back


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
    for key, value in (
        (META_ESTIMATE, labels.estimate),
        (META_GPU_NEED, labels.gpu_need),
        (META_AUTO, labels.auto),
        (META_IDLE_AFTER, labels.idle_after),
        (META_SCALE_GROUP, labels.scale_group),
    ):
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
    if labels.metrics_path:
        tags.append(TAG_METRICS)
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
    if labels.metrics_path:
        meta[META_METRICS_PATH] = labels.metrics_path
        if labels.metrics_port:
            meta[META_METRICS_PORT] = labels.metrics_port
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


class ScaleToZero(NamedTuple):
    """A job the gateway may scale to zero when idle and back to one on a request."""

    group: str
    idle_after: str  # a Nomad duration, as written ("15m")


def scale_to_zero(meta: Mapping[str, str]) -> ScaleToZero | None:
    """The group and idle time of a job that may be scaled to zero, from its Meta; None for other jobs."""
    group, idle_after = meta.get(META_SCALE_GROUP), meta.get(META_IDLE_AFTER)
    if not group or not idle_after:
        return None
    return ScaleToZero(group, idle_after)


def serves_metrics(tags: Any) -> bool:
    """Whether a service's tags say it serves Prometheus metrics (its path is in its META_METRICS_PATH)."""
    return isinstance(tags, list) and TAG_METRICS in tags
