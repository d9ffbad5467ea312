"""End to end on real containers: the compiled docker jobs run for real.

Nomad itself is the double (no Nomad binary can be had here); in client mode its docker driver runs each task as a
container on the local Docker engine (images built by docker/build-local-images.sh, never pulled), with host
networking on 127.0.0.1, and registers the service and its HTTP check in a real Consul (a container). Everything
else is real: the compiled jobs, the `nomadgs` commands, llama-server from Debian's llama.cpp-tools, Consul's
checks, the model downloader (huggingface_hub) against a local stand-in of the Hugging Face Hub.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from .conftest import unavailable
from .support.components import GGUF_NAME, ROOT, ComponentUnavailable
from .support.containers import DOWNLOADER_IMAGE, LLAMA_IMAGE, require_images
from .support.helpers import Run, http_json, nomadgs, running_gateway, wait_until
from .support.hf_hub import HubStandIn
from .support.nomad_double import LocalClient, NomadDouble
from .support.nomad_double.docker_driver import LABEL_ALLOC_ID

if TYPE_CHECKING:
    from docker import DockerClient

pytestmark = pytest.mark.e2e

# The built-in backend (backends/llama.cpp.yaml, unchanged) renders `--host 0.0.0.0`; with host networking that
# would listen on every interface of this machine, eth0 included. llama-server takes the last --host it is
# given, so the test deployments add `--host 127.0.0.1` in backend_parameters. Nothing follows these models
# through a gateway while they stop, so a short shutdown_delay (default 30s) keeps each stop short.
LOOPBACK = "--host 127.0.0.1"
NOMAD_BLOCK = """\
nomad:
  cpu: 1000
  memory: {memory}
  check_interval: 1s
  check_timeout: 1s
  startup_timeout: 3m
  shutdown_delay: 1s
"""
SMOLLM2 = f"""\
name: smollm2
source: local_path
local_path: {GGUF_NAME}
backend: llama.cpp
backend_version: cpu
backend_parameters: ["{LOOPBACK}", "--threads 2"]
categories: [llm]
""" + NOMAD_BLOCK.format(memory="1 GiB")


@dataclass
class Cluster:
    """The Nomad double with its docker client, a real Consul, and the models host volume."""

    nomad: NomadDouble
    client: LocalClient
    engine: DockerClient
    consul: str
    models: Path
    files: Path

    @property
    def env(self) -> dict[str, str]:
        return {"NOMAD_ADDR": self.nomad.address, "CONSUL_HTTP_ADDR": self.consul}

    def write(self, name: str, text: str) -> Path:
        path = self.files / name
        path.write_text(text)
        return path

    def nomadgs(self, *args: str | Path, timeout: float = 120) -> Run:
        return nomadgs(*args, env=self.env, timeout=timeout)

    def submit(self, deployment: Path, *extra: str) -> tuple[Run, dict[str, Any]]:
        run = self.nomadgs("submit", deployment, *extra, "--timeout", "5m", "--output", "json", timeout=360)
        document = json.loads(run.out) if run.out.strip() else {}
        results = document.get("results") or [{}]
        return run, results[0]

    def containers(self, job_id: str) -> list[Any]:
        from docker.errors import NotFound

        allocs = [a["ID"] for a in self.nomad.allocations.values() if a["JobID"] == job_id]
        while True:
            try:
                return [
                    c
                    for alloc_id in allocs
                    for c in self.engine.containers.list(all=True, filters={"label": f"{LABEL_ALLOC_ID}={alloc_id}"})
                ]
            except NotFound:  # docker-py lists, then inspects each: one removed in between is listed again
                continue

    def consul_instances(self, service: str) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.consul}/v1/health/service/{service}", timeout=5) as response:
            found: list[dict[str, Any]] = json.loads(response.read())
        return found

    def task_logs(self, job_id: str) -> str:
        """Everything every task of the job wrote (stdout and stderr), through the double's logs API."""
        text = []
        for alloc in self.nomad.allocations.values():
            if alloc["JobID"] != job_id:
                continue
            for task in alloc["TaskStates"] or {}:
                for kind in ("stdout", "stderr"):
                    url = f"{self.nomad.address}/v1/client/fs/logs/{alloc['ID']}?task={task}&type={kind}&plain=true"
                    with urllib.request.urlopen(url, timeout=5) as response:
                        text.append(response.read().decode(errors="replace"))
        return "".join(text)

    def stop_and_purge(self, job_id: str) -> None:
        """`nomadgs stop --purge`: the containers are removed and the service leaves Consul."""
        run = self.nomadgs("stop", job_id, "--purge")
        assert run.code == 0, run.err
        wait_until(lambda: not self.containers(job_id), 60, f"the containers of {job_id} to be removed")
        wait_until(lambda: not self.consul_instances(job_id), 30, f"{job_id} to leave Consul")


@contextmanager
def docker_cluster(
    engine: DockerClient, consul: Any, gguf: str, root: Path, time_scale: float | None = None, nodes: int = 1
) -> Iterator[Cluster]:  # fmt: skip
    """The double in client mode on the local engine, the SmolLM2 GGUF in its `models` host volume, files under
    `root`; `time_scale` runs Nomad's clock faster (containers and Consul keep real time); `nodes` client nodes
    (all of them this machine, with the same host volume)."""
    try:
        require_images(engine, LLAMA_IMAGE, DOWNLOADER_IMAGE)
    except ComponentUnavailable as exc:
        unavailable(str(exc))
    models = root / "models"  # the client's `models` host volume
    models.mkdir()
    shutil.copyfile(gguf, models / GGUF_NAME)
    files = root / "files"
    files.mkdir()
    client = LocalClient(consul_address=consul.address, workdir=root / "client", host_volumes={"models": models})
    with NomadDouble(client=client, time_scale=time_scale, client_nodes=nodes) as nomad:
        yield Cluster(nomad, client, engine, consul.address, models, files)


@pytest.fixture
def cluster(engine: DockerClient, consul: Any, smollm2_gguf: str, tmp_path: Path) -> Iterator[Cluster]:
    with docker_cluster(engine, consul, smollm2_gguf, tmp_path) as running:
        yield running


def non_loopback_addresses() -> list[str]:
    """This machine's IPv4 addresses other than 127.0.0.0/8 (`ip -4 -o addr`)."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return [a for a in re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out) if not a.startswith("127.")]


# --- 1. the built-in llama.cpp backend, unchanged -------------------------------------------------------------------


def test_builtin_llama_cpp_backend_runs_in_a_container(cluster: Cluster) -> None:
    deployment = cluster.write("smollm2.yaml", SMOLLM2)

    # submit: registers, the double's docker driver starts the container, Consul's check on /v1/models passes.
    run, result = cluster.submit(deployment)
    assert run.code == 0, run.err
    assert result["status"] == "succeeded" and result["replicas"][0]["state"] == "running"
    (base_url,) = result["endpoints"]
    port = int(base_url.rsplit(":", 1)[1].split("/")[0])
    status, models = http_json("GET", f"{base_url}/models")
    assert status == 200 and models["data"][0]["id"] == "smollm2"

    (container,) = cluster.containers("smollm2")
    assert container.image.tags and LLAMA_IMAGE in container.image.tags
    assert container.attrs["HostConfig"]["NetworkMode"] == "host"
    # The deployment's parameters, then the switch nomadgs adds: the engine serves Prometheus metrics.
    assert container.attrs["Config"]["Cmd"][-5:] == ["--host", "127.0.0.1", "--threads", "2", "--metrics"]
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert metrics.status_code == 200 and "llamacpp:prompt_tokens_total" in metrics.text
    for address in non_loopback_addresses():  # bound to loopback only, not to eth0
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=2).close()

    # Consul: the service on the allocated port, its check passing.
    (instance,) = cluster.consul_instances("smollm2")
    assert (instance["Service"]["Address"], instance["Service"]["Port"]) == ("127.0.0.1", port)
    assert "nomadgs-metrics" in instance["Service"]["Tags"]  # Prometheus' Consul discovery finds its metrics
    assert instance["Service"]["Meta"]["metrics_path"] == "/metrics"
    checks = [c for c in instance["Checks"] if c["ServiceName"] == "smollm2"]
    assert [c["Status"] for c in checks] == ["passing"] and "/v1/models" in checks[0]["Output"]

    # endpoints, chat, the gateway: answers from the real llama-server.
    run = cluster.nomadgs("endpoints", "--output", "json")
    assert run.code == 0, run.err
    assert "smollm2" in run.out and f"127.0.0.1:{port}" in run.out and "passing" in run.out

    follower = subprocess.Popen(
        [sys.executable, "-m", "nomad_gpustack", "logs", "smollm2", "--stderr", "--follow", "--tail", "5"],
        env={**_clean_env(), **cluster.env},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    followed: list[str] = []
    reader = threading.Thread(target=lambda: followed.extend(follower.stdout or []), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("listening on" in line for line in followed), 30, "the follower's backlog")
        seen = len(followed)
        question = "What is the capital of France? Answer in one word."
        run = cluster.nomadgs("chat", "smollm2", "-p", question, "--max-tokens", "16")
        assert run.code == 0, run.err
        assert run.out.strip(), "the model answered nothing"
        wait_until(lambda: any("processing task" in line for line in followed[seen:]), 30, "the chat in the log")
    finally:
        follower.terminate()
        follower.wait(timeout=10)

    run = cluster.nomadgs("logs", "smollm2", "--stderr")
    assert run.code == 0, run.err
    assert f"listening on http://127.0.0.1:{port}" in run.out and "model loaded" in run.out

    with running_gateway(cluster.env, "smollm2") as gateway_url:
        body = {"model": "smollm2", "max_tokens": 16, "temperature": 0,
                "messages": [{"role": "user", "content": "Say hello."}]}  # fmt: skip
        status, answer = http_json("POST", f"{gateway_url}/chat/completions", body, timeout=120)
        assert status == 200 and answer["choices"][0]["message"]["content"].strip()

    cluster.stop_and_purge("smollm2")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_"))}


# --- 2. a GPUStack-style custom backend -----------------------------------------------------------------------------

CUSTOM_BACKEND = """\
# A backend written the GPUStack way: placeholders in the run command, parameter_format, default_env.
backend_name: llama-server-custom
health_check_path: /health
parameter_format: space
default_version: v1
default_env:
  LLAMA_ARG_CTX_SIZE: "1024"
  LLAMA_ARG_THREADS: "2"
version_configs:
  v1:
    image_name: local/llama.cpp:server
    custom_framework: cpu
default_run_command: "--model {{model_path}} --host 127.0.0.1 --port {{port}} --alias {{model_name}}"
"""


def test_custom_backend_with_placeholders_parameter_format_and_default_env(cluster: Cluster) -> None:
    backend = cluster.write("custom.yaml", CUSTOM_BACKEND)
    deployment = cluster.write(
        "custom-smol.yaml",
        f"""\
name: custom-smol
source: local_path
local_path: {GGUF_NAME}
backend: llama-server-custom
backend_parameters: ["--batch-size=256"]   # space format: becomes `--batch-size 256`
"""
        + NOMAD_BLOCK.format(memory="1 GiB"),
    )
    run, result = cluster.submit(deployment, "--backends", str(backend))
    assert run.code == 0, run.err
    (base_url,) = result["endpoints"]
    root = base_url.removesuffix("/v1")
    status, props = http_json("GET", f"{root}/props")
    assert status == 200 and props["default_generation_settings"]["n_ctx"] == 1024  # from default_env
    assert props["model_alias"] == "custom-smol"  # {{model_name}}
    (container,) = cluster.containers("custom-smol")
    command = container.attrs["Config"]["Cmd"]
    assert command[-2:] == ["--batch-size", "256"] and f"/models/{GGUF_NAME}" in command  # {{model_path}}
    assert "LLAMA_ARG_CTX_SIZE=1024" in container.attrs["Config"]["Env"]
    (instance,) = cluster.consul_instances("custom-smol")
    assert [c["Status"] for c in instance["Checks"] if c["ServiceName"] == "custom-smol"] == ["passing"]
    run = cluster.nomadgs("chat", "custom-smol", "-p", "Say hi.", "--max-tokens", "8")
    assert run.code == 0 and run.out.strip(), run.err
    cluster.stop_and_purge("custom-smol")


# --- 3-5. failures explained from real containers -------------------------------------------------------------------


def test_wrong_engine_flag_is_a_crash_loop_quoting_the_servers_stderr(cluster: Cluster) -> None:
    deployment = cluster.write(
        "bad-flag.yaml", SMOLLM2.replace("name: smollm2", "name: bad-flag").replace('"--threads 2"', '"--no-such-flag"')
    )
    run, result = cluster.submit(deployment)  # the compiled restart policy: 2 attempts, 30 s delay
    assert run.code == 1, run.err
    (failure,) = result["failures"]
    assert failure["kind"] == "crash-loop" and "exited with code 1 and was restarted 2 times" in failure["summary"]
    (log,) = result["logs"].values()
    assert "error: invalid argument: --no-such-flag" in log  # llama-server's own stderr line
    alloc = next(a for a in cluster.nomad.allocations.values() if a["JobID"] == "bad-flag")
    state = alloc["TaskStates"]["llama-cpp"]
    assert state["Restarts"] == 2
    assert {e["ExitCode"] for e in state["Events"] if e["Type"] == "Terminated"} == {1}
    assert [e["RestartReason"] for e in state["Events"] if e["Type"] == "Restarting"] == ["Restart within policy"] * 2
    assert re.search(r"replica 0\s+error", cluster.nomadgs("status", "bad-flag").out)
    cluster.stop_and_purge("bad-flag")


def test_memory_limit_too_small_is_a_real_oom_kill(cluster: Cluster) -> None:
    # `--load-mode none` reads the weights into the process instead of mapping the file (this llama.cpp's
    # replacement for --no-mmap), so they count against the container's memory limit (cgroup v1 here).
    yaml = SMOLLM2.replace("name: smollm2", "name: small-memory").replace('"--threads 2"', '"--load-mode none"')
    deployment = cluster.write("small-memory.yaml", yaml.replace("memory: 1 GiB", "memory: 48 MiB"))
    run, result = cluster.submit(deployment)
    assert run.code == 1, run.err
    failure = result["failures"][0]
    assert failure["kind"] == "oom"
    assert failure["summary"] == "llama-cpp ran out of memory and was killed (limit 48 MiB)"
    alloc = next(a for a in cluster.nomad.allocations.values() if a["JobID"] == "small-memory")
    killed = next(e for e in alloc["TaskStates"]["llama-cpp"]["Events"] if e["Type"] == "Terminated")
    assert (killed["ExitCode"], killed["Details"]["oom_killed"]) == (137, "true")
    cluster.stop_and_purge("small-memory")


def test_an_image_that_is_not_there_is_explained_as_an_image_pull_failure(cluster: Cluster) -> None:
    deployment = cluster.write(
        "no-image.yaml", SMOLLM2.replace("name: smollm2", "name: no-image\nimage_name: local/nomadgs-not-built:1")
    )
    run, result = cluster.submit(deployment)
    assert run.code == 1, run.err
    (failure,) = result["failures"]
    assert failure["kind"] == "image-pull"
    assert failure["summary"].startswith("the image could not be pulled: Failed to pull `local/nomadgs-not-built:1`")
    assert failure["hint"] == "check the image name and tag (backend version image_name)"
    assert not cluster.containers("no-image")
    cluster.stop_and_purge("no-image")


# --- 6. source: huggingface, the prestart download for real ---------------------------------------------------------

HF_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
HF_TOKEN = "hf_e2eStandInToken0123456789abcdef"


def test_huggingface_download_runs_once_with_the_token_from_a_nomad_variable(cluster: Cluster) -> None:
    files = {GGUF_NAME: cluster.models / GGUF_NAME, "README.md": b"# SmolLM2 135M Instruct GGUF\n"}
    weights = (cluster.models / GGUF_NAME).read_bytes()
    (cluster.models / GGUF_NAME).rename(cluster.files / GGUF_NAME)  # the volume starts without the model
    files[GGUF_NAME] = cluster.files / GGUF_NAME
    with HubStandIn({HF_REPO: files}, token=HF_TOKEN) as hub:
        deployment = cluster.write(
            "smollm2-hf.yaml",
            f"""\
name: smollm2-hf
source: huggingface
huggingface_repo_id: {HF_REPO}
huggingface_filename: {GGUF_NAME}
backend: llama.cpp
backend_parameters: ["{LOOPBACK}"]
env:
  HF_ENDPOINT: {hub.endpoint}
  HF_HUB_DISABLE_TELEMETRY: "1"
"""
            + NOMAD_BLOCK.format(memory="1 GiB")
            + f"""\
  token_variable: nomad/jobs/smollm2-hf
  downloader_image: {DOWNLOADER_IMAGE}
""",
        )
        variable = {"Items": {"HF_TOKEN": HF_TOKEN}}
        status, _ = http_json("PUT", f"{cluster.nomad.address}/v1/var/nomad/jobs/smollm2-hf", variable)
        assert status == 200

        run, result = cluster.submit(deployment)
        assert run.code == 0, run.err + run.out
        downloaded = cluster.models / "huggingface" / HF_REPO
        assert (downloaded / GGUF_NAME).read_bytes() == weights
        assert (downloaded / ".nomadgs-complete").exists()
        assert [r.authorized for r in hub.downloads(GGUF_NAME)] == [True]  # fetched once, with the token
        (base_url,) = result["endpoints"]
        assert http_json("GET", f"{base_url}/models")[1]["data"][0]["id"] == "smollm2-hf"
        first_logs = cluster.task_logs("smollm2-hf")
        assert f"downloading {HF_REPO} {GGUF_NAME} from huggingface" in first_logs
        assert "pip" not in first_logs  # the prepared image has `hf`: nothing installed, no other network

        # A second allocation finds the completion marker and skips the download.
        assert cluster.nomadgs("stop", "smollm2-hf").code == 0
        wait_until(lambda: not cluster.containers("smollm2-hf"), 60, "the first allocation's containers to go")
        run, result = cluster.submit(deployment)
        assert run.code == 0, run.err
        assert len(hub.downloads(GGUF_NAME)) == 1
        logs = cluster.task_logs("smollm2-hf")
        assert f"model already present in /models/huggingface/{HF_REPO}" in logs

        # The token: in the Nomad Variable and in the request to the hub, nowhere else.
        rendered = nomadgs("render", deployment, "--format", "json")
        outputs = [run.out, run.err, rendered.out, rendered.err, logs, first_logs]
        jobs = json.dumps(cluster.nomad.job_versions("smollm2-hf"))
        assert all(HF_TOKEN not in text for text in [*outputs, jobs])
        log_files = "".join(p.read_text(errors="replace") for p in cluster.client.workdir.glob("*/alloc/logs/*"))
        assert log_files and HF_TOKEN not in log_files
        cluster.stop_and_purge("smollm2-hf")
