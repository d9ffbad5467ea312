"""The Nomad double's docker task driver (client mode) on the real local Docker engine, and the pieces it is
made of: templates, the restart tracker, the task environment and interpolation, the container options, the
Variables API. Containers run with host networking and bind 127.0.0.1; every one is removed by the double.
"""

from __future__ import annotations

import copy
import json
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.support.containers import BASE_IMAGE, DOWNLOADER_IMAGE, require_images
from tests.support.nomad_double import LocalClient, NomadDouble
from tests.support.nomad_double.docker_driver import (
    LABEL_ALLOC_ID,
    PRIVILEGED_REFUSED,
    DriverError,
    HostVolume,
    StartRequest,
    container_options,
)
from tests.support.nomad_double.restarts import (
    REASON_DELAY,
    REASON_NO_RESTARTS,
    REASON_SUCCESS,
    REASON_UNRECOVERABLE,
    REASON_WITHIN_POLICY,
    RestartTracker,
)
from tests.support.nomad_double.taskenv import Node, TaskDirs, interpolate, task_env
from tests.support.nomad_double.templates import Missing, TemplateError, parse_env_file, render

if TYPE_CHECKING:
    from docker import DockerClient

SECOND = 10**9
MIB = 1024 * 1024
JSON = dict[str, Any]


# --- templates ------------------------------------------------------------------------------------------------------


TOKEN_TEMPLATE = '{{ with nomadVar "nomad/jobs/x" }}{{ with .HF_TOKEN }}HF_TOKEN={{ . }}{{ end }}{{ end }}\n'


def test_templates_render_what_the_compiler_emits() -> None:
    def variables(path: str) -> dict[str, str] | None:
        return {"nomad/jobs/x": {"HF_TOKEN": "hf_secret"}, "nomad/jobs/empty": {"OTHER": "1"}}.get(path)

    assert render("plain $dir text\n", {}, variables, "default") == "plain $dir text\n"
    assert render('port={{ env "NOMAD_PORT_http" }}', {"NOMAD_PORT_http": "8080"}, variables, "ns") == "port=8080"
    assert render(TOKEN_TEMPLATE, {}, variables, "default") == "HF_TOKEN=hf_secret\n"
    no_key = TOKEN_TEMPLATE.replace("nomad/jobs/x", "nomad/jobs/empty")
    assert render(no_key, {}, variables, "default") == "\n"
    assert render("a  {{- if .X }}yes{{ else }}no{{ end -}}  b", {}, variables, "d") == "ano" + "b"
    assert render('{{ "literal" }}', {}, variables, "d") == "literal"
    with pytest.raises(Missing) as missing:
        render(TOKEN_TEMPLATE.replace("nomad/jobs/x", "nomad/jobs/nope"), {}, variables, "ml")
    assert missing.value.dependency == "nomad.var.block(nomad/jobs/nope@ml.global)"
    for broken in ('{{ key "consul/kv" }}', "{{ with .X }}open", "{{ end }}", "{{ .A.B }}x{{ else }}"):
        with pytest.raises(TemplateError):
            render(broken, {}, variables, "d")
    assert parse_env_file("# c\nA=1\nexport B=\"two words\"\n\nC='x=y'\nnot a pair\n") == {
        "A": "1",
        "B": "two words",
        "C": "x=y",
    }


# --- restart tracker ------------------------------------------------------------------------------------------------


def test_restart_tracker_follows_nomads_policy_modes() -> None:
    policy = {"Attempts": 2, "Interval": 600 * SECOND, "Delay": 2 * SECOND, "Mode": "fail"}
    tracker = RestartTracker(policy, restart_on_success=True)
    first, second, third = (tracker.after_exit(1) for _ in range(3))
    assert (first.verdict, first.reason) == ("restart", REASON_WITHIN_POLICY)
    assert 2.0 <= first.delay <= 2.5 and 2.0 <= second.delay <= 2.5  # Delay plus up to 25 % jitter
    assert (third.verdict, third.reason) == (
        "not-restarting",
        'Exceeded allowed attempts 2 in interval 10m0s and mode is "fail"',
    )

    delay_mode = RestartTracker({**policy, "Attempts": 1, "Mode": "delay"}, restart_on_success=True)
    assert delay_mode.after_exit(1).reason == REASON_WITHIN_POLICY
    waiting = delay_mode.after_exit(1)
    assert (waiting.verdict, waiting.reason) == ("restart", REASON_DELAY) and 590 < waiting.delay <= 600

    fresh = RestartTracker({**policy, "Attempts": 1, "Interval": 1}, restart_on_success=True)
    fresh.after_exit(1)
    fresh.clock -= 1.0  # the interval began a second ago: its 1 ns are over, a new one starts and the count too
    assert fresh.after_exit(1).verdict == "restart"

    prestart = RestartTracker(policy, restart_on_success=False)
    assert (prestart.after_exit(0).verdict, prestart.after_exit(0).reason) == ("terminated", REASON_SUCCESS)
    assert RestartTracker({**policy, "Attempts": 0}, True).after_exit(0).reason == REASON_NO_RESTARTS
    assert RestartTracker({**policy, "Attempts": 0}, False).after_exit(0).verdict == "terminated"
    assert RestartTracker(policy, True).after_start_error(recoverable=False).reason == REASON_UNRECOVERABLE
    assert RestartTracker(policy, True).after_start_error(recoverable=True).verdict == "restart"


# --- environment, interpolation, container options ------------------------------------------------------------------


def _alloc(task: JSON, job_type: str = "service") -> JSON:
    job = {
        "ID": "web",
        "Name": "web",
        "Type": job_type,
        "Namespace": "ml",
        "Region": "global",
        "Meta": {"model-name": "smol"},
        "TaskGroups": [{"Name": "inference", "Tasks": [task]}],
    }
    return {
        "ID": "0b9a4c4e-1111-2222-3333-444455556666",
        "Name": "web.inference[0]",
        "TaskGroup": "inference",
        "Namespace": "ml",
        "Job": job,
        "AllocatedResources": {"Shared": {"Ports": [{"Label": "http", "Value": 23456}]}},
    }


def test_task_environment_and_interpolation_as_a_client_builds_them(tmp_path: Path) -> None:
    task = {
        "Name": "server",
        "Env": {"GREETING": "hi ${NOMAD_JOB_ID} on ${attr.kernel.name}", "TOKEN": "from-env"},
        "Resources": {"CPU": 500, "MemoryMB": 256},
    }
    alloc = _alloc(task)
    node = Node("node-1", "local", {"rack": "r7"}, {"kernel.name": "linux"})
    dirs = TaskDirs.of(tmp_path, "server")
    env = task_env(alloc, task, dirs, in_container=True, node=node, extra={"TOKEN": "from-template"})
    assert env["NOMAD_TASK_DIR"] == "/local" and env["NOMAD_ALLOC_DIR"] == "/alloc"
    assert env["NOMAD_SECRETS_DIR"] == "/secrets" and env["NOMAD_MEMORY_LIMIT"] == "256"
    assert (env["NOMAD_PORT_http"], env["NOMAD_IP_http"], env["NOMAD_ADDR_http"]) == (
        "23456",
        "127.0.0.1",
        "127.0.0.1:23456",
    )
    assert env["NOMAD_META_model_name"] == "smol" and env["NOMAD_ALLOC_INDEX"] == "0"
    assert env["GREETING"] == "hi web on linux"
    assert env["TOKEN"] == "from-template"  # env templates win over the task's env
    assert "PATH" not in env  # a container gets none of the agent's environment
    host = task_env(alloc, task, dirs, in_container=False)
    assert host["NOMAD_TASK_DIR"] == str(tmp_path / "server" / "local") and "PATH" in host

    text = '${NOMAD_PORT_http} ${env["NOMAD_JOB_ID"]} ${meta.rack} ${node.unique.id} ${attr.kernel.name} ${nope}'
    assert interpolate(text, env, node) == "23456 web r7 node-1 linux ${nope}"


def _options(tmp_path: Path, config: JSON, resources: JSON | None = None) -> dict[str, Any]:
    task = {"Name": "server", "Config": config, "Resources": resources or {"CPU": 250, "MemoryMB": 64}}
    request = StartRequest(
        _alloc(task), task, {"A": "1"}, TaskDirs.of(tmp_path, "server"), [], Node("n", "n"), _ignore, _ignore
    )
    return container_options(request, config)


def _ignore(*_args: object) -> None:
    return None


def test_container_options_follow_nomads_docker_driver(tmp_path: Path) -> None:
    options = _options(
        tmp_path,
        {
            "image": "x:1",
            "entrypoint": ["/bin/sh"],
            "args": ["-c", "true"],
            "shm_size": 64 * MIB,
            "labels": [{"team": "ml"}],
            "ulimit": {"memlock": "-1", "nofile": "1024:2048"},
            "devices": [{"host_path": "/dev/zero", "container_path": "/dev/z"}],
            "network_mode": "host",
            "image_pull_timeout": "5m",
        },
    )
    assert options["entrypoint"] == ["/bin/sh"] and options["command"] == ["-c", "true"]
    assert options["network_mode"] == "host" and options["shm_size"] == 64 * MIB
    assert (options["mem_limit"], options["memswap_limit"], options["cpu_shares"]) == (64 * MIB, 64 * MIB, 250)
    assert options["labels"]["team"] == "ml" and LABEL_ALLOC_ID in options["labels"]
    assert options["devices"] == ["/dev/zero:/dev/z:rwm"]
    limits = {u["Name"]: (u["Soft"], u["Hard"]) for u in options["ulimits"]}
    memlock_hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
    if memlock_hard != resource.RLIM_INFINITY:  # -1 is capped to this machine's hard limit
        assert limits["memlock"] == (memlock_hard, memlock_hard)
    assert limits["nofile"] == (1024, 2048)
    targets = {m["Target"]: m for m in options["mounts"]}
    assert targets["/local"]["Source"] == str(tmp_path / "server" / "local") and "/alloc" in targets

    oversubscribed = _options(tmp_path, {"image": "x:1"}, {"CPU": 100, "MemoryMB": 64, "MemoryMaxMB": 128})
    assert (oversubscribed["mem_limit"], oversubscribed["mem_reservation"]) == (128 * MIB, 64 * MIB)

    refused = {
        "privileged": (True, PRIVILEGED_REFUSED),
        "network_mode": ("bridge", "host networking"),
        "volumes": (["/etc:/host-etc"], "volumes are not enabled"),
        "mount": ([{"type": "bind", "source": "/etc", "target": "/e"}], "volumes are not enabled"),
        "runtime": ("nvidia", "does not implement the docker option 'runtime'"),
        "imagee": ("x", 'An argument named "imagee" is not expected here'),
    }
    for key, (value, message) in refused.items():
        with pytest.raises(DriverError, match=message):
            _options(tmp_path, {"image": "x:1", key: value})
    inside = _options(tmp_path, {"image": "x:1", "volumes": ["local/cache:/cache:ro"]})
    assert any(m["Target"] == "/cache" and m["ReadOnly"] for m in inside["mounts"])


# --- variables API --------------------------------------------------------------------------------------------------


def test_variables_api_put_get_list_cas_delete() -> None:
    with NomadDouble() as nomad, httpx.Client(base_url=nomad.address, timeout=5) as api:
        assert api.get("/v1/var/nomad/jobs/x").status_code == 404
        put = api.put("/v1/var/nomad/jobs/x", json={"Namespace": "default", "Path": "nomad/jobs/x",
                                                     "Items": {"HF_TOKEN": "hf_secret"}})  # fmt: skip
        assert put.status_code == 200, put.text
        variable = api.get("/v1/var/nomad/jobs/x").json()
        assert variable["Items"] == {"HF_TOKEN": "hf_secret"} and variable["ModifyIndex"] > 0
        assert int(api.get("/v1/var/nomad/jobs/x").headers["X-Nomad-Index"]) == variable["ModifyIndex"]
        listed = api.get("/v1/vars", params={"prefix": "nomad/"}).json()
        assert [v["Path"] for v in listed] == ["nomad/jobs/x"] and "Items" not in listed[0]
        conflict = api.put("/v1/var/nomad/jobs/x", params={"cas": "1"}, json={"Items": {"HF_TOKEN": "other"}})
        assert conflict.status_code == 409 and conflict.json()["Items"]["HF_TOKEN"] == "hf_secret"
        assert api.put("/v1/var/nomad/jobs/x", json={"Items": {}}).status_code == 400
        assert api.get("/v1/var/nomad/jobs/x", params={"namespace": "other"}).status_code == 404
        with api.stream("GET", "/v1/event/stream", params={"index": "1", "topic": "Variable"}) as stream:
            line = next(iter(stream.iter_lines()))
        assert "VariableUpserted" in line and "hf_secret" not in line  # events carry no items
        assert api.delete("/v1/var/nomad/jobs/x").status_code == 200
        assert api.get("/v1/var/nomad/jobs/x").status_code == 404


# --- on the real engine ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(engine: DockerClient) -> DockerClient:
    from tests.conftest import unavailable
    from tests.support.components import ComponentUnavailable

    try:
        require_images(engine, BASE_IMAGE, DOWNLOADER_IMAGE)
    except ComponentUnavailable as exc:
        unavailable(str(exc))
    return engine


@pytest.fixture
def volumes(tmp_path: Path) -> dict[str, Path]:
    found = {"data": tmp_path / "volumes" / "data", "shared": tmp_path / "volumes" / "shared"}
    for path in found.values():
        path.mkdir(parents=True)
    (found["shared"] / "read-me.txt").write_text("from the host\n")
    return found


@pytest.fixture
def cluster(images: DockerClient, tmp_path: Path, volumes: dict[str, Path]) -> Iterator[tuple[NomadDouble, Any]]:
    client = LocalClient(
        consul_address=None,
        workdir=tmp_path / "client",
        check_interval=0.1,
        host_volumes={"data": volumes["data"], "shared": HostVolume(volumes["shared"], read_only=True)},
        node_meta={"rack": "r7"},
    )
    with NomadDouble(client=client) as nomad, httpx.Client(base_url=nomad.address, timeout=10) as api:
        yield nomad, api


def docker_job(job_id: str, tasks: list[JSON], *, job_type: str = "service", restart: JSON | None = None) -> JSON:
    group: JSON = {
        "Name": "inference",
        "Count": 1,
        "Networks": [{"Mode": "host", "DynamicPorts": [{"Label": "http"}]}],
        "RestartPolicy": restart or {"Attempts": 0, "Interval": 600 * SECOND, "Delay": SECOND, "Mode": "fail"},
        # No rescheduling: these tests follow one allocation's tasks. A failed one then fails its deployment at
        # once, as Nomad's deployment watcher does when no reschedule attempt is left (shouldFailEarly).
        "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
        "Tasks": tasks,
    }
    if job_type == "service":
        group["Update"] = {
            "MinHealthyTime": SECOND // 10,
            "HealthyDeadline": 60 * SECOND,
            "ProgressDeadline": 120 * SECOND,
        }
    return {"ID": job_id, "Name": job_id, "Type": job_type, "Meta": {"model": "smol"}, "TaskGroups": [group]}


def docker_task(name: str, script: str, image: str = BASE_IMAGE, **extra: Any) -> JSON:
    return {
        "Name": name,
        "Driver": "docker",
        "Config": {"image": image, "entrypoint": ["/bin/sh", "-c"], "args": [script]},
        "Resources": {"CPU": 100, "MemoryMB": 64},
        "KillTimeout": SECOND,
        **extra,
    }


def register(api: httpx.Client, job: JSON) -> None:
    response = api.put("/v1/jobs", json={"Job": job})
    assert response.status_code == 200, response.text


def only_alloc(nomad: NomadDouble, job_id: str) -> JSON:
    (alloc,) = [a for a in nomad.allocations.values() if a["JobID"] == job_id]
    return alloc


def wait_alloc(nomad: NomadDouble, job_id: str, predicate: Any, timeout: float = 60) -> JSON:
    def ready(n: NomadDouble) -> bool:
        allocs = [a for a in n.allocations.values() if a["JobID"] == job_id]
        return bool(allocs) and predicate(allocs[-1])

    nomad.wait_for(ready, timeout)
    return only_alloc(nomad, job_id)


def events(alloc: JSON, task: str) -> list[JSON]:
    """The task's events ([] before the client has reported the task)."""
    found: list[JSON] = ((alloc["TaskStates"] or {}).get(task) or {}).get("Events") or []
    return found


def log(api: httpx.Client, alloc_id: str, task: str, stream: str = "stdout") -> str:
    params = {"task": task, "type": stream, "plain": "true"}
    return api.get(f"/v1/client/fs/logs/{alloc_id}", params=params).text


def gone(engine: DockerClient, alloc_id: str) -> bool:
    # sparse: no inspect per container, which races with the removal being waited for (404)
    return not engine.containers.list(all=True, sparse=True, filters={"label": f"{LABEL_ALLOC_ID}={alloc_id}"})


SERVER_SCRIPT = """
set -e
echo "args: $0 $1 $2"
echo "alloc=$NOMAD_ALLOC_ID task_dir=$NOMAD_TASK_DIR secrets=$NOMAD_SECRETS_DIR greeting=$GREETING"
echo "template: $(cat /local/config.txt)"
echo "app_secret_length=${#APP_SECRET}"
echo "shm=$(df -k /dev/shm | tail -1 | tr -s ' ' | cut -d' ' -f2)k memlock=$(ulimit -l) nofile=$(ulimit -n)"
test -c /dev/nomadgs-zero && echo "device ok"
echo written > /data/out.txt && echo "data rw ok"
cat /shared/read-me.txt
( echo x > /shared/nope.txt ) 2>/dev/null || echo "shared is read-only"
echo "to stderr" >&2
cd /local && exec python3 -m http.server --bind "$NOMAD_IP_http" "$NOMAD_PORT_http"
"""


def test_docker_task_with_env_templates_volumes_limits_and_a_nomad_service(
    cluster: tuple[NomadDouble, httpx.Client], volumes: dict[str, Path], images: DockerClient
) -> None:
    nomad, api = cluster
    api.put("/v1/var/nomad/jobs/web", json={"Items": {"APP_SECRET": "s3cr3t-value"}}).raise_for_status()
    task = docker_task("server", SERVER_SCRIPT, image=DOWNLOADER_IMAGE)
    task["Config"]["args"] += ["${NOMAD_PORT_http}", '${env["NOMAD_JOB_ID"]}-${attr.kernel.name}-${meta.rack}']
    task["Config"].update(
        shm_size=64 * MIB,
        labels=[{"team": "ml"}],
        ulimit=[{"memlock": "-1", "nofile": "1024:2048"}],
        devices=[{"host_path": "/dev/zero", "container_path": "/dev/nomadgs-zero"}],
        network_mode="host",
    )
    task.update(
        Env={"GREETING": "hello ${NOMAD_JOB_ID}"},
        Resources={"CPU": 200, "MemoryMB": 96},
        Templates=[
            {"DestPath": "local/config.txt", "EmbeddedTmpl": 'port={{ env "NOMAD_PORT_http" }}\n'},
            {
                "DestPath": "secrets/app.env",
                "EmbeddedTmpl": '{{ with nomadVar "nomad/jobs/web" }}APP_SECRET={{ .APP_SECRET }}{{ end }}\n',
                "Envvars": True,
            },
        ],
        VolumeMounts=[
            {"Volume": "data", "Destination": "/data", "ReadOnly": False},
            {"Volume": "shared", "Destination": "/shared", "ReadOnly": False},
        ],
        Services=[
            {
                "Name": "web-http",
                "PortLabel": "http",
                "Provider": "nomad",
                "Checks": [{"Type": "http", "Path": "/config.txt", "Interval": SECOND, "Timeout": SECOND}],
            }
        ],
    )
    job = docker_job("web", [task])
    job["TaskGroups"][0]["Volumes"] = {
        "data": {"Name": "data", "Type": "host", "Source": "data"},
        "shared": {"Name": "shared", "Type": "host", "Source": "shared"},
    }
    register(api, job)
    nomad.wait_for(lambda n: any(d["Status"] == "successful" for d in n.deployments.values()), timeout=60)
    alloc = only_alloc(nomad, "web")
    port = alloc["AllocatedResources"]["Shared"]["Ports"][0]["Value"]
    assert httpx.get(f"http://127.0.0.1:{port}/config.txt").text == f"port={port}\n"
    assert [e["Type"] for e in events(alloc, "server")] == ["Received", "Task Setup", "Started"]

    out = log(api, alloc["ID"], "server")
    assert f"args: {port} web-linux-r7 " in out
    assert f"alloc={alloc['ID']} task_dir=/local secrets=/secrets greeting=hello web\n" in out
    assert f"template: port={port}\n" in out and "app_secret_length=12\n" in out
    assert "device ok\n" in out and "data rw ok\n" in out
    assert "from the host\nshared is read-only\n" in out
    assert "shm=65536k" in out and "nofile=1024" in out
    assert "s3cr3t-value" not in out
    assert log(api, alloc["ID"], "server", "stderr").startswith("to stderr\n")
    assert (volumes["data"] / "out.txt").read_text() == "written\n"
    assert not (volumes["shared"] / "nope.txt").exists()

    (container,) = images.containers.list(filters={"label": f"{LABEL_ALLOC_ID}={alloc['ID']}"})
    host_config = container.attrs["HostConfig"]
    assert (host_config["NetworkMode"], host_config["Memory"], host_config["CpuShares"]) == ("host", 96 * MIB, 200)
    assert container.labels["team"] == "ml" and container.name == f"server-{alloc['ID']}"
    memlock = next(u for u in host_config["Ulimits"] if u["Name"] == "memlock")
    assert memlock["Hard"] == resource.getrlimit(resource.RLIMIT_MEMLOCK)[1] or memlock["Hard"] == -1

    api.delete("/v1/job/web").raise_for_status()
    deadline = time.monotonic() + 20
    while not gone(images, alloc["ID"]):
        assert time.monotonic() < deadline, "the container was not removed after the stop"
        time.sleep(0.1)
    stopped = only_alloc(nomad, "web")
    assert [e["Type"] for e in events(stopped, "server")][-2:] == ["Killing", "Killed"]
    assert not nomad.services


def test_prestart_once_then_restarts_by_policy_over_real_exits(
    cluster: tuple[NomadDouble, httpx.Client], images: DockerClient
) -> None:
    nomad, api = cluster
    prestart = docker_task("fetch", "echo fetched >> /alloc/data/prestart.txt", Lifecycle={"Hook": "prestart"})
    main = docker_task("server", "echo attempt >> /alloc/data/attempts.txt; echo boom >&2; exit 3")
    restart = {"Attempts": 2, "Interval": 600 * SECOND, "Delay": SECOND // 5, "Mode": "fail"}
    register(api, docker_job("crash", [prestart, main], restart=restart))
    alloc = wait_alloc(nomad, "crash", lambda a: a["ClientStatus"] == "failed")
    kinds = [e["Type"] for e in events(alloc, "server")]
    assert (
        kinds
        == [
            *("Received", "Task Setup", "Started", "Terminated", "Restarting", "Started", "Terminated"),
            *("Restarting", "Started", "Terminated", "Not Restarting"),
        ][-10:]
    )  # Nomad keeps the last 10 events
    terminated = [e for e in events(alloc, "server") if e["Type"] == "Terminated"]
    assert {(e["ExitCode"], e["Details"]["oom_killed"]) for e in terminated} == {(3, "false")}
    assert terminated[-1]["DisplayMessage"] == 'Exit Code: 3, Exit Message: "Docker container exited with ' \
        'non-zero exit code: 3"'  # fmt: skip
    restarting = [e for e in events(alloc, "server") if e["Type"] == "Restarting"]
    assert all(e["RestartReason"] == REASON_WITHIN_POLICY and e["StartDelay"] >= SECOND // 5 for e in restarting)
    assert events(alloc, "server")[-1]["RestartReason"] == (
        'Exceeded allowed attempts 2 in interval 10m0s and mode is "fail"'
    )
    state = alloc["TaskStates"]["server"]
    assert (state["State"], state["Failed"], state["Restarts"]) == ("dead", True, 2)
    fetched = alloc["TaskStates"]["fetch"]
    assert (fetched["State"], fetched["Failed"], fetched["Restarts"]) == ("dead", False, 0)
    assert log(api, alloc["ID"], "server", "stderr") == "boom\n" * 3
    data = Path(nomad.client.workdir if nomad.client else "") / alloc["ID"] / "alloc" / "data"
    assert (data / "prestart.txt").read_text() == "fetched\n"  # not run again by the main task's restarts
    assert (data / "attempts.txt").read_text() == "attempt\n" * 3
    nomad.wait_for(lambda n: n.deployments and all(d["Status"] == "failed" for d in n.deployments.values()))
    deadline = time.monotonic() + 10
    while not gone(images, alloc["ID"]):  # exited containers are removed, as Nomad's docker GC does
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_delay_mode_waits_out_the_interval(cluster: tuple[NomadDouble, httpx.Client]) -> None:
    nomad, api = cluster
    restart = {"Attempts": 1, "Interval": 30 * SECOND, "Delay": SECOND // 10, "Mode": "delay"}
    register(api, docker_job("delayed", [docker_task("server", "exit 1")], restart=restart))
    alloc = wait_alloc(nomad, "delayed", lambda a: [e["Type"] for e in events(a, "server")].count("Restarting") == 2)
    delayed = [e for e in events(alloc, "server") if e["Type"] == "Restarting"][-1]
    assert delayed["RestartReason"] == REASON_DELAY and 20 * SECOND < delayed["StartDelay"] <= 30 * SECOND
    assert alloc["TaskStates"]["server"]["State"] == "pending"  # waiting to restart, not failed


def test_oom_kill_is_reported_as_nomad_reports_it(cluster: tuple[NomadDouble, httpx.Client]) -> None:
    nomad, api = cluster
    task = docker_task("server", "python3 -c 'b = b\"x\" * (256 * 1024 * 1024)'", image=DOWNLOADER_IMAGE)
    task["Resources"]["MemoryMB"] = 32
    register(api, docker_job("hungry", [task]))
    alloc = wait_alloc(nomad, "hungry", lambda a: a["ClientStatus"] == "failed")
    terminated = next(e for e in events(alloc, "server") if e["Type"] == "Terminated")
    assert (terminated["ExitCode"], terminated["Message"], terminated["Details"]["oom_killed"]) == (
        137,
        "OOM Killed",
        "true",
    )
    assert events(alloc, "server")[-1]["RestartReason"] == REASON_NO_RESTARTS


def test_missing_image_and_refused_options_fail_the_task_without_a_container(
    cluster: tuple[NomadDouble, httpx.Client], images: DockerClient
) -> None:
    nomad, api = cluster
    restart = {"Attempts": 2, "Interval": 600 * SECOND, "Delay": SECOND, "Mode": "fail"}
    missing = docker_task("server", "true", image="local/nomadgs-missing:1")
    register(api, docker_job("missing", [missing], restart=restart))  # unrecoverable: no restart
    alloc = wait_alloc(nomad, "missing", lambda a: a["ClientStatus"] == "failed")
    driver, failure, gave_up = events(alloc, "server")[-3:]
    assert (driver["Type"], driver["DisplayMessage"]) == ("Driver", "Downloading image")
    assert failure["Type"] == "Driver Failure"
    assert failure["DriverError"].startswith("Failed to pull `local/nomadgs-missing:1`: Error: image ")
    assert (gave_up["Type"], gave_up["RestartReason"]) == ("Not Restarting", REASON_UNRECOVERABLE)

    privileged = docker_task("server", "true")
    privileged["Config"]["privileged"] = True
    register(api, docker_job("privileged", [privileged]))
    alloc = wait_alloc(nomad, "privileged", lambda a: a["ClientStatus"] == "failed")
    assert [e["DriverError"] for e in events(alloc, "server") if e["Type"] == "Driver Failure"] == [PRIVILEGED_REFUSED]
    assert gone(images, only_alloc(nomad, "missing")["ID"]) and gone(images, alloc["ID"])


def test_template_waits_for_its_variable(cluster: tuple[NomadDouble, httpx.Client]) -> None:
    nomad, api = cluster
    task = docker_task("server", 'echo "token has ${#HF_TOKEN} characters"; exec sleep 60')
    task["Templates"] = [{"DestPath": "secrets/token.env", "EmbeddedTmpl": TOKEN_TEMPLATE, "Envvars": True}]
    register(api, docker_job("x", [task]))
    alloc = wait_alloc(nomad, "x", lambda a: events(a, "server")[-1:] and events(a, "server")[-1]["Type"] == "Template")
    assert events(alloc, "server")[-1]["DisplayMessage"] == "Missing: nomad.var.block(nomad/jobs/x@default.global)"
    assert alloc["TaskStates"]["server"]["State"] == "pending"
    api.put("/v1/var/nomad/jobs/x", json={"Items": {"HF_TOKEN": "hf_0123456789"}}).raise_for_status()
    alloc = wait_alloc(nomad, "x", lambda a: a["TaskStates"]["server"]["State"] == "running")
    deadline = time.monotonic() + 10
    while "token has" not in log(api, alloc["ID"], "server"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert log(api, alloc["ID"], "server") == "token has 13 characters\n"


def test_host_volume_the_client_lacks_fails_placement(cluster: tuple[NomadDouble, httpx.Client]) -> None:
    nomad, api = cluster
    job = docker_job("novol", [docker_task("server", "true")])
    job["TaskGroups"][0]["Volumes"] = {"models": {"Name": "models", "Type": "host", "Source": "models"}}
    plan = api.put("/v1/job/novol/plan", json={"Job": copy.deepcopy(job)}).json()
    metric = plan["FailedTGAllocs"]["inference"]
    assert metric["ConstraintFiltered"] == {"missing compatible host volumes": 1}
    register(api, job)
    nomad.wait_for(lambda n: any(e["Status"] == "blocked" for e in n.evaluations.values()), timeout=10)
    assert not [a for a in nomad.allocations.values() if a["JobID"] == "novol"]
    assert json.dumps(metric)  # plain JSON


def test_stop_sends_sigterm_first_and_kills_after_the_kill_timeout(
    cluster: tuple[NomadDouble, httpx.Client], images: DockerClient
) -> None:
    nomad, api = cluster
    graceful = docker_task(
        "graceful", "trap 'echo term > /alloc/data/graceful; exit 0' TERM; while :; do sleep 0.1; done"
    )
    stubborn = docker_task("stubborn", "trap 'echo ignored > /alloc/data/stubborn' TERM; while :; do sleep 0.1; done")
    register(api, docker_job("stoppable", [graceful, stubborn], job_type="batch"))
    alloc = wait_alloc(nomad, "stoppable", lambda a: a["ClientStatus"] == "running")
    wait_until_running = time.monotonic() + 20
    while len(images.containers.list(filters={"label": f"{LABEL_ALLOC_ID}={alloc['ID']}"})) < 2:
        assert time.monotonic() < wait_until_running
        time.sleep(0.1)
    api.delete("/v1/job/stoppable").raise_for_status()
    deadline = time.monotonic() + 30
    while not gone(images, alloc["ID"]):
        assert time.monotonic() < deadline, "the containers were not removed after the stop"
        time.sleep(0.1)
    data = Path(nomad.client.workdir if nomad.client else "") / alloc["ID"] / "alloc" / "data"
    assert (data / "graceful").read_text() == "term\n"  # SIGTERM first: it exited by itself
    assert (data / "stubborn").read_text() == "ignored\n"  # it ignored SIGTERM: killed after its kill_timeout
