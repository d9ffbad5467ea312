"""The life of one docker task in client mode, as Nomad's task runner (client/allocrunner/taskrunner) leads it:
templates rendered into the task directory, the driver started, the container's exit turned into task events,
and restarts under the task's restart policy.

Templates that read Consul (`service`, `key`) are watched while the task lives, as Nomad's template manager
does (client/allocrunner/taskrunner/template/template.go handleTemplateRerenders): a change is written and,
with `change_mode = "restart"`, restarts the task (`Restart Signaled`, "Template with change_mode restart
re-rendered"); a render that waits for a missing dependency changes nothing. The double re-renders on each
supervision tick rather than on Consul's blocking queries, and other change modes only write the file.
A restart re-renders the templates first when the restart policy says `render_templates`
(template_hook.go Prestart, renderOnTaskRestart), so it waits in "Missing: ..." like a first start.

Events, as Nomad writes them: `Template` ("Missing: ..." while a variable does not exist), `Driver`
("Downloading image" before a pull failure), `Driver Failure`, `Started`, `Terminated` (exit code, exit
message, `oom_killed` detail), `Restarting` (with the delay), `Not Restarting` (fails the task), `Killing`
("Template failed: ..."), `Sibling Task Failed`. `Received` and `Task Setup` come from the client, `Killing`
and `Killed` of a stop from the server side of the double (see mutations.stop_alloc).

The runner is driven by the client's supervision loop (`tick`), not by a thread of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from .context import AllocContext
from .docker_driver import Bind, ContainerHandle, DockerDriver, DriverError, ExitResult, HostVolume, StartRequest
from .docker_driver import kill_timeout as task_kill_timeout
from .goduration import SECOND
from .jobspec import JSON, group_named, is_prestart
from .objects import task_event
from .restarts import Decision, RestartTracker
from .taskenv import Node, TaskDirs, task_env
from .templates import ConsulReader, Missing, TaskTemplates, TemplateError, render_task_templates

RunnerState = Literal["pending", "blocked", "running", "waiting", "dead"]


class Hooks(Protocol):
    """What the client does when a task starts, exits, or is dead for good."""

    def started(self, task: str) -> None: ...

    def exited(self, task: str) -> None: ...

    def dead(self, task: str, failed: bool) -> None: ...


@dataclass
class DockerTaskRunner:
    ctx: AllocContext
    alloc: JSON
    task: JSON
    alloc_root: Path
    driver: DockerDriver
    node: Node
    host_volumes: Mapping[str, HostVolume]
    hooks: Hooks
    state: RunnerState = "pending"
    failed: bool = False
    handle: ContainerHandle | None = None
    restart_at: float = 0.0
    template_env: dict[str, str] | None = None  # None until the templates have rendered
    missing_reported: str = ""
    consul: ConsulReader | None = None  # what `service` and `key` read
    templates: TaskTemplates | None = None  # the last render
    restart_signaled: bool = False  # a template change restarts the task: its exit is not a failure
    tracker: RestartTracker = field(init=False)

    def __post_init__(self) -> None:
        batch = self.alloc["Job"]["Type"] in ("batch", "sysbatch")
        self.tracker = RestartTracker(
            self.task["RestartPolicy"], restart_on_success=not (batch or self.prestart), now=self.ctx.clock.seconds
        )

    @property
    def name(self) -> str:
        name: str = self.task["Name"]
        return name

    @property
    def prestart(self) -> bool:
        return is_prestart(self.task)

    @property
    def dirs(self) -> TaskDirs:
        return TaskDirs.of(self.alloc_root, self.name)

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def dead(self) -> bool:
        return self.state == "dead"

    # --- the loop -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Render the templates (first start only), then start the container."""
        if self.template_env is None and not self._render_templates():
            return
        env = task_env(self.alloc, self.task, self.dirs, in_container=True, node=self.node, extra=self.template_env)
        try:
            binds = self._binds()
            request = StartRequest(
                self.alloc, self.task, env, self.dirs, binds, self.node, self._output, self._driver_message
            )
            self.handle = self.driver.start(request)
        except DriverError as exc:
            self.ctx.update(self.name, task_event("Driver Failure", DriverError=str(exc)))
            self._apply(self.tracker.after_start_error(exc.recoverable))
            return
        self.state = "running"
        self.ctx.update(self.name, task_event("Started"), state="running")
        self.hooks.started(self.name)

    def tick(self) -> None:
        """Notice an exit, start a restart that is due, retry templates that wait for a variable, re-render the
        watched templates."""
        if self.state == "blocked":
            self.start()
        elif self.state == "running" and self.handle is not None:
            result = self.handle.poll()
            if result is not None:
                self._exited(result)
            else:
                self._watch_templates()
        elif self.state == "waiting" and self.ctx.clock.seconds() >= self.restart_at:
            self.start()

    def _watch_templates(self) -> None:
        """Render the watched templates again; a change is written, and `change_mode = "restart"` restarts the
        task (template.go handleChangeModeRestart: Restart with a TaskRestartSignal event)."""
        if self.templates is None or not self.templates.watched:
            return
        try:
            fresh = self._render()
        except Missing:
            return  # consul-template keeps the last file while a dependency is missing
        except (TemplateError, OSError) as exc:
            event = task_event("Killing", DisplayMessage=f"Template failed: {exc}", FailsTask=True)
            self.stop()
            self._die(event, failed=True)
            return
        changed = [dest for dest, text in fresh.texts.items() if self.templates.texts.get(dest) != text]
        self.templates, self.template_env = fresh, fresh.env
        modes = {t["DestPath"]: t.get("ChangeMode") or "restart" for t in self.task.get("Templates") or []}
        if any(modes.get(dest) == "restart" for dest in changed) and self.handle is not None:
            message = "Template with change_mode restart re-rendered"
            self.ctx.update(self.name, task_event("Restart Signaled", DisplayMessage=message))
            self.restart_signaled = True
            self.handle.stop(task_kill_timeout(self.task))

    def _exited(self, result: ExitResult) -> None:
        assert self.handle is not None
        self.driver.discard(self.handle)
        self.handle = None
        details = {"oom_killed": "true" if result.oom_killed else "false"}
        if result.message:
            details["exit_message"] = result.message
        terminated = task_event("Terminated", ExitCode=result.exit_code, Message=result.message, Details=details)
        self.ctx.update(self.name, terminated)
        self.hooks.exited(self.name)
        if self.restart_signaled:  # restarts.go GetState: a triggered restart is immediate and not counted
            self.restart_signaled = False
            self._apply(Decision("restart", "", 0.0))
            return
        self._apply(self.tracker.after_exit(result.exit_code))

    def _apply(self, decision: Decision) -> None:
        if decision.verdict == "restart":
            event = task_event("Restarting", RestartReason=decision.reason, StartDelay=int(decision.delay * SECOND))
            self.ctx.update(self.name, event, state="pending", restarted=True)
            self.state, self.restart_at = "waiting", self.ctx.clock.seconds() + decision.delay
            if (self.task.get("RestartPolicy") or {}).get("RenderTemplates") and self.task.get("Templates"):
                self.template_env = None  # the restart renders the templates again before the driver starts
        elif decision.verdict == "not-restarting":
            event = task_event("Not Restarting", RestartReason=decision.reason, FailsTask=True)
            self._die(event, failed=True)
        else:
            self._die(None, failed=False)

    def _die(self, event: JSON | None, failed: bool) -> None:
        self.state, self.failed = "dead", failed
        self.ctx.update(self.name, event, state="dead", failed=failed)
        self.hooks.dead(self.name, failed)

    # --- hooks before the driver ----------------------------------------------------------------------------

    def _render_templates(self) -> bool:
        """The template hook: True once rendered; False while a variable is missing or after a failure."""
        try:
            self.templates = self._render()
            self.template_env = self.templates.env
            self.missing_reported = ""
            return True
        except Missing as exc:
            if self.missing_reported != exc.dependency:
                self.missing_reported = exc.dependency
                event = task_event("Template", DisplayMessage=f"Missing: {exc.dependency}")
                self.ctx.update(self.name, event)
            self.state = "blocked"
            return False
        except (TemplateError, OSError) as exc:
            event = task_event("Killing", DisplayMessage=f"Template failed: {exc}", FailsTask=True)
            self._die(event, failed=True)
            return False

    def _render(self) -> TaskTemplates:
        base = task_env(self.alloc, self.task, self.dirs, in_container=True, node=self.node)
        namespace = self.alloc["Namespace"]
        root = self.alloc_root / self.name
        return render_task_templates(self.task, root, base, self._variable, namespace, self.consul)

    def _variable(self, path: str) -> Mapping[str, str] | None:
        state = self.ctx.state
        with state.cond:
            variable = state.variables.get((self.alloc["Namespace"], path))
            return dict(variable["Items"]) if variable is not None else None

    def _binds(self) -> list[Bind]:
        """The task's volume_mounts as bind mounts of the client's host volumes."""
        group = group_named(self.alloc["Job"], self.alloc["TaskGroup"])
        requests = group.get("Volumes") or {}
        binds = []
        for mount in self.task.get("VolumeMounts") or []:
            request = requests.get(mount.get("Volume"))
            if request is None:
                raise DriverError(f"volume_mount {mount.get('Volume')!r} names no volume of the group")
            volume = self.host_volumes.get(request.get("Source") or "")
            if request.get("Type") != "host" or volume is None:
                raise DriverError(f"host volume {request.get('Source')!r} is not configured on this client")
            read_only = bool(mount.get("ReadOnly") or request.get("ReadOnly") or volume.read_only)
            binds.append(Bind(volume.path, mount["Destination"], read_only))
        return binds

    # --- driver callbacks -----------------------------------------------------------------------------------

    def _output(self, stream: str, data: bytes) -> None:
        """Container output to `alloc/logs/<task>.<stream>.0` (Nomad's layout) and the logs endpoint."""
        with open(self.dirs.alloc / "logs" / f"{self.name}.{stream}.0", "ab") as out:
            out.write(data)
        self.ctx.state.append_log(self.alloc["ID"], self.name, stream, data)

    def _driver_message(self, message: str) -> None:
        self.ctx.update(self.name, task_event("Driver", DriverMessage=message))

    # --- stopping -------------------------------------------------------------------------------------------

    def kill_for_sibling(self, sibling: str) -> None:
        """A sibling main task failed: this one is killed (Nomad's `Sibling Task Failed`)."""
        self.stop()
        if self.state != "dead":
            self._die(task_event("Sibling Task Failed", FailedSibling=sibling), failed=False)

    def stop(self) -> None:
        """Stop the container with the task's kill_timeout and remove it (no state change: a stop's events come
        from the server side, and an aborted run may not write)."""
        handle, self.handle = self.handle, None
        if handle is not None:
            handle.stop(task_kill_timeout(self.task))
            with contextlib.suppress(Exception):
                self.driver.discard(handle)
