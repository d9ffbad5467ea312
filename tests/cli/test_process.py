"""The `nomadgs` process: what starting it imports, the console script, Ctrl-C and a reader that leaves early."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ..support.components import ROOT

EXAMPLE = ROOT / "examples" / "vllm-qwen2.5-7b-instruct.yaml"
CLI = "nomad_gpustack.cli"
HEAVY = ("httpx", "uvicorn", "nomad", "requests", "starlette", "consul", "nomad_gpustack.serving.gateway")


def modules_after(argv: list[str]) -> dict[str, object]:
    """Run `main(argv)` in a fresh interpreter; the exit code and the modules it imported."""
    script = textwrap.dedent(f"""
        import contextlib, io, json, sys
        from nomad_gpustack.cli import main
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = main({argv!r})
        print(json.dumps({{"code": code, "modules": sorted(sys.modules)}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_render_imports_no_client_server_or_gateway() -> None:
    for argv in (["render", str(EXAMPLE)], ["render", str(EXAMPLE), "--format", "hcl"], ["validate", str(EXAMPLE)]):
        run = modules_after(argv)
        modules = run["modules"]
        assert isinstance(modules, list) and run["code"] == 0
        assert "click" in modules and "nomad_gpustack.cli.render_cmds" in modules
        assert not [m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY], argv
        # Only the module of the command that runs is loaded.
        assert "nomad_gpustack.cli.cluster_cmds" not in modules and "nomad_gpustack.cli.endpoint_cmds" not in modules


@pytest.mark.parametrize("module", ["render_cmds", "backend_cmds", "cluster_cmds", "endpoint_cmds", "estimate_cmds"])
def test_command_modules_import_only_click_errors_and_the_cli_helpers(module: str) -> None:
    """What `nomadgs X --help` and completion load: `errors` too, which the root group loads anyway."""
    script = f"import sys, nomad_gpustack.cli.{module}; print('\\n'.join(sys.modules))"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    ours = [m for m in proc.stdout.split() if m.startswith("nomad_gpustack")]
    assert [m for m in ours if m not in ("nomad_gpustack", "nomad_gpustack.errors") and not m.startswith(CLI)] == []
    assert "click" in proc.stdout.split() and not [m for m in proc.stdout.split() if m.split(".")[0] in HEAVY]


def test_version_loads_neither_click_nor_a_command_module() -> None:
    modules = modules_after(["--version"])["modules"]
    assert isinstance(modules, list)
    assert "click" not in modules and not [m for m in modules if m.startswith("nomad_gpustack.cli.")]


def test_console_script_and_module_entry_points() -> None:
    script = Path(sys.executable).with_name("nomadgs")
    if not script.exists():
        pytest.skip(f"the console script is not installed next to {sys.executable}")
    for argv in ([str(script)], [sys.executable, "-m", "nomad_gpustack"]):
        run = subprocess.run([*argv, "render", str(EXAMPLE)], capture_output=True, text=True, cwd=ROOT)
        assert run.returncode == 0 and json.loads(run.stdout)["Job"]["ID"] == "qwen2-5-7b-instruct", run.stderr
        run = subprocess.run([*argv, "render", "--bogus"], capture_output=True, text=True, cwd=ROOT)
        assert run.returncode == 2 and "error: No such option" in run.stderr and "--bogus" in run.stderr


def test_ctrl_c_exits_130_without_a_traceback() -> None:
    with socket.socket() as silent:  # accepts the connection and never answers: the command waits
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(60)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "nomad_gpustack", "endpoints", "--consul-address", address],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_"))},
        )
        try:
            connection, _ = silent.accept()
            with connection:
                proc.send_signal(signal.SIGINT)
                _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().endswith("error: interrupted") and "Traceback" not in err


def test_a_reader_that_leaves_early_is_not_an_error() -> None:
    read, write = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nomad_gpustack", "render", str(EXAMPLE)],
        stdout=write,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    os.close(write)
    os.close(read)  # like `| head -0`: gone before the first byte is written
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and err == b""
