"""Shared fixtures: real Consul and llama.cpp components, started and stopped by the tests on 127.0.0.1."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support.backend_files import CORPORA, SHARED_BACKENDS, BackendCorpus
from .support.components import (
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
from .support.nomad_double import NomadDouble
from .support.tls import Certs, make_certs


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
def terraform_binary() -> str:
    """`terraform`, whose `fmt` is the HCL formatter `nomad fmt` uses too."""
    found = shutil.which("terraform")
    if found is None:
        unavailable("terraform is not on PATH: rendered HCL is not checked against terraform fmt")
        raise AssertionError("unreachable")
    return found


@pytest.fixture(scope="session")
def shared_backends() -> Path:
    """GPUStack's published backend files: skipped loudly when absent (a clone alone), required in CI."""
    if not SHARED_BACKENDS.is_dir():
        unavailable(
            f"{SHARED_BACKENDS} is missing: GPUStack's backend files are not tested (put them beside the checkout "
            "or set NOMADGS_SHARED_BACKENDS; the project's own files in tests/data/backends are tested)"
        )
    return SHARED_BACKENDS


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA and a server certificate for `nomad.test` only."""
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_nomad(tls_certs: Certs) -> Iterator[NomadDouble]:
    """The Nomad double serving HTTPS with `tls_certs`."""
    with NomadDouble(tls=tls_certs.server_context()) as double:
        yield double


@pytest.fixture(params=list(CORPORA))
def backend_corpus(request: pytest.FixtureRequest) -> BackendCorpus:
    """Each folder of backend files: the project's own, and GPUStack's when present (see shared_backends)."""
    if request.param == "shared":
        request.getfixturevalue("shared_backends")
    return CORPORA[request.param]
