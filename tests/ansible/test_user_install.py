"""The user's path: in a clone, the package's wheel and the collection's tarball are built and installed into a
fresh venv outside the repository, and the example playbook runs from there against the Nomad double, with the
commands of the collection's README ("Install"), as written.

Nothing of the repository may be what runs: the test works in a copy of the clone whose package and collection
folders are removed once the wheel and the tarball are built, with a HOME of its own (the venv and the installed
collection are under it) and a PATH without the tests' venv. Its pip installs from the package index.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nomad_gpustack

from ..support.components import ROOT
from ..support.nomad_double import NomadDouble, scenarios
from .conftest import BIN, COLLECTION, readme_block

BLOCK = readme_block(COLLECTION / "README.md", "tests/ansible/test_user_install.py runs this block")
# After the builds, before the playbook: the clone's own package and collection can no longer be imported.
REMOVE_SOURCES = "rm -r nomad_gpustack ansible_collections"


def copy_of_the_clone(destination: Path) -> Path:
    """The files of the working tree that git knows or would add (not the ignored ones: no .venv, no caches):
    a clone, with the edits not committed yet."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listing.split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted but not yet committed is listed too
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def user_environment(tmp_path: Path, nomad_addr: str) -> dict[str, str]:
    """The environment of someone with a Python 3.11+ as `python3`, nothing of the tests: no venv on PATH, no
    ANSIBLE_*/NOMAD_*/PYTHON* settings; HOME in the temporary folder."""
    base_python = Path(sys.executable).resolve()  # the Python the tests' venv was made from
    python_bin = tmp_path / "python-bin"
    python_bin.mkdir()
    (python_bin / "python3").symlink_to(base_python)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and not Path(p).resolve().is_relative_to(ROOT)]
    assert str(BIN) not in path
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANSIBLE_", "NOMAD_", "CONSUL_", "PYTHON", "VIRTUAL_ENV", "PIP_CACHE_DIR"))
    }
    home = tmp_path / "home"
    home.mkdir()
    env.update(
        HOME=str(home),
        PATH=os.pathsep.join([str(python_bin), *path]),
        # pip's cache as the user has it (the tests' XDG_CACHE_HOME would start an empty one for every run).
        PIP_CACHE_DIR=str(Path(os.environ.get("PIP_CACHE_DIR") or Path.home() / ".cache" / "pip")),
        NOMAD_ADDR=nomad_addr,
        TMPDIR=str(tmp_path),
        ANSIBLE_NOCOLOR="1",
    )
    return env


def test_the_readme_installs_wheel_and_tarball_into_a_fresh_venv_and_the_example_runs(tmp_path: Path) -> None:
    playbook_line = "ansible-playbook -i localhost, -c local examples/ansible/deploy.yml"
    assert BLOCK[-1] == playbook_line, BLOCK
    clone = copy_of_the_clone(tmp_path / "clone")
    script = ["set -euxo pipefail", *BLOCK[:-1], REMOVE_SOURCES, BLOCK[-1]]
    with NomadDouble() as nomad:
        nomad.default_scenario = scenarios.rollout()
        env = user_environment(tmp_path, nomad.address)
        run = subprocess.run(
            ["bash", "-c", "\n".join(script)], cwd=clone, env=env, capture_output=True, text=True, timeout=900
        )
        jobs = nomad.jobs
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Qwen2.5-7B-Instruct: http://" in run.stdout and "bge-m3: http://" in run.stdout, run.stdout
    assert '"Qwen2.5-7B-Instruct": 1' in run.stdout and '"bge-m3": 1' in run.stdout
    assert {job["ID"] for job in jobs.values()} == {"qwen2-5-7b-instruct", "bge-m3"}

    # What ran is what the README installed: the venv under HOME, the collection in Ansible's default path.
    home = tmp_path / "home"
    venv_python = home / ".venvs" / "ansible" / "bin" / "python3"
    where = subprocess.run(
        [venv_python, "-c", "import nomad_gpustack; print(nomad_gpustack.__file__, nomad_gpustack.__version__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert Path(where[0]).is_relative_to(home / ".venvs" / "ansible") and where[1] == nomad_gpustack.__version__
    installed = home / ".ansible" / "collections" / "ansible_collections" / "nomad_gpustack" / "nomad"
    assert (installed / "MANIFEST.json").is_file()
    # The installed collection's declared dependency is the package installed from the wheel (pip, no index).
    declared = subprocess.run(
        [venv_python, "-m", "pip", "install", "--no-index", "-r", installed / "requirements.txt"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert declared.returncode == 0, declared.stdout + declared.stderr
    assert "Requirement already satisfied: nomad-gpustack==" in declared.stdout, declared.stdout
