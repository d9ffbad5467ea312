"""GPUStack backend files: the real ones import, bad ones fail with located messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nomad_gpustack.compile.build import build
from nomad_gpustack.compile.resolve import resolve_version
from nomad_gpustack.errors import InputError
from nomad_gpustack.spec.catalog import Catalog
from nomad_gpustack.spec.loader import load_backend_file, load_catalog

from ..support.backend_files import PROJECT_BACKENDS, BackendCorpus
from ..support.helpers import backends, deployment, nomadgs


def test_every_backend_file_validates_with_the_cli(backend_corpus: BackendCorpus) -> None:
    files = backend_corpus.files()
    run = nomadgs("backends", "validate", *files, "--output", "json")
    assert run.code == 0, run.err
    results = json.loads(run.out)
    assert len(results) == len(files)
    assert all(r["valid"] for r in results)
    names = {b["name"] for r in results for b in r["backends"]}
    assert backend_corpus.names <= names


def test_text_output_lists_each_backend_and_notes_gpustack_rules(shared_backends: Path) -> None:
    run = nomadgs("backends", "validate", shared_backends / "docs-history" / "llama.cpp-custom.cuda-cpu.yaml",
                  shared_backends / "docs-history" / "TensorRT-LLM.no-host.yaml")  # fmt: skip
    assert run.code == 0, run.err
    assert "ok  " in run.out and "llama.cpp-custom (v1-cuda, v1-cpu)" in run.out
    # default_version v1-custom is dangling: GPUStack falls back to the newest key
    assert "default_version 'v1-custom' is not one of the versions" in run.err
    assert "newest version 'v1-cuda'" in run.err
    assert "must end" not in run.err or "'-custom'" in run.err
    assert "TensorRT-LLM" in run.err and "ending in '-custom'" in run.err


def test_text_output_notes_gpustack_rules_for_the_projects_files() -> None:
    folder = PROJECT_BACKENDS
    run = nomadgs("backends", "validate", folder / "single" / "quoted-commands-custom.yaml",
                  folder / "catalog" / "community.yaml")  # fmt: skip
    assert run.code == 0, run.err
    assert "quoted-commands-custom (v1-cuda, v1-cpu)" in run.out
    assert "Whisper-Server (1.2.0, 1.10.1, 1.10.1-cpu)" in run.out
    assert "default_version 'v1-custom' is not one of the versions; the newest version 'v1-cuda' is used" in run.err
    assert "('Rerank-Server' does not)" in run.err


def test_every_version_of_every_backend_renders(backend_corpus: BackendCorpus) -> None:
    rendered = 0
    for file in backend_corpus.files():
        for backend in load_backend_file(file):
            catalog = Catalog().adding([backend])
            for version, config in backend.spec.versions.items():
                uses_gpu = "cpu" not in config.frameworks
                compiled = build(
                    deployment(
                        {
                            "name": "test-model",
                            "huggingface_repo_id": "org/model",
                            "backend": backend.spec.backend_name,
                            "backend_version": version,
                            "nomad": {"gpus": 1} if uses_gpu else {},
                        }
                    ),
                    catalog,
                )
                assert compiled.job["TaskGroups"][0]["Tasks"][-1]["Config"] is not None
                rendered += 1
    assert rendered >= backend_corpus.min_versions


def test_export_only_keys_are_ignored_and_list_files_hold_several_backends() -> None:
    text = """
- backend_name: one-custom
  is_built_in: false
  icon: data:image/png;base64,AAAA
  framework_index_map: {cuda: [v1]}
  version_configs:
    v1: {image_name: a:1, custom_framework: cuda}
- backend_name: two-custom
  version_configs:
    v1: {image_name: b:1, built_in_frameworks: [cpu]}
"""
    found = backends(text)
    assert [b.spec.backend_name for b in found] == ["one-custom", "two-custom"]
    assert found[1].spec.versions["v1"].frameworks == ["cpu"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("backend_name: x\nversion_configs:\n  v1:\n    imag_name: a\n",
         "backend.yaml:4:5: version_configs.v1.imag_name: unknown key 'imag_name' (did you mean 'image_name'?)"),
        ("backend_name: x\ndefault_run_comand: serve\n",
         "backend.yaml:2:1: default_run_comand: unknown key 'default_run_comand' "
         "(did you mean 'default_run_command'?)"),
        ("backend_name: x\nversion_configs:\n  v1:\n    custom_framework: cdua\n",
         "backend.yaml:4:23: version_configs.v1.custom_framework: unknown framework 'cdua'; did you mean 'cuda'?"),
        ("backend_name: x\nparameter_format: spaces\n",
         "backend.yaml:2:19: parameter_format: 'spaces' is not allowed here; expected 'space' or 'equal' "
         "(did you mean 'space'?)"),
        ("backend_name: x\nversion_configs:\n  v1:\n    image_name: 3\n",
         "backend.yaml:4:17: version_configs.v1.image_name: expected text, got a whole number (3) (quote it: '3')"),
        ("backend_name: x\nversion_configs: [a, b]\n", "backend.yaml:2:18: version_configs: expected a mapping"),
        ("backend_name: x\nversion_configs:\n  'v 1': {image_name: a}\n",
         "backend.yaml:3:3: version_configs.v 1: version 'v 1' may only use letters, digits"),
        ("version_configs: {}\n", "backend.yaml:1:1: required key 'backend_name' is missing"),
        ("backend_name: x\nhealth_check_path: v1/models\n", "health_check_path must start with '/'"),
        ("backend_name: x\nnomad:\n  docker:\n    ipc_mod: host\n",
         "'ipc_mod' is not a docker driver option; did you mean 'ipc_mode'?"),
        ("backend_name: x\nnomad:\n  docker:\n    image: other\n", "'image' is set by nomadgs"),
        ("backend_name: x\nnomad:\n  driver: podman\n", "nomad.driver: 'podman' is not allowed here"),
    ],
)  # fmt: skip
def test_bad_backend_files_give_located_messages(text: str, expected: str) -> None:
    with pytest.raises(InputError) as info:
        backends(text)
    messages = [str(p) for p in info.value.problems]
    assert any(expected in m for m in messages), messages


def test_version_resolution_follows_gpustack() -> None:
    (b,) = backends("backend_name: x\ndefault_version: gone\nversion_configs:\n  0.9.1: {}\n  0.10.0: {}\n  0.2: {}\n")
    assert resolve_version(b.spec, None) == "0.10.0"  # dangling default: newest key, natural order
    assert resolve_version(b.spec, "0.2") == "0.2"
    assert resolve_version(b.spec, "1.0") is None
    (c,) = backends("backend_name: y\ndefault_version: v1-cpu\nversion_configs:\n  v1-cuda: {}\n  v1-cpu: {}\n")
    assert resolve_version(c.spec, None) == "v1-cpu"


# --- GPUStack's newer backend fields: disabled_versions, source_name, source_type -----------------------------

SOURCED = PROJECT_BACKENDS / "exported" / "sourced.yaml"


def sourced_model(**fields: object) -> dict[str, object]:
    return {"name": "m", "huggingface_repo_id": "org/m", "backend": "Sourced-Server", "nomad": {"gpus": 1}, **fields}


def test_source_fields_are_accepted_as_gpustack_accepts_them_and_mean_nothing_here() -> None:
    (backend,) = load_backend_file(SOURCED)
    assert backend.spec.source_name == "community-mirror" and backend.spec.source_type == "url"
    assert (
        backend.spec.versions["1.1.0"].source_type == "url"
        and backend.spec.versions["1.0.0-custom"].source_name is None
    )
    # GPUStack's SourceTypeEnum: builtin, official, file, url; anything else is refused, as GPUStack refuses it.
    text = SOURCED.read_text().replace("source_type: url\ndefault_version", "source_type: URL\ndefault_version")
    with pytest.raises(InputError) as info:
        backends(text)
    assert "source_type: 'URL' is not allowed here; expected 'builtin', 'official', 'file' or 'url'" in str(info.value)
    with pytest.raises(InputError, match=r"disabled_versions\[0\]: expected text"):
        backends("backend_name: x\ndisabled_versions: [1]\n")


def test_the_default_choice_skips_disabled_versions_and_naming_one_is_warned() -> None:
    (backend,) = load_backend_file(SOURCED)
    catalog = Catalog().adding([backend])
    assert resolve_version(backend.spec, None) == "1.1.0"  # the default 1.2.0 is disabled: the newest other
    for auto in ({}, {"backend_version": ""}, {"backend_version": None}):  # "" and null are GPUStack's "Auto"
        compiled = build(deployment(sourced_model(**auto)), catalog)
        assert compiled.resolved.version == "1.1.0" and compiled.resolved.warnings == ()
    named = build(deployment(sourced_model(backend_version="1.2.0")), catalog)
    assert named.resolved.version == "1.2.0"
    assert named.resolved.warnings == (
        "backend_version '1.2.0' is one of Sourced-Server's disabled_versions (hidden from GPUStack's deploy list, "
        "e.g. its image is not synced here); it is used as asked",
    )
    text = SOURCED.read_text().replace("- 0.8.0\n", "- 1.1.0\n- 1.0.0-custom\n")
    every = Catalog().adding(backends(text))
    with pytest.raises(InputError) as info:
        build(deployment(sourced_model()), every)
    assert str(info.value) == (
        "deploy.yaml:3:10: backend: every version of backend 'Sourced-Server' is in its disabled_versions "
        "(name one with backend_version to use it anyway, or enable one in the backend file)"
    )


def test_backends_validate_notes_a_disabled_default_and_a_disabled_version_that_is_not_there() -> None:
    run = nomadgs("backends", "validate", SOURCED)
    assert run.code == 0, run.err
    assert "default_version '1.2.0' is in disabled_versions; '1.1.0', the newest other version, is used" in run.err
    assert "disabled_versions names '0.8.0', which is not one of the versions" in run.err


def test_builtin_catalog_has_the_promised_backends() -> None:
    catalog = load_catalog()
    names = {n.lower() for n in catalog.names}
    assert {"vllm", "sglang", "llama.cpp", "tensorrt-llm", "text-embeddings-inference", "kokoro-fastapi",
            "voxbox", "mindie"} <= names  # fmt: skip
    llama = catalog.find("LLAMA.CPP")
    assert llama is not None
    frameworks = {f for v in llama.spec.versions.values() for f in v.frameworks}
    assert {"cuda", "cpu"} <= frameworks
    mindie = catalog.find("mindie")
    assert mindie is not None and {f for v in mindie.spec.versions.values() for f in v.frameworks} == {"cann"}


def test_backends_cli_list_and_show() -> None:
    listed = nomadgs("backends", "list", "--output", "json")
    assert listed.code == 0
    rows = {r["name"]: r for r in json.loads(listed.out)}
    assert rows["vLLM"]["health_check_path"] == "/v1/models"
    assert rows["llama.cpp"]["default_version"] == "cpu"
    shown = nomadgs("backends", "show", "vllm", "--format", "json")
    assert shown.code == 0 and json.loads(shown.out)["backend_name"] == "vLLM"
    yaml_out = nomadgs("backends", "show", "kokoro-fastapi")
    assert yaml_out.code == 0 and "backend_name: Kokoro-FastAPI" in yaml_out.out
    unknown = nomadgs("backends", "show", "vlm")
    assert unknown.code == 2
    assert "unknown backend 'vlm' (did you mean 'vLLM'?)" in unknown.err
    assert "Traceback" not in unknown.err


def test_the_built_in_custom_backend_shows_what_it_accepts() -> None:
    for name in ("Custom", "custom"):
        shown = nomadgs("backends", "show", name)
        assert shown.code == 0, shown.err
        assert shown.out.startswith("# built in: GPUStack's Custom backend has no backend file\nbackend_name: Custom\n")
    data = json.loads(nomadgs("backends", "show", "Custom", "--format", "json").out)
    assert data["built_in"] is True and "required" in data["deployment_keys"]["image_name"]
    assert "{{model_path}}" in data["placeholders"] and "cuda" in data["frameworks"]


def test_user_backends_override_builtin_ones(tmp_path: Path) -> None:
    override = tmp_path / "vllm.yaml"
    override.write_text(
        "backend_name: VLLM\nversion_configs:\n  mine: {image_name: me/vllm:1, custom_framework: cuda}\n"
    )
    run = nomadgs("backends", "list", "--backends", tmp_path, "--output", "json")
    assert run.code == 0, run.err
    rows = [r for r in json.loads(run.out) if r["name"].lower() == "vllm"]
    assert len(rows) == 1 and list(rows[0]["versions"]) == ["mine"]
