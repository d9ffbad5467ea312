"""Typed models of Nomad's job API structs (`api/jobs.go`, `api/tasks.go`, `api/resources.go`, ...).

Attribute names are the Go field names, which are the JSON keys (the api structs carry almost no json tags).
Durations are integer nanoseconds, as the JSON API requires. Unknown fields are rejected: Nomad's own decoder
silently drops misspelled keys, so these models are the only guard against them.

Each field also knows its HCL name (`MemoryMB` is `memory`, `Checks` is `check`, ...), whether it is a block
label, and whether it is a duration, so one model renders to API JSON and to HCL alike (see `hcl.py`).
"""


import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field


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
OptNanos = Annotated[int | None, DURATION, Field(ge=0)]


class NomadModel(BaseModel):
    """Base of every Nomad struct: strict keys, no coercion of field names."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    def api(self) -> dict[str, Any]:
        """The JSON API form: unset fields left out."""
        return self.model_dump(mode="json", exclude_none=True)


def _snake(name: str) -> str:
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return name.lower()


def hcl_name(model: type[BaseModel], field: str) -> str:
    """The HCL attribute or block name of a model field."""
    for meta in model.model_fields[field].metadata:
        if isinstance(meta, HCL) and meta.name:
            return meta.name
    return _snake(field)


def hcl_meta(model: type[BaseModel], field: str) -> HCL:
    for meta in model.model_fields[field].metadata:
        if isinstance(meta, HCL):
            return meta
    return HCL()


def is_duration(model: type[BaseModel], field: str) -> bool:
    return DURATION in model.model_fields[field].metadata


def _h(name: str | None = None, *, label: bool = False, reserved: bool = False) -> HCL:
    return HCL(name, label, reserved)


# --- constraints, affinities, spreads ---------------------------------------------------------------


class Constraint(NomadModel):
    LTarget: Annotated[str | None, _h("attribute")] = None
    RTarget: Annotated[str | None, _h("value")] = None
    Operand: Annotated[str | None, _h("operator")] = None


class Affinity(NomadModel):
    LTarget: Annotated[str | None, _h("attribute")] = None
    RTarget: Annotated[str | None, _h("value")] = None
    Operand: Annotated[str | None, _h("operator")] = None
    Weight: Annotated[int | None, Field(ge=-100, le=100)] = None


class SpreadTarget(NomadModel):
    Value: Annotated[str | None, _h(label=True)] = None
    Percent: Annotated[int | None, Field(ge=0, le=100)] = None


_SpreadTarget = SpreadTarget  # the field of the same name would shadow the class in later class bodies


class Spread(NomadModel):
    Attribute: str | None = None
    Weight: Annotated[int | None, Field(ge=-128, le=127)] = None
    SpreadTarget: Annotated[list[_SpreadTarget] | None, _h("target")] = None


# --- resources and networks ---------------------------------------------------------------------------


class RequestedDevice(NomadModel):
    Name: Annotated[str | None, _h(label=True)] = None
    Count: Annotated[int | None, Field(ge=0)] = None
    Constraints: Annotated[list[Constraint] | None, _h("constraint")] = None
    Affinities: Annotated[list[Affinity] | None, _h("affinity")] = None


class NUMAResource(NomadModel):
    Affinity: str | None = None
    Devices: list[str] | None = None


class DNSConfig(NomadModel):
    Servers: list[str] | None = None
    Searches: list[str] | None = None
    Options: list[str] | None = None


class CNIConfig(NomadModel):
    Args: dict[str, str] | None = None


class Port(NomadModel):
    Label: Annotated[str | None, _h(label=True)] = None
    Value: Annotated[int | None, _h("static")] = None
    To: int | None = None
    HostNetwork: str | None = None
    IgnoreCollision: bool | None = None


class NetworkResource(NomadModel):
    Mode: str | None = None
    Device: str | None = None
    CIDR: str | None = None
    IP: str | None = None
    DNS: DNSConfig | None = None
    ReservedPorts: Annotated[list[Port] | None, _h("port", reserved=True)] = None
    DynamicPorts: Annotated[list[Port] | None, _h("port")] = None
    Hostname: str | None = None
    MBits: Annotated[int | None, _h("mbits")] = None
    CNI: CNIConfig | None = None


class Resources(NomadModel):
    CPU: int | None = None
    Cores: int | None = None
    MemoryMB: Annotated[int | None, _h("memory")] = None
    MemoryMaxMB: Annotated[int | None, _h("memory_max")] = None
    DiskMB: Annotated[int | None, _h("disk")] = None
    Networks: Annotated[list[NetworkResource] | None, _h("network")] = None
    Devices: Annotated[list[RequestedDevice] | None, _h("device")] = None
    NUMA: NUMAResource | None = None
    SecretsMB: Annotated[int | None, _h("secrets")] = None
    IOPS: int | None = None


_Resources = Resources  # the field of the same name would shadow the class in later class bodies


# --- services and checks ------------------------------------------------------------------------------


class CheckRestart(NomadModel):
    Limit: int | None = None
    Grace: OptNanos = None
    IgnoreWarnings: bool | None = None


_CheckRestart = CheckRestart  # the field of the same name would shadow the class in later class bodies


class ServiceCheck(NomadModel):
    Name: str | None = None
    Type: str | None = None
    Command: str | None = None
    Args: list[str] | None = None
    Path: str | None = None
    Protocol: str | None = None
    PortLabel: Annotated[str | None, _h("port")] = None
    Expose: bool | None = None
    AddressMode: str | None = None
    Advertise: str | None = None
    Interval: OptNanos = None
    Timeout: OptNanos = None
    InitialStatus: str | None = None
    Notes: str | None = None
    TLSServerName: str | None = None
    TLSSkipVerify: bool | None = None
    Header: dict[str, list[str]] | None = None
    Method: str | None = None
    CheckRestart: _CheckRestart | None = None
    GRPCService: str | None = None
    GRPCUseTLS: Annotated[bool | None, _h("grpc_use_tls")] = None
    TaskName: Annotated[str | None, _h("task")] = None
    SuccessBeforePassing: int | None = None
    FailuresBeforeCritical: int | None = None
    FailuresBeforeWarning: int | None = None
    Body: str | None = None
    OnUpdate: str | None = None


class ServiceWeights(NomadModel):
    Passing: int | None = None
    Warning: int | None = None


class WorkloadIdentity(NomadModel):
    Name: str | None = None
    Audience: Annotated[list[str] | None, _h("aud")] = None
    ChangeMode: str | None = None
    ChangeSignal: str | None = None
    Env: bool | None = None
    File: bool | None = None
    Filepath: str | None = None
    ServiceName: str | None = None
    TTL: OptNanos = None
    ExtraClaims: list[str] | None = None


class Service(NomadModel):
    Name: str | None = None
    Tags: list[str] | None = None
    CanaryTags: list[str] | None = None
    EnableTagOverride: bool | None = None
    PortLabel: Annotated[str | None, _h("port")] = None
    AddressMode: str | None = None
    Address: str | None = None
    Checks: Annotated[list[ServiceCheck] | None, _h("check")] = None
    CheckRestart: _CheckRestart | None = None
    # Connect (the Consul service-mesh tree) is deliberately not modelled: model endpoints do not use it.
    Meta: dict[str, str] | None = None
    CanaryMeta: dict[str, str] | None = None
    TaggedAddresses: dict[str, str] | None = None
    TaskName: Annotated[str | None, _h("task")] = None
    OnUpdate: str | None = None
    Identity: WorkloadIdentity | None = None
    Weights: ServiceWeights | None = None
    Provider: str | None = None
    Cluster: str | None = None
    Kind: str | None = None


# --- policies -----------------------------------------------------------------------------------------


class UpdateStrategy(NomadModel):
    Stagger: OptNanos = None
    MaxParallel: int | None = None
    HealthCheck: str | None = None
    MinHealthyTime: OptNanos = None
    HealthyDeadline: OptNanos = None
    ProgressDeadline: OptNanos = None
    Canary: int | None = None
    AutoRevert: bool | None = None
    AutoPromote: bool | None = None


class RestartPolicy(NomadModel):
    Interval: OptNanos = None
    Attempts: int | None = None
    Delay: OptNanos = None
    Mode: str | None = None
    RenderTemplates: bool | None = None


_RestartPolicy = RestartPolicy  # the field of the same name would shadow the class in later class bodies


class ReschedulePolicy(NomadModel):
    Attempts: int | None = None
    Interval: OptNanos = None
    Delay: OptNanos = None
    DelayFunction: str | None = None
    MaxDelay: OptNanos = None
    Unlimited: bool | None = None


_ReschedulePolicy = ReschedulePolicy  # the field of the same name would shadow the class in later class bodies


class MigrateStrategy(NomadModel):
    MaxParallel: int | None = None
    HealthCheck: str | None = None
    MinHealthyTime: OptNanos = None
    HealthyDeadline: OptNanos = None


class DisconnectStrategy(NomadModel):
    LostAfter: OptNanos = None
    StopOnClientAfter: OptNanos = None
    Replace: bool | None = None
    Reconcile: str | None = None


class EphemeralDisk(NomadModel):
    Sticky: bool | None = None
    Migrate: bool | None = None
    SizeMB: Annotated[int | None, _h("size")] = None


_EphemeralDisk = EphemeralDisk  # the field of the same name would shadow the class in later class bodies


class ScalingPolicy(NomadModel):
    Min: int | None = None
    Max: int | None = None
    Policy: dict[str, Any] | None = None
    Enabled: bool | None = None
    Type: str | None = None
    ID: str | None = None
    Namespace: str | None = None
    Target: dict[str, str] | None = None
    CreateIndex: int | None = None
    ModifyIndex: int | None = None


class Consul(NomadModel):
    Namespace: str | None = None
    Cluster: str | None = None
    Partition: str | None = None


_Consul = Consul  # the field of the same name would shadow the class in later class bodies


# --- volumes ------------------------------------------------------------------------------------------


class CSIMountOptions(NomadModel):
    FSType: Annotated[str | None, _h("fs_type")] = None
    MountFlags: list[str] | None = None


class VolumeRequest(NomadModel):
    Name: str | None = None
    Type: str | None = None
    Source: str | None = None
    ReadOnly: bool | None = None
    Sticky: bool | None = None
    AccessMode: str | None = None
    AttachmentMode: str | None = None
    MountOptions: CSIMountOptions | None = None
    PerAlloc: bool | None = None


class VolumeMount(NomadModel):
    Volume: str | None = None
    Destination: str | None = None
    ReadOnly: bool | None = None
    PropagationMode: str | None = None
    SELinuxLabel: Annotated[str | None, _h("selinux_label")] = None


# --- task pieces --------------------------------------------------------------------------------------


class TaskLifecycle(NomadModel):
    Hook: str | None = None
    Sidecar: bool | None = None


class ChangeScript(NomadModel):
    Command: str | None = None
    Args: list[str] | None = None
    Timeout: OptNanos = None
    FailOnError: bool | None = None
    RunOnFirstRender: bool | None = None


_ChangeScript = ChangeScript  # the field of the same name would shadow the class in later class bodies


class WaitConfig(NomadModel):
    Min: OptNanos = None
    Max: OptNanos = None


class Template(NomadModel):
    SourcePath: Annotated[str | None, _h("source")] = None
    DestPath: Annotated[str | None, _h("destination")] = None
    EmbeddedTmpl: Annotated[str | None, _h("data")] = None
    ChangeMode: str | None = None
    ChangeScript: _ChangeScript | None = None
    ChangeSignal: str | None = None
    Once: bool | None = None
    Splay: OptNanos = None
    Perms: str | None = None
    Uid: int | None = None
    Gid: int | None = None
    LeftDelim: Annotated[str | None, _h("left_delimiter")] = None
    RightDelim: Annotated[str | None, _h("right_delimiter")] = None
    Envvars: Annotated[bool | None, _h("env")] = None
    VaultGrace: OptNanos = None
    Wait: WaitConfig | None = None
    ErrMissingKey: Annotated[bool | None, _h("error_on_missing_key")] = None


class TaskArtifact(NomadModel):
    GetterSource: Annotated[str | None, _h("source")] = None
    GetterOptions: Annotated[dict[str, str] | None, _h("options")] = None
    GetterHeaders: Annotated[dict[str, str] | None, _h("headers")] = None
    GetterMode: Annotated[str | None, _h("mode")] = None
    GetterInsecure: Annotated[bool | None, _h("insecure")] = None
    RelativeDest: Annotated[str | None, _h("destination")] = None
    Chown: bool | None = None


class LogConfig(NomadModel):
    MaxFiles: int | None = None
    MaxFileSizeMB: Annotated[int | None, _h("max_file_size")] = None
    Enabled: bool | None = None
    Disabled: bool | None = None


_LogConfig = LogConfig  # the field of the same name would shadow the class in later class bodies


class DispatchPayloadConfig(NomadModel):
    File: str | None = None


class Vault(NomadModel):
    Policies: list[str] | None = None
    Role: str | None = None
    Namespace: str | None = None
    Cluster: str | None = None
    Env: bool | None = None
    DisableFile: bool | None = None
    ChangeMode: str | None = None
    ChangeSignal: str | None = None
    AllowTokenExpiration: bool | None = None


_Vault = Vault  # the field of the same name would shadow the class in later class bodies


class TaskCSIPluginConfig(NomadModel):
    ID: str | None = None
    Type: str | None = None
    MountDir: str | None = None
    StagePublishBaseDir: str | None = None
    HealthTimeout: OptNanos = None


class Secret(NomadModel):
    Name: str | None = None
    Provider: str | None = None
    Path: str | None = None
    Config: dict[str, Any] | None = None
    Env: dict[str, str] | None = None


class Action(NomadModel):
    Name: str | None = None
    Command: str | None = None
    Args: list[str] | None = None


class TaskScheduleCron(NomadModel):
    Start: str | None = None
    End: str | None = None
    Timezone: str | None = None


class TaskSchedule(NomadModel):
    Cron: TaskScheduleCron | None = None


class Task(NomadModel):
    Name: Annotated[str, _h(label=True)]
    Driver: str
    User: str | None = None
    Lifecycle: TaskLifecycle | None = None
    Config: dict[str, Any] | None = None
    Constraints: Annotated[list[Constraint] | None, _h("constraint")] = None
    Affinities: Annotated[list[Affinity] | None, _h("affinity")] = None
    Env: dict[str, str] | None = None
    Services: Annotated[list[Service] | None, _h("service")] = None
    Resources: _Resources | None = None
    RestartPolicy: Annotated[_RestartPolicy | None, _h("restart")] = None
    Meta: dict[str, str] | None = None
    KillTimeout: OptNanos = None
    LogConfig: Annotated[_LogConfig | None, _h("logs")] = None
    Artifacts: Annotated[list[TaskArtifact] | None, _h("artifact")] = None
    Vault: _Vault | None = None
    Consul: _Consul | None = None
    Templates: Annotated[list[Template] | None, _h("template")] = None
    DispatchPayload: DispatchPayloadConfig | None = None
    VolumeMounts: Annotated[list[VolumeMount] | None, _h("volume_mount")] = None
    CSIPluginConfig: Annotated[TaskCSIPluginConfig | None, _h("csi_plugin")] = None
    Leader: bool | None = None
    ShutdownDelay: OptNanos = None
    KillSignal: str | None = None
    Kind: str | None = None
    ScalingPolicies: Annotated[list[ScalingPolicy] | None, _h("scaling")] = None
    Secrets: Annotated[list[Secret] | None, _h("secret")] = None
    Identity: WorkloadIdentity | None = None
    Identities: Annotated[list[WorkloadIdentity] | None, _h("identity")] = None
    Actions: Annotated[list[Action] | None, _h("action")] = None
    Schedule: TaskSchedule | None = None


class TaskGroup(NomadModel):
    Name: Annotated[str, _h(label=True)]
    Count: Annotated[int | None, Field(ge=0)] = None
    Constraints: Annotated[list[Constraint] | None, _h("constraint")] = None
    Affinities: Annotated[list[Affinity] | None, _h("affinity")] = None
    Tasks: Annotated[list[Task], _h("task")]
    Spreads: Annotated[list[Spread] | None, _h("spread")] = None
    Volumes: Annotated[dict[str, VolumeRequest] | None, _h("volume")] = None
    RestartPolicy: Annotated[_RestartPolicy | None, _h("restart")] = None
    Disconnect: DisconnectStrategy | None = None
    ReschedulePolicy: Annotated[_ReschedulePolicy | None, _h("reschedule")] = None
    EphemeralDisk: _EphemeralDisk | None = None
    Update: UpdateStrategy | None = None
    Migrate: MigrateStrategy | None = None
    Networks: Annotated[list[NetworkResource] | None, _h("network")] = None
    Meta: dict[str, str] | None = None
    Services: Annotated[list[Service] | None, _h("service")] = None
    ShutdownDelay: OptNanos = None
    MaxRunDuration: OptNanos = None
    StopAfterClientDisconnect: OptNanos = None
    MaxClientDisconnect: OptNanos = None
    Scaling: ScalingPolicy | None = None
    Consul: _Consul | None = None
    PreventRescheduleOnLost: bool | None = None


# --- job ----------------------------------------------------------------------------------------------


class PeriodicConfig(NomadModel):
    Enabled: bool | None = None
    Spec: Annotated[str | None, _h("cron")] = None
    Specs: Annotated[list[str] | None, _h("crons")] = None
    SpecType: str | None = None
    ProhibitOverlap: bool | None = None
    TimeZone: str | None = None


class ParameterizedJobConfig(NomadModel):
    Payload: str | None = None
    MetaRequired: list[str] | None = None
    MetaOptional: list[str] | None = None


class MultiregionStrategy(NomadModel):
    MaxParallel: int | None = None
    OnFailure: str | None = None


class MultiregionRegion(NomadModel):
    Name: Annotated[str | None, _h(label=True)] = None
    Count: int | None = None
    Datacenters: list[str] | None = None
    NodePool: str | None = None
    Meta: dict[str, str] | None = None


class Multiregion(NomadModel):
    Strategy: MultiregionStrategy | None = None
    Regions: Annotated[list[MultiregionRegion] | None, _h("region")] = None


_Multiregion = Multiregion  # the field of the same name would shadow the class in later class bodies


class JobUILink(NomadModel):
    Label: str | None = None
    URL: str | None = None


class JobUIConfig(NomadModel):
    Description: str | None = None
    Links: Annotated[list[JobUILink] | None, _h("link")] = None


class JobVersionTag(NomadModel):
    Name: str | None = None
    Description: str | None = None
    TaggedTime: int | None = None


class Job(NomadModel):
    Region: str | None = None
    Namespace: str | None = None
    ID: Annotated[str, _h(label=True)]
    Name: str | None = None
    Type: str | None = None
    Priority: Annotated[int | None, Field(ge=1, le=100)] = None
    AllAtOnce: bool | None = None
    Datacenters: list[str] | None = None
    NodePool: str | None = None
    Constraints: Annotated[list[Constraint] | None, _h("constraint")] = None
    Affinities: Annotated[list[Affinity] | None, _h("affinity")] = None
    TaskGroups: Annotated[list[TaskGroup], _h("group")]
    Update: UpdateStrategy | None = None
    Multiregion: _Multiregion | None = None
    Spreads: Annotated[list[Spread] | None, _h("spread")] = None
    Periodic: PeriodicConfig | None = None
    ParameterizedJob: Annotated[ParameterizedJobConfig | None, _h("parameterized")] = None
    Reschedule: ReschedulePolicy | None = None
    Migrate: MigrateStrategy | None = None
    Meta: dict[str, str] | None = None
    UI: JobUIConfig | None = None
    ConsulNamespace: str | None = None
    VaultNamespace: str | None = None
    VersionTag: JobVersionTag | None = None
    # Server-set fields (Stop, Status, Version, *Index, ...) are left out: we never send them.


def api_document(job: Job) -> dict[str, Any]:
    """The document `nomad job run -json`, the HTTP API and Terraform's `nomad_job` (json = true) take."""
    return {"Job": job.api()}
