"""HCL2 for Nomad job models: render a `Job` as a jobspec, and map a parsed jobspec back to a `Job`.

The renderer writes what `nomad job run file.nomad.hcl` and Terraform's `jobspec` read: HCL block and
attribute names (`memory`, `check`, `port "http" {}`), Go duration strings, and the layout `nomad fmt`
produces (two-space indents, `=` aligned over runs of single-line attributes, as hclwrite does).

`job_from_hcl` takes the dict python-hcl2 makes of a jobspec (quotes stripped, no block markers) and
rebuilds the API model, so tests can check that the HCL and the JSON we write describe the same job.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Iterator
from functools import cache
from typing import Any

from pydantic import BaseModel

from .durations import format_duration, parse_duration
from .jobspec import Job, NomadModel, hcl_meta, hcl_name, is_duration

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_LIST_WIDTH = 80  # longer lists of plain values get one item per line, as people write args by hand

# --- field kinds ----------------------------------------------------------------------------------------


@cache
def _field_kind(model: type[BaseModel], field: str) -> tuple[str, type[BaseModel] | None]:
    """Classify a field: "model", "models" (block list), "model_map" (labelled blocks), "map" or "value"."""
    annotation = model.model_fields[field].annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", annotation
    if origin is list:
        (item,) = typing.get_args(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return "models", item
        return "value", None
    if origin is dict:
        _, item = typing.get_args(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return "model_map", item
        return "map", None
    return "value", None


def _label_field(model: type[BaseModel]) -> str | None:
    for name in model.model_fields:
        if hcl_meta(model, name).label:
            return name
    return None


# --- rendering ------------------------------------------------------------------------------------------


_RUNTIME_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.\-]*)\}")


def quote(text: str) -> str:
    """An HCL quoted string.

    `${NOMAD_PORT_http}`, `${attr.cpu.arch}` and the like stay interpolations: Nomad keeps runtime variables
    for the client to fill in, exactly as it does with the same text in JSON. Any other `${` is escaped so
    HCL reads it as literal text.
    """
    out = ['"']
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    escaped = "".join(out).replace("%{", "%%{")
    pieces = _RUNTIME_VARIABLE.split(escaped)
    # split() alternates literal text and variable names; only the literal parts get `${` escaped.
    return "".join(
        piece.replace("${", "$${") if i % 2 == 0 else "${" + piece + "}" for i, piece in enumerate(pieces)
    )


def _key(name: str) -> str:
    return name if _IDENT.fullmatch(name) else quote(name)


def _value_lines(value: Any, indent: int) -> list[str]:
    """An HCL expression, as lines (the first without indentation)."""
    pad = "  " * indent
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, int | float):
        return [json.dumps(value)]
    if isinstance(value, str):
        return [quote(value)]
    if value is None:
        return ["null"]
    if isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value):
            one_line = "[" + ", ".join(_value_lines(v, 0)[0] for v in value) + "]"
            if len(one_line) <= _LIST_WIDTH:
                return [one_line]
        lines = ["["]
        for item in value:
            sub = _value_lines(item, indent + 1)
            lines.append(f"{pad}  {sub[0]}")
            lines.extend(sub[1:])
            lines[-1] += ","
        lines.append(f"{pad}]")
        return lines
    if isinstance(value, dict):
        if not value:
            return ["{}"]
        lines = ["{"]
        lines.extend(_attribute_lines(value, indent + 1))
        lines.append(f"{pad}}}")
        return lines
    raise TypeError(f"cannot write {type(value).__name__} as HCL")


def _attribute_lines(values: dict[str, Any], indent: int) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    for key, value in values.items():
        sub = _value_lines(value, indent)
        lines.append(f"{pad}{_key(key)} = {sub[0]}")
        lines.extend(sub[1:])
    return lines


def _block_lines(model: NomadModel, name: str, indent: int, label: str | None = None) -> list[str]:
    pad = "  " * indent
    header = f"{pad}{name}" + (f" {quote(label)}" if label is not None else "")
    body = list(_body_lines(model, indent + 1))
    if not body:
        return [header + " {}"]
    return [header + " {", *body, f"{pad}}}"]


def _body_lines(model: NomadModel, indent: int) -> Iterator[str]:
    cls = type(model)
    label_field = _label_field(cls)
    attributes: list[str] = []
    blocks: list[list[str]] = []
    for field in cls.model_fields:
        value = getattr(model, field)
        if value is None or field == label_field:
            continue
        name = hcl_name(cls, field)
        kind, item = _field_kind(cls, field)
        if kind == "model":
            blocks.append(_block_lines(value, name, indent, _label_of(value)))
        elif kind == "models":
            for entry in value:
                blocks.append(_block_lines(entry, name, indent, _label_of(entry)))
        elif kind == "model_map":
            for key, entry in value.items():
                # The map key is the block label; the Name attribute repeats it (the parser sets it).
                entry_body = entry.model_copy(update={"Name": None}) if "Name" in type(entry).model_fields else entry
                blocks.append(_block_lines(entry_body, name, indent, key))
        elif kind == "map":
            if all(_IDENT.fullmatch(k) for k in value) and value:
                pad = "  " * indent
                blocks.append([f"{pad}{name} {{", *_attribute_lines(value, indent + 1), f"{pad}}}"])
            else:
                attributes.extend(_attribute_lines({name: value}, indent))
        elif is_duration(cls, field):
            attributes.extend(_attribute_lines({name: format_duration(value)}, indent))
        else:
            attributes.extend(_attribute_lines({name: value}, indent))
    yield from attributes
    for i, block in enumerate(blocks):
        if i or attributes:
            yield ""
        yield from block


def _label_of(model: NomadModel) -> str | None:
    field = _label_field(type(model))
    if field is None:
        return None
    value = getattr(model, field)
    return str(value) if value is not None else None


def _align(lines: list[str]) -> list[str]:
    """Align `=` over runs of lines holding a whole single-line attribute, as hclwrite's formatter does."""
    out = list(lines)
    run: list[tuple[int, str, str]] = []

    def flush() -> None:
        if len(run) > 1:
            width = max(len(lead) for _, lead, _ in run)
            for index, lead, rest in run:
                out[index] = f"{lead.ljust(width)} = {rest}"
        run.clear()

    for index, line in enumerate(lines):
        split = _split_assignment(line)
        if split is None:
            flush()
        else:
            run.append((index, *split))
    flush()
    return out


def _split_assignment(line: str) -> tuple[str, str] | None:
    match = re.match(r"^(\s*(?:[A-Za-z_][A-Za-z0-9_-]*|\"(?:[^\"\\]|\\.)*\")) = (.*)$", line)
    if not match:
        return None
    lead, rest = match.groups()
    if _net_brackets(rest) != 0:
        return None  # the value opens a multi-line expression: hclwrite gives the line no assign cell
    return lead, rest


def _net_brackets(text: str) -> int:
    depth = 0
    in_string = False
    escaped = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        i += 1
    return depth


def render_hcl(job: Job) -> str:
    """The job as an HCL2 jobspec."""
    lines = _block_lines(job, "job", 0, job.ID)
    return "\n".join(_align(lines)) + "\n"


# --- reading back ---------------------------------------------------------------------------------------


def _unescape(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("%%{", "%{").replace("$${", "${")
    if isinstance(value, list):
        return [_unescape(v) for v in value]
    if isinstance(value, dict):
        return {k: _unescape(v) for k, v in value.items()}
    return value


def _blocks(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _labelled(value: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    for block in _blocks(value):
        for label, body in block.items():
            yield label, body


def _map_value(value: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in _blocks(value):
        merged.update(block)
    return _unescape(merged)


def _from_body(model: type[BaseModel], body: dict[str, Any], label: str | None = None) -> dict[str, Any]:
    by_name: dict[str, list[str]] = {}
    for field in model.model_fields:
        by_name.setdefault(hcl_name(model, field), []).append(field)
    out: dict[str, Any] = {}
    label_field = _label_field(model)
    if label_field and label is not None:
        out[label_field] = label
    for key, value in body.items():
        fields = by_name.get(key)
        if not fields:
            raise ValueError(f"{model.__name__}: unknown HCL key '{key}'")
        if len(fields) > 1:  # `port` blocks: static ones are ReservedPorts, the others DynamicPorts
            for field in fields:
                _, item = _field_kind(model, field)
                assert item is not None
                wanted = hcl_meta(model, field).reserved
                ports = [_from_body(item, b, lbl) for lbl, b in _labelled(value) if ("static" in b) == wanted]
                if ports:
                    out[field] = ports
            continue
        (field,) = fields
        kind, item = _field_kind(model, field)
        if kind == "model":
            assert item is not None
            (block,) = _blocks(value)
            if _label_field(item):
                ((lbl, block),) = block.items()
                out[field] = _from_body(item, block, lbl)
            else:
                out[field] = _from_body(item, block)
        elif kind == "models":
            assert item is not None
            if _label_field(item):
                out[field] = [_from_body(item, b, lbl) for lbl, b in _labelled(value)]
            else:
                out[field] = [_from_body(item, b) for b in _blocks(value)]
        elif kind == "model_map":
            assert item is not None
            out[field] = {lbl: {"Name": lbl, **_from_body(item, b)} for lbl, b in _labelled(value)}
        elif kind == "map":
            out[field] = _map_value(value)
        elif is_duration(model, field):
            out[field] = parse_duration(value)
        else:
            out[field] = _unescape(value)
    return out


def job_from_hcl(document: dict[str, Any]) -> Job:
    """Rebuild a `Job` from python-hcl2's dict of a jobspec (strip_string_quotes=True, explicit_blocks=False)."""
    ((label, body),) = list(_labelled(document["job"]))
    return Job.model_validate(_from_body(Job, body, label))
