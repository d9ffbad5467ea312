"""Benchmark the submit watcher against the Nomad double: reaction time to a state change, and the number of
requests it makes while nothing happens.

Prints figures; asserts nothing. Run: .venv/bin/python bench/watch_bench.py [--changes 30] [--idle 60]
The double is the HTTP double of Nomad's API in tests/ (no Nomad binary exists here); times are loopback times.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nomad_gpustack.compile.build import build  # noqa: E402
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

    def wait_for(self, state: str, after: float, timeout: float = 10.0) -> float:
        """When the replica first showed `state` after the moment `after`."""

        def found() -> float | None:
            return next((t for t, key in self.transitions if t >= after and key.startswith(state + ":")), None)

        with self.changed:
            self.changed.wait_for(lambda: found() is not None, timeout)
            return found() or float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=30, help="state changes to time")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds to stay idle while counting requests")
    args = parser.parse_args()

    compiled = build(load_deployment(ROOT / "examples" / "vllm-qwen2.5-7b-instruct.yaml"), load_catalog())
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

        # Reaction time: the replica flips between healthy and not yet healthy; time until the watcher shows it.
        delays = []
        nomad.update_allocation(alloc_id, task_state="running", task_events=[{"Type": "Started"}])
        recorder.wait_for("starting", 0.0)
        for i in range(args.changes):
            time.sleep(0.05)
            healthy = i % 2 == 0
            changed = time.monotonic()
            nomad.update_allocation(alloc_id, healthy=True if healthy else None)
            seen = recorder.wait_for("running" if healthy else "starting", changed)
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
