"""Typed models of the Nomad API responses the watcher reads (evaluations, allocations, deployments, ...).

Unlike the job models these ignore unknown keys: Nomad adds response fields between versions, and a newer
server must not break an older client. Empty fields are often left out (`omitempty`), so almost every field has
a default. Nomad writes `null` only for Go's nil maps, slices and pointers: a map or list field reads a null as
empty (`NullableDict`, `NullableList`), a pointer's field is `X | None`; a null anywhere else (a string, a
number) does not fit, as nothing of Nomad's writes one there. The few fields without a default are fields
Nomad always sends (an ID; the answers of validate, plan, register and deregister, whose structs in
nomad/structs/structs.go have no `omitempty`): an answer without them is not Nomad's (`answers.shaped`).
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema

T = TypeVar("T")


class _NullIsEmpty:
    """Field metadata: a `null` reads as the empty collection `empty()` (Nomad writes Go's nil maps and slices
    as `null`). The collection is validated as usual, straight from the JSON; only a `null` is replaced."""

    def __init__(self, empty: type[list[Any]] | type[dict[str, Any]]) -> None:
        self.empty = empty

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        # An after-validator over a nullable schema: a validator before would hand it the value as Python lists
        # and dicts built from the JSON, and pydantic would validate those again.
        empty = self.empty
        return core_schema.no_info_after_validator_function(
            lambda value: empty() if value is None else value, core_schema.nullable_schema(handler(source))
        )


# A list or map that Nomad may write as `null` when empty: it reads as [] or {}.
NullableList = Annotated[list[T], _NullIsEmpty(list)]
NullableDict = Annotated[dict[str, T], _NullIsEmpty(dict)]


class Response(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class AllocMetric(Response):
    """Why a task group could not be (fully) placed: `FailedTGAllocs[group]`."""

    NodesEvaluated: int = 0
    NodesFiltered: int = 0
    NodesInPool: int = 0
    NodesAvailable: NullableDict[int] = {}
    ClassFiltered: NullableDict[int] = {}
    ConstraintFiltered: NullableDict[int] = {}
    NodesExhausted: int = 0
    ClassExhausted: NullableDict[int] = {}
    DimensionExhausted: NullableDict[int] = {}
    QuotaExhausted: NullableList[str] = []
    CoalescedFailures: int = 0


class Evaluation(Response):
    ID: str
    Status: str = ""
    StatusDescription: str = ""
    Type: str = ""
    TriggeredBy: str = ""
    JobID: str = ""
    Namespace: str = ""
    DeploymentID: str = ""
    BlockedEval: str = ""
    NextEval: str = ""
    PreviousEval: str = ""
    FailedTGAllocs: NullableDict[AllocMetric] = {}
    QueuedAllocations: NullableDict[int] = {}
    CreateIndex: int = 0
    ModifyIndex: int = 0


class TaskEvent(Response):
    Type: str = ""
    Time: int = 0
    DisplayMessage: str = ""
    Message: str = ""
    Details: NullableDict[str] = {}
    FailsTask: bool = False
    ExitCode: int = 0
    Signal: int = 0
    DriverError: str = ""
    DriverMessage: str = ""
    RestartReason: str = ""
    SetupError: str = ""
    ValidationError: str = ""
    DownloadError: str = ""
    KillError: str = ""

    @property
    def text(self) -> str:
        """The most specific human text of the event."""
        for value in (
            self.DisplayMessage,
            self.DriverError,
            self.SetupError,
            self.ValidationError,
            self.DownloadError,
            self.KillError,
            self.RestartReason,
            self.DriverMessage,
            self.Message,
        ):
            if value:
                return value
        return self.Details.get("message", "")


class TaskState(Response):
    State: str = ""
    Failed: bool = False
    Restarts: int = 0
    StartedAt: str | None = None
    FinishedAt: str | None = None
    Events: NullableList[TaskEvent] = []


class AllocDeploymentStatus(Response):
    Healthy: bool | None = None
    Timestamp: str | None = None
    Canary: bool = False


class Port(Response):
    """A group port an allocation was given (`AllocatedResources.Shared.Ports[i]`, structs.AllocatedPortMapping)."""

    Label: str = ""
    Value: int = 0
    HostIP: str = ""


class SharedResources(Response):
    """`AllocatedResources.Shared`: only its ports are read."""

    Ports: NullableList[Port] = []


class AllocResources(Response):
    """An allocation's `AllocatedResources`, of which only the group's ports are read: typed rather than kept as
    a dict, pydantic skips the rest (every task's CPU, memory, devices) instead of building it, a third of the
    allocation listing of a fleet."""

    Shared: SharedResources | None = None


class Allocation(Response):
    """An allocation list stub or a full allocation (the stub's fields are a subset)."""

    ID: str
    EvalID: str = ""
    Name: str = ""
    NodeID: str = ""
    NodeName: str = ""
    JobID: str = ""
    JobVersion: int = 0
    TaskGroup: str = ""
    DesiredStatus: str = ""
    DesiredDescription: str = ""
    ClientStatus: str = ""
    ClientDescription: str = ""
    TaskStates: NullableDict[TaskState] = {}
    DeploymentID: str = ""
    DeploymentStatus: AllocDeploymentStatus | None = None
    FollowupEvalID: str = ""
    NextAllocation: str = ""
    PreviousAllocation: str = ""
    CreateIndex: int = 0
    ModifyIndex: int = 0
    CreateTime: int = 0
    AllocatedResources: AllocResources | None = None

    @property
    def index(self) -> int | None:
        """The replica number: `job.group[3]` -> 3."""
        name = self.Name  # read once: a model's attribute costs more than a plain object's
        start = name.rfind("[")
        if start < 0 or not name.endswith("]"):
            return None
        try:
            return int(name[start + 1 : -1])
        except ValueError:
            return None

    @property
    def healthy(self) -> bool | None:
        return self.DeploymentStatus.Healthy if self.DeploymentStatus else None

    def port(self, label: str) -> tuple[str, int] | None:
        """(host IP, port) of a group port, from a full allocation."""
        shared = self.AllocatedResources.Shared if self.AllocatedResources is not None else None
        for port in shared.Ports if shared is not None else []:
            if port.Label == label:
                return port.HostIP, port.Value
        return None


class DeploymentState(Response):
    AutoRevert: bool = False
    AutoPromote: bool = False
    Promoted: bool = False
    DesiredTotal: int = 0
    DesiredCanaries: int = 0
    PlacedCanaries: list[str] | None = None
    PlacedAllocs: int = 0
    HealthyAllocs: int = 0
    UnhealthyAllocs: int = 0
    RequireProgressBy: str | None = None


class Deployment(Response):
    ID: str
    JobID: str = ""
    JobVersion: int = 0
    JobModifyIndex: int = 0
    JobSpecModifyIndex: int = 0  # the job's JobModifyIndex when the deployment was made (structs.NewDeployment)
    JobCreateIndex: int = 0
    Status: str = ""
    StatusDescription: str = ""
    TaskGroups: NullableDict[DeploymentState] = {}
    CreateIndex: int = 0
    ModifyIndex: int = 0


class JobSummaryCounts(Response):
    Queued: int = 0
    Starting: int = 0
    Running: int = 0
    Failed: int = 0
    Complete: int = 0
    Lost: int = 0


class JobSummaryData(Response):
    Summary: NullableDict[JobSummaryCounts] = {}


class JobStub(Response):
    """A job as `/v1/jobs` lists it (with `?meta=true`) or `/v1/job/:id` reads it."""

    ID: str
    Name: str = ""
    Namespace: str = ""
    Type: str = ""
    Status: str = ""
    StatusDescription: str = ""
    Stop: bool = False
    Version: int = 0
    Stable: bool = False
    CreateIndex: int = 0
    JobModifyIndex: int = 0
    Meta: NullableDict[str] = {}
    JobSummary: JobSummaryData | None = None
    TaskGroups: NullableList[dict[str, Any]] = []


class DesiredUpdates(Response):
    Place: int = 0
    Stop: int = 0
    Migrate: int = 0
    InPlaceUpdate: int = 0
    DestructiveUpdate: int = 0
    Canary: int = 0
    Ignore: int = 0
    Preemptions: int = 0


class PlanAnnotations(Response):
    DesiredTGUpdates: NullableDict[DesiredUpdates] = {}


class PlanDiff(Response):
    """`api.JobDiff`: what changes, field by field (`nomad.plandiff` puts it in words)."""

    Type: str = ""
    ID: str = ""
    Fields: NullableList[dict[str, Any]] = []
    Objects: NullableList[dict[str, Any]] = []
    TaskGroups: NullableList[dict[str, Any]] = []


class PlanResponse(Response):
    JobModifyIndex: int
    Diff: PlanDiff | None = None
    Annotations: PlanAnnotations | None = None
    FailedTGAllocs: NullableDict[AllocMetric] = {}
    Warnings: str = ""

    @property
    def changes(self) -> int:
        """What nomad-pack counts as "changes": Stop+Place+Migrate+DestructiveUpdate+Canary."""
        updates = self.Annotations.DesiredTGUpdates.values() if self.Annotations else []
        return sum(u.Stop + u.Place + u.Migrate + u.DestructiveUpdate + u.Canary for u in updates)


class ValidateResponse(Response):
    DriverConfigValidated: bool
    ValidationErrors: NullableList[str] = []
    Error: str = ""
    Warnings: str = ""


class RegisterResponse(Response):
    EvalID: str  # "" for a periodic or parameterized job
    EvalCreateIndex: int = 0
    JobModifyIndex: int = 0
    Warnings: str = ""


class GroupScaleStatus(Response):
    """One group of `GET /v1/job/:id/scale` (api.TaskGroupScaleStatus): its count and its allocations."""

    Desired: int = 0
    Placed: int = 0
    Running: int = 0
    Healthy: int = 0
    Unhealthy: int = 0
    Events: NullableList[dict[str, Any]] = []  # scaling events, newest first


class JobScaleStatus(Response):
    """`GET /v1/job/:id/scale` (api.JobScaleStatusResponse). Its JobModifyIndex is the job's ModifyIndex
    (nomad/job_endpoint.go ScaleStatus), not the JobModifyIndex a scale request's check-and-set compares."""

    JobID: str
    Namespace: str = ""
    JobCreateIndex: int = 0
    JobModifyIndex: int = 0
    JobStopped: bool = False
    TaskGroups: NullableDict[GroupScaleStatus] = {}


class DeregisterResponse(Response):
    EvalID: str
    EvalCreateIndex: int = 0
    JobModifyIndex: int = 0


class NodeStub(Response):
    """A client node as `/v1/nodes` lists it or `/v1/node/:id` reads it; every other key is kept as answered
    (`nodes.node_facts` reads them)."""

    model_config = ConfigDict(extra="allow")

    ID: str


class JobVersion(Response):
    """One version of a job as `/v1/job/:id/versions` lists it (a whole `api.Job`; the fields read here).
    `SubmitTime` is Unix nanoseconds; the job itself is kept as answered in `spec` (a revert follows it)."""

    model_config = ConfigDict(extra="allow")

    ID: str
    Version: int
    Stable: bool = False
    SubmitTime: int = 0
    JobModifyIndex: int = 0
    Meta: NullableDict[str] = {}
    TaskGroups: NullableList[dict[str, Any]] = []

    @property
    def spec(self) -> dict[str, Any]:
        """The job of this version, every field as Nomad answered it."""
        return self.model_dump()


class JobVersions(Response):
    """`/v1/job/:id/versions?diffs=true` (nomad/job_endpoint.go GetJobVersions): the versions, newest first;
    `Diffs[i]` is what changed from `Versions[i + 1]` to `Versions[i]` (one fewer than the versions)."""

    Versions: list[JobVersion]
    Diffs: NullableList[PlanDiff] = []


class DeploymentUpdateResponse(Response):
    """The answer of `PUT /v1/deployment/promote/:id` (structs.DeploymentUpdateResponse)."""

    EvalID: str
    EvalCreateIndex: int = 0
    DeploymentModifyIndex: int = 0
    RevertedJobVersion: int | None = None
