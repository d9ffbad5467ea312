"""`nomadgs submit`, `plan`, `status`, `logs`, `stop` run as real processes against the Nomad double."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..support.components import ROOT
from ..support.helpers import Run, nomadgs
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
    assert posts(nomad, "/v1/validate/job") == 1
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
        "1 node has GPUs, 24 GiB"
    ) in run.err
    assert "had no free matching devices" in run.err
    assert "--wait-for-capacity" in run.err
    assert "Traceback" not in run.err


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
    nomad.default_scenario = scenarios.blocked_then_placed(after=0.5)
    run = submit(nomad, VLLM, "--wait-for-capacity")
    assert run.code == 0, run.err
    assert "waiting-capacity: waiting for capacity: cannot place 1 of 1 replica" in run.err
    assert run.err.index("waiting for capacity") < run.err.index("succeeded")
    nomad.default_scenario = scenarios.placement_failure()
    run = nomadgs("submit", LLAMA_CPU, "--timeout", "1s", "--wait-for-capacity", env={"NOMAD_ADDR": nomad.address})
    assert run.code == 4 and "timed out while waiting-capacity" in run.err


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


def test_unhealthy_past_the_deadline_with_auto_revert(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout()
    assert submit(nomad, VLLM).code == 0
    changed = VLLM.read_text().replace("--max-model-len 16384", "--max-model-len 32768")
    second = Path(os.environ.get("TMPDIR", "/tmp")) / f"nomadgs-unhealthy-{os.getpid()}.yaml"
    second.write_text(changed)
    try:
        nomad.default_scenario = scenarios.unhealthy(rollback_to=0)
        run = submit(nomad, second)
    finally:
        second.unlink()
    assert run.code == 1, run.err
    assert "did not answer 200 within 30m" in run.err
    assert "rolling back to job version 0" in run.err


def test_server_errors_and_dropped_connections_are_retried(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout(healthy_after=0.5)
    nomad.faults.fail(rf"^/v1/job/{VLLM_JOB}/allocations$", status=500, count=2)
    nomad.faults.drop(rf"^/v1/job/{VLLM_JOB}/deployment$", count=2)
    nomad.faults.drop(rf"^/v1/job/{VLLM_JOB}$", count=1, method="POST")  # the register answer is lost
    run = submit(nomad, VLLM)
    assert run.code == 0, run.err
    assert "retried after" in run.err
    assert "sending it again" in run.err
    versions = nomad.job_versions(VLLM_JOB)
    assert len(versions) == 1, "the job was registered exactly once"


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
        assert "ACL token not found" in run.err and "NOMAD_TOKEN" in run.err
        assert "wrong-token-123" not in run.err + run.out
        run = submit(nomad, VLLM)
        assert run.code == 5 and "Permission denied" in run.err
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
    nomad.faults.fail(r"^/v1/validate/job$", status=200, body=json.dumps(refusal))
    run = submit(nomad, VLLM)
    assert run.code == 2
    assert "Nomad refused the job: Task group inference validation failed: minimum CPU value is 20; got 1" in run.err
    assert posts(nomad, f"/v1/job/{VLLM_JOB}") == 0


def test_a_state_change_reaches_the_output_without_polling(nomad: NomadDouble) -> None:
    """The watcher holds a blocking query open; a change in Nomad answers it, no interval involved."""
    nomad.default_scenario = scenarios.manual()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}, "NOMAD_ADDR": nomad.address}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nomad_gpustack", "submit", str(VLLM), "--timeout", "60s"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
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
        time.sleep(0.5)  # let the watcher settle into its blocking queries
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
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}, "NOMAD_ADDR": nomad.address}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nomad_gpustack", "submit", str(VLLM)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    nomad.wait_for(lambda n: any(a["JobID"] == VLLM_JOB for a in n.allocations.values()), timeout=30)
    time.sleep(0.5)
    proc.send_signal(2)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert f"the job keeps running. Resume with: nomadgs status {VLLM_JOB}" in err
    assert not any(r.method == "DELETE" for r in nomad.requests)


def test_plan_exit_codes(nomad: NomadDouble) -> None:
    env = {"NOMAD_ADDR": nomad.address}
    nomad.default_scenario = scenarios.rollout()
    run = nomadgs("plan", VLLM, env=env)
    assert run.code == 1 and "new job" in run.out and "place 1" in run.out
    assert submit(nomad, VLLM).code == 0
    run = nomadgs("plan", VLLM, "--output", "json", env=env)
    assert run.code == 0 and json.loads(run.out)["diff"] == "None"
    run = nomadgs("plan", ROOT / "examples" / "missing.yaml", env=env)
    assert run.code == 255
    run = nomadgs("plan", VLLM, env={"NOMAD_ADDR": "http://127.0.0.1:9"})
    assert run.code == 255 and "cannot reach Nomad" in run.err


def test_resubmitting_an_unchanged_job_registers_nothing(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout()
    assert submit(nomad, VLLM).code == 0
    run = submit(nomad, VLLM)
    assert run.code == 0, run.err
    assert "no changes" in run.err
    assert posts(nomad, f"/v1/job/{VLLM_JOB}") == 1


def test_foreign_jobs_are_not_replaced_without_force(nomad: NomadDouble) -> None:
    nomad.default_scenario = scenarios.rollout()
    assert submit(nomad, VLLM).code == 0
    nomad.modify_job(VLLM_JOB, meta={"nomadgs_managed": "false"})
    run = submit(nomad, VLLM)
    assert run.code == 2 and "was not created by nomadgs" in run.err and "--force" in run.err


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
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}, "NOMAD_ADDR": nomad.address}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nomad_gpustack", "logs", VLLM_JOB, "--follow"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "INFO: ready\n"
        alloc_id = next(a["ID"] for a in nomad.allocations.values() if a["JobID"] == VLLM_JOB)
        nomad.write_log(alloc_id, "vllm", "INFO: 200 POST /v1/chat/completions\n")
        assert proc.stdout.readline() == "INFO: 200 POST /v1/chat/completions\n"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
