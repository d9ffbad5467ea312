"""Node facts for the inventory: address, placement attributes and the `nvidia/gpu` fingerprint."""

from __future__ import annotations

from nomad_gpustack.nomad.nodes import http_host, node_facts

STUB = {
    "ID": "5f1c",
    "Name": "gpu-1",
    "Address": "10.0.0.5",
    "Datacenter": "dc1",
    "NodePool": "gpu",
    "NodeClass": "a10",
    "Status": "ready",
    "SchedulingEligibility": "ineligible",
    "Drain": True,
    "Version": "1.9.7",
    "NodeResources": {
        "Devices": [
            {
                "Vendor": "nvidia",
                "Type": "gpu",
                "Name": "NVIDIA A10",
                "Attributes": {"memory": {"Int": 24, "Unit": "GiB"}, "driver_version": {"String": "550.54.15"}},
                "Instances": [{"ID": "GPU-1", "Healthy": True}, {"ID": "GPU-2", "Healthy": False}],
            },
            {"Vendor": "amd", "Type": "gpu", "Name": "MI300X", "Instances": [{"ID": "x", "Healthy": True}]},
        ]
    },
}


def test_facts_from_a_list_stub() -> None:
    facts = node_facts(STUB)
    assert (facts.name, facts.address, facts.datacenter, facts.node_pool, facts.node_class) == (
        "gpu-1", "10.0.0.5", "dc1", "gpu", "a10",
    )  # fmt: skip
    assert facts.eligible is False and facts.drain is True and facts.version == "1.9.7"
    assert facts.gpu_count == 2 and facts.gpus[0].healthy == 1, "only nvidia/gpu devices count"
    assert facts.gpu_models == ["NVIDIA A10"] and facts.gpu_memory_mib == 24576
    assert facts.driver_version == "550.54.15"


def test_address_from_the_full_node() -> None:
    full = {"HTTPAddr": "[fd00::5]:4646", "Attributes": {"unique.network.ip-address": "192.0.2.5"}}
    assert node_facts(STUB, full).address == "fd00::5"
    assert node_facts(STUB, full, address_from="unique.network.ip-address").address == "192.0.2.5"
    assert node_facts(STUB, full, address_from="no.such.attribute").address == "10.0.0.5"
    assert http_host("10.0.0.5:4646") == "10.0.0.5" and http_host("gpu-1") == "gpu-1"


def test_a_node_without_devices() -> None:
    facts = node_facts({"ID": "1", "Name": "cpu-1"})
    assert facts.gpu_count == 0 and facts.gpu_models == [] and facts.gpu_memory_mib is None
    assert facts.driver_version is None and facts.eligible is True


def test_reading_every_node_in_full_keeps_to_a_few_connections() -> None:
    """The inventory reads each node in full: 40 nodes, at most NODE_READS of them at once (plus the listing)."""
    from nomad_gpustack.nomad.client import NomadAPI
    from nomad_gpustack.nomad.nodes import NODE_READS, read_nodes
    from nomad_gpustack.settings import NomadSettings

    from ..support.nomad_double import NomadDouble
    from ..support.nomad_double.objects import new_node

    with NomadDouble(nodes=[new_node(f"gpu-{i}") for i in range(40)]) as nomad:
        nodes = read_nodes(NomadAPI(NomadSettings(address=nomad.address)), full=True)
        assert len(nodes) == 40 and all(full is not None for _, full in nodes)
        assert nomad.peak_connections <= NODE_READS + 1, nomad.peak_connections
