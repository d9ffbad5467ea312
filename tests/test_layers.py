"""The package's layers hold: a module imports only from its own layer and from the layers below it, never from
one above it or beside it. The one list of layers is the table in ARCHITECTURE.md ("## Layers"), read here.

Two checks: every import statement of the package (inside functions and `TYPE_CHECKING` blocks too), read with
`ast`; and what importing all of a layer loads in a fresh interpreter (`sys.modules`), which also sees imports
made by other means than a statement of ours.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from .support.components import ROOT

PACKAGE = ROOT / "nomad_gpustack"
ROOT_NAME = "nomad_gpustack"
ROOT_MODULE = "__init__"  # how the table names the package root (its public API)
ANYONE_MAY_IMPORT = {(ROOT_NAME, "__version__")}  # defined in the root, which loads nothing else on import


@dataclass(frozen=True)
class Layers:
    """The table: rows of layers, lowest first; the top-level modules that the `name: a, b` layers hold."""

    rows: tuple[tuple[str, ...], ...]
    modules: dict[str, str]  # top-level module (or ROOT_MODULE) -> its layer

    def row(self, layer: str) -> int:
        return next(i for i, row in enumerate(self.rows) if layer in row)

    def may_import(self, importer: str, imported: str) -> bool:
        return importer == imported or self.row(imported) < self.row(importer)

    def of(self, module: str) -> str:
        """The layer of a module of the package, by its dotted name."""
        parts = module.split(".")
        assert parts[0] == ROOT_NAME, module
        first = parts[1] if len(parts) > 1 else ROOT_MODULE
        if first in self.modules:
            return self.modules[first]
        if any(first in row for row in self.rows) and (PACKAGE / first).is_dir():
            return first
        raise AssertionError(f"{module} is in no layer: add it to the table of layers in ARCHITECTURE.md")


def parse_layers(text: str) -> Layers:
    """The table of the "## Layers" section: its first ```text block, highest row first, `|` between layers."""
    section = text.split("\n## Layers\n", 1)[1]
    block = re.search(r"```text\n(.*?)```", section, re.S)
    assert block is not None, "ARCHITECTURE.md: the Layers section has no ```text table"
    rows: list[tuple[str, ...]] = []
    modules: dict[str, str] = {}
    for line in block.group(1).strip().splitlines():
        row = []
        for cell in line.split("|"):
            name, _, members = cell.partition(":")
            row.append(name.strip())
            for member in members.split(","):
                if member.strip():
                    modules[member.strip()] = name.strip()
        rows.append(tuple(row))
    return Layers(tuple(reversed(rows)), modules)


@cache
def layers() -> Layers:
    return parse_layers((ROOT / "ARCHITECTURE.md").read_text())


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str, str | None]]:
    """(line, module imported, name taken from it) for each of our modules an import statement names."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == ROOT_NAME:
                    yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join([*here[: len(here) - node.level + 1], *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            if base.split(".")[0] != ROOT_NAME:
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield (node.lineno, submodule, None) if is_module(submodule) else (node.lineno, base, alias.name)


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Each import of `source` (the text of `module`) that reaches above or beside the module's layer."""
    table = layers()
    importer = table.of(module)
    found = []
    for line, imported, name in imports(source, module, is_package):
        layer = table.of(imported)
        if not table.may_import(importer, layer) and (imported, name) not in ANYONE_MAY_IMPORT:
            found.append(f"{module}:{line} imports {imported} ({layer}), which {importer} may not import")
    return found


def package_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


# --- the table itself ---------------------------------------------------------------------------------------


def test_the_table_names_every_part_of_the_package_and_nothing_else() -> None:
    table = layers()
    names = [layer for row in table.rows for layer in row]
    assert len(names) == len(set(names)), "a layer is listed twice"
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    grouped = set(table.modules.values())
    assert packages == set(names) - grouped, "every sub-package is a layer of its own, and only those"
    top_level = {p.stem for p in PACKAGE.glob("*.py")}
    assert top_level == set(table.modules), "every top-level module is in a `name: modules` layer, and only those"
    assert table.row("contract") < table.row("spec") < table.row("compile") < table.row("cli") < table.row("top")


def test_the_checker_finds_imports_above_and_beside_a_layer() -> None:
    """The checks below can fail: an upward import inside a function, a sibling's under TYPE_CHECKING."""
    source = textwrap.dedent("""
        from typing import TYPE_CHECKING
        from ..contract.jobspec import Job
        from .. import __version__
        if TYPE_CHECKING:
            from ..compile.build import Compiled
        def f():
            from ..cli import output
            import nomad_gpustack.serving.discovery
    """)
    found = violations(source, "nomad_gpustack.nomad.example")
    assert [v.split(" imports ")[1].split(" ")[0] for v in found] == [
        "nomad_gpustack.compile.build",
        "nomad_gpustack.cli.output",
        "nomad_gpustack.serving.discovery",
    ]
    assert violations("from ..errors import InputError\nfrom . import cachekey\n", "nomad_gpustack.sizes") == []
    assert violations("from . import filters\n", "nomad_gpustack.errors") != []


# --- every import statement -----------------------------------------------------------------------------------


def test_no_import_statement_reaches_above_or_beside_its_layer() -> None:
    found = []
    for path in package_files():
        found += violations(path.read_text(), module_name(path), path.name == "__init__.py")
    assert found == []


# --- what importing a layer loads -----------------------------------------------------------------------------


def layer_modules(layer: str) -> list[str]:
    """Every module of a layer, as importable names (not `__main__`, which would run the command)."""
    table = layers()
    names = [module_name(p) for p in package_files()]
    return [n for n in names if table.of(n) == layer and not n.endswith(".__main__")]


LOADED = textwrap.dedent("""
    import importlib, json, sys
    for name in sys.argv[1:]:
        importlib.import_module(name)
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "nomad_gpustack")))
""")


@pytest.mark.parametrize("layer", [layer for row in parse_layers((ROOT / "ARCHITECTURE.md").read_text()).rows[:-1]
                                   for layer in row])  # fmt: skip
def test_importing_a_layer_loads_no_layer_above_or_beside_it(layer: str) -> None:
    table = layers()
    argv = [sys.executable, "-c", LOADED, *layer_modules(layer)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=True)
    loaded: list[str] = json.loads(proc.stdout)
    assert len(loaded) > 1
    beyond = [m for m in loaded if m != ROOT_NAME and not table.may_import(layer, table.of(m))]
    assert beyond == []
