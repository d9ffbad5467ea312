"""Benchmark a wake-up from zero (end-to-end: the double's docker driver, a real llama.cpp container, the real
Consul, `nomadgs gateway` with scale to zero): a model at 0 replicas gets one streamed chat request, and the time
from the request to each step is measured:

  scale call    the gateway's POST /v1/job/:id/scale reaches Nomad
  placement     the allocation is created (its CreateTime)
  container     the container has started (Docker's State.StartedAt)
  healthy       Consul's check of the instance passes (seen by a blocking query on Consul's health endpoint)
  first byte    the first chunk of the answer reaches the client

Then no traffic until the gateway scales the model back to 0 (idle_after 5s) and the container is gone, and the
next run. Nomad's clock runs in real time here, so its timestamps compare with the wall clock. Prints the median,
min and max of each step over the runs; asserts nothing.
Run: .venv/bin/python bench/wake_bench.py [--runs N]
The Nomad side is the HTTP double in tests/ (no Nomad binary exists here).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.components import GGUF_NAME, gguf_path  # noqa: E402
from tests.support.containers import LLAMA_IMAGE, ConsulContainer, docker_client, require_images  # noqa: E402
from tests.support.helpers import http_json, running_gateway, wait_until  # noqa: E402
from tests.support.nomad_double import LocalClient, NomadDouble  # noqa: E402
from tests.support.nomad_double.docker_driver import LABEL_ALLOC_ID  # noqa: E402
from tests.test_e2e_wake import MODEL, sleepy_job  # noqa: E402

STEPS = ("scale call", "placement", "container", "healthy", "first byte")


class ConsulHealth(threading.Thread):
    """Follows the model's instances in Consul with blocking queries; `passing_at` is when one first passed."""

    def __init__(self, consul: str) -> None:
        super().__init__(daemon=True)
        self.consul = consul
        self.passing_at: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        index = 0
        with httpx.Client(timeout=70) as http:
            while not self.stop.is_set() and self.passing_at is None:
                answer = http.get(f"{self.consul}/v1/health/service/{MODEL}", params={"index": index, "wait": "5s"})
                index = max(1, int(answer.headers.get("X-Consul-Index", "0") or 0))
                for entry in answer.json():
                    if all(c["Status"] == "passing" for c in entry["Checks"]):
                        self.passing_at = time.time()


def rfc3339(text: str) -> float:
    """Docker's StartedAt (nanoseconds, `Z`) as unix seconds."""
    head, _, rest = text.rstrip("Z").partition(".")
    fraction = float("0." + rest) if rest else 0.0
    return datetime.fromisoformat(head + "+00:00").timestamp() + fraction


def one_wake(nomad: NomadDouble, engine: object, consul: str, url: str) -> dict[str, float]:
    health = ConsulHealth(consul)
    health.start()
    start_wall, start_mono = time.time(), time.monotonic()
    first_byte = None
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8, "stream": True}
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=600) as response:
        for _ in response.iter_bytes():
            if first_byte is None:
                first_byte = time.time()
    health.stop.set()
    health.join(10)
    scale = next(
        r.time for r in nomad.requests if r.method == "POST" and r.path.endswith("/scale") and r.time >= start_mono
    )
    (alloc,) = [
        a for a in nomad.allocations.values() if a["JobID"] == MODEL and a["DesiredStatus"] == "run"
    ]  # fmt: skip
    (container,) = engine.containers.list(filters={"label": f"{LABEL_ALLOC_ID}={alloc['ID']}"})  # type: ignore[attr-defined]
    assert first_byte is not None and health.passing_at is not None
    return {
        "scale call": scale - start_mono,
        "placement": alloc["CreateTime"] / 1e9 - start_wall,
        "container": rfc3339(container.attrs["State"]["StartedAt"]) - start_wall,
        "healthy": health.passing_at - start_wall,
        "first byte": first_byte - start_wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    engine = docker_client()
    require_images(engine, LLAMA_IMAGE)
    work = Path(tempfile.mkdtemp(prefix="wake-bench-"))
    models = work / "models"
    models.mkdir()
    shutil.copyfile(gguf_path(), models / GGUF_NAME)
    consul = ConsulContainer().start()
    runs: list[dict[str, float]] = []
    try:
        client = LocalClient(consul.address, work / "client", host_volumes={"models": models})
        with NomadDouble(client=client) as nomad:
            status, answer = http_json("PUT", f"{nomad.address}/v1/jobs", {"Job": sleepy_job("5s")})
            assert status == 200, answer
            env = {"NOMAD_ADDR": nomad.address, "CONSUL_HTTP_ADDR": consul.address}
            with running_gateway(env, MODEL, log=work / "gateway.log") as url:
                for _ in range(args.runs):
                    runs.append(one_wake(nomad, engine, consul.address, url))

                    def asleep() -> bool:
                        job = nomad.jobs[f"default/{MODEL}"]
                        live = [a for a in nomad.allocations.values() if a["JobID"] == MODEL]
                        containers = [
                            c
                            for a in live
                            for c in engine.containers.list(all=True, filters={"label": f"{LABEL_ALLOC_ID}={a['ID']}"})
                        ]
                        return job["TaskGroups"][0]["Count"] == 0 and not containers

                    wait_until(asleep, 180, "the model to be scaled back to 0")
            http_json("DELETE", f"{nomad.address}/v1/job/{MODEL}?purge=true")
    finally:
        consul.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"wake-up from 0 replicas (llama.cpp SmolLM2 in a container), {len(runs)} runs; seconds from the request")
    print(f"  {'step':<11} {'median':>7} {'min':>7} {'max':>7}")
    for step in STEPS:
        values = [r[step] for r in runs]
        print(f"  {step:<11} {statistics.median(values):>7.2f} {min(values):>7.2f} {max(values):>7.2f}")


if __name__ == "__main__":
    main()
