"""`nomadgs gateway-job`: the gateway as a Nomad service job, in jobs/, without secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nomad_gpustack import __version__
from nomad_gpustack.cli import main
from nomad_gpustack.compile.gateway_job import GatewayJobOptions, gateway_job
from nomad_gpustack.contract.jobspec import validate_job
from nomad_gpustack.contract.metadata import GATEWAY_SERVICE, META_METRICS_PATH, TAG_METRICS

from ..support.components import ROOT


def test_jobs_folder_holds_the_gateway_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for fmt in ("json", "hcl"):
        assert main(["gateway-job", "--output", str(tmp_path), "--format", fmt]) == 0
        name = f"nomadgs-gateway.nomad.{fmt}"
        assert (ROOT / "jobs" / name).read_text() == (tmp_path / name).read_text(), (
            f"jobs/{name} is stale: run `nomadgs gateway-job --output jobs/ --format {fmt}`"
        )
    capsys.readouterr()
    assert main(["gateway-job"]) == 0
    assert capsys.readouterr().out == (ROOT / "jobs" / "nomadgs-gateway.nomad.json").read_text()


def test_the_gateway_job() -> None:
    job = gateway_job(GatewayJobOptions(replicas=3, datacenters=("dc1",)))
    assert validate_job(json.loads(json.dumps(job))) == job  # the strict models take it as it is
    assert job["Constraints"] == [{"Operand": "distinct_hosts", "RTarget": "true"}]
    (group,) = job["TaskGroups"]
    assert group["Count"] == 3 and job["Datacenters"] == ["dc1"]
    (service,) = group["Services"]
    assert service["Name"] == GATEWAY_SERVICE and service["Tags"] == [TAG_METRICS]
    assert service["Meta"] == {META_METRICS_PATH: "/metrics"}
    assert [(c["Type"], c["Path"]) for c in service["Checks"]] == [("http", "/health")]
    (task,) = group["Tasks"]
    assert task["Config"]["image"] == f"local/nomadgs:{__version__}"
    args = task["Config"]["args"]
    assert args[args.index("--workers") + 1] == "auto" and "--no-scale-to-zero" in args
    # The address Nomad gives the port, where its service is registered and checked; not every interface.
    assert args[args.index("--listen") + 1] == "${NOMAD_ADDR_http}"
    assert task["Env"]["CONSUL_HTTP_ADDR"] == "http://127.0.0.1:8500"  # the node's agent
    assert task["KillSignal"] == "SIGTERM" and task["KillTimeout"] > 30 * 10**9  # longer than the drain
    (template,) = task["Templates"]
    assert template["Envvars"] and template["DestPath"].startswith("secrets/")
    assert 'nomadVar "nomad/jobs/nomadgs-gateway"' in template["EmbeddedTmpl"]
    with_nomad = gateway_job(GatewayJobOptions(nomad_address="http://127.0.0.1:4646"))
    task = with_nomad["TaskGroups"][0]["Tasks"][0]
    assert task["Env"]["NOMAD_ADDR"] == "http://127.0.0.1:4646" and "--no-scale-to-zero" not in task["Config"]["args"]


def test_addresses_from_the_task(capsys: pytest.CaptureFixture[str]) -> None:
    """--consul-address and --nomad-address are what the task is told; the port, the static one asked for."""
    args = ["gateway-job", "--port", "18080", "--consul-address", "http://10.0.0.2:8500"]
    assert main([*args, "--nomad-address", "http://10.0.0.1:4646"]) == 0
    (group,) = json.loads(capsys.readouterr().out)["Job"]["TaskGroups"]
    (task,) = group["Tasks"]
    assert task["Env"] == {
        "CONSUL_HTTP_ADDR": "http://10.0.0.2:8500",
        "NOMAD_ADDR": "http://10.0.0.1:4646",
        "NO_COLOR": "1",
    }
    assert group["Networks"] == [{"ReservedPorts": [{"Label": "http", "Value": 18080}]}]


def test_no_secret_reaches_the_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys and tokens in the environment of whoever renders the job never enter it: the task reads them from
    a Nomad Variable."""
    monkeypatch.setenv("NOMADGS_GATEWAY_API_KEYS", "sk-secret-key-1,sk-secret-key-2")
    monkeypatch.setenv("NOMAD_TOKEN", "secret-nomad-token-0000")
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "secret-consul-token-1111")
    for fmt in ("json", "hcl"):
        assert main(["gateway-job", "--format", fmt, "--nomad-address", "http://10.0.0.1:4646"]) == 0
        text = capsys.readouterr().out
        assert "NOMADGS_GATEWAY_API_KEYS={{ . }}" in text.replace('\\"', '"') and "NOMAD_TOKEN={{ . }}" in text
        for secret in ("sk-secret-key", "secret-nomad-token", "secret-consul-token"):
            assert secret not in text
    for path in (ROOT / "jobs").glob("nomadgs-gateway.*"):
        assert "secret" not in path.read_text().replace("secrets/gateway.env", "")


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--consul-address", "ftp://10.0.0.2", "must be an http:// or https:// address"),
        ("--nomad-address", "garbage", "is neither a URL nor host:port"),
    ],
)
def test_an_address_the_task_could_not_use_is_refused(
    flag: str, value: str, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked as NOMAD_ADDR and CONSUL_HTTP_ADDR are, before anything is written: not found out by the task."""
    assert main(["gateway-job", flag, value, "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert words in err and flag in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_a_host_and_port_is_written_as_a_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gateway-job", "--consul-address", "10.0.0.2:8500"]) == 0
    (group,) = json.loads(capsys.readouterr().out)["Job"]["TaskGroups"]
    assert group["Tasks"][0]["Env"]["CONSUL_HTTP_ADDR"] == "http://10.0.0.2:8500"
