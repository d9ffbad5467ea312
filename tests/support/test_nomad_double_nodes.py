"""The double with several client nodes: placement under distinct_hosts as Nomad's scheduler does it
(scheduler/feasible/feasible.go DistinctHostsIterator), and the consul-template functions the compiled jobs of
distributed replicas use (`service`, `key`, `loop`, `printf`, `index`, `range`), rendered from a stand-in of
Consul's answers; then a docker task whose template reads a key of the real Consul: it waits for the key, is
restarted when the key changes (change_mode restart), and with render_templates waits again on a restart.
tests/test_e2e_distributed.py runs the compiled templates of a distributed replica.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from nomad_gpustack.compile.distributed import leader_template, worker_template
from tests.support.nomad_double import LocalClient, NomadDouble
from tests.support.nomad_double.templates import Missing, TemplateError, render

from .helpers import wait_until
from .test_docker_driver import SECOND, docker_job, docker_task, events, images, log, wait_alloc
from .test_nomad_double import allocs_of, make_job, register

if TYPE_CHECKING:
    from docker import DockerClient

__all__ = ["images"]  # the image fixture, shared

JSON = dict[str, Any]


def three_groups(distinct: str | None = "job") -> JSON:
    """A job of three one-allocation groups (a leader and two ranks), distinct_hosts on the job or a group."""
    job = make_job("ranks")
    base = job["TaskGroups"][0]
    job["TaskGroups"] = []
    for name in ("inference", "worker-0-1", "worker-0-2"):
        group = copy.deepcopy(base)
        group["Name"] = name
        group["Services"][0]["Name"] = f"ranks-{name}"
        job["TaskGroups"].append(group)
    if distinct == "job":
        job["Constraints"] = [{"Operand": "distinct_hosts", "RTarget": "true"}]
    elif distinct == "group":
        job["TaskGroups"][0]["Constraints"] = [{"Operand": "distinct_hosts", "RTarget": "true"}]
    return job


def placed(nomad: NomadDouble, job_id: str) -> dict[str, str]:
    return {a["TaskGroup"]: a["NodeName"] for a in allocs_of(nomad, job_id)}


def test_distinct_hosts_spreads_the_jobs_allocations_over_the_nodes() -> None:
    with NomadDouble(client_nodes=3) as nomad, httpx.Client(base_url=nomad.address) as api:
        assert [n["Name"] for n in api.get("/v1/nodes").json()] == [
            "nomad-double-a", "nomad-double-b", "nomad-double-c"
        ]  # fmt: skip
        register(api, three_groups())
        nomad.wait_for(lambda n: len(allocs_of(n, "ranks")) == 3)
        assert placed(nomad, "ranks") == {
            "inference": "nomad-double-a", "worker-0-1": "nomad-double-b", "worker-0-2": "nomad-double-c"
        }  # fmt: skip
        nodes = {a["NodeID"] for a in allocs_of(nomad, "ranks")}
        assert len(nodes) == 3 and nodes == {n["ID"] for n in api.get("/v1/nodes").json()}


def test_without_distinct_hosts_the_first_node_takes_everything() -> None:
    with NomadDouble(client_nodes=3) as nomad, httpx.Client(base_url=nomad.address) as api:
        register(api, three_groups(distinct=None))
        nomad.wait_for(lambda n: len(allocs_of(n, "ranks")) == 3)
        assert set(placed(nomad, "ranks").values()) == {"nomad-double-a"}


def test_group_distinct_hosts_only_keeps_the_groups_own_allocations_apart() -> None:
    with NomadDouble(client_nodes=2) as nomad, httpx.Client(base_url=nomad.address) as api:
        job = three_groups(distinct="group")
        job["TaskGroups"][0]["Count"] = 2
        register(api, job)
        nomad.wait_for(lambda n: len(allocs_of(n, "ranks")) == 4)
        leaders = sorted(a["NodeName"] for a in allocs_of(nomad, "ranks") if a["TaskGroup"] == "inference")
        assert leaders == ["nomad-double-a", "nomad-double-b"]


def test_too_few_nodes_for_distinct_hosts_is_a_failed_placement_in_plan_and_register() -> None:
    with NomadDouble(client_nodes=2) as nomad, httpx.Client(base_url=nomad.address) as api:
        plan = api.put("/v1/job/ranks/plan", json={"Job": three_groups()}).json()
        (failed,) = plan["FailedTGAllocs"].values()
        assert failed["ConstraintFiltered"] == {"distinct_hosts": 2} and failed["NodesEvaluated"] == 2
        register(api, three_groups())
        nomad.wait_for(lambda n: any(e["Status"] == "blocked" for e in n.evaluations.values()))
        assert len(allocs_of(nomad, "ranks")) == 2
        blocked = next(e for e in nomad.evaluations.values() if e["Status"] == "blocked")
        (metric,) = blocked["FailedTGAllocs"].values()
        assert metric["ConstraintFiltered"] == {"distinct_hosts": 2} and metric["NodesFiltered"] == 2


class FakeConsul:
    """Consul's answers: passing instances by (name, tag), and KV keys."""

    def __init__(self, instances: dict[tuple[str, str], list[tuple[str, int]]], keys: dict[str, str]) -> None:
        self.instances, self.keys = instances, keys

    def health_service(self, name: str, tag: str) -> list[JSON]:
        return [
            {"Node": {"Node": "agent", "Address": "10.0.0.1"},
             "Service": {"ID": f"_nomad-{name}-{port}", "Service": name, "Address": address, "Port": port,
                         "Tags": [tag]}}
            for address, port in self.instances.get((name, tag), [])
        ]  # fmt: skip

    def key(self, path: str) -> str | None:
        return self.keys.get(path)


def no_variables(_path: str) -> None:
    return None


def test_the_leaders_template_lists_its_workers_and_blocks_while_one_is_missing() -> None:
    template = leader_template("m", 3)
    env = {"NOMAD_ALLOC_INDEX": "1"}
    both = FakeConsul(
        {
            ("m-worker", "replica-1-rank-1"): [("127.0.0.1", 7001)],
            ("m-worker", "replica-1-rank-2"): [("127.0.0.2", 7002)],
        },
        {},
    )
    assert (
        render(template, env, no_variables, "default", both)
        == "NOMADGS_WORKER_ADDRESSES=127.0.0.1:7001,127.0.0.2:7002\n"
    )
    one = FakeConsul({("m-worker", "replica-1-rank-2"): [("127.0.0.2", 7002)]}, {})
    with pytest.raises(Missing) as missing:
        render(template, env, no_variables, "default", one)
    assert missing.value.dependency == "kv.block(nomadgs/wait/m/workers)"  # Nomad's "Missing: ..." event
    with pytest.raises(TemplateError, match="no Consul"):
        render(template, env, no_variables, "default", None)


def test_a_workers_template_finds_its_leader() -> None:
    template = worker_template("m", 0)
    consul = FakeConsul({("m-leader", "replica-0"): [("127.0.0.9", 9000), ("127.0.0.8", 9001)]}, {})
    assert (
        render(template, {}, no_variables, "default", consul)
        == "NOMADGS_LEADER_IP=127.0.0.9\nNOMADGS_LEADER_PORT=9000\n\n"
    )
    with pytest.raises(Missing):
        render(template, {}, no_variables, "default", FakeConsul({}, {}))


def test_template_functions_and_errors() -> None:
    consul = FakeConsul({}, {"a/b": "value"})
    assert render('{{ key "a/b" }}', {}, no_variables, "d", consul) == "value"
    assert (
        render("{{ range $i, $x := loop 3 }}{{ $i }}{{ $x }};{{ end }}", {}, no_variables, "d", consul) == "00;11;22;"
    )
    assert render("{{ range loop 0 }}x{{ else }}none{{ end }}", {}, no_variables, "d", consul) == "none"
    assert render('{{ printf "%s-%d" "a" 4 }}', {}, no_variables, "d", consul) == "a-4"
    for broken in ("{{ index (loop 1) 3 }}", "{{ $nope }}", "{{ (loop 1 }}", "{{ sprig_thing 1 }}"):
        with pytest.raises(TemplateError):
            render(broken, {}, no_variables, "d", consul)


@pytest.fixture
def consul_cluster(images: DockerClient, consul: Any, tmp_path: Path) -> Iterator[tuple[NomadDouble, httpx.Client]]:
    client = LocalClient(consul_address=consul.address, workdir=tmp_path / "client", check_interval=0.1)
    with NomadDouble(client=client) as nomad, httpx.Client(base_url=nomad.address, timeout=10) as api:
        yield nomad, api


def test_a_consul_template_blocks_on_its_key_restarts_on_change_and_renders_again_on_restart(
    consul_cluster: tuple[NomadDouble, httpx.Client], consul: Any, images: DockerClient
) -> None:
    nomad, api = consul_cluster
    key = f"nomadgs-double/{uuid.uuid4()}"
    kv = f"{consul.address}/v1/kv/{key}"
    task = docker_task("server", 'echo "value=$VALUE"; exec sleep 60')
    task["Templates"] = [
        {"DestPath": "local/v.env", "EmbeddedTmpl": f'VALUE={{{{ key "{key}" }}}}\n', "Envvars": True,
         "ChangeMode": "restart"}
    ]  # fmt: skip
    restart = {"Attempts": 3, "Interval": 600 * SECOND, "Delay": SECOND, "Mode": "fail", "RenderTemplates": True}
    register(api, docker_job("kv", [task], restart=restart))

    def last(kind: str) -> Any:
        return lambda a: bool(events(a, "server")) and events(a, "server")[-1]["Type"] == kind

    def logged(text: str) -> JSON:
        """The allocation once its task runs and has printed `text` (the logs are read outside the double's
        lock, which its wait_for holds)."""
        found = wait_alloc(nomad, "kv", lambda a: a["TaskStates"]["server"]["State"] == "running")
        wait_until(lambda: text in log(api, found["ID"], "server"), 30, text)
        return wait_alloc(nomad, "kv", lambda a: a["TaskStates"]["server"]["State"] == "running")

    alloc = wait_alloc(nomad, "kv", last("Template"))
    assert events(alloc, "server")[-1]["DisplayMessage"] == f"Missing: kv.block({key})"
    httpx.put(kv, content="one").raise_for_status()
    alloc = logged("value=one")

    httpx.put(kv, content="two").raise_for_status()  # change_mode restart: a restart that is not a failure
    alloc = logged("value=two")
    kinds = [e["Type"] for e in events(alloc, "server")]
    assert kinds[kinds.index("Restart Signaled") :] == ["Restart Signaled", "Terminated", "Restarting", "Started"]
    signaled = next(e for e in events(alloc, "server") if e["Type"] == "Restart Signaled")
    assert signaled["DisplayMessage"] == "Template with change_mode restart re-rendered"

    # The key goes, then the task dies: with render_templates its restart waits for the key again.
    httpx.delete(kv).raise_for_status()
    container = nomad.client.containers[(alloc["ID"], "server")] if nomad.client else ""
    images.containers.get(container).kill()
    alloc = wait_alloc(nomad, "kv", last("Template"))
    assert alloc["TaskStates"]["server"]["State"] == "pending"
    httpx.put(kv, content="three").raise_for_status()
    alloc = logged("value=three")
    assert "value=two" in log(api, alloc["ID"], "server")  # the same allocation, restarted in place
