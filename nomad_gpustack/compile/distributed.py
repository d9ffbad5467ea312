"""A replica over several Nomad clients (`nomad.nodes`): what each rank is given, and how the ranks find each other.

Pure values for `resolve` (the placeholders of the leader and of the workers) and for `distributed_job` (the
templates that render the addresses). The design is in ARCHITECTURE.md, "Distributed replicas": the leaders
are the `inference` group, each worker rank of each replica a group of its own, found through Consul.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..spec.distributed import DISTRIBUTED_PLACEHOLDERS, LEADER_ONLY

LEADER_PORT = "dist"  # the leader's rendezvous port label (torch's master port, SGLang's dist-init port)
WORKER_ADDRESSES_ENV = "NOMADGS_WORKER_ADDRESSES"
LEADER_IP_ENV = "NOMADGS_LEADER_IP"
LEADER_PORT_ENV = "NOMADGS_LEADER_PORT"
NODE_RANK_ENV = "NOMADGS_NODE_RANK"
ENV_FILE = "local/nomadgs-distributed.env"
# Read while a rank is missing: the key never exists, and consul-template blocks a render on a missing key,
# so an engine never starts with part of its replica (the task shows "Missing: kv.block(...)").
WAIT_KEY_PREFIX = "nomadgs/wait"


@dataclass(frozen=True)
class Distribution:
    """How one replica spreads over `nodes` clients: the leader runs the resolved command, the workers this."""

    nodes: int
    worker_entrypoint: tuple[str, ...]
    worker_command: str | None  # exec/raw_exec program of the workers
    worker_args: tuple[str, ...]
    worker_check: bool  # a TCP check on the worker's port
    worker_weights: bool  # the workers read the model's files (they get the download and the volume)

    @property
    def workers_find_leader(self) -> bool:
        """Whether the workers are given the leader's address: the leader then has a `dist` port and a
        `<service>-leader` service, and the workers a template that finds it."""
        words = [*self.worker_entrypoint, *self.worker_args]
        return any(LEADER_IP_ENV in w or LEADER_PORT_ENV in w for w in words)


def leader_finds_workers(argv: tuple[str, ...]) -> bool:
    """Whether the leader's command is given its workers' addresses (a template then lists them)."""
    return any(WORKER_ADDRESSES_ENV in word for word in argv)


def leader_values(nodes: int, main_port: str) -> dict[str, str]:
    """The distributed placeholders on the leader (rank 0): its own address and port, its workers' addresses."""
    values = {
        "leader_ip": f"${{NOMAD_IP_{main_port}}}",
        "leader_port": f"${{NOMAD_PORT_{LEADER_PORT}}}",
        "node_rank": "0",
        "node_count": str(nodes),
        "worker_addresses": f"${{{WORKER_ADDRESSES_ENV}}}",
    }
    assert tuple(values) == tuple(DISTRIBUTED_PLACEHOLDERS)
    return values


def worker_values(nodes: int) -> dict[str, str]:
    """The distributed placeholders on a worker: the leader's address from the template, the rank from the
    group's env (each rank is a group of its own)."""
    values = {
        "leader_ip": f"${{{LEADER_IP_ENV}}}",
        "leader_port": f"${{{LEADER_PORT_ENV}}}",
        "node_rank": f"${{{NODE_RANK_ENV}}}",
        "node_count": str(nodes),
    }
    assert set(values) == set(DISTRIBUTED_PLACEHOLDERS) - set(LEADER_ONLY)
    return values


def worker_service(service: str) -> str:
    return f"{service}-worker"


def leader_service(service: str) -> str:
    return f"{service}-leader"


def worker_tag(replica: int | str, rank: int | str) -> str:
    """The tag a worker registers and its leader asks Consul for (one tag: Consul filters by one)."""
    return f"replica-{replica}-rank-{rank}"


def leader_tag(replica: int | str) -> str:
    return f"replica-{replica}"


def leader_template(service: str, nodes: int) -> str:
    """The leader's env file: its replica's workers as host:port in rank order, once every one passes its check.

    The leader's replica is its allocation index (the `inference` group has one allocation per replica).
    """
    wait = f"{WAIT_KEY_PREFIX}/{service}/workers"
    query = f'(printf "{worker_tag("%s", "%d")}.{worker_service(service)}" (env "NOMAD_ALLOC_INDEX") $rank)'
    return (
        f"{WORKER_ADDRESSES_ENV}="
        f"{{{{- range $i, $rank := loop 1 {nodes} }}}}{{{{ if $i }}}},{{{{ end }}}}"
        f"{{{{- with service {query} }}}}{{{{ with index . 0 }}}}{{{{ .Address }}}}:{{{{ .Port }}}}{{{{ end }}}}"
        f'{{{{- else }}}}{{{{ key "{wait}" }}}}{{{{ end }}}}{{{{ end }}}}\n'
    )


def worker_template(service: str, replica: int) -> str:
    """A worker's env file: its replica's leader's address and rendezvous port, once the leader is registered."""
    wait = f"{WAIT_KEY_PREFIX}/{service}/leader"
    return (
        f'{{{{ with service "{leader_tag(replica)}.{leader_service(service)}" }}}}{{{{ with index . 0 -}}}}\n'
        f"{LEADER_IP_ENV}={{{{ .Address }}}}\n"
        f"{LEADER_PORT_ENV}={{{{ .Port }}}}\n"
        f'{{{{ end }}}}{{{{ else }}}}{{{{ key "{wait}" }}}}{{{{ end }}}}\n'
    )
