"""nomad-gpustack: serve AI models on HashiCorp Nomad with GPUStack inference backends.

The public API is small; the `nomadgs` command, the Ansible collection and the Jinja2 filter are built on it:

    import nomad_gpustack as ngs

    catalog = ngs.load_catalog(["my-backends/"])           # built-in backends plus yours
    deployment = ngs.load_deployment("qwen.yaml")          # validated, every value located in its file
    compiled = ngs.build(deployment, catalog)              # resolved deployment and Nomad job (pure)
    print(ngs.render_text(compiled.job, "hcl"))            # or "json": the API document {"Job": ...}

    # GPU memory from the model's headers (`--model PATH`, else the Hugging Face Hub and its cache):
    doc = ngs.estimate_document(deployment, catalog, model_path="/models/qwen")  # `nomadgs estimate` as JSON
    model = ngs.lookup_model(deployment.spec, model_path="/models/qwen")     # for gpus/gpu_memory: auto,
    compiled = ngs.build(deployment, catalog, model=model)                   # and the check of explicit values

Errors are `NomadgsError`s (bad input is an `InputError` whose `problems` name file, line and field).
Everything else is private by convention; see ARCHITECTURE.md for the layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Catalog",
    "Compiled",
    "InputError",
    "NomadgsError",
    "__version__",
    "build",
    "estimate_document",
    "load_catalog",
    "load_deployment",
    "lookup_model",
    "render_text",
]

# Loaded on first use: `nomadgs --version` and modules that only need `__version__` pay nothing for them.
_LAZY = {
    "Catalog": "nomad_gpustack.spec.catalog",
    "Compiled": "nomad_gpustack.compile.build",
    "InputError": "nomad_gpustack.errors",
    "NomadgsError": "nomad_gpustack.errors",
    "build": "nomad_gpustack.compile.build",
    "estimate_document": "nomad_gpustack.compile.estimation",
    "lookup_model": "nomad_gpustack.compile.estimation",
    "load_catalog": "nomad_gpustack.spec.loader",
    "load_deployment": "nomad_gpustack.spec.loader",
    "render_text": "nomad_gpustack.nomad.render",
}

if TYPE_CHECKING:
    from .compile.build import Compiled, build
    from .compile.estimation import estimate_document, lookup_model
    from .errors import InputError, NomadgsError
    from .nomad.render import render_text
    from .spec.catalog import Catalog
    from .spec.loader import load_catalog, load_deployment


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nomad_gpustack' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
