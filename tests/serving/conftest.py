"""Fixtures of the serving tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nomad_gpustack.serving.gateway import BackgroundServer

from .fakes import FakeBackend, ProcessBackend


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


@pytest.fixture
def process_backends() -> Iterator[Callable[..., ProcessBackend]]:
    """Start fake backends in processes of their own on demand; all are killed at the end of the test."""
    started: list[ProcessBackend] = []

    def start(name: str, **options: Any) -> ProcessBackend:
        backend = ProcessBackend(name, **options)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.close()
