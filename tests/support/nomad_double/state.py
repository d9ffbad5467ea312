"""The double's state store: tables of wire objects, a raft-like global index, the event buffer and task logs.

Every change goes through `State.transaction()`, which takes the lock, bumps the index once, stamps the changed
objects with it, records the events the change produces, and on exit appends them as one event-stream frame and
wakes every waiter (blocking queries, event streams, log followers) through one condition variable.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .clock import Clock
from .jobspec import JSON
from .objects import event_alloc

JobKey = tuple[str, str]  # (namespace, job ID)
TRACKED_VERSIONS = 6  # nomad/structs/structs.go JobDefaultTrackedVersions
LogKey = tuple[str, str, str]  # (alloc ID, task, "stdout" | "stderr")


@dataclass(frozen=True)
class Event:
    """One event of the stream, kept with its JSON text so that every subscriber sends the same bytes."""

    topic: str
    type: str
    key: str
    namespace: str
    filter_keys: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class Frame:
    """The events of one index: `{"Index": N, "Events": [...]}` once filtered for a subscriber."""

    index: int
    events: tuple[Event, ...]


@dataclass
class Tx:
    """An open transaction at `index`; its `put_*` methods store objects and record their events."""

    state: State
    index: int
    now: int  # Nomad time of this write (unix ns): every timestamp it sets
    events: list[Event] = field(default_factory=list)
    touched_jobs: set[JobKey] = field(default_factory=set)
    # What the server side reacts to once the write is done (see Cluster's commit hooks):
    placed: list[str] = field(default_factory=list)  # allocations created (the client starts them)
    stopped: list[str] = field(default_factory=list)  # allocations the server stopped (the client kills them)
    updated_in_place: list[str] = field(default_factory=list)  # allocations moved to a new job version
    promoted: list[str] = field(default_factory=list)  # canaries promoted (their services lose the canary tags)
    failed: list[str] = field(default_factory=list)  # allocations a client update turned `failed`
    evals: list[str] = field(default_factory=list)  # evaluations written
    touched_deployments: set[str] = field(default_factory=set)

    def _stamp(self, obj: JSON, table: str) -> None:
        if not obj.get("CreateIndex"):
            obj["CreateIndex"] = self.index
            if "CreateTime" in obj:
                obj["CreateTime"] = self.now
        obj["ModifyIndex"] = self.index
        if "ModifyTime" in obj:
            obj["ModifyTime"] = self.now
        self.state.table_index[table] = self.index

    def _event(self, topic: str, kind: str, key: str, namespace: str, filter_keys: list[str], payload: JSON) -> None:
        body = {
            "Topic": topic,
            "Type": kind,
            "Key": key,
            "Namespace": namespace,
            "FilterKeys": filter_keys or None,
            "Index": self.index,
            "Payload": {topic: payload},
        }
        self.events.append(Event(topic, kind, key, namespace, tuple(filter_keys), json.dumps(body)))

    def put_job(self, job: JSON, kind: str = "JobRegistered") -> None:
        self._stamp(job, "jobs")
        key = (job["Namespace"], job["ID"])
        self.state.jobs[key] = job
        self._event("Job", kind, job["ID"], job["Namespace"], [], job)

    def add_job_version(self, job: JSON) -> None:
        """Store `job` as the new current version (its Version and JobModifyIndex already set). At most
        TRACKED_VERSIONS are kept: the oldest goes, unless it is the newest stable one, then the second oldest
        (nomad/state/state_store.go upsertJobVersion, JobDefaultTrackedVersions)."""
        self.put_job(job)
        versions = self.state.job_versions[(job["Namespace"], job["ID"])]
        versions.append(job)
        if len(versions) > TRACKED_VERSIONS:
            stable = [v for v in versions if v["Stable"]]
            oldest = 1 if stable and versions[0] is stable[-1] else 0
            del versions[oldest]

    def delete_job(self, key: JobKey) -> None:
        job = self.state.jobs.pop(key)
        self.state.job_versions.pop(key, None)
        self.state.table_index["jobs"] = self.index
        self._event("Job", "JobDeregistered", job["ID"], job["Namespace"], [], job)

    def put_eval(self, ev: JSON) -> None:
        self._stamp(ev, "evals")
        self.state.evals[ev["ID"]] = ev
        self.state.evals_by_job[(ev["Namespace"], ev["JobID"])][ev["ID"]] = ev
        self.evals.append(ev["ID"])
        self.touched_jobs.add((ev["Namespace"], ev["JobID"]))
        self._event("Evaluation", "EvaluationUpdated", ev["ID"], ev["Namespace"], [ev["JobID"], ev["DeploymentID"]], ev)

    def put_alloc(self, alloc: JSON, kind: str = "AllocationUpdated") -> None:
        if not alloc.get("CreateIndex"):
            self.placed.append(alloc["ID"])
        self._stamp(alloc, "allocs")
        if kind != "AllocationUpdated":  # a server-side change (placement, desired status), not a client update
            alloc["AllocModifyIndex"] = self.index
        self.state.allocs[alloc["ID"]] = alloc
        self.state.allocs_by_job[(alloc["Namespace"], alloc["JobID"])][alloc["ID"]] = alloc
        previous = self.state.alloc_deployment.get(alloc["ID"], "")
        if previous != alloc["DeploymentID"]:  # placed, or moved to the new deployment by an in-place update
            self.state.allocs_by_deployment[previous].pop(alloc["ID"], None)
            self.state.alloc_deployment[alloc["ID"]] = alloc["DeploymentID"]
        if alloc["DeploymentID"]:
            self.state.allocs_by_deployment[alloc["DeploymentID"]][alloc["ID"]] = alloc
        self.touched_jobs.add((alloc["Namespace"], alloc["JobID"]))
        if alloc["DeploymentID"]:
            self.touched_deployments.add(alloc["DeploymentID"])
        for hook in self.state.on_alloc:
            hook(self, alloc)
        keys = [alloc["JobID"], alloc["DeploymentID"]]
        self._event("Allocation", kind, alloc["ID"], alloc["Namespace"], keys, event_alloc(alloc))

    def put_deployment(self, deployment: JSON, kind: str = "DeploymentStatusUpdate") -> None:
        self._stamp(deployment, "deployment")
        self.state.deployments[deployment["ID"]] = deployment
        self.state.deployments_by_job[(deployment["Namespace"], deployment["JobID"])][deployment["ID"]] = deployment
        self.touched_deployments.add(deployment["ID"])
        ns, job_id = deployment["Namespace"], deployment["JobID"]
        self._event("Deployment", kind, deployment["ID"], ns, [job_id], deployment)

    def put_service(self, registration: JSON) -> None:
        self._stamp(registration, "service_registrations")
        self.state.services[registration["ID"]] = registration
        keys = [registration["JobID"], registration["ServiceName"]]
        self._event("Service", "ServiceRegistration", registration["ID"], registration["Namespace"], keys, registration)

    def delete_service(self, service_id: str) -> None:
        registration = self.state.services.pop(service_id)
        self.state.table_index["service_registrations"] = self.index
        keys = [registration["JobID"], registration["ServiceName"]]
        self._event("Service", "ServiceDeregistration", service_id, registration["Namespace"], keys, registration)

    def put_variable(self, variable: JSON) -> None:
        """A Nomad Variable written (its Items are secret: the event carries only the metadata, as Nomad's)."""
        self._stamp(variable, "variables")
        self.state.variables[(variable["Namespace"], variable["Path"])] = variable
        meta = {k: v for k, v in variable.items() if k != "Items"}
        self._event("Variable", "VariableUpserted", variable["Path"], variable["Namespace"], [], meta)

    def delete_variable(self, namespace: str, path: str) -> None:
        variable = self.state.variables.pop((namespace, path))
        self.state.table_index["variables"] = self.index
        meta = {k: v for k, v in variable.items() if k != "Items"}
        self._event("Variable", "VariableDeleted", path, namespace, [], meta)

    def put_check(self, alloc_id: str, check_id: str, result: JSON) -> None:
        """Client-side check results (nomad provider): not raft state in Nomad, so no event, only an index."""
        self.state.checks[alloc_id][check_id] = result
        self.state.table_index["checks"] = self.index


class State:
    """All tables, guarded by one re-entrant lock whose condition variable wakes every waiter on a change."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.cond = threading.Condition(threading.RLock())
        self.index = 1
        self.table_index: dict[str, int] = defaultdict(int)
        self.jobs: dict[JobKey, JSON] = {}
        self.job_versions: dict[JobKey, list[JSON]] = defaultdict(list)
        self.evals: dict[str, JSON] = {}
        self.allocs: dict[str, JSON] = {}
        # The state store's indexes (nomad/state/schema.go: allocs by job and by deployment, evals and
        # deployments by job; state_store.go AllocsByJob, AllocsByDeployment, EvalsByJob, DeploymentsByJobID):
        # a job's objects without a scan of every table.
        self.allocs_by_job: dict[JobKey, dict[str, JSON]] = defaultdict(dict)
        self.allocs_by_deployment: dict[str, dict[str, JSON]] = defaultdict(dict)
        self.evals_by_job: dict[JobKey, dict[str, JSON]] = defaultdict(dict)
        self.deployments_by_job: dict[JobKey, dict[str, JSON]] = defaultdict(dict)
        self.alloc_deployment: dict[str, str] = {}  # the deployment each allocation is indexed under
        self.deployments: dict[str, JSON] = {}
        self.services: dict[str, JSON] = {}
        self.checks: dict[str, dict[str, JSON]] = defaultdict(dict)
        self.frames: list[Frame] = []
        self.logs: dict[LogKey, bytearray] = defaultdict(bytearray)
        self.variables: dict[tuple[str, str], JSON] = {}  # (namespace, path) → Nomad Variable
        self.closed = False
        self.scaling_events: dict[tuple[str, str, str], list[JSON]] = defaultdict(list)  # (ns, job, group)
        # Set by the cluster: recomputes the status of jobs whose evaluations or allocations changed, and lets the
        # server side (scheduler, deployment watcher, client) react to the write. They run inside the write.
        self.on_commit: list[Callable[[Tx], None]] = []
        # Set by the cluster: runs on every allocation write (the deployment's counters, as the state store's).
        self.on_alloc: list[Callable[[Tx, JSON], None]] = []
        # What the deployment counters last counted per allocation: (deployment ID, health).
        self.counted: dict[str, tuple[str, bool | None]] = {}

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.cond:
            self.index += 1
            tx = Tx(self, self.index, self.clock.now())
            try:
                yield tx
            finally:
                for hook in self.on_commit:
                    hook(tx)
                if tx.events:
                    self.frames.append(Frame(tx.index, tuple(tx.events)))
                self.cond.notify_all()

    def append_log(self, alloc_id: str, task: str, stream: str, data: bytes) -> None:
        """Task output arrives outside raft in Nomad, so it wakes followers without bumping the index."""
        with self.cond:
            self.logs[(alloc_id, task, stream)] += data
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
