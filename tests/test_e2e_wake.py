"""Scale to zero and back, on real containers: a model at 0 replicas, `nomadgs gateway` (scale to zero on, as
NOMAD_ADDR is set) holds 20 concurrent chat requests, scales the group to 1 with one call, the double's docker
driver starts the llama.cpp container, Consul's check passes, and the 20 requests are answered; then, with no
traffic for `idle_after`, the gateway scales it to 0 and the container is removed.

The set-up is test_e2e_docker's (the double's docker driver, the local llama.cpp image, the real Consul), with
Nomad's clock SCALE times faster so the deployment the wake opens ends in a second or two (a scale-down waits
for it: Nomad blocks scaling during a deployment).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from .support.components import GGUF_NAME
from .support.helpers import http_json, running_gateway, wait_until
from .support.helpers import sleepy_job as helpers_sleepy_job
from .test_e2e_docker import LOOPBACK, NOMAD_BLOCK, Cluster, docker_cluster

if TYPE_CHECKING:
    from docker import DockerClient

pytestmark = pytest.mark.e2e

SCALE = 10.0  # Nomad's seconds per real second
MODEL = "smol-wake"
IDLE_AFTER = "5s"
DEPLOYMENT = f"""\
name: {MODEL}
source: local_path
local_path: {GGUF_NAME}
backend: llama.cpp
backend_version: cpu
backend_parameters: ["{LOOPBACK}", "--threads 2", "--parallel 4"]
""" + NOMAD_BLOCK.format(memory="1 GiB")


def sleepy_job(idle_after: str = IDLE_AFTER) -> dict[str, Any]:
    """The deployment with `nomad.scaling` at min 0 and no replica, compiled; its idle time shortened for the
    test."""
    return helpers_sleepy_job(DEPLOYMENT, idle_after)


def register(cluster: Cluster, job: dict[str, Any]) -> None:
    status, answer = http_json("PUT", f"{cluster.nomad.address}/v1/jobs", {"Job": job})
    assert status == 200, answer


def scale_calls(cluster: Cluster) -> list[dict[str, Any]]:
    return [
        json.loads(r.body)
        for r in cluster.nomad.requests
        if r.method in ("POST", "PUT") and r.path == f"/v1/job/{MODEL}/scale"
    ]


def group_count(cluster: Cluster) -> int:
    return int(cluster.nomad.jobs[f"default/{MODEL}"]["TaskGroups"][0]["Count"])


def model_checks(cluster: Cluster) -> list[str]:
    """The status of the model's own check on each of its Consul instances."""
    return [c["Status"] for i in cluster.consul_instances(MODEL) for c in i["Checks"] if c["ServiceName"] == MODEL]


def running_containers(cluster: Cluster) -> list[Any]:
    found = cluster.containers(MODEL)
    for container in found:
        container.reload()
    return [c for c in found if c.status == "running"]


def chat(url: str) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8}
    return httpx.post(f"{url}/chat/completions", json=body, timeout=300)


@pytest.fixture
def cluster(engine: DockerClient, consul: Any, smollm2_gguf: str, tmp_path: Path) -> Iterator[Cluster]:
    with docker_cluster(engine, consul, smollm2_gguf, tmp_path, time_scale=SCALE) as running:
        try:
            yield running
        finally:
            running.stop_and_purge(MODEL)


def test_a_model_at_zero_wakes_on_requests_and_sleeps_when_idle(cluster: Cluster, tmp_path: Path) -> None:
    register(cluster, sleepy_job())
    assert not cluster.containers(MODEL) and not cluster.consul_instances(MODEL)
    with running_gateway(cluster.env, MODEL, log=tmp_path / "gateway.log") as url:
        listed = {m["id"]: m["instances"] for m in httpx.get(f"{url}/models").json()["data"]}
        assert listed == {MODEL: 0}  # known through Nomad, though Consul has no instance

        # 20 requests at once: held, one scale call, the container starts, Consul's check passes, all answered.
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda _: chat(url), range(20)))
        assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers if a.status_code != 200]
        assert all(a.json()["choices"][0]["message"]["content"] for a in answers)
        (up,) = scale_calls(cluster)
        assert up["Count"] == 1 and up["Meta"]["nomadgs_reason"] == "request"
        assert len(running_containers(cluster)) == 1
        # Passing (the gateway routed to it): waited on, not read once, as a check run while the engine answered 20
        # requests at once on 2 cores can time out and read critical until its next run a second later.
        wait_until(lambda: model_checks(cluster) == ["passing"], 4, "the model's Consul check to read passing")
        metrics = httpx.get(url.removesuffix("/v1") + "/metrics").text
        assert f'nomadgs_gateway_scale_calls_total{{direction="up",model="{MODEL}",outcome="scaled"}} 1.0' in metrics

        # No traffic for idle_after: scaled to 0, the container stopped and removed, the service out of Consul.
        wait_until(lambda: group_count(cluster) == 0, 90, "the gateway to scale the idle model to 0")
        wait_until(lambda: not cluster.containers(MODEL), 60, "the container to be removed")
        wait_until(lambda: not cluster.consul_instances(MODEL), 30, "the instance to leave Consul")
        calls = scale_calls(cluster)
        assert [c["Count"] for c in calls] == [1, 0] and calls[1]["Meta"]["nomadgs_reason"] == "idle"
        listed = {m["id"]: m["instances"] for m in httpx.get(f"{url}/models").json()["data"]}
        assert listed == {MODEL: 0}
