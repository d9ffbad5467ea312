"""Benchmark `nomadgs submit` to healthy on real containers (end-to-end case 1: the built-in llama.cpp backend,
SmolLM2-135M from the models host volume), split into its phases, against the same server started by a plain
`docker run` in the same run.

Phases of one submit, measured from the moment `nomadgs submit` is started:
  allocation placed the double placed the allocation (its CreateTime)
  container create  the docker driver's create + start of the container (docker-py)
  model load        llama-server's own clock, process start → "listening on" (from its log line)
  first passing     Consul's check on /v1/models first reports passing
  healthy           Nomad's deployment health: passing for min_healthy_time (10 s in compiled jobs)
  submit exit       `nomadgs submit` exits 0
Baseline: `docker run -d --network host ... llama-server` → GET /health answers 200 (polled every 20 ms).

Prints figures; asserts nothing. Needs a Docker engine and the images of docker/build-local-images.sh.
Run: .venv/bin/python bench/docker_bench.py [--runs 3]
The Nomad side is the HTTP double in tests/ (no Nomad binary exists here).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.components import GGUF_NAME, free_port, gguf_path, wait_http  # noqa: E402
from tests.support.containers import LLAMA_IMAGE, ConsulContainer, docker_client, require_images  # noqa: E402
from tests.support.helpers import nomadgs  # noqa: E402
from tests.support.nomad_double import LocalClient, NomadDouble  # noqa: E402
from tests.support.nomad_double.docker_driver import ContainerHandle, DockerDriver, StartRequest  # noqa: E402

DEPLOYMENT = f"""\
name: smollm2
source: local_path
local_path: {GGUF_NAME}
backend: llama.cpp
backend_version: cpu
backend_parameters: ["--host 127.0.0.1", "--threads 2"]
nomad:
  cpu: 1000
  memory: 1 GiB
  check_interval: 1s
  check_timeout: 1s
"""
_LLAMA_CLOCK = re.compile(r"^(\d+)\.(\d+)\.(\d+)\.(\d+) .*listening on", re.M)


class TimedDriver(DockerDriver):
    """The double's docker driver, noting when a container's create began and its start returned."""

    def __init__(self) -> None:
        super().__init__()
        self.create_began: float | None = None
        self.started: float | None = None

    def start(self, request: StartRequest) -> ContainerHandle:
        self.create_began = time.monotonic()
        handle = super().start(request)
        self.started = time.monotonic()
        return handle


def first_passing(consul: str, service: str, found: dict[str, float], stop: threading.Event) -> None:
    """Follow the service's checks with blocking queries; note when one first reports passing."""
    index = "0"
    while not stop.is_set():
        try:
            url = f"{consul}/v1/health/checks/{service}?index={index}&wait=2s"
            with urllib.request.urlopen(url, timeout=5) as response:
                index = response.headers.get("X-Consul-Index", index)
                if any(c["Status"] == "passing" for c in json.loads(response.read())):
                    found.setdefault("passing", time.monotonic())
                    return
        except OSError:
            time.sleep(0.05)


def llama_load_seconds(log: str) -> float:
    """llama-server's own timestamp (minutes.seconds.millis.micros since start) of its "listening on" line."""
    match = _LLAMA_CLOCK.search(log)
    if match is None:
        return float("nan")
    minutes, seconds, millis, micros = (int(g) for g in match.groups())
    return minutes * 60 + seconds + millis / 1e3 + micros / 1e6


def one_submit(consul: ConsulContainer, models: Path, work: Path) -> dict[str, float]:
    driver = TimedDriver()
    client = LocalClient(consul.address, work / "client", host_volumes={"models": models}, docker=driver)
    work.mkdir(parents=True)
    deployment = work / "smollm2.yaml"
    deployment.write_text(DEPLOYMENT)
    found: dict[str, float] = {}
    stop = threading.Event()
    with NomadDouble(client=client) as nomad:
        env = {"NOMAD_ADDR": nomad.address, "CONSUL_HTTP_ADDR": consul.address}
        watcher = threading.Thread(target=first_passing, args=(consul.address, "smollm2", found, stop), daemon=True)
        watcher.start()
        began = time.monotonic()
        run = nomadgs("submit", deployment, "--timeout", "5m", "--output", "json", env=env, timeout=400)
        ended = time.monotonic()
        stop.set()
        if run.code != 0:
            raise SystemExit(f"submit failed ({run.code}): {run.err[-2000:]}")
        alloc = next(a for a in nomad.allocations.values() if a["JobID"] == "smollm2")
        registered = min(a["CreateTime"] for a in nomad.allocations.values()) / 1e9
        healthy = alloc["DeploymentStatus"]["Timestamp"]
        logs = nomad.cluster.state.logs[(alloc["ID"], "llama-cpp", "stderr")].decode(errors="replace")
        nomadgs("stop", "smollm2", "--purge", env=env)
    assert driver.create_began is not None and driver.started is not None
    wall_offset = time.time() - time.monotonic()  # allocation timestamps are wall-clock
    return {
        "allocation placed": registered - wall_offset - began,
        "container create": driver.started - driver.create_began,
        "container started at": driver.started - began,
        "model load (llama-server clock)": llama_load_seconds(logs),
        "first passing check": found.get("passing", float("nan")) - began,
        "healthy": _rfc3339_to_monotonic(healthy, wall_offset) - began,
        "submit exit": ended - began,
    }


def _rfc3339_to_monotonic(stamp: str, wall_offset: float) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - wall_offset


def one_docker_run(models: Path) -> dict[str, float]:
    port = free_port()
    began = time.monotonic()
    container_id = subprocess.run(
        ["docker", "run", "-d", "--pull", "never", "--network", "host", "-v", f"{models}:/models:ro", LLAMA_IMAGE,
         "-m", f"/models/{GGUF_NAME}", "--host", "127.0.0.1", "--port", str(port), "--threads", "2"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    returned = time.monotonic()
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=120)
        healthy = time.monotonic()
        logs = subprocess.run(["docker", "logs", container_id], capture_output=True, text=True).stderr
    finally:
        subprocess.run(["docker", "rm", "-f", container_id], capture_output=True)
    return {
        "docker run returned": returned - began,
        "model load (llama-server clock)": llama_load_seconds(logs),
        "/health 200": healthy - began,
    }


def summarize(title: str, runs: list[dict[str, Any]]) -> None:
    print(title)
    for key in runs[0]:
        values = [r[key] for r in runs]
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {key:<34} median {statistics.median(values):7.2f} s   ({shown})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    engine = docker_client()
    require_images(engine, LLAMA_IMAGE)
    storage = engine.info().get("Driver")
    work = Path(tempfile.mkdtemp(prefix="docker-bench-"))
    models = work / "models"
    models.mkdir()
    shutil.copyfile(gguf_path(), models / GGUF_NAME)
    consul = ConsulContainer().start()
    try:
        submits, plain = [], []
        for i in range(args.runs):
            plain.append(one_docker_run(models))
            submits.append(one_submit(consul, models, work / f"run{i}"))
    finally:
        consul.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"engine storage driver: {storage}; {args.runs} runs, interleaved")
    summarize("nomadgs submit → healthy (Nomad double + docker driver + real Consul):", submits)
    summarize("plain docker run → /health 200:", plain)


if __name__ == "__main__":
    main()
