"""Benchmark the Ansible module `nomad_gpustack.nomad.model`: what it costs on top of Ansible running a task.

Against the Nomad double, with a job already registered (unchanged input), it times whole processes:

- `nomadgs plan FILE` (the same work from the command line: interpreter, imports, compile, plan);
- `ansible-playbook --check` with TASKS tasks of `model` on FILE (check mode: validate, ownership, plan);
- the same playbook with TASKS tasks of `ansible.builtin.ping` (Ansible's own cost of starting a module task:
  templating, AnsiballZ, a Python process on the target, the result).

The module's own cost per task is (model playbook - ping playbook) / TASKS, compared with `nomadgs plan`.
Prints figures; asserts nothing. Run: .venv/bin/python bench/ansible_bench.py [--runs N] [--tasks N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EXAMPLE = ROOT / "examples" / "llamacpp-qwen2.5-0.5b-cpu.yaml"
BIN = Path(sys.executable).parent


def timed(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    subprocess.run(argv, capture_output=True, env=env, check=False)  # warm caches (.pyc, the OS file cache)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        times.append(time.perf_counter() - start)
        if proc.returncode not in (0, 1):  # nomadgs plan: 1 means "changes"
            raise SystemExit(f"{argv[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=5)
    args = parser.parse_args()

    from tests.support.nomad_double import NomadDouble, scenarios

    folder = Path(tempfile.mkdtemp(prefix="nomadgs-ansible-bench-"))
    model = folder / "model.yml"
    ping = folder / "ping.yml"
    head = "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
    model.write_text(head + f"    - nomad_gpustack.nomad.model: {{deployment: {EXAMPLE}}}\n" * args.tasks)
    ping.write_text(head + "    - ansible.builtin.ping:\n" * args.tasks)

    with NomadDouble() as nomad:
        nomad.default_scenario = scenarios.rollout()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_", "ANSIBLE_"))}
        env.update(NOMAD_ADDR=nomad.address, ANSIBLE_COLLECTIONS_PATH=str(ROOT), ANSIBLE_LOCAL_TEMP=str(folder))
        playbook = [str(BIN / "ansible-playbook"), "-c", "local", "-i", "localhost,",
                    "-e", f"ansible_python_interpreter={sys.executable}"]  # fmt: skip
        deploy = subprocess.run([*playbook, str(model)], capture_output=True, text=True, env=env, check=False)
        if deploy.returncode != 0:
            raise SystemExit(f"the first deployment failed:\n{deploy.stdout}\n{deploy.stderr}")

        plan = timed([sys.executable, "-m", "nomad_gpustack", "plan", str(EXAMPLE)], env, args.runs)
        pings = timed([*playbook, str(ping)], env, args.runs)
        checks = timed([*playbook, "--check", str(model)], env, args.runs)

    def ms(values: list[float]) -> float:
        return statistics.median(values) * 1000

    per_task = (ms(checks) - ms(pings)) / args.tasks
    print(f"Nomad double, unchanged job, {args.runs} runs each, median (ms)")
    print(f"  nomadgs plan (whole process)                           {ms(plan):8.0f}")
    print(f"  ansible-playbook, {args.tasks} x ansible.builtin.ping              {ms(pings):8.0f}")
    print(f"  ansible-playbook --check, {args.tasks} x nomad_gpustack.nomad.model {ms(checks):8.0f}")
    print(f"  Ansible's task start (ping playbook / tasks)           {ms(pings) / args.tasks:8.0f}")
    print(f"  the module's own cost per task (model - ping) / tasks  {per_task:8.0f}")
    print(f"  ... relative to nomadgs plan                           {per_task / ms(plan):8.2f} x")


if __name__ == "__main__":
    main()
