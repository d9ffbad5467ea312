"""The gateway as a Nomad service job: `nomadgs gateway-job` and `jobs/nomadgs-gateway.nomad.*`.

Pure: options in, a validated job model out, through the same strict job models as the model jobs. Secrets
never enter the job: the API keys and the Nomad token come from a Nomad Variable at `VARIABLES_PATH`, which
the task's workload identity may read without a policy (Nomad grants each task `nomad/jobs/<job>`), rendered
by a template into an env file in `secrets/`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import __version__
from ..contract.jobspec import (
    Constraint,
    Job,
    NetworkResource,
    Port,
    Resources,
    Service,
    ServiceCheck,
    Task,
    TaskGroup,
    Template,
    UpdateStrategy,
    validate_job,
)
from ..contract.metadata import GATEWAY_SERVICE, META_METRICS_PATH, TAG_METRICS

JOB_ID = GATEWAY_SERVICE
VARIABLES_PATH = f"nomad/jobs/{JOB_ID}"
IMAGE = f"local/nomadgs:{__version__}"  # built by docker/build-local-images.sh from the project's wheel
SECONDS = 1_000_000_000  # Nomad's durations are nanoseconds
DRAIN_SECONDS = 30  # the gateway's --drain-timeout default
# The variable's items, as env: each line only when the item exists (a missing one must not become a value).
SECRETS_TEMPLATE = (
    '{{ with nomadVar "' + VARIABLES_PATH + '" }}\n'
    "{{ with .api_keys }}NOMADGS_GATEWAY_API_KEYS={{ . }}{{ end }}\n"
    "{{ with .nomad_token }}NOMAD_TOKEN={{ . }}{{ end }}\n"
    "{{ end }}\n"
)


@dataclass(frozen=True)
class GatewayJobOptions:
    """What a gateway job can be told; the defaults are `jobs/nomadgs-gateway.nomad.*`."""

    replicas: int = 2
    image: str = IMAGE
    port: int = 8080  # static, the same on every node: what clients and load balancers are told; 0: dynamic
    datacenters: tuple[str, ...] = ()
    consul_address: str = "http://127.0.0.1:8500"  # the node's Consul agent (the task uses the host's network)
    nomad_address: str | None = None  # set: scale to zero through Nomad, with the variable's nomad_token
    cpu: int = 1000
    memory_mb: int = 512


def gateway_job(options: GatewayJobOptions = GatewayJobOptions()) -> Job:
    """The gateway's service job: `replicas` allocations on distinct nodes, each `nomadgs gateway --workers
    auto`, registered in Consul as `nomadgs-gateway` with a `/health` check and tagged for Prometheus."""
    port = Port(Label="http", Value=options.port) if options.port else Port(Label="http")
    network = NetworkResource(ReservedPorts=[port]) if options.port else NetworkResource(DynamicPorts=[port])
    env = {"CONSUL_HTTP_ADDR": options.consul_address, "NO_COLOR": "1"}
    # The address Nomad gave the port (host network: the node's IP), the one its Consul service is registered
    # with and checked on; not 0.0.0.0, which would also serve on every other interface of the node.
    args = ["gateway", "--listen", "${NOMAD_ADDR_http}", "--workers", "auto",
            "--drain-timeout", f"{DRAIN_SECONDS}s"]  # fmt: skip
    if options.nomad_address:
        env["NOMAD_ADDR"] = options.nomad_address
    else:
        args.append("--no-scale-to-zero")
    task = Task(
        Name="gateway",
        Driver="docker",
        Config={"image": options.image, "args": args, "network_mode": "host"},
        Env=env,
        Templates=[
            Template(DestPath="secrets/gateway.env", EmbeddedTmpl=SECRETS_TEMPLATE, Envvars=True, ChangeMode="restart")
        ],
        Resources=Resources(CPU=options.cpu, MemoryMB=options.memory_mb),
        # SIGTERM: the gateway stops accepting and lets requests and streams end; Nomad waits that long.
        KillSignal="SIGTERM",
        KillTimeout=(DRAIN_SECONDS + 5) * SECONDS,
    )
    service = Service(
        Name=GATEWAY_SERVICE,
        PortLabel="http",
        Provider="consul",
        Tags=[TAG_METRICS],
        Meta={META_METRICS_PATH: "/metrics"},
        Checks=[
            ServiceCheck(Name="gateway health", Type="http", Path="/health", Interval=10 * SECONDS, Timeout=2 * SECONDS)
        ],
    )
    group = TaskGroup(
        Name="gateway",
        Count=options.replicas,
        Networks=[network],
        Services=[service],
        Tasks=[task],
        Update=UpdateStrategy(
            MaxParallel=1, HealthCheck="checks", MinHealthyTime=10 * SECONDS, HealthyDeadline=5 * 60 * SECONDS
        ),
    )
    job = Job(
        ID=JOB_ID,
        Name=JOB_ID,
        Type="service",
        # One gateway per node (scheduler/feasible/feasible.go, jobDistinctHosts): a node lost takes one.
        Constraints=[Constraint(Operand="distinct_hosts", RTarget="true")],
        TaskGroups=[group],
    )
    if options.datacenters:
        job["Datacenters"] = list(options.datacenters)
    return validate_job(job)
