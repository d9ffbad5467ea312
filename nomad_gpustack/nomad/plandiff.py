"""Nomad's plan diff (`api.JobDiff`) in words: as `nomad job plan` prints it, the changed fields, and a
before/after pair for diff viewers.

Pure: the `Diff` of a plan answer in, text out. Nomad computes the diff field by field, with the unchanged
fields of an edited object as context (`Type: "None"`). `format_job_diff` prints it the way `nomad job plan`
does (`nomadgs plan`); Ansible's `--diff` shows the before/after pair as a unified diff, so only the changed
fields stand out, each under the job, group, task and object it sits in.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

ADDED, DELETED, EDITED, NONE = "Added", "Deleted", "Edited", "None"
INDENT = "  "


def format_job_diff(diff: Mapping[str, Any] | None, *, verbose: bool = False) -> str:
    """The diff as `nomad job plan` prints it (command/job_plan.go `formatJobDiff`, without colour):

        +/- Job: "qwen"
        +/- Task Group: "inference" (1 create/destroy update)
          +/- Task: "vllm" (forces create/destroy update)
            +/- Resources {
                  CPU:      "4000"
              +/- MemoryMB: "24576" => "32768"
                }

    Markers: `+` added, `-` deleted, `+/-` edited, none for unchanged context. The fields of an added or
    deleted group or task are shown only with `verbose`, as in Nomad. "" for no diff.
    """
    if not diff:
        return ""
    lines = [f"{_marker(diff.get('Type'))}Job: {_q(diff.get('ID'))}"]
    groups = diff.get("TaskGroups") or []
    longest_field, longest_marker = _longest(diff.get("Fields"), diff.get("Objects"))
    longest_marker = max([longest_marker, *(len(_marker(g.get("Type"))) for g in groups)])
    if diff.get("Type") == EDITED or verbose:
        lines += _aligned(diff.get("Fields"), diff.get("Objects"), 0, longest_field, longest_marker)
    for group in groups:
        lines += _group_lines(group, longest_marker - len(_marker(group.get("Type"))), verbose)
    return "\n".join(lines) + "\n"


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


# --- `nomad job plan` ------------------------------------------------------------------------------------


def _marker(kind: Any) -> str:
    """getDiffString: the marker and its space."""
    return {ADDED: "+ ", DELETED: "- ", EDITED: "+/- "}.get(str(kind), "")


def _longest(
    fields: Sequence[Mapping[str, Any]] | None, objects: Sequence[Mapping[str, Any]] | None
) -> tuple[int, int]:
    """getLongestPrefixes: (longest field name, longest marker) for alignment."""
    names = [len(str(f.get("Name", ""))) for f in fields or []]
    markers = [len(_marker(x.get("Type"))) for x in [*(fields or []), *(objects or [])]]
    return max(names, default=0), max(markers, default=0)


def _group_lines(group: Mapping[str, Any], prefix: int, verbose: bool) -> list[str]:
    """formatTaskGroupDiff."""
    head = (
        f"{_marker(group.get('Type'))}{' ' * prefix}Task Group: {_q(group.get('Name'))}{_updates(group.get('Updates'))}"
    )
    tasks = group.get("Tasks") or []
    longest_field, longest_marker = _longest(group.get("Fields"), group.get("Objects"))
    longest_marker = max([longest_marker, *(len(_marker(t.get("Type"))) for t in tasks)])
    lines = [head]
    start = prefix + 2
    if group.get("Type") == EDITED or verbose:
        lines += _aligned(group.get("Fields"), group.get("Objects"), start, longest_field, longest_marker)
    for task in tasks:
        lines += _task_lines(task, start, longest_marker - len(_marker(task.get("Type"))), verbose)
    return lines


def _task_lines(task: Mapping[str, Any], start: int, prefix: int, verbose: bool) -> list[str]:
    """formatTaskDiff: unchanged tasks, and added or deleted ones unless `verbose`, are one line."""
    kind = task.get("Type")
    head = (
        f"{' ' * start}{_marker(kind)}{' ' * prefix}Task: {_q(task.get('Name'))}{_annotations(task.get('Annotations'))}"
    )
    if kind == NONE or (kind in (ADDED, DELETED) and not verbose):
        return [head]
    longest_field, longest_marker = _longest(task.get("Fields"), task.get("Objects"))
    return [head, *_aligned(task.get("Fields"), task.get("Objects"), start + 2, longest_field, longest_marker)]


def _aligned(
    fields: Sequence[Mapping[str, Any]] | None,
    objects: Sequence[Mapping[str, Any]] | None,
    start: int,
    longest_field: int,
    longest_marker: int,
) -> list[str]:
    """alignedFieldAndObjects: markers and values in columns."""
    lines = []
    for field in fields or []:
        marker = _marker(field.get("Type"))
        name = str(field.get("Name", ""))
        pad = " " * (longest_marker - len(marker))
        lines.append(f"{' ' * start}{marker}{pad}{name}: {' ' * (longest_field - len(name))}{_field_value(field)}")
    for obj in objects or []:
        lines += _object_lines(obj, start, longest_marker - len(_marker(obj.get("Type"))))
    return lines


def _object_lines(obj: Mapping[str, Any], start: int, prefix: int) -> list[str]:
    """formatObjectDiff: `Name {`, its fields and objects, then `}` under the name."""
    marker = _marker(obj.get("Type"))
    longest_field, longest_marker = _longest(obj.get("Fields"), obj.get("Objects"))
    lines = [f"{' ' * start}{marker}{' ' * prefix}{obj.get('Name', '')} {{"]
    lines += _aligned(obj.get("Fields"), obj.get("Objects"), start + prefix + 2, longest_field, longest_marker)
    lines.append(f"{' ' * (start + len(marker) + prefix)}}}")
    return lines


def _field_value(field: Mapping[str, Any]) -> str:
    """formatFieldDiff's value: the new, the old, or `old => new`, then the annotations."""
    kind = field.get("Type")
    if kind == DELETED:
        value = _q(field.get("Old"))
    elif kind == EDITED:
        value = f"{_q(field.get('Old'))} => {_q(field.get('New'))}"
    else:
        value = _q(field.get("New"))
    return value + _annotations(field.get("Annotations"))


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
    return json.dumps("" if value is None else str(value), ensure_ascii=False)


def _updates(updates: Mapping[str, int] | None) -> str:
    parts = [f"{count} {kind}" for kind, count in sorted((updates or {}).items()) if count]
    return f" ({', '.join(parts)})" if parts else ""


def _annotations(annotations: Sequence[str] | None) -> str:
    return f" ({', '.join(annotations)})" if annotations else ""


def _text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n" if lines else ""
