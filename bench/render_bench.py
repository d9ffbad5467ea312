"""Benchmark `nomadgs render`: whole-process cold start, and the compiler's in-process throughput.

Prints figures; asserts nothing. Run: .venv/bin/python bench/render_bench.py [--runs N] [--compare REV]

Cold start is reported as a ratio to a bare `python -I -c pass` of the same interpreter, measured in the same
run with the runs interleaved, so a busy machine slows both alike. With `--compare REV` (a git revision, e.g.
b214706, the last argparse one) that revision is checked out into a temporary git worktree and measured side by
side with this tree: its cold start, and its in-process resolve + compile rate.

`render` remembers its renderings of unchanged inputs in $XDG_CACHE_HOME/nomadgs (cli/rendermemo.py); the bench
gives each tree cache folders of its own and prints, in the same run: a first render (an empty cache folder
before each run: the compile, plus hashing the inputs and writing the entry), a repeat render (remembered), a
render of a changed deployment among remembered ones, and the same first and repeat render with no cache at all
(a cache folder that cannot exist, so nothing is hashed, read or written).
Targets: render cold start at most 15 x the bare interpreter (aim: 8); resolve + compile over 5,000 per second.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = Path("examples") / "vllm-qwen2.5-7b-instruct.yaml"

# Where build() and the loaders live, newest layout first (the package was reorganised after b214706).
LAYOUTS = (
    ("nomad_gpustack.compile.build", "nomad_gpustack.spec.loader"),
    ("nomad_gpustack.render", "nomad_gpustack.loader"),
)


# ----------------------------------------------------------------------------------------------------
# Cold start


NO_CACHE = os.devnull + "/no-cache"  # a cache folder that cannot exist: nothing hashed, read or written


def tree_env(tree: Path, cache_home: Path | str | None = None) -> dict[str, str]:
    """The environment that makes `python -m nomad_gpustack` run the package of `tree`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_", "PYTHON"))}
    env["PYTHONPATH"] = str(tree)
    if cache_home is not None:
        env["XDG_CACHE_HOME"] = str(cache_home)
    return env


@dataclass
class Command:
    """One measured command: its arguments, its cache folder, and what to do before each run (not timed)."""

    argv: list[str]
    cache_home: Path | str | None = None
    before: Callable[[], None] = lambda: None


def commands(scratch: Path) -> dict[str, Command]:
    """Each measured command of a tree, with cache folders under `scratch` (the tree's own)."""
    py = [sys.executable, "-m", "nomad_gpustack"]
    render = [*py, "render", str(EXAMPLE)]
    warm, first = scratch / "warm", scratch / "first"
    changed = scratch / "changed.yaml"
    edits = itertools.count()

    def change() -> None:  # a deployment no run has rendered yet, in a cache that holds everything else
        changed.write_text((ROOT / EXAMPLE).read_text() + f"# edit {next(edits)}\n")

    return {
        "nomadgs --version": Command([*py, "--version"], warm),
        "render, first (empty cache)": Command(render, first, lambda: shutil.rmtree(first, ignore_errors=True)),
        "render, repeat (remembered)": Command(render, warm),
        "render --format hcl, repeat": Command([*render, "--format", "hcl"], warm),
        "render, a changed deployment": Command([*py, "render", str(changed)], warm, change),
        "no cache at all: first render": Command(render, NO_CACHE),
        "no cache at all: repeat render": Command(render, NO_CACHE),
    }


def cold_start(trees: dict[str, Path], runs: int, scratch: Path) -> dict[tuple[str, str], list[float]]:
    """Milliseconds per run of each command of each tree, and of the bare interpreter, interleaved."""
    jobs: list[tuple[str, str, Command, Path, dict[str, str]]] = [
        ("", "python -I -c pass", Command([sys.executable, "-I", "-c", "pass"]), ROOT, dict(os.environ))
    ]
    for n, (label, tree) in enumerate(trees.items()):
        for name, command in commands(scratch / str(n)).items():
            jobs.append((label, name, command, tree, tree_env(tree, command.cache_home)))
    for n in range(len(trees)):
        (scratch / str(n)).mkdir(exist_ok=True)
    for _, name, command, cwd, env in jobs:  # warm the file cache and write .pyc files; fail loudly if broken
        command.before()
        proc = subprocess.run(command.argv, capture_output=True, text=True, cwd=cwd, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed in {cwd}:\n{proc.stderr}")
    times: dict[tuple[str, str], list[float]] = {(label, name): [] for label, name, *_ in jobs}
    for _ in range(runs):
        for label, name, command, cwd, env in jobs:
            command.before()
            start = time.perf_counter()
            subprocess.run(command.argv, capture_output=True, cwd=cwd, env=env, check=True)
            times[(label, name)].append((time.perf_counter() - start) * 1000)
    return times


# ----------------------------------------------------------------------------------------------------
# In-process throughput


def compiler(tree: Path) -> tuple[Callable[[Any], Any], Any, list[Any]]:
    """build(), the catalog and the example deployments of the package now imported (whichever layout)."""
    import importlib
    from functools import partial

    for build_module, loader_module in LAYOUTS:
        try:
            build = importlib.import_module(build_module).build
            loader = importlib.import_module(loader_module)
        except ImportError:
            continue
        catalog = loader.load_catalog()
        deployments = [loader.load_deployment(p) for p in sorted((tree / "examples").glob("*.yaml"))]
        return partial(build, catalog=catalog), catalog, deployments
    raise SystemExit(f"no known package layout in {tree}")


def rate(work: Callable[[Any], Any], items: list[Any], seconds: float) -> float:
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for item in items:
            work(item)
            n += 1
    return n / (time.perf_counter() - start)


def probe(tree: Path, seconds: float) -> None:
    """Run in a child process with PYTHONPATH=tree: print the resolve + compile rate of that tree as JSON."""
    import nomad_gpustack

    where = Path(nomad_gpustack.__file__).resolve()
    if tree.resolve() not in where.parents:
        raise SystemExit(f"imported {where}, not the package of {tree}")
    work, _, deployments = compiler(tree)
    print(json.dumps({"compile_per_s": rate(work, deployments, seconds)}))


def tree_rate(tree: Path, seconds: float) -> float:
    argv = [sys.executable, __file__, "--probe", str(tree), "--seconds", str(seconds)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=tree, env=tree_env(tree))
    if proc.returncode != 0:
        raise SystemExit(f"throughput probe failed in {tree}:\n{proc.stderr}")
    rate_per_s: float = json.loads(proc.stdout)["compile_per_s"]
    return rate_per_s


def throughput(seconds: float) -> None:
    """This tree in detail: compile alone, with strict validation, with the JSON and HCL text, from YAML text."""
    sys.path.insert(0, str(ROOT))
    from nomad_gpustack.compile.build import build
    from nomad_gpustack.contract.jobspec import api_document
    from nomad_gpustack.nomad.render import render_text
    from nomad_gpustack.spec.deployment import Deployment
    from nomad_gpustack.spec.loader import read_text
    from nomad_gpustack.spec.specfile import validate
    from nomad_gpustack.spec.yamlsource import parse_yaml

    _, catalog, sourced = compiler(ROOT)
    texts = [(read_text(p), str(p)) for p in sorted((ROOT / "examples").glob("*.yaml"))]
    cases: dict[str, Callable[[Any], Any]] = {
        "resolve + compile (typed job dict)": lambda s: build(s, catalog),
        "resolve + compile + strict run-time validation": lambda s: build(s, catalog, check=True),
        "resolve + compile + API JSON dict": lambda s: api_document(build(s, catalog).job),
        "resolve + compile + JSON text": lambda s: render_text(build(s, catalog).job, "json"),
        "resolve + compile + HCL text": lambda s: render_text(build(s, catalog).job, "hcl"),
    }
    print(f"\nin-process throughput of this tree over {len(sourced)} example deployments, {seconds:g} s each")
    for label, work in cases.items():
        print(f"  {label:<58} {rate(work, sourced, seconds):10,.0f} /s")
    it = iter(range(10**12))

    def from_text(_: object) -> None:
        text, name = texts[next(it) % len(texts)]
        data, source = parse_yaml(text, name)
        render_text(build(validate(Deployment, data, source), catalog).job, "json")

    print(f"  {'parse YAML + validate + compile + JSON text':<58} {rate(from_text, sourced, seconds):10,.0f} /s")
    memo_key(seconds)


def memo_key(seconds: float) -> None:
    """What a render pays to key the memo, in-process: the fingerprint of nomadgs's code and libraries, by
    content (cachekey.environment, recomputed each time), and the built-in catalog's bytes."""
    from nomad_gpustack import cachekey
    from nomad_gpustack.cli.rendermemo import RenderMemo

    sources = list(cachekey.PACKAGE.rglob("*.py"))
    size = sum(p.stat().st_size for p in sources) / 1024

    def fresh_key(_: object) -> None:
        cachekey.environment.cache_clear()
        cachekey._records.cache_clear()
        RenderMemo.open(Path(tempfile.gettempdir()), (), "json")

    per_s = rate(fresh_key, [None], seconds)
    label = f"render memo key ({len(sources)} .py files, {size:,.0f} KB, catalog, libraries)"
    print(f"  {label:<58} {1000 / per_s:10.2f} ms")


# ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """`rev` checked out (detached) into a temporary git worktree, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="nomadgs-bench-")) / "tree"
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", "--quiet", str(folder), rev], check=True)
    try:
        yield folder
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(folder)], check=False)
        with contextlib.suppress(OSError):
            folder.parent.rmdir()


def revision(tree: Path) -> str:
    proc = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return (proc.stdout.strip() or "?") + ("+changes" if dirty else "")


def report(trees: dict[str, Path], runs: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="nomadgs-bench-cache-") as scratch:
        times = cold_start(trees, runs, Path(scratch))
    floor = statistics.median(times[("", "python -I -c pass")])
    labels = list(trees)
    width = 24
    print(f"cold start, whole process: median ms of {runs} interleaved runs (x = ratio to python -I -c pass)")
    print(f"  {'':<30}" + "".join(f"{label:>{width}}" for label in labels))
    print(f"  {'python -I -c pass':<30}" + "".join(f"{floor:>{width - 9}.1f} ms  1.0 x" for _ in labels))
    for name in commands(Path()):
        cells = []
        for label in labels:
            median = statistics.median(times[(label, name)])
            cells.append(f"{median:>{width - 9}.1f} ms {median / floor:4.1f} x")
        print(f"  {name:<30}" + "".join(cells))
    rates = {label: tree_rate(tree, seconds) for label, tree in trees.items()}
    print(f"  {'resolve + compile, in-process':<30}" + "".join(f"{rates[k]:>{width - 2},.0f}/s" for k in labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="runs of each command (default 20)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per throughput figure (default 2)")
    parser.add_argument("--compare", metavar="REV", help="also measure this git revision (e.g. b214706)")
    parser.add_argument("--probe", metavar="TREE", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(args.probe, args.seconds)
        return
    if args.compare:
        with worktree(args.compare) as other:
            report({f"this tree ({revision(ROOT)})": ROOT, args.compare: other}, args.runs, args.seconds)
    else:
        report({f"this tree ({revision(ROOT)})": ROOT}, args.runs, args.seconds)
    throughput(args.seconds)


if __name__ == "__main__":
    main()
