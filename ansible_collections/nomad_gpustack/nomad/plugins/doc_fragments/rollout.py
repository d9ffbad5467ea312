# Copyright: nomad-gpustack developers
# Apache License 2.0 (see the repository's LICENSE)
"""Options of the modules that start a rollout and follow it (model, model_rollout)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  wait:
    description:
      - Follow the rollout the task starts (a version registered by M(nomad_gpustack.nomad.model) with
        O(nomad_gpustack.nomad.model#module:state=present), or by M(nomad_gpustack.nomad.model_rollout) with
        O(nomad_gpustack.nomad.model_rollout#module:action=revert)) until every replica is healthy, it fails, or
        O(wait_timeout) passes. Without it the task returns once the job is registered.
    type: bool
    default: true
  wait_timeout:
    description:
      - How long to follow the rollout, as a duration (V(90s), V(45m), V(2h)). The job keeps running after a
        timeout; the task fails.
    type: str
    default: 2h
  force:
    description:
      - Act on a job of that ID that nomad-gpustack did not create (replace, stop, promote or revert it). Without it
        such a job is left alone and the task fails.
    type: bool
    default: false
"""
