"""Benchmark the submit watcher against the Nomad double: what whole watches cost (requests, wall time), the
reaction time to a state change, and the number of requests it makes while nothing happens.

Prints figures; asserts nothing. Run: .venv/bin/python bench/watch_bench.py [--watches 10] [--changes 30] [--idle 60]
The double is the HTTP double of Nomad's API in tests/ (no Nomad binary exists here); times are loopback times.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nomad_gpustack.compile.build import Compiled, build  # noqa: E402
from nomad_gpustack.contract.request import group_request  # noqa: E402
from nomad_gpustack.nomad.client import NomadAPI  # noqa: E402
from nomad_gpustack.nomad.rollout import Assessment  # noqa: E402
from nomad_gpustack.nomad.watcher import watch  # noqa: E402
from nomad_gpustack.settings import NomadSettings  # noqa: E402
from nomad_gpustack.spec.loader import load_catalog, load_deployment  # noqa: E402
from tests.support.nomad_double import NomadDouble, scenarios  # noqa: E402


class Recorder:
    """A reporter that notes when the replica's state changed, and to what."""

    def __init__(self) -> None:
        self.transitions: list[tuple[float, str]] = []
        self.changed = threading.Condition()

    def update(self, assessment: Assessment, elapsed: float) -> None:
        with self.changed:
            key = "|".join(f"{r.state}:{r.detail}" for r in assessment.replicas)
            if not self.transitions or self.transitions[-1][1] != key:
                self.transitions.append((time.monotonic(), key))
                self.changed.notify_all()

    def note(self, message: str) -> None:
        return None

    def wait_for(self, shown: str, after: float, timeout: float = 10.0) -> float:
        """When the replica first showed `shown` ("state:detail", or its beginning) after the moment `after`."""

        def found() -> float | None:
            return next((t for t, key in self.transitions if t >= after and key.startswith(shown)), None)

        with self.changed:
            self.changed.wait_for(lambda: found() is not None, timeout)
            return found() or float("nan")


class Quiet:
    def update(self, assessment: Assessment, elapsed: float) -> None:
        return None

    def note(self, message: str) -> None:
        return None


def _watch_once(nomad: NomadDouble, job: dict[str, object], version: int) -> tuple[int, float, str]:
    """Register `job` on the double and watch it to its end: (requests the watch sent, seconds, phase)."""
    api = NomadAPI(NomadSettings.from_env({"NOMAD_ADDR": nomad.address}))
    current = api.job(str(job["ID"]))
    eval_id = api.register(job, modify_index=current.JobModifyIndex if current else 0).EvalID  # type: ignore[arg-type]
    before = len(nomad.requests)
    started = time.monotonic()
    result = asyncio.run(
        watch(
            api,
            job_id=str(job["ID"]),
            version=version,
            eval_id=eval_id,
            request=group_request(dict(job)),
            reporter=Quiet(),
            timeout=30,
        )
    )
    return len(nomad.requests) - before, time.monotonic() - started, result.assessment.phase


def whole_watches(compiled: Compiled, count: int) -> None:
    """Watches from register to verdict: a healthy rollout, a crash loop, an unhealthy version that Nomad
    rolls back (the watch follows the rollback)."""
    print(f"whole watches ({count} of each; requests the watch sent, wall time):")
    edited = copy.deepcopy(dict(compiled.job))
    edited["Meta"] = {**edited["Meta"], "bench": "edited"}
    cases = [
        ("healthy rollout", scenarios.rollout(), False),
        ("crash loop", scenarios.crash_loop(), False),
        ("unhealthy, auto-revert", scenarios.unhealthy(rollback_to=0), True),
    ]
    for label, scenario, rollback in cases:
        requests, seconds, phases = [], [], set()
        for _ in range(count):
            with NomadDouble() as nomad:
                version = 0
                if rollback:  # a stable version 0 first, to roll back to
                    nomad.default_scenario = scenarios.rollout(step=0.005, healthy_after=0.01)
                    _watch_once(nomad, dict(compiled.job), 0)
                    version = 1
                nomad.default_scenario = scenario
                sent, wall, phase = _watch_once(nomad, edited if rollback else dict(compiled.job), version)
            requests.append(sent)
            seconds.append(wall)
            phases.add(phase)
        print(
            f"  {label:24} {statistics.mean(requests):5.1f} requests (min {min(requests)}, max {max(requests)})   "
            f"wall median {statistics.median(seconds) * 1000:6.1f} ms   ends {', '.join(sorted(phases))}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--watches", type=int, default=10, help="whole watches per scenario")
    parser.add_argument("--changes", type=int, default=30, help="state changes to time")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds to stay idle while counting requests")
    args = parser.parse_args()

    compiled = build(load_deployment(ROOT / "examples" / "vllm-qwen2.5-7b-instruct.yaml"), load_catalog())
    if args.watches:
        whole_watches(compiled, args.watches)
    with NomadDouble() as nomad:
        nomad.default_scenario = scenarios.manual()
        api = NomadAPI(NomadSettings.from_env({"NOMAD_ADDR": nomad.address}))
        plan = api.plan(compiled.job)
        eval_id = api.register(compiled.job, modify_index=plan.JobModifyIndex).EvalID
        job = api.job(compiled.job_id)
        assert job is not None
        recorder = Recorder()
        loop = asyncio.new_event_loop()
        task = loop.create_task(
            watch(
                api,
                job_id=compiled.job_id,
                version=job.Version,
                eval_id=eval_id,
                request=group_request(dict(compiled.job)),
                reporter=recorder,
                timeout=None,
            )
        )

        def run() -> None:
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(task)

        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        nomad.wait_for(lambda n: any(a["JobID"] == compiled.job_id for a in n.allocations.values()))
        alloc_id = next(a["ID"] for a in nomad.allocations.values() if a["JobID"] == compiled.job_id)
        time.sleep(1.0)

        # Reaction time: the client reports one image pull after another (a watch shows a replica's state only
        # forward, so the change is one of detail); time until the watcher shows each.
        delays = []
        recorder.wait_for("scheduled:", 0.0)
        for i in range(args.changes):
            time.sleep(0.05)
            pull = f"Downloading image local/bench:{i}"
            changed = time.monotonic()
            nomad.update_allocation(alloc_id, task_events=[{"Type": "Driver", "DriverMessage": pull}])
            seen = recorder.wait_for(f"downloading:{pull}", changed)
            delays.append((seen - changed) * 1000)

        # Idle: nothing changes; count what the watcher asks for.
        before = len(nomad.requests)
        time.sleep(args.idle)
        idle_requests = len(nomad.requests) - before

        delays.sort()
        print(f"watcher reaction to a state change in the double ({len(delays)} changes, loopback):")
        print(
            f"  p50 {statistics.median(delays):6.1f} ms   p90 {delays[int(0.9 * (len(delays) - 1))]:6.1f} ms   "
            f"max {delays[-1]:6.1f} ms"
        )
        per_minute = idle_requests * 60 / args.idle
        print(f"requests while idle for {args.idle:.0f}s: {idle_requests} ({per_minute:.1f} per minute)")
        print("  (for comparison, polling three resources every second would send 180 per minute)")
        loop.call_soon_threadsafe(task.cancel)
        runner.join(timeout=5)


if __name__ == "__main__":
    main()
