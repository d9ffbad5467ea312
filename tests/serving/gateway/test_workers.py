"""`nomadgs gateway --workers N`: several processes on one socket, their metrics summed, a dead one started
again, and SIGTERM draining what is in flight."""

from __future__ import annotations

import http.client
import json
import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict

from nomad_gpustack.cli import main
from nomad_gpustack.errors import InputError
from nomad_gpustack.serving.gateway import DRAIN_TIMEOUT, worker_count

from ...support.components import ConsulAgent, free_port
from ..fakes import FakeBackend, answers
from ..test_discovery import ConsulServices, unique, wait_until


def test_worker_count() -> None:
    assert worker_count("1") == 1
    assert worker_count("4") == 4
    assert worker_count("auto") == worker_count("AUTO") == len(os.sched_getaffinity(0))
    for bad in ("0", "-2", "many", "1.5", ""):
        with pytest.raises(InputError, match="is not a number of processes"):
            worker_count(bad)


def test_gateway_command_refuses_bad_workers_and_drain(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gateway", "--workers", "0"]) == 2
    assert "--workers '0' is not a number of processes" in capsys.readouterr().err
    assert main(["gateway", "--drain-timeout", "soon"]) == 2
    assert "--drain-timeout: 'soon' is not a duration" in capsys.readouterr().err


def test_drain_timeout_default_is_the_commands() -> None:
    from nomad_gpustack.cli.endpoint_cmds import gateway

    option = next(p for p in gateway.params if p.name == "drain_timeout")
    assert option.default == "30s" and DRAIN_TIMEOUT == 30.0


@dataclass
class Running:
    process: subprocess.Popen[str]
    port: int
    log: Path
    tmp: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> set[int]:
        """The pids of the gateway's worker processes (its children)."""
        found = set()
        for stat_file in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat_file.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:
                found.add(int(stat_file.parent.name))
        return found

    def metrics_dir(self) -> Path:
        (directory,) = self.tmp.glob("nomadgs-gateway-metrics-*")
        return directory

    def requests_by_pid(self) -> dict[int, float]:
        """Requests each worker counted, read from its own file of prometheus_client's multiprocess mode."""
        counts: dict[int, float] = {}
        for path in self.metrics_dir().glob("counter_*.db"):
            pid = int(path.stem.split("_")[1])
            for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
                if json.loads(key)[1] == "nomadgs_gateway_requests_total":
                    counts[pid] = counts.get(pid, 0) + value
        return counts

    def logged(self) -> str:
        return self.log.read_text()


@contextmanager
def running(consul: ConsulAgent, tmp_path: Path, *options: str) -> Iterator[Running]:
    port = free_port()
    log = tmp_path / "gateway.log"
    env = {**os.environ, "TMPDIR": str(tmp_path), "NO_COLOR": "1"}
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "nomad_gpustack", "gateway", "--listen", f"127.0.0.1:{port}",
             "--consul-address", consul.address, *options],
            env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    try:
        yield Running(process, port, log, tmp_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def post(port: int, body: bytes) -> int:
    """One request on a connection of its own (so the kernel hands it to any worker)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def requests_total(text: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith("nomadgs_gateway_requests_total{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def test_workers_share_the_socket_and_their_metrics(
    consul: ConsulAgent, backends: Callable[..., FakeBackend], tmp_path: Path
) -> None:
    model = unique("workers")
    fake = backends("W")
    registry = ConsulServices(consul)
    registry.register(model, fake.port, status="passing")
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    try:
        with running(consul, tmp_path, "--workers", "2") as gateway, httpx.Client(base_url=gateway.url) as client:
            wait_until(lambda: answers(client, "/health"), 20, "the gateway serving")
            wait_until(lambda: len(gateway.workers()) == 2, 10, "two workers")
            directory = gateway.metrics_dir()
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700  # private to the gateway's user
            # Every worker follows Consul on its own: wait for the model in both before counting.
            sent = 0
            with ThreadPoolExecutor(8) as pool:
                for _ in range(50):  # rounds of 16 connections until both workers have taken some
                    statuses = list(pool.map(lambda _: post(gateway.port, body), range(16)))
                    sent += len(statuses)
                    assert set(statuses) <= {200, 404}
                    by_pid = gateway.requests_by_pid()
                    if len(by_pid) == 2 and 404 not in statuses:
                        break
            # A request is counted once its answer is sent: wait for the last ones.
            wait_until(lambda: sum(gateway.requests_by_pid().values()) == sent, 10, "every request counted")
            by_pid = gateway.requests_by_pid()
            assert set(by_pid) == gateway.workers() and all(count > 0 for count in by_pid.values())
            # /metrics, from whichever worker answers it, is the sum of every worker's.
            for _ in range(4):
                assert requests_total(client.get("/metrics").text) == sent == sum(by_pid.values())
            assert "process_cpu_seconds_total" not in client.get("/metrics").text  # one worker's, not the gateway's
            assert 'nomadgs_gateway_instances{model="' + model + '"} 1.0' in client.get("/metrics").text

            # A worker that dies is started again, and the counts it had stay in the sum.
            victim = min(gateway.workers())
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: "was killed by signal 9" in gateway.logged(), 10, "the death logged")
            wait_until(lambda: len(gateway.workers() - {victim}) == 2, 10, "a new worker")
            assert f"(pid {victim}) was killed by signal 9 after" in gateway.logged()
            assert "started again in 0.5s" in gateway.logged()
            wait_until(lambda: post(gateway.port, body) == 200, 10, "served")
            assert requests_total(client.get("/metrics").text) >= sent + 1
            gateway.process.send_signal(signal.SIGTERM)
            assert gateway.process.wait(30) == 0, gateway.logged()
            assert not directory.exists()  # cleaned at exit
            assert "Traceback" not in gateway.logged()
    finally:
        registry.close()


def test_sigterm_drains_a_stream_in_flight(
    consul: ConsulAgent, backends: Callable[..., FakeBackend], tmp_path: Path
) -> None:
    """SIGTERM to the gateway: no new connection, the stream in flight runs to its end, then exit 0."""
    model = unique("drain")
    gate = threading.Event()
    fake = backends("D", gate=gate, answer="all the rest")
    registry = ConsulServices(consul)
    registry.register(model, fake.port, status="passing")
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    try:
        with running(consul, tmp_path, "--workers", "2", "--log-level", "info") as gateway:
            with httpx.Client(base_url=gateway.url, timeout=30) as client:
                wait_until(lambda: answers(client, "/health"), 20, "the gateway serving")
                wait_until(lambda: model in client.get("/v1/models").text, 10, "the model listed")
                with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    chunks = response.iter_text()
                    assert "hello" in next(chunks)
                    gateway.process.send_signal(signal.SIGTERM)
                    # Every worker has stopped accepting and waits for its connections: then let the stream go on.
                    wait_until(lambda: gateway.logged().count("Waiting for connections to close") >= 1, 10, "drain")
                    wait_until(lambda: not answers_at(gateway.port), 10, "new connections refused")
                    gate.set()
                    rest = "".join(chunks)
                assert "all" in rest and "rest" in rest and "[DONE]" in rest
            assert gateway.process.wait(30) == 0, gateway.logged()
    finally:
        registry.close()


def answers_at(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_single_process_sigterm_exits_zero_after_draining(
    consul: ConsulAgent, backends: Callable[..., FakeBackend], tmp_path: Path
) -> None:
    """Without --workers too: SIGTERM (how Nomad and Docker stop it) drains, then exit 0, not death by signal."""
    model = unique("drain1")
    gate = threading.Event()
    fake = backends("S", gate=gate, answer="the end")
    registry = ConsulServices(consul)
    registry.register(model, fake.port, status="passing")
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    try:
        with running(consul, tmp_path, "--log-level", "info") as gateway:
            with httpx.Client(base_url=gateway.url, timeout=30) as client:
                wait_until(lambda: answers(client, "/health"), 20, "the gateway serving")
                wait_until(lambda: model in client.get("/v1/models").text, 10, "the model listed")
                with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    chunks = response.iter_text()
                    assert "hello" in next(chunks)
                    gateway.process.send_signal(signal.SIGTERM)
                    wait_until(lambda: "Waiting for connections to close" in gateway.logged(), 10, "drain")
                    gate.set()
                    rest = "".join(chunks)
                assert "the" in rest and "end" in rest and "[DONE]" in rest
            assert gateway.process.wait(30) == 0, gateway.logged()
            assert "gateway stopped" in gateway.logged()
    finally:
        registry.close()


def test_workers_that_cannot_start_end_the_gateway(tmp_path: Path) -> None:
    """Consul unreachable: each worker fails before any serves; the gateway ends with the error's code."""
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "nomad_gpustack", "gateway", "--listen", f"127.0.0.1:{port}", "--workers", "2",
         "--consul-address", f"127.0.0.1:{free_port()}"],
        env={**os.environ, "TMPDIR": str(tmp_path)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 5, done.stderr
    assert "cannot reach Consul" in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.glob("nomadgs-gateway-metrics-*"))


def test_health_answers_once_the_routing_table_was_read() -> None:
    """GET /health, the check of the gateway's Consul service: 503 until the gateway has started (its source
    read once), 200 then."""
    from starlette.testclient import TestClient

    from nomad_gpustack.serving.gateway import Gateway, StaticSource

    app = Gateway(StaticSource()).asgi()
    assert TestClient(app).get("/health").status_code == 503  # no lifespan: never started
    with TestClient(app) as client:
        assert client.get("/health").json() == {"status": "ok"}
