"""Reads an HCL2 jobspec back into Nomad's API job, so tests can check that the HCL and the JSON we write
describe the same job.

python-hcl2 parses the text (it reads HCL as Nomad's jobspec2 parser does: blocks, labels, heredocs, `$${`
escapes); this module maps its dict to the API model by the HCL names declared in `contract/jobspec.py`, with a
classification of the fields of its own (not the renderer's) and Go's duration parser (the double's), so that a
mistake in the renderer is not repeated here. The names themselves are checked against a jobspec written by
hand from Nomad's documentation (tests/nomad/test_hcl.py).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from typing import Any

import hcl2
from typing_extensions import is_typeddict

from nomad_gpustack.contract.jobspec import Job, fields_of, validate_job

from .nomad_double.goduration import parse_duration

# Quotes stripped, blocks as plain dicts: the shape this module reads.
OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
_HEREDOC = re.compile(r"<<(-?)([A-Za-z_][A-Za-z0-9_]*)\n(.*\n)?[ \t]*\2", re.S)


def parse(text: str) -> dict[str, Any]:
    """python-hcl2's dict of an HCL2 document."""
    result: dict[str, Any] = hcl2.loads(text, serialization_options=OPTIONS)
    return result


def job_from_hcl(document: dict[str, Any]) -> Job:
    """Rebuild a `Job` from python-hcl2's dict of a jobspec (see `parse`)."""
    ((label, body),) = list(_labelled(document["job"]))
    return validate_job(_from_body(Job, body, label))


def _is_struct(annotation: Any) -> bool:
    return isinstance(annotation, type) and is_typeddict(annotation)


def _kind(struct: type, field: str) -> tuple[str, Any]:
    """ "struct" (one block), "structs" (repeated blocks), "struct_map" (labelled blocks keyed by label), "map"
    (a block of attributes, or a map value) or "value"; with the struct type of the blocks."""
    annotation = fields_of(struct)[field].annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if _is_struct(annotation):
        return "struct", annotation
    if origin is list and _is_struct(args[0]):
        return "structs", args[0]
    if origin is dict:
        return ("struct_map", args[1]) if _is_struct(args[1]) else ("map", None)
    return "value", None


def _label_field(struct: type) -> str | None:
    return next((info.name for info in fields_of(struct).values() if info.label), None)


def _heredoc_text(raw: str) -> str:
    """The text of a heredoc as python-hcl2 hands it over (markers and indentation included)."""
    match = _HEREDOC.fullmatch(raw)
    if match is None:
        return raw
    flush, _, body = match.groups()
    lines = (body or "").split("\n")[:-1]
    if flush:  # `<<-`: the smallest indentation of the non-blank lines goes (HCL's flushHeredocTemplateParts)
        indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
        strip = min(indents, default=0)
        lines = [line[strip:] if line.strip() else line for line in lines]
    return "".join(line + "\n" for line in lines)


def _unescape(value: Any) -> Any:
    if isinstance(value, str):
        return _heredoc_text(value).replace("%%{", "%{").replace("$${", "${")
    if isinstance(value, list):
        return [_unescape(v) for v in value]
    if isinstance(value, dict):
        return {k: _unescape(v) for k, v in value.items()}
    return value


def _blocks(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _labelled(value: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    for block in _blocks(value):
        yield from block.items()


def _map_value(value: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in _blocks(value):
        merged.update(_unescape(block))
    return merged


def _blocks_as_attrs(body: dict[str, Any]) -> dict[str, Any]:
    """A block of a schema-less map (a scaling `policy`) as Nomad's jobspec2 hands it to the API
    (`jobspec2/hclutil/blockattrs.go`): each block type a list, one element per block, a labelled block
    `{label: [body]}`. python-hcl2 gives blocks as lists, a labelled one as `{label: body}`."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            out[key] = [
                {label: [_blocks_as_attrs(sub)] for label, sub in item.items()}
                if all(isinstance(sub, dict) for sub in item.values())
                else _blocks_as_attrs(item)
                for item in value
            ]
        else:
            out[key] = _unescape(value)
    return out


def _from_body(struct: type, body: dict[str, Any], label: str | None = None) -> dict[str, Any]:
    by_name: dict[str, list[str]] = {}
    for field, info in fields_of(struct).items():
        by_name.setdefault(info.hcl, []).append(field)
    out: dict[str, Any] = {}
    label_field = _label_field(struct)
    if label_field and label is not None:
        out[label_field] = label
    for key, value in body.items():
        fields = by_name.get(key)
        if not fields:
            raise ValueError(f"{struct.__name__}: unknown HCL key '{key}'")
        if len(fields) > 1:  # `port` blocks: static ones are ReservedPorts, the others DynamicPorts
            for field in fields:
                _, item = _kind(struct, field)
                wanted = fields_of(struct)[field].reserved
                ports = [_from_body(item, b, lbl) for lbl, b in _labelled(value) if ("static" in b) == wanted]
                if ports:
                    out[field] = ports
            continue
        (field,) = fields
        kind, item = _kind(struct, field)
        if kind == "struct":
            (block,) = _blocks(value)
            if _label_field(item):
                ((lbl, block),) = block.items()
                out[field] = _from_body(item, block, lbl)
            else:
                out[field] = _from_body(item, block)
        elif kind == "structs":
            if _label_field(item):
                out[field] = [_from_body(item, b, lbl) for lbl, b in _labelled(value)]
            else:
                out[field] = [_from_body(item, b) for b in _blocks(value)]
        elif kind == "struct_map":
            out[field] = {lbl: {"Name": lbl, **_from_body(item, b)} for lbl, b in _labelled(value)}
        elif fields_of(struct)[field].blocks:
            (block,) = _blocks(value)
            out[field] = _blocks_as_attrs(block)
        elif kind == "map":
            out[field] = _map_value(value)
        elif fields_of(struct)[field].duration:
            out[field] = parse_duration(value)
        else:
            out[field] = _unescape(value)
    return out
