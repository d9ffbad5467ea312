"""Find a model's metadata for the estimate: `--model PATH`, a local path, or the Hugging Face Hub and its
cache. The shell calls this (through `compile.estimation`, which reads the deployment); the compiler gets
the result as data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .facts import ModelLookup
    from .local import ReadStats

NO_METADATA_HINT = "give the model's path (--model PATH)"  # after every reason there is no metadata

# The readers (facts, hub, local) load inside the function: `nomadgs render` of a deployment that asks
# for no estimate decides so before it calls here and must not pay for them (~14 ms, measured).


@dataclass(frozen=True)
class ModelSource:
    """Where a deployment says its model is, in plain values."""

    kind: str | None  # huggingface | model_scope | local_path; None: the deployment names no model
    repo: str | None = None  # the Hugging Face repository
    file: str | None = None  # one file of it (a GGUF file), or None for the repository
    local_path: str | None = None


def find_model(
    source: ModelSource,
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
    from .facts import ModelLookup  # the readers: see the note above
    from .hub import HubUnavailable, HubUnreachable, hub_model
    from .local import ModelReadError, read_local_model

    if model_path is not None:
        return ModelLookup(read_local_model(model_path, stats))
    if source.kind == "local_path" and source.local_path:
        path = Path(source.local_path)
        if not path.is_absolute() or not path.exists():
            return ModelLookup(None, f"{source.local_path} is not on this machine")
        try:
            return ModelLookup(read_local_model(path, stats))
        except ModelReadError as exc:
            return ModelLookup(None, str(exc))
    if source.kind == "huggingface" and source.repo:
        try:
            facts = hub_model(source.repo, source.file, cache_dir=cache_dir, network=hub)
        except HubUnavailable as exc:
            return ModelLookup(None, str(exc), unreachable=isinstance(exc, HubUnreachable))
        return ModelLookup(facts)
    if source.kind == "model_scope":
        return ModelLookup(None, "ModelScope models are not looked up")
    return ModelLookup(None, "the deployment names no model")
