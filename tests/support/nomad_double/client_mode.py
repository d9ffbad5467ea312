"""Client mode: the double acts as a Nomad client node on this machine.

For every allocation it places, dynamic ports are free ports on 127.0.0.1 and tasks run for real:
* `docker` tasks as containers on the local Docker engine (docker_driver, task_runner): templates rendered
  into the task directories, host volumes bind-mounted, restarts under the restart policy, OOM kills and
  image-pull failures reported as Nomad reports them; their services are registered when the task starts and
  deregistered when it exits, as Nomad's service hook does;
* `raw_exec` tasks as local processes (`Config.command` + `Config.args`, no shell) with Nomad's task
  environment (the fallback for machines without Docker).
Output goes to files under the work dir and to the logs endpoint; services are registered in a real Consul
agent (provider `consul`) or in the double's own registry (provider `nomad`, whose http/tcp checks this module
runs itself); deployment health follows the checks like Nomad's health tracker: all checks passing for
MinHealthyTime → healthy; not before HealthyDeadline → unhealthy. A job needing a host volume the client does
not have, or the docker driver without a reachable engine, fails placement as Nomad's scheduler would.

Deliberate simplifications, compared to Nomad:
* raw_exec tasks are never restarted: a process exit is final (Terminated event, task dead, allocation failed
  for service jobs), and their services stay registered after the exit, until the job is stopped, purged or
  replaced, so that tests can watch the Consul check turn critical;
* `check_restart` is not applied; the supervision loop runs every `check_interval`, not at each check's own
  interval;
* the `Killing`/`Killed` events of a stop are written when the stop is applied, and the containers are then
  stopped (with their kill_timeout) and removed;
* other drivers get a `Driver Failure`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from .context import AllocContext, Runnable, Version, failed_tg_allocs
from .docker_driver import DockerDriver, HostVolume
from .goduration import SECOND, format_duration
from .jobspec import JSON, PortSpec, group_named, main_tasks, prestart_tasks
from .mutations import (
    CheckRef,
    alloc_checks,
    alloc_services,
    canary,
    check_id,
    port_of,
    service_id,
    service_meta,
    service_tags,
)
from .objects import task_event
from .task_runner import DockerTaskRunner
from .taskenv import Node, TaskDirs, default_attributes, interpolate, task_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ConsulCheck:
    check_id: str
    service_id: str


@dataclass
class AllocRun:
    """One allocation on the local node."""

    alloc: JSON
    root: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # raw_exec tasks
    runners: dict[str, DockerTaskRunner] = field(default_factory=dict)  # docker tasks
    pumps: list[threading.Thread] = field(default_factory=list)
    consul_services: list[str] = field(default_factory=list)
    consul_checks: list[ConsulCheck] = field(default_factory=list)
    consul_definitions: dict[str, tuple[JSON, str | None]] = field(default_factory=dict)  # ID → (service, task)
    task_services: dict[str, list[str]] = field(default_factory=dict)  # docker task → its Consul service IDs
    nomad_checks: list[CheckRef] = field(default_factory=list)
    nomad_status: dict[str, str] = field(default_factory=dict)  # check ID → last reported status
    started: float = 0.0  # when the main tasks started (checks run from then on)
    health_from: float = 0.0  # when the health deadline started: the alloc runner's start (health_hook.go)
    passing_since: float | None = None
    healthy: bool | None = None
    done: bool = False  # every main task has exited

    @property
    def id(self) -> str:
        alloc_id: str = self.alloc["ID"]
        return alloc_id

    @property
    def group(self) -> JSON:
        return group_named(self.alloc["Job"], self.alloc["TaskGroup"])

    def main_running(self) -> bool:
        """Every main task runs (a docker task waiting to restart does not)."""
        mains = [t["Name"] for t in main_tasks(self.group)]
        if not mains:
            return False
        for name in mains:
            if name in self.runners:
                if not self.runners[name].running:
                    return False
            elif name not in self.processes or self.processes[name].poll() is not None:
                return False
        return True


class LocalClient:
    """A client node running docker tasks as containers and raw_exec tasks as local processes; pass it as
    `NomadDouble(client=...)`.

    `host_volumes` are the client's `host_volume` blocks (name → folder, or HostVolume for read-only ones);
    `node_meta` its `meta` block; `docker` the driver (default: the local engine through docker-py, created on
    the first docker task).
    """

    def __init__(
        self,
        consul_address: str | None,
        workdir: Path,
        check_interval: float = 0.2,
        kill_grace: float = 3.0,
        host_volumes: Mapping[str, str | Path | HostVolume] | None = None,
        node_meta: Mapping[str, str] | None = None,
        docker: DockerDriver | None = None,
    ) -> None:
        self.consul_address = consul_address.rstrip("/") if consul_address else None
        self.workdir = Path(workdir)
        self.check_interval = check_interval  # supervision period: processes, containers, checks, health
        self.kill_grace = kill_grace  # raw_exec: SIGTERM → SIGKILL
        self.host_volumes = {
            name: v if isinstance(v, HostVolume) else HostVolume(Path(v)) for name, v in (host_volumes or {}).items()
        }
        self.node_meta = dict(node_meta or {})
        self._docker = docker
        self._lock = threading.Lock()
        self._processes: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        self._containers: dict[tuple[str, str], str] = {}
        self._http = httpx.Client(timeout=5)

    @property
    def docker(self) -> DockerDriver:
        if self._docker is None:
            self._docker = DockerDriver()
        return self._docker

    @property
    def processes(self) -> dict[tuple[str, str], subprocess.Popen[bytes]]:
        """Every process started so far, by (allocation ID, task name)."""
        with self._lock:
            return dict(self._processes)

    @property
    def containers(self) -> dict[tuple[str, str], str]:
        """The latest container ID of every docker task started so far, by (allocation ID, task name)."""
        with self._lock:
            return dict(self._containers)

    def node(self, ctx: AllocContext) -> Node:
        """The node as interpolation sees it (`${attr.*}`, `${meta.*}`, `${node.*}`)."""
        node_id, name = ctx.node
        return Node(node_id, name, self.node_meta, default_attributes({"driver.docker": "1"}))

    def plan_failures(self, job: JSON) -> JSON | None:
        problem = self._placement_problem(job)
        return failed_tg_allocs(job, _filtered(problem)) if problem is not None else None

    def _placement_problem(self, job: JSON) -> str | None:
        """Why this node cannot take the job, in the words of Nomad's feasibility checkers."""
        for group in job.get("TaskGroups") or []:
            drivers = {t.get("Driver") for t in group.get("Tasks") or []}
            if "docker" in drivers and not self.docker.available():
                return "missing drivers"
            for request in (group.get("Volumes") or {}).values():
                if request.get("Type") == "host" and request.get("Source") not in self.host_volumes:
                    return "missing compatible host volumes"
        return None

    start_after = 0.02  # the scheduler's latency for this client's jobs

    def placement_failures(self, version: Version) -> JSON | None:
        return self.plan_failures(version.job)

    def port(self, spec: PortSpec) -> int | None:
        return free_port()

    def after_revert(self) -> Runnable:
        return self

    def run_alloc(self, ctx: AllocContext) -> None:
        """One allocation on this node: start its tasks, then supervise them until the server stops it."""
        run = AllocRun(ctx.alloc(), self.workdir / ctx.alloc_id, health_from=self._now(ctx))
        try:
            self._start(ctx, run)
            self._supervise(ctx, run)
        finally:
            self._teardown(ctx, run)

    # --- start --------------------------------------------------------------------------------------------

    def _start(self, ctx: AllocContext, run: AllocRun) -> None:
        tasks = prestart_tasks(run.group) + main_tasks(run.group)
        for sub in ("alloc/logs", "alloc/data", "alloc/tmp"):
            (run.root / sub).mkdir(parents=True, exist_ok=True)
        for task in tasks:
            ctx.event(task["Name"], "Received")
        for task in tasks:
            for sub in ("local", "secrets", "tmp"):
                (run.root / task["Name"] / sub).mkdir(parents=True, exist_ok=True)
            ctx.event(task["Name"], "Task Setup", Message="Building Task Directory")
        node = self.node(ctx) if any(t.get("Driver") == "docker" for t in tasks) else None
        for task in prestart_tasks(run.group):
            if task.get("Driver") == "docker":
                assert node is not None
                runner = self._runner(ctx, run, task, node)
                runner.start()
                while not runner.dead:
                    ctx.sleep(self.check_interval)
                    runner.tick()
                if runner.failed:
                    self._fail_health(ctx, run)
                    return
                continue
            process = self._launch(ctx, run, task)
            if process is None:
                return
            while process.poll() is None:
                ctx.sleep(self.check_interval)
            code = process.returncode
            ctx.update(task["Name"], _terminated(code), state="dead", failed=code != 0)
            if code != 0:
                self._fail_health(ctx, run)
                return
        for task in main_tasks(run.group):
            if task.get("Driver") == "docker":
                assert node is not None
                self._runner(ctx, run, task, node).start()
            else:
                self._launch(ctx, run, task)
        run.started = self._now(ctx)
        mains = [t["Name"] for t in main_tasks(run.group)]
        ctx.register_services(mains)
        run.nomad_checks = alloc_checks(run.alloc, "nomad", mains)
        if self.consul_address:
            for service, task_name in alloc_services(run.alloc, "consul", mains):
                if task_name not in run.runners:  # docker tasks register theirs when they start
                    self._consul_register(run, service, task_name)

    def _runner(self, ctx: AllocContext, run: AllocRun, task: JSON, node: Node) -> DockerTaskRunner:
        hooks = _RunnerHooks(self, ctx, run)
        runner = DockerTaskRunner(ctx, run.alloc, task, run.root, self.docker, node, self.host_volumes, hooks)
        if self.consul_address:
            runner.consul = _ConsulTemplates(self._http, self.consul_address)
        run.runners[task["Name"]] = runner
        return runner

    def _launch(self, ctx: AllocContext, run: AllocRun, task: JSON) -> subprocess.Popen[bytes] | None:
        name = task["Name"]
        if task.get("Driver") != "raw_exec":
            error = f"the nomad double's local client runs docker and raw_exec tasks, not {task.get('Driver')!r}"
            failure = task_event("Driver Failure", DriverError=error, FailsTask=True)
            ctx.update(name, failure, state="dead", failed=True)
            self._fail_health(ctx, run)
            return None
        env = task_env(run.alloc, task, TaskDirs.of(run.root, name), in_container=False)
        config = task.get("Config") or {}
        argv = [interpolate(str(config.get("command", "")), env)]
        argv += [interpolate(str(a), env) for a in config.get("args") or []]
        try:
            process = subprocess.Popen(
                argv,
                cwd=run.root / name,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, so a stop reaches its children too
            )
        except OSError as exc:
            error = f"failed to launch command with executor: {exc}"
            ctx.update(name, task_event("Driver Failure", DriverError=error, FailsTask=True), "dead", True)
            self._fail_health(ctx, run)
            return None
        with self._lock:
            self._processes[(run.id, name)] = process
        run.processes[name] = process
        for stream, pipe in (("stdout", process.stdout), ("stderr", process.stderr)):
            assert pipe is not None
            pump = threading.Thread(
                target=self._pump, args=(ctx, run, name, stream, pipe), name=f"log-{name}-{stream}", daemon=True
            )
            pump.start()
            run.pumps.append(pump)
        ctx.update(name, task_event("Started"), state="running")
        return process

    def _pump(self, ctx: AllocContext, run: AllocRun, task: str, stream: str, pipe: IO[bytes]) -> None:
        """Copy a process's output to `alloc/logs/<task>.<stream>.0` (Nomad's layout) and to the logs endpoint."""
        with pipe, open(run.root / "alloc" / "logs" / f"{task}.{stream}.0", "ab") as out:
            while data := os.read(pipe.fileno(), 65536):
                out.write(data)
                out.flush()
                ctx.state.append_log(run.id, task, stream, data)

    # --- services -----------------------------------------------------------------------------------------

    def _consul_register(self, run: AllocRun, service: JSON, task: str | None) -> str:
        port = port_of(run.alloc, service.get("PortLabel"))
        sid = service_id(run.alloc, service, task)
        checks = []
        for check in service.get("Checks") or []:
            check_port = port_of(run.alloc, check.get("PortLabel")) or port
            digest = hashlib.sha1(f"{sid}/{check.get('Name')}/{check.get('Path')}".encode()).hexdigest()
            body: JSON = {
                "CheckID": f"_nomad-check-{digest}",
                "Name": check.get("Name") or f'service: "{service["Name"]}" check',
                "Interval": format_duration(check.get("Interval") or SECOND),
                "Timeout": format_duration(check.get("Timeout") or SECOND),
            }
            if check.get("Type") == "tcp":
                body["TCP"] = f"127.0.0.1:{check_port}"
            else:
                body["HTTP"] = f"http://127.0.0.1:{check_port}{check.get('Path') or '/'}"
                body["Method"] = check.get("Method") or "GET"
                if check.get("Header"):
                    body["Header"] = check["Header"]
            checks.append(body)
            if all(c.check_id != body["CheckID"] for c in run.consul_checks):
                run.consul_checks.append(ConsulCheck(body["CheckID"], sid))
        # Nomad interpolates a service's name, tags and meta with its task's env, a group service's with the
        # allocation's, before registering it (client/taskenv/services.go InterpolateService):
        # `metrics_port = "${NOMAD_PORT_metrics}"` arrives as the port. The NOMAD_* variables and the task's Env.
        spec = next((t for t in run.group.get("Tasks") or [] if task and t.get("Name") == task), {"Name": ""})
        env = task_env(run.alloc, spec, TaskDirs.of(run.root, spec["Name"]), in_container=True)
        registration = {
            "ID": sid,
            "Name": interpolate(service["Name"], env),
            # a canary's tags are its CanaryTags
            "Tags": [interpolate(str(tag), env) for tag in service_tags(run.alloc, service)],
            "Meta": {key: interpolate(str(value), env) for key, value in service_meta(run.alloc, service).items()},
            "Address": "127.0.0.1",
            "Port": port,
            "Checks": checks,
        }
        response = self._http.put(f"{self.consul_address}/v1/agent/service/register", json=registration)
        response.raise_for_status()
        if sid not in run.consul_services:
            run.consul_services.append(sid)
        run.consul_definitions[sid] = (service, task)
        return sid

    def _consul_deregister(self, run: AllocRun, service_ids: list[str]) -> None:
        for sid in service_ids:
            with contextlib.suppress(httpx.HTTPError):
                self._http.put(f"{self.consul_address}/v1/agent/service/deregister/{sid}")
            if sid in run.consul_services:
                run.consul_services.remove(sid)
            run.consul_definitions.pop(sid, None)
        run.consul_checks = [c for c in run.consul_checks if c.service_id not in service_ids]

    def _consul_statuses(self) -> dict[str, str]:
        response = self._http.get(f"{self.consul_address}/v1/agent/checks")
        response.raise_for_status()
        return {check_id: check["Status"] for check_id, check in response.json().items()}

    def _run_nomad_checks(self, ctx: AllocContext, run: AllocRun) -> bool:
        """Run the allocation's nomad-provider checks once (every `check_interval`, not at each check's own
        Interval); report status changes; True when all pass."""
        all_ok = True
        for ref in run.nomad_checks:
            port = port_of(run.alloc, ref.check.get("PortLabel") or ref.service.get("PortLabel"))
            timeout = (ref.check.get("Timeout") or SECOND) / SECOND
            try:
                if ref.check.get("Type") == "tcp":
                    socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
                    ok, output, code = True, "nomad: tcp ok", 0
                else:
                    url = f"http://127.0.0.1:{port}{ref.check.get('Path') or '/'}"
                    response = httpx.request(ref.check.get("Method") or "GET", url, timeout=timeout)
                    ok, output, code = response.is_success, f"HTTP: {response.status_code}", response.status_code
            except (OSError, httpx.HTTPError) as exc:
                ok, output, code = False, f"nomad: {exc}", 0
            all_ok &= ok
            status = "success" if ok else "failure"
            cid = check_id(run.alloc, ref.service, ref.check, ref.task)
            if run.nomad_status.get(cid) != status:  # report changes only: each report bumps the index
                run.nomad_status[cid] = status
                ctx.set_checks([ref], status, output, code)
        return all_ok

    # --- supervision --------------------------------------------------------------------------------------

    def _supervise(self, ctx: AllocContext, run: AllocRun) -> None:
        """Until the allocation is stopped: notice exits, restart docker tasks, run checks, decide its health
        (again after an in-place update into a new deployment)."""
        run_to_completion = ctx.job["Type"] in ("batch", "sysbatch")
        generation = ctx.generation
        while True:
            if ctx.generation != generation:
                generation = ctx.generation
                was_canary, run.alloc = canary(run.alloc), ctx.alloc()
                if run.alloc["DeploymentStatus"] is None:  # health_hook.go: watched again, from now
                    run.healthy, run.passing_since, run.health_from = None, None, self._now(ctx)
                    if run.alloc["ClientStatus"] == "failed":
                        self._fail_health(ctx, run)
                if was_canary and not canary(run.alloc) and self.consul_address:
                    # Promoted: the service hook registers the same IDs again with the normal tags and meta.
                    for service, task in list(run.consul_definitions.values()):
                        self._consul_register(run, service, task)
            for runner in list(run.runners.values()):
                if not runner.prestart:
                    runner.tick()
            consul = self._consul_statuses() if run.consul_checks else {}
            self._reap(ctx, run)
            # Nomad keeps running checks for the allocation's life, not only until health is decided.
            nomad_ok = self._run_nomad_checks(ctx, run) if run.started else False
            if run.healthy is None and run.alloc["DeploymentID"]:
                consul_ok = all(consul.get(c.check_id) == "passing" for c in run.consul_checks)
                self._track_health(ctx, run, nomad_ok and consul_ok)
            if run_to_completion and run.done:
                return  # a batch job whose tasks have all exited
            ctx.sleep(self.check_interval)

    @staticmethod
    def _now(ctx: AllocContext) -> float:
        """Nomad time in seconds: health timers are measured on the double's clock."""
        return ctx.clock.seconds()

    def _reap(self, ctx: AllocContext, run: AllocRun) -> None:
        for name, process in run.processes.items():
            code = process.poll()
            state = ctx.alloc()["TaskStates"][name]
            if code is None or state["State"] == "dead":
                continue
            for pump in run.pumps:
                pump.join(1)  # the last output is in the logs before the task shows dead
            service_job = run.alloc["Job"]["Type"] == "service"
            ctx.update(name, _terminated(code), state="dead", failed=service_job or code != 0)
            self._fail_health(ctx, run)
        main = {t["Name"] for t in main_tasks(run.group)}
        run.done = all(
            run.runners[n].dead
            if n in run.runners
            else run.processes.get(n) is not None and run.processes[n].poll() is not None
            for n in main
        )

    def _fail_health(self, ctx: AllocContext, run: AllocRun) -> None:
        """A task failed before health was decided: the allocation is unhealthy (health_hook.go)."""
        if run.healthy is None and run.alloc["DeploymentID"]:
            run.healthy = False
            ctx.set_health(False)

    def _track_health(self, ctx: AllocContext, run: AllocRun, checks_ok: bool) -> None:
        """Nomad's health tracker: healthy once every check passes (and tasks run) for MinHealthyTime."""
        update = run.group.get("Update") or {}
        mode = update.get("HealthCheck", "checks")
        if mode == "manual" or not run.started:
            return
        now = self._now(ctx)
        if run.main_running() and (checks_ok or mode == "task_states"):
            run.passing_since = run.passing_since or now
            if now - run.passing_since >= update.get("MinHealthyTime", 0) / SECOND:
                run.healthy = True
                ctx.set_health(True)
                return
        else:
            run.passing_since = None
        if now - run.health_from > update.get("HealthyDeadline", 300 * SECOND) / SECOND:
            task = main_tasks(run.group)[0]["Name"]
            ctx.event(task, "Alloc Unhealthy", Message="health checks did not pass within the healthy deadline")
            self._fail_health(ctx, run)

    # --- teardown -----------------------------------------------------------------------------------------

    def _teardown(self, ctx: AllocContext, run: AllocRun) -> None:
        """Deregister the Consul services and wait the shutdown delays, then stop the containers (their
        kill_timeout) and process groups (SIGTERM, SIGKILL after `kill_grace`).

        Nomad's order: the allocation's pre-kill hooks run before any task is killed (allocrunner/alloc_runner.go
        killTasks), and the group service hook's PreKill deregisters the group's services, then waits the group's
        shutdown_delay (allocrunner/group_service_hook.go preKillLocked); each task runner then runs its own
        pre-kill hooks, the service hook's PreKilling deregistering the task's services, and waits the task's
        shutdown_delay before killing it (taskrunner/task_runner.go handleKill, taskrunner/service_hook.go). So a
        load balancer following Consul stops sending requests before the instance stops answering. The delays
        are Nomad time (the double's clock); an agent shutting down (the double closing) cuts them short, as
        shutdownDelayCtx does. Deliberately left out: the `Waiting for shutdown delay` task event (the stop's
        events are written by the server side, see mutations.stop_alloc) and `-no-shutdown-delay`."""
        closing = ctx.cluster.closing
        group_services = [sid for sid, (_, task) in run.consul_definitions.items() if task is None]
        if self.consul_address and group_services:
            self._consul_deregister(run, group_services)
            closing.wait(ctx.clock.real_seconds(int(run.group.get("ShutdownDelay") or 0)))
        if self.consul_address:
            self._consul_deregister(run, list(run.consul_services))
        began = time.monotonic()
        # Tasks are killed in parallel, each after its own delay: here in the order their delays end.
        for runner in sorted(run.runners.values(), key=lambda r: int(r.task.get("ShutdownDelay") or 0)):
            if runner.handle is not None:
                delay = ctx.clock.real_seconds(int(runner.task.get("ShutdownDelay") or 0))
                closing.wait(max(0.0, began + delay - time.monotonic()))
            runner.stop()
        for process in run.processes.values():
            _stop_process(process, self.kill_grace)
        for pump in run.pumps:
            pump.join(2)
        if self.consul_address:
            self._consul_deregister(run, list(run.consul_services))
        run.task_services.clear()

    def close(self) -> None:
        """Kill anything still running (a run that did not finish its teardown in time)."""
        for process in self.processes.values():
            _stop_process(process, 0)
        if self._docker is not None:
            self._docker.close()
        self._http.close()


@dataclass
class _RunnerHooks:
    """What the client does for a docker task runner: Consul registration while the task runs (Nomad's service
    hook), and for a main task that failed for good, its siblings killed and the allocation unhealthy."""

    client: LocalClient
    ctx: AllocContext
    run: AllocRun

    def started(self, name: str) -> None:
        client, run = self.client, self.run
        runner = run.runners[name]
        if runner.handle is not None:
            with client._lock:
                client._containers[(run.id, name)] = runner.handle.id
        if client.consul_address and not runner.prestart:
            for service, owner in alloc_services(run.alloc, "consul", [name]):
                if owner == name:
                    run.task_services.setdefault(name, []).append(client._consul_register(run, service, name))

    def exited(self, name: str) -> None:
        self.client._consul_deregister(self.run, self.run.task_services.pop(name, []))

    def dead(self, name: str, failed: bool) -> None:
        runner = self.run.runners[name]
        if failed and not runner.prestart:
            for sibling in self.run.runners.values():
                if sibling is not runner and not sibling.prestart and not sibling.dead:
                    sibling.kill_for_sibling(name)
            self.client._fail_health(self.ctx, self.run)


@dataclass
class _ConsulTemplates:
    """What the templates' `service` and `key` read from the real Consul agent (consul-template's queries)."""

    http: httpx.Client
    address: str

    def health_service(self, name: str, tag: str) -> list[JSON]:
        params = {"passing": "1", **({"tag": tag} if tag else {})}
        response = self.http.get(f"{self.address}/v1/health/service/{name}", params=params)
        response.raise_for_status()
        entries: list[JSON] = response.json()
        return entries

    def key(self, path: str) -> str | None:
        response = self.http.get(f"{self.address}/v1/kv/{path}", params={"raw": "true"})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.text


def _filtered(reason: str) -> JSON:
    """The AllocMetric of a one-node cluster whose node a feasibility checker filtered out for `reason`."""
    return {
        "NodesEvaluated": 1,
        "NodesFiltered": 1,
        "NodesExhausted": 0,
        "NodesInPool": 1,
        "NodesAvailable": {"dc1": 1},
        "DimensionExhausted": None,
        "ConstraintFiltered": {reason: 1},
    }


def _stop_process(process: subprocess.Popen[bytes], grace: float) -> None:
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _terminated(code: int) -> JSON:
    """A process exit as Nomad reports it: a signal death is exit code 128+N with Signal N."""
    if code < 0:
        return task_event("Terminated", ExitCode=128 - code, Signal=-code)
    return task_event("Terminated", ExitCode=code)
