"""`nomadgs submit a.yaml b.yaml ...` and `nomadgs status` over a fleet, against the Nomad double."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from nomad_gpustack.compile.build import build
from nomad_gpustack.nomad.client import NomadAPI
from nomad_gpustack.nomad.status import all_model_statuses
from nomad_gpustack.settings import NomadSettings
from nomad_gpustack.spec.loader import load_catalog, load_deployment

from ..support.components import ROOT
from ..support.helpers import nomadgs, start_nomadgs
from ..support.nomad_double import NomadDouble, scenarios

LLAMA_CPU = ROOT / "examples" / "llamacpp-qwen2.5-0.5b-cpu.yaml"
VLLM = ROOT / "examples" / "vllm-qwen2.5-7b-instruct.yaml"
VLLM_JOB = "qwen2-5-7b-instruct"


def fleet_files(folder: Path, count: int, replicas: int = 1, prefix: str = "m") -> list[Path]:
    """`count` llama.cpp deployments named m0, m1 ... (jobs m0, m1 ...)."""
    text = LLAMA_CPU.read_text().replace("replicas: 2", f"replicas: {replicas}")
    files = []
    for i in range(count):
        path = folder / f"{prefix}{i}.yaml"
        path.write_text(text.replace("name: qwen2.5-0.5b-instruct-gguf", f"name: {prefix}{i}"))
        files.append(path)
    return files


def submit(nomad: NomadDouble, *args: str | Path) -> tuple[int, str, str]:
    run = nomadgs("submit", *args, "--timeout", "60s", env={"NOMAD_ADDR": nomad.address}, timeout=120)
    return run.code, run.out, run.err


def registrations(nomad: NomadDouble) -> list[str]:
    return [r.path for r in nomad.requests if r.method in ("POST", "PUT") and re.fullmatch(r"/v1/job/[^/]+", r.path)]


def test_every_deployment_is_checked_before_any_is_registered(tmp_path: Path) -> None:
    """Nomad refuses two of three files (count over job_max_count): one located message each, nothing registered,
    not even the good file that comes first."""
    (good,) = fleet_files(tmp_path, 1)
    bad = fleet_files(tmp_path, 2, replicas=2, prefix="big")
    with NomadDouble(job_max_count=1) as nomad:
        code, _, err = submit(nomad, good, *bad)
        assert code == 2, err
        refused = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(refused) == 2, err
        for path, line in zip(bad, refused, strict=True):
            assert line.startswith(f"error: {path}: job: Nomad refused the job: total count was greater than")
        assert registrations(nomad) == [] and not nomad.jobs


def test_a_foreign_job_in_the_fleet_registers_none_of_it(tmp_path: Path) -> None:
    with NomadDouble() as nomad:
        assert submit(nomad, VLLM)[0] == 0
        nomad.modify_job(VLLM_JOB, meta={"nomadgs_managed": "false"})
        before = len(registrations(nomad))
        code, out, err = submit(nomad, LLAMA_CPU, VLLM, "--output", "json")
        assert code == 2, err
        document = json.loads(out)
        (error,) = document["errors"]
        assert error.startswith(str(VLLM)) and "was not created by nomadgs" in error
        assert document["results"] == []
        assert len(registrations(nomad)) == before, "nothing registered, the good file neither"


def test_a_fleet_is_registered_at_once_and_followed_on_three_connections(tmp_path: Path) -> None:
    """24 rollouts that do not progress: every one is registered while the first is still followed, and the
    watches hold the same three blocking queries (not three per model), so the connections stay bounded."""
    files = fleet_files(tmp_path, 24)
    with NomadDouble() as nomad:
        nomad.default_scenario = scenarios.manual()
        proc = start_nomadgs("submit", *files, "--timeout", "120s", env={"NOMAD_ADDR": nomad.address})
        try:
            nomad.wait_for(lambda n: len(n.jobs) == 24, timeout=60)  # one at a time, the first would hold the rest
            for path in ("/v1/allocations", "/v1/deployments", "/v1/evaluations"):
                nomad.wait_for_held(path, timeout=60)
            nomad.reset_peak_connections()
            for job in nomad.jobs.values():  # 24 changes, each answering the held queries
                nomad.modify_job(job["ID"], meta={"touched": "yes"})
            for path in ("/v1/allocations", "/v1/deployments", "/v1/evaluations"):
                nomad.wait_for_held(path, timeout=60)
            held = nomad.peak_connections
        finally:
            proc.send_signal(2)
            _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "24 registered jobs keep running" in err
    per_job = [r.path for r in nomad.requests if "index" in r.query and r.path.startswith("/v1/job/")]
    assert per_job == [], "no blocking query of a single job"
    from nomad_gpustack.nomad import feed, fleet

    # Open at once: the three held queries, the feed's plain reads, and the keep-alive connections of the
    # one-shot calls (validate, plan, register: WORKERS at once); one query per object would be 72.
    assert held <= 3 + feed.READS + fleet.WORKERS, f"{held} connections open at once"


def test_a_fleet_is_checked_with_one_listing_and_versions_are_known_without_reading_back(tmp_path: Path) -> None:
    """New jobs: one listing for the fleet, then one validation and one register each (no read, no plan: there is
    nothing to diff against, and the register's check-and-set at 0 refuses a job that appeared). An upgrade:
    the listed jobs are read and planned, the unchanged ones not registered, and the version registered is
    Nomad's without a read after the register."""
    files = fleet_files(tmp_path, 5)
    with NomadDouble() as nomad:
        nomad.default_scenario = scenarios.manual()
        code, out, err = submit(nomad, *files, "--detach", "--output", "json")
        assert code == 0, err
        assert [r["version"] for r in json.loads(out)["results"]] == [0] * 5
        sent = [(r.method, r.path) for r in nomad.requests]
        assert sent.count(("GET", "/v1/jobs")) == 1
        assert sorted(p for m, p in sent if m == "GET" and p.startswith("/v1/job/")) == []
        assert not [p for _, p in sent if p.endswith("/plan")]
        assert sent.count(("PUT", "/v1/validate/job")) + sent.count(("POST", "/v1/validate/job")) == 5
        assert len(registrations(nomad)) == 5

        files[2].write_text(files[2].read_text().replace("replicas: 1", "replicas: 2"))
        before = len(nomad.requests)
        code, out, err = submit(nomad, *files, "--detach", "--output", "json")
        assert code == 0, err
        versions = {r["job"]: r["version"] for r in json.loads(out)["results"]}
        assert versions == {"m0": 0, "m1": 0, "m2": 1, "m3": 0, "m4": 0}
        assert nomad.jobs["default/m2"]["Version"] == 1
        sent = [(r.method, r.path) for r in nomad.requests[before:]]
        reads = [p for m, p in sent if m == "GET" and re.fullmatch(r"/v1/job/m\d", p)]
        assert sorted(reads) == [f"/v1/job/m{i}" for i in range(5)], "each listed job read once, none read back"
        assert len([p for _, p in sent if p.endswith("/plan")]) == 5
        assert registrations(nomad)[-1:] == ["/v1/job/m2"] and len(registrations(nomad)) == 6


def test_a_job_registered_by_someone_else_after_the_listing_is_not_replaced(tmp_path: Path) -> None:
    """The listing showed no m1; someone registers a job m1 before nomadgs does: the register's check-and-set at
    0 refuses it, and m1 ends with an error that says so, the job left as they made it."""
    files = fleet_files(tmp_path, 2)
    with NomadDouble() as nomad:
        nomad.default_scenario = scenarios.manual()
        theirs = {**build(load_deployment(VLLM), load_catalog(()), check=False).job, "ID": "m1", "Name": "theirs"}
        api = NomadAPI(NomadSettings(address=nomad.address))
        nomad.after_request("GET", "^/v1/jobs$", lambda: api.register(theirs, modify_index=0))
        code, out, err = submit(nomad, *files, "--detach", "--output", "json")
        assert code != 0, err
        results = {r["job"]: r for r in json.loads(out)["results"]}
        assert results["m0"]["status"] == "registered"
        assert results["m1"]["status"] == "error"
        assert "registered by someone else while nomadgs checked" in results["m1"]["message"]
        assert nomad.jobs["default/m1"]["Name"] == "theirs"


def test_the_summary_names_each_failure(tmp_path: Path) -> None:
    files = fleet_files(tmp_path, 4)
    with NomadDouble() as nomad:
        nomad.default_scenario = scenarios.rollout()
        nomad.set_scenario("m1", scenarios.crash_loop(stderr="error: unknown argument: --bogus"))
        nomad.set_scenario("m3", scenarios.placement_failure())
        code, out, err = submit(nomad, *files)
        assert code == 3, err  # the worst: placement (3) over a failure (1)
        assert "fleet: 2 of 4 healthy" in out
        summary = err[err.index("error:   m1") :]
        assert re.search(r"m1 \(job m1\): failed, exit 1: ", summary), err
        assert re.search(r"m3 \(job m3\): placement-failed, exit 3: cannot place", summary), err


def test_max_parallel_stops_starting_rollouts_after_a_failure(tmp_path: Path) -> None:
    files = fleet_files(tmp_path, 4)
    with NomadDouble() as nomad:
        nomad.default_scenario = scenarios.rollout()
        nomad.set_scenario("m1", scenarios.crash_loop())
        code, out, err = submit(nomad, *files, "--max-parallel", "1", "--output", "json")
        assert code == 1, err
        statuses = [(r["job"], r["status"]) for r in json.loads(out)["results"]]
        assert statuses == [("m0", "succeeded"), ("m1", "failed"), ("m2", "skipped"), ("m3", "skipped")]
        assert sorted(registrations(nomad)) == ["/v1/job/m0", "/v1/job/m1"]


def _status_requests(count: int) -> int:
    """Requests `all_model_statuses` sends for `count` healthy models."""
    compiled = build(load_deployment(LLAMA_CPU), load_catalog(()), check=False)
    with NomadDouble() as nomad:
        api = NomadAPI(NomadSettings(address=nomad.address))
        for i in range(count):
            job = {**compiled.job, "ID": f"m{i}", "Name": f"m{i}"}
            api.register(job, modify_index=0)  # type: ignore[arg-type]
        nomad.wait_for(lambda n: sum(d["Status"] == "successful" for d in n.deployments.values()) == count, timeout=60)
        before = len(nomad.requests)
        found = asyncio.run(all_model_statuses(api))
        assert [s.status for s in found] == ["running"] * count
        assert all(len(s.endpoints) == 2 for s in found)
        return len(nomad.requests) - before


def test_status_of_a_fleet_sends_the_same_requests_whatever_its_size() -> None:
    assert _status_requests(3) == _status_requests(30) == 3
