"""What the modules say before any work: an option they do not have, and a Python without nomad-gpustack.

ansible-lint does not check the options of `model` (it has an action plugin of the same name), so the module
itself must refuse a misspelt one, with Ansible's usual message, in a real playbook run.
"""

from __future__ import annotations

import venv
from pathlib import Path

from ..conftest import run_playbook
from .test_model import deployment_file, playbook

UNSUPPORTED = "Unsupported parameters for (nomad_gpustack.nomad.{module}) module: {option}."


def test_an_unknown_option_is_refused_with_ansibles_message(tmp_path: Path) -> None:
    small = deployment_file(tmp_path)
    book = playbook(
        tmp_path,
        f"""
    - name: misspelt
      nomad_gpustack.nomad.model: {{deployment: {small}, wait_timout: 60s}}
      ignore_errors: true
    - name: the action plugin's own option
      nomad_gpustack.nomad.model:
        definition: {{name: small}}
        _definition_origin: {{file: elsewhere.yml, marks: []}}
      ignore_errors: true
    - name: info misspelt
      nomad_gpustack.nomad.model_info: {{nmae: small}}
      ignore_errors: true
""",
    )
    play = run_playbook(book, record=True)  # no Nomad: nothing may be sent
    assert play.code == 0, play.text
    r = play.results()
    misspelt = r["misspelt"]["msg"]
    assert misspelt.startswith(UNSUPPORTED.format(module="model", option="wait_timout")), misspelt
    assert "Supported parameters include: " in misspelt and "wait_timeout" in misspelt
    origin = r["the action plugin's own option"]
    assert origin["failed"] is True
    assert origin["msg"].startswith(UNSUPPORTED.format(module="model", option="_definition_origin")), origin
    info = r["info misspelt"]["msg"]
    assert info.startswith(UNSUPPORTED.format(module="model_info", option="nmae")), info
    assert "Supported parameters include: " in info and "name" in info


def test_without_the_package_the_module_says_how_to_install_it(tmp_path: Path) -> None:
    venv.create(tmp_path / "bare", with_pip=False)  # a Python of its own, without nomad_gpustack
    python = tmp_path / "bare" / "bin" / "python"
    book = playbook(tmp_path, "    - name: info\n      nomad_gpustack.nomad.model_info:\n")
    play = run_playbook(book, interpreter=python, record=True)
    assert play.code == 2, play.text
    msg = play.results()["info"]["msg"]
    assert msg.startswith("Failed to import the required Python library (nomad-gpustack) on "), msg
    assert f"'s Python {python}." in msg  # the host's name, then that Python
    # The package is on no index: the way to install it is from a clone, into that very Python.
    assert "pip install nomad-gpustack" not in msg
    assert (
        f"nomad-gpustack is on no package index: install it from a clone of its repository with `{python} -m pip "
        "install PATH`, PATH being the clone or a wheel built in it (`python3 -m pip wheel --no-deps -w dist .`)"
    ) in msg
    assert 'ansible_python_interpreter: "{{ ansible_playbook_python }}"' in msg
