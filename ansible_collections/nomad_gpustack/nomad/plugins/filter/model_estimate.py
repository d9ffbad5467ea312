# Copyright: nomad-gpustack developers
# Apache License 2.0 (see the repository's LICENSE)
"""The `model_estimate` filter: `nomad_gpustack.filters.model_estimate` with Ansible's filter error."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: model_estimate
short_description: The GPU memory a nomad-gpustack deployment needs, estimated from the model's headers
version_added: "0.1.0"
description:
  - The document C(nomadgs estimate --output json) prints for a deployment (the content of a deployment file, as a
    dictionary; or the path of one), without a cluster.
  - Per GPU count (1, 2, 4, 8; tensor-parallel sizes that divide the attention heads) the weights, KV cache and
    overhead on each GPU, their total, the smallest GPU the engine starts on and, on the deployment's GPUs, whether
    it fits; the suggested C(gpus) and C(gpu_memory); with explicit C(gpus) on GPUs of known size,
    C(check) holds the verdict of C(nomadgs validate) (C(starts), C(refusal)).
  - The same document as the C(estimate) of P(nomad_gpustack.nomad.model#module) with C(return_estimate).
  - Bad input, or no metadata for the model, fails the task with one line per problem.
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
  model:
    description:
      - Path of the model on the controller (a GGUF file, or a folder with C(config.json) and safetensors headers);
        only headers are read.
      - Without it, the deployment's local path when it exists on the controller, else the Hugging Face Hub
        (E(HF_ENDPOINT), E(HF_TOKEN), E(HF_HUB_OFFLINE)) and its cache in C($XDG_CACHE_HOME/nomadgs), as
        C(nomadgs estimate).
    type: path
requirements:
  - nomad-gpustack (the Python package) in the Python that runs Ansible
"""

EXAMPLES = r"""
- name: How many GPUs of the deployment's size the model needs
  ansible.builtin.debug:
    msg: "{{ (deployment | nomad_gpustack.nomad.model_estimate).suggestion }}"
  vars:
    deployment:
      name: Qwen2.5-7B-Instruct
      huggingface_repo_id: Qwen/Qwen2.5-7B-Instruct
      backend: vLLM
      nomad: {gpus: 1, gpu_model: NVIDIA L4}

- name: Fail early when the engine would not start on one GPU (a model on the controller)
  ansible.builtin.assert:
    that: estimate.check.starts
    fail_msg: "{{ estimate.check.refusal }}"
  vars:
    estimate: "{{ 'models/qwen.yaml' | nomad_gpustack.nomad.model_estimate(model='/models/Qwen2.5-7B-Instruct') }}"
"""

RETURN = r"""
_value:
  description:
    - 'The estimate: C(file), C(model) (what the headers say), C(engine), C(context), C(rows) (per GPU count:
      C(gpus), C(weights), C(kv_per_token), C(kv_at_context), C(overhead), C(total), C(min_gpu_memory), C(usable),
      C(fits), C(sequences), C(max_context)), C(gpu_memory), C(suggestion) (C(gpus), C(gpu_memory), C(reason)),
      C(warnings) and C(check).'
    - Sizes are bytes.
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.nomad_gpustack.nomad.plugins.module_utils.bridge import install_hint

try:
    from nomad_gpustack.errors import NomadgsError
    from nomad_gpustack.filters import model_estimate as estimate_model

    IMPORT_ERROR = None
except ImportError as exc:  # reported when the filter is used, not when Ansible loads the plugins
    IMPORT_ERROR = exc


def model_estimate(deployment, backends=None, model=None):
    """The deployment's GPU memory estimate; AnsibleFilterError with the package's messages."""
    if IMPORT_ERROR is not None:
        raise AnsibleFilterError(
            "nomad_gpustack.nomad.model_estimate needs the nomad-gpustack package in the Python that runs Ansible. "
            + install_hint()
        )
    try:
        return estimate_model(deployment, backends, model)
    except NomadgsError as exc:
        raise AnsibleFilterError(f"model_estimate: {exc}") from None


class FilterModule:
    def filters(self):
        return {"model_estimate": model_estimate}
