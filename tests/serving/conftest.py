"""Fixtures of the serving tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nomad_gpustack.serving.gateway import BackgroundServer

from .fakes import FakeBackend


@pytest.fixture
def backends() -> Iterator[Callable[..., FakeBackend]]:
    """Start fake backends on demand; all are stopped at the end of the test."""
    started: list[FakeBackend] = []

    def start(name: str, **options: Any) -> FakeBackend:
        backend = FakeBackend(name, **options)
        backend.server = BackgroundServer(backend.app()).start()
        started.append(backend)
        return backend

    yield start
    for backend in started:
        if backend.server is not None:
            backend.server.stop()
