"""Model metadata from the Hub, against a stand-in of the Hub on 127.0.0.1: headers only, token, cache."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nomad_gpustack.compile.estimation import lookup_model
from nomad_gpustack.estimate.hub import GGUF_CHUNK, HubUnavailable, hub_model
from nomad_gpustack.spec.deployment import Deployment

from ..support.helpers import nomadgs
from ..support.hf_hub import HubStandIn, go_online
from ..support.model_fixtures import LLAMA_31_8B, LLAMA_31_8B_BYTES, llama_gguf, safetensors_header

INDEX_NAME = "model.safetensors.index.json"
INDEX = json.dumps({"metadata": {"total_size": LLAMA_31_8B_BYTES}, "weight_map": {}}).encode()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubStandIn]:
    tensors = {f"w{i}": ("BF16", [1024, 1024]) for i in range(4)}
    single = safetensors_header(tensors) + bytes(4 * 1024 * 1024 * 2)  # with its data, to show it is not read
    gguf = llama_gguf(tmp_path / "l.gguf").read_bytes() + bytes(16 * GGUF_CHUNK)  # a header, then "data"
    standin = HubStandIn(
        {
            "meta-llama/Llama-3.1-8B": {"config.json": json.dumps(LLAMA_31_8B).encode(), INDEX_NAME: INDEX},
            "org/single": {"config.json": json.dumps({**LLAMA_31_8B, "num_hidden_layers": 2}).encode(),
                           "model.safetensors": single},
            "org/gguf": {"l-Q4_K.gguf": gguf},
            "org/gated": {"config.json": json.dumps(LLAMA_31_8B).encode(), "model.safetensors.index.json": INDEX},
            "org/listed": {"config.json": b"[1, 2]", INDEX_NAME: INDEX},
            "org/texts": {"config.json": json.dumps({**LLAMA_31_8B, "num_key_value_heads": "8"}).encode(),
                          INDEX_NAME: INDEX},
        },
        gated={"org/gated": "hf_secret"},
    ).start()  # fmt: skip
    monkeypatch.setenv("HF_ENDPOINT", standin.endpoint)
    go_online(monkeypatch)
    yield standin
    standin.stop()


def test_an_indexed_repo_costs_two_small_requests_then_none(hub: HubStandIn, tmp_path: Path) -> None:
    facts = hub_model("meta-llama/Llama-3.1-8B", None, cache_dir=tmp_path)
    assert facts.weight_bytes == LLAMA_31_8B_BYTES and facts.layers == 32
    # (huggingface_hub itself may also ask /api/agent-harnesses once, for its user agent)
    files = [r.path.rsplit("/", 1)[-1] for r in hub.requests if "/resolve/" in r.path]
    assert files == ["config.json", "model.safetensors.index.json"]
    before = len(hub.requests)
    again = hub_model("meta-llama/Llama-3.1-8B", None, cache_dir=tmp_path)
    assert again.weight_bytes == facts.weight_bytes and "(cached)" in again.source
    assert len(hub.requests) == before  # the second run made no request at all


def test_a_single_safetensors_file_is_read_by_its_header_range(hub: HubStandIn, tmp_path: Path) -> None:
    facts = hub_model("org/single", None, cache_dir=tmp_path)
    assert facts.weight_bytes == 4 * 1024 * 1024 * 2
    ranged = [r for r in hub.requests if r.path.endswith("model.safetensors")]
    assert ranged[0].range == "bytes=0-7"
    header = len(safetensors_header({f"w{i}": ("BF16", [1024, 1024]) for i in range(4)}))
    assert sum(r.sent for r in ranged) == header  # the length and the JSON: not one byte of weights


def test_a_gguf_is_read_in_ranges_up_to_its_header(hub: HubStandIn, tmp_path: Path) -> None:
    facts = hub_model("org/gguf", "l-Q4_K.gguf", cache_dir=tmp_path)
    assert facts.format == "gguf" and facts.layers == 32
    reads = [r for r in hub.requests if "/resolve/" in r.path]
    assert [r.range for r in reads] == [f"bytes=0-{GGUF_CHUNK - 1}"]
    assert sum(r.sent for r in reads) == GGUF_CHUNK  # one range: the header and at most the rest of the chunk


def test_a_gated_repo_needs_hf_token(hub: HubStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(HubUnavailable, match=r"refused org/gated/config\.json \(401\): set HF_TOKEN"):
        hub_model("org/gated", None, cache_dir=tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert hub_model("org/gated", None, cache_dir=tmp_path).layers == 32
    assert [r for r in hub.requests if "/resolve/" in r.path][-1].authorized, "the token reached the Hub"


def test_missing_repos_and_offline_mode_are_reasons_not_tracebacks(
    hub: HubStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(HubUnavailable, match=r"org/none has no config\.json"):
        hub_model("org/none", None, cache_dir=tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(hub.requests)
    with pytest.raises(HubUnavailable, match="HF_HUB_OFFLINE is set"):
        hub_model("meta-llama/Llama-3.1-8B", None, cache_dir=tmp_path)
    assert len(hub.requests) == before


def test_a_repo_whose_config_holds_wrong_values_is_a_reason_not_a_traceback(hub: HubStandIn, tmp_path: Path) -> None:
    with pytest.raises(HubUnavailable, match=r"org/listed: config\.json is not a JSON object"):
        hub_model("org/listed", None, cache_dir=tmp_path)
    with pytest.raises(HubUnavailable, match=r'org/texts: config\.json: num_key_value_heads is the text "8"'):
        hub_model("org/texts", None, cache_dir=tmp_path)


def test_an_unreachable_hub_is_said_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard: nothing listens
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    deployment = Deployment.model_validate({"name": "m", "huggingface_repo_id": "org/m", "backend": "vLLM"})
    found = lookup_model(deployment, cache_dir=tmp_path)
    assert found.facts is None and found.unreachable
    assert found.reason is not None and "http://127.0.0.1:9 is unreachable" in found.reason


def write(path: Path, data: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_command_line_estimates_from_the_hub_and_then_from_its_cache(hub: HubStandIn, tmp_path: Path) -> None:
    deployment = write(
        tmp_path / "llama.yaml",
        {"name": "llama", "huggingface_repo_id": "meta-llama/Llama-3.1-8B", "backend": "vLLM",
         "backend_parameters": ["--max-model-len 32768"], "nomad": {"gpus": 1, "gpu_memory": "24 GiB"}},
    )  # fmt: skip
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    first = nomadgs("estimate", deployment, "--output", "json", env=env)
    assert first.code == 0, first.err
    doc = json.loads(first.out)
    assert doc["rows"][0]["kv_per_token"] == 131072 and doc["suggestion"]["gpus"] == 2
    requests = len(hub.requests)
    second = nomadgs("estimate", deployment, env=env)
    assert second.code == 0 and "suggested gpus: 2" in second.out
    assert len(hub.requests) == requests  # cached: no request
    refused = nomadgs("validate", deployment, env=env)
    assert refused.code == 2 and "use gpus: 2, or --max-model-len ≤ 13312" in refused.err
    auto = write(
        tmp_path / "auto.yaml",
        {**yaml.safe_load(deployment.read_text()), "nomad": {"gpus": "auto", "gpu_memory": "24 GiB"}},
    )
    rendered = nomadgs("render", auto, env=env)
    assert rendered.code == 0 and json.loads(rendered.out)["Job"]["Meta"]["gpustack_gpus"] == "2"
    assert len(hub.requests) == requests


def test_the_command_line_says_when_the_hub_is_unreachable(tmp_path: Path) -> None:
    deployment = write(tmp_path / "m.yaml", {"name": "m", "huggingface_repo_id": "org/m", "backend": "vLLM"})
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0", "XDG_CACHE_HOME": str(tmp_path)}
    run = nomadgs("estimate", deployment, env=env)
    assert run.code == 5 and "is unreachable" in run.err and "Traceback" not in run.err


def test_a_header_longer_than_a_range_is_read_in_growing_ranges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nomad_gpustack.estimate import hub as hub_module
    from nomad_gpustack.estimate.gguf import read_header

    monkeypatch.setattr(hub_module, "GGUF_CHUNK", 1024)
    tokens = [f"token-{i}" for i in range(3000)]  # about 45 KiB of header
    data = llama_gguf(tmp_path / "t.gguf", layers=2, extra={"tokenizer.ggml.tokens": tokens}).read_bytes()
    ranges: list[tuple[int, int]] = []

    def fetch(first: int, last: int) -> bytes:
        ranges.append((first, last))
        return data[first : last + 1]

    source = hub_module._RangeSource(fetch)
    header = read_header(source)
    assert header.array_lengths["tokenizer.ggml.tokens"] == 3000 and len(header.tensors) == 2 * 9 + 3
    assert ranges[0] == (0, 1023) and len(ranges) <= 7  # 1, 2, 4, ... KiB
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges))  # no byte fetched twice
