"""Small helpers shared by the tests: run the real CLI, build deployments in memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from nomad_gpustack.compile.build import Compiled, build
from nomad_gpustack.contract.metadata import META_IDLE_AFTER
from nomad_gpustack.spec.backend import Backend
from nomad_gpustack.spec.catalog import Catalog, parse_backends
from nomad_gpustack.spec.deployment import Deployment
from nomad_gpustack.spec.loader import load_catalog
from nomad_gpustack.spec.specfile import Sourced, validate
from nomad_gpustack.spec.yamlsource import parse_yaml

from .components import ROOT


@dataclass
class Run:
    code: int
    out: str
    err: str


def _env(env: dict[str, str] | None) -> dict[str, str]:
    """This process's environment without NOMAD_*/CONSUL_* settings, plus `env`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_"))}
    full_env.update(env or {})
    return full_env


def nomadgs(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None, stdin: str | None = None,
            timeout: float = 120) -> Run:  # fmt: skip
    """Run the real `nomadgs` command (as a separate process) and capture its result."""
    proc = subprocess.run(
        [sys.executable, "-m", "nomad_gpustack", *map(str, args)],
        capture_output=True,
        text=True,
        env=_env(env),
        cwd=cwd or ROOT,
        input=stdin,
        timeout=timeout,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def start_nomadgs(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start the real `nomadgs` command in the background, its stdout and stderr piped as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "nomad_gpustack", *map(str, args)],
        env=_env(env),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def deployment(data: dict[str, Any] | str, filename: str = "deploy.yaml") -> Sourced[Deployment]:
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    parsed, source = parse_yaml(text, filename)
    return validate(Deployment, parsed, source)


def backends(text: str, filename: str = "backend.yaml") -> list[Sourced[Backend]]:
    return parse_backends(text, filename)


def catalog_with(*texts: str) -> Catalog:
    catalog = load_catalog()
    for i, text in enumerate(texts):
        catalog = catalog.adding(backends(text, f"backend{i}.yaml"))
    return catalog


def compile_yaml(data: dict[str, Any] | str, *backend_texts: str) -> Compiled:
    return build(deployment(data), catalog_with(*backend_texts))


def sleepy_job(deployment_yaml: str, idle_after: str, count: int = 0) -> dict[str, Any]:
    """The deployment with `nomad.scaling: {min: 0, max: 1, idle_after: 2m}` and `replicas: count`, compiled: a job
    the gateway scales to zero and back. The key refuses less than 2m (scrape and Autoscaler delays); a test that
    cannot wait that long shortens the compiled idle time to `idle_after`."""
    data = yaml.safe_load(deployment_yaml)
    data["replicas"] = count
    data["nomad"] = {**(data.get("nomad") or {}), "scaling": {"min": 0, "max": 1, "idle_after": "2m"}}
    job: dict[str, Any] = compile_yaml(data).job  # type: ignore[assignment]
    assert job["Meta"][META_IDLE_AFTER] == "2m" and job["TaskGroups"][0]["Count"] == count
    job["Meta"][META_IDLE_AFTER] = idle_after
    return job


def main_task(compiled: Compiled) -> Any:
    return compiled.job["TaskGroups"][0]["Tasks"][-1]


PAGE = """<!DOCTYPE html>
<html>
<head><title>Welcome</title></head>
<body>
<h1>It works</h1>
<p>This is not the page you are looking for.</p>
</body>
</html>
"""


@contextmanager
def web_page(status: int = 404) -> Iterator[str]:
    """A web server on 127.0.0.1 that answers every request with an HTML page and `status` (a wrong address)."""
    with answering(status, "text/html; charset=utf-8", PAGE) as address:
        yield address


@contextmanager
def answering(status: int, content_type: str, body: str) -> Iterator[str]:
    """A server on 127.0.0.1 that answers every request, whatever its method and path, with `status`, this
    Content-Type and `body`: another service at the address (a JSON API of another shape, a web page)."""

    class Answer(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))  # a request's body, read but not used
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def static_files(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """`python3 -m http.server` in this process: the standard library's file server on 127.0.0.1, serving
    `folder` (404 pages for what is not there, 501 for PUT and POST). Yields its address and the requests it
    received, as `METHOD /path`."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler

    received: list[str] = []

    class Files(SimpleHTTPRequestHandler):
        def parse_request(self) -> bool:
            parsed = super().parse_request()
            if parsed:  # recorded before the answer is sent: whoever got an answer finds its request here
                received.append(f"{self.command} {self.path.split('?')[0]}")
            return parsed

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Files, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def http_json(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 60) -> tuple[int, Any]:
    """One JSON request with the standard library; (status, decoded body), also for error statuses."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll a condition of the test every 0.2 s; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def running_gateway(env: dict[str, str], model: str, log: Path | None = None) -> Iterator[str]:
    """`nomadgs gateway` on a free port of 127.0.0.1, once it routes `model`; yields its OpenAI base URL.
    `log`: a file for the gateway's log (default: discarded)."""
    from .components import free_port, wait_http

    port = free_port()
    with open(log or os.devnull, "wb") as sink:  # a file, not a pipe nobody drains, which could block it
        gateway = subprocess.Popen(
            [sys.executable, "-m", "nomad_gpustack", "gateway", "--listen", f"127.0.0.1:{port}"],
            env=_env(env),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        url = f"http://127.0.0.1:{port}/v1"
        wait_http(f"{url}/models", timeout=30)
        wait_until(
            lambda: any(m["id"] == model for m in http_json("GET", f"{url}/models")[1]["data"]),
            30,
            f"the gateway to list {model}",
        )
        yield url
    finally:
        gateway.terminate()
        gateway.wait(timeout=10)
