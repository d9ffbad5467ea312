"""`nomad_gpustack.nomad.model` and `model_info` in real playbook runs against the Nomad double."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from ...support.helpers import answering, nomadgs, web_page
from ...support.nomad_double import NomadDouble, scenarios
from ..conftest import EXAMPLES, requests_to, run_playbook

JOB = "qwen2-5-0-5b-instruct-gguf"
MODEL = "qwen2.5-0.5b-instruct-gguf"


def deployment_file(folder: Path, name: str = "small.yaml", replicas: int = 1) -> Path:
    """The CPU llama.cpp example with `replicas` replicas."""
    text = (EXAMPLES / "llamacpp-qwen2.5-0.5b-cpu.yaml").read_text().replace("replicas: 2", f"replicas: {replicas}")
    path = folder / name
    path.write_text(text)
    return path


def playbook(folder: Path, tasks: str, name: str = "play.yml") -> Path:
    path = folder / name
    path.write_text(f"- hosts: localhost\n  gather_facts: false\n  tasks:\n{tasks}")
    return path


def test_present_is_idempotent_edits_change_and_absent_stops(nomad: NomadDouble, tmp_path: Path) -> None:
    nomad.default_scenario = scenarios.rollout()
    small = deployment_file(tmp_path)
    edited = deployment_file(tmp_path, "edited.yaml", replicas=2)
    book = playbook(
        tmp_path,
        f"""
    - name: deploy
      nomad_gpustack.nomad.model: {{deployment: {small}, wait_timeout: 60s}}
    - name: deploy again
      nomad_gpustack.nomad.model: {{deployment: {small}, wait_timeout: 60s}}
    - name: deploy the same inline
      nomad_gpustack.nomad.model:
        definition: "{{{{ lookup('file', '{small}') | from_yaml }}}}"
        wait_timeout: 60s
    - name: info
      nomad_gpustack.nomad.model_info:
    - name: info by name in check mode
      nomad_gpustack.nomad.model_info: {{name: {MODEL.upper()}}}
      check_mode: true
    - name: info unknown
      nomad_gpustack.nomad.model_info: {{name: qwen2.5-0.5b-instruct-ggu}}
    - name: deploy edited
      nomad_gpustack.nomad.model: {{deployment: {edited}, wait_timeout: 60s, return_job: true}}
    - name: stop
      nomad_gpustack.nomad.model: {{deployment: {edited}, state: absent}}
    - name: stop again
      nomad_gpustack.nomad.model: {{deployment: {edited}, state: absent}}
""",
    )
    play = run_playbook(book, env={"NOMAD_ADDR": nomad.address}, record=True)
    assert play.code == 0, play.text
    r = play.results()

    first = r["deploy"]
    assert first["changed"] is True and first["status"] == "succeeded", first
    assert first["job"] == JOB and first["version"] == 0 and first["eval_id"]
    assert [x["state"] for x in first["replicas"]] == ["running"]
    assert len(first["endpoints"]) == 1 and first["endpoints"][0].startswith("http://")
    assert first["plan"]["diff"] == "Added" and "nomad_job" not in first

    for name in ("deploy again", "deploy the same inline"):
        again = r[name]
        assert again["changed"] is False and again["status"] == "succeeded", again
        assert again["eval_id"] is None and again["version"] == 0 and again["plan"]["diff"] == "None"
        assert again["endpoints"] == first["endpoints"]

    (info,) = r["info"]["models"]
    assert r["info"]["changed"] is False
    assert info["job"] == JOB and info["healthy"] == info["desired"] == 1 and info["endpoints"] == first["endpoints"]
    assert r["info by name in check mode"]["models"] == r["info"]["models"]
    unknown = r["info unknown"]
    assert unknown["models"] == [] and "did you mean" in unknown["msg"] and not unknown.get("failed")

    changed = r["deploy edited"]
    assert changed["changed"] is True and changed["version"] == 1 and changed["status"] == "succeeded"
    assert [x["state"] for x in changed["replicas"]] == ["running", "running"]
    assert any('Count: "1" => "2"' in line for line in changed["plan"]["fields"]), changed["plan"]
    assert changed["nomad_job"]["Job"]["ID"] == JOB and changed["nomad_job"]["Job"]["TaskGroups"][0]["Count"] == 2

    assert r["stop"]["changed"] is True and r["stop"]["status"] == "stopped" and r["stop"]["eval_id"]
    assert r["stop again"]["changed"] is False and r["stop again"]["status"] == "stopped"

    assert requests_to(nomad, "POST", f"/v1/job/{JOB}") == 2, "unchanged runs register nothing"
    assert requests_to(nomad, "DELETE", f"/v1/job/{JOB}") == 1
    assert nomad.jobs[f"default/{JOB}"]["Stop"] is True


def test_check_mode_plans_and_diff_shows_the_changed_field(nomad: NomadDouble, tmp_path: Path) -> None:
    nomad.default_scenario = scenarios.rollout()
    small = deployment_file(tmp_path)
    edited = deployment_file(tmp_path, "edited.yaml", replicas=3)
    deploy = playbook(tmp_path, "    - nomad_gpustack.nomad.model: {deployment: '{{ file }}', wait_timeout: 60s}\n")
    env = {"NOMAD_ADDR": nomad.address}
    assert run_playbook(deploy, "-e", f"file={small}", env=env).code == 0

    registers, plans = requests_to(nomad, "POST", f"/v1/job/{JOB}"), requests_to(nomad, "POST", f"/v1/job/{JOB}/plan")
    play = run_playbook(deploy, "-e", f"file={edited}", "--check", "--diff", env=env)
    assert play.code == 0, play.text
    assert "changed: [localhost]" in play.out
    assert '-    Count: "1"' in play.out and '+    Count: "3"' in play.out, play.out
    assert f"--- before: {JOB} (on Nomad)" in play.out and f"+++ after: {JOB} (planned)" in play.out
    assert requests_to(nomad, "POST", f"/v1/job/{JOB}") == registers, "check mode registers nothing"
    assert requests_to(nomad, "POST", f"/v1/job/{JOB}/plan") == plans + 1

    unchanged = run_playbook(deploy, "-e", f"file={small}", "--check", "--diff", env=env)
    assert unchanged.code == 0 and "ok: [localhost]" in unchanged.out and "changed=0" in unchanged.out
    assert nomad.jobs[f"default/{JOB}"]["TaskGroups"][0]["Count"] == 1


def test_failures_are_explained_in_msg_without_a_traceback(tmp_path: Path) -> None:
    a10 = {
        "Vendor": "nvidia",
        "Type": "gpu",
        "Name": "NVIDIA A10",
        "Attributes": {"memory": {"Int": 24576, "Unit": "MiB"}},
        "Instances": [{"ID": "GPU-1", "Healthy": True}],
    }
    with NomadDouble(node_devices=[a10]) as nomad:
        nomad.set_scenario(JOB, scenarios.crash_loop(stderr="loading weights\nValueError: unsupported architecture\n"))
        nomad.set_scenario("qwen2-5-7b-instruct", scenarios.placement_failure())
        foreign = {"ID": "bge-m3", "Name": "bge-m3", "Type": "service", "Datacenters": ["dc1"], "TaskGroups": [
            {"Name": "web", "Count": 1, "Tasks": [{"Name": "web", "Driver": "docker", "Config": {"image": "nginx"}}]}
        ]}  # fmt: skip
        httpx.post(f"{nomad.address}/v1/jobs", json={"Job": foreign}).raise_for_status()
        small = deployment_file(tmp_path)
        book = playbook(
            tmp_path,
            f"""
    - name: crash loop
      nomad_gpustack.nomad.model: {{deployment: {small}, wait_timeout: 60s}}
      ignore_errors: true
    - name: placement
      nomad_gpustack.nomad.model:
        deployment: {EXAMPLES / "vllm-qwen2.5-7b-instruct.yaml"}
        wait_timeout: 60s
      ignore_errors: true
    - name: timeout
      nomad_gpustack.nomad.model: {{deployment: {small}, wait_timeout: nonsense}}
      ignore_errors: true
    - name: not ours
      nomad_gpustack.nomad.model: {{deployment: {EXAMPLES / "tei-bge-m3-embeddings.yaml"}, state: absent}}
      ignore_errors: true
    - name: not ours in check mode
      nomad_gpustack.nomad.model: {{deployment: {EXAMPLES / "tei-bge-m3-embeddings.yaml"}}}
      check_mode: true
      ignore_errors: true
""",
        )
        play = run_playbook(book, env={"NOMAD_ADDR": nomad.address}, record=True)
    assert play.code == 0, play.text
    r = play.results()
    crash = r["crash loop"]
    assert crash["failed"] is True and crash["changed"] is True and crash["status"] == "failed"
    assert "exited with code 1 and was restarted" in crash["msg"], crash["msg"]
    assert "| ValueError: unsupported architecture" in crash["msg"]
    assert crash["failures"][0]["kind"] and crash["logs"]

    placement = r["placement"]
    assert placement["failed"] is True and placement["status"] == "placement-failed"
    assert "cannot place 1 of 1 replica: no node has 1 × nvidia/gpu" in placement["msg"], placement["msg"]
    assert (
        # The node's one A10 fits the request: the scheduler found it in use (explain.DeviceFacts).
        "1 node has them, all in use by other allocations" in placement["msg"]
        and "(wait_for_capacity: true waits for it)" in placement["msg"]
    )

    bad = r["timeout"]
    assert bad["failed"] is True and bad["exit_code"] == 2 and "wait_timeout" in bad["msg"]
    for name in ("not ours", "not ours in check mode"):
        foreign_job = r[name]
        assert foreign_job["failed"] is True and "was not created by nomad" in foreign_job["msg"], foreign_job
        assert "set force: true" in foreign_job["msg"] and "--force" not in foreign_job["msg"]
    # The words of `nomadgs stop`, the flag named as the option.
    assert r["not ours"]["msg"] == "job 'bge-m3' was not created by nomadgs (set force: true to stop it anyway)"
    assert "Traceback" not in play.text and "MODULE FAILURE" not in play.text
    assert requests_to(nomad, "DELETE", "/v1/job/bge-m3") == 0 and requests_to(nomad, "POST", "/v1/job/bge-m3") == 0


def test_bad_input_is_located_and_the_token_never_shows(tmp_path: Path) -> None:
    token = "8ba85cef-s3cr3t-t0k3n-1f0c2d9b7e41"
    # As a vault would give it: the playbook names a variable. (Ansible's `environment:` keyword would show it
    # on the command line it logs with -vvv; the controller's own NOMAD_TOKEN is the other way in.)
    secrets = tmp_path / "secrets.yml"
    secrets.write_text(f"nomad_token: {token}\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text(deployment_file(tmp_path).read_text().replace("replicas: 1", "replicas: two"))
    log = tmp_path / "ansible.log"
    with NomadDouble(acl_tokens={token: "management"}) as nomad:
        nomad.default_scenario = scenarios.rollout()
        book = playbook(
            tmp_path,
            f"""
    - name: broken file
      nomad_gpustack.nomad.model: {{deployment: {broken}, token: "{{{{ nomad_token }}}}", nomad_addr: {nomad.address}}}
      ignore_errors: true
    - name: broken definition
      nomad_gpustack.nomad.model:
        definition:
          name: tiny
          source: huggingface
          huggingface_repo_id: Qwen/Qwen2.5-0.5B-Instruct-GGUF
          backend: llama.cpp
          replicas: two
        token: "{{{{ nomad_token }}}}"
        nomad_addr: {nomad.address}
      ignore_errors: true
    - name: with the token
      nomad_gpustack.nomad.model_info: {{token: "{{{{ nomad_token }}}}", nomad_addr: {nomad.address}}}
    - name: with the token from NOMAD_TOKEN
      nomad_gpustack.nomad.model: {{deployment: {deployment_file(tmp_path)}, nomad_addr: {nomad.address}}}
    - name: with a wrong token
      nomad_gpustack.nomad.model:
        {{deployment: {deployment_file(tmp_path)}, token: "x{{{{ nomad_token }}}}", nomad_addr: {nomad.address}}}
      ignore_errors: true
""",
        )
        play = run_playbook(
            book, "-vvv", "-e", f"@{secrets}", env={"ANSIBLE_LOG_PATH": str(log), "NOMAD_TOKEN": token}, record=True
        )
        sent = [r for r in nomad.requests if r.headers.get("x-nomad-token") == token]
        registered = [r for r in nomad.requests if r.path == f"/v1/job/{JOB}" and r.method == "POST"]
    assert play.code == 0, play.text
    file_line = broken.read_text().splitlines().index("replicas: two") + 1
    book_line = book.read_text().splitlines().index("          replicas: two") + 1
    assert f"{broken.name}:{file_line}:11: replicas: expected a whole number, got text ('two')" in play.out, play.out
    assert f"{book}:{book_line}:21: replicas: expected a whole number, got text ('two')" in play.out, play.out
    r = play.results()
    assert r["broken file"]["problems"][0]["line"] == file_line and r["broken file"]["exit_code"] == 2
    assert r["with the token from NOMAD_TOKEN"]["status"] == "succeeded"
    refused = r["with a wrong token"]["msg"]
    assert "Nomad refused the request (Permission denied): the token is unknown to this cluster" in refused
    assert sent, "the token was used"
    assert len(registered) == 1, "bad input and a refused token register nothing"
    assert "Traceback" not in play.text
    for text in (play.out, play.err, log.read_text(), json.dumps(r)):
        assert token not in text
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in play.out, "the invocation shows the token masked"


def test_module_defaults_group_and_no_wait(nomad: NomadDouble, tmp_path: Path) -> None:
    nomad.default_scenario = scenarios.manual()
    small = deployment_file(tmp_path)
    book = tmp_path / "play.yml"
    book.write_text(
        f"""
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/nomad_gpustack.nomad.nomad:
      nomad_addr: {nomad.address}
  tasks:
    - name: register only
      nomad_gpustack.nomad.model: {{deployment: {small}, wait: false}}
    - name: info
      nomad_gpustack.nomad.model_info:
"""
    )
    play = run_playbook(book, record=True)
    assert play.code == 0, play.text
    r = play.results()
    assert r["register only"]["changed"] is True and r["register only"]["status"] == "registered"
    assert "replicas" not in r["register only"]
    assert not any("index" in q.query for q in nomad.requests), "no watching without wait"
    assert [m["job"] for m in r["info"]["models"]] == [JOB]


def error_block(stderr: str) -> list[str]:
    """What `nomadgs submit` says of a failed rollout: the `error:` headline, then its indented lines."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    block = [lines[start].removeprefix("error: ")]
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        block.append(line[2:])
    return block


def test_failure_msg_is_what_nomadgs_submit_prints(tmp_path: Path) -> None:
    small = deployment_file(tmp_path)
    book = playbook(
        tmp_path,
        f"""
    - name: placement
      nomad_gpustack.nomad.model: {{deployment: {small}, wait_timeout: 60s}}
      ignore_errors: true
""",
    )
    timeout_book = playbook(
        tmp_path,
        f"""
    - name: timeout
      nomad_gpustack.nomad.model: {{deployment: {small}, wait_timeout: 2s}}
      ignore_errors: true
""",
        name="timeout.yml",
    )
    outcomes = {}
    for name, scenario, module_book, timeout in (
        ("placement", scenarios.placement_failure, book, "60s"),
        ("timeout", scenarios.manual, timeout_book, "2s"),
    ):
        with NomadDouble() as nomad:
            nomad.default_scenario = scenario()
            cli = nomadgs("submit", small, "--timeout", timeout, env={"NOMAD_ADDR": nomad.address}, cwd=tmp_path)
        with NomadDouble() as nomad:
            nomad.default_scenario = scenario()
            play = run_playbook(module_book, env={"NOMAD_ADDR": nomad.address}, record=True)
        assert play.code == 0, play.text
        outcomes[name] = (error_block(cli.err), play.results()[name]["msg"].splitlines())

    cli_lines, module_lines = outcomes["placement"]
    assert cli_lines[-1] == f"`nomadgs stop {JOB}` removes it from the queue", cli_lines
    assert module_lines[-1] == "state: absent removes it from the queue", module_lines
    # One wording: the same lines, the command's flags named as the module's options.
    expected = [line.replace("(watch with --wait-for-capacity)", "(wait_for_capacity: true waits for it)") for line in
                cli_lines[:-1]]  # fmt: skip
    assert module_lines[:-1] == expected
    assert any("wait_for_capacity: true" in line for line in module_lines)

    cli_lines, module_lines = outcomes["timeout"]
    assert cli_lines[0].startswith(f"{MODEL}: timed out while ") and module_lines[:-1] == cli_lines[:-1]
    assert cli_lines[-1] == f"the job keeps running; follow it with `nomadgs status {JOB}`"
    assert module_lines[-1] == f"the job keeps running; follow it with nomad_gpustack.nomad.model_info (name: {JOB})"


def test_diff_and_fields_are_the_library_words_for_nomads_plan(nomad: NomadDouble, tmp_path: Path) -> None:
    from nomad_gpustack.compile.build import build
    from nomad_gpustack.nomad.client import NomadAPI
    from nomad_gpustack.nomad.plandiff import changed_fields, diff_texts
    from nomad_gpustack.settings import NomadSettings
    from nomad_gpustack.spec.loader import load_catalog, load_deployment

    nomad.default_scenario = scenarios.rollout()
    small = deployment_file(tmp_path)
    edited = deployment_file(tmp_path, "edited.yaml", replicas=3)
    edited.write_text(edited.read_text().replace("--ctx-size 8192", "--ctx-size 4096"))
    book = playbook(tmp_path, "    - name: deploy\n      nomad_gpustack.nomad.model: {deployment: '{{ file }}'}\n")
    env = {"NOMAD_ADDR": nomad.address}
    assert run_playbook(book, "-e", f"file={small}", env=env).code == 0
    play = run_playbook(book, "-e", f"file={edited}", "--check", "--diff", env=env, record=True)
    assert play.code == 0, play.text
    result = play.results()["deploy"]

    # Nomad's plan of the same job, asked directly, in the library's words.
    api = NomadAPI(NomadSettings.from_env({}, address=nomad.address))
    job_diff = api.plan(build(load_deployment(edited), load_catalog(), check=True).job).Diff
    assert job_diff is not None and job_diff.Type == "Edited"
    before, after = diff_texts(job_diff.model_dump())
    assert (result["diff"]["before"], result["diff"]["after"]) == (before, after)
    assert result["plan"]["fields"] == changed_fields(job_diff.model_dump())
    assert any('Count: "1" => "3"' in line for line in result["plan"]["fields"])
    assert any('Task "llama-cpp"' in line and '"8192" => "4096"' in line for line in result["plan"]["fields"])
    assert "job_diff" not in result["plan"], "the words, not Nomad's structure a second time"
    assert '-    Count: "1"' in play.out and '+    Count: "3"' in play.out


def test_a_wrong_address_is_named_as_the_option(tmp_path: Path) -> None:
    small = deployment_file(tmp_path)
    with web_page() as page:
        book = playbook(
            tmp_path,
            f"""
    - name: no host
      nomad_gpustack.nomad.model: {{deployment: {small}, nomad_addr: "http://"}}
      ignore_errors: true
    - name: not nomad
      nomad_gpustack.nomad.model: {{deployment: {small}, nomad_addr: "{page}"}}
      ignore_errors: true
""",
        )
        play = run_playbook(book, record=True)
    assert play.code == 0, play.text
    r = play.results()
    assert r["no host"]["msg"] == (
        "Nomad address 'http://' has no host name "
        "(set nomad_addr or NOMAD_ADDR to http(s)://host:port or host:port, as http://127.0.0.1:4646)"
    )
    assert r["not nomad"]["msg"].startswith(f"{page} is not a Nomad HTTP API (")
    assert r["not nomad"]["msg"].endswith("; check nomad_addr or NOMAD_ADDR"), r["not nomad"]["msg"]


def test_a_json_api_of_another_shape_is_not_nomad(tmp_path: Path) -> None:
    """The module says what the CLI says of a server that answers JSON of its own: no "unexpected error"."""
    small = deployment_file(tmp_path)
    with answering(200, "application/json", '{"unexpected":"shape"}') as other:
        book = playbook(
            tmp_path,
            f"""
    - name: deploy
      nomad_gpustack.nomad.model: {{deployment: {small}, nomad_addr: "{other}"}}
      ignore_errors: true
    - name: info
      nomad_gpustack.nomad.model_info: {{nomad_addr: "{other}"}}
      ignore_errors: true
""",
        )
        play = run_playbook(book, record=True)
    assert play.code == 0, play.text
    for task, words in (
        ("deploy", "the answer to /v1/job/qwen2-5-0-5b-instruct-gguf has no 'ID'"),
        ("info", "the answer to /v1/jobs is not a list"),
    ):
        result = play.results()[task]
        assert result["msg"] == f"{other} is not a Nomad HTTP API ({words}); check nomad_addr or NOMAD_ADDR", result
        assert result["exit_code"] == 5
