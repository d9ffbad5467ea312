"""What GPUStack would do differently with a backend file: worth knowing, not errors (`nomadgs backends validate`)."""

from __future__ import annotations

from ..spec.backend import BUILT_IN_NAMES, Backend
from ..spec.specfile import Sourced
from .resolve import resolve_version
from .templating import PLACEHOLDERS, placeholders_in


def backend_notes(backend: Sourced[Backend]) -> list[str]:
    """Things GPUStack would do differently with this file: worth knowing, not errors."""
    return [*_version_notes(backend.spec), *_placeholder_notes(backend.spec)]


def _version_notes(spec: Backend) -> list[str]:
    """The backend's name, and how GPUStack picks among its versions."""
    notes: list[str] = []
    name = spec.backend_name
    if not name.endswith("-custom") and name.lower() not in {n.lower() for n in BUILT_IN_NAMES}:
        notes.append(
            f"GPUStack's YAML import only takes custom backend names ending in '-custom' ('{name}' does not); "
            "nomadgs accepts it"
        )
    if spec.default_version and spec.default_version not in spec.versions:
        notes.append(
            f"default_version '{spec.default_version}' is not one of the versions; "
            f"the newest version '{resolve_version(spec, None)}' is used, as GPUStack does"
        )
    if spec.default_version in spec.versions and spec.disabled(spec.default_version or ""):
        newest = resolve_version(spec, None)
        notes.append(
            f"default_version '{spec.default_version}' is in disabled_versions; "
            + (f"'{newest}', the newest other version, is used" if newest else "no version is left to choose")
        )
    for hidden in spec.disabled_versions or ():
        if hidden not in spec.versions:
            notes.append(f"disabled_versions names '{hidden}', which is not one of the versions")
    return notes


def _placeholder_notes(spec: Backend) -> list[str]:
    """Placeholders of the commands that are neither GPUStack's nor set in the env: each deployment must set them."""
    notes: list[str] = []
    env = set(spec.default_env or {})
    for version, config in spec.versions.items():
        texts = [
            config.run_command or spec.default_run_command or "",
            config.entrypoint or spec.default_entrypoint or "",
        ]
        version_env = env | set(config.env or {})
        for text in texts:
            for placeholder in placeholders_in(text):
                if placeholder not in PLACEHOLDERS and placeholder not in version_env:
                    notes.append(
                        f"version '{version}': {{{{{placeholder}}}}} is not a GPUStack placeholder; "
                        "each deployment must set it in env"
                    )
    return notes
