"""The collection as a product: every plugin's documentation renders, it builds, its version is the package's."""

from __future__ import annotations

import tarfile
from pathlib import Path

import yaml

import nomad_gpustack

from ..support.components import ROOT
from .conftest import COLLECTION, run_tool

PLUGINS = {
    "module": ["nomad_gpustack.nomad.model", "nomad_gpustack.nomad.model_info", "nomad_gpustack.nomad.model_rollout"],
    "filter": ["nomad_gpustack.nomad.nomad_job", "nomad_gpustack.nomad.model_estimate"],
    "lookup": ["nomad_gpustack.nomad.model_endpoints"],
    "inventory": ["nomad_gpustack.nomad.nomad_nodes"],
}


def test_every_plugin_documents_itself() -> None:
    for kind, names in PLUGINS.items():
        run = run_tool("ansible-doc", "-t", kind, *names)
        assert run.code == 0 and "[ERROR]" not in run.text and "WARNING" not in run.text, run.text
        for name in names:
            assert name in run.out
        if kind != "inventory":
            assert "EXAMPLES:" in run.out and "RETURN VALUES:" in run.out, run.out
    listing = run_tool("ansible-doc", "-l", "nomad_gpustack.nomad")
    assert listing.code == 0 and "nomad_gpustack.nomad.model " in listing.out and "model_info" in listing.out


def test_galaxy_build_makes_the_tarball(tmp_path: Path) -> None:
    run = run_tool("ansible-galaxy", "collection", "build", str(COLLECTION), "--output-path", str(tmp_path))
    assert run.code == 0, run.text
    (tarball,) = tmp_path.glob("*.tar.gz")
    assert tarball.name == f"nomad_gpustack-nomad-{nomad_gpustack.__version__}.tar.gz"
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    for path in ("plugins/modules/model.py", "plugins/modules/model_info.py", "plugins/action/model.py",
                 "plugins/filter/nomad_job.py", "plugins/filter/model_estimate.py", "plugins/lookup/model_endpoints.py",
                 "plugins/inventory/nomad_nodes.py", "plugins/module_utils/bridge.py", "meta/runtime.yml",
                 "README.md", "MANIFEST.json", "CHANGELOG.md", "requirements.txt",
                 "meta/execution-environment.yml"):  # fmt: skip
        assert path in names, path
    assert not any("__pycache__" in name for name in names)


def test_version_is_the_package_version() -> None:
    galaxy = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())
    assert galaxy["version"] == nomad_gpustack.__version__
    runtime = yaml.safe_load((COLLECTION / "meta" / "runtime.yml").read_text())
    assert runtime["requires_ansible"].startswith(">=")


def test_the_python_dependency_is_declared_for_ansible_builder() -> None:
    # ansible-builder reads meta/execution-environment.yml (its version 3 format), then the file it names.
    meta = yaml.safe_load((COLLECTION / "meta" / "execution-environment.yml").read_text())
    assert meta["version"] == 3
    requirements = COLLECTION / meta["dependencies"]["python"]
    lines = [x for x in requirements.read_text().splitlines() if x.strip() and not x.startswith("#")]
    assert lines == [f"nomad-gpustack=={nomad_gpustack.__version__}"]


def test_no_document_installs_the_package_from_an_index() -> None:
    # nomad-gpustack is on no package index: `pip install nomad-gpustack` cannot work, wherever it is written.
    documents = [ROOT / "README.md", *(ROOT / "examples").rglob("*.yml"), *COLLECTION.rglob("*.md")]
    documents += [*COLLECTION.rglob("*.py"), *COLLECTION.rglob("*.txt")]
    for path in documents:
        if "output" not in path.relative_to(ROOT).parts:  # ansible-test's results, not the collection's
            assert "pip install nomad-gpustack" not in path.read_text(), path


def test_ansible_lint_production_profile_passes_on_the_collection_and_the_examples() -> None:
    collection = run_tool("ansible-lint", "--offline", "--profile", "production", "--nocolor", cwd=COLLECTION)
    assert collection.code == 0, collection.text
    examples = run_tool("ansible-lint", "--offline", "--profile", "production", "--nocolor", "examples")
    assert examples.code == 0, examples.text
    for run in (collection, examples):
        assert "Profile 'production' was required, and it passed." in run.text, run.text
