"""The estimate's errors are in the one error tree (errors.py): shown in words with their exit code, never as a
traceback, and told apart from Python's own ValueError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import nomad_gpustack.estimate
from nomad_gpustack.errors import EXIT_BAD_INPUT, EXIT_CONNECTION, EXIT_FAILURE, EstimateError, UnreachableError
from nomad_gpustack.estimate.hub import HubUnavailable, HubUnreachable, NotFound
from nomad_gpustack.estimate.local import ModelReadError, read_local_model
from nomad_gpustack.estimate.plan import NoFit


def test_every_error_the_estimate_defines_is_an_estimate_error() -> None:
    defined = []
    for info in pkgutil.iter_modules(nomad_gpustack.estimate.__path__):
        module = importlib.import_module(f"nomad_gpustack.estimate.{info.name}")
        defined += [
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, BaseException) and cls.__module__ == module.__name__
        ]
    assert len(defined) >= 8  # gguf, safetensors, facts, local, plan, and the three of hub
    assert [cls.__name__ for cls in defined if not issubclass(cls, EstimateError)] == []
    assert [cls.__name__ for cls in defined if issubclass(cls, ValueError)] == []


def test_exit_codes_follow_the_cause() -> None:
    assert NoFit("x").exit_code == HubUnavailable("x").exit_code == NotFound("x").exit_code == EXIT_FAILURE
    assert ModelReadError("x").exit_code == EXIT_BAD_INPUT  # a --model path: the user's input
    unreachable = HubUnreachable("x")
    assert isinstance(unreachable, UnreachableError) and isinstance(unreachable, HubUnavailable)
    assert unreachable.exit_code == EXIT_CONNECTION


def test_a_damaged_header_is_said_with_its_path(tmp_path: Path) -> None:
    """The readers' own errors (no longer ValueErrors) still reach the user as the path's ModelReadError."""
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + b"\x03\x00\x00\x00")  # version 3, then the header ends
    with pytest.raises(ModelReadError, match=r"model\.gguf: the file ends inside its header"):
        read_local_model(path)
