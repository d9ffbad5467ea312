"""Serving: the listen address, and `nomadgs gateway` as a command and as a process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from nomad_gpustack.cli import main
from nomad_gpustack.errors import InputError
from nomad_gpustack.serving.gateway import EJECT_FOR, STREAM_IDLE_TIMEOUT, UPSTREAM_TIMEOUT, Gateway, parse_listen

from ...support.components import ConsulAgent, free_port
from ..fakes import FakeBackend, answers, chat
from ..test_discovery import ConsulServices, unique, wait_until


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    assert parse_listen("0.0.0.0:0") == ("0.0.0.0", 0)
    for bad in ("8080", "host", "1.2.3.4:99999", "a b:1", ":80"):
        with pytest.raises(InputError):
            parse_listen(bad)


def test_gateway_command_input_and_connection_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["gateway", "--listen", "nowhere"]) == 2
    assert "is not HOST:PORT" in capsys.readouterr().err
    assert main(["gateway", "--api-keys-file", str(tmp_path / "missing")]) == 2
    assert "cannot read the API keys file" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["gateway", "--listen", f"127.0.0.1:{port}"]) == 1
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    code = main(["gateway", "--listen", f"127.0.0.1:{free_port()}", "--api-key", "sekrit-key",
                 "--consul-address", f"127.0.0.1:{free_port()}"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 5 and "cannot reach Consul" in captured.err
    assert "Traceback" not in captured.err and "sekrit-key" not in captured.err + captured.out


def test_gateway_command_serves_models_from_consul(consul: ConsulAgent, backends: Callable[..., FakeBackend]) -> None:
    """`nomadgs gateway` as a process: key from the environment, models from Consul, Ctrl-C stops it."""
    model = unique("served")
    fake = backends("F")
    registry = ConsulServices(consul)
    port = free_port()
    env = {**os.environ, "NOMADGS_GATEWAY_API_KEYS": "env-secret-1,env-secret-2", "NO_COLOR": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "nomad_gpustack", "gateway", "--listen", f"127.0.0.1:{port}",
         "--consul-address", consul.address],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        registry.register(model, fake.port, status="passing")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            wait_until(lambda: answers(client, "/healthz"), 15, "gateway listening")
            headers = {"Authorization": "Bearer env-secret-2"}
            wait_until(lambda: model in client.get("/v1/models", headers=headers).text, 5, "model listed")
            assert chat(client, model, **headers).json()["served_by"] == "F"
            assert chat(client, model).status_code == 401
    finally:
        registry.close()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert f"gateway: http://127.0.0.1:{port}/v1" in err and "2 API key(s) accepted" in err
    assert f"model {model}: 1 healthy instance(s) of 1" in err
    assert "env-secret" not in out + err and "Traceback" not in err


Served = tuple[list[Gateway], list[str]]


@pytest.fixture
def served_gateways(monkeypatch: pytest.MonkeyPatch) -> Served:
    """`nomadgs gateway` as the command builds its Gateway, without serving it: (the gateways built, the argv)."""
    served: list[Gateway] = []

    async def serve(gateway: Gateway, sock: socket.socket, **options: object) -> None:
        served.append(gateway)

    monkeypatch.setattr("nomad_gpustack.serving.gateway.serve", serve)
    return served, ["gateway", "--listen", "127.0.0.1:0", "--consul-address", f"127.0.0.1:{free_port()}"]


def test_gateway_command_timeouts(capsys: pytest.CaptureFixture[str], served_gateways: Served) -> None:
    served, argv = served_gateways
    assert main(argv) == 0
    assert main([*argv, "--upstream-timeout", "1h30m", "--stream-idle-timeout", "0", "--eject-for", "2m"]) == 0
    assert main([*argv, "--eject-for", "0"]) == 0
    defaults = (UPSTREAM_TIMEOUT, STREAM_IDLE_TIMEOUT, EJECT_FOR)  # the command's defaults are the gateway's
    assert [(g.upstream_timeout, g.stream_idle_timeout, g.outliers.eject_for) for g in served] == [
        defaults,
        (5400.0, None, 120.0),
        (UPSTREAM_TIMEOUT, STREAM_IDLE_TIMEOUT, 0.0),
    ]
    capsys.readouterr()
    assert main(["gateway", "--stream-idle-timeout", "soon"]) == 2
    assert "--stream-idle-timeout: 'soon' is not a duration" in capsys.readouterr().err
    assert main(["gateway", "--eject-for", "-1s"]) == 2
    assert "--eject-for: '-1s' is not a duration" in capsys.readouterr().err


def test_gateway_command_keeps_metrics_unless_told_not_to(served_gateways: Served) -> None:
    from nomad_gpustack.serving.gateway.metrics import NoMetrics

    served, argv = served_gateways
    assert main(argv) == 0
    assert main([*argv, "--no-metrics"]) == 0
    assert [isinstance(g.metrics, NoMetrics) for g in served] == [False, True]
    routes = [{getattr(r, "path", "") for r in g.asgi().routes} for g in served]
    assert "/metrics" in routes[0] and "/metrics" not in routes[1]
    assert "/metrics/targets" in routes[0] & routes[1]


def test_gateway_command_body_budget(capsys: pytest.CaptureFixture[str], served_gateways: Served) -> None:
    from nomad_gpustack.serving.gateway.app import MAX_BUFFERED

    served, argv = served_gateways
    assert main(argv) == 0
    assert main([*argv, "--max-buffered", "1GiB"]) == 0
    assert [g.budget.limit for g in served] == [MAX_BUFFERED, 1024**3]  # the command's default is the gateway's
    capsys.readouterr()
    assert main([*argv, "--max-buffered", "lots"]) == 2
    assert "--max-buffered" in capsys.readouterr().err
    assert main([*argv, "--max-buffered", "100KiB"]) == 2
    err = capsys.readouterr().err
    assert "--max-buffered" in err and "too small" in err and "at least 1MiB" in err
