"""Typed models of Nomad's job API structs (`api/jobs.go`, `api/tasks.go`, `api/resources.go`, ...).

Keys are the Go field names, which are the JSON keys (the api structs carry almost no json tags).
Durations are integer nanoseconds, as the JSON API requires. Unknown keys are rejected: Nomad's own decoder
silently drops misspelled keys, so these models are the only guard against them.

The models are TypedDicts: a job *is* its API JSON, mypy checks every key the compiler writes, and
defining them costs microseconds, which keeps `nomadgs render` quick to start. `validate_job` checks any
dict against them at run time, strictly (pydantic, built on first use).

Each field also knows its HCL name (`MemoryMB` is `memory`, `Checks` is `check`, ...), whether it is a block
label, and whether it is a duration, so one model renders to API JSON and to HCL alike (see `nomad/hcl.py`).
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Required

from annotated_types import Ge, Interval
from pydantic import TypeAdapter
from typing_extensions import TypedDict, is_typeddict


@dataclass(frozen=True)
class HCL:
    """HCL rendering metadata for one field."""

    name: str | None = None  # HCL name when it is not the snake_case of the Go name
    label: bool = False  # the field is the label of its block: `task "name" {}`
    reserved: bool = False  # ports that HCL writes as `port "x" { static = N }`


@dataclass(frozen=True)
class _Duration:
    """Marks an integer nanosecond field that HCL writes as a Go duration string."""


DURATION = _Duration()


@dataclass(frozen=True)
class _BlocksAsAttrs:
    """Marks a schema-less map in the JSON shape Nomad gives the blocks of its HCL (jobspec2's BlocksAsAttrs,
    `jobspec2/hclutil/blockattrs.go`): a block is a list, one element per occurrence; a labelled one is
    `{label: [body]}`. HCL writes such values back as blocks (`policy { check "x" { ... } }`)."""


BLOCKS_AS_ATTRS = _BlocksAsAttrs()
Nanos = Annotated[int, DURATION, Ge(0)]
STRICT = {"extra": "forbid"}  # pydantic config of every struct: unknown keys are errors


def _h(name: str | None = None, *, label: bool = False, reserved: bool = False) -> HCL:
    return HCL(name, label, reserved)


def _snake(name: str) -> str:
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return name.lower()


@dataclass(frozen=True)
class FieldInfo:
    """What the renderers need to know about one struct field."""

    name: str  # Go / JSON name
    hcl: str
    annotation: Any  # the type without Annotated/Required wrappers
    label: bool
    reserved: bool
    duration: bool
    blocks: bool = False  # a map of BLOCKS_AS_ATTRS shape, written as blocks in HCL


@cache
def fields_of(struct: type) -> dict[str, FieldInfo]:
    """The fields of a struct, in Go declaration order."""
    hints = typing.get_type_hints(struct, include_extras=True)
    out: dict[str, FieldInfo] = {}
    for name, hint in hints.items():
        meta: list[Any] = []
        while True:
            origin = typing.get_origin(hint)
            if origin is Annotated:
                meta.extend(hint.__metadata__)
                hint = typing.get_args(hint)[0]
            elif origin is Required:
                hint = typing.get_args(hint)[0]
            else:
                break
        hcl = next((m for m in meta if isinstance(m, HCL)), HCL())
        out[name] = FieldInfo(
            name=name,
            hcl=hcl.name or _snake(name),
            annotation=hint,
            label=hcl.label,
            reserved=hcl.reserved,
            duration=DURATION in meta,
            blocks=BLOCKS_AS_ATTRS in meta,
        )
    return out


# --- constraints, affinities, spreads ---------------------------------------------------------------


class Constraint(TypedDict, total=False):
    LTarget: Annotated[str, _h("attribute")]
    RTarget: Annotated[str, _h("value")]
    Operand: Annotated[str, _h("operator")]


class Affinity(TypedDict, total=False):
    LTarget: Annotated[str, _h("attribute")]
    RTarget: Annotated[str, _h("value")]
    Operand: Annotated[str, _h("operator")]
    Weight: Annotated[int, Interval(ge=-100, le=100)]


class SpreadTarget(TypedDict, total=False):
    Value: Annotated[str, _h(label=True)]
    Percent: Annotated[int, Interval(ge=0, le=100)]


class Spread(TypedDict, total=False):
    Attribute: str
    Weight: Annotated[int, Interval(ge=-128, le=127)]
    SpreadTarget: Annotated[list[SpreadTarget], _h("target")]


# --- resources and networks ---------------------------------------------------------------------------


class RequestedDevice(TypedDict, total=False):
    Name: Annotated[str, _h(label=True)]
    Count: Annotated[int, Ge(0)]
    Constraints: Annotated[list[Constraint], _h("constraint")]
    Affinities: Annotated[list[Affinity], _h("affinity")]


class NUMAResource(TypedDict, total=False):
    Affinity: str
    Devices: list[str]


class DNSConfig(TypedDict, total=False):
    Servers: list[str]
    Searches: list[str]
    Options: list[str]


class CNIConfig(TypedDict, total=False):
    Args: dict[str, str]


class Port(TypedDict, total=False):
    Label: Annotated[str, _h(label=True)]
    Value: Annotated[int, _h("static")]
    To: int
    HostNetwork: str
    IgnoreCollision: bool


class NetworkResource(TypedDict, total=False):
    Mode: str
    Device: str
    CIDR: str
    IP: str
    DNS: DNSConfig
    ReservedPorts: Annotated[list[Port], _h("port", reserved=True)]
    DynamicPorts: Annotated[list[Port], _h("port")]
    Hostname: str
    MBits: Annotated[int, _h("mbits")]
    CNI: CNIConfig


class Resources(TypedDict, total=False):
    CPU: int
    Cores: int
    MemoryMB: Annotated[int, _h("memory")]
    MemoryMaxMB: Annotated[int, _h("memory_max")]
    DiskMB: Annotated[int, _h("disk")]
    Networks: Annotated[list[NetworkResource], _h("network")]
    Devices: Annotated[list[RequestedDevice], _h("device")]
    NUMA: NUMAResource
    SecretsMB: Annotated[int, _h("secrets")]
    IOPS: int


# --- services and checks ------------------------------------------------------------------------------


class CheckRestart(TypedDict, total=False):
    Limit: int
    Grace: Nanos
    IgnoreWarnings: bool


class ServiceCheck(TypedDict, total=False):
    Name: str
    Type: str
    Command: str
    Args: list[str]
    Path: str
    Protocol: str
    PortLabel: Annotated[str, _h("port")]
    Expose: bool
    AddressMode: str
    Advertise: str
    Interval: Nanos
    Timeout: Nanos
    InitialStatus: str
    Notes: str
    TLSServerName: str
    TLSSkipVerify: bool
    Header: dict[str, list[str]]
    Method: str
    CheckRestart: CheckRestart
    GRPCService: str
    GRPCUseTLS: Annotated[bool, _h("grpc_use_tls")]
    TaskName: Annotated[str, _h("task")]
    SuccessBeforePassing: int
    FailuresBeforeCritical: int
    FailuresBeforeWarning: int
    Body: str
    OnUpdate: str


class ServiceWeights(TypedDict, total=False):
    Passing: int
    Warning: int


class WorkloadIdentity(TypedDict, total=False):
    Name: str
    Audience: Annotated[list[str], _h("aud")]
    ChangeMode: str
    ChangeSignal: str
    Env: bool
    File: bool
    Filepath: str
    ServiceName: str
    TTL: Nanos
    ExtraClaims: list[str]


class Service(TypedDict, total=False):
    Name: str
    Tags: list[str]
    CanaryTags: list[str]
    EnableTagOverride: bool
    PortLabel: Annotated[str, _h("port")]
    AddressMode: str
    Address: str
    Checks: Annotated[list[ServiceCheck], _h("check")]
    CheckRestart: CheckRestart
    # Connect (the Consul service-mesh tree) is deliberately not modelled: model endpoints do not use it.
    Meta: dict[str, str]
    CanaryMeta: dict[str, str]
    TaggedAddresses: dict[str, str]
    TaskName: Annotated[str, _h("task")]
    OnUpdate: str
    Identity: WorkloadIdentity
    Weights: ServiceWeights
    Provider: str
    Cluster: str
    Kind: str


# --- policies -----------------------------------------------------------------------------------------


class UpdateStrategy(TypedDict, total=False):
    Stagger: Nanos
    MaxParallel: int
    HealthCheck: str
    MinHealthyTime: Nanos
    HealthyDeadline: Nanos
    ProgressDeadline: Nanos
    Canary: int
    AutoRevert: bool
    AutoPromote: bool


class RestartPolicy(TypedDict, total=False):
    Interval: Nanos
    Attempts: int
    Delay: Nanos
    Mode: str
    RenderTemplates: bool


class ReschedulePolicy(TypedDict, total=False):
    Attempts: int
    Interval: Nanos
    Delay: Nanos
    DelayFunction: str
    MaxDelay: Nanos
    Unlimited: bool


class MigrateStrategy(TypedDict, total=False):
    MaxParallel: int
    HealthCheck: str
    MinHealthyTime: Nanos
    HealthyDeadline: Nanos


class DisconnectStrategy(TypedDict, total=False):
    LostAfter: Nanos
    StopOnClientAfter: Nanos
    Replace: bool
    Reconcile: str


class EphemeralDisk(TypedDict, total=False):
    Sticky: bool
    Migrate: bool
    SizeMB: Annotated[int, _h("size")]


class ScalingPolicy(TypedDict, total=False):
    Min: int
    Max: int
    Policy: Annotated[dict[str, Any], BLOCKS_AS_ATTRS]  # opaque to Nomad: the Nomad Autoscaler's policy
    Enabled: bool
    Type: str
    ID: str
    Namespace: str
    Target: dict[str, str]
    CreateIndex: int
    ModifyIndex: int


class Consul(TypedDict, total=False):
    Namespace: str
    Cluster: str
    Partition: str


# --- volumes ------------------------------------------------------------------------------------------


class CSIMountOptions(TypedDict, total=False):
    FSType: Annotated[str, _h("fs_type")]
    MountFlags: list[str]


class VolumeRequest(TypedDict, total=False):
    Name: str
    Type: str
    Source: str
    ReadOnly: bool
    Sticky: bool
    AccessMode: str
    AttachmentMode: str
    MountOptions: CSIMountOptions
    PerAlloc: bool


class VolumeMount(TypedDict, total=False):
    Volume: str
    Destination: str
    ReadOnly: bool
    PropagationMode: str
    SELinuxLabel: Annotated[str, _h("selinux_label")]


# --- task pieces --------------------------------------------------------------------------------------


class TaskLifecycle(TypedDict, total=False):
    Hook: str
    Sidecar: bool


class ChangeScript(TypedDict, total=False):
    Command: str
    Args: list[str]
    Timeout: Nanos
    FailOnError: bool
    RunOnFirstRender: bool


class WaitConfig(TypedDict, total=False):
    Min: Nanos
    Max: Nanos


class Template(TypedDict, total=False):
    SourcePath: Annotated[str, _h("source")]
    DestPath: Annotated[str, _h("destination")]
    EmbeddedTmpl: Annotated[str, _h("data")]
    ChangeMode: str
    ChangeScript: ChangeScript
    ChangeSignal: str
    Once: bool
    Splay: Nanos
    Perms: str
    Uid: int
    Gid: int
    LeftDelim: Annotated[str, _h("left_delimiter")]
    RightDelim: Annotated[str, _h("right_delimiter")]
    Envvars: Annotated[bool, _h("env")]
    VaultGrace: Nanos
    Wait: WaitConfig
    ErrMissingKey: Annotated[bool, _h("error_on_missing_key")]


class TaskArtifact(TypedDict, total=False):
    GetterSource: Annotated[str, _h("source")]
    GetterOptions: Annotated[dict[str, str], _h("options")]
    GetterHeaders: Annotated[dict[str, str], _h("headers")]
    GetterMode: Annotated[str, _h("mode")]
    GetterInsecure: Annotated[bool, _h("insecure")]
    RelativeDest: Annotated[str, _h("destination")]
    Chown: bool


class LogConfig(TypedDict, total=False):
    MaxFiles: int
    MaxFileSizeMB: Annotated[int, _h("max_file_size")]
    Enabled: bool
    Disabled: bool


class DispatchPayloadConfig(TypedDict, total=False):
    File: str


class Vault(TypedDict, total=False):
    Policies: list[str]
    Role: str
    Namespace: str
    Cluster: str
    Env: bool
    DisableFile: bool
    ChangeMode: str
    ChangeSignal: str
    AllowTokenExpiration: bool


class TaskCSIPluginConfig(TypedDict, total=False):
    ID: str
    Type: str
    MountDir: str
    StagePublishBaseDir: str
    HealthTimeout: Nanos


class Secret(TypedDict, total=False):
    Name: str
    Provider: str
    Path: str
    Config: dict[str, Any]
    Env: dict[str, str]


class Action(TypedDict, total=False):
    Name: str
    Command: str
    Args: list[str]


class TaskScheduleCron(TypedDict, total=False):
    Start: str
    End: str
    Timezone: str


class TaskSchedule(TypedDict, total=False):
    Cron: TaskScheduleCron


class Task(TypedDict, total=False):
    Name: Required[Annotated[str, _h(label=True)]]
    Driver: Required[str]
    User: str
    Lifecycle: TaskLifecycle
    Config: dict[str, Any]
    Constraints: Annotated[list[Constraint], _h("constraint")]
    Affinities: Annotated[list[Affinity], _h("affinity")]
    Env: dict[str, str]
    Services: Annotated[list[Service], _h("service")]
    Resources: Resources
    RestartPolicy: Annotated[RestartPolicy, _h("restart")]
    Meta: dict[str, str]
    KillTimeout: Nanos
    LogConfig: Annotated[LogConfig, _h("logs")]
    Artifacts: Annotated[list[TaskArtifact], _h("artifact")]
    Vault: Vault
    Consul: Consul
    Templates: Annotated[list[Template], _h("template")]
    DispatchPayload: DispatchPayloadConfig
    VolumeMounts: Annotated[list[VolumeMount], _h("volume_mount")]
    CSIPluginConfig: Annotated[TaskCSIPluginConfig, _h("csi_plugin")]
    Leader: bool
    ShutdownDelay: Nanos
    KillSignal: str
    Kind: str
    ScalingPolicies: Annotated[list[ScalingPolicy], _h("scaling")]
    Secrets: Annotated[list[Secret], _h("secret")]
    Identity: WorkloadIdentity
    Identities: Annotated[list[WorkloadIdentity], _h("identity")]
    Actions: Annotated[list[Action], _h("action")]
    Schedule: TaskSchedule


class TaskGroup(TypedDict, total=False):
    Name: Required[Annotated[str, _h(label=True)]]
    Count: Annotated[int, Ge(0)]
    Constraints: Annotated[list[Constraint], _h("constraint")]
    Affinities: Annotated[list[Affinity], _h("affinity")]
    Tasks: Required[Annotated[list[Task], _h("task")]]
    Spreads: Annotated[list[Spread], _h("spread")]
    Volumes: Annotated[dict[str, VolumeRequest], _h("volume")]
    RestartPolicy: Annotated[RestartPolicy, _h("restart")]
    Disconnect: DisconnectStrategy
    ReschedulePolicy: Annotated[ReschedulePolicy, _h("reschedule")]
    EphemeralDisk: EphemeralDisk
    Update: UpdateStrategy
    Migrate: MigrateStrategy
    Networks: Annotated[list[NetworkResource], _h("network")]
    Meta: dict[str, str]
    Services: Annotated[list[Service], _h("service")]
    ShutdownDelay: Nanos
    MaxRunDuration: Nanos
    StopAfterClientDisconnect: Nanos
    MaxClientDisconnect: Nanos
    Scaling: ScalingPolicy
    Consul: Consul
    PreventRescheduleOnLost: bool


# --- job ----------------------------------------------------------------------------------------------


class PeriodicConfig(TypedDict, total=False):
    Enabled: bool
    Spec: Annotated[str, _h("cron")]
    Specs: Annotated[list[str], _h("crons")]
    SpecType: str
    ProhibitOverlap: bool
    TimeZone: str


class ParameterizedJobConfig(TypedDict, total=False):
    Payload: str
    MetaRequired: list[str]
    MetaOptional: list[str]


class MultiregionStrategy(TypedDict, total=False):
    MaxParallel: int
    OnFailure: str


class MultiregionRegion(TypedDict, total=False):
    Name: Annotated[str, _h(label=True)]
    Count: int
    Datacenters: list[str]
    NodePool: str
    Meta: dict[str, str]


class Multiregion(TypedDict, total=False):
    Strategy: MultiregionStrategy
    Regions: Annotated[list[MultiregionRegion], _h("region")]


class JobUILink(TypedDict, total=False):
    Label: str
    URL: str


class JobUIConfig(TypedDict, total=False):
    Description: str
    Links: Annotated[list[JobUILink], _h("link")]


class JobVersionTag(TypedDict, total=False):
    Name: str
    Description: str
    TaggedTime: int


class Job(TypedDict, total=False):
    Region: str
    Namespace: str
    ID: Required[Annotated[str, _h(label=True)]]
    Name: str
    Type: str
    Priority: Annotated[int, Interval(ge=1, le=100)]
    AllAtOnce: bool
    Datacenters: list[str]
    NodePool: str
    Constraints: Annotated[list[Constraint], _h("constraint")]
    Affinities: Annotated[list[Affinity], _h("affinity")]
    TaskGroups: Required[Annotated[list[TaskGroup], _h("group")]]
    Update: UpdateStrategy
    Multiregion: Multiregion
    Spreads: Annotated[list[Spread], _h("spread")]
    Periodic: PeriodicConfig
    ParameterizedJob: Annotated[ParameterizedJobConfig, _h("parameterized")]
    Reschedule: ReschedulePolicy
    Migrate: MigrateStrategy
    Meta: dict[str, str]
    UI: JobUIConfig
    ConsulNamespace: str
    VaultNamespace: str
    VersionTag: JobVersionTag
    # Server-set fields (Stop, Status, Version, *Index, ...) are left out: we never send them.


# Every struct forbids unknown keys at run-time validation (set here: mypy allows only fields in the bodies).
for _struct in [v for v in list(globals().values()) if isinstance(v, type) and is_typeddict(v)]:
    _struct.__pydantic_config__ = STRICT  # type: ignore[attr-defined]
del _struct


def api_document(job: Job) -> dict[str, Any]:
    """The document `nomad job run -json`, the HTTP API and Terraform's `nomad_job` (json = true) take.

    Keys come in Go declaration order, so rendered files diff cleanly whatever order the compiler used.
    """
    return {"Job": _ordered(Job, job)}


def _ordered(struct: type, value: Any) -> Any:
    fields = fields_of(struct)
    out: dict[str, Any] = {}
    for name, info in fields.items():
        if name in value:
            out[name] = _ordered_value(info.annotation, value[name])
    return out


def _ordered_value(annotation: Any, value: Any) -> Any:
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and is_typeddict(annotation):
        return _ordered(annotation, value)
    if origin is list:
        (item,) = typing.get_args(annotation)
        return [_ordered_value(item, v) for v in value]
    if origin is dict:
        _, item = typing.get_args(annotation)
        if isinstance(item, type) and is_typeddict(item):
            return {k: _ordered(item, v) for k, v in value.items()}
    return value


@cache
def _job_adapter() -> Any:
    return TypeAdapter(Job)


def validate_job(data: Any) -> Job:
    """Check a job against the strict models: unknown keys, wrong types and negative durations fail.

    Built on first use: the compiler's output is checked statically (mypy sees TypedDict keys), so the
    render path does not pay for building this validator; tests, `validate` and `submit` do.
    """
    job: Job = _job_adapter().validate_python(data, strict=True)
    return job
