"""Shared fixtures: real Consul and llama.cpp components, started and stopped by the tests on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support.components import (
    ROOT,
    ComponentUnavailable,
    ConsulAgent,
    ensure_xllamacpp,
    find_consul,
    free_port,
    gguf_path,
    llama_command,
    require_components,
    wait_http,
)

SHARED_BACKENDS = ROOT.parent / "shared" / "gpustack-backends"


def unavailable(reason: str) -> None:
    """Skip loudly, or fail when CI demands every component."""
    message = f"COMPONENT UNAVAILABLE, TEST SKIPPED: {reason}"
    if require_components():
        pytest.fail(message + " (NOMADGS_REQUIRE_COMPONENTS is set)")
    warnings.warn(message, stacklevel=2)
    sys.stderr.write(f"\n*** {message} ***\n")
    pytest.skip(message)


@pytest.fixture(scope="session", autouse=True)
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The command line's cache folder (the validated built-in catalog) in the session's temporary folder, not
    the user's; commands run as processes inherit it."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("cache-home")
        patch.setenv("XDG_CACHE_HOME", str(folder))
        # No test reaches the real Hugging Face Hub; the Hub's tests start a stand-in and lift this.
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.delenv("HF_ENDPOINT", raising=False)
        patch.delenv("HF_TOKEN", raising=False)
        yield folder


@pytest.fixture(scope="session")
def consul_binary() -> str:
    try:
        return find_consul()
    except ComponentUnavailable as exc:
        unavailable(str(exc))
        raise


@pytest.fixture(scope="session")
def consul(consul_binary: str) -> Iterator[ConsulAgent]:
    """A real Consul 1.8.7 dev agent, for the whole session."""
    try:
        agent = ConsulAgent(consul_binary).start()
    except ComponentUnavailable as exc:
        unavailable(str(exc))
        raise
    yield agent
    agent.stop()


@pytest.fixture(scope="session")
def smollm2_gguf() -> str:
    try:
        ensure_xllamacpp()
        return gguf_path()
    except ComponentUnavailable as exc:
        unavailable(str(exc))
        raise


@pytest.fixture
def llama_server(smollm2_gguf: str) -> Iterator[str]:
    """A real llama.cpp server (xllamacpp + SmolLM2-135M) on 127.0.0.1; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        llama_command(port, model=smollm2_gguf), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/health", timeout=60)
    except TimeoutError as exc:
        process.kill()
        unavailable(f"the llama.cpp server did not start: {exc}")
    yield base
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def shared_backends() -> Path:
    if not SHARED_BACKENDS.is_dir():
        pytest.fail(f"{SHARED_BACKENDS} is missing: the real GPUStack backend files must sit beside the checkout")
    return SHARED_BACKENDS
