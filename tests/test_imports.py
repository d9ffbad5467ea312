"""Imports inside functions: only where ARCHITECTURE.md ("Imports inside functions") says they keep start-up fast.

Three checks: every function-level import of the package is in an allowed place (the CLI, or a pair of the list
below, which ARCHITECTURE.md names); none of them imports what importing its own module has loaded already (it
would buy nothing); and the places that keep imports inside do keep the start-up they are there for.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .support.components import ROOT
from .test_layers import is_module, module_name, package_files

CLI = "nomad_gpustack.cli"  # (a) the lazy command group: a command imports what only it needs when it runs
CLI_ENTRY = CLI  # the package itself answers `nomadgs --version` before the root group (cli.root) is loaded

# (importer, imported module) pairs outside the CLI, each with a measured reason in a comment beside it in the code.
ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        # (b) the HTTP libraries, with the clients built from them: a command uses one or the other
        *(
            ("nomad_gpustack.settings", m)
            for m in ("httpx", "requests", "requests.adapters", "urllib3.exceptions", "nomad")
        ),
        *(("nomad_gpustack.nomad.client", m) for m in ("httpx", "requests", "nomad.api.exceptions")),
        ("nomad_gpustack.estimate.hub", "huggingface_hub"),  # only when a request goes out
        ("nomad_gpustack.estimate.hub", "huggingface_hub.utils._headers"),
        ("nomad_gpustack.serving.gateway.server", "uvloop"),  # may be absent (Windows, PyPy)
        # (c) the estimate, on every compile's path: only a deployment that asks for it loads it
        ("nomad_gpustack.compile.sizing", "nomad_gpustack.estimate.plan"),
        ("nomad_gpustack.compile.sizing", "nomad_gpustack.estimate.engine"),
        ("nomad_gpustack.compile.estimation", "nomad_gpustack.estimate.plan"),
        ("nomad_gpustack.compile.estimation", "nomad_gpustack.estimate.local"),
        ("nomad_gpustack.estimate.lookup", "nomad_gpustack.estimate.facts"),
        ("nomad_gpustack.estimate.lookup", "nomad_gpustack.estimate.hub"),
        ("nomad_gpustack.estimate.lookup", "nomad_gpustack.estimate.local"),
        # (d) the public API, loaded on first use
        ("nomad_gpustack", "importlib"),
        # (e) one measured reason each
        ("nomad_gpustack.nomad.render", "nomad_gpustack.contract.jobspec"),  # a remembered render: no pydantic
        ("nomad_gpustack.nomad.render", "nomad_gpustack.nomad.hcl"),
        ("nomad_gpustack.serving.lookup", "nomad_gpustack.serving.nomad_services"),  # a Consul lookup: no Nomad
        ("nomad_gpustack.serving.lookup", "nomad_gpustack.nomad.client"),  # likewise (the models scaled to zero)
    }
)
NO_COMMENT_NEEDED = {"nomad_gpustack"}  # (d): the comment is on `_LAZY`


@dataclass(frozen=True)
class Inner:
    """One function-level import: where it is, and the module it loads."""

    module: str
    line: int
    imported: str
    commented: bool  # a comment on its lines, or just above the run of imports it belongs to

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.imported}"


def _target(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        here = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join([*here[: len(here) - node.level + 1], *([node.module] if node.module else [])])
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        yield submodule if base.startswith("nomad_gpustack") and is_module(submodule) else base


def inner_imports(source: str, module: str, is_package: bool = False) -> list[Inner]:
    """Every import statement inside a function (or a method) of `source`, the text of `module`."""
    lines = source.splitlines()
    found: list[Inner] = []

    def commented(node: ast.stmt, body: list[ast.stmt]) -> bool:
        i = body.index(node)
        while i > 0 and isinstance(body[i - 1], ast.Import | ast.ImportFrom):
            i -= 1  # the first of a run of imports carries the comment for the run
        first, last = body[i], node
        own = lines[first.lineno - 1 : (last.end_lineno or last.lineno)]
        above = lines[first.lineno - 2].strip() if first.lineno > 1 else ""
        return above.startswith("#") or any("#" in line for line in own)

    def walk(node: ast.AST, in_function: bool) -> None:
        for field in ("body", "orelse", "finalbody", "handlers"):
            body = getattr(node, field, None)
            if not isinstance(body, list):
                continue
            for child in body:
                if in_function and isinstance(child, ast.Import | ast.ImportFrom):
                    for imported in _target(child, module, is_package):
                        found.append(Inner(module, child.lineno, imported, commented(child, body)))
                walk(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    walk(ast.parse(source), False)
    return found


def misplaced(inner: Inner) -> str | None:
    """Why this function-level import breaks the rule, or None when it keeps to it."""
    if inner.module == CLI or inner.module.startswith(CLI + "."):
        return None
    if (inner.module, inner.imported) not in ALLOWED:
        return f"{inner}: at the top of the module (or see ARCHITECTURE.md, 'Imports inside functions')"
    if not inner.commented and inner.module not in NO_COMMENT_NEEDED:
        return f"{inner}: say beside it which start-up it keeps fast, measured"
    return None


def package_inner_imports() -> list[Inner]:
    return [
        inner
        for path in package_files()
        for inner in inner_imports(path.read_text(), module_name(path), path.name == "__init__.py")
    ]


# --- the checker itself ---------------------------------------------------------------------------------------


def test_the_checker_finds_imports_in_functions_and_methods_and_allows_the_listed_ones() -> None:
    source = textwrap.dedent("""
        import json
        def f():
            import difflib
            from .hcl import render_hcl  # a remembered render: no HCL writer
        class C:
            async def g(self):
                if True:
                    from ..contract import jobspec
                    import httpx
        def h():
            # the HTTP libraries
            from ..contract.jobspec import api_document
            import requests
    """)
    found = inner_imports(source, "nomad_gpustack.nomad.render")
    assert [(i.line, i.imported, i.commented) for i in found] == [
        (4, "difflib", False),
        (5, "nomad_gpustack.nomad.hcl", True),
        (9, "nomad_gpustack.contract.jobspec", False),
        (10, "httpx", False),
        (13, "nomad_gpustack.contract.jobspec", True),
        (14, "requests", True),
    ]
    why = [misplaced(i) for i in found]
    assert why[0] is not None and why[1] is None and why[4] is None
    assert why[2] is not None and "say beside it" in why[2]
    assert why[3] is not None and "at the top" in why[3]
    assert inner_imports("def f():\n    import asyncio\n", "nomad_gpustack.cli.cluster_cmds")[0].imported == "asyncio"
    assert misplaced(inner_imports("def f():\n    import asyncio\n", "nomad_gpustack.cli.cluster_cmds")[0]) is None


# --- the package ------------------------------------------------------------------------------------------------


def test_every_import_inside_a_function_is_in_an_allowed_place() -> None:
    found = [why for inner in package_inner_imports() if (why := misplaced(inner))]
    assert found == []


def test_every_allowed_pair_is_still_used() -> None:
    """The list says where imports stay inside today: a pair nothing uses any more must go (and ARCHITECTURE.md's
    sentence with it)."""
    used = {(i.module, i.imported) for i in package_inner_imports()}
    assert sorted(ALLOWED - used) == []


LOADED = textwrap.dedent("""
    import sys
    for name in sys.argv[1:]:
        __import__(name)
    print(sorted(sys.modules))
""")  # imports nothing else itself: what it reports is what the modules load


def loaded_by(*modules: str) -> set[str]:
    """The modules importing `modules` loads, in a fresh interpreter."""
    argv = [sys.executable, "-c", LOADED, *modules]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=True)
    loaded: list[str] = ast.literal_eval(proc.stdout)
    return set(loaded)


def test_no_import_inside_a_function_loads_what_its_module_has_loaded_already() -> None:
    """Such an import buys nothing. A CLI module runs after the root group (`cli.root`) is loaded: what that loads
    (Click, errors, the CLI's helpers) is imported at the top; the entry point is loaded before it."""
    by_module: dict[str, list[Inner]] = {}
    for inner in package_inner_imports():
        by_module.setdefault(inner.module, []).append(inner)
    found = []
    for module, inners in sorted(by_module.items()):
        first = [] if module in (CLI_ENTRY, "nomad_gpustack") or not module.startswith(CLI) else [f"{CLI}.root"]
        already = loaded_by(*first, module)
        found += [f"{inner}, which is loaded already" for inner in inners if inner.imported in already]
    assert found == []


# --- what keeping them inside is for ----------------------------------------------------------------------------

EXAMPLE = ROOT / "examples" / "vllm-qwen2.5-7b-instruct.yaml"


def test_a_compile_without_an_estimate_loads_neither_the_estimate_nor_the_hub() -> None:
    script = textwrap.dedent(f"""
        import json, sys
        from nomad_gpustack.compile.build import build
        from nomad_gpustack.compile.estimation import metadata_for_compile
        from nomad_gpustack.nomad.render import render_text
        from nomad_gpustack.spec.loader import load_catalog, load_deployment
        deployment = load_deployment({str(EXAMPLE)!r})
        assert metadata_for_compile(deployment.spec, model_path=None, cache_dir=None, hub=False) is None
        render_text(build(deployment, load_catalog()).job, "json")
        print(json.dumps(sorted(sys.modules)))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    loaded = set(json.loads(proc.stdout))
    estimate = {f"nomad_gpustack.estimate.{m}" for m in ("plan", "engine", "memory", "facts", "local", "hub")}
    assert "nomad_gpustack.compile.resolve" in loaded
    assert sorted(loaded & (estimate | {"huggingface_hub"})) == []


@pytest.mark.parametrize(
    ("modules", "not_loaded"),
    [
        (["nomad_gpustack.settings", "nomad_gpustack.nomad.client"], ["httpx", "requests", "nomad", "urllib3"]),
        (["nomad_gpustack.estimate.hub"], ["huggingface_hub"]),
        (["nomad_gpustack.serving.lookup"], ["nomad_gpustack.nomad.client", "nomad_gpustack.serving.nomad_services"]),
        (["nomad_gpustack.nomad.render"], ["pydantic", "nomad_gpustack.contract.jobspec"]),
    ],
)
def test_importing_a_module_leaves_what_it_keeps_inside_unloaded(modules: list[str], not_loaded: list[str]) -> None:
    assert sorted(loaded_by(*modules) & set(not_loaded)) == []
