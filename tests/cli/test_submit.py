"""`nomadgs submit`, `plan`, `status`, `logs`, `stop` run as real processes against the Nomad double."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..support.components import ROOT
from ..support.helpers import Run, nomadgs, start_nomadgs
from ..support.nomad_double import NomadDouble, scenarios

VLLM = ROOT / "examples" / "vllm-qwen2.5-7b-instruct.yaml"
VLLM_JOB = "qwen2-5-7b-instruct"
LLAMA_CPU = ROOT / "examples" / "llamacpp-qwen2.5-0.5b-cpu.yaml"  # 2 replicas
TP2 = ROOT / "examples" / "vllm-qwen2.5-32b-instruct-tp2.yaml"


@pytest.fixture
def nomad() -> Iterator[NomadDouble]:
    with NomadDouble() as double:
        yield double


def submit(nomad: NomadDouble, *args: str | Path, token: str | None = None) -> Run:
    env = {"NOMAD_ADDR": nomad.address}
    if token:
        env["NOMAD_TOKEN"] = token
    return nomadgs("submit", *args, "--timeout", "60s", env=env, timeout=90)


def posts(nomad: NomadDouble, path: str) -> int:
    return sum(1 for r in nomad.requests if r.method in ("POST", "PUT") and r.path == path)


def test_successful_rollout(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout(download=True, step=0.4, healthy_after=0.6)
    run = submit(nomad, VLLM)
    assert run.code == 0, run.err
    assert "Qwen2.5-7B-Instruct: the replica is healthy after" in run.out
    assert "OpenAI base URL: http://" in run.out
    for state in ("downloading", "starting", "running"):
        assert f"replica 0: {state}" in run.err
    # The plan is Nomad's validation too (job_endpoint.go Plan runs the admission validators): one request, and
    # /v1/validate/job only for a job the plan refuses.
    assert posts(nomad, f"/v1/job/{VLLM_JOB}/plan") == 1 and posts(nomad, "/v1/validate/job") == 0
    register = [r for r in nomad.requests if r.method == "POST" and r.path == f"/v1/job/{VLLM_JOB}"]
    assert len(register) == 1
    body = json.loads(register[0].body)
    assert body["EnforceIndex"] is True and body["JobModifyIndex"] == 0 and body["Job"]["ID"] == VLLM_JOB
    blocking = [r for r in nomad.requests if r.method == "GET" and "index" in r.query]
    assert blocking and all("wait" in r.query for r in blocking), "watch requests are blocking queries"


def test_json_output_is_one_document(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout()
    run = submit(nomad, LLAMA_CPU, "--output", "json")
    assert run.code == 0, run.err
    data = json.loads(run.out)
    assert data["ok"] is True and data["exit_code"] == 0
    (result,) = data["results"]
    assert result["status"] == "succeeded" and result["job"] == "qwen2-5-0-5b-instruct-gguf"
    assert [r["state"] for r in result["replicas"]] == ["running", "running"]
    assert len(result["endpoints"]) == 2


def test_detach_returns_after_registration(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.manual()
    run = submit(nomad, VLLM, "--detach")
    assert run.code == 0, run.err
    assert f"{VLLM_JOB}: registered" in run.out
    assert not any("index" in r.query for r in nomad.requests), "no watching with --detach"


def test_placement_failure_is_explained() -> None:
    a10 = {
        "Vendor": "nvidia",
        "Type": "gpu",
        "Name": "NVIDIA A10",
        "Attributes": {"memory": {"Int": 24576, "Unit": "MiB"}},
        "Instances": [{"ID": "GPU-1", "Healthy": True}, {"ID": "GPU-2", "Healthy": True}],
    }
    with NomadDouble(node_devices=[a10]) as nomad:
        nomad.default_scenario = scenarios.placement_failure()
        run = submit(nomad, TP2)
    assert run.code == 3, run.err
    assert (
        "cannot place 2 of 2 replicas: no node has 2 × nvidia/gpu (NVIDIA A100-SXM4-80GB) with ≥ 40 GiB: "
        "1 node has GPUs (NVIDIA A10), 24 GiB"
    ) in run.err
    assert "3 nodes have no device that matches the request (devices: no devices match request)" in run.err
    assert "--wait-for-capacity" in run.err
    assert "Traceback" not in run.err


def test_a_missing_device_plugin_is_explained_without_contradiction(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.placement_failure()  # the double's one node reports no device
    run = submit(nomad, TP2)
    assert run.code == 3, run.err
    assert (
        "no node has 2 × nvidia/gpu (NVIDIA A100-SXM4-80GB) with ≥ 40 GiB: no node reports any nvidia/gpu device "
        "(is nomad-device-nvidia installed on the clients?)"
    ) in run.err
    assert "3 nodes have no nvidia/gpu device (devices: no devices match request)" in run.err
    assert "free" not in run.err


QWEN_32B = {
    "architectures": ["Qwen2ForCausalLM"], "hidden_size": 5120, "num_attention_heads": 40, "num_hidden_layers": 64,
    "num_key_value_heads": 8, "max_position_embeddings": 32768, "torch_dtype": "bfloat16", "vocab_size": 152064,
}  # fmt: skip


def test_a_placement_failure_says_what_the_estimate_needs(tmp_path: Path) -> None:
    from ..support.model_fixtures import hf_folder

    model = hf_folder(tmp_path / "Qwen2.5-32B", QWEN_32B, total_size=65_527_752_704)
    with NomadDouble() as nomad:
        nomad.default_scenario = scenarios.placement_failure()
        run = submit(nomad, TP2, "--model", model)
    assert run.code == 3, run.err
    assert (
        "the model needs 2 GPUs with ≥ 45.2 GiB each "
        "(vLLM needs 40.7 GiB per GPU at --max-model-len 32768 (weights 30.5, KV 4.0, overhead 6.2))"
    ) in run.err


def test_blocked_evaluation_is_waiting_for_capacity_not_success(nomad: NomadDouble) -> None:
    capacity = threading.Event()  # capacity appears once nomadgs has said that it waits for it
    nomad.default_scenario = scenarios.blocked_then_placed(capacity=capacity)
    proc = start_nomadgs("submit", VLLM, "--timeout", "60s", "--wait-for-capacity", env={"NOMAD_ADDR": nomad.address})
    assert proc.stderr is not None
    err = []
    for line in proc.stderr:
        err.append(line)
        if "waiting-capacity: waiting for capacity: cannot place 1 of 1 replica" in line:
            capacity.set()
    assert proc.wait(timeout=30) == 0, "".join(err)
    assert capacity.is_set() and "succeeded" in "".join(err)
    nomad.default_scenario = scenarios.placement_failure()
    run = nomadgs("submit", LLAMA_CPU, "--timeout", "3s", "--wait-for-capacity", env={"NOMAD_ADDR": nomad.address})
    assert run.code == 4 and "timed out while waiting-capacity" in run.err, run.err


def test_zero_replicas_succeed_at_once(nomad: NomadDouble, tmp_path: Path) -> None:
    nomad.default_scenario = scenarios.rollout()
    zero = tmp_path / "zero.yaml"
    zero.write_text(LLAMA_CPU.read_text().replace("replicas: 2", "replicas: 0"))
    env = {"NOMAD_ADDR": nomad.address}
    run = nomadgs("submit", zero, "--timeout", "20s", env=env)
    assert run.code == 0, run.err
    assert "replicas is 0: the job is registered and runs no replica, so there is nothing to wait for" in run.out
    run = nomadgs("submit", zero, "--timeout", "20s", "--output", "json", env=env)
    (result,) = json.loads(run.out)["results"]
    assert (run.code, result["status"], result["replicas"]) == (0, "succeeded", [])


def test_image_pull_failure(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.image_pull_failure()
    run = submit(nomad, VLLM)
    assert run.code == 1, run.err
    assert "the image could not be pulled: Failed to pull `vllm/vllm-openai:v0.19.0`" in run.err
    assert "check the image name and tag" in run.err
    assert "event: Driver Failure" in run.err


def test_crash_loop_shows_the_engine_error(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.crash_loop(
        stderr="loading weights\nValueError: unsupported architecture Qwen9\n"
    )
    run = submit(nomad, VLLM)
    assert run.code == 1, run.err
    assert "vllm exited with code 1 and was restarted" in run.err
    assert "last lines of replica 0 (vllm) stderr:" in run.err
    assert "| ValueError: unsupported architecture Qwen9" in run.err


def test_oom_kill(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.oom_kill()
    run = submit(nomad, VLLM, "--output", "json")
    assert run.code == 1, run.err
    (result,) = json.loads(run.out)["results"]
    assert result["status"] == "failed"
    assert result["failures"][0]["kind"] == "oom"
    assert "ran out of memory and was killed (limit 24 GiB)" in result["message"]


def test_unhealthy_past_the_deadline_with_auto_revert(nomad: NomadDouble, tmp_path: Path) -> None:
    nomad.default_scenario = scenarios.rollout()
    assert submit(nomad, VLLM).code == 0
    second = tmp_path / "longer-context.yaml"
    second.write_text(VLLM.read_text().replace("--max-model-len 16384", "--max-model-len 32768"))
    nomad.default_scenario = scenarios.unhealthy(rollback_to=0)
    run = submit(nomad, second, "--output", "json")
    assert run.code == 1, run.err
    (result,) = json.loads(run.out)["results"]
    assert "did not answer 200 within 30m" in " ".join(result["details"])
    assert result["rollback_to_version"] == 0
    rollback = result["rollback"]
    assert (rollback["to_version"], rollback["job_version"], rollback["status"]) == (0, 2, "successful")
    assert (rollback["healthy"], rollback["desired"]) == (1, 1)
    assert "rolling-back: " in run.err, "the rollback's progress is shown while it runs"


def test_a_rollback_that_fails_too_is_reported(nomad: NomadDouble, tmp_path: Path) -> None:
    nomad.default_scenario = scenarios.rollout()
    assert submit(nomad, VLLM).code == 0
    second = tmp_path / "longer-context.yaml"
    second.write_text(VLLM.read_text().replace("--max-model-len 16384", "--max-model-len 32768"))
    nomad.default_scenario = scenarios.unhealthy(rollback_to=0, then=scenarios.unhealthy())
    run = submit(nomad, second)
    assert run.code == 1, run.err
    assert (
        # The reverted version keeps Stable, so Nomad does not revert again (deployment_watcher.go
        # handleRollbackValidity): said in plain words, not as Nomad's suffix.
        "auto-revert: Nomad rolled back to job version 0 (registered again as version 2), and the rollback failed "
        "too: Failed due to progress deadline; Nomad does not roll back again: its newest stable version, 2, is "
        "this same specification"
    ) in run.err, run.err


def test_server_errors_and_dropped_connections_are_retried(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout(healthy_after=0.5)
    nomad.faults.fail(r"^/v1/allocations$", status=500, count=2)
    nomad.faults.drop(r"^/v1/deployments$", count=2)
    nomad.faults.drop(rf"^/v1/job/{VLLM_JOB}$", count=1, method="POST")  # the register answer is lost
    run = submit(nomad, VLLM)
    assert run.code == 0, run.err
    assert "retried after" in run.err
    assert "sending it again" in run.err
    versions = nomad.job_versions(VLLM_JOB)
    assert len(versions) == 1, "the job was registered exactly once"


def test_a_leader_election_after_the_register_does_not_end_submit(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout()
    nomad.faults.drop(rf"^/v1/job/{VLLM_JOB}$", method="GET")  # before the register
    nomad.after_request(  # the register is answered, then the watch's first reads fail
        "POST",
        rf"^/v1/job/{VLLM_JOB}$",
        lambda: nomad.faults.fail(r"^/v1/allocations$", 500, count=2, body="No cluster leader", method="GET"),
    )
    run = submit(nomad, VLLM)
    assert run.code == 0, run.err
    assert f"Nomad at {nomad.address} is unavailable: it answered 500: No cluster leader while watching" in run.err
    assert "registered version 0" in run.err
    assert len(nomad.job_versions(VLLM_JOB)) == 1


def test_the_version_registered_is_known_without_reading_the_job_back(nomad: NomadDouble, tmp_path: Path) -> None:
    """Nomad's answer to the register pins the version it wrote (runner.written_version): after the register,
    the job is not read again, and a Nomad that cannot answer reads then does not stop the submit."""
    nomad.default_scenario = scenarios.rollout()
    assert submit(nomad, VLLM).code == 0
    changed = tmp_path / "vllm.yaml"
    changed.write_text(VLLM.read_text().replace("replicas: 1", "replicas: 2"))
    assert changed.read_text() != VLLM.read_text()
    nomad.after_request(
        "POST",
        rf"^/v1/job/{VLLM_JOB}$",
        lambda: nomad.faults.fail(rf"^/v1/job/{VLLM_JOB}$", 500, count=1000, body="No cluster leader", method="GET"),
    )
    before = len(nomad.requests)
    run = submit(nomad, changed)
    assert run.code == 0, run.err
    assert "registered version 1" in run.err and nomad.job_versions(VLLM_JOB)[-1]["Version"] == 1
    reads = [r for r in nomad.requests[before:] if r.method == "GET" and r.path == f"/v1/job/{VLLM_JOB}"]
    assert len(reads) == 1, "the ownership check before the plan; none after the register"


def test_giving_up_on_reading_a_job_back_says_the_job_is_registered(nomad: NomadDouble) -> None:
    """When Nomad's answer does not pin the version (here the job read before the plan was purged by someone
    else in between: the plan's index is not the read job's), the job is read back; a Nomad that stays
    unavailable then ends with AfterRegistration, which says the job is registered."""
    from nomad_gpustack.nomad import runner
    from nomad_gpustack.nomad.client import NomadAPI
    from nomad_gpustack.settings import NomadSettings

    from ..support.helpers import compile_yaml

    compiled = compile_yaml(VLLM.read_text())
    nomad.default_scenario = scenarios.manual()
    api = NomadAPI(NomadSettings(address=nomad.address), retry_for=1.0)
    api.register(compiled.job, modify_index=0)
    existing = api.job(VLLM_JOB)
    api.stop(VLLM_JOB, purge=True)
    found = runner.Preview(existing, api.plan(compiled.job))
    assert found.index == 0 and existing is not None and existing.JobModifyIndex > 0
    nomad.after_request(
        "POST",
        rf"^/v1/job/{VLLM_JOB}$",
        lambda: nomad.faults.fail(rf"^/v1/job/{VLLM_JOB}$", 500, count=1000, body="No cluster leader", method="GET"),
    )
    notes: list[str] = []

    class Notes:
        def info(self, message: str) -> None:
            notes.append(message)

        warning = info

    with pytest.raises(runner.AfterRegistration) as caught:
        runner.apply(api, compiled, found, Notes())
    message = str(caught.value)
    assert message.startswith(
        f"{VLLM_JOB} is registered on Nomad, but reading it back failed: Nomad at {nomad.address} is unavailable: "
        "it answered 500"
    )
    assert "(tried" in message and f"follow it with `nomadgs status {VLLM_JOB}`" in message
    assert caught.value.exit_code == 5, "a Nomad that stays unavailable is exit 5"
    assert len(nomad.job_versions(VLLM_JOB)) == 1


def test_every_command_retries_its_reads(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout(stdout="INFO: ready\n")
    env = {"NOMAD_ADDR": nomad.address}
    assert submit(nomad, LLAMA_CPU).code == 0
    job = "qwen2-5-0-5b-instruct-gguf"
    nomad.faults.fail(r"^/v1/jobs$", 500, body="No cluster leader")
    nomad.faults.fail(r"^/v1/allocations$", 500, body="No cluster leader")
    assert nomadgs("status", env=env).code == 0
    nomad.faults.drop(r"^/v1/client/fs/logs/")
    run = nomadgs("logs", job, env=env)
    assert run.code == 0 and "INFO: ready" in run.out, run.err
    nomad.faults.fail(rf"^/v1/job/{job}/plan$", 500, body="No cluster leader")
    assert nomadgs("plan", LLAMA_CPU, env=env).code == 0
    nomad.faults.fail(rf"^/v1/job/{job}$", 500, body="No cluster leader", method="GET")
    run = nomadgs("stop", job, env=env)
    assert run.code == 0 and "No cluster leader; trying again" in run.err


def test_concurrent_job_modification_is_detected(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout()
    assert submit(nomad, VLLM).code == 0
    changed = Path(os.environ.get("TMPDIR", "/tmp")) / f"nomadgs-concurrent-{os.getpid()}.yaml"
    changed.write_text(VLLM.read_text().replace("replicas: 1", "replicas: 2"))
    nomad.after_request(
        "POST", rf"^/v1/job/{VLLM_JOB}/plan$", lambda: nomad.modify_job(VLLM_JOB, meta={"by": "someone"})
    )
    try:
        run = submit(nomad, changed)
    finally:
        changed.unlink()
    assert run.code == 1, run.err
    assert "was changed by someone else since nomadgs planned it" in run.err
    assert "nothing was registered" in run.err
    assert nomad.jobs[f"default/{VLLM_JOB}"]["Meta"].get("by") == "someone", "their change was not overwritten"


def test_bad_token_is_refused_without_printing_it() -> None:
    with NomadDouble(acl_tokens={"right-token": "management"}) as nomad:
        nomad.default_scenario = scenarios.rollout()
        run = submit(nomad, VLLM, token="wrong-token-123")
        assert run.code == 5
        assert "Permission denied" in run.err and "the token is unknown to this cluster" in run.err
        assert "check NOMAD_TOKEN" in run.err and "wrong-token-123" not in run.err + run.out
        run = submit(nomad, VLLM)
        assert run.code == 5 and "Permission denied" in run.err and "no token was sent" in run.err
        assert submit(nomad, VLLM, token="right-token").code == 0


def test_unreachable_nomad() -> None:
    run = nomadgs("submit", VLLM, env={"NOMAD_ADDR": "http://127.0.0.1:9"})
    assert run.code == 5 and "cannot reach Nomad at http://127.0.0.1:9" in run.err and "Traceback" not in run.err


def test_server_validation_errors_are_bad_input(nomad: NomadDouble) -> None:
    refusal = {
        "DriverConfigValidated": True,
        "Error": "1 error(s) occurred",
        "Warnings": "",
        "ValidationErrors": ["Task group inference validation failed: minimum CPU value is 20; got 1"],
    }
    # The plan refuses the job as Nomad's Job.Plan does (its admission validators' multierror, a 500); the
    # validate endpoint then lists the reasons one by one.
    plan_refusal = "1 error occurred:\n\t* Task group inference validation failed: minimum CPU value is 20; got 1\n\n"
    nomad.faults.fail(rf"^/v1/job/{VLLM_JOB}/plan$", status=500, body=plan_refusal)
    nomad.faults.fail(r"^/v1/validate/job$", status=200, body=json.dumps(refusal))
    run = submit(nomad, VLLM)
    assert run.code == 2
    assert "Nomad refused the job: Task group inference validation failed: minimum CPU value is 20; got 1" in run.err
    assert posts(nomad, f"/v1/job/{VLLM_JOB}") == 0 and posts(nomad, "/v1/validate/job") == 1


def test_a_refusal_of_the_plan_is_said_as_the_plan_said_it_when_validation_lists_nothing(nomad: NomadDouble) -> None:
    plan_refusal = "1 error occurred:\n\t* Task group inference validation failed: minimum CPU value is 20; got 1\n\n"
    nomad.faults.fail(rf"^/v1/job/{VLLM_JOB}/plan$", status=500, body=plan_refusal)
    run = submit(nomad, VLLM)
    assert run.code == 2
    assert "Nomad refused the job: Task group inference validation failed: minimum CPU value is 20; got 1" in run.err
    assert posts(nomad, f"/v1/job/{VLLM_JOB}") == 0 and posts(nomad, "/v1/validate/job") == 1


def test_a_state_change_reaches_the_output_without_polling(nomad: NomadDouble) -> None:
    """The watcher holds a blocking query open; a change in Nomad answers it, no interval involved."""
    nomad.default_scenario = scenarios.manual()
    proc = start_nomadgs("submit", VLLM, "--timeout", "60s", env={"NOMAD_ADDR": nomad.address})
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "replica 0: starting" in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        nomad.wait_for(lambda n: any(a["JobID"] == VLLM_JOB for a in n.allocations.values()), timeout=30)
        nomad.wait_for_held("/v1/allocations", timeout=60)  # the watcher waits for a change
        before = len(nomad.requests)
        alloc_id = next(a["ID"] for a in nomad.allocations.values() if a["JobID"] == VLLM_JOB)
        changed_at = time.monotonic()
        nomad.update_allocation(alloc_id, task_state="running", task_events=[{"Type": "Started"}])
        assert seen.wait(30), "".join(lines)
        # The request that delivered the change was already waiting when the change happened:
        answered = [r for r in nomad.requests[:before] if r.path.endswith("/allocations") and "index" in r.query]
        assert answered and answered[-1].time < changed_at
        new = nomad.requests[before:]
        assert len([r for r in new if r.path.endswith("/allocations")]) <= 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_ctrl_c_leaves_the_job_running(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.manual()
    proc = start_nomadgs("submit", VLLM, env={"NOMAD_ADDR": nomad.address})
    nomad.wait_for(lambda n: any(a["JobID"] == VLLM_JOB for a in n.allocations.values()), timeout=30)
    nomad.wait_for_held("/v1/allocations", timeout=60)  # registered, and watching
    proc.send_signal(2)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert f"the job keeps running. Resume with: nomadgs status {VLLM_JOB}" in err
    assert not any(r.method == "DELETE" for r in nomad.requests)


def test_plan_exit_codes(nomad: NomadDouble) -> None:
    env = {"NOMAD_ADDR": nomad.address}
    nomad.default_scenario = scenarios.rollout()
    run = nomadgs("plan", VLLM, env=env)
    assert run.code == 1 and run.out.startswith(f'+ Job: "{VLLM_JOB}"\n+ Task Group: "inference" (1 create)\n')
    assert submit(nomad, VLLM).code == 0
    run = nomadgs("plan", VLLM, "--output", "json", env=env)
    assert run.code == 0 and json.loads(run.out)["diff"] == "None"
    run = nomadgs("plan", ROOT / "examples" / "missing.yaml", env=env)
    assert run.code == 255
    run = nomadgs("plan", VLLM, env={"NOMAD_ADDR": "http://127.0.0.1:9"})
    assert run.code == 255 and "cannot reach Nomad" in run.err


def test_plan_shows_what_changes_field_by_field(nomad: NomadDouble, tmp_path: Path) -> None:
    nomad.default_scenario = scenarios.rollout()
    assert submit(nomad, VLLM).code == 0
    edited = tmp_path / "edited.yaml"
    edited.write_text(VLLM.read_text().replace("--max-model-len 16384", "--max-model-len 32768"))
    env = {"NOMAD_ADDR": nomad.address}
    run = nomadgs("plan", edited, env=env)
    assert run.code == 1, run.err
    assert run.out.startswith(
        f'+/- Job: "{VLLM_JOB}"\n'
        '+/- Task Group: "inference" (1 create/destroy update)\n'
        '      Task: "download-model"\n'
        '  +/- Task: "vllm" (forces create/destroy update)\n'
        "    +/- Config {\n"
    ), run.out
    assert '      +/- args[9]:            "--max-model-len=16384" => "--max-model-len=32768"\n' in run.out
    assert '          image:              "vllm/vllm-openai:v0.19.0"\n' in run.out, "unchanged fields as context"
    assert (
        "Scheduler dry-run:\n- All tasks successfully allocated.\n- Destructive update, each new replica loads its "
        "model: rolling: no extra GPUs; the model is down while its replica is replaced\n"
    ) in run.out
    data = json.loads(nomadgs("plan", edited, "--output", "json", env=env).out)
    (group,) = data["job_diff"]["TaskGroups"]
    task = next(t for t in group["Tasks"] if t["Name"] == "vllm")
    (config,) = task["Objects"]
    assert {"Type": "Edited", "Name": "args[9]", "Old": "--max-model-len=16384", "New": "--max-model-len=32768",
            "Annotations": None} in config["Fields"]  # fmt: skip
    assert (data["diff"], group["Updates"]) == ("Edited", {"create/destroy update": 1})
    assert data["upgrade"] == "rolling: no extra GPUs; the model is down while its replica is replaced"


def test_resubmitting_an_unchanged_job_registers_nothing(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout()
    assert submit(nomad, VLLM).code == 0
    run = submit(nomad, VLLM)
    assert run.code == 0, run.err
    assert "no changes" in run.err
    assert "replica 0: running - healthy" in run.err and "pending" not in run.err, "the replica as it is"
    assert posts(nomad, f"/v1/job/{VLLM_JOB}") == 1


def test_foreign_jobs_are_not_replaced_without_force(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout()
    assert submit(nomad, VLLM).code == 0
    nomad.modify_job(VLLM_JOB, meta={"nomadgs_managed": "false"})
    run = submit(nomad, VLLM)
    assert run.code == 2 and "was not created by nomadgs" in run.err and "--force" in run.err
    plan = nomadgs("plan", VLLM, env={"NOMAD_ADDR": nomad.address})
    assert plan.code == 1, plan.err
    assert f"warning: job '{VLLM_JOB}' exists on Nomad but was not created by nomadgs" in plan.err
    assert plan.out.endswith(f"nomadgs submit --force {VLLM}\n"), "the suggested submit is one that works"
    data = json.loads(nomadgs("plan", VLLM, "--output", "json", env={"NOMAD_ADDR": nomad.address}).out)
    assert data["foreign"] is True


def test_status_logs_and_stop(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout(stdout="INFO: Uvicorn running\nINFO: ready\n", stderr="warming up\n")
    assert submit(nomad, LLAMA_CPU).code == 0
    env = {"NOMAD_ADDR": nomad.address}
    listing = nomadgs("status", env=env)
    assert listing.code == 0 and "qwen2.5-0.5b-instruct-gguf" in listing.out and "2/2" in listing.out
    detail = json.loads(nomadgs("status", "qwen2.5-0.5b-instruct-gguf", "--output", "json", env=env).out)
    assert detail["job"] == "qwen2-5-0-5b-instruct-gguf" and detail["healthy"] == 2 and len(detail["endpoints"]) == 2
    logs = nomadgs("logs", "qwen2-5-0-5b-instruct-gguf", env=env)
    assert logs.code == 0 and "INFO: ready" in logs.out
    assert "warming up" in nomadgs("logs", "qwen2-5-0-5b-instruct-gguf", "--stderr", "--replica", "1", env=env).out
    unknown = nomadgs("status", "qwen2.5-0.5b-instruct", env=env)
    assert unknown.code == 2 and "did you mean" in unknown.err
    stop = nomadgs("stop", "qwen2-5-0-5b-instruct-gguf", "--purge", env=env)
    assert stop.code == 0 and "stopped and purged" in stop.out
    assert "no models deployed" in nomadgs("status", env=env).out


def test_the_deployments_namespace_scopes_every_request(nomad: NomadDouble, tmp_path: Path) -> None:
    nomad.default_scenario = scenarios.rollout()
    deployment = tmp_path / "ml.yaml"
    deployment.write_text(LLAMA_CPU.read_text().replace("nomad:\n", "nomad:\n  namespace: ml\n"))
    run = submit(nomad, deployment)
    assert run.code == 0, run.err
    assert "ml/qwen2-5-0-5b-instruct-gguf" in nomad.jobs
    watched = [r for r in nomad.requests if r.method == "GET" and "/allocations" in r.path]
    assert watched and all(r.query.get("namespace") == ["ml"] for r in watched)
    run = nomadgs("submit", deployment, env={"NOMAD_ADDR": nomad.address, "NOMAD_NAMESPACE": "prod"})
    assert run.code == 2 and "nomad.namespace is 'ml' but NOMAD_NAMESPACE (or --namespace) says 'prod'" in run.err


def test_logs_follow_streams_new_lines(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout(stdout="INFO: ready\n")
    assert submit(nomad, VLLM).code == 0
    proc = start_nomadgs("logs", VLLM_JOB, "--follow", env={"NOMAD_ADDR": nomad.address})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "INFO: ready\n"
        alloc_id = next(a["ID"] for a in nomad.allocations.values() if a["JobID"] == VLLM_JOB)
        nomad.write_log(alloc_id, "vllm", "INFO: 200 POST /v1/chat/completions\n")
        assert proc.stdout.readline() == "INFO: 200 POST /v1/chat/completions\n"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_reader_that_leaves_early_ends_status_and_logs_quietly(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout(stdout="".join(f"INFO: line {i}\n" for i in range(5000)))
    assert submit(nomad, LLAMA_CPU).code == 0
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}, "NOMAD_ADDR": nomad.address}
    job = "qwen2-5-0-5b-instruct-gguf"
    for args in (["status"], ["status", job, "--output", "json"], ["logs", job, "--tail", "5000"], ["logs", job, "-f"]):
        read, write = os.pipe()
        proc = subprocess.Popen(
            [sys.executable, "-m", "nomad_gpustack", *args], stdout=write, stderr=subprocess.PIPE, cwd=ROOT, env=env
        )
        os.close(write)
        os.close(read)  # like `| head -0`: the reader is gone before the first byte
        _, err = proc.communicate(timeout=60)
        assert (proc.returncode, err) == (0, b""), args


def test_a_reader_that_leaves_early_does_not_change_the_outcome(nomad: NomadDouble) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}, "NOMAD_ADDR": nomad.address}
    env["PYTHONUNBUFFERED"] = "1"  # as in many CI images: the first line already meets the closed pipe
    for args, code in ((["plan", VLLM], 1), (["submit", VLLM, "--timeout", "60s", "--format", "json"], 3)):
        if code == 3:
            nomad.default_scenario = scenarios.placement_failure()
        read, write = os.pipe()
        proc = subprocess.Popen(
            [sys.executable, "-m", "nomad_gpustack", *map(str, args)], stdout=write, stderr=subprocess.PIPE, cwd=ROOT,
            env=env, text=True,
        )  # fmt: skip
        os.close(write)
        os.close(read)
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == code, (args, err)
        assert "Traceback" not in err


def test_status_shows_stopped_jobs_whole_backend_names_and_foreign_jobs_honestly(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout()
    env = {"NOMAD_ADDR": nomad.address}
    assert submit(nomad, ROOT / "examples" / "tei-bge-m3-embeddings.yaml", VLLM).code == 0
    assert nomadgs("stop", VLLM_JOB, env=env).code == 0
    foreign = {"ID": "web", "Name": "web", "Type": "service", "Datacenters": ["dc1"], "TaskGroups": [
        {"Name": "web", "Count": 1, "Tasks": [{"Name": "web", "Driver": "docker", "Config": {"image": "nginx"}}]}
    ]}  # fmt: skip
    httpx.post(f"{nomad.address}/v1/jobs", json={"Job": foreign}).raise_for_status()
    header, *rows = nomadgs("status", env=env).out.splitlines()
    # The job's version sits beside the job and says so: the backend's version is part of BACKEND.
    columns = [c.strip() for c in header.split("  ") if c.strip()]
    assert columns == ["MODEL", "JOB", "JOB VER", "BACKEND", "STATUS", "HEALTHY", "ENDPOINT"], header
    bge = next(r for r in rows if r.startswith("bge-m3"))
    assert "Text-Embeddings-Inference CPU-1.9" in bge and " running " in bge and " 1/1 " in bge
    assert bge.split()[1:3] == ["bge-m3", "0"], "the job, then its version"
    stopped = next(r for r in rows if r.startswith("Qwen2.5-7B-Instruct")).split()
    assert stopped[-3:] == ["stopped", "-", "-"], "a stopped job says so, not 0/1"
    assert not any(r.startswith("web") for r in rows), "the listing shows the models nomadgs deployed"
    detail = nomadgs("status", "web", env=env)
    assert detail.code == 0 and detail.out.startswith("model      none: job web was not created by nomadgs\n")
    data = json.loads(nomadgs("status", "web", "--output", "json", env=env).out)
    assert (data["managed"], data["model"], data["backend"], data["status"]) == (False, None, "", "running")


def test_ctrl_c_ends_logs_follow_with_130(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout(stdout="INFO: ready\n")
    assert submit(nomad, VLLM).code == 0
    proc = start_nomadgs("logs", VLLM_JOB, "-f", env={"NOMAD_ADDR": nomad.address})
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "INFO: ready\n"
        proc.send_signal(2)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err


def test_plan_of_a_job_nomad_refuses_ends_at_once_with_its_reasons() -> None:
    """Nomad answers the plan of an invalid job with a 500 listing the problems: final, not an outage."""
    with NomadDouble(job_max_count=1) as nomad:
        # the file as a user in the clone names it: messages show paths as they were given
        run = nomadgs("plan", LLAMA_CPU.relative_to(ROOT), env={"NOMAD_ADDR": nomad.address})
        plans = sum(1 for r in nomad.requests if r.path.endswith("/plan"))
    assert run.code == 255, run.err  # as `nomad job plan`, for every error
    assert run.err.splitlines()[-1] == (
        "error: examples/llamacpp-qwen2.5-0.5b-cpu.yaml: job: Nomad refused the job: "
        "total count was greater than configured job_max_count: 2 > 1"
    )
    assert plans == 1, "not retried"


@pytest.mark.parametrize(
    ("method", "path"), [("POST", rf"^/v1/job/{VLLM_JOB}/plan$"), ("POST", rf"^/v1/job/{VLLM_JOB}$")]
)
def test_submit_of_a_job_nomad_refuses_at_plan_or_register_is_bad_input(
    nomad: NomadDouble, method: str, path: str
) -> None:
    """Validate may pass and plan or register still refuse (a server setting, a change of job type): the same
    500 list of problems, one a line, exit 2 at once."""
    refusal = (
        "2 errors occurred:\n\t* Task group server validation failed: 1 error occurred:\n"
        "\t* Missing tasks for task group\n\n\n\t* job priority must be between [1, 50]\n\n"
    )
    nomad.faults.fail(path, status=500, body=refusal, count=1000, method=method)
    run = submit(nomad, VLLM.relative_to(ROOT))
    assert run.code == 2, run.err
    assert [line for line in run.err.splitlines() if line.startswith("error:")] == [
        "error: examples/vllm-qwen2.5-7b-instruct.yaml: job: Nomad refused the job: "
        "Task group server validation failed: Missing tasks for task group",
        "error: examples/vllm-qwen2.5-7b-instruct.yaml: job: Nomad refused the job: "
        "job priority must be between [1, 50]",
    ]
    assert sum(1 for r in nomad.requests if r.method == method and re.search(path, r.path)) == 1, "not retried"
    assert not nomad.jobs, "nothing was registered"


def test_reading_the_logs_of_a_failure_keeps_to_the_timeout(nomad: NomadDouble) -> None:
    """After the watch, the failed task's log is read with the client's retries: within --timeout too."""
    nomad.default_scenario = scenarios.crash_loop(stderr="ValueError: unsupported architecture Qwen9\n")
    nomad.faults.fail(r"^/v1/client/fs/logs/", status=500, body="No cluster leader", count=1000)
    run = nomadgs("submit", VLLM, "--timeout", "2s", env={"NOMAD_ADDR": nomad.address}, timeout=90)
    assert run.code == 1, run.err
    assert "vllm exited with code 1 and was restarted" in run.err
    reads = sum(1 for r in nomad.requests if r.path.startswith("/v1/client/fs/logs/"))
    # Backoff of 0.25-0.5 s, doubling: within 2 s no more than 4 attempts fit (60 s of retries make 12).
    assert 1 <= reads <= 4, reads
