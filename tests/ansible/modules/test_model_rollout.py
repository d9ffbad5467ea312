"""`nomad_gpustack.nomad.model_rollout` (promote, revert) in real playbook runs against the Nomad double."""

from __future__ import annotations

from pathlib import Path

import httpx

from ...cli.test_rollout_cmds import canary_waiting, two_versions
from ...support.nomad_double import NomadDouble
from ...support.test_nomad_double import allocs_of, deployments_of
from ..conftest import requests_to, run_playbook
from .test_model import playbook


def test_revert_check_mode_diff_then_revert_then_unchanged(nomad: NomadDouble, tmp_path: Path) -> None:
    with httpx.Client(base_url=nomad.address, timeout=10) as api:
        two_versions(nomad, api)
    env = {"NOMAD_ADDR": nomad.address}
    revert = playbook(tmp_path, "    - nomad_gpustack.nomad.model_rollout: {name: Web-Model, action: revert}\n")
    checked = run_playbook(revert, "--check", "--diff", env=env)
    assert checked.code == 0, checked.text
    assert "changed: [localhost]" in checked.text
    assert '-        image: "redis:8"' in checked.out and '+        image: "redis:7"' in checked.out, checked.out
    assert "--- before: web version 1" in checked.out and "+++ after: web version 0" in checked.out
    assert requests_to(nomad, "POST", "/v1/job/web/revert") == 0, "check mode sends nothing"

    book = playbook(
        tmp_path,
        """
    - name: revert
      nomad_gpustack.nomad.model_rollout: {name: web, action: revert, wait_timeout: 60s}
    - name: revert again
      nomad_gpustack.nomad.model_rollout: {name: web, action: revert, to_version: 0}
    - name: promote without canaries
      nomad_gpustack.nomad.model_rollout: {name: web, action: promote}
      ignore_errors: true
""",
        name="play2.yml",
    )
    play = run_playbook(book, env=env, record=True)
    assert play.code == 0, play.text
    r = play.results()
    first = r["revert"]
    assert first["changed"] is True and first["status"] == "succeeded", first
    assert (first["reverted_from"], first["reverted_to"], first["version"]) == (1, 0, 2)
    assert [x["state"] for x in first["replicas"]] == ["running", "running"]
    again = r["revert again"]
    assert again["changed"] is False and again["status"] == "unchanged", again
    assert "version 2 is already the same as version 0" in again["message"]
    assert requests_to(nomad, "POST", "/v1/job/web/revert") == 1
    failed = r["promote without canaries"]
    assert failed["failed"] is True and "has no canaries" in failed["msg"] and failed["exit_code"] == 1


def test_promote_in_check_mode_then_for_real(nomad: NomadDouble, tmp_path: Path) -> None:
    with httpx.Client(base_url=nomad.address, timeout=10) as api:
        canary = canary_waiting(nomad, api, auto_revert=False)  # the promoted deployment stays the latest
    nomad.update_allocation(canary["ID"], task_state="running", task_events=[{"Type": "Started"}], healthy=True)
    env = {"NOMAD_ADDR": nomad.address}
    book = playbook(
        tmp_path,
        """
    - name: check
      nomad_gpustack.nomad.model_rollout: {name: web, action: promote}
      check_mode: true
    - name: promote
      nomad_gpustack.nomad.model_rollout: {name: web, action: promote}
    - name: promote again
      nomad_gpustack.nomad.model_rollout: {name: web, action: promote}
""",
    )
    play = run_playbook(book, env=env, record=True)
    assert play.code == 0, play.text
    r = play.results()
    deployment = deployments_of(nomad, "web")[-1]
    assert r["check"]["changed"] is True and "would promote" in r["check"]["message"]
    assert r["promote"]["changed"] is True and r["promote"]["promoted"] is True
    assert r["promote"]["deployment"]["id"] == deployment["ID"]
    assert r["promote again"]["changed"] is False and "already promoted" in r["promote again"]["message"]
    assert requests_to(nomad, "POST", f"/v1/deployment/promote/{deployment['ID']}") == 1
    assert nomad.allocations[canary["ID"]]["DeploymentStatus"]["Canary"] is False
    assert len(allocs_of(nomad, "web")) >= 3
