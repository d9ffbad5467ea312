# Copyright: nomad-gpustack developers
# Apache License 2.0 (see the repository's LICENSE)
"""The `nomad_job` filter: `nomad_gpustack.filters.nomad_job` with Ansible's filter error."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: nomad_job
short_description: Compile a nomad-gpustack deployment into a Nomad job (API JSON or HCL)
version_added: "0.1.0"
description:
  - Compiles a deployment (the content of a deployment file, as a dictionary; or the path of one) into the Nomad
    job that C(nomad_gpustack.nomad.model) would register, without a cluster.
  - 'V(json) gives the API document C({"Job": {...}}) as a dictionary, for other Nomad modules, the HTTP API,
    C(nomad job run -json) or a file written with C(ansible.builtin.copy); V(hcl) gives the HCL2 jobspec text.'
  - Bad input fails the task with one line per problem, naming the field.
  - The same function works in plain Jinja2, outside Ansible
    (C(env.filters.update(nomad_gpustack.filters.FILTERS))).
author:
  - nomad-gpustack developers (!UNKNOWN)
options:
  _input:
    description: The deployment, as a dictionary (or the path of a deployment file on the controller).
    type: raw
    required: true
  backends:
    description: Backend YAML files or folders added to the built-in catalog.
    type: list
    elements: path
    default: []
  format:
    description: V(json) for the API document (a dictionary), V(hcl) for the jobspec text.
    type: str
    choices: [json, hcl]
    default: json
  model:
    description:
      - 'Path of the model on the controller (a GGUF file, or a folder with C(config.json) and safetensors headers;
        only headers are read), for C(gpus: auto) / C(gpu_memory: auto) and the check of explicit values, as
        C(nomadgs render --model PATH).'
      - Without it only C(auto) looks the model up (the deployment's local path, else the Hugging Face Hub and its
        cache in C($XDG_CACHE_HOME/nomadgs)); explicit values are then compiled unchecked, so the job never
        depends on the network.
      - An explicit size the engine would refuse to start with fails, with the message of C(nomadgs validate).
      - The estimate itself is the P(nomad_gpustack.nomad.model_estimate#filter) filter.
    type: path
requirements:
  - nomad-gpustack (the Python package) in the Python that runs Ansible
"""

EXAMPLES = r"""
- name: Write the Nomad job of a deployment
  ansible.builtin.copy:
    content: "{{ lookup('file', 'qwen.yaml') | from_yaml | nomad_gpustack.nomad.nomad_job | to_nice_json }}"
    dest: /srv/jobs/qwen.nomad.json
    mode: "0644"

- name: The HCL jobspec, with our own backends
  ansible.builtin.copy:
    content: "{{ deployment | nomad_gpustack.nomad.nomad_job(backends=['backends/'], format='hcl') }}"
    dest: /srv/jobs/qwen.nomad.hcl
    mode: "0644"
  vars:
    deployment:
      name: Qwen2.5-7B-Instruct
      source: huggingface
      huggingface_repo_id: Qwen/Qwen2.5-7B-Instruct
      backend: vLLM

- name: gpus auto, sized from the model's headers on the controller
  ansible.builtin.copy:
    content: "{{ deployment | nomad_gpustack.nomad.nomad_job(model='/models/Qwen2.5-7B-Instruct') | to_nice_json }}"
    dest: /srv/jobs/qwen.nomad.json
    mode: "0644"
  vars:
    deployment:
      name: Qwen2.5-7B-Instruct
      source: huggingface
      huggingface_repo_id: Qwen/Qwen2.5-7B-Instruct
      backend: vLLM
      nomad: {gpus: auto, gpu_model: NVIDIA L4}
"""

RETURN = r"""
_value:
  description: 'The job as C({"Job": {...}}) (V(json)) or the HCL2 jobspec text (V(hcl)).'
  type: raw
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.nomad_gpustack.nomad.plugins.module_utils.bridge import install_hint

try:
    from nomad_gpustack.errors import NomadgsError
    from nomad_gpustack.filters import nomad_job as compile_job

    IMPORT_ERROR = None
except ImportError as exc:  # reported when the filter is used, not when Ansible loads the plugins
    IMPORT_ERROR = exc


def nomad_job(deployment, backends=None, format="json", model=None):
    """The deployment compiled into a Nomad job; AnsibleFilterError with the package's messages."""
    if IMPORT_ERROR is not None:
        raise AnsibleFilterError(
            "nomad_gpustack.nomad.nomad_job needs the nomad-gpustack package in the Python that runs Ansible. "
            + install_hint()
        )
    try:
        return compile_job(deployment, backends, format, model)
    except NomadgsError as exc:
        raise AnsibleFilterError(f"nomad_job: {exc}") from None


class FilterModule:
    def filters(self):
        return {"nomad_job": nomad_job}
