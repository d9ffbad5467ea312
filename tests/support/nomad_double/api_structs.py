"""The table of Nomad's job API structs, parsed from `api_structs.txt`.

`api_structs.txt` is the field list of the reference (nomad-api.md §1.2) copied verbatim, one struct a line:
`- **Struct** (file): Field[=hcl_name]:type, ...`. Other tests compare the project's pydantic job models with
this table, and `strict.py` checks submitted jobs against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TABLE_FILE = Path(__file__).with_name("api_structs.txt")

SCALARS = frozenset({"string", "bool", "int", "uint", "int8", "uint8", "bytes", "any", "dur(ns)"})

_STRUCT_LINE = re.compile(r"^- \*\*(?P<name>\w+)\*\* \((?P<file>[^)]+)\): (?P<fields>.+)$")
_OPAQUE_LINE = re.compile(r"^Other reachable structs \([^)]*\): (?P<names>.+)$")
_FIELD = re.compile(r"^(?P<json>\w+)(?:=(?P<hcl>\(label\)|\w+))?:(?P<type>.+)$")


@dataclass(frozen=True)
class TypeSpec:
    """A parsed type string: a scalar, `list<X>`, `map<X>`, or a struct name."""

    kind: str  # "scalar" | "list" | "map" | "struct"
    name: str  # scalar name, struct name, or "list"/"map"
    item: TypeSpec | None = None  # element type of list/map

    def __str__(self) -> str:
        return f"{self.name}<{self.item}>" if self.item else self.name


@dataclass(frozen=True)
class FieldSpec:
    """One field of an api struct."""

    json_name: str  # the Go field name, which is the JSON key
    hcl_name: str  # the HCL name: the table's `=name`, else the snake_case of the Go name
    hcl_explicit: bool  # the table gave the HCL name (it differs from the plain snake_case)
    label: bool  # the field is the block label in HCL (`task "name" {}`)
    type: str  # the type string as written in the table, e.g. "dur(ns)", "list<Port>"
    spec: TypeSpec


@dataclass(frozen=True)
class StructTable:
    """Every struct of the table; `opaque` structs are known by name only (their fields are not listed)."""

    structs: dict[str, dict[str, FieldSpec]]
    opaque: frozenset[str]


def snake_case(name: str) -> str:
    """Go field name to its default HCL name: `NodePool` → `node_pool`, `CPU` → `cpu`."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return name.lower()


def parse_type(text: str) -> TypeSpec:
    """Parse `string`, `dur(ns)`, `list<X>`, `map<list<string>>`, `Constraint`, ..."""
    for container in ("list", "map"):
        if text.startswith(container + "<") and text.endswith(">"):
            return TypeSpec(container, container, parse_type(text[len(container) + 1 : -1]))
    if text in SCALARS:
        return TypeSpec("scalar", text)
    if re.fullmatch(r"[A-Z]\w*", text):
        return TypeSpec("struct", text)
    raise ValueError(f"unparsable type {text!r}")


def parse(text: str) -> StructTable:
    """Parse the table text; a line it does not understand raises ValueError, so a bad copy fails loudly."""
    structs: dict[str, dict[str, FieldSpec]] = {}
    opaque: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if m := _OPAQUE_LINE.match(line):
            opaque.update(n.strip() for n in m["names"].split(","))
            continue
        m = _STRUCT_LINE.match(line)
        if not m:
            raise ValueError(f"{TABLE_FILE.name}:{number}: not a struct line: {line[:60]!r}")
        fields: dict[str, FieldSpec] = {}
        # Types never contain ", " (map<list<string>> has no comma), so a plain split is safe.
        for item in m["fields"].split(", "):
            f = _FIELD.match(item.strip())
            if not f:
                raise ValueError(f"{TABLE_FILE.name}:{number}: bad field {item!r}")
            hcl = f["hcl"]
            label = hcl == "(label)"
            fields[f["json"]] = FieldSpec(
                json_name=f["json"],
                hcl_name=hcl if hcl and not label else snake_case(f["json"]),
                hcl_explicit=bool(hcl) and not label,
                label=label,
                type=f["type"],
                spec=parse_type(f["type"]),
            )
        structs[m["name"]] = fields
    unknown = {
        spec.name
        for fields in structs.values()
        for field in fields.values()
        for spec in _walk(field.spec)
        if spec.kind == "struct" and spec.name not in structs and spec.name not in opaque
    }
    if unknown:
        raise ValueError(f"{TABLE_FILE.name}: referenced structs missing from the table: {sorted(unknown)}")
    return StructTable(structs, frozenset(opaque))


def _walk(spec: TypeSpec) -> list[TypeSpec]:
    return [spec, *(_walk(spec.item) if spec.item else [])]


@cache
def table() -> StructTable:
    """The parsed table (read once)."""
    return parse(TABLE_FILE.read_text(encoding="utf-8"))


def load() -> dict[str, dict[str, FieldSpec]]:
    """Struct name → JSON field name → FieldSpec, for every struct whose fields the reference lists."""
    return table().structs
