"""HCL2 for Nomad job models: render a `Job` as a jobspec.

The renderer writes what `nomad job run file.nomad.hcl` and Terraform's `jobspec` read: HCL block and
attribute names (`memory`, `check`, `port "http" {}`), Go duration strings, multi-line text as heredocs
(`<<-EOT`), and the layout `nomad fmt` produces (two-space indents, `=` aligned over runs of single-line
attributes, as hclwrite does). tests/nomad/test_hcl.py checks it against `terraform fmt`, the same formatter,
and reads it back with python-hcl2 (tests/support/hcl_reader.py) into the very job the JSON describes.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterator
from functools import cache
from typing import Any

from typing_extensions import is_typeddict

from ..contract.jobspec import Job, fields_of
from ..durations import format_duration

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_HEREDOC_START = re.compile(r"<<-?([A-Za-z_][A-Za-z0-9_]*)")
_LIST_WIDTH = 80  # longer lists of plain values get one item per line, as people write args by hand

# --- field kinds ----------------------------------------------------------------------------------------


def _is_struct(annotation: Any) -> bool:
    return isinstance(annotation, type) and is_typeddict(annotation)


@cache
def _field_kind(struct: type, field: str) -> tuple[str, type | None]:
    """Classify a field: "struct", "structs" (block list), "struct_map" (labelled blocks), "map" or "value"."""
    annotation = fields_of(struct)[field].annotation
    origin = typing.get_origin(annotation)
    if _is_struct(annotation):
        return "struct", annotation
    if origin is list:
        (item,) = typing.get_args(annotation)
        return ("structs", item) if _is_struct(item) else ("value", None)
    if origin is dict:
        _, item = typing.get_args(annotation)
        return ("struct_map", item) if _is_struct(item) else ("map", None)
    return "value", None


@cache
def _label_field(struct: type) -> str | None:
    return next((f.name for f in fields_of(struct).values() if f.label), None)


# --- rendering ------------------------------------------------------------------------------------------


_RUNTIME_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.\-]*)\}")


def _template_escapes(text: str) -> str:
    """`${` and `%{` escaped as `$${` and `%%{`, except the runtime variables Nomad fills in (`${NOMAD_PORT_x}`)."""
    pieces = _RUNTIME_VARIABLE.split(text.replace("%{", "%%{"))
    # split() alternates literal text and variable names; only the literal parts get `${` escaped.
    return "".join(piece.replace("${", "$${") if i % 2 == 0 else "${" + piece + "}" for i, piece in enumerate(pieces))


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
    return _template_escapes("".join(out))


_HEREDOC_MARKERS = ("EOT", "EOF", "END", "TEXT")


def _heredoc_marker(text: str) -> str | None:
    """The marker for writing `text` as an indented heredoc (`<<-EOT`), or None when only a quoted string is exact.

    A flush heredoc ends with a newline and strips the smallest indentation of its non-blank lines (HCL's
    `flushHeredocTemplateParts`), and its backslashes are literal: the text must end with a newline, have a
    line that starts at column 0, no whitespace-only line (it would keep the added indentation) and no control
    character but tab and newline.
    """
    if text.count("\n") < 2 or not text.endswith("\n"):
        return None
    lines = text[:-1].split("\n")
    if any(ord(ch) < 0x20 and ch not in "\t\n" for ch in text):
        return None
    if any(line and not line.strip() for line in lines):
        return None
    if all(line[:1].isspace() for line in lines if line):
        return None
    used = {line.strip() for line in lines}
    return next((marker for marker in _HEREDOC_MARKERS if marker not in used), None)


def _heredoc_lines(text: str, marker: str, indent: int) -> list[str]:
    """`<<-MARKER`, the lines indented one level deeper than the attribute, and the marker at its level."""
    pad = "  " * indent
    body = [f"{pad}  {line}" if line else "" for line in _template_escapes(text)[:-1].split("\n")]
    return [f"<<-{marker}", *body, f"{pad}{marker}"]


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
        marker = _heredoc_marker(value) if isinstance(value, str) else None
        # Multi-line text (a script, a config file) as a heredoc, as people write jobspecs by hand.
        sub = _heredoc_lines(value, marker, indent) if marker else _value_lines(value, indent)
        lines.append(f"{pad}{_key(key)} = {sub[0]}")
        lines.extend(sub[1:])
    return lines


def _is_blocks(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _is_labelled(element: dict[str, Any]) -> bool:
    """`{label: [body, ...]}`: a labelled block in BlocksAsAttrs' shape (an unlabelled body has attributes)."""
    return bool(element) and all(_is_blocks(bodies) for bodies in element.values())


def _blocks_as_attrs_lines(name: str, label: str | None, body: dict[str, Any], indent: int) -> list[str]:
    """A block of a schema-less map in the shape of jobspec2's BlocksAsAttrs (`contract.jobspec.BLOCKS_AS_ATTRS`),
    written back as the blocks Nomad read it from: attributes first, then each nested block."""
    pad = "  " * indent
    header = f"{pad}{name}" + (f" {quote(label)}" if label is not None else "")
    attributes = {key: value for key, value in body.items() if not _is_blocks(value)}
    lines = _attribute_lines(attributes, indent + 1)
    for key, elements in body.items():
        if not _is_blocks(elements):
            continue
        for element in elements:
            if _is_labelled(element):
                for sub_label, bodies in element.items():
                    for sub in bodies:
                        lines += ["", *_blocks_as_attrs_lines(key, sub_label, sub, indent + 1)]
            else:
                lines += ["", *_blocks_as_attrs_lines(key, None, element, indent + 1)]
    if lines and not lines[0]:
        lines = lines[1:]  # no blank line before the first nested block of a block without attributes
    return [header + " {", *lines, f"{pad}}}"] if lines else [header + " {}"]


def _block_lines(struct: type, value: dict[str, Any], name: str, indent: int, label: str | None = None) -> list[str]:
    pad = "  " * indent
    label_field = _label_field(struct)
    if label is None and label_field:
        label = value.get(label_field)
    header = f"{pad}{name}" + (f" {quote(str(label))}" if label is not None else "")
    body = list(_body_lines(struct, value, indent + 1))
    if not body:
        return [header + " {}"]
    return [header + " {", *body, f"{pad}}}"]


def _body_lines(struct: type, value: dict[str, Any], indent: int) -> Iterator[str]:
    label_field = _label_field(struct)
    attributes: list[str] = []
    blocks: list[list[str]] = []
    for field, info in fields_of(struct).items():  # Go declaration order, whatever the dict's order
        item = value.get(field)
        if item is None or field == label_field:
            continue
        name = info.hcl
        kind, sub = _field_kind(struct, field)
        if kind == "struct":
            assert sub is not None
            blocks.append(_block_lines(sub, item, name, indent))
        elif kind == "structs":
            assert sub is not None
            blocks.extend(_block_lines(sub, entry, name, indent) for entry in item)
        elif kind == "struct_map":
            assert sub is not None
            for key, entry in item.items():
                # The map key is the block label; the Name attribute repeats it (the parser sets it).
                body = {k: v for k, v in entry.items() if k != "Name"}
                blocks.append(_block_lines(sub, body, name, indent, label=key))
        elif info.blocks:
            blocks.append(_blocks_as_attrs_lines(name, None, item, indent))
        elif kind == "map":
            if item and all(_IDENT.fullmatch(k) for k in item):
                pad = "  " * indent
                blocks.append([f"{pad}{name} {{", *_attribute_lines(item, indent + 1), f"{pad}}}"])
            else:
                attributes.extend(_attribute_lines({name: item}, indent))
        elif info.duration:
            attributes.extend(_attribute_lines({name: format_duration(item)}, indent))
        else:
            attributes.extend(_attribute_lines({name: item}, indent))
    for key in value:
        if key not in fields_of(struct):
            raise ValueError(f"{struct.__name__} has no field {key!r}")
    yield from attributes
    for i, block in enumerate(blocks):
        if i or attributes:
            yield ""
        yield from block


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

    heredoc: str | None = None  # the closing marker while inside a heredoc's text
    for index, line in enumerate(lines):
        if heredoc is not None:
            # The text is left as it is, and the run of `=` goes on after it, as hclwrite does.
            if line.strip() == heredoc:
                heredoc = None
            continue
        split = _split_assignment(line)
        if split is None:
            flush()
        else:
            run.append((index, *split))
            opened = _HEREDOC_START.fullmatch(split[1])
            heredoc = opened.group(1) if opened else None
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
    lines = _block_lines(Job, dict(job), "job", 0)
    return "\n".join(_align(lines)) + "\n"
