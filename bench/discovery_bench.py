"""How discovery keeps up with the fleet: `nomadgs gateway` following a real Consul with 1 to 1,000 models.

For each size, every instance is registered in the real Consul's catalog with a passing check (as the Nomad
client registers the compiled service), all pointing at one fast fake engine; then a fresh `nomadgs gateway`
starts and the bench measures:
  - listed after start: from the gateway's start until /v1/models lists every model;
  - RSS of the gateway, and the CPU it uses in 10 idle seconds;
  - p50 of a chat request to a random model through the gateway;
  - a change seen after: one model's instances all turn critical in Consul, then are deregistered; the time
    until the model is out of /v1/models (and no longer routed), and a new instance of another model is routed;
    figures as the max of these, and as a ratio against the 1 x 1 row of the same run.
The gateway follows Consul with blocking queries that wait up to 55 s: a change seen after seconds means the
watch queued behind others. Prints figures; asserts nothing.

    python bench/discovery_bench.py [--sizes 1x1,20x5,100x5,150x2,200x5,1000x5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from multiprocessing import Process
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gateway_bench import bound_socket, cpu_seconds, percentile, run_backend, wait_listening
from tests.support.components import ConsulAgent, find_consul, free_port

DEFAULT_SIZES = "1x1,20x5,100x5,150x2,200x5,1000x5"
NODES = 10  # the instances are spread over this many catalog nodes, as over Nomad clients
REGISTER_AT_ONCE = 32


def service(model: str, n: int, port: int, status: str = "passing") -> dict[str, object]:
    """A catalog registration like the one a Nomad client makes for the compiled service."""
    service_id = f"_nomad-task-bench-{model}-{n}"
    return {
        "Node": f"bench-node-{n % NODES}",
        "Address": "127.0.0.1",
        "Service": {
            "ID": service_id, "Service": model, "Address": "127.0.0.1", "Port": port,
            "Tags": ["nomadgs", "openai", f"model={model}", "backend=llama.cpp"],
            "Meta": {"gpustack_model": model, "gpustack_backend": "llama.cpp", "nomadgs_job": model},
        },
        "Check": {"CheckID": f"service:{service_id}", "Name": "health", "Status": status, "ServiceID": service_id},
    }  # fmt: skip


async def put_all(consul: str, path: str, bodies: list[dict[str, object]]) -> None:
    async with httpx.AsyncClient(base_url=consul, timeout=30) as client:
        gate = asyncio.Semaphore(REGISTER_AT_ONCE)

        async def one(body: dict[str, object]) -> None:
            async with gate:
                (await client.put(path, json=body)).raise_for_status()

        await asyncio.gather(*(one(b) for b in bodies))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def listed(client: httpx.Client) -> set[str]:
    return {m["id"] for m in client.get("/v1/models").json()["data"]}


def routed(client: httpx.Client, model: str) -> bool:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return client.post("/v1/chat/completions", json=body).status_code == 200


def until(condition: object, timeout: float = 120.0) -> float:
    """Seconds until `condition()` holds, polling every 10 ms."""
    start = time.perf_counter()
    while not condition():  # type: ignore[operator]
        if time.perf_counter() - start > timeout:
            return float("inf")
        time.sleep(0.01)
    return time.perf_counter() - start


def measure(consul: str, models: int, instances: int, engine_port: int) -> dict[str, float]:
    names = [f"bench-m{m}" for m in range(models)]
    regs = [service(name, n, engine_port) for name in names for n in range(instances)]
    asyncio.run(put_all(consul, "/v1/catalog/register", regs))
    port = free_port()
    env = {**os.environ, "CONSUL_HTTP_ADDR": consul}
    started = time.perf_counter()
    gateway = subprocess.Popen(
        [sys.executable, "-m", "nomad_gpustack", "gateway", "--listen", f"127.0.0.1:{port}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    figures: dict[str, float] = {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            wait_listening(port, timeout=60)
            until(lambda: set(names) <= listed(client))
            figures["listed"] = time.perf_counter() - started
            time.sleep(1)
            figures["rss"] = rss_mb(gateway.pid)
            cpu = cpu_seconds(gateway.pid)
            time.sleep(10)
            figures["idle_cpu"] = cpu_seconds(gateway.pid) - cpu
            latencies = []
            for _ in range(200):
                t = time.perf_counter()
                assert routed(client, random.choice(names))
                latencies.append(time.perf_counter() - t)
            figures["p50_ms"] = percentile(latencies, 50) * 1000
            # One model's instances turn critical; another's are deregistered; a third gains an instance (with
            # fewer than 3 models, the same one in turn).
            victim = names[-1]
            leaver, grower = (names[0], names[len(names) // 2]) if models >= 3 else (victim, victim)
            critical = [service(victim, n, engine_port, "critical") for n in range(instances)]
            asyncio.run(put_all(consul, "/v1/catalog/register", critical))
            figures["critical_out"] = until(lambda: not routed(client, victim))
            gone = [{"Node": f"bench-node-{n % NODES}", "ServiceID": f"_nomad-task-bench-{leaver}-{n}"}
                    for n in range(instances)]  # fmt: skip
            asyncio.run(put_all(consul, "/v1/catalog/deregister", gone))
            figures["removed_gone"] = until(lambda: leaver not in listed(client) and not routed(client, leaver))
            expected = instances + 1 if grower not in (victim, leaver) else 1
            asyncio.run(put_all(consul, "/v1/catalog/register", [service(grower, instances, engine_port)]))
            figures["added_seen"] = until(lambda: _instances(client, grower) == expected)
    finally:
        gateway.terminate()
        gateway.wait(timeout=10)
        leftover = [{"Node": f"bench-node-{n}"} for n in range(NODES)]
        asyncio.run(put_all(consul, "/v1/catalog/deregister", leftover))
    return figures


def _instances(client: httpx.Client, model: str) -> int:
    """How many passing instances the gateway routes `model` to (its /v1/models answer)."""
    for entry in client.get("/v1/models").json()["data"]:
        if entry["id"] == model:
            return int(entry.get("instances") or 0)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"models x instances, comma-separated ({DEFAULT_SIZES})")
    sizes = [tuple(int(x) for x in s.split("x")) for s in parser.parse_args().sizes.split(",")]
    engine_socket = bound_socket()
    engine_port = engine_socket.getsockname()[1]
    engine = Process(target=run_backend, args=(engine_socket,), daemon=True)
    engine.start()
    consul = ConsulAgent(find_consul()).start()
    rows = []
    try:
        for models, instances in sizes:
            figures = measure(consul.address, models, instances, engine_port)
            rows.append((models, instances, figures))
            print(f"measured {models} x {instances}", file=sys.stderr)
    finally:
        consul.stop()
        engine.terminate()

    def worst(f: dict[str, float]) -> float:
        return max(f["critical_out"], f["removed_gone"], f["added_seen"])

    base = worst(rows[0][2]) or 1e-9
    print(f"nomadgs gateway following a real Consul (blocking queries wait 55 s); engine: one fake on :{engine_port}")
    print("| models x instances | listed after start | RSS | idle CPU / 10 s | p50 over random models "
          "| critical out after | removed gone after | new instance seen after | change vs 1 x 1 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for models, instances, f in rows:
        print(
            f"| {models} x {instances} | {f['listed']:.2f} s | {f['rss']:.1f} MB | {f['idle_cpu']:.2f} s "
            f"| {f['p50_ms']:.2f} ms | {f['critical_out']:.2f} s | {f['removed_gone']:.2f} s "
            f"| {f['added_seen']:.2f} s | {worst(f) / base:.1f}x |"
        )


if __name__ == "__main__":
    socket.setdefaulttimeout(None)
    main()
