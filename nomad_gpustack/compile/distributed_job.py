"""The job of a distributed deployment (`nomad.nodes` > 1): the one-node job's `inference` group becomes the
leaders, and each worker rank of each replica gets a group of its own. Pure. Design: ARCHITECTURE.md."""

from __future__ import annotations

import copy
from typing import Any

from ..contract.jobspec import Constraint, Job, Port, Service, ServiceCheck, Task, TaskGroup, Template
from ..contract.metadata import DOWNLOAD_TASK
from ..contract.ranks import worker_group
from .distributed import (
    ENV_FILE,
    LEADER_PORT,
    NODE_RANK_ENV,
    Distribution,
    leader_finds_workers,
    leader_service,
    leader_tag,
    leader_template,
    worker_service,
    worker_tag,
    worker_template,
)
from .job import GROUP, task_name
from .resolve import MAIN_PORT, Resolved

DISTINCT_HOSTS = Constraint(Operand="distinct_hosts", RTarget="true")


def _env_template(data: str) -> Template:
    # Re-rendered when the other ranks' services change: the engine restarts with the new addresses.
    return Template(DestPath=ENV_FILE, EmbeddedTmpl=data, Envvars=True, ChangeMode="restart")


def _leader(group: TaskGroup, r: Resolved, dist: Distribution) -> None:
    """The `inference` group's main task as rank 0: the rendezvous port and service, the workers' addresses."""
    main = next(t for t in group["Tasks"] if t["Name"] == task_name(r))
    if dist.workers_find_leader:
        group["Networks"][0]["DynamicPorts"].append(Port(Label=LEADER_PORT))
        # No check: workers wait for the leader to be registered, not for its engine to be healthy (it is
        # healthy only once they have joined).
        main["Services"].append(
            Service(
                Name=leader_service(r.service_name),
                Tags=[leader_tag("${NOMAD_ALLOC_INDEX}")],  # interpolated by the client (taskenv/services.go)
                PortLabel=LEADER_PORT,
                AddressMode="host",
                Provider="consul",
            )
        )
    if leader_finds_workers((*r.entrypoint, *r.args)):
        main.setdefault("Templates", []).append(_env_template(leader_template(r.service_name, dist.nodes)))


def _worker_service(r: Resolved, dist: Distribution, replica: int, rank: int) -> Service:
    service = Service(
        Name=worker_service(r.service_name),
        Tags=[worker_tag(replica, rank), f"rank-{rank}"],
        PortLabel=MAIN_PORT,
        AddressMode="host",
        Provider="consul",
    )
    if dist.worker_check:
        service["Checks"] = [
            ServiceCheck(
                Name=f"{r.model_name} rank {rank}",
                Type="tcp",
                Interval=r.service.check_interval,
                Timeout=r.service.check_timeout,
            )
        ]
    return service


def _worker_task(leader: Task, r: Resolved, dist: Distribution, replica: int, rank: int) -> Task:
    task = copy.deepcopy(leader)
    # The leader's driver config with the worker's program in its place (keys in the leader's order).
    config: dict[str, Any] = {}
    for key, value in task["Config"].items():
        if key in ("entrypoint", "args", "command"):
            continue
        config[key] = value
        if key == "image" and dist.worker_entrypoint:
            config["entrypoint"] = list(dist.worker_entrypoint)
        if key in ("image", "command") and dist.worker_args:
            config["args"] = list(dist.worker_args)
    if r.driver != "docker":
        config = {"command": dist.worker_command, **({"args": list(dist.worker_args)} if dist.worker_args else {})}
    task["Config"] = config
    task["Env"] = {**task.get("Env", {}), NODE_RANK_ENV: str(rank)}
    task["Services"] = [_worker_service(r, dist, replica, rank)]
    templates = [t for t in task.get("Templates", []) if t["DestPath"] != ENV_FILE]
    if dist.workers_find_leader:
        templates.append(_env_template(worker_template(r.service_name, replica)))
    if templates:
        task["Templates"] = templates
    else:
        task.pop("Templates", None)
    if not dist.worker_weights:
        task.pop("VolumeMounts", None)
    return task


def _worker_group(leaders: TaskGroup, r: Resolved, dist: Distribution, replica: int, rank: int) -> TaskGroup:
    group = copy.deepcopy(leaders)
    group["Name"] = worker_group(replica, rank)
    group["Count"] = 1
    group["Networks"][0]["DynamicPorts"] = [Port(Label=MAIN_PORT)]
    tasks = [t for t in leaders["Tasks"] if dist.worker_weights or t["Name"] != DOWNLOAD_TASK]
    group["Tasks"] = [
        _worker_task(t, r, dist, replica, rank) if t["Name"] == task_name(r) else copy.deepcopy(t) for t in tasks
    ]
    if not dist.worker_weights:
        group.pop("Volumes", None)
    return group


def _render_on_restart(group: TaskGroup) -> None:
    """A group whose engine reads the other ranks' addresses renders its templates again on each restart
    (`restart { render_templates = true }`, client/allocrunner/taskrunner/template_hook.go Prestart): an engine
    that failed because a rank left waits in the template until the set is whole again, instead of starting
    with the old addresses and using up its restart attempts."""
    if any(t["DestPath"] == ENV_FILE for task in group["Tasks"] for t in task.get("Templates", [])):
        group["RestartPolicy"]["RenderTemplates"] = True


def distributed_job(job: Job, r: Resolved) -> Job:
    """The one-node job of `r` made a distributed one, as `r.distribution` says. `job` is not changed."""
    dist = r.distribution
    if dist is None:
        return job
    out = copy.deepcopy(job)
    leaders = next(g for g in out["TaskGroups"] if g["Name"] == GROUP)
    _leader(leaders, r, dist)
    out["TaskGroups"] = [leaders] + [
        _worker_group(leaders, r, dist, replica, rank)
        for replica in range(r.placement.replicas)
        for rank in range(1, dist.nodes)
    ]
    for group in out["TaskGroups"]:
        _render_on_restart(group)
    # Every allocation of the job on a client of its own (scheduler/feasible/feasible.go, jobDistinctHosts):
    # a replica spans `nodes` clients, and two ranks never share one's GPUs.
    constraints = [c for c in out.get("Constraints", []) if c.get("Operand") != "distinct_hosts"]
    out["Constraints"] = [*constraints, DISTINCT_HOSTS]
    return out
