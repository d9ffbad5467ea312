"""The examples in examples/ansible/ run as written, against the Nomad double."""

from __future__ import annotations

import json
from pathlib import Path

from ..support.components import ROOT
from ..support.nomad_double import NomadDouble, scenarios
from ..support.nomad_double.objects import new_node, nvidia_gpus
from .conftest import requests_to, run_playbook, run_tool

EXAMPLES = ROOT / "examples" / "ansible"


def test_deploy_example_serves_two_models_and_tears_them_down(tmp_path: Path) -> None:
    with NomadDouble() as nomad:
        nomad.default_scenario = scenarios.rollout()
        env = {"NOMAD_ADDR": nomad.address, "TMPDIR": str(tmp_path)}
        up = run_playbook(EXAMPLES / "deploy.yml", env=env)
        down = run_playbook(EXAMPLES / "deploy.yml", "-e", "state=absent", env=env)
        jobs = nomad.jobs
    assert up.code == 0, up.text
    assert "Qwen2.5-7B-Instruct: http://" in up.out and "bge-m3: http://" in up.out, up.out
    assert '"Qwen2.5-7B-Instruct": 1' in up.out and '"bge-m3": 1' in up.out
    assert json.loads((tmp_path / "qwen.nomad.json").read_text())["Job"]["ID"] == "qwen2-5-7b-instruct"
    assert down.code == 0, down.text
    assert "changed=1" in down.out
    assert all(job["Stop"] for job in jobs.values()) and len(jobs) == 2
    assert requests_to(nomad, "DELETE", "/v1/job/qwen2-5-7b-instruct") == 1


def test_inventory_example_graph() -> None:
    nodes = [new_node("gpu-1", node_pool="gpu", devices=[nvidia_gpus("NVIDIA L4", 1, 23034)]), new_node("cpu-1")]
    with NomadDouble(nodes=nodes) as nomad:
        graph = run_tool(
            "ansible-inventory", "-i", str(EXAMPLES / "nodes.nomad.yml"), "--graph", env={"NOMAD_ADDR": nomad.address}
        )
    assert graph.code == 0, graph.text
    for line in ("@gpu_nvidia_l4:", "@node_pool_gpu:", "@nvidia_driver_550_54_15:", "@datacenter_dc1:", "--gpu-1"):
        assert line in graph.out, graph.out
