"""The examples in examples/ansible/ run with the commands the collection's README gives, as written (from the
clone, the venv active), against the Nomad double."""

from __future__ import annotations

import json
from pathlib import Path

from ..support.components import ROOT
from ..support.nomad_double import NomadDouble, scenarios
from ..support.nomad_double.objects import new_node, nvidia_gpus
from .conftest import COLLECTION, readme_block, requests_to, run_documented

EXAMPLES = ROOT / "examples" / "ansible"
COMMANDS = readme_block(COLLECTION / "README.md", "tests/ansible/test_examples.py runs these commands")


def command(*words: str) -> str:
    """The README's one command that contains all of `words`."""
    (found,) = [line for line in COMMANDS if all(word in line for word in words)]
    return found


def test_the_readme_gives_the_commands_the_playbook_names() -> None:
    header = [line.removeprefix("#   ") for line in (EXAMPLES / "deploy.yml").read_text().splitlines()]
    playbook_commands = [line for line in COMMANDS if "deploy.yml" in line]
    assert len(playbook_commands) == 3
    for line in playbook_commands:
        assert line in header, line


def test_deploy_example_serves_two_models_checks_and_tears_them_down(tmp_path: Path) -> None:
    up_command = min((line for line in COMMANDS if "deploy.yml" in line), key=len)  # the one without options
    with NomadDouble() as nomad:
        nomad.default_scenario = scenarios.rollout()
        env = {"NOMAD_ADDR": nomad.address, "TMPDIR": str(tmp_path)}
        up = run_documented(up_command, cwd=ROOT, env=env)
        check = run_documented(command("deploy.yml", "--check --diff"), cwd=ROOT, env=env)
        registrations = sum(requests_to(nomad, "POST", f"/v1/job/{job['ID']}") for job in nomad.jobs.values())
        down = run_documented(command("deploy.yml", "-e state=absent"), cwd=ROOT, env=env)
        jobs = nomad.jobs
    assert up.code == 0, up.text
    assert "Qwen2.5-7B-Instruct: http://" in up.out and "bge-m3: http://" in up.out, up.out
    assert '"Qwen2.5-7B-Instruct": 1' in up.out and '"bge-m3": 1' in up.out
    assert json.loads((tmp_path / "qwen.nomad.json").read_text())["Job"]["ID"] == "qwen2-5-7b-instruct"
    assert check.code == 0, check.text
    assert "changed=0" in check.out and registrations == 2, check.out  # Nomad's plan only: nothing registered
    assert down.code == 0, down.text
    assert "changed=1" in down.out
    assert all(job["Stop"] for job in jobs.values()) and len(jobs) == 2
    assert requests_to(nomad, "DELETE", "/v1/job/qwen2-5-7b-instruct") == 1


def test_inventory_example_graph() -> None:
    nodes = [new_node("gpu-1", node_pool="gpu", devices=[nvidia_gpus("NVIDIA L4", 1, 23034)]), new_node("cpu-1")]
    with NomadDouble(nodes=nodes) as nomad:
        inventory = command("ansible-inventory", "nodes.nomad.yml")
        graph = run_documented(inventory, cwd=ROOT, env={"NOMAD_ADDR": nomad.address})
    assert graph.code == 0, graph.text
    for line in ("@gpu_nvidia_l4:", "@node_pool_gpu:", "@nvidia_driver_550_54_15:", "@datacenter_dc1:", "--gpu-1"):
        assert line in graph.out, graph.out
