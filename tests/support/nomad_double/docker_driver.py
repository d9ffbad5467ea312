"""The double's docker task driver: a task's `config` block turned into a real container on the local Docker
engine (docker-py), the way Nomad's docker driver (drivers/docker) does it, and the container's life after that:
log collection, exit with exit code and OOM kill, stop with the kill timeout, removal.

Deliberate differences from Nomad's driver (each one is also in the README):
* images are never pulled: an image missing from the local engine is Nomad's "Failed to pull" driver failure,
  treated as unrecoverable (no registry is reachable here), whatever the tag (`latest` included);
* every container uses host networking (the engine runs with `--bridge=none`); `network_mode` other than
  `host` is refused, and `ports`/`port_map` have no effect;
* `ulimit` values above this machine's hard limits (`-1` included) are capped to them: the engine here cannot
  raise a limit (no CAP_SYS_RESOURCE);
* config keys the double does not implement fail the task with a message that says so, instead of being
  ignored.
"""

from __future__ import annotations

import contextlib
import resource
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nomad_gpustack.contract.drivers import DOCKER_KEYS

from .goduration import SECOND, parse_duration
from .jobspec import JSON
from .taskenv import CONTAINER_ALLOC_DIR, CONTAINER_LOCAL_DIR, CONTAINER_SECRETS_DIR, Node, TaskDirs, interpolate_value

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

LABEL_ALLOC_ID = "com.hashicorp.nomad.alloc_id"  # the label Nomad's driver always sets
LABEL_DOUBLE = "org.nomadgs.double"  # ours, on every container the double starts, for cleanup checks ...
SESSION = str(uuid.uuid4())  # ... with this process's ID as its value (engines can be shared)
PRIVILEGED_REFUSED = "Docker privileged mode is disabled on this Nomad agent"
_RLIMITS = {
    "core": resource.RLIMIT_CORE,
    "cpu": resource.RLIMIT_CPU,
    "data": resource.RLIMIT_DATA,
    "fsize": resource.RLIMIT_FSIZE,
    "locks": getattr(resource, "RLIMIT_LOCKS", resource.RLIMIT_NOFILE),
    "memlock": resource.RLIMIT_MEMLOCK,
    "msgqueue": getattr(resource, "RLIMIT_MSGQUEUE", resource.RLIMIT_NOFILE),
    "nofile": resource.RLIMIT_NOFILE,
    "nproc": resource.RLIMIT_NPROC,
    "rss": resource.RLIMIT_RSS,
    "stack": resource.RLIMIT_STACK,
}
# Keys the double handles; the rest of Nomad's docker keys fail the task with NOT_IMPLEMENTED.
_HANDLED = frozenset(
    {
        "image", "args", "entrypoint", "command", "network_mode", "ports", "port_map", "image_pull_timeout",
        "force_pull", "shm_size", "labels", "ulimit", "devices", "privileged", "volumes", "mount", "mounts",
        "work_dir", "init", "readonly_rootfs", "tty", "interactive", "cap_add", "cap_drop", "group_add",
        "sysctl", "security_opt", "pids_limit", "oom_score_adj", "memory_hard_limit", "auth", "auth_soft_fail",
    }
)  # fmt: skip
NOT_IMPLEMENTED = "the nomad double's docker driver does not implement the docker option"


class DriverError(Exception):
    """The driver could not start the task; `recoverable` errors are retried under the restart policy."""

    def __init__(self, message: str, recoverable: bool = False) -> None:
        super().__init__(message)
        self.recoverable = recoverable


@dataclass(frozen=True)
class HostVolume:
    """A client's `host_volume` block: a folder on this machine the jobs' volume requests can name."""

    path: Path
    read_only: bool = False


@dataclass(frozen=True)
class Bind:
    """A bind mount into the container."""

    source: Path
    target: str
    read_only: bool


@dataclass(frozen=True)
class ExitResult:
    """How a container ended, as Nomad's docker handle reports it."""

    exit_code: int
    oom_killed: bool

    @property
    def message(self) -> str:
        if self.oom_killed:
            return "OOM Killed"
        if self.exit_code:
            return f"Docker container exited with non-zero exit code: {self.exit_code}"
        return ""


LogSink = Callable[[str, bytes], None]  # (stream, data)


@dataclass
class ContainerHandle:
    """A started container and the threads copying its output."""

    container: Container
    pumps: list[threading.Thread] = field(default_factory=list)

    @property
    def id(self) -> str:
        container_id: str = self.container.id or ""
        return container_id

    def poll(self) -> ExitResult | None:
        """None while the container runs; its exit once it has stopped (logs drained first)."""
        from docker.errors import NotFound

        try:
            self.container.reload()
        except NotFound:
            return ExitResult(137, False)  # removed behind our back
        state = self.container.attrs["State"]
        if state.get("Running") or state.get("Status") in ("created", "restarting"):
            return None
        for pump in self.pumps:
            pump.join(2)  # the last lines are in the logs before the task shows dead
        return ExitResult(int(state.get("ExitCode") or 0), bool(state.get("OOMKilled")))

    def stop(self, timeout: float) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds (docker stop), as Nomad's StopTask does."""
        from docker.errors import APIError, NotFound

        with contextlib.suppress(NotFound, APIError):
            self.container.stop(timeout=max(0, round(timeout)))
        for pump in self.pumps:
            pump.join(2)

    def remove(self) -> None:
        from docker.errors import APIError, NotFound

        with contextlib.suppress(NotFound, APIError):
            self.container.remove(force=True)


@dataclass(frozen=True)
class StartRequest:
    """Everything the driver needs to start one task."""

    alloc: JSON
    task: JSON
    env: Mapping[str, str]  # the task's environment (container paths)
    dirs: TaskDirs
    binds: list[Bind]  # host volumes of the task's volume_mounts
    node: Node
    on_output: LogSink
    on_event: Callable[[str], None]  # a driver message (the "Driver" task event)


class DockerDriver:
    """Starts tasks as containers on the local engine. `client` defaults to `docker.from_env()`."""

    def __init__(self, client: DockerClient | None = None) -> None:
        self._client = client
        self._lock = threading.Lock()
        self.created: set[str] = set()  # IDs of every container started and not yet removed

    @property
    def client(self) -> DockerClient:
        if self._client is None:
            import docker

            self._client = docker.from_env(timeout=120)
        return self._client

    def available(self) -> bool:
        """Whether the engine answers (the docker driver's fingerprint)."""
        try:
            return bool(self.client.ping())
        except Exception:
            return False

    def start(self, request: StartRequest) -> ContainerHandle:
        """Create and start the container; DriverError when it cannot be."""
        from docker.errors import APIError, ImageNotFound

        config = interpolate_value(dict(request.task.get("Config") or {}), request.env, request.node)
        image = str(config.get("image") or "")
        if not image:
            raise DriverError("image name required for docker driver")
        options = container_options(request, config)
        try:
            if config.get("force_pull"):
                raise ImageNotFound(image)
            self.client.images.get(image)
        except ImageNotFound:
            request.on_event("Downloading image")
            raise DriverError(
                f"Failed to pull `{image}`: Error: image {image} not found "
                "(the nomad double never pulls; it is not in the local Docker engine)"
            ) from None
        name = f"{request.task['Name']}-{request.alloc['ID']}"
        with contextlib.suppress(Exception):  # a container left by an earlier start of this task
            self.client.containers.get(name).remove(force=True)
        try:
            container = self.client.containers.create(image, name=name, detach=True, **options)
        except APIError as exc:
            raise DriverError(f"failed to create container: {exc.explanation or exc}", recoverable=True) from None
        with self._lock:
            self.created.add(container.id or "")
        handle = ContainerHandle(container)
        try:
            container.start()
        except APIError as exc:
            self.discard(handle)
            raise DriverError(f"Failed to start container {container.id}: {exc.explanation or exc}") from None
        for stream in ("stdout", "stderr"):
            pump = threading.Thread(
                target=_pump, args=(container, stream, request.on_output), name=f"docker-{stream}", daemon=True
            )
            pump.start()
            handle.pumps.append(pump)
        return handle

    def discard(self, handle: ContainerHandle) -> None:
        """Remove a container that has stopped (Nomad's docker GC removes it once the task is done with it)."""
        handle.remove()
        with self._lock:
            self.created.discard(handle.id)

    def close(self) -> None:
        """Remove every container still left (a run that did not finish its teardown)."""
        from docker.errors import APIError, NotFound

        with self._lock:
            leftover, self.created = set(self.created), set()
        for container_id in leftover:
            with contextlib.suppress(NotFound, APIError):
                self.client.containers.get(container_id).remove(force=True)
        if self._client is not None:
            self._client.close()


def _pump(container: Container, stream: str, sink: LogSink) -> None:
    """Copy one of the container's streams, from its start until it stops (docker logs --follow)."""
    with contextlib.suppress(Exception):
        for data in container.logs(stdout=stream == "stdout", stderr=stream == "stderr", stream=True, follow=True):
            sink(stream, data)


# --- config -> container options ------------------------------------------------------------------------------


def container_options(request: StartRequest, config: JSON) -> dict[str, Any]:
    """docker-py `containers.create` keyword arguments for the task, as Nomad's createContainerConfig builds
    them. Raises DriverError for what Nomad's default plugin config refuses and what the double lacks."""
    task = request.task
    for key in config:
        if key not in DOCKER_KEYS:
            raise DriverError(f'failed to decode driver config: An argument named "{key}" is not expected here.')
        if key not in _HANDLED:
            raise DriverError(f"{NOT_IMPLEMENTED} {key!r}")
    if config.get("privileged"):
        raise DriverError(PRIVILEGED_REFUSED)
    mode = config.get("network_mode") or "host"
    if mode != "host":
        raise DriverError(f"network_mode {mode!r}: the nomad double runs every container with host networking")
    resources = task.get("Resources") or {}
    memory, reservation = _memory(resources, config)
    options: dict[str, Any] = {
        "environment": dict(request.env),
        "labels": {**_labels(config.get("labels")), LABEL_ALLOC_ID: request.alloc["ID"], LABEL_DOUBLE: SESSION},
        "network_mode": "host",
        "mem_limit": memory,
        "memswap_limit": memory,  # no swap: over the limit is an OOM kill, as on a Nomad client
        "cpu_shares": int(resources.get("CPU") or 100),
        "cap_drop": ["NET_RAW", *config.get("cap_drop", [])],  # Nomad's default allow_caps lack net_raw
        "mounts": _mounts(request, config),
    }
    if reservation:
        options["mem_reservation"] = reservation
    if config.get("entrypoint"):
        options["entrypoint"] = [str(a) for a in config["entrypoint"]]
    command = [str(config["command"])] if config.get("command") else []
    command += [str(a) for a in config.get("args") or []]
    if command:
        options["command"] = command
    if config.get("shm_size"):
        options["shm_size"] = int(config["shm_size"])
    if config.get("ulimit"):
        options["ulimits"] = _ulimits(config["ulimit"])
    if config.get("devices"):
        options["devices"] = [_device(d) for d in config["devices"]]
    simple = {
        "work_dir": "working_dir",
        "init": "init",
        "readonly_rootfs": "read_only",
        "tty": "tty",
        "interactive": "stdin_open",
        "cap_add": "cap_add",
        "group_add": "group_add",
        "security_opt": "security_opt",
        "pids_limit": "pids_limit",
        "oom_score_adj": "oom_score_adj",
    }
    for key, option in simple.items():
        if config.get(key) not in (None, "", [], False, 0):
            options[option] = config[key]
    if config.get("sysctl"):
        options["sysctls"] = _one_map(config["sysctl"])
    return options


def _memory(resources: JSON, config: JSON) -> tuple[int, int]:
    """(limit, reservation) in bytes: MemoryMB is the hard limit, unless memory_hard_limit or MemoryMaxMB
    (oversubscription) is set, which then is the limit and MemoryMB the reservation."""
    memory_mb = int(resources.get("MemoryMB") or 300)
    hard = int(config.get("memory_hard_limit") or resources.get("MemoryMaxMB") or 0)
    if hard:
        return hard * 1024 * 1024, memory_mb * 1024 * 1024
    return memory_mb * 1024 * 1024, 0


def _one_map(value: Any) -> dict[str, str]:
    """HCL blocks arrive as a list of maps in API JSON; plain maps stay as they are."""
    if isinstance(value, list):
        merged: dict[str, str] = {}
        for item in value:
            merged.update({str(k): str(v) for k, v in item.items()})
        return merged
    return {str(k): str(v) for k, v in (value or {}).items()}


def _labels(value: Any) -> dict[str, str]:
    return _one_map(value)


def _ulimits(value: Any) -> list[Any]:
    """`ulimit { nofile = "2048:4096", memlock = "-1" }`, each value capped to this machine's hard limit."""
    from docker.types import Ulimit

    out = []
    for name, spec in _one_map(value).items():
        if name not in _RLIMITS:
            raise DriverError(f"failed to parse ulimit: unknown ulimit {name!r}")
        soft_text, _, hard_text = spec.partition(":")
        hard_text = hard_text or soft_text
        try:
            soft, hard = int(soft_text), int(hard_text)
        except ValueError:
            raise DriverError(f"failed to parse ulimit {name}={spec!r}") from None
        limit = resource.getrlimit(_RLIMITS[name])[1]
        cap = limit if limit != resource.RLIM_INFINITY else -1

        def capped(v: int, cap: int = cap) -> int:
            if cap == -1:
                return v
            return cap if v < 0 or v > cap else v

        out.append(Ulimit(name=name, soft=capped(soft), hard=capped(hard)))
    return out


def _device(device: JSON) -> str:
    host = device.get("host_path") or ""
    if not host:
        raise DriverError("device host_path is required")
    container = device.get("container_path") or host
    return f"{host}:{container}:{device.get('cgroup_permissions') or 'rwm'}"


def _mounts(request: StartRequest, config: JSON) -> list[Any]:
    """The task directories where Nomad mounts them, the host volumes of its volume_mounts, and the config's
    own `volumes`/`mount` (host paths refused, as with Nomad's default `volumes { enabled = false }`)."""
    from docker.types import Mount

    dirs = request.dirs
    mounts = [
        Mount(CONTAINER_ALLOC_DIR, str(dirs.alloc), type="bind"),
        Mount(CONTAINER_LOCAL_DIR, str(dirs.local), type="bind"),
        Mount(CONTAINER_SECRETS_DIR, str(dirs.secrets), type="bind"),
    ]
    mounts += [Mount(b.target, str(b.source), type="bind", read_only=b.read_only) for b in request.binds]
    task_root = dirs.local.parent
    alloc_root = dirs.alloc.parent
    for spec in config.get("volumes") or []:
        source, _, rest = str(spec).partition(":")
        target, _, mode = rest.partition(":")
        host = (task_root / source).resolve() if not source.startswith("/") else Path(source)
        if not host.is_relative_to(alloc_root):
            raise DriverError(f"volumes are not enabled; cannot mount host paths: {spec!r}")
        mounts.append(Mount(target, str(host), type="bind", read_only="ro" in mode.split(",")))
    for item in [*(config.get("mount") or []), *(config.get("mounts") or [])]:
        kind = item.get("type") or "volume"
        if kind == "tmpfs":
            mounts.append(Mount(item["target"], None, type="tmpfs", read_only=bool(item.get("readonly"))))
            continue
        source = str(item.get("source") or "")
        host = (task_root / source).resolve() if not source.startswith("/") else Path(source)
        if kind != "bind" or not host.is_relative_to(alloc_root):
            raise DriverError(f"volumes are not enabled; cannot mount host path: {source!r} {str(alloc_root)!r}")
        mounts.append(Mount(item["target"], str(host), type="bind", read_only=bool(item.get("readonly"))))
    return mounts


def kill_timeout(task: JSON) -> float:
    """The task's kill_timeout in seconds (Nomad's default 5 s)."""
    value = task.get("KillTimeout")
    if isinstance(value, str):
        return parse_duration(value) / SECOND
    return int(value or 5 * SECOND) / SECOND
