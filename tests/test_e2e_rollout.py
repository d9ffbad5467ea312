"""Rollouts under load, on real containers: a model with 2 replicas serves continuous traffic through
`nomadgs gateway` (streamed and plain chat requests, back to back) while it is upgraded by canary, then rolling,
then by a canary that cannot start (auto-revert), then reverted to an earlier version. No request may fail: a
5xx, a cut stream or a connection error counts (tests/support/traffic.py).

The set-up is test_e2e_docker's (the double's docker driver, the local llama.cpp image, the real Consul), with
Nomad's clock `SCALE` times faster, so that min_healthy_time, restart and reschedule delays and the progress
deadline pass in seconds, while the containers, Consul's checks and the traffic run in real time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .support.components import GGUF_NAME
from .support.helpers import Run, http_json, running_gateway, wait_until
from .support.traffic import Traffic, Window, running_traffic
from .test_e2e_docker import LOOPBACK, Cluster, docker_cluster

if TYPE_CHECKING:
    from docker import DockerClient

pytestmark = pytest.mark.e2e

SCALE = 10.0  # Nomad's seconds per real second
MODEL = "smol-rollout"
V0_ARGS = [LOOPBACK, "--threads 1"]


def deployment(args: list[str], upgrade: str) -> str:
    """The model with 2 replicas, these engine flags, and this upgrade strategy. The deadlines are short in
    Nomad's time (startup 2m, progress 3m): at SCALE they are 12 s and 18 s of real time."""
    flags = ", ".join(f'"{a}"' for a in args)
    return f"""\
name: {MODEL}
source: local_path
local_path: {GGUF_NAME}
backend: llama.cpp
backend_version: cpu
backend_parameters: [{flags}]
replicas: 2
nomad:
  cpu: 500
  memory: 512 MiB
  check_interval: 1s
  check_timeout: 1s
  startup_timeout: 2m
  upgrade: {upgrade}
  update:
    progress_deadline: 3m
"""


@dataclass
class Rollouts:
    """The running model, its gateway and the traffic through it, shared by the scenarios in order."""

    cluster: Cluster
    traffic: Traffic
    gateway_log: Path

    def upgrade(self, name: str, text: str) -> tuple[Run, dict[str, Any], Window]:
        """Submit a change under traffic; the requests from just before the submit until the rollout is over
        and some requests were served after it."""
        mark = self.traffic.mark()
        wait_until(lambda: self.traffic.served_since(mark) >= 2, 60, "requests served before the upgrade")
        run, result = self.cluster.submit(self.cluster.write(name, text))
        return run, result, self.settle(mark)

    def settle(self, mark: float) -> Window:
        """Wait until only the job's running allocations have containers (the old ones stopped and removed)
        and requests were served after that; the requests since `mark`."""
        wait_until(lambda: len(self.cluster.containers(MODEL)) == 2, 60, "the old containers to be removed")
        done = self.traffic.mark()
        wait_until(lambda: self.traffic.served_since(done) >= 4, 60, "requests served after the rollout")
        return self.traffic.since(mark)

    def replicas(self) -> list[tuple[int, list[str]]]:
        """(job version, container command) of each running allocation."""
        running = [
            a
            for a in self.cluster.nomad.allocations.values()
            if a["JobID"] == MODEL and a["DesiredStatus"] == "run" and a["ClientStatus"] == "running"
        ]
        commands = {c.labels["com.hashicorp.nomad.alloc_id"]: c.attrs["Config"]["Cmd"] for c in self.containers()}
        return sorted((a["Job"]["Version"], commands.get(a["ID"], [])) for a in running)

    def containers(self) -> list[Any]:
        found = self.cluster.containers(MODEL)
        for container in found:
            container.reload()
        return found

    def version(self) -> int:
        status, job = http_json("GET", f"{self.cluster.nomad.address}/v1/job/{MODEL}")
        assert status == 200
        return int(job["Version"])

    def deployments(self) -> list[dict[str, Any]]:
        status, found = http_json("GET", f"{self.cluster.nomad.address}/v1/job/{MODEL}/deployments")
        assert status == 200
        return sorted(found, key=lambda d: d["JobVersion"])


def no_failures(window: Window) -> None:
    assert window.served >= 4 and window.streams >= 1, f"too little traffic: {window.served} requests served"
    assert not window.failures, f"{len(window.failures)} failed requests: {window.failures[:5]}"


@pytest.fixture(scope="module")
def rollouts(
    engine: DockerClient, consul: Any, smollm2_gguf: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Rollouts]:  # fmt: skip
    root = tmp_path_factory.mktemp("rollouts")
    with docker_cluster(engine, consul, smollm2_gguf, root, time_scale=SCALE) as cluster:
        run, result = cluster.submit(cluster.write("v0.yaml", deployment(V0_ARGS, "canary")))
        assert run.code == 0, run.err
        assert len(result["endpoints"]) == 2
        log = root / "gateway.log"
        try:
            with running_gateway(cluster.env, MODEL, log=log) as url, running_traffic(url, MODEL) as traffic:
                yield Rollouts(cluster, traffic, log)
        finally:
            cluster.stop_and_purge(MODEL)


def ctx_size(command: list[str]) -> str | None:
    """The value of the last --ctx-size in a container's command (the compiler may add flags after it)."""
    at = [i for i, arg in enumerate(command) if arg == "--ctx-size"]
    return command[at[-1] + 1] if at else None


def test_canary_upgrade_is_promoted_without_a_failed_request(rollouts: Rollouts) -> None:
    run, result, window = rollouts.upgrade("v1.yaml", deployment([*V0_ARGS, "--ctx-size 1024"], "canary"))
    assert run.code == 0, run.err
    assert result["status"] == "succeeded"
    canary = rollouts.deployments()[-1]
    group = canary["TaskGroups"]["inference"]
    assert (canary["JobVersion"], canary["Status"]) == (1, "successful")
    assert (group["DesiredCanaries"], group["Promoted"], group["HealthyAllocs"]) == (1, True, 2)
    assert [(v, "--ctx-size" in cmd) for v, cmd in rollouts.replicas()] == [(1, True), (1, True)]
    no_failures(window)


def test_rolling_upgrade_replaces_one_replica_at_a_time_without_a_failed_request(rollouts: Rollouts) -> None:
    run, result, window = rollouts.upgrade("v2.yaml", deployment([*V0_ARGS, "--ctx-size 1536"], "rolling"))
    assert run.code == 0, run.err
    assert result["status"] == "succeeded"
    rolling = rollouts.deployments()[-1]
    group = rolling["TaskGroups"]["inference"]
    assert (rolling["JobVersion"], rolling["Status"], group["DesiredCanaries"]) == (2, "successful", 0)
    assert [(v, ctx_size(cmd)) for v, cmd in rollouts.replicas()] == [(2, "1536")] * 2
    no_failures(window)


def test_a_canary_that_cannot_start_is_not_promoted_and_auto_revert_keeps_the_old_version(
    rollouts: Rollouts,
) -> None:
    mark = rollouts.traffic.mark()
    run, result, _ = rollouts.upgrade("v3.yaml", deployment([*V0_ARGS, "--no-such-flag"], "canary"))
    # submit ends at the crash loop, says what Nomad does next, and exits 1.
    assert run.code == 1, run.err
    (failure,) = result["failures"]
    assert failure["kind"] == "crash-loop", failure
    assert "error: invalid argument: --no-such-flag" in json.dumps(result["logs"])
    said = run.err + run.out
    assert "rolls back to version 2" in said or "rolled back to version 2" in said, said

    # Nomad fails the deployment at its progress deadline and reverts to version 2 as version 4.
    wait_until(lambda: rollouts.version() == 4, 90, "the auto-revert to register version 4")
    wait_until(lambda: rollouts.deployments()[-1]["Status"] == "successful", 60, "version 4 to be deployed")
    window = rollouts.settle(mark)
    failed = next(d for d in rollouts.deployments() if d["JobVersion"] == 3)
    assert failed["Status"] == "failed" and not failed["TaskGroups"]["inference"]["Promoted"]
    assert "rolling back to job version 2" in failed["StatusDescription"]
    assert [(v, ctx_size(cmd)) for v, cmd in rollouts.replicas()] == [(4, "1536")] * 2
    no_failures(window)


def test_history_shows_the_versions_and_revert_rolls_an_earlier_one_out(rollouts: Rollouts) -> None:
    history = rollouts.cluster.nomadgs("history", MODEL, "--format", "json")
    assert history.code == 0, history.err
    document = json.loads(history.out)
    versions = {v["version"]: v for v in document["versions"]}
    assert sorted(versions) == [0, 1, 2, 3, 4] and document["current_version"] == 4
    assert [versions[v]["stable"] for v in range(5)] == [True, True, True, False, True]
    assert "1024" in json.dumps(versions[1]["diff"]) and "1536" in json.dumps(versions[2]["diff"])
    assert "--no-such-flag" in json.dumps(versions[3]["diff"])
    text = rollouts.cluster.nomadgs("history", MODEL)
    assert text.code == 0 and "--no-such-flag" in text.out, text.err

    mark = rollouts.traffic.mark()
    wait_until(lambda: rollouts.traffic.served_since(mark) >= 2, 60, "requests served before the revert")
    run = rollouts.cluster.nomadgs("revert", MODEL, "--to", "1", "--format", "json", timeout=360)
    assert run.code == 0, run.err
    reverted = json.loads(run.out)
    assert (reverted["reverted_from"], reverted["reverted_to"]) == (4, 1)
    window = rollouts.settle(mark)
    assert rollouts.version() == 5
    assert [(v, ctx_size(cmd)) for v, cmd in rollouts.replicas()] == [(5, "1024")] * 2
    no_failures(window)
