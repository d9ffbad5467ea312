"""Benchmark `nomadgs render`: whole-process cold start, and the compiler's in-process throughput.

Prints figures; asserts nothing. Run: .venv/bin/python bench/render_bench.py [--runs N]
Targets from the issue: under 150 ms cold, over 5,000 deployments per second in-process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "vllm-qwen2.5-7b-instruct.yaml"


def cold_start(runs: int) -> None:
    commands = {
        "python -c pass (interpreter floor)": [sys.executable, "-c", "pass"],
        "nomadgs --version": [sys.executable, "-m", "nomad_gpustack", "--version"],
        "nomadgs render (json)": [sys.executable, "-m", "nomad_gpustack", "render", str(EXAMPLE)],
        "nomadgs render --format hcl": [
            sys.executable,
            "-m",
            "nomad_gpustack",
            "render",
            str(EXAMPLE),
            "--format",
            "hcl",
        ],
    }
    print(f"cold start, whole process, {runs} runs each (ms)")
    print(f"  {'command':<38} {'min':>7} {'median':>7} {'p90':>7}")
    for name, argv in commands.items():
        subprocess.run(argv, capture_output=True, check=True)  # warm the OS file cache and .pyc files
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=True)
            times.append((time.perf_counter() - start) * 1000)
        times.sort()
        p90 = times[int(0.9 * (len(times) - 1))]
        print(f"  {name:<38} {times[0]:7.1f} {statistics.median(times):7.1f} {p90:7.1f}")


def throughput(seconds: float) -> None:
    sys.path.insert(0, str(ROOT))
    from nomad_gpustack.compile.build import build
    from nomad_gpustack.nomad.jobspec import api_document
    from nomad_gpustack.nomad.render import render_text
    from nomad_gpustack.spec.deployment import Deployment
    from nomad_gpustack.spec.loader import load_catalog, load_deployment, read_text
    from nomad_gpustack.spec.specfile import validate
    from nomad_gpustack.spec.yamlsource import parse_yaml

    catalog = load_catalog()
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    sourced = [load_deployment(p) for p in examples]
    texts = [(read_text(p), str(p)) for p in examples]

    def rate(label: str, work: object) -> None:
        fn = work  # type: ignore[assignment]
        n = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            for item in sourced:
                fn(item)  # type: ignore[operator]
                n += 1
        elapsed = time.perf_counter() - start
        print(f"  {label:<58} {n / elapsed:10,.0f} /s")

    print(f"\nin-process throughput over {len(examples)} example deployments, {seconds:.0f}s each")
    rate("resolve + compile (typed job dict)", lambda s: build(s, catalog))
    rate("resolve + compile + strict run-time validation", lambda s: build(s, catalog, check=True))
    rate("resolve + compile + API JSON dict", lambda s: api_document(build(s, catalog).job))
    rate("resolve + compile + JSON text", lambda s: render_text(build(s, catalog).job, "json"))
    rate("resolve + compile + HCL text", lambda s: render_text(build(s, catalog).job, "hcl"))
    it = iter(range(10**12))

    def from_text(_: object) -> None:
        text, name = texts[next(it) % len(texts)]
        data, source = parse_yaml(text, name)
        render_text(build(validate(Deployment, data, source), catalog).job, "json")

    rate("parse YAML + validate + compile + JSON text", from_text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    cold_start(args.runs)
    throughput(args.seconds)


if __name__ == "__main__":
    main()
