#!/usr/bin/python
# Copyright: nomad-gpustack developers
# Apache License 2.0 (see the repository's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: model_info
short_description: The models nomad-gpustack deployed on Nomad, as C(nomadgs status) sees them
version_added: "0.1.0"
description:
  - Lists the models of the namespace that nomad-gpustack deployed, or one of them by job ID or model name, with
    their job, latest deployment, replicas in GPUStack's states and the OpenAI base URLs of the running ones.
  - Reads only; never changes anything.
author:
  - nomad-gpustack developers (!UNKNOWN)
extends_documentation_fragment:
  - nomad_gpustack.nomad.connection
attributes:
  check_mode:
    support: full
    description: Reads the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to show.
options:
  name:
    description:
      - A job ID or a model name (case-insensitive). Without it, every model of the namespace.
      - A name that matches nothing gives an empty RV(models) and a message with the closest name.
    type: str
"""

EXAMPLES = r"""
- name: Every model in the namespace
  nomad_gpustack.nomad.model_info:
  register: deployed

- name: Is Qwen healthy?
  nomad_gpustack.nomad.model_info:
    name: Qwen2.5-7B-Instruct
  register: qwen

- name: Its endpoints
  ansible.builtin.debug:
    msg: "{{ qwen.models[0].endpoints }}"
  when: qwen.models | length > 0
"""

RETURN = r"""
models:
  description: The models found, each as C(nomadgs status --output json) shows it.
  returned: always
  type: list
  elements: dict
  contains:
    job:
      description: Nomad job ID.
      type: str
      sample: qwen2-5-7b-instruct
    model:
      description: Model name.
      type: str
      sample: Qwen2.5-7B-Instruct
    backend:
      description: GPUStack backend.
      type: str
      sample: vLLM
    backend_version:
      description: Backend version.
      type: str
      sample: v0.19.0
    job_version:
      description: Job version on Nomad.
      type: int
    job_status:
      description: C(pending), C(running), C(dead) or C(stopped).
      type: str
    deployment:
      description: The latest deployment (id, status, description), or null.
      type: dict
    healthy:
      description: Replicas whose health check passes.
      type: int
    desired:
      description: Replicas asked for.
      type: int
    replicas:
      description: Each replica's state (pending, scheduled, downloading, starting, running, error), detail and node.
      type: list
      elements: dict
    endpoints:
      description: OpenAI base URLs of the running replicas.
      type: list
      elements: str
      sample: ["http://10.0.0.5:25123/v1"]
    ranks:
      description:
        - For a model over several nodes (C(nomad.nodes)), each worker rank that is not running, in words
          (replica, rank, node, what follows). Empty in the list of all models.
      type: list
      elements: str
      sample:
        - "replica 0: worker rank 1 on node b lost; the engine cannot continue without it;
          Nomad restarts the replica once the rank is back"
msg:
  description: Why no model was found for O(name).
  returned: when O(name) matches nothing
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nomad_gpustack.nomad.plugins.module_utils.bridge import (
    CONNECTION_ARGS,
    nomad_settings,
    require_package,
    run_guarded,
)


def main():
    spec = dict(name=dict(type="str"))
    spec.update(CONNECTION_ARGS)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    require_package(module)

    def work():
        import asyncio

        from nomad_gpustack.errors import InputError
        from nomad_gpustack.nomad.client import NomadAPI
        from nomad_gpustack.nomad.status import all_model_statuses, find_job, model_status

        api = NomadAPI(nomad_settings(module.params))
        name = module.params["name"]
        if name is None:
            return dict(changed=False, models=[s.to_json() for s in asyncio.run(all_model_statuses(api))])
        try:
            job = find_job(api, name)
        except InputError as exc:
            return dict(changed=False, models=[], msg=str(exc))
        return dict(changed=False, models=[asyncio.run(model_status(api, job)).to_json()])

    run_guarded(module, work)


if __name__ == "__main__":
    main()
