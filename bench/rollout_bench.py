"""Benchmark rollouts under traffic (end-to-end: the double's docker driver, real llama.cpp containers, the real
Consul, `nomadgs gateway`), the scenarios of tests/test_e2e_rollout.py in one run:

  canary     a changed engine flag, one canary, promoted when healthy
  rolling    another flag, one replica at a time
  bad        a flag the engine refuses: the canary crash-loops, Nomad reverts at the progress deadline
  revert     `nomadgs revert --to 1`

For each: requests served and failed through the gateway while it ran (2 clients, streamed and plain chat
requests back to back), the longest pause a client saw (the wait for a plain answer, or for a stream's next
chunk), and the time from the command's start to done (submit/revert exit; for `bad`, until the auto-revert's
deployment succeeded). Nomad's clock runs SCALE times faster (min_healthy_time, restart delays, the progress
deadline); containers, Consul and the traffic run in real time. Prints figures; asserts nothing.
Run: .venv/bin/python bench/rollout_bench.py
The Nomad side is the HTTP double in tests/ (no Nomad binary exists here).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.components import GGUF_NAME, gguf_path  # noqa: E402
from tests.support.containers import LLAMA_IMAGE, ConsulContainer, docker_client, require_images  # noqa: E402
from tests.support.helpers import http_json, nomadgs, running_gateway, wait_until  # noqa: E402
from tests.support.nomad_double import LocalClient, NomadDouble  # noqa: E402
from tests.support.traffic import Traffic, running_traffic  # noqa: E402
from tests.test_e2e_rollout import MODEL, SCALE, V0_ARGS, deployment  # noqa: E402


def current(nomad: NomadDouble, what: str) -> Any:
    status, found = http_json("GET", f"{nomad.address}/v1/job/{MODEL}{what}")
    assert status == 200, found
    return found


def settle(nomad: NomadDouble, traffic: Traffic) -> None:
    """The old replicas gone (2 live allocations) and a few requests served after."""

    def two_left() -> bool:
        live = [a for a in nomad.allocations.values() if a["JobID"] == MODEL and a["DesiredStatus"] == "run"]
        return len(live) == 2

    wait_until(two_left, 120, "the old allocations to stop")
    done = traffic.mark()
    wait_until(lambda: traffic.served_since(done) >= 4, 60, "requests after the rollout")


def main() -> None:
    engine = docker_client()
    require_images(engine, LLAMA_IMAGE)
    work = Path(tempfile.mkdtemp(prefix="rollout-bench-"))
    models = work / "models"
    models.mkdir()
    shutil.copyfile(gguf_path(), models / GGUF_NAME)
    consul = ConsulContainer().start()
    rows: list[tuple[str, int, int, float, float, int]] = []
    try:
        client = LocalClient(consul.address, work / "client", host_volumes={"models": models})
        with NomadDouble(client=client, time_scale=SCALE) as nomad:
            env = {"NOMAD_ADDR": nomad.address, "CONSUL_HTTP_ADDR": consul.address}

            def submit(name: str, text: str) -> int:
                path = work / name
                path.write_text(text)
                return nomadgs("submit", path, "--timeout", "5m", env=env, timeout=360).code

            if submit("v0.yaml", deployment(V0_ARGS, "canary")) != 0:
                raise SystemExit("the first deployment failed")
            with running_gateway(env, MODEL, log=work / "gateway.log") as url, running_traffic(url, MODEL) as traffic:
                steps: list[tuple[str, Any]] = [
                    ("canary", lambda: submit("v1.yaml", deployment([*V0_ARGS, "--ctx-size 1024"], "canary"))),
                    ("rolling", lambda: submit("v2.yaml", deployment([*V0_ARGS, "--ctx-size 1536"], "rolling"))),
                    ("bad", lambda: submit("v3.yaml", deployment([*V0_ARGS, "--no-such-flag"], "canary"))),
                    ("revert", lambda: nomadgs("revert", MODEL, "--to", "1", env=env, timeout=360).code),
                ]
                for name, step in steps:
                    wait_until(lambda: traffic.served_since(traffic.mark() - 5) >= 2, 60, "traffic")
                    mark = traffic.mark()
                    code = step()
                    if name == "bad":
                        wait_until(lambda: current(nomad, "")["Version"] == 4, 120, "the auto-revert")
                        wait_until(lambda: current(nomad, "/deployment")["Status"] == "successful", 120, "v4")
                    took = time.monotonic() - mark
                    settle(nomad, traffic)
                    window = traffic.since(mark)
                    rows.append((name, window.served, len(window.failures), window.longest_pause, took, code))
            nomadgs("stop", MODEL, "--purge", env=env)
    finally:
        consul.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"rollouts of 2 replicas under traffic (2 clients), Nomad time x{SCALE:g}")
    print(f"  {'scenario':<9} {'served':>7} {'failed':>7} {'longest pause':>14} {'submit → done':>14} {'exit':>5}")
    for name, served, failed, pause, took, code in rows:
        print(f"  {name:<9} {served:>7} {failed:>7} {pause:>12.2f} s {took:>12.1f} s {code:>5}")


if __name__ == "__main__":
    main()
