"""The `nomad_nodes` inventory against the double's `/v1/nodes`: `ansible-inventory --graph` and host variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...support.nomad_double import NomadDouble
from ...support.nomad_double.objects import new_node, nvidia_gpus
from ..conftest import run_tool

NODES = [
    new_node("gpu-a10-1", http_addr="10.0.0.11:4646", node_pool="gpu", node_class="a10",
             devices=[nvidia_gpus("NVIDIA A10", 2, 24576, "550.54.15")]),
    new_node("gpu-a100-1", http_addr="10.0.1.21:4646", datacenter="dc2", node_pool="gpu", node_class="a100",
             attributes={"unique.network.ip-address": "192.0.2.21"},
             devices=[nvidia_gpus("NVIDIA A100-SXM4-80GB", 8, 81920, "535.161.08")]),
    new_node("cpu-1", http_addr="10.0.0.31:4646"),
    new_node("gone-1", http_addr="10.0.0.41:4646", status="down"),
]  # fmt: skip


def plain(value: Any) -> Any:
    """`ansible-inventory --list` marks text from a plugin as unsafe (`{"__ansible_unsafe": ...}`)."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def inventory(folder: Path, text: str) -> Path:
    path = folder / "nodes.nomad.yml"
    path.write_text("plugin: nomad_gpustack.nomad.nomad_nodes\n" + text)
    return path


def test_graph_groups_nodes_by_datacenter_pool_class_and_gpu(tmp_path: Path) -> None:
    with NomadDouble(nodes=NODES) as nomad:
        source = inventory(tmp_path, f"nomad_addr: {nomad.address}\n")
        graph = run_tool("ansible-inventory", "-i", str(source), "--graph")
        listing = run_tool("ansible-inventory", "-i", str(source), "--list")
        requests = [r.path for r in nomad.requests]
    assert graph.code == 0, graph.text
    assert listing.code == 0, listing.text
    data = plain(json.loads(listing.out))
    groups = {name: set(value.get("hosts", [])) for name, value in data.items() if isinstance(value, dict)}
    assert groups["nomad_nodes"] == {"gpu-a10-1", "gpu-a100-1", "cpu-1"}, "down nodes are left out"
    assert groups["datacenter_dc1"] == {"gpu-a10-1", "cpu-1"} and groups["datacenter_dc2"] == {"gpu-a100-1"}
    assert groups["node_pool_gpu"] == {"gpu-a10-1", "gpu-a100-1"} and groups["node_pool_default"] == {"cpu-1"}
    assert groups["node_class_a10"] == {"gpu-a10-1"} and groups["node_class_a100"] == {"gpu-a100-1"}
    assert groups["gpu_nvidia_a10"] == {"gpu-a10-1"} and groups["gpu_nvidia_a100_sxm4_80gb"] == {"gpu-a100-1"}
    assert groups["gpu_nodes"] == {"gpu-a10-1", "gpu-a100-1"}
    a10 = data["_meta"]["hostvars"]["gpu-a10-1"]
    assert a10["ansible_host"] == "10.0.0.11"
    assert a10["nomad_gpu_count"] == 2 and a10["nomad_gpu_memory_mib"] == 24576
    assert a10["nomad_gpu_driver_version"] == "550.54.15" and a10["nomad_gpu_models"] == ["NVIDIA A10"]
    assert a10["nomad_node_pool"] == "gpu" and a10["nomad_eligible"] is True
    cpu = data["_meta"]["hostvars"]["cpu-1"]
    assert cpu["nomad_gpu_count"] == 0 and cpu["nomad_gpu_driver_version"] is None
    assert "|--@gpu_nvidia_a10:" in graph.out and "|  |--gpu-a10-1" in graph.out
    assert set(requests) == {"/v1/nodes"}, "one request unless an attribute is asked for"


def test_address_attribute_keyed_groups_and_token(tmp_path: Path) -> None:
    token = "c0ffee00-inventory-token"
    # Listing nodes needs the node policy's read (nomad/node_endpoint.go List), not a namespace policy.
    with NomadDouble(nodes=NODES, acl_tokens={token: "read node:read"}) as nomad:
        source = inventory(
            tmp_path,
            f"nomad_addr: {nomad.address}\naddress_attribute: unique.network.ip-address\nstatuses: [ready, down]\n"
            "keyed_groups:\n  - key: nomad_gpu_driver_version\n    prefix: nvidia_driver\n",
        )
        listing = run_tool("ansible-inventory", "-i", str(source), "--list", env={"NOMAD_TOKEN": token})
        refused = run_tool("ansible-inventory", "-i", str(source), "--list", env={"NOMAD_TOKEN": "wrong-" + token})
    assert listing.code == 0, listing.text
    data = plain(json.loads(listing.out))
    assert data["_meta"]["hostvars"]["gpu-a100-1"]["ansible_host"] == "192.0.2.21"
    assert data["_meta"]["hostvars"]["gpu-a10-1"]["ansible_host"] == "10.0.0.11"
    assert "gone-1" in data["nomad_nodes"]["hosts"]
    assert data["nvidia_driver_535_161_08"]["hosts"] == ["gpu-a100-1"]
    assert "Permission denied" in refused.text and "the token is unknown to this cluster" in refused.text
    assert token not in listing.text + refused.text
