"""Tokens per second of the built-in llama.cpp backend on 1 node versus a replica over 3 nodes (a leader and
two ggml-rpc-server workers), on real containers of the local image (docker/build-local-images.sh).

The commands are the compiled job's: the deployment is compiled with `nomad.nodes: 1` and `nomad.nodes: 3`,
and each task's args are filled in as a Nomad client would (`${NOMAD_IP_http}`, `${NOMAD_PORT_http}`, the
env file of the leader's template: the workers' host:port in rank order). Every container runs with the host
network on 127.0.0.1; on one machine the "nodes" share its CPUs, so the figure is the cost of the RPC hops,
not a speed-up. Also prints the leader's log lines that show the layers on the RPC devices, and whether the
answer at temperature 0 with a fixed seed is the single node's.

Prints figures; asserts nothing. Run: .venv/bin/python bench/distributed_bench.py [--runs 3] [--tokens 64]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nomad_gpustack.compile.build import build  # noqa: E402
from nomad_gpustack.compile.distributed import NODE_RANK_ENV, WORKER_ADDRESSES_ENV  # noqa: E402
from tests.support.components import GGUF_NAME, free_port, gguf_path, wait_http  # noqa: E402
from tests.support.helpers import catalog_with, deployment  # noqa: E402

IMAGE = "local/llama.cpp:server"
PROMPT = "Name three primary colours, one word each."
RPC_LINE = re.compile(r"using device RPC|RPC\d+\[.*buffer size|offloaded")


def compiled_tasks(nodes: int, mount: str) -> list[dict[str, Any]]:
    """The engine task of each group of the compiled job (leader first), for `nodes` nodes."""
    data = {
        "name": "smollm2",
        "local_path": GGUF_NAME,
        "backend": "llama.cpp",
        "backend_version": "cpu",
        "backend_parameters": ["--ctx-size 1024", "--threads 1", "-lv 4"],  # -lv 4: the loader's lines
        "nomad": {"nodes": nodes, "memory": "1 GiB", "models_mount": mount},
    }
    job = build(deployment(data), catalog_with()).job
    return [group["Tasks"][-1] for group in job["TaskGroups"]]


def fill(args: list[str], env: dict[str, str]) -> list[str]:
    """`${NAME}` replaced as the Nomad client interpolates a task's driver config."""
    return [re.sub(r"\$\{([A-Za-z0-9_]+)\}", lambda m: env[m.group(1)], arg) for arg in args]


def run(name: str, task: dict[str, Any], env: dict[str, str], models: Path, mount: str) -> str:
    config = task["Config"]
    command = ["docker", "run", "-d", "--rm", "--name", name, "--network", "host", "-v", f"{models}:{mount}:ro"]
    if "entrypoint" in config:
        command += ["--entrypoint", config["entrypoint"][0]]
    command += [config["image"] if config["image"] != "ghcr.io/ggml-org/llama.cpp:server" else IMAGE]
    command += [*config.get("entrypoint", [])[1:], *fill(config["args"], env)]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def chat(port: int, tokens: int) -> tuple[str, float]:
    body = {
        "messages": [{"role": "user", "content": PROMPT}],
        "temperature": 0,
        "seed": 42,
        "max_tokens": tokens,
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        answer = json.load(response)
    timings = answer.get("timings", {})
    return answer["choices"][0]["message"]["content"], float(timings.get("predicted_per_second", 0.0))


def replica(nodes: int, models: Path, mount: str, runs: int, tokens: int) -> tuple[str, list[float], list[str]]:
    """Start one replica of `nodes` nodes, chat `runs` times; the answer, tokens/s and the leader's RPC lines."""
    tasks = compiled_tasks(nodes, mount)
    started: list[str] = []
    try:
        addresses = []
        for rank, task in enumerate(tasks[1:], start=1):
            port = free_port()
            env = {"NOMAD_IP_http": "127.0.0.1", "NOMAD_PORT_http": str(port), NODE_RANK_ENV: str(rank)}
            started.append(run(f"nomadgs-bench-rank{rank}-{port}", task, env, models, mount))
            addresses.append(f"127.0.0.1:{port}")
        for address in addresses:  # the leader's template waits for the workers' TCP checks to pass
            wait_tcp(address)
        port = free_port()
        env = {"NOMAD_IP_http": "127.0.0.1", "NOMAD_PORT_http": str(port), WORKER_ADDRESSES_ENV: ",".join(addresses)}
        leader = run(f"nomadgs-bench-leader-{port}", tasks[0], env, models, mount)
        started.append(leader)
        wait_http(f"http://127.0.0.1:{port}/health", 120)
        answers = [chat(port, tokens) for _ in range(runs)]
        logs = subprocess.run(["docker", "logs", leader], capture_output=True, text=True)
        log = logs.stdout + logs.stderr
        rpc_lines = [line.strip() for line in log.splitlines() if RPC_LINE.search(line)]
        return answers[0][0], [speed for _, speed in answers], rpc_lines
    finally:
        for container in started:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True)


def wait_tcp(address: str, timeout: float = 30) -> None:
    import socket

    host, port = address.rsplit(":", 1)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(address)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    options = parser.parse_args()
    mount = "/models"
    with tempfile.TemporaryDirectory() as folder:
        models = Path(folder)
        shutil.copyfile(gguf_path(), models / GGUF_NAME)
        one, one_speed, _ = replica(1, models, mount, options.runs, options.tokens)
        three, three_speed, rpc_lines = replica(3, models, mount, options.runs, options.tokens)
    print(f"model {GGUF_NAME}, {options.tokens} tokens, temperature 0, seed 42, {options.runs} runs each")
    print(f"1 node:           {statistics.median(one_speed):7.1f} tokens/s (median; runs {one_speed})")
    print(f"3 nodes (2 RPC):  {statistics.median(three_speed):7.1f} tokens/s (median; runs {three_speed})")
    print(f"ratio 3 nodes / 1 node: {statistics.median(three_speed) / statistics.median(one_speed):.2f}")
    print(f"same answer as one node: {one == three}")
    print(f"answer: {three!r}")
    print("leader's RPC lines:")
    for line in rpc_lines[:12]:
        print("  " + line)


if __name__ == "__main__":
    main()
