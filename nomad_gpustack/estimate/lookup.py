"""Find a deployment's model metadata for the estimate: `--model PATH`, the deployment's own local path, or
the Hugging Face Hub and its cache. The shell calls this; the compiler gets the result as data.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, Problem
from ..spec.base import AUTO
from .gpus import known_gpu_memory

if TYPE_CHECKING:
    from ..spec.deployment import Deployment
    from .facts import ModelLookup
    from .local import ReadStats

NO_METADATA_HINT = "give the model's path (--model PATH)"  # after every reason there is no metadata

# The readers (facts, hub, local) load inside the functions: `nomadgs render` of a deployment that asks
# for no estimate decides so here and must not pay for them.


def has_auto(deployment: Deployment) -> bool:
    """Whether the deployment leaves `gpus` or `gpu_memory` to the estimate."""
    return AUTO in (deployment.nomad.gpus, deployment.nomad.gpu_memory)


def can_check(deployment: Deployment) -> bool:
    """Whether explicit values can be checked: the GPUs' memory is stated, or known from the model name."""
    n = deployment.nomad
    return n.gpus != 0 and (isinstance(n.gpu_memory, int) or known_gpu_memory(n.gpu_model) is not None)


def lookup_model(
    deployment: Deployment,
    *,
    model_path: str | Path | None = None,
    cache_dir: Path | None = None,
    hub: bool = True,
    stats: ReadStats | None = None,
) -> ModelLookup:
    """The model's facts, or the reason there are none. A `model_path` that cannot be read raises
    ModelReadError (it is the user's input); everything else becomes a reason, which says what is missing,
    not what to do: the callers add that, in one wording (`NO_METADATA_HINT`).

    `hub`: whether the Hub may be asked (the cache is read either way).
    """
    from .facts import ModelLookup
    from .hub import HubUnavailable, HubUnreachable, hub_model
    from .local import ModelReadError, read_local_model

    if model_path is not None:
        return ModelLookup(read_local_model(model_path, stats))
    source = deployment.model_source
    if source == "local_path" and deployment.local_path:
        path = Path(deployment.local_path)
        if not path.is_absolute() or not path.exists():
            return ModelLookup(None, f"{deployment.local_path} is not on this machine")
        try:
            return ModelLookup(read_local_model(path, stats))
        except ModelReadError as exc:
            return ModelLookup(None, str(exc))
    if source == "huggingface" and deployment.huggingface_repo_id:
        try:
            facts = hub_model(
                deployment.huggingface_repo_id, deployment.huggingface_filename, cache_dir=cache_dir, network=hub
            )
        except HubUnavailable as exc:
            return ModelLookup(None, str(exc), unreachable=isinstance(exc, HubUnreachable))
        return ModelLookup(facts)
    if source == "model_scope":
        return ModelLookup(None, "ModelScope models are not looked up")
    return ModelLookup(None, "the deployment names no model")


def metadata_for_compile(
    deployment: Deployment,
    *,
    model_path: str | Path | None,
    cache_dir: Path | None,
    hub: bool,
    model_field: str = "--model",
) -> ModelLookup | None:
    """The model's metadata a compile should use, or None when nothing asks for one.

    `auto` always looks (the Hub included). Explicit values are checked when `hub` (validate, submit, the
    Ansible module: with `model_path`, a local path, the cache or the Hub) or when `model_path` is given; a
    plain render looks nothing up, so its output never depends on the network or on a cache. A `model_path`
    that cannot be read is the user's bad input (InputError, naming `model_field`).
    """
    if not has_auto(deployment) and not hub and model_path is None:
        return None
    if not has_auto(deployment) and not can_check(deployment):
        return None
    from .local import ModelReadError

    try:
        return lookup_model(deployment, model_path=model_path, cache_dir=cache_dir, hub=True)
    except ModelReadError as exc:
        raise InputError(Problem(str(exc), field=model_field)) from None
