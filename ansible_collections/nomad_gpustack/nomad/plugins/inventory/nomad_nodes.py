# Copyright: nomad-gpustack developers
# Apache License 2.0 (see the repository's LICENSE)
"""The `nomad_nodes` inventory: Nomad client nodes as hosts, grouped by what Nomad fingerprinted."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: nomad_nodes
short_description: Nomad client nodes as hosts, grouped by datacenter, node pool, class and GPU model
version_added: "0.1.0"
description:
  - Reads Nomad's client nodes (C(/v1/nodes) with their resources) and makes each one a host, so that GPU nodes
    can be targeted by what Nomad sees (driver upgrades, host volume setup).
  - The host's C(ansible_host) is the host of the node's HTTP address, or a node attribute (O(address_attribute)).
  - "Groups: C(nomad_nodes) (all), C(datacenter_<dc>), C(node_pool_<pool>), C(node_class_<class>),
    C(gpu_nodes) (nodes with an C(nvidia/gpu) device) and C(gpu_<model>) per GPU model (C(gpu_nvidia_a10))."
  - "Host variables: C(nomad_node_id), C(nomad_datacenter), C(nomad_node_pool), C(nomad_node_class),
    C(nomad_status), C(nomad_eligible), C(nomad_drain), C(nomad_version), C(nomad_gpu_count),
    C(nomad_gpu_models), C(nomad_gpu_memory_mib), C(nomad_gpu_driver_version) and C(nomad_gpus) (per model:
    count, healthy, memory, driver)."
  - The inventory file's name must end in C(nomad.yml) or C(nomad.yaml) (for example C(nodes.nomad.yml)).
author:
  - nomad-gpustack developers (!UNKNOWN)
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: The name of this plugin.
    required: true
    type: str
    choices: [nomad_gpustack.nomad.nomad_nodes]
  nomad_addr:
    description: Nomad HTTP address. Defaults to E(NOMAD_ADDR), else C(http://127.0.0.1:4646).
    type: str
    env:
      - name: NOMAD_ADDR
  token:
    description: Nomad ACL token with C(node:read). Defaults to E(NOMAD_TOKEN).
    type: str
    env:
      - name: NOMAD_TOKEN
  region:
    description: Nomad region. Defaults to E(NOMAD_REGION).
    type: str
    env:
      - name: NOMAD_REGION
  ca_cert:
    description: CA certificate file to verify Nomad's certificate. Defaults to E(NOMAD_CACERT).
    type: path
    env:
      - name: NOMAD_CACERT
  client_cert:
    description: Client certificate for mutual TLS. Defaults to E(NOMAD_CLIENT_CERT).
    type: path
    env:
      - name: NOMAD_CLIENT_CERT
  client_key:
    description: Key of O(client_cert). Defaults to E(NOMAD_CLIENT_KEY).
    type: path
    env:
      - name: NOMAD_CLIENT_KEY
  tls_server_name:
    description: Server name to verify in Nomad's certificate. Defaults to E(NOMAD_TLS_SERVER_NAME).
    type: str
    env:
      - name: NOMAD_TLS_SERVER_NAME
  validate_certs:
    description: Verify Nomad's TLS certificate. On unless this is V(false) or E(NOMAD_SKIP_VERIFY) is true.
    type: bool
  address_attribute:
    description:
      - A node attribute to use as C(ansible_host) (for example V(unique.network.ip-address)) instead of the host of
        the node's HTTP address. Reads every node in full.
    type: str
  statuses:
    description: Node statuses to include (V(ready), V(initializing), V(down), V(disconnected)).
    type: list
    elements: str
    default: [ready]
requirements:
  - nomad-gpustack (the Python package) in the Python that runs Ansible
"""

EXAMPLES = r"""
# nodes.nomad.yml; then: ansible-inventory -i nodes.nomad.yml --graph
plugin: nomad_gpustack.nomad.nomad_nodes
nomad_addr: https://nomad.example.com:4646
# token from NOMAD_TOKEN
keyed_groups:
  - key: nomad_gpu_driver_version
    prefix: nvidia_driver
compose:
  ansible_user: "'ubuntu'"

# Then, in a playbook: hosts: gpu_nvidia_a10:&node_pool_gpu
"""

import re

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

from ansible_collections.nomad_gpustack.nomad.plugins.module_utils.bridge import install_hint, nomad_settings

try:
    from nomad_gpustack.errors import NomadgsError

    IMPORT_ERROR = None
except ImportError as exc:
    IMPORT_ERROR = exc


def group_name(prefix, value):
    """`gpu`, `NVIDIA A10` -> `gpu_nvidia_a10`: a valid group name whatever Ansible's group-name setting."""
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", f"{prefix}_{value}".lower())).strip("_")


def host_vars(facts):
    """The host variables of one node."""
    return {
        "ansible_host": facts.address,
        "nomad_node_id": facts.id,
        "nomad_datacenter": facts.datacenter,
        "nomad_node_pool": facts.node_pool,
        "nomad_node_class": facts.node_class,
        "nomad_status": facts.status,
        "nomad_eligible": facts.eligible,
        "nomad_drain": facts.drain,
        "nomad_version": facts.version,
        "nomad_gpu_count": facts.gpu_count,
        "nomad_gpu_models": facts.gpu_models,
        "nomad_gpu_memory_mib": facts.gpu_memory_mib,
        "nomad_gpu_driver_version": facts.driver_version,
        "nomad_gpus": [
            {
                "model": g.model,
                "count": g.count,
                "healthy": g.healthy,
                "memory_mib": g.memory_mib,
                "driver_version": g.driver_version,
            }
            for g in facts.gpus
        ],
    }


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = "nomad_gpustack.nomad.nomad_nodes"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("nomad.yml", "nomad.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        if IMPORT_ERROR is not None:
            raise AnsibleParserError(
                "the nomad_nodes inventory needs the nomad-gpustack package in the Python that runs Ansible. "
                + install_hint()
            )
        self._read_config_data(path)
        from nomad_gpustack.nomad.client import NomadAPI
        from nomad_gpustack.nomad.nodes import node_facts, read_nodes

        attribute = self.get_option("address_attribute")
        statuses = set(self.get_option("statuses") or [])
        token = self.get_option("token")
        try:
            api = NomadAPI(nomad_settings({name: self.get_option(name) for name in self._connection_options()}))
            nodes = read_nodes(api, full=bool(attribute))
        except NomadgsError as exc:
            message = str(exc).replace(token, "********") if token else str(exc)
            raise AnsibleParserError(f"nomad_nodes: {message}") from None
        self.inventory.add_group("nomad_nodes")
        for stub, full in nodes:
            facts = node_facts(stub, full, address_from=attribute or "http")
            if statuses and facts.status not in statuses:
                continue
            self._add_node(facts)

    @staticmethod
    def _connection_options():
        return ("nomad_addr", "token", "region", "ca_cert", "client_cert", "client_key", "tls_server_name",
                "validate_certs")  # fmt: skip

    def _group(self, prefix, value, host):
        if not value:
            return
        group = self.inventory.add_group(group_name(prefix, value))
        self.inventory.add_child(group, host)

    def _add_node(self, facts):
        host = self.inventory.add_host(facts.name, group="nomad_nodes")
        variables = host_vars(facts)
        for name, value in variables.items():
            self.inventory.set_variable(host, name, value)
        self._group("datacenter", facts.datacenter, host)
        self._group("node_pool", facts.node_pool, host)
        self._group("node_class", facts.node_class, host)
        if facts.gpu_count:
            self.inventory.add_child(self.inventory.add_group("gpu_nodes"), host)
        for model in facts.gpu_models:
            self._group("gpu", model, host)
        strict = self.get_option("strict")
        self._set_composite_vars(self.get_option("compose"), variables, host, strict=strict)
        self._add_host_to_composed_groups(self.get_option("groups"), variables, host, strict=strict)
        self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, host, strict=strict)
