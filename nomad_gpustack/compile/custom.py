"""GPUStack's Custom backend, which has no backend file: what a deployment that uses it must and may say.

`nomadgs backends show Custom` prints this; the rules themselves are applied in `resolve` (image_name required,
the deployment's run_command, the framework from nomad.framework or the GPUs).
"""

from __future__ import annotations

from typing import Any

from ..contract.frameworks import FRAMEWORKS
from ..spec.catalog import CUSTOM
from .resolve import DEFAULT_HEALTH_CHECK_PATH
from .templating import PLACEHOLDERS


def custom_backend() -> dict[str, Any]:
    """The Custom backend described in the shape `backends show` prints a backend in."""
    return {
        "backend_name": CUSTOM,
        "built_in": True,
        "description": (
            "GPUStack's built-in Custom backend: no backend file and no versions; the deployment brings the "
            "image and the command. A deployment without `backend` uses it for a GGUF model file."
        ),
        "deployment_keys": {
            "image_name": "required: the container image that serves the model",
            "run_command": "the command inside the image; without it, the image's own command runs",
            "backend_parameters": "more arguments, appended to the command",
            "env": ("environment of the model server; GPUSTACK_MODEL_HEALTH_CHECK_PATH sets the health check path"),
            "nomad.framework": "the accelerator family (default: cuda when nomad.gpus is set, else cpu)",
        },
        "placeholders": [f"{{{{{name}}}}}" for name in PLACEHOLDERS],
        "frameworks": sorted(FRAMEWORKS),
        "health_check_path": DEFAULT_HEALTH_CHECK_PATH,
    }
