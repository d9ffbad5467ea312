"""A replica over three Nomad clients, on real containers: the built-in llama.cpp backend with `nomad.nodes: 3`
(a llama-server leader and two ggml-rpc-server workers, docker/build-local-images.sh), submitted with
`nomadgs submit` to the double with three client nodes, its docker driver and the real Consul.

Nothing here is given the workers' addresses: the leader's template finds them in Consul, as the compiled job
says (ARCHITECTURE.md, "Distributed replicas"). Nomad's clock runs `SCALE` times faster, so that restart
delays and min_healthy_time pass in seconds, while the containers and Consul's checks keep real time.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .conftest import unavailable
from .support.components import GGUF_NAME
from .support.containers import LLAMA_IMAGE
from .support.helpers import http_json, running_gateway, wait_until
from .test_e2e_docker import LOOPBACK, Cluster, docker_cluster

if TYPE_CHECKING:
    from docker import DockerClient

pytestmark = pytest.mark.e2e

SCALE = 5.0  # Nomad's seconds per real second
MODEL = "smol-dist"
SINGLE = "smol-one"
ENGINE = "llama-cpp"  # the task of every group
PROMPT = "Name three primary colours, one word each."
# `-lv 4`: llama.cpp's loader names the devices the layers go to only at that verbosity ("using device RPC0").
PARAMETERS = f'["{LOOPBACK}", "--threads 1", "--ctx-size 1024", "-lv 4"]'


def deployment(name: str, nodes: int) -> str:
    return f"""\
name: {name}
source: local_path
local_path: {GGUF_NAME}
backend: llama.cpp
backend_version: cpu
backend_parameters: {PARAMETERS}
nomad:
  nodes: {nodes}
  cpu: 500
  memory: 1 GiB
  check_interval: 1s
  check_timeout: 1s
  startup_timeout: 2m
  shutdown_delay: 1s
"""


@dataclass
class Replica:
    """The distributed model, running, and the gateway in front of it."""

    cluster: Cluster
    gateway: str
    answers: dict[str, str] = field(default_factory=dict)

    def allocs(self, job_id: str = MODEL) -> dict[str, dict[str, Any]]:
        """The running allocation of each group (its latest)."""
        found: dict[str, dict[str, Any]] = {}
        for alloc in sorted(self.cluster.nomad.allocations.values(), key=lambda a: a["CreateIndex"]):
            if alloc["JobID"] == job_id and alloc["DesiredStatus"] == "run":
                found[alloc["TaskGroup"]] = alloc
        return found

    def port(self, alloc: dict[str, Any]) -> int:
        (port,) = [p["Value"] for p in alloc["AllocatedResources"]["Shared"]["Ports"] if p["Label"] == "http"]
        return int(port)

    def leader_events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.allocs()["inference"]["TaskStates"][ENGINE]["Events"]
        return events

    def leaders(self) -> tuple[int, int]:
        """The leaders Consul lists: (registered, healthy: passing and their engine listening). Consul learns of
        a dead engine at its next check; the gateway may learn it sooner, from a refused connection."""
        with urllib.request.urlopen(f"{self.cluster.consul}/v1/health/service/{MODEL}", timeout=5) as response:
            entries = json.loads(response.read())
        passing = [e for e in entries if all(c["Status"] == "passing" for c in e["Checks"])]
        return len(entries), sum(1 for e in passing if _listening(e["Service"]["Address"], e["Service"]["Port"]))

    def chat(self, max_tokens: int = 24) -> tuple[int, dict[str, Any]]:
        body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}],
                "temperature": 0, "seed": 42, "max_tokens": max_tokens}  # fmt: skip
        return http_json("POST", f"{self.gateway}/chat/completions", body, timeout=120)


def _listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def _has_rpc(engine: DockerClient) -> bool:
    """The local llama.cpp image has the RPC server and backend (built since they were added to it)."""
    probe = "test -x /app/ggml-rpc-server && test -e /usr/lib/x86_64-linux-gnu/ggml/backends0/libggml-rpc.so"
    try:
        engine.containers.run(LLAMA_IMAGE, ["-c", probe], entrypoint="/bin/sh", network_mode="none", remove=True)
    except Exception:
        return False
    return True


@pytest.fixture(scope="module")
def replica(
    engine: DockerClient, consul: Any, smollm2_gguf: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replica]:  # fmt: skip
    root = tmp_path_factory.mktemp("distributed")
    with docker_cluster(engine, consul, smollm2_gguf, root, time_scale=SCALE, nodes=3) as cluster:
        if not _has_rpc(engine):
            unavailable(f"{LLAMA_IMAGE} has no ggml-rpc-server: rebuild it with docker/build-local-images.sh")
        run, result = cluster.submit(cluster.write("dist.yaml", deployment(MODEL, 3)))
        try:
            assert run.code == 0, run.err + run.out
            assert result["status"] == "succeeded", result
            log = root / "gateway.log"
            with running_gateway(cluster.env, MODEL, log=log) as url:
                yield Replica(cluster, url)
        finally:
            cluster.stop_and_purge(MODEL)


def test_a_replica_over_three_nodes_serves_the_single_nodes_answer(replica: Replica) -> None:
    cluster = replica.cluster
    allocs = replica.allocs()
    assert sorted(allocs) == ["inference", "worker-0-1", "worker-0-2"]
    # distinct_hosts: each rank on a node of its own.
    assert len({a["NodeID"] for a in allocs.values()}) == 3
    assert all(a["ClientStatus"] == "running" for a in allocs.values())

    # The leader was started with the workers' addresses its template found in Consul, in rank order.
    workers = [f"127.0.0.1:{replica.port(allocs[f'worker-0-{rank}'])}" for rank in (1, 2)]
    containers = {c.labels["com.hashicorp.nomad.alloc_id"]: c for c in cluster.containers(MODEL)}
    leader = containers[allocs["inference"]["ID"]].attrs["Config"]["Cmd"]
    assert leader[leader.index("--rpc") + 1] == ",".join(workers)
    for rank in (1, 2):
        worker = containers[allocs[f"worker-0-{rank}"]["ID"]].attrs
        assert worker["Config"]["Entrypoint"] == ["/app/ggml-rpc-server"]
        port = replica.port(allocs[f"worker-0-{rank}"])
        assert worker["Config"]["Cmd"] == ["--host", "127.0.0.1", "--port", str(port)]
    instances = cluster.consul_instances(f"{MODEL}-worker")
    assert sorted(i["Service"]["Port"] for i in instances) == sorted(int(w.split(":")[1]) for w in workers)

    # The leader's log: the model's layers go to the two RPC devices.
    logs = cluster.nomadgs("logs", MODEL, "--stderr", "--tail", "5000")
    assert logs.code == 0, logs.err
    for device, address in enumerate(workers):
        assert f"using device RPC{device} ({address})" in logs.out, logs.out[-3000:]
        assert re.search(rf"load_tensors: RPC\d\[{re.escape(address)}\] model buffer size", logs.out)

    # Through the gateway, and with `nomadgs chat` (discovery through Consul).
    status, answer = replica.chat()
    assert status == 200, answer
    distributed = answer["choices"][0]["message"]["content"]
    assert distributed.strip()
    said = cluster.nomadgs("chat", MODEL, "-p", PROMPT, "--temperature", "0", "--max-tokens", "24")
    assert said.code == 0 and said.out.strip(), said.err

    # The same prompt on one node: the same answer at temperature 0 with a fixed seed.
    run, result = cluster.submit(cluster.write("one.yaml", deployment(SINGLE, 1)))
    try:
        assert run.code == 0, run.err
        (base_url,) = result["endpoints"]
        body = {"model": SINGLE, "messages": [{"role": "user", "content": PROMPT}],
                "temperature": 0, "seed": 42, "max_tokens": 24}  # fmt: skip
        status, single = http_json("POST", f"{base_url}/chat/completions", body, timeout=120)
        assert status == 200, single
        assert single["choices"][0]["message"]["content"] == distributed
        one = cluster.nomadgs("chat", SINGLE, "-p", PROMPT, "--temperature", "0", "--max-tokens", "24")
        assert one.code == 0 and one.out == said.out, (one.out, said.out)
    finally:
        cluster.stop_and_purge(SINGLE)


@dataclass
class Sample:
    """One request through the gateway, and the leaders Consul listed just before it was sent (passing: those
    whose engine also listened)."""

    status: int
    code: str
    registered_before: int
    passing_before: int


def test_a_killed_worker_takes_the_replica_down_until_nomad_restarts_it(replica: Replica) -> None:
    cluster = replica.cluster
    before = replica.allocs()
    status, _ = replica.chat(4)
    assert status == 200

    # The worker of rank 1 dies (its container killed by ID, as an OOM kill or a crash would).
    container_id = cluster.client.containers[(before["worker-0-1"]["ID"], ENGINE)]
    cluster.engine.containers.get(container_id).kill()

    # `status`, while the worker waits for its restart: which rank of which replica, on which node, what follows.
    def waiting() -> bool:
        state = replica.allocs()["worker-0-1"]["TaskStates"][ENGINE]
        return state["State"] == "pending" and state["Events"][-1]["Type"] == "Restarting"

    wait_until(waiting, 30, "the killed worker to wait for its restart")
    explained = cluster.nomadgs("status", MODEL)
    assert explained.code == 0, explained.err

    samples: list[Sample] = []

    def recovered() -> bool:
        registered, passing = replica.leaders()
        status, answer = replica.chat(4)
        code = (answer.get("error") or {}).get("code", "") if isinstance(answer, dict) else ""
        samples.append(Sample(status, code, registered, passing))
        return status == 200 and any(s.status == 503 for s in samples)

    wait_until(recovered, 180, "the replica to go down and answer again")

    # The gateway: 200 before; then at most one 502 (the request the engine died on, or 503 when it died before
    # answering it), 503 no_healthy_instance while no leader is healthy; 200 again once the restarted leader
    # passes its check. While the one leader's task is down Nomad deregisters its service (service_hook.go
    # Exited): the gateway (NOMAD_ADDR set) still knows the model from its job, so never 404 model_not_found.
    statuses = [s.status for s in samples]
    first_bad = next(i for i, s in enumerate(statuses) if s != 200)
    assert all(s == 200 for s in statuses[:first_bad])
    outage = samples[first_bad:-1]
    assert {s.status for s in outage} <= {502, 503}, [(s.status, s.code) for s in outage]
    assert sum(1 for s in outage if s.status == 502) <= 1
    assert all(s.code == "no_healthy_instance" for s in outage if s.status == 503)
    # Judged on Consul's view before the request and before the previous one: the gateway follows Consul with
    # a blocking query, so one request of slack.
    for previous, sample in itertools.pairwise(samples):
        if sample.status == 503:
            assert not (previous.passing_before and sample.passing_before), samples
    assert any(s.status == 503 for s in outage) and samples[-1].status == 200
    assert replica.leaders() == (1, 1)

    # What happened, as Nomad tells it: the worker restarted in place (same allocation, same node), the
    # leader's engine failed without it and was restarted by Nomad once the worker was back.
    after = replica.allocs()
    assert after["worker-0-1"]["ID"] == before["worker-0-1"]["ID"]
    worker_events = [e["Type"] for e in after["worker-0-1"]["TaskStates"][ENGINE]["Events"]]
    assert worker_events[-3:] == ["Terminated", "Restarting", "Started"], worker_events
    leader = [e for e in replica.leader_events() if e["Type"] in ("Terminated", "Restarting", "Started")]
    assert [e["Type"] for e in leader[-3:]] == ["Terminated", "Restarting", "Started"], leader
    assert leader[-3]["ExitCode"] != 0  # llama.cpp aborts: "Remote RPC server crashed"
    # The restarted leader was given the same workers again.
    workers = [f"127.0.0.1:{replica.port(after[f'worker-0-{rank}'])}" for rank in (1, 2)]
    env_file = Path(cluster.client.workdir) / after["inference"]["ID"] / ENGINE / "local" / "nomadgs-distributed.env"
    assert env_file.read_text() == f"NOMADGS_WORKER_ADDRESSES={','.join(workers)}\n"

    node = before["worker-0-1"]["NodeName"]
    said = f"replica 0: worker rank 1 on node {node} stopped (exit code 137); the engine cannot continue without it"
    assert said in explained.out, explained.out
    assert "worker rank" not in cluster.nomadgs("status", MODEL).out  # all ranks run again
