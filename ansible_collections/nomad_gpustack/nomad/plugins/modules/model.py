#!/usr/bin/python
# Copyright: nomad-gpustack developers
# Apache License 2.0 (see the repository's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: model
short_description: Serve one model on HashiCorp Nomad with a GPUStack inference backend
version_added: "0.1.0"
description:
  - Compiles a nomad-gpustack deployment (a model, a GPUStack backend, replicas, GPUs) into a Nomad job and puts it
    on the cluster, or stops it.
  - Idempotent. Nomad's plan decides whether anything changes; an unchanged deployment is not registered again.
  - Registration uses check-and-set (Nomad's C(EnforceIndex)), so a concurrent change is detected, never overwritten.
  - With O(wait), follows the rollout until every replica answers its health check, and fails with the reason in
    plain words when it cannot (no node fits, image pull, crash loop with the last lines of stderr, OOM kill,
    unhealthy, timeout).
  - Bad input fails before anything is sent to Nomad, with the file, line and field of each problem.
  - 'C(gpus: auto) and C(gpu_memory: auto) are sized from the model''s headers (O(model), else the deployment''s
    local path, else the Hugging Face Hub and its cache), and an explicit size the engine would refuse to start
    with fails before anything is sent, with the message of C(nomadgs submit).'
  - Check mode runs Nomad's plan and registers nothing; with C(--diff), the fields the plan would change are shown.
  - Runs the same Python functions as the C(nomadgs) command; it does not call the command.
author:
  - nomad-gpustack developers (!UNKNOWN)
extends_documentation_fragment:
  - nomad_gpustack.nomad.connection
  - nomad_gpustack.nomad.rollout
attributes:
  check_mode:
    support: full
    description: Runs Nomad's plan (and server validation); registers and stops nothing.
  diff_mode:
    support: full
    description: The fields Nomad's plan says would change, under their job, group, task and object.
options:
  deployment:
    description:
      - Path of a deployment YAML file, on the host that runs the module.
      - Relative paths are relative to that process's working directory (with C(connection=local), where
        C(ansible-playbook) runs); C({{ playbook_dir }}/...) is explicit.
      - Exactly one of O(deployment) and O(definition) is required.
    type: path
  definition:
    description:
      - The deployment's content inline, as a dictionary (the same keys as a deployment file).
      - Problems are located at the task's lines in the playbook.
    type: dict
  backends:
    description:
      - Backend YAML files or folders added to the built-in catalog (later ones override earlier ones).
    type: list
    elements: path
    default: []
  state:
    description:
      - V(present) registers the job (when Nomad's plan says it changes) and, with O(wait), follows the rollout.
      - V(absent) stops the job; with O(purge) it is also removed from Nomad's state.
    type: str
    choices: [present, absent]
    default: present
  purge:
    description:
      - With O(state=absent), also remove the job from Nomad's state (its history goes too).
    type: bool
    default: false
  wait_for_capacity:
    description:
      - When no node fits yet, wait for one (autoscaling) instead of failing at once.
    type: bool
    default: false
  return_job:
    description:
      - 'Return the compiled Nomad job (the API document C({"Job": ...})) in RV(nomad_job).'
    type: bool
    default: false
  model:
    description:
      - Path of the model on the host that runs the module (a GGUF file, or a folder with C(config.json) and
        safetensors headers or index), for the GPU memory estimate; only headers are read, never weights.
        The same as C(nomadgs submit --model PATH).
      - 'The estimate sizes C(gpus: auto) and C(gpu_memory: auto), and checks explicit C(gpus) on GPUs of known
        memory (C(nomad.gpu_memory), or a known C(nomad.gpu_model)): a size the engine would refuse to start with
        fails the task before anything is sent.'
      - Without it, the deployment's C(local_path) when it exists on that host, else the Hugging Face Hub
        (E(HF_ENDPOINT), E(HF_TOKEN), E(HF_HUB_OFFLINE)) through a cache in C($XDG_CACHE_HOME/nomadgs)
        (C(~/.cache/nomadgs)), the one C(nomadgs) uses, so a second run asks nothing. Without metadata, C(auto)
        fails and explicit values are used unchecked (with a warning).
      - 'With O(state=absent), only C(auto) looks the model up: the job''s ID does not depend on its size, and a
        stop is never refused for it.'
    type: path
  return_estimate:
    description:
      - Return the GPU memory estimate in RV(estimate), the document C(nomadgs estimate --output json) prints
        (the P(nomad_gpustack.nomad.model_estimate#filter) filter gives it too).
      - Its metadata is looked up as for O(model); when there is none, the task fails before anything is sent,
        as C(nomadgs estimate) does.
    type: bool
    default: false
  _definition_origin:
    description:
      - Where an inline O(definition) is written in the playbook (file, task, the line of each value), so that its
        problems are located there. Set by the collection's action plugin, never in a task (a task that sets it
        fails).
    type: dict
notes:
  - The job's namespace and region come from the deployment's C(nomad) keys; O(namespace) (or E(NOMAD_NAMESPACE))
    that names another namespace is an error, as with C(nomadgs submit).
seealso:
  - module: nomad_gpustack.nomad.model_info
  - plugin: nomad_gpustack.nomad.nomad_job
    plugin_type: filter
  - plugin: nomad_gpustack.nomad.model_endpoints
    plugin_type: lookup
"""

EXAMPLES = r"""
- name: Serve Qwen2.5-7B-Instruct with vLLM and wait until it answers
  nomad_gpustack.nomad.model:
    deployment: "{{ playbook_dir }}/models/vllm-qwen2.5-7b-instruct.yaml"
    wait_timeout: 45m
  register: qwen

- name: Print its OpenAI base URLs
  ansible.builtin.debug:
    var: qwen.endpoints

- name: A model defined in the playbook, with a backend of our own
  nomad_gpustack.nomad.model:
    definition:
      name: bge-m3
      source: huggingface
      huggingface_repo_id: BAAI/bge-m3
      backend: text-embeddings-inference
      replicas: 2
    backends:
      - "{{ playbook_dir }}/backends/"
    nomad_addr: https://nomad.example.com:4646
    token: "{{ vault_nomad_token }}"

- name: Stop a model and remove its job
  nomad_gpustack.nomad.model:
    deployment: models/vllm-qwen2.5-7b-instruct.yaml
    state: absent
    purge: true
"""

RETURN = r"""
job:
  description: The Nomad job ID.
  returned: always
  type: str
  sample: qwen2-5-7b-instruct
model:
  description: The model name of the deployment.
  returned: always
  type: str
  sample: Qwen2.5-7B-Instruct
version:
  description: The job version on Nomad (the one registered, or the one already running when nothing changed).
  returned: when the job exists on Nomad
  type: int
  sample: 3
eval_id:
  description: The evaluation Nomad created (registering or stopping); null when nothing was sent.
  returned: always
  type: str
  sample: 5456bd7a-9fc0-c0dd-6131-cbee77f57577
status:
  description:
    - V(succeeded), V(failed), V(placement-failed) or V(timeout) after a watch, or V(awaiting-promotion) when
      healthy canaries wait to be promoted (C(auto_promote) off); V(registered) without O(wait); V(planned) in
      check mode; V(stopped), V(purged) or V(absent) with O(state=absent).
  returned: always
  type: str
  sample: succeeded
message:
  description: How the rollout ended, in one line.
  returned: after a watch
  type: str
  sample: the replica is healthy
replicas:
  description: Each replica in GPUStack's states (pending, scheduled, downloading, starting, running, error).
  returned: after a watch
  type: list
  elements: dict
  sample: [{"index": 0, "state": "running", "detail": "healthy", "alloc_id": "8ba85cef-...", "node": "gpu-1"}]
endpoints:
  description: OpenAI base URLs of the healthy replicas.
  returned: after a successful watch
  type: list
  elements: str
  sample: ["http://10.0.0.5:25123/v1"]
failures:
  description: What failed, per replica and task (kind, summary, hint).
  returned: after a watch
  type: list
  elements: dict
logs:
  description: The last lines of stderr of the failed tasks, by replica and task.
  returned: after a failed watch
  type: dict
plan:
  description:
    - Nomad's plan of the job, as C(nomadgs plan --output json) gives it, with Nomad's field diff in words.
    - C(diff) is V(Added), V(Edited), V(None) or V(Deleted); C(changes) counts the allocations it stops, places,
      migrates, replaces or adds as canaries; C(updates) are Nomad's desired updates per group; C(placement)
      the reasons no node fits, in plain words; C(warnings) Nomad's; C(foreign) whether a job of that ID exists
      that nomad-gpustack did not create.
    - C(fields) lists the changed fields of an edited job, each under its group, task and object (the same
      lines C(--diff) shows as a diff); empty for a new job.
  returned: with O(state=present)
  type: dict
  sample:
    job: qwen2-5-7b-instruct
    diff: Edited
    changes: 1
    job_modify_index: 42
    updates: {"inference": {"DestructiveUpdate": 1}}
    placement: []
    warnings: ""
    foreign: false
    fields: ['Task Group "inference" > Count: "1" => "2"']
nomad_job:
  description: 'The compiled job as the API document C({"Job": {...}}).'
  returned: with O(return_job)
  type: dict
estimate:
  description:
    - The GPU memory estimate, as C(nomadgs estimate --output json) prints it. Sizes are bytes.
    - C(model) (what the headers say), C(engine), C(context), C(rows) (per GPU count C(gpus) the C(weights),
      C(kv_per_token), C(kv_at_context), C(overhead), C(total) and C(min_gpu_memory) on each GPU; on the
      deployment's GPUs C(usable), C(fits), C(sequences) and C(max_context)), C(gpu_memory), C(suggestion)
      (C(gpus), C(gpu_memory), C(reason)), C(warnings).
    - C(check), with explicit C(gpus) on GPUs of known memory, the verdict of C(nomadgs validate) (C(gpus),
      C(starts), C(refusal), C(warnings)); null otherwise.
  returned: with O(return_estimate), also when the task fails on a size the engine would refuse
  type: dict
  sample:
    engine: vLLM
    context: 32768
    context_source: --max-model-len 32768
    gpu_memory: 25769803776
    rows:
      - {"gpus": 1, "weights": 16060522496, "kv_at_context": 4294967296, "overhead": 5315022028,
         "total": 25670511820, "min_gpu_memory": 28522790912, "fits": false, "sequences": 0}
      - {"gpus": 2, "weights": 8030261248, "kv_at_context": 2147483648, "overhead": 5798205849,
         "total": 15975950745, "min_gpu_memory": 17751056384, "fits": true, "sequences": 4}
    suggestion:
      gpus: 2
      gpu_memory: 25769803776
      reason: the fewest GPUs of 24 GiB (nomad.gpu_memory) that start the engine
    check:
      gpus: 1
      starts: false
      refusal: >-
        vLLM needs 23.9 GiB per GPU at --max-model-len 32768 (weights 15.0, KV 4.0, overhead 4.9);
        1 × 24 GiB at 0.90 gives 21.6: use gpus: 2, or --max-model-len ≤ 13312
      warnings: []
notes:
  description: Progress notes of the run (registration, rollout phases, retries).
  returned: always
  type: list
  elements: str
problems:
  description: With bad input, each problem located (file, line, column, field, message, hint).
  returned: on bad input
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nomad_gpustack.nomad.plugins.module_utils.bridge import (
    CONNECTION_ARGS,
    ROLLOUT_ARGS,
    Notes,
    nomad_settings,
    require_package,
    run_guarded,
)

DEFINITION_NAME = "definition"
MODEL_OPTION = "model"


def argument_spec():
    spec = dict(
        deployment=dict(type="path"),
        definition=dict(type="dict"),
        backends=dict(type="list", elements="path", default=[]),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        purge=dict(type="bool", default=False),
        wait_for_capacity=dict(type="bool", default=False),
        return_job=dict(type="bool", default=False),
        model=dict(type="path"),
        return_estimate=dict(type="bool", default=False),
        # Set by the collection's action plugin (which refuses it in a task): where an inline definition was
        # written (file, lines, task).
        _definition_origin=dict(type="dict"),
    )
    spec.update(ROLLOUT_ARGS)
    spec.update(CONNECTION_ARGS)
    return spec


def load(params, found):
    """Compile the deployment (file or inline definition) with the model's metadata, as `nomadgs submit` does;
    InputError before anything is sent. With return_estimate, the estimate goes into `found` first, so that a
    size the engine would refuse fails with the estimate beside the message."""
    from nomad_gpustack.cachefolder import cache_folder
    from nomad_gpustack.compile.build import build
    from nomad_gpustack.spec.loader import load_catalog, load_deployment

    cache = cache_folder()
    catalog = load_catalog(params["backends"])
    if params["deployment"] is not None:
        source = load_deployment(params["deployment"])
    else:
        source = definition_source(params["definition"], params.get("_definition_origin") or {})
    metadata = model_metadata(source, params, cache)
    if params["return_estimate"]:
        from nomad_gpustack.compile.estimation import estimate_document

        found["estimate"] = estimate_document(
            source, catalog, model_path=params["model"], cache_dir=cache, model_field=MODEL_OPTION, found=metadata
        )
    return build(source, catalog, check=True, model=metadata)


def model_metadata(source, params, cache):
    """The model's metadata for the compile: as `submit` (the Hub allowed) to deploy; to stop, only for auto."""
    from nomad_gpustack.compile.estimation import has_auto, metadata_for_compile

    if params["state"] == "absent" and not has_auto(source.spec):
        return None
    return metadata_for_compile(
        source.spec, model_path=params["model"], cache_dir=cache, hub=True, model_field=MODEL_OPTION
    )


def definition_source(definition, origin):
    """The inline definition, validated, its problems located in the playbook when the action plugin knows where."""
    from nomad_gpustack.spec.loader import deployment_from_data
    from nomad_gpustack.spec.yamlsource import Mark

    def marks(entries):
        return {tuple(path): Mark(int(line), int(column or 0)) for path, line, column in entries or []}

    filename = origin.get("file") or DEFINITION_NAME
    return deployment_from_data(
        definition,
        filename,
        marks=marks(origin.get("marks")),
        key_marks=marks(origin.get("key_marks")),
    )


def wait_seconds(text):
    from nomad_gpustack.durations import SECOND, parse_duration
    from nomad_gpustack.errors import InputError, Problem

    try:
        return parse_duration(text) / SECOND
    except ValueError as exc:
        raise InputError(Problem(str(exc), field="wait_timeout")) from None


def plan_result(summary):
    """The plan as `nomadgs plan --output json` gives it, its field diff in words (`fields`) instead of Nomad's
    structure (`--diff` shows it as text)."""
    from nomad_gpustack.nomad.plandiff import changed_fields

    data = summary.to_json()
    data.pop("exit_code", None)
    job_diff = data.pop("job_diff", None)
    # A new job's fields are all "added": the list would be the whole job (return_job shows that).
    data["fields"] = changed_fields(job_diff) if summary.diff == "Edited" else []
    return data


def plan_diff(summary):
    """Ansible's --diff: the plan's field diff as before/after texts (`nomad_gpustack.nomad.plandiff`)."""
    from nomad_gpustack.nomad.plandiff import diff_texts

    before, after = diff_texts(summary.job_diff)
    job_id = summary.job_id
    return dict(before=before, after=after, before_header=f"{job_id} (on Nomad)", after_header=f"{job_id} (planned)")


def present(module, api, compiled, notes):
    import time
    from dataclasses import replace

    from nomad_gpustack.errors import EXIT_OK
    from nomad_gpustack.nomad import runner, verdict

    params = module.params
    timeout = wait_seconds(params["wait_timeout"])
    api.deadline = time.monotonic() + timeout  # retrying a failing Nomad keeps to wait_timeout too
    job_id = compiled.job_id
    result = dict(job=job_id, model=compiled.source.spec.name, eval_id=None)
    if module.check_mode:
        found = runner.preview(api, compiled, force=params["force"], notes=notes)
        summary = replace(runner.summarise_plan(compiled, found.plan), foreign=runner.is_foreign(found.existing))
        for line in summary.placement:
            module.warn(f"{job_id}: {line}")
        result.update(
            changed=not found.unchanged,
            status="planned",
            version=found.existing.Version if found.existing is not None else None,
            plan=plan_result(summary),
        )
        if module._diff:
            result["diff"] = plan_diff(summary)
        return result

    registration = runner.submit(api, compiled, force=params["force"], notes=notes)
    summary_plan = runner.summarise_plan(compiled, registration.plan)
    changed = registration.changed
    if module._diff:
        result["diff"] = plan_diff(summary_plan)
    if not params["wait"]:
        result.update(runner.result_document(registration, None, "registered", EXIT_OK))
        result.update(changed=changed, plan=plan_result(summary_plan))
        return result
    watched = runner.follow(
        api, registration, reporter=notes, timeout=timeout, wait_for_capacity=params["wait_for_capacity"]
    )
    status, code = runner.outcome(watched)
    result.update(runner.result_document(registration, watched, status, code))
    result.update(changed=changed, plan=plan_result(summary_plan))
    if code != EXIT_OK:
        # As `nomadgs submit` says it; the next steps named as tasks.
        steps = verdict.next_steps(
            watched, follow=f"nomad_gpustack.nomad.model_info (name: {job_id})", remove="state: absent"
        )
        lines = [verdict.headline(registration, watched), *verdict.explanation(registration, watched), *steps]
        result.update(failed=True, msg="\n".join(lines))
    return result


def absent(module, api, compiled):
    from nomad_gpustack.nomad import runner

    params = module.params
    job_id = compiled.job_id
    result = dict(job=job_id, model=compiled.source.spec.name, eval_id=None)
    existing = api.job(job_id)
    if existing is None:
        result.update(changed=False, status="absent", version=None)
        return result
    result["version"] = existing.Version
    if existing.Stop and not params["purge"]:
        result.update(changed=False, status="stopped")
        return result
    runner.check_stoppable(existing, force=params["force"])  # in check mode too
    status = "purged" if params["purge"] else "stopped"
    if module._diff:
        state = "stopped" if existing.Stop else f"running version {existing.Version}"
        result["diff"] = dict(before=f"job {job_id}: {state}\n", after=f"job {job_id}: {status}\n")
    if not module.check_mode:
        result["eval_id"] = runner.stop(api, existing, purge=params["purge"], force=params["force"]) or None
    result.update(changed=True, status=status)
    return result


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[("deployment", "definition")],
        required_one_of=[("deployment", "definition")],
        supports_check_mode=True,
    )
    require_package(module)

    def work():
        from nomad_gpustack.contract.jobspec import api_document
        from nomad_gpustack.nomad.client import NomadAPI
        from nomad_gpustack.nomad.runner import scoped_settings

        compiled = load(module.params, found)
        for warning in compiled.resolved.warnings:
            module.warn(f"{compiled.source.filename}: {warning}")
        api = NomadAPI(scoped_settings(nomad_settings(module.params), compiled))
        notes = Notes(module)
        if module.params["state"] == "absent":
            result = absent(module, api, compiled)
        else:
            result = present(module, api, compiled, notes)
        if module.params["return_job"]:
            result["nomad_job"] = api_document(compiled.job)
        result.update(found)
        result["notes"] = notes.lines
        return result

    found = {}  # what is known before a failure, returned with it (the estimate)
    run_guarded(module, work, found)


if __name__ == "__main__":
    main()
