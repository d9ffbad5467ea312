"""Benchmark a fleet against the Nomad double: `submit` of many deployments at once against one, and `status`
of many models against 10, as ratios to the baseline measured in the same run.

Prints figures; asserts nothing. Run: .venv/bin/python bench/fleet_bench.py [--fleet 120] [--status 10,100,1000]
The double is the HTTP double of Nomad's API in tests/ (no Nomad binary exists here), with its scenario time
scale; times are loopback times. Requests and peak open connections are counted at the double.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nomad_gpustack.compile.build import Compiled, build  # noqa: E402
from nomad_gpustack.nomad import fleet  # noqa: E402
from nomad_gpustack.nomad.client import NomadAPI  # noqa: E402
from nomad_gpustack.nomad.rollout import Assessment  # noqa: E402
from nomad_gpustack.nomad.status import all_model_statuses  # noqa: E402
from nomad_gpustack.settings import NomadSettings  # noqa: E402
from nomad_gpustack.spec.loader import load_catalog, load_deployment  # noqa: E402
from tests.support.nomad_double import NomadDouble, scenarios  # noqa: E402

TIME_SCALE = 30.0
EXAMPLE = ROOT / "examples" / "llamacpp-qwen2.5-0.5b-cpu.yaml"


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


def submit_fleet(base: Compiled, count: int) -> tuple[float, int, int, set[str]]:
    """Submit `count` deployments at once: (seconds, requests, peak open connections, outcomes)."""
    # Nomad's time 30 times faster than the wall clock (a 10m progress deadline in 20 s): at the default scale
    # (300) the double's own scenarios, 120 at once in one Python process, fall behind its clock and miss it.
    with NomadDouble(time_scale=TIME_SCALE) as nomad:
        nomad.default_scenario = scenarios.rollout(step=0.2, healthy_after=0.5)
        api = NomadAPI(NomadSettings(address=nomad.address))
        members = [fleet.Member(api, compiled) for compiled in fleet_of(base, count)]
        nomad.reset_peak_connections()
        before = len(nomad.requests)
        started = time.monotonic()
        fleet.check_all(members, force=False, notes=Quiet())
        asyncio.run(fleet.run(members, notes=Quiet(), reporter_for=lambda m: Quiet(), note=print, timeout=600))
        wall = time.monotonic() - started
        for m in members:
            if m.code:
                print(f"    {m.compiled.job_id}: {m.status}: {m.result.assessment.headline if m.result else m.error}")
        return wall, len(nomad.requests) - before, nomad.peak_connections, {m.status for m in members}


def status_of(base: Compiled, count: int, rounds: int = 3) -> tuple[float, int, int]:
    """`status` of `count` models, placed and left as they are (a quiet double: nothing changes while `status`
    reads): (median seconds, requests, peak open connections)."""
    with NomadDouble() as nomad:
        nomad.default_scenario = scenarios.manual()
        api = NomadAPI(NomadSettings(address=nomad.address))
        for compiled in fleet_of(base, count):
            api.register(compiled.job, modify_index=0)
        nomad.wait_for(lambda n: len(n.allocations) == count and len(n.deployments) == count, timeout=900)
        times, requests = [], 0
        nomad.reset_peak_connections()
        for _ in range(rounds):
            before = len(nomad.requests)
            started = time.monotonic()
            found = asyncio.run(all_model_statuses(api))
            times.append(time.monotonic() - started)
            requests = len(nomad.requests) - before
            assert len(found) == count
        return sorted(times)[len(times) // 2], requests, nomad.peak_connections


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fleet", type=int, default=120)
    parser.add_argument("--status", default="10,100,1000")
    args = parser.parse_args()
    base = build(load_deployment(EXAMPLE), load_catalog(()), check=False)

    if args.fleet:
        submit_bench(base, args.fleet)
    if args.status:
        status_bench(base, [int(s) for s in args.status.split(",")])


def submit_bench(base: Compiled, count: int) -> None:
    print(f"submit: {count} deployments at once vs 1 (each rollout: placed, started, healthy)")
    one = submit_fleet(base, 1)
    many = submit_fleet(base, count)
    for label, (wall, requests, peak, outcomes) in (("1", one), (str(count), many)):
        print(
            f"  {label:>5} deployments: {wall:6.2f} s  {requests:6d} requests  {peak:3d} peak connections  "
            f"ends {', '.join(sorted(outcomes))}"
        )
    print(
        f"  ratio {count}/1: wall x{many[0] / one[0]:.2f}, requests x{many[1] / one[1]:.1f}, "
        f"peak connections x{many[2] / max(1, one[2]):.1f}"
    )


def status_bench(base: Compiled, sizes: list[int]) -> None:
    print(f"status: {', '.join(map(str, sizes))} models vs {sizes[0]} (median of 3)")
    baseline = None
    for size in sizes:
        seconds, requests, peak = status_of(base, size)
        baseline = baseline or seconds
        print(
            f"  {size:>5} models: {seconds * 1000:8.1f} ms  {requests:3d} requests  {peak:3d} peak connections  "
            f"x{seconds / baseline:.2f} the time of {sizes[0]}"
        )


if __name__ == "__main__":
    main()
