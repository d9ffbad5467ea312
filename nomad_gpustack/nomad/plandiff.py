"""Nomad's plan diff (`api.JobDiff`) in words: the changed fields, and a before/after pair for diff viewers.

Pure: the `Diff` of a plan answer in, text out. Nomad computes the diff field by field, with the unchanged
fields of an edited object as context (`Type: "None"`); Ansible's `--diff` shows the before/after pair as a
unified diff, so only the changed fields stand out, each under the job, group, task and object it sits in.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

ADDED, DELETED, EDITED, NONE = "Added", "Deleted", "Edited", "None"
INDENT = "  "


def changed_fields(diff: Mapping[str, Any] | None) -> list[str]:
    """One line per added, deleted or edited field: `Task Group "model" > Task "vllm" > Config > image: "a" => "b"`."""
    if not diff:
        return []
    return [_change_line(path, field) for path, field in _fields(diff, ())]


def diff_texts(diff: Mapping[str, Any] | None) -> tuple[str, str]:
    """(before, after): the job's fields as they are and as they would be, one `name: "value"` per line.

    Objects that exist on one side only (a new job, a removed group) appear only in that side's text.
    """
    if not diff:
        return "", ""
    before: list[str] = []
    after: list[str] = []
    _write(diff, f'Job "{diff.get("ID", "")}"', 0, before, after)
    return _text(before), _text(after)


# --- walking the diff ----------------------------------------------------------------------------------


def _children(node: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(heading, child diff) of a job, group or task diff, in the order `nomad job plan` prints them."""
    for obj in node.get("Objects") or []:
        yield str(obj.get("Name", "")), obj
    for group in node.get("TaskGroups") or []:
        yield f'Task Group "{group.get("Name", "")}"' + _updates(group.get("Updates")), group
    for task in node.get("Tasks") or []:
        yield f'Task "{task.get("Name", "")}"' + _annotations(task.get("Annotations")), task


def _fields(node: Mapping[str, Any], path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Mapping[str, Any]]]:
    for field in node.get("Fields") or []:
        if field.get("Type") in (ADDED, DELETED, EDITED):
            yield path, field
    for heading, child in _children(node):
        yield from _fields(child, (*path, heading))


def _change_line(path: Sequence[str], field: Mapping[str, Any]) -> str:
    kind = field.get("Type")
    name = str(field.get("Name", ""))
    if kind == ADDED:
        value = f"{_q(field.get('New'))} (added)"
    elif kind == DELETED:
        value = f"{_q(field.get('Old'))} (removed)"
    else:
        value = f"{_q(field.get('Old'))} => {_q(field.get('New'))}"
    return " > ".join([*path, f"{name}: {value}"])


def _write(node: Mapping[str, Any], heading: str, depth: int, before: list[str], after: list[str]) -> None:
    kind = node.get("Type")
    pad = INDENT * depth
    if kind != ADDED:
        before.append(f"{pad}{heading}:")
    if kind != DELETED:
        after.append(f"{pad}{heading}:")
    for field in node.get("Fields") or []:
        name = str(field.get("Name", ""))
        line = f"{pad}{INDENT}{name}: "
        field_kind = field.get("Type")
        if field_kind != ADDED and kind != ADDED:
            before.append(line + _q(field.get("Old") if field_kind != NONE else _value(field)))
        if field_kind != DELETED and kind != DELETED:
            after.append(line + _q(field.get("New") if field_kind != NONE else _value(field)))
    for child_heading, child in _children(node):
        _write(child, child_heading, depth + 1, before if kind != ADDED else [], after if kind != DELETED else [])


def _value(field: Mapping[str, Any]) -> Any:
    new = field.get("New")
    return new if new not in (None, "") else field.get("Old")


def _q(value: Any) -> str:
    """A value as Nomad's CLI quotes it (Go's %q of the string)."""
    import json

    return json.dumps("" if value is None else str(value), ensure_ascii=False)


def _updates(updates: Mapping[str, int] | None) -> str:
    parts = [f"{count} {kind}" for kind, count in sorted((updates or {}).items()) if count]
    return f" ({', '.join(parts)})" if parts else ""


def _annotations(annotations: Sequence[str] | None) -> str:
    return f" ({', '.join(annotations)})" if annotations else ""


def _text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n" if lines else ""
