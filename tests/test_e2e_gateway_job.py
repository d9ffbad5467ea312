"""The gateway as a Nomad job, end to end on real containers: the job `nomadgs gateway-job` writes, run by the
Nomad double's docker driver in the nomadgs image (local/nomadgs:VERSION, built from this checkout's wheel by
docker/build-local-images.sh), its API keys from a Nomad Variable through its template, registered in the real
Consul with its /health check passing, routing a chat request to a llama.cpp model job running beside it.

The set-up is test_e2e_docker's (one client node, host networking on 127.0.0.1, the real Consul in a container).
The job is the command's, with this test's addresses: the Consul and the double on their loopback ports (the
container uses the host's network, so 127.0.0.1 is this machine), one replica (one node) and a free static port
instead of 8080. It is registered as `nomad job run` registers a job: `PUT /v1/jobs`.
"""

from __future__ import annotations

import json
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from nomad_gpustack.compile.gateway_job import IMAGE, JOB_ID, VARIABLES_PATH
from nomad_gpustack.contract.metadata import GATEWAY_SERVICE

from .conftest import unavailable
from .support.components import ROOT, ComponentUnavailable, free_port
from .support.containers import BUILD_SCRIPT, require_images
from .support.helpers import http_json, wait_until
from .test_e2e_docker import SMOLLM2, Cluster, docker_cluster

if TYPE_CHECKING:
    from docker import DockerClient

pytestmark = pytest.mark.e2e

MODEL = "smollm2-gw"
API_KEY = "sk-e2e-gateway-job-0123456789abcdef"


def image_sources_label() -> str:
    """The label build-local-images.sh gives the image: a digest of this checkout's sources (the same pipeline)."""
    pipeline = "cat pyproject.toml $(find nomad_gpustack -name '*.py' | sort) | sha256sum | cut -c1-16"
    return subprocess.run(["bash", "-c", pipeline], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def cluster(engine: DockerClient, consul: Any, smollm2_gguf: str, tmp_path: Path) -> Iterator[Cluster]:
    try:
        require_images(engine, IMAGE)
    except ComponentUnavailable as exc:
        unavailable(str(exc))
    built_from = engine.images.get(IMAGE).labels.get("nomadgs.sources")
    # .ci/run builds it from the clone just before the tests; on a shared engine the tag may hold another
    # checkout's build: said, not failed, so that one checkout's tests do not fail on another's image.
    if built_from != image_sources_label():
        message = f"{IMAGE} was built from other sources than this checkout's: run {BUILD_SCRIPT} nomadgs"
        warnings.warn(message, stacklevel=2)
    with docker_cluster(engine, consul, smollm2_gguf, tmp_path) as running:
        yield running


def passing(instances: list[dict[str, Any]]) -> bool:
    return bool(instances) and all(c["Status"] == "passing" for i in instances for c in i["Checks"])


def test_the_gateway_job_routes_a_chat_request_to_a_model_job(cluster: Cluster) -> None:
    nomad = cluster.nomad.address
    run, result = cluster.submit(cluster.write(f"{MODEL}.yaml", SMOLLM2.replace("name: smollm2", f"name: {MODEL}")))
    assert run.code == 0, run.err
    assert result["status"] == "succeeded"

    # The keys, where the job's template reads them: `nomad var put nomad/jobs/nomadgs-gateway api_keys=...`.
    status, _ = http_json("PUT", f"{nomad}/v1/var/{VARIABLES_PATH}", {"Items": {"api_keys": API_KEY}})
    assert status == 200

    port = free_port()
    run = cluster.nomadgs(
        "gateway-job", "--replicas", "1", "--port", str(port), "--consul-address", cluster.consul,
        "--nomad-address", nomad, "--output", cluster.files,
    )  # fmt: skip
    assert run.code == 0, run.err
    job_text = (cluster.files / f"{JOB_ID}.nomad.json").read_text()
    assert API_KEY not in job_text
    status, answer = http_json("PUT", f"{nomad}/v1/jobs", json.loads(job_text))
    assert status == 200, answer

    wait_until(lambda: passing(cluster.consul_instances(GATEWAY_SERVICE)), 90, "the gateway's check to pass")
    (instance,) = cluster.consul_instances(GATEWAY_SERVICE)
    assert (instance["Service"]["Address"], instance["Service"]["Port"]) == ("127.0.0.1", port)
    (check,) = [c for c in instance["Checks"] if c["ServiceName"] == GATEWAY_SERVICE]
    assert f"http://127.0.0.1:{port}/health" in check["Output"] and "200 OK" in check["Output"]

    (container,) = cluster.containers(JOB_ID)
    assert IMAGE in container.image.tags and container.attrs["HostConfig"]["NetworkMode"] == "host"
    assert container.attrs["Config"]["Cmd"][:3] == ["gateway", "--listen", f"127.0.0.1:{port}"]
    (alloc,) = [a for a in cluster.nomad.allocations.values() if a["JobID"] == JOB_ID]
    rendered = cluster.client.workdir / alloc["ID"] / "gateway" / "secrets" / "gateway.env"
    assert rendered.read_text().split() == [f"NOMADGS_GATEWAY_API_KEYS={API_KEY}"]  # the template, from the variable
    assert API_KEY not in json.dumps(cluster.nomad.job_versions(JOB_ID))

    base = f"http://127.0.0.1:{port}/v1"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    refused = httpx.get(f"{base}/models", timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key", refused.text
    wrong = httpx.get(f"{base}/models", headers={"Authorization": "Bearer sk-not-the-key"}, timeout=10)
    assert wrong.status_code == 401, wrong.text
    wait_until(
        lambda: MODEL in [m["id"] for m in httpx.get(f"{base}/models", headers=headers, timeout=10).json()["data"]],
        30, f"the gateway to route {MODEL}",
    )  # fmt: skip
    body = {"model": MODEL, "max_tokens": 16, "temperature": 0, "messages": [{"role": "user", "content": "Say hello."}]}
    assert httpx.post(f"{base}/chat/completions", json=body, timeout=120).status_code == 401
    assert "processing task" not in cluster.task_logs(MODEL)  # refused by the gateway: llama-server saw nothing
    answer = httpx.post(f"{base}/chat/completions", json=body, headers=headers, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"].strip()
    assert "processing task" in cluster.task_logs(MODEL)  # answered by the model job's llama-server

    # `nomad job stop -purge`: the container is stopped (SIGTERM, the drain) and removed, the service leaves Consul.
    status, _ = http_json("DELETE", f"{nomad}/v1/job/{JOB_ID}?purge=true")
    assert status == 200
    wait_until(lambda: not cluster.containers(JOB_ID), 60, "the gateway's container to be removed")
    wait_until(lambda: not cluster.consul_instances(GATEWAY_SERVICE), 30, "the gateway to leave Consul")
    assert "Traceback" not in (rendered.parent.parent.parent / "alloc" / "logs" / "gateway.stderr.0").read_text()
    cluster.stop_and_purge(MODEL)
