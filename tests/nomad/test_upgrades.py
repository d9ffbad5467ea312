"""Upgrades: what each strategy needs (explain.upgrade_needs), and how a watch follows canaries, promotion,
auto-revert and crash loops (rollout's rules) from Nomad's deployment and allocation shapes."""

from __future__ import annotations

from typing import Any

import pytest

from nomad_gpustack.nomad.explain import upgrade_needs

from ..support.helpers import compile_yaml

VLLM_24G: dict[str, Any] = {
    "name": "m", "huggingface_repo_id": "Qwen/Qwen2.5-7B-Instruct", "backend": "vLLM", "replicas": 2,
}  # fmt: skip
LLAMA_CPU: dict[str, Any] = {"name": "m", "local_path": "m.gguf", "backend": "llama.cpp", "backend_version": "cpu"}


@pytest.mark.parametrize(
    ("deployment", "expected"),
    [
        ({**VLLM_24G, "nomad": {"gpus": 2, "gpu_memory": "24 GiB", "upgrade": "canary"}},
         "canary: needs 1 more replica's GPUs (2 × 24 GiB) while both versions run; promoted once healthy"),
        ({**VLLM_24G, "nomad": {"gpus": 1, "update": {"canary": 2, "auto_promote": False}}},
         "canary: needs 2 more replicas' GPUs (2 × nvidia/gpu) while both versions run; then waits for "
         "`nomadgs promote`"),
        ({**VLLM_24G, "nomad": {"gpus": 1}}, "rolling: no extra GPUs; 1 of 2 replicas serves during the update"),
        ({**VLLM_24G, "replicas": 4, "nomad": {"gpus": 1, "update": {"max_parallel": 2}}},
         "rolling: no extra GPUs; 2 of 4 replicas serve during the update"),
        ({**VLLM_24G, "replicas": 1, "nomad": {"gpus": 1}},
         "rolling: no extra GPUs; the model is down while its replica is replaced"),
        ({**VLLM_24G, "nomad": {"gpus": 1, "upgrade": "recreate"}},
         "recreate: the model is down during the update (all 2 replicas replaced at once, no extra GPUs)"),
        ({**LLAMA_CPU, "nomad": {"upgrade": "canary", "cpu": 2000, "memory": "4 GiB"}},
         "canary: needs room for 1 more replica (2000 MHz, 4 GiB) while both versions run; promoted once healthy"),
    ],
)  # fmt: skip
def test_each_strategy_says_what_it_needs(deployment: dict[str, Any], expected: str) -> None:
    assert upgrade_needs(compile_yaml(deployment).request) == expected


def test_validate_says_which_strategy_applies() -> None:
    from ..support.components import ROOT
    from ..support.helpers import nomadgs

    run = nomadgs("validate", ROOT / "examples" / "vllm-qwen2.5-32b-instruct-tp2.yaml")
    assert run.code == 0, run.err
    assert (
        "    upgrade: canary: needs 1 more replica's GPUs (2 × 40 GiB) while both versions run; promoted once healthy\n"
    ) in run.out
