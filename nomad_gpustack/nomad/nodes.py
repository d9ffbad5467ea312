"""Nomad client nodes as facts: where each node is, what it is, and which GPUs its device plugin fingerprinted.

What the Ansible inventory plugin `nomad_nodes` turns into hosts and groups. `node_facts` is pure (a node
list stub, and optionally the full node, in); `read_nodes` makes the reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..sizes import MIB, parse_size
from .client import NomadAPI

GPU_VENDOR, GPU_TYPE = "nvidia", "gpu"  # the `nvidia/gpu` device fingerprint of Nomad's NVIDIA device plugin


@dataclass(frozen=True)
class GPUGroup:
    """One device group of `nvidia/gpu` devices (one GPU model) on a node."""

    model: str
    count: int
    healthy: int
    memory_mib: int | None
    driver_version: str | None


@dataclass(frozen=True)
class NodeFacts:
    """One Nomad client node, as an inventory host."""

    id: str
    name: str
    address: str
    datacenter: str
    node_pool: str
    node_class: str
    status: str
    eligible: bool
    drain: bool
    version: str
    gpus: tuple[GPUGroup, ...]

    @property
    def gpu_count(self) -> int:
        return sum(g.count for g in self.gpus)

    @property
    def gpu_models(self) -> list[str]:
        return sorted({g.model for g in self.gpus if g.model})

    @property
    def gpu_memory_mib(self) -> int | None:
        """Memory of one GPU (the smallest, when a node mixes models)."""
        sizes = [g.memory_mib for g in self.gpus if g.memory_mib is not None]
        return min(sizes) if sizes else None

    @property
    def driver_version(self) -> str | None:
        versions = sorted({g.driver_version for g in self.gpus if g.driver_version})
        return versions[0] if versions else None


def _attribute(attributes: Mapping[str, Any], name: str) -> Any:
    """A device attribute's value (`{"Int": 24576, "Unit": "MiB"}`, `{"String": "550.54"}`, ...)."""
    value = attributes.get(name) or {}
    for key in ("String", "Int", "Float", "Bool"):
        if value.get(key) is not None:
            return value[key]
    return None


def _memory_mib(attributes: Mapping[str, Any]) -> int | None:
    memory = attributes.get("memory") or {}
    if memory.get("Int") is None:
        return None
    try:
        return parse_size(f"{memory['Int']} {memory.get('Unit') or 'MiB'}") // MIB
    except ValueError:
        return None


def gpu_groups(devices: Sequence[Mapping[str, Any]] | None) -> tuple[GPUGroup, ...]:
    """The `nvidia/gpu` device groups of a node's `NodeResources.Devices`."""
    groups = []
    for dev in devices or []:
        if dev.get("Vendor") != GPU_VENDOR or dev.get("Type") != GPU_TYPE:
            continue
        attributes = dev.get("Attributes") or {}
        instances = dev.get("Instances") or []
        driver = _attribute(attributes, "driver_version")
        groups.append(
            GPUGroup(
                model=str(dev.get("Name") or ""),
                count=len(instances),
                healthy=sum(1 for i in instances if i.get("Healthy")),
                memory_mib=_memory_mib(attributes),
                driver_version=str(driver) if driver is not None else None,
            )
        )
    return tuple(groups)


def http_host(http_addr: str) -> str:
    """The host of a node's `HTTPAddr` (`10.0.0.5:4646`, `[fd00::5]:4646`)."""
    host, _, port = http_addr.rpartition(":")
    if not port.isdigit() or not host:
        return http_addr.strip("[]")
    return host.strip("[]")


def node_facts(
    stub: Mapping[str, Any], full: Mapping[str, Any] | None = None, *, address_from: str = "http"
) -> NodeFacts:
    """Facts of one node from its list stub (read with `resources=true`) and, when read, the full node.

    `address_from` is `http` (the host of the node's HTTP address; the stub's `Address` until the full node
    is read) or the name of a node attribute such as `unique.network.ip-address` (needs the full node).
    """
    node = {**stub, **(full or {})}
    address = str(stub.get("Address") or "")
    if address_from == "http":
        if node.get("HTTPAddr"):
            address = http_host(str(node["HTTPAddr"]))
    else:
        address = str((node.get("Attributes") or {}).get(address_from) or address)
    resources = node.get("NodeResources") or {}
    return NodeFacts(
        id=str(node.get("ID") or ""),
        name=str(node.get("Name") or node.get("ID") or ""),
        address=address,
        datacenter=str(node.get("Datacenter") or ""),
        node_pool=str(node.get("NodePool") or ""),
        node_class=str(node.get("NodeClass") or ""),
        status=str(node.get("Status") or ""),
        eligible=node.get("SchedulingEligibility", "eligible") == "eligible",
        drain=bool(node.get("Drain")),
        version=str(node.get("Version") or ""),
        gpus=gpu_groups(resources.get("Devices")),
    )


NODE_READS = 8  # full nodes read at once: a cluster of hundreds of nodes does not open hundreds of connections


def read_nodes(api: NomadAPI, *, full: bool = False) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """(list stub with resources, full node when `full`) of every client node, in Nomad's order."""

    async def read() -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        async with api.async_client() as http:
            stubs = await api.nodes(http)
            if not full:
                return [(stub, None) for stub in stubs]
            reads = asyncio.Semaphore(NODE_READS)

            async def full_node(node_id: str) -> dict[str, Any]:
                async with reads:
                    return await api.node(http, node_id)

            answers = await asyncio.gather(*(full_node(str(stub["ID"])) for stub in stubs))
            return list(zip(stubs, answers, strict=True))

    return asyncio.run(read())
