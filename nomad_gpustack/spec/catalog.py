"""The backend catalog: built-in backends plus the user's files, looked up by name as GPUStack does."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError, did_you_mean
from .backend import Backend
from .specfile import Sourced, validate
from .yamlsource import SourceMap, parse_yaml

CUSTOM = "Custom"  # GPUStack's pseudo-backend: the deployment brings image_name and run_command


def backends_from_document(data: Any, source: SourceMap) -> list[Sourced[Backend]]:
    """A file holds one backend (a mapping) or several (a list, the community catalog's format)."""
    if isinstance(data, list):
        found: list[Sourced[Backend]] = []
        errors: list[InputError] = []
        for index, item in enumerate(data):
            try:
                found.append(validate(Backend, item, source, (index,)))
            except InputError as exc:
                errors.append(exc)
        if errors:
            raise InputError.merge(errors)
        return found
    return [validate(Backend, data, source)]


def parse_backends(text: str, filename: str) -> list[Sourced[Backend]]:
    """Parse and validate the backends of one YAML text."""
    data, source = parse_yaml(text, filename)
    return backends_from_document(data, source)


@dataclass(frozen=True)
class Catalog:
    """Backends by name. Later additions replace earlier ones of the same name (case-insensitive)."""

    entries: dict[str, Sourced[Backend]] = field(default_factory=dict)

    def adding(self, backends: Iterable[Sourced[Backend]]) -> Catalog:
        entries = dict(self.entries)
        for backend in backends:
            entries[backend.spec.backend_name.lower()] = backend
        return Catalog(entries)

    def __iter__(self) -> Iterator[Sourced[Backend]]:
        return iter(sorted(self.entries.values(), key=lambda b: b.spec.backend_name.lower()))

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def names(self) -> list[str]:
        return [b.spec.backend_name for b in self]

    def find(self, name: str) -> Sourced[Backend] | None:
        return self.entries.get(name.lower())

    def closest(self, name: str) -> str | None:
        return did_you_mean(name, [*self.names, CUSTOM])
