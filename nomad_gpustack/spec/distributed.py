"""The `nomad: distributed:` block of a backend (or one of its versions): how its engine starts across nodes.

GPUStack starts vLLM, SGLang and llama.cpp across workers in code (`worker/backends/*.py`) and has no
placeholders for it: its custom-backend expander knows only `{{model_path}} {{port}} {{worker_ip}}
{{model_name}} {{gpu_count}} {{gpu_ids}}` (`schemas/inference_backend.py`). The distributed placeholders are
therefore named after the engines' own flags: vLLM's `--nnodes --node-rank --master-addr --master-port`,
SGLang's `--nnodes --node-rank --dist-init-addr`, llama.cpp's `--rpc host:port,...`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from .base import SpecModel

# What each placeholder stands for; the compiler fills them per rank (compile/distributed.py).
DISTRIBUTED_PLACEHOLDERS = {
    "leader_ip": "the leader's (rank 0's) address",
    "leader_port": "the leader's rendezvous port (torch's master port, SGLang's dist-init port)",
    "node_rank": "this node's rank: 0 on the leader, 1 to nodes-1 on the workers",
    "node_count": "the number of nodes of one replica (nomad.nodes)",
    "worker_addresses": "the replica's workers as host:port,host:port in rank order (the leader only)",
}
LEADER_ONLY = ("worker_addresses",)


class Distributed(SpecModel):
    """How a replica spread over `nomad.nodes` Nomad clients starts: one leader (rank 0), the rest workers."""

    # The leader's run command (rank 0, which serves the HTTP API); None: the backend's run command as is.
    leader_command: str | None = None
    # The workers' entrypoint; None: the version's (or backend's) entrypoint.
    worker_entrypoint: str | None = None
    worker_command: str
    # Whether the deployment's backend_parameters go to the workers too (engine flags every rank must agree
    # on, as vLLM's and SGLang's); the leader always gets them.
    worker_parameters: bool = False
    # How a worker's health shows in Consul: `tcp` probes its port ({{port}}, which it must listen on);
    # `none` registers it without a check (an engine rank with no port of its own, as headless vLLM).
    worker_check: Literal["tcp", "none"] = "tcp"

    @field_validator("worker_command", "leader_command", "worker_entrypoint")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("cannot be empty: leave the key out for the default")
        return value
