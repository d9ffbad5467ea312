"""Client mode: the double acts as a Nomad client node on this machine.

For every allocation it places, `raw_exec` tasks run as local processes (`Config.command` + `Config.args`, no
shell) with Nomad's task environment, dynamic ports are free ports on 127.0.0.1, output goes to files under the
work dir and to the logs endpoint, services are registered in a real Consul agent (provider `consul`) or in the
double's own registry (provider `nomad`, whose http/tcp checks this module runs itself), and deployment health
follows the checks like Nomad's health tracker: all checks passing for MinHealthyTime → healthy; not before
HealthyDeadline → unhealthy.

Deliberate simplifications, compared to Nomad:
* no restarts: a process exit is final (Terminated event, task dead, allocation failed for service jobs);
* a task's services stay registered after its process exits (Nomad deregisters them), until the job is stopped,
  purged or replaced, so that tests can watch the Consul check turn critical;
* only `raw_exec` runs; another driver gets a `Driver Failure`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from .context import ScenarioContext
from .goduration import SECOND, format_duration
from .jobspec import JSON, group_named, main_tasks, prestart_tasks
from .mutations import CheckRef, alloc_checks, alloc_services, check_id, port_of, service_id
from .objects import task_event

_INTERPOLATION = re.compile(r"\$\{([^}]+)\}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_name(label: str) -> str:
    """Nomad cleans env var names: anything but letters, digits and `_` becomes `_`."""
    return re.sub(r"[^A-Za-z0-9_]", "_", label)


def interpolate(text: str, env: dict[str, str]) -> str:
    """`${NAME}` → env value; unknown names stay as written, as Nomad leaves them."""
    return _INTERPOLATION.sub(lambda m: env.get(m[1], m[0]), text)


@dataclass
class ConsulCheck:
    check_id: str
    service_id: str


@dataclass
class AllocRun:
    """One allocation on the local node."""

    alloc: JSON
    root: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    pumps: list[threading.Thread] = field(default_factory=list)
    consul_services: list[str] = field(default_factory=list)
    consul_checks: list[ConsulCheck] = field(default_factory=list)
    nomad_checks: list[CheckRef] = field(default_factory=list)
    nomad_status: dict[str, str] = field(default_factory=dict)  # check ID → last reported status
    started: float = 0.0
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


class LocalClient:
    """A client node running raw_exec tasks as local processes; pass it as `NomadDouble(client=...)`."""

    def __init__(
        self,
        consul_address: str | None,
        workdir: Path,
        check_interval: float = 0.2,
        kill_grace: float = 3.0,
    ) -> None:
        self.consul_address = consul_address.rstrip("/") if consul_address else None
        self.workdir = Path(workdir)
        self.check_interval = check_interval  # supervision period: processes, checks, health
        self.kill_grace = kill_grace  # SIGTERM → SIGKILL
        self._lock = threading.Lock()
        self._processes: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        self._http = httpx.Client(timeout=5)

    @property
    def processes(self) -> dict[tuple[str, str], subprocess.Popen[bytes]]:
        """Every process started so far, by (allocation ID, task name)."""
        with self._lock:
            return dict(self._processes)

    def plan_failures(self, job: JSON) -> JSON | None:
        return None

    def run(self, ctx: ScenarioContext) -> None:
        placement = ctx.place(port_value=lambda _spec: free_port())
        ctx.complete_eval(placement.deployment_id)
        runs = [AllocRun(ctx.alloc(a), self.workdir / a) for a in placement.alloc_ids]
        try:
            for run in runs:
                self._start(ctx, run)
            self._supervise(ctx, runs, placement.deployment_id)
        finally:
            for run in runs:
                self._teardown(run)

    # --- start --------------------------------------------------------------------------------------------

    def _start(self, ctx: ScenarioContext, run: AllocRun) -> None:
        tasks = prestart_tasks(run.group) + main_tasks(run.group)
        for sub in ("alloc/logs", "alloc/data", "alloc/tmp"):
            (run.root / sub).mkdir(parents=True, exist_ok=True)
        for task in tasks:
            ctx.event(run.id, task["Name"], "Received")
        for task in tasks:
            for sub in ("local", "secrets", "tmp"):
                (run.root / task["Name"] / sub).mkdir(parents=True, exist_ok=True)
            ctx.event(run.id, task["Name"], "Task Setup", Message="Building Task Directory")
        for task in prestart_tasks(run.group):
            process = self._launch(ctx, run, task)
            if process is None:
                return
            while process.poll() is None:
                ctx.sleep(self.check_interval)
            code = process.returncode
            ctx.update(run.id, task["Name"], _terminated(code), state="dead", failed=code != 0)
            if code != 0:
                self._fail_health(ctx, run)
                return
        for task in main_tasks(run.group):
            self._launch(ctx, run, task)
        run.started = time.monotonic()
        mains = [t["Name"] for t in main_tasks(run.group)]
        ctx.register_services(run.id, mains)
        run.nomad_checks = alloc_checks(run.alloc, "nomad", mains)
        if self.consul_address:
            for service, task_name in alloc_services(run.alloc, "consul", mains):
                self._consul_register(run, service, task_name)

    def _launch(self, ctx: ScenarioContext, run: AllocRun, task: JSON) -> subprocess.Popen[bytes] | None:
        name = task["Name"]
        if task.get("Driver") != "raw_exec":
            error = f"the nomad double's local client only runs raw_exec tasks, not {task.get('Driver')!r}"
            failure = task_event("Driver Failure", DriverError=error, FailsTask=True)
            ctx.update(run.id, name, failure, state="dead", failed=True)
            self._fail_health(ctx, run)
            return None
        env = self._task_env(run, task)
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
            ctx.update(run.id, name, task_event("Driver Failure", DriverError=error, FailsTask=True), "dead", True)
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
        ctx.update(run.id, name, task_event("Started"), state="running")
        return process

    def _task_env(self, run: AllocRun, task: JSON) -> dict[str, str]:
        """Nomad's task environment (client/taskenv): the agent's own environment, the NOMAD_* variables,
        the port variables, then the task's Env with those interpolated."""
        alloc, job = run.alloc, run.alloc["Job"]
        task_dir = run.root / task["Name"]
        resources = task.get("Resources") or {}
        nomad = {
            "NOMAD_ALLOC_DIR": str(run.root / "alloc"),
            "NOMAD_TASK_DIR": str(task_dir / "local"),
            "NOMAD_SECRETS_DIR": str(task_dir / "secrets"),
            "NOMAD_ALLOC_ID": alloc["ID"],
            "NOMAD_SHORT_ALLOC_ID": alloc["ID"][:8],
            "NOMAD_ALLOC_NAME": alloc["Name"],
            "NOMAD_ALLOC_INDEX": alloc["Name"].rsplit("[", 1)[-1].rstrip("]"),
            "NOMAD_TASK_NAME": task["Name"],
            "NOMAD_GROUP_NAME": alloc["TaskGroup"],
            "NOMAD_JOB_ID": job["ID"],
            "NOMAD_JOB_NAME": job["Name"],
            "NOMAD_JOB_PARENT_ID": job.get("ParentID") or "",
            "NOMAD_NAMESPACE": job["Namespace"],
            "NOMAD_REGION": job["Region"],
            "NOMAD_DC": "dc1",
            "NOMAD_CPU_LIMIT": str(resources.get("CPU", 100)),
            "NOMAD_MEMORY_LIMIT": str(resources.get("MemoryMB", 300)),
        }
        for port in alloc["AllocatedResources"]["Shared"]["Ports"] or []:
            label, value = env_name(port["Label"]), str(port["Value"])
            nomad[f"NOMAD_PORT_{label}"] = value
            nomad[f"NOMAD_HOST_PORT_{label}"] = value
            nomad[f"NOMAD_IP_{label}"] = "127.0.0.1"
            nomad[f"NOMAD_ADDR_{label}"] = f"127.0.0.1:{value}"
            nomad[f"NOMAD_HOST_ADDR_{label}"] = f"127.0.0.1:{value}"
        for key, value in {**(job.get("Meta") or {}), **(task.get("Meta") or {})}.items():
            nomad[f"NOMAD_META_{env_name(key)}"] = str(value)
        env = {**os.environ, **nomad}
        env.update({k: interpolate(str(v), env) for k, v in (task.get("Env") or {}).items()})
        return env

    def _pump(self, ctx: ScenarioContext, run: AllocRun, task: str, stream: str, pipe: IO[bytes]) -> None:
        """Copy a process's output to `alloc/logs/<task>.<stream>.0` (Nomad's layout) and to the logs endpoint."""
        with pipe, open(run.root / "alloc" / "logs" / f"{task}.{stream}.0", "ab") as out:
            while data := os.read(pipe.fileno(), 65536):
                out.write(data)
                out.flush()
                ctx.state.append_log(run.id, task, stream, data)

    # --- services -----------------------------------------------------------------------------------------

    def _consul_register(self, run: AllocRun, service: JSON, task: str | None) -> None:
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
            run.consul_checks.append(ConsulCheck(body["CheckID"], sid))
        registration = {
            "ID": sid,
            "Name": service["Name"],
            "Tags": service.get("Tags") or [],
            "Meta": service.get("Meta") or {},
            "Address": "127.0.0.1",
            "Port": port,
            "Checks": checks,
        }
        response = self._http.put(f"{self.consul_address}/v1/agent/service/register", json=registration)
        response.raise_for_status()
        run.consul_services.append(sid)

    def _consul_statuses(self) -> dict[str, str]:
        response = self._http.get(f"{self.consul_address}/v1/agent/checks")
        response.raise_for_status()
        return {check_id: check["Status"] for check_id, check in response.json().items()}

    def _run_nomad_checks(self, ctx: ScenarioContext, run: AllocRun) -> bool:
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
                ctx.set_checks(run.id, [ref], status, output, code)
        return all_ok

    # --- supervision --------------------------------------------------------------------------------------

    def _supervise(self, ctx: ScenarioContext, runs: list[AllocRun], deployment_id: str) -> None:
        """Until the run is aborted: notice process exits, run checks, decide deployment health."""
        deployment_decided = not deployment_id
        run_to_completion = ctx.job["Type"] in ("batch", "sysbatch")
        while True:
            consul = self._consul_statuses() if any(r.consul_checks for r in runs) else {}
            for run in runs:
                self._reap(ctx, run)
                # Nomad keeps running checks for the allocation's life, not only until health is decided.
                nomad_ok = self._run_nomad_checks(ctx, run) if run.started else False
                if run.healthy is None and deployment_id:
                    self._track_health(
                        ctx, run, nomad_ok and all(consul.get(c.check_id) == "passing" for c in run.consul_checks)
                    )
            if not deployment_decided and any(r.healthy is False for r in runs):
                deployment_decided = True
                ctx.fail_deployment(deployment_id, "Failed due to unhealthy allocations", None, then=self)
            elif not deployment_decided and all(r.healthy for r in runs):
                deployment_decided = True
                ctx.succeed_deployment(deployment_id)
            if run_to_completion and all(r.done for r in runs):
                return  # a batch job whose tasks have all exited
            ctx.sleep(self.check_interval)

    def _reap(self, ctx: ScenarioContext, run: AllocRun) -> None:
        for name, process in run.processes.items():
            code = process.poll()
            state = ctx.alloc(run.id)["TaskStates"][name]
            if code is None or state["State"] == "dead":
                continue
            for pump in run.pumps:
                pump.join(1)  # the last output is in the logs before the task shows dead
            service_job = run.alloc["Job"]["Type"] == "service"
            ctx.update(run.id, name, _terminated(code), state="dead", failed=service_job or code != 0)
            self._fail_health(ctx, run)
        main = {t["Name"] for t in main_tasks(run.group)}
        run.done = all(run.processes.get(n) is not None and run.processes[n].poll() is not None for n in main)

    def _fail_health(self, ctx: ScenarioContext, run: AllocRun) -> None:
        """A task failed before health was decided: the allocation is unhealthy."""
        if run.healthy is None and run.alloc["DeploymentID"]:
            run.healthy = False
            ctx.set_health(run.id, False)

    def _track_health(self, ctx: ScenarioContext, run: AllocRun, checks_ok: bool) -> None:
        """Nomad's health tracker: healthy once every check passes (and tasks run) for MinHealthyTime."""
        update = run.group.get("Update") or {}
        mode = update.get("HealthCheck", "checks")
        if mode == "manual" or not run.started:
            return
        now = time.monotonic()
        running = bool(run.processes) and all(p.poll() is None for p in run.processes.values())
        if running and (checks_ok or mode == "task_states"):
            run.passing_since = run.passing_since or now
            if now - run.passing_since >= update.get("MinHealthyTime", 0) / SECOND:
                run.healthy = True
                ctx.set_health(run.id, True)
                return
        else:
            run.passing_since = None
        if now - run.started > update.get("HealthyDeadline", 300 * SECOND) / SECOND:
            task = main_tasks(run.group)[0]["Name"]
            ctx.event(run.id, task, "Alloc Unhealthy", Message="health checks did not pass within the healthy deadline")
            self._fail_health(ctx, run)

    # --- teardown -----------------------------------------------------------------------------------------

    def _teardown(self, run: AllocRun) -> None:
        """SIGTERM every process group, SIGKILL after `kill_grace`, deregister the Consul services."""
        for process in run.processes.values():
            _stop_process(process, self.kill_grace)
        for pump in run.pumps:
            pump.join(2)
        for sid in run.consul_services:
            with contextlib.suppress(httpx.HTTPError):
                self._http.put(f"{self.consul_address}/v1/agent/service/deregister/{sid}")
        run.consul_services.clear()

    def close(self) -> None:
        """Kill anything still running (a run that did not finish its teardown in time)."""
        for process in self.processes.values():
            _stop_process(process, 0)
        self._http.close()


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
