"""Benchmark a fleet against the Nomad double: `submit` of many deployments at once against one, and `status`
of many models against 10, as ratios to the baseline measured in the same run.

Prints figures; asserts nothing. Run: .venv/bin/python bench/fleet_bench.py [--fleet 120] [--status 10,100,1000]
[--load 0.5,10]. The double is the HTTP double of Nomad's API in tests/ (no Nomad binary exists here), with its
scenario time scale; times are loopback times. Requests and peak open connections are counted at the double.

`--load` is how long each model server takes to turn healthy once started (real seconds): a rollout of one takes
about that plus 1.6 s. A fleet's checks and registrations cost the same whatever it is, so the ratio of 120 to 1
falls as rollouts grow toward a real model's minutes; the bench shows it for each length given.

By default the double runs in a process of its own, as Nomad is a server of its own: in one process with nomadgs,
the double's work (its scheduler, one thread per allocation's scenario, its JSON) shares nomadgs's GIL, and on 2
cores the figures measure the double more than nomadgs. `--in-process` measures that way too, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nomad_gpustack.compile.build import Compiled, build  # noqa: E402
from nomad_gpustack.nomad import fleet  # noqa: E402
from nomad_gpustack.nomad.client import NomadAPI  # noqa: E402
from nomad_gpustack.nomad.rollout import Assessment  # noqa: E402
from nomad_gpustack.nomad.status import MANAGED_FILTER, all_model_statuses  # noqa: E402
from nomad_gpustack.settings import NomadSettings  # noqa: E402
from nomad_gpustack.spec.loader import load_catalog, load_deployment  # noqa: E402
from tests.support.nomad_double import NomadDouble, scenarios  # noqa: E402

TIME_SCALE = 30.0
EXAMPLE = ROOT / "examples" / "llamacpp-qwen2.5-0.5b-cpu.yaml"


def _serve_double(conn: Connection, time_scale: float | None, scenario: str, load: float) -> None:
    """The double in a process of its own: answers the bench's questions about it over `conn`."""
    with NomadDouble(time_scale=time_scale) as nomad:
        nomad.default_scenario = SCENARIOS[scenario](load)
        conn.send(nomad.address)
        while True:
            name, args = conn.recv()
            if name == "stop":
                return
            conn.send(COMMANDS[name](nomad, *args))


SCENARIOS: dict[str, Callable[[float], Any]] = {
    "rollout": lambda load: scenarios.rollout(step=0.2, healthy_after=load),
    "manual": lambda load: scenarios.manual(),
}
COMMANDS: dict[str, Callable[..., Any]] = {
    "requests": lambda nomad: len(nomad.requests),
    "peak": lambda nomad: nomad.peak_connections,
    "reset_peak": lambda nomad: nomad.reset_peak_connections(),
    "wait_placed": lambda nomad, count: nomad.wait_for(
        lambda n: len(n.allocations) == count and len(n.deployments) == count, timeout=900
    ),
}


class Double:
    """The double, in this process or in one of its own, asked the same questions either way."""

    def __init__(self, scenario: str, *, own_process: bool, time_scale: float | None = None, load: float = 0.5) -> None:
        self.scenario, self.own_process, self.time_scale, self.load = scenario, own_process, time_scale, load

    def __enter__(self) -> Double:
        if self.own_process:
            context = multiprocessing.get_context("spawn")  # no fork of a process with threads
            self._conn, child = context.Pipe()
            args = (child, self.time_scale, self.scenario, self.load)
            self._process = context.Process(target=_serve_double, args=args)
            self._process.start()
            self.address: str = self._conn.recv()
        else:
            self._nomad = NomadDouble(time_scale=self.time_scale).__enter__()
            self._nomad.default_scenario = SCENARIOS[self.scenario](self.load)
            self.address = self._nomad.address
        return self

    def __exit__(self, *exc: object) -> None:
        if self.own_process:
            self._conn.send(("stop", ()))
            self._process.join(60)
        else:
            self._nomad.__exit__(None, None, None)

    def cpu(self) -> float:
        """The CPU seconds the double's process has used (user and system; 0 when it shares this process)."""
        if not self.own_process:
            return 0.0
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: proc(5)

    def ask(self, name: str, *args: Any) -> Any:
        if not self.own_process:
            return COMMANDS[name](self._nomad, *args)
        self._conn.send((name, args))
        return self._conn.recv()


class Quiet:
    def update(self, assessment: Assessment, elapsed: float) -> None:
        return None

    def note(self, message: str) -> None:
        return None

    def info(self, message: str) -> None:
        return None

    def warning(self, message: str) -> None:
        return None


def fleet_of(base: Compiled, count: int) -> list[Compiled]:
    """`count` copies of the example under the names m0, m1 ... (one replica each)."""
    out = []
    for i in range(count):
        job = {**base.job, "ID": f"m{i}", "Name": f"m{i}"}
        job["TaskGroups"] = [{**job["TaskGroups"][0], "Count": 1}]
        out.append(Compiled(job, f"m{i}", f"m{i}.yaml", base.source, base.resolved))  # type: ignore[arg-type]
    return out


def submit_fleet(base: Compiled, count: int, own_process: bool, load: float) -> tuple[float, int, int, set[str]]:
    """Submit `count` deployments at once, each model turning healthy `load` s after it starts: (seconds,
    requests, peak open connections, outcomes)."""
    # Nomad's time 30 times faster than the wall clock (a 10m progress deadline in 20 s): at the default scale
    # (300) the double's own scenarios, 120 at once in one Python process, fall behind its clock and miss it.
    with Double("rollout", own_process=own_process, time_scale=TIME_SCALE, load=load) as nomad:
        api = NomadAPI(NomadSettings(address=nomad.address))
        members = [fleet.Member(api, compiled) for compiled in fleet_of(base, count)]
        nomad.ask("reset_peak")
        before = nomad.ask("requests")
        started = time.monotonic()
        fleet.check_all(members, force=False, notes=Quiet())
        asyncio.run(fleet.run(members, notes=Quiet(), reporter_for=lambda m: Quiet(), note=print, timeout=600))
        wall = time.monotonic() - started
        for m in members:
            if m.code:
                print(f"    {m.compiled.job_id}: {m.status}: {m.result.assessment.headline if m.result else m.error}")
        return wall, nomad.ask("requests") - before, nomad.ask("peak"), {m.status for m in members}


def status_of(base: Compiled, count: int, own_process: bool, rounds: int = 3) -> tuple[float, int, int, Cpu, float]:
    """`status` of `count` models, placed and left as they are: (median seconds, requests, peak open
    connections, the CPU seconds of nomadgs's process and of the double's in that round, and the median seconds
    of fetching the same three answers without parsing them: the double's share). Their tasks do not
    start (the manual scenario), and Nomad's clock runs at wall speed, so no deadline passes while `status`
    reads (at the scenarios' speed the deployments failed on their progress deadline during the rounds): a
    quiet double, the same state at each round."""
    with Double("manual", own_process=own_process, time_scale=1.0) as nomad:
        api = NomadAPI(NomadSettings(address=nomad.address))
        for compiled in fleet_of(base, count):
            api.register(compiled.job, modify_index=0)
        nomad.ask("wait_placed", count)
        runs: list[tuple[float, Cpu]] = []
        requests = 0
        nomad.ask("reset_peak")
        for _ in range(rounds):
            before = nomad.ask("requests")
            cpu_before = (_own_cpu(), nomad.cpu())
            started = time.monotonic()
            found = asyncio.run(all_model_statuses(api))
            wall = time.monotonic() - started
            runs.append((wall, (_own_cpu() - cpu_before[0], nomad.cpu() - cpu_before[1])))
            requests = nomad.ask("requests") - before
            assert len(found) == count
        wall, cpu = sorted(runs)[len(runs) // 2]
        peak = nomad.ask("peak")
        return wall, requests, peak, cpu, sorted(_bare_fetch(nomad.address) for _ in range(rounds))[rounds // 2]


# The answers `status` reads (nomad/status.py all_model_statuses), for a client that only fetches them.
STATUS_READS = (
    ("/v1/jobs", {"meta": "true", "filter": MANAGED_FILTER}),
    ("/v1/allocations", {"resources": "true", "filter": f"Job.{MANAGED_FILTER}"}),
    ("/v1/deployments", {}),
)


def _bare_fetch(address: str) -> float:
    """Seconds to fetch the answers `status` reads with a bare HTTP client, none parsed: what the double's
    building and encoding them costs, the floor under any client's time."""
    with httpx.Client(base_url=address) as http:
        started = time.monotonic()
        for path, params in STATUS_READS:
            http.get(path, params=params).raise_for_status()
        return time.monotonic() - started


Cpu = tuple[float, float]


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fleet", type=int, default=120)
    parser.add_argument("--status", default="10,100,1000")
    parser.add_argument("--load", default="0.5,10", help="seconds a model takes to turn healthy, one bench each")
    parser.add_argument(
        "--in-process", action="store_true", help="also run the double in this process, beside nomadgs (shared GIL)"
    )
    args = parser.parse_args()
    base = build(load_deployment(EXAMPLE), load_catalog(()), check=False)

    for own_process in (True, False) if args.in_process else (True,):
        where = "in a process of its own" if own_process else "in nomadgs's process (one GIL for both)"
        print(f"== the Nomad double {where}")
        for load in [float(s) for s in args.load.split(",")] if args.fleet else []:
            submit_bench(base, args.fleet, own_process, load)
        if args.status:
            status_bench(base, [int(s) for s in args.status.split(",")], own_process)


def submit_bench(base: Compiled, count: int, own_process: bool, load: float, rounds: int = 3) -> None:
    print(
        f"submit: {count} deployments at once vs 1 (each rollout: placed, started, healthy {load:g} s after it "
        f"started; median of {rounds})"
    )
    runs = {size: [submit_fleet(base, size, own_process, load) for _ in range(rounds)] for size in (1, count)}
    median = {size: sorted(found, key=lambda run: run[0])[rounds // 2] for size, found in runs.items()}
    for size, (wall, requests, peak, outcomes) in median.items():
        walls = ", ".join(f"{run[0]:.2f}" for run in runs[size])
        print(
            f"  {size:>5} deployments: {wall:6.2f} s  {requests:6d} requests  {peak:3d} peak connections  "
            f"ends {', '.join(sorted(outcomes))}  (runs: {walls} s)"
        )
    one, many = median[1], median[count]
    print(
        f"  ratio {count}/1: wall x{many[0] / one[0]:.2f}, requests x{many[1] / one[1]:.1f}, "
        f"peak connections x{many[2] / max(1, one[2]):.1f}"
    )


def status_bench(base: Compiled, sizes: list[int], own_process: bool) -> None:
    print(f"status: {', '.join(map(str, sizes))} models vs {sizes[0]} (median of 3)")
    baseline = bare_baseline = None
    for size in sizes:
        seconds, requests, peak, (ours, double), bare = status_of(base, size, own_process)
        baseline = baseline or seconds
        bare_baseline = bare_baseline or bare
        cpu = f"  CPU: nomadgs {ours * 1000:.0f} ms, double {double * 1000:.0f} ms" if own_process else ""
        print(
            f"  {size:>5} models: {seconds * 1000:8.1f} ms  {requests:3d} requests  {peak:3d} peak connections  "
            f"x{seconds / baseline:.2f} the time of {sizes[0]}{cpu}"
        )
        print(
            f"  {'':>5}  the same answers fetched, not parsed: {bare * 1000:.1f} ms (x{bare / bare_baseline:.2f} of "
            f"{sizes[0]})"
        )


if __name__ == "__main__":
    main()
