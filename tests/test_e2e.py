"""End to end on real software: a real Consul agent, a real llama.cpp server, the real `nomadgs` commands.

Nomad itself is the double (no Nomad binary can be had here); in client mode it runs the job's raw_exec
task as a local process and registers its service and HTTP check in the real Consul, as a Nomad client
does. Everything else is real: the compiled job, `nomadgs submit`, Consul's health checks, the llama.cpp
server answering, `nomadgs endpoints`, `nomadgs chat`, and the gateway.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support.components import LLAMA_LAUNCHER, ConsulAgent
from .support.helpers import http_json, nomadgs, running_gateway, wait_until
from .support.nomad_double import LocalClient, NomadDouble

pytestmark = pytest.mark.e2e

BACKEND = """\
# llama.cpp's server as a local process (xllamacpp), for nodes without Docker: the raw_exec driver.
backend_name: llama.cpp-local-custom
health_check_path: /v1/models
default_run_command: "{{LAUNCHER}} --model {{model_path}} --host {{worker_ip}} --port {{port}} --alias {{model_name}}"
version_configs:
  cpu:
    custom_framework: cpu
nomad:
  driver: raw_exec
  command: %s
"""

DEPLOYMENT = """\
name: smollm2
source: local_path
local_path: %s
backend: llama.cpp-local-custom
categories: [llm]
env:
  LAUNCHER: %s
nomad:
  cpu: 1000
  memory: 1 GiB
  check_interval: 1s
  check_timeout: 1s
  startup_timeout: 2m
"""


@pytest.fixture
def cluster(consul: ConsulAgent, xllamacpp_model: str, tmp_path: Path) -> Iterator[tuple[NomadDouble, LocalClient]]:
    client = LocalClient(consul_address=consul.address, workdir=tmp_path / "client")
    with NomadDouble(client=client) as nomad:
        yield nomad, client


def test_submit_discover_chat_and_lose_an_instance(
    cluster: tuple[NomadDouble, LocalClient], consul: ConsulAgent, xllamacpp_model: str, tmp_path: Path
) -> None:
    nomad, client = cluster
    backend = tmp_path / "llama-local.yaml"
    backend.write_text(BACKEND % sys.executable)
    deployment = tmp_path / "smollm2.yaml"
    deployment.write_text(DEPLOYMENT % (xllamacpp_model, LLAMA_LAUNCHER))
    env = {"NOMAD_ADDR": nomad.address, "CONSUL_HTTP_ADDR": consul.address}

    # 1. submit: the real command compiles, registers, and waits for the real health check through Consul.
    run = nomadgs(
        "submit", deployment, "--backends", backend, "--timeout", "3m", "--output", "json", env=env, timeout=240
    )
    assert run.code == 0, run.err
    (result,) = json.loads(run.out)["results"]
    assert result["status"] == "succeeded" and result["replicas"][0]["state"] == "running"
    (base_url,) = result["endpoints"]
    status, models = http_json("GET", f"{base_url}/models")
    assert status == 200 and models["data"][0]["id"] == "smollm2"

    # 2. endpoints: found through Consul, with the model name from the service metadata.
    run = nomadgs("endpoints", "--output", "json", env=env)
    assert run.code == 0, run.err
    listed = json.loads(run.out)
    text = json.dumps(listed)
    assert "smollm2" in text and base_url.rsplit("/v1", 1)[0] in text and "passing" in text

    # 3. chat, one-shot: a real answer from the real model.
    run = nomadgs(
        "chat",
        "smollm2",
        "-p",
        "What is the capital of France? Answer in one word.",
        "--max-tokens",
        "16",
        env=env,
        timeout=120,
    )
    assert run.code == 0, run.err
    assert run.out.strip(), "the model answered nothing"

    # 4. the gateway: one OpenAI address, routing by model.
    with running_gateway(env, "smollm2") as gateway_url:
        status, answer = http_json(
            "POST",
            f"{gateway_url}/chat/completions",
            {
                "model": "smollm2",
                "max_tokens": 16,
                "temperature": 0,
                "messages": [{"role": "user", "content": "Say hello."}],
            },
        )
        assert status == 200 and answer["choices"][0]["message"]["content"].strip()

        # 5. kill the server: Consul's check turns critical, the gateway stops routing to it.
        (alloc_id,) = [a["ID"] for a in nomad.allocations.values() if a["JobID"] == "smollm2"]
        process = next(p for (alloc, _task), p in client.processes.items() if alloc == alloc_id)
        os.killpg(process.pid, signal.SIGKILL)
        killed = time.monotonic()

        def critical() -> bool:
            with urllib.request.urlopen(f"{consul.address}/v1/health/checks/smollm2", timeout=5) as response:
                return any(c["Status"] == "critical" for c in json.loads(response.read()))

        wait_until(critical, 30, "Consul to mark the instance critical")
        wait_until(
            lambda: not any(m["id"] == "smollm2" for m in http_json("GET", f"{gateway_url}/models")[1]["data"]),
            30,
            "the gateway to drop smollm2",
        )
        print(f"instance left the gateway {time.monotonic() - killed:.1f}s after the kill")
        status, error = http_json(
            "POST",
            f"{gateway_url}/chat/completions",
            {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert status == 503 and error["error"]["message"]
        run = nomadgs("endpoints", "smollm2", "--output", "json", env=env)
        assert "critical" in run.out
