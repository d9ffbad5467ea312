"""The commands against what is not a working Nomad or Consul: another JSON API, a plain web server, a Nomad
that keeps failing. Each says so in one line, at once or within --timeout, with the exit code of a connection
problem (5; `plan` answers 255 for every error, as `nomad job plan`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..support.components import ROOT
from ..support.helpers import answering, nomadgs, static_files
from ..support.nomad_double import NomadDouble

VLLM_JOB = "qwen2-5-7b-instruct"
VLLM = ROOT / "examples" / "vllm-qwen2.5-7b-instruct.yaml"
OTHER_SHAPE = '{"unexpected":"shape"}'


def errors(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["status"], 5),
        (["status", "qwen"], 5),
        (["submit", VLLM, "--timeout", "60s"], 5),
        (["plan", VLLM], 255),
        (["logs", "qwen"], 5),
        (["stop", "qwen"], 5),
        (["endpoints", "--provider", "nomad"], 5),
    ],
)
def test_a_json_api_of_another_shape_is_not_nomad(args: list[str | Path], code: int) -> None:
    with answering(200, "application/json", OTHER_SHAPE) as address:
        run = nomadgs(*args, env={"NOMAD_ADDR": address})
    assert run.code == code, run.err
    (line,) = errors(run.err)
    assert line.startswith(f"error: {address} is not a Nomad HTTP API (the answer to /v1/"), line
    assert line.endswith("); check NOMAD_ADDR or --address"), line


@pytest.mark.parametrize(
    "args",
    [["endpoints"], ["endpoints", "qwen"], ["chat", "qwen", "-p", "hello"], ["gateway", "--listen", "127.0.0.1:0"]],
)
def test_a_json_api_of_another_shape_is_not_consul(args: list[str]) -> None:
    with answering(200, "application/json", OTHER_SHAPE) as address:
        run = nomadgs(*args, env={"CONSUL_HTTP_ADDR": address}, timeout=60)
    assert run.code == 5, run.err
    (line,) = errors(run.err)
    expected = f"error: {address} is not a Consul HTTP API ('unexpected' in the answer to /v1/catalog/services is not"
    assert line.startswith(expected), line
    assert line.endswith("; check CONSUL_HTTP_ADDR or --consul-address"), line


def test_a_plain_web_server_is_not_nomad_for_submit_as_for_status(tmp_path: Path) -> None:
    """`python3 -m http.server` answers 404 (an HTML page) to reads: not retried, and not taken for a missing job."""
    with static_files(tmp_path) as (address, received):
        status = nomadgs("status", env={"NOMAD_ADDR": address})
        submit = nomadgs("submit", VLLM, "--timeout", "60s", env={"NOMAD_ADDR": address})
    assert status.code == submit.code == 5, submit.err
    (line,) = errors(submit.err)
    assert line == (
        f"error: {address} is not a Nomad HTTP API (404 text/html on /v1/job/{VLLM_JOB}); check NOMAD_ADDR or --address"
    )
    assert received == ["GET /v1/jobs", f"GET /v1/job/{VLLM_JOB}"], "each asked once"


def test_a_nomad_that_stays_unavailable_is_exit_5_within_the_timeout() -> None:
    """A 500 that persists ends as exit 5 with what Nomad answered; the retries keep to --timeout."""
    with NomadDouble() as nomad:
        address = nomad.address
        nomad.faults.fail(rf"^/v1/job/{VLLM_JOB}$", status=500, body="No cluster leader", count=1000)
        run = nomadgs("submit", VLLM, "--timeout", "2s", env={"NOMAD_ADDR": address})
        asked = sum(1 for r in nomad.requests if r.path == f"/v1/job/{VLLM_JOB}")
    assert run.code == 5, run.err
    (line,) = errors(run.err)
    assert line.startswith(f"error: Nomad at {address} is unavailable: it answered 500: No cluster leader (tried")
    # Backoff of 0.25-0.5 s, doubling: within 2 s no more than 4 attempts fit (60 s of retries make 12).
    assert 2 <= asked <= 4, asked
