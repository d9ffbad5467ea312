"""`NomadDouble`: an in-process HTTP double of Nomad's API on 127.0.0.1, started and stopped by tests.

with NomadDouble() as nomad:
    nomad.set_scenario("job-id", scenarios.crash_loop(stderr="ValueError: boom"))
    ...  # point the client under test at nomad.address
"""

from __future__ import annotations

import enum
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Final

from . import mutations, scenarios
from .client_mode import LocalClient
from .clock import Clock
from .cluster import Cluster
from .context import Runnable
from .faults import Faults
from .http_api import Backend, DoubleHTTPServer, RecordedRequest
from .jobspec import JSON
from .jsoncopy import clone
from .objects import main_task_names, task_event

DEPLOYMENT_DESCRIPTIONS = {  # nomad/structs/deployment.go status descriptions
    "running": "Deployment is running",
    "paused": "Deployment is paused",
    "successful": "Deployment completed successfully",
    "failed": "Deployment marked as failed",
    "cancelled": "Cancelled because job is stopped",
}
CLIENT_DESCRIPTIONS = {  # client/allocrunner/alloc_runner.go getClientStatus
    "failed": "Failed tasks",
    "running": "Tasks are running",
    "pending": "No tasks have started",
    "complete": "All tasks have completed",
}
# Nomad time runs this much faster than the wall clock when scenarios script the allocations: a 10m progress
# deadline passes in 2s, a 30s reschedule delay in 0.1s, while a scenario's steps (10 ms) stay much shorter
# than any of Nomad's durations. Client mode runs real processes, so it keeps the real clock.
SCENARIO_TIME_SCALE = 300.0


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET: Final = _Unset.UNSET  # "leave unchanged", where None is a meaningful value (undecided health)


class ScenarioError(RuntimeError):
    """A scenario or client-mode run crashed in its background thread."""


class NomadDouble:
    """The double: state, scenarios, HTTP server. Use as a context manager (or `start()` / `stop()`).

    `acl_tokens` maps secrets to policies and turns ACL checks on: "management", Nomad's namespace policies
    "read", "write", "scale", single capabilities ("scale-job" ...) and "node:read", space-separated (acl.py);
    "read-job" and "submit-job" alone are the read and write policies.
    `client` runs raw_exec tasks as local processes: it is the default scenario of every job.
    `client_nodes` is how many client nodes the cluster has (`local-client-a`, `-b`, ...; one, `local-client`
    or `nomad-double`, by default): each allocation is placed on one of them by the scheduler (distinct_hosts
    honoured), and in client mode runs on this machine as that node, with its own ports on 127.0.0.1.
    `heartbeat_interval` is the event stream's `{}` period (Nomad: 30 s); `max_wait` caps blocking queries.
    `node_devices` are the device groups `/v1/nodes?resources=true` reports for the double's one node;
    `nodes` (full nodes, `objects.new_node`) replace that node in `/v1/nodes` and `/v1/node/:id` (listing only:
    allocations still run on the one node).
    `tls` serves HTTPS with that server context.
    `job_max_count` is the server's `job_max_count` setting: validate, plan and register refuse a job with more
    instances in all, as Nomad does (0: no limit).
    `time_scale`: how much faster than the wall clock Nomad's time runs (see clock.py): every duration of a job
    (reschedule delays, progress and health deadlines, restart delays) and of the server (the watcher's 1s
    batch) is measured on it, and so are the timestamps the API shows. Default: SCENARIO_TIME_SCALE with
    scenarios, 1 (real time) with a `client`.
    """

    def __init__(
        self,
        acl_tokens: Mapping[str, str] | None = None,
        client: LocalClient | None = None,
        heartbeat_interval: float = 0.5,
        max_wait: float = 300.0,
        node_devices: list[JSON] | None = None,
        nodes: list[JSON] | None = None,
        tls: ssl.SSLContext | None = None,
        job_max_count: int = 0,
        time_scale: float | None = None,
        client_nodes: int = 1,
    ) -> None:
        default: Runnable = client if client is not None else scenarios.rollout()
        self.client = client
        if time_scale is None:
            time_scale = 1.0 if client is not None else SCENARIO_TIME_SCALE
        node_name = "local-client" if client is not None else "nomad-double"
        names = [f"{node_name}-{chr(ord('a') + i)}" for i in range(client_nodes)] if client_nodes > 1 else None
        self.cluster = Cluster(default, node_name=node_name, time_scale=time_scale, node_names=names)
        self.cluster.job_max_count = job_max_count
        self.faults = Faults()
        self._backend = Backend(
            cluster=self.cluster,
            faults=self.faults,
            acl_tokens=dict(acl_tokens) if acl_tokens is not None else None,
            heartbeat_interval=heartbeat_interval,
            max_wait=max_wait,
            node_devices=list(node_devices or []),
            nodes=clone(nodes) if nodes is not None else None,
        )
        self._tls = tls
        self._server: DoubleHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> NomadDouble:
        self._server = DoubleHTTPServer(self._backend, self._tls)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="nomad-double-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Abort every run (client mode stops its processes), then close the server."""
        self.cluster.close(timeout=15)
        if self.client is not None:
            self.client.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> NomadDouble:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
        if kind is None and self.cluster.errors:
            raise ScenarioError(f"a background run failed: {self.cluster.errors[0]!r}") from self.cluster.errors[0]

    @property
    def address(self) -> str:
        if self._server is None:
            raise RuntimeError("the double is not running")
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    # --- scenarios ----------------------------------------------------------------------------------------

    @property
    def default_scenario(self) -> Runnable:
        return self.cluster.default_scenario

    @default_scenario.setter
    def default_scenario(self, scenario: Runnable) -> None:
        """Applies to every job version registered from now on (unless `set_scenario` named the job)."""
        self.cluster.default_scenario = scenario

    def set_scenario(self, job_id: str, scenario: Runnable) -> None:
        self.cluster.scenarios[job_id] = scenario

    # --- observation --------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._backend.requests_lock:
            return list(self._backend.requests)

    @property
    def connections(self) -> int:
        """Client connections open now."""
        return self._server.connections if self._server is not None else 0

    @property
    def peak_connections(self) -> int:
        """The most client connections open at once since the double started (or `reset_peak_connections`)."""
        return self._server.peak_connections if self._server is not None else 0

    def reset_peak_connections(self) -> None:
        if self._server is not None:
            with self._server._connections_lock:
                self._server.peak_connections = self._server.connections

    @property
    def clock(self) -> Clock:
        """Nomad's time in the double (`time_scale`)."""
        return self.cluster.clock

    @property
    def index(self) -> int:
        with self.cluster.state.cond:
            return self.cluster.state.index

    def _snapshot(self, table: Mapping[str, JSON]) -> dict[str, JSON]:
        with self.cluster.state.cond:
            return clone(dict(table))

    @property
    def jobs(self) -> dict[str, JSON]:
        """Current version of every job, keyed `"<namespace>/<job ID>"`."""
        with self.cluster.state.cond:
            return {f"{ns}/{job_id}": clone(job) for (ns, job_id), job in self.cluster.state.jobs.items()}

    def job_versions(self, job_id: str, namespace: str = "default") -> list[JSON]:
        with self.cluster.state.cond:
            return clone(self.cluster.state.job_versions.get((namespace, job_id), []))

    @property
    def allocations(self) -> dict[str, JSON]:
        return self._snapshot(self.cluster.state.allocs)

    @property
    def evaluations(self) -> dict[str, JSON]:
        return self._snapshot(self.cluster.state.evals)

    @property
    def deployments(self) -> dict[str, JSON]:
        return self._snapshot(self.cluster.state.deployments)

    @property
    def services(self) -> dict[str, JSON]:
        """Nomad-provider service registrations, by registration ID."""
        return self._snapshot(self.cluster.state.services)

    def wait_for(self, predicate: Callable[[NomadDouble], bool], timeout: float = 5.0) -> None:
        """Block until `predicate(self)` holds, re-checking after every state change; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        state = self.cluster.state
        with state.cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met within {timeout}s")
                state.cond.wait(remaining)

    def wait_for_held(self, path: str, timeout: float = 5.0) -> None:
        """Block until a request to `path` (a blocking query, an event stream, a log follower) waits in the
        double for a change, having seen every change so far: the next change answers it (or wakes it).
        TimeoutError otherwise."""
        now = self.index  # read before taking held_cond: handlers take the state's lock first, then held_cond
        backend = self._backend
        with backend.held_cond:
            if not backend.held_cond.wait_for(lambda: any(p == path and i >= now for p, i in backend.held), timeout):
                raise TimeoutError(f"no request to {path} waited for a change within {timeout}s")

    # --- manual control -----------------------------------------------------------------------------------

    def after_request(self, method: str, path_regex: str, action: Callable[[], object], count: int = 1) -> None:
        """Run `action` (e.g. `modify_job`) when the next matching request has been handled, just before its
        answer goes out: a deterministic "someone else changed it in between"."""
        self.faults.after(method, path_regex, action, count)

    def modify_job(self, job_id: str, namespace: str = "default", meta: dict[str, str] | None = None) -> int:
        """A concurrent change by someone else: a new job version (JobModifyIndex and Version bumped, `meta`
        merged into Job.Meta). No evaluation is created. Returns the new JobModifyIndex."""
        return self.cluster.modify_job(namespace, job_id, meta)

    def update_allocation(
        self,
        alloc_id: str,
        client_status: str | None = None,
        task_state: str | None = None,
        task_events: list[JSON] | None = None,
        healthy: bool | _Unset | None = UNSET,
        task: str | None = None,
        failed: bool | None = None,
    ) -> None:
        """One client update, in one transaction: `task_events` (dicts with `Type` plus any TaskEvent fields)
        and `task_state` apply to `task` (default: the first main task); ClientStatus follows the task
        states unless `client_status` forces it; `healthy` sets DeploymentStatus.Healthy (None = undecided)."""
        with self.cluster.state.transaction() as tx:
            alloc = tx.state.allocs[alloc_id]
            name = task or main_task_names(alloc)[0]
            events = [task_event(e["Type"], **{k: v for k, v in e.items() if k != "Type"}) for e in task_events or []]
            if events or task_state is not None or failed is not None:
                mutations.client_update(tx, alloc_id, name, events, task_state, failed)
            if client_status is not None:
                mutations.set_client_status(tx, alloc, client_status, CLIENT_DESCRIPTIONS.get(client_status, ""))
            if healthy is not UNSET:
                mutations.set_alloc_health(tx, alloc_id, healthy)

    def update_deployment(
        self,
        deployment_id: str,
        status: str | None = None,
        description: str | None = None,
        healthy_allocs: int | Mapping[str, int] | None = None,
    ) -> None:
        """Change a deployment: `healthy_allocs` as an int applies to every task group. A status without a
        description gets Nomad's description for it; `successful` marks the job version stable."""
        with self.cluster.state.transaction() as tx:
            deployment = tx.state.deployments[deployment_id]
            if healthy_allocs is not None:
                for name, group in deployment["TaskGroups"].items():
                    count = healthy_allocs if isinstance(healthy_allocs, int) else healthy_allocs.get(name)
                    if count is not None:
                        group["HealthyAllocs"] = count
                tx.put_deployment(deployment, "DeploymentAllocHealth")
            if status is not None or description is not None:
                new_status = status or deployment["Status"]
                text = description if description is not None else DEPLOYMENT_DESCRIPTIONS.get(new_status, "")
                mutations.set_deployment_status(tx, deployment_id, new_status, text)

    def write_log(self, alloc_id: str, task: str, text: str, stream: str = "stdout") -> None:
        """Append task output (served by the logs endpoint; wakes `follow=true` readers)."""
        self.cluster.state.append_log(alloc_id, task, stream, text.encode())
