"""Metadata keys and tags that compiled jobs carry, and that discovery and status read back."""

from __future__ import annotations

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
RESERVED_META = frozenset(
    {META_MODEL, META_BACKEND, META_VERSION, META_FRAMEWORK, META_SOURCE, META_MODEL_REF, META_CATEGORIES,
     META_GPUS, META_API, META_MANAGED, META_SERVICE}
)  # fmt: skip

# The prestart task that downloads the weights; the watcher reports it as "downloading".
DOWNLOAD_TASK = "download-model"

# Service tags; `model=<name>` etc. carry the metadata for Nomad's native services, which have no meta.
TAG_MARKER = "nomadgs"
TAG_MODEL = "model="
TAG_BACKEND = "backend="
TAG_VERSION = "version="
