"""Real components as Docker containers (testcontainers, on the local engine), and the engine checks the Docker
tests share.

Images are never pulled: they are built by docker/build-local-images.sh, and a missing one is reported with
that hint before anything asks a registry. Every container uses host networking and binds 127.0.0.1.
"""

from __future__ import annotations

import os

# Read by testcontainers at import time (docker-local.md, pitfalls 7 and 8): Ryuk's image would need a
# registry, and /.dockerenv on this machine would make testcontainers look for a container gateway.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
os.environ.setdefault("TC_HOST", "127.0.0.1")

import json
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .components import ROOT, ComponentUnavailable, free_port, wait_http

if TYPE_CHECKING:
    from docker import DockerClient
    from testcontainers.core.container import DockerContainer

BUILD_SCRIPT = "docker/build-local-images.sh"
BASE_IMAGE = "local/debian:bookworm-minbase"
LLAMA_IMAGE = "ghcr.io/ggml-org/llama.cpp:server"  # the built-in llama.cpp backend's cpu image, built locally
CONSUL_IMAGE = "local/consul:1.8.7"
DOWNLOADER_IMAGE = "local/nomadgs-downloader:hf-2.4.0"
TESTCONTAINERS_LABEL = "org.testcontainers=true"


def session_labels() -> list[str]:
    """Labels that mark the containers of this test session: testcontainers' session ID and the double's.
    Only these are checked for leftovers: other sessions may share the engine."""
    from testcontainers.core.labels import LABEL_SESSION_ID, SESSION_ID

    from .nomad_double.docker_driver import LABEL_DOUBLE, SESSION

    return [f"{LABEL_SESSION_ID}={SESSION_ID}", f"{LABEL_DOUBLE}={SESSION}"]


def docker_client() -> DockerClient:
    """A client of the local engine; ComponentUnavailable when none answers."""
    try:
        import docker

        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:
        raise ComponentUnavailable(
            f"no Docker engine answers ({exc.__class__.__name__}: {exc}); start one as the README's "
            "'Docker engine' section shows"
        ) from None
    return client


def require_images(client: DockerClient, *images: str) -> None:
    """ComponentUnavailable naming the images that are not built (they are never pulled)."""
    import docker.errors

    missing = []
    for image in images:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            missing.append(image)
    if missing:
        raise ComponentUnavailable(f"image(s) {', '.join(missing)} not built: run {BUILD_SCRIPT} (as root)")


def leftover_containers(client: DockerClient, label: str) -> list[str]:
    """Names of the containers (running or not) carrying `label` ("key=value")."""
    return [c.name or c.id or "?" for c in client.containers.list(all=True, filters={"label": label})]


def _container(image: str, command: list[str], read_only: dict[Path, str] | None = None) -> DockerContainer:
    """A testcontainers container on the host network; `read_only` maps host folders to container paths."""
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(image, command=command)  # type: ignore[arg-type]  # a list works (docker-py)
    for host, target in (read_only or {}).items():
        container.with_volume_mapping(str(host), target, "ro")
    # One with_kwargs call: it replaces earlier kwargs instead of merging (pitfall 10). `network=None` keeps
    # testcontainers from looking for a container network to join (it thinks it runs in one: /.dockerenv).
    kwargs: dict[str, Any] = {"network_mode": "host", "network": None}
    return container.with_kwargs(**kwargs)


@dataclass
class ConsulContainer:
    """A Consul 1.8.7 dev agent in a container, on loopback ports of its own."""

    http_port: int = field(default_factory=free_port)
    container: DockerContainer | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> ConsulContainer:
        serf_lan, serf_wan, server = (free_port() for _ in range(3))
        command = [
            "agent", "-dev", "-client", "127.0.0.1", "-bind", "127.0.0.1", "-log-level", "warn",
            "-http-port", str(self.http_port), "-dns-port", "-1", "-grpc-port", "-1",
            "-serf-lan-port", str(serf_lan), "-serf-wan-port", str(serf_wan), "-server-port", str(server),
        ]  # fmt: skip
        self.container = _container(CONSUL_IMAGE, command)
        self.container.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # HttpWaitStrategy cannot work with host networking (pitfall 9)
            try:
                with urllib.request.urlopen(f"{self.address}/v1/status/leader", timeout=1) as resp:
                    if json.loads(resp.read() or b'""'):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        logs = self.logs()
        self.stop()
        raise ComponentUnavailable(f"consul in a container elected no leader within 30s: {logs[-400:]}")

    def logs(self) -> str:
        if self.container is None:
            return ""
        out, err = self.container.get_logs()
        return (out + err).decode(errors="replace")

    def stop(self) -> None:
        if self.container is not None:
            self.container.stop()  # removes the container
            self.container = None


@dataclass
class LlamaContainer:
    """A real llama-server (Debian's llama.cpp-tools) serving one GGUF on 127.0.0.1."""

    model: Path
    alias: str = "smollm2-135m"
    port: int = field(default_factory=free_port)
    parallel: int | None = None  # slots (--parallel); None: llama-server's own choice
    metrics: bool = False  # --metrics: GET /metrics in Prometheus' format (else 501)
    container: DockerContainer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LlamaContainer:
        command = [
            "-m", f"/models/{self.model.name}", "--host", "127.0.0.1", "--port", str(self.port),
            "--alias", self.alias, "--ctx-size", "2048", "--threads", "2",
        ]  # fmt: skip
        if self.parallel is not None:
            command += ["--parallel", str(self.parallel)]
        if self.metrics:
            command.append("--metrics")
        self.container = _container(LLAMA_IMAGE, command, {self.model.parent: "/models"})
        self.container.start()
        try:
            wait_http(f"{self.base_url}/health", timeout=60)
        except TimeoutError as exc:
            out, err = self.container.get_logs()
            self.stop()
            raise ComponentUnavailable(f"llama-server did not start: {exc}: {(out + err).decode()[-400:]}") from None
        return self

    def stop(self) -> None:
        if self.container is not None:
            self.container.stop()
            self.container = None


__all__ = [
    "BASE_IMAGE",
    "CONSUL_IMAGE",
    "DOWNLOADER_IMAGE",
    "LLAMA_IMAGE",
    "ROOT",
    "TESTCONTAINERS_LABEL",
    "ConsulContainer",
    "LlamaContainer",
    "docker_client",
    "leftover_containers",
    "require_images",
    "session_labels",
]
