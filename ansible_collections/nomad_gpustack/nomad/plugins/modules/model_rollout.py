#!/usr/bin/python
# Copyright: nomad-gpustack developers
# Apache License 2.0 (see the repository's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: model_rollout
short_description: Promote a model's canaries, or revert it to an older job version
version_added: "0.1.0"
description:
  - The manual steps of a rollout of a model that nomad-gpustack deployed, as C(nomadgs promote) and
    C(nomadgs revert) do them.
  - O(action=promote) promotes the canaries of the model's latest deployment (every group), once they are healthy;
    Nomad then replaces the other replicas. A deployment already promoted is left alone (not changed).
  - O(action=revert) registers an older job version again (Nomad's job revert, with a check-and-set on the current
    version), by default the newest stable version older than the current one, then waits until every replica is
    healthy, as the M(nomad_gpustack.nomad.model) module does after a submit. When the current version already has
    the target's specification, nothing is sent (not changed). Without O(to_version) each run goes back one more
    stable version (the version a revert registers becomes stable too); with it, a repeated task changes nothing.
author:
  - nomad-gpustack developers (!UNKNOWN)
extends_documentation_fragment:
  - nomad_gpustack.nomad.connection
  - nomad_gpustack.nomad.rollout
attributes:
  check_mode:
    support: full
    description: Reads the job, its versions and deployment, and reports what would change; writes nothing.
  diff_mode:
    support: full
    description: For a revert, the fields that change from the current version to the target; for a promotion,
      the deployment's promotion.
options:
  name:
    description: A job ID or a model name (case-insensitive).
    type: str
    required: true
  action:
    description: C(promote) the canaries of the latest deployment, or C(revert) to an older version.
    type: str
    required: true
    choices: [promote, revert]
  to_version:
    description:
      - With O(action=revert), the job version to go back to. Default, the newest stable version older than the
        current one; the task fails when there is none.
    type: int
"""

EXAMPLES = r"""
- name: Promote Qwen's canary once it is healthy
  nomad_gpustack.nomad.model_rollout:
    name: Qwen2.5-7B-Instruct
    action: promote

- name: Go back to the last stable version
  nomad_gpustack.nomad.model_rollout:
    name: qwen2-5-7b-instruct
    action: revert
  register: reverted

- name: Go back to version 3, without waiting
  nomad_gpustack.nomad.model_rollout:
    name: qwen2-5-7b-instruct
    action: revert
    to_version: 3
    wait: false
"""

RETURN = r"""
job:
  description: The Nomad job ID.
  returned: always
  type: str
  sample: qwen2-5-7b-instruct
message:
  description: What was done, in words.
  returned: always
  type: str
deployment:
  description: With O(action=promote), the latest deployment (id, job_version, status), or null.
  returned: when O(action=promote)
  type: dict
eval_id:
  description: The evaluation Nomad created, or null when nothing was sent.
  returned: always
  type: str
reverted_from:
  description: The job version before the revert.
  returned: when O(action=revert)
  type: int
reverted_to:
  description: The job version reverted to.
  returned: when O(action=revert)
  type: int
version:
  description: The new job version the revert registered (null in check mode or when nothing changed).
  returned: when O(action=revert)
  type: int
status:
  description: With O(action=revert), how the rollout ended (succeeded, failed, placement-failed, timeout), or
    V(registered) without waiting, V(unchanged) when nothing was sent.
  returned: when O(action=revert)
  type: str
replicas:
  description: With O(action=revert) and O(wait), each replica's state, as the model module returns it.
  returned: when the revert was waited for
  type: list
  elements: dict
progress:
  description: The rollout's progress lines.
  returned: when the revert was waited for
  type: list
  elements: str
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


def main():
    spec = dict(
        name=dict(type="str", required=True),
        action=dict(type="str", required=True, choices=["promote", "revert"]),
        to_version=dict(type="int"),
    )
    spec.update(ROLLOUT_ARGS)
    spec.update(CONNECTION_ARGS)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    require_package(module)
    p = module.params

    def work():
        from nomad_gpustack.nomad.client import NomadAPI
        from nomad_gpustack.nomad.status import find_job

        api = NomadAPI(nomad_settings(p), on_retry=module.warn)
        job = find_job(api, p["name"])
        if p["action"] == "promote":
            return promote(api, job)
        return revert(api, job)

    def promote(api, job):
        from nomad_gpustack.errors import NomadgsError
        from nomad_gpustack.nomad import versions

        versions.check_owned(job, force=p["force"], verb="promote")
        if module.check_mode:
            deployment = api.deployment(job.ID)
            reason = versions.nothing_to_promote(deployment)
            result = versions.Promotion(job.ID, deployment, "", "", False).to_json()
            if reason is None:
                message = f"{job.ID}: would promote deployment {deployment.ID[:8]}"
                diff = dict(before="promoted: false\n", after="promoted: true\n")
                return dict(result, changed=True, message=message, diff=diff)
            if "already promoted" in reason:
                return dict(result, changed=False, message=f"{job.ID}: {reason}; nothing to do")
            raise NomadgsError(f"{job.ID}: nothing to promote: {reason}")
        promotion = versions.promote(api, job, force=p["force"])
        result = dict(promotion.to_json(), changed=promotion.promoted)
        if promotion.promoted:
            result["diff"] = dict(before="promoted: false\n", after="promoted: true\n")
        return result

    def revert(api, job):
        import time

        from nomad_gpustack.durations import SECOND, parse_duration
        from nomad_gpustack.errors import InputError, Problem
        from nomad_gpustack.nomad import runner, versions

        try:
            seconds = parse_duration(p["wait_timeout"]) / SECOND
        except ValueError as exc:
            raise InputError(Problem(str(exc), field="wait_timeout")) from None
        plan = versions.plan_revert(api, job, p["to_version"], force=p["force"])
        before, after = plan.diff_texts()
        result = dict(job=job.ID, reverted_from=job.Version, reverted_to=plan.target.Version, eval_id=None)
        result["diff"] = dict(
            before=before,
            after=after,
            before_header=f"{job.ID} version {job.Version}",
            after_header=f"{job.ID} version {plan.target.Version}",
        )
        if plan.unchanged:
            message = f"{job.ID}: version {job.Version} is already the same as version {plan.target.Version}"
            return dict(result, changed=False, version=None, status="unchanged", message=message, diff={})
        if module.check_mode:
            message = f"{job.ID}: would revert from version {job.Version} to {plan.target.Version}"
            return dict(result, changed=True, version=None, status="planned", message=message)
        api.deadline = time.monotonic() + seconds
        registration = versions.revert(api, plan)
        message = f"{job.ID}: reverted from version {job.Version} to {plan.target.Version}"
        result.update(changed=True, version=registration.version, eval_id=registration.eval_id or None)
        if not p["wait"] or not registration.eval_id:
            return dict(result, status="registered", message=message)
        notes = Notes(module)
        watched = runner.follow(api, registration, reporter=notes, timeout=seconds)
        status, code = runner.outcome(watched)
        document = runner.result_document(registration, watched, status, code)
        result.update(
            status=status,
            replicas=document["replicas"],
            progress=notes.lines,
            message=f"{message}, as version {registration.version}: {watched.assessment.headline}",
        )
        if code != 0:
            result.update(failed=True, msg=result["message"], exit_code=code)
        return result

    run_guarded(module, work)


if __name__ == "__main__":
    main()
