"""`api.JobDiff`: the field-by-field diff a plan with `"Diff": true` answers (nomad/structs/diff.go).

Shape as Nomad's: `{Type, ID, Fields, Objects, TaskGroups}`; a task group diff has `Fields, Objects, Tasks,
Updates`; a task diff `Fields, Objects, Annotations`; objects nest `Fields` and `Objects`; a field is `{Type,
Name, Old, New, Annotations}`. Types are `Added`, `Deleted`, `Edited` and `None`. As in Nomad:
- primitive fields and maps of them are flattened (`Meta[key]`, `Env[NAME]`); a task's `Config` is one object
  whose fields are the whole flattened map (`args[0]`, `mount[0][source]`);
- nested structs are objects named after their type (`Update`, `Resources`, `RestartPolicy`), list elements
  one object each (`Service`, `Template`, `Constraint`, `Device`), matched by name where they have one and
  otherwise as a set (a changed constraint is one `Deleted` and one `Added`);
- the plan asks for a contextual diff: an edited object lists its unchanged fields too, as `None`;
- server-set fields (status, indexes, version) are not compared.

Values are strings, as Go's flatmap writes them (`true`, `8192`).
"""

from __future__ import annotations

from typing import Any

from .jobspec import JSON, SERVER_FIELDS

ADDED, DELETED, EDITED, NONE = "Added", "Deleted", "Edited", "None"

# Keys that are not fields of the object that holds them (Nomad's flatmap filters).
_JOB_SKIP = SERVER_FIELDS | {"ID", "TaskGroups"}
_GROUP_SKIP = frozenset({"Name", "Tasks"})
_TASK_SKIP = frozenset({"Name"})
# Go maps (flattened into the fields of the object that holds them); every other mapping is a struct.
_MAPS = frozenset({"Meta", "Env", "CanaryMeta", "TaggedAddresses", "Header", "Options"})
# List fields whose elements are objects of a singular type name (structs/diff.go names them by type).
_SINGULAR = {
    "Constraints": "Constraint",
    "Affinities": "Affinity",
    "Spreads": "Spread",
    "Services": "Service",
    "Checks": "Check",
    "Templates": "Template",
    "Artifacts": "Artifact",
    "Networks": "Network",
    "Devices": "Device",
    "DynamicPorts": "Dynamic Port",
    "ReservedPorts": "Static Port",
    "VolumeMounts": "Volume Mount",
    "Volumes": "Volume",
    "ScalingPolicies": "Scaling",
}


def job_diff(old: JSON | None, new: JSON) -> JSON:
    """The contextual diff of a stored job (None: absent or purged) and a submitted one."""
    kind = ADDED if old is None else EDITED
    fields, objects = _struct(old, new, _JOB_SKIP, kind)
    groups = _named_diffs((old or {}).get("TaskGroups") or [], new.get("TaskGroups") or [], _group_diff)
    if kind == EDITED and not _changed(fields, objects, groups):
        kind = NONE
    return {"Type": kind, "ID": new.get("ID", ""), "Fields": fields, "Objects": objects, "TaskGroups": groups}


def _group_diff(old: JSON | None, new: JSON | None, kind: str) -> JSON:
    fields, objects = _struct(old, new, _GROUP_SKIP, kind)
    tasks = _named_diffs((old or {}).get("Tasks") or [], (new or {}).get("Tasks") or [], _task_diff)
    if kind == EDITED and not _changed(fields, objects, tasks):
        kind = NONE
    return {
        "Type": kind,
        "Name": (new or old or {}).get("Name", ""),
        "Fields": fields,
        "Objects": objects,
        "Tasks": tasks,
        "Updates": None,  # the plan fills them in from its DesiredTGUpdates
    }


def _task_diff(old: JSON | None, new: JSON | None, kind: str) -> JSON:
    fields, objects = _struct(old, new, _TASK_SKIP, kind)
    if kind == EDITED and not _changed(fields, objects):
        kind = NONE
    annotations = None
    if kind == ADDED:
        annotations = ["forces create"]
    elif kind == DELETED:
        annotations = ["forces destroy"]
    elif kind == EDITED:
        annotations = ["forces create/destroy update"]
    return {
        "Type": kind,
        "Name": (new or old or {}).get("Name", ""),
        "Fields": fields,
        "Objects": objects,
        "Annotations": annotations,
    }


def _named_diffs(old: list[JSON], new: list[JSON], differ: Any) -> list[JSON]:
    """Diffs of named elements (groups, tasks), matched by name: old order, then the added ones."""
    olds = {item.get("Name"): item for item in old}
    news = {item.get("Name"): item for item in new}
    out = []
    for name, item in olds.items():
        out.append(differ(item, news[name], EDITED) if name in news else differ(item, None, DELETED))
    for name, item in news.items():
        if name not in olds:
            out.append(differ(None, item, ADDED))
    return out


def _changed(*parts: list[JSON]) -> bool:
    return any(entry.get("Type") != NONE for part in parts for entry in part)


def _struct(old: JSON | None, new: JSON | None, skip: frozenset[str], kind: str) -> tuple[list[JSON], list[JSON]]:
    """(fields, objects) of one struct; `kind` is the struct's own change (Added, Deleted or Edited)."""
    old = old or {}
    new = new or {}
    old_flat: dict[str, str] = {}
    new_flat: dict[str, str] = {}
    objects: list[JSON] = []
    for key in _keys(old, new):
        if key in skip:
            continue
        a, b = old.get(key), new.get(key)
        if key == "Config" and (isinstance(a, dict) or isinstance(b, dict)):
            objects.extend(_object("Config", _flatten(a or {}), _flatten(b or {}), [], a is None, b is None))
        elif _is_primitive(a) and _is_primitive(b):
            _flatten_into(old_flat, key, a)
            _flatten_into(new_flat, key, b)
        elif isinstance(a, dict) or isinstance(b, dict):
            if key in _MAPS:
                _flatten_into(old_flat, key, a or {})
                _flatten_into(new_flat, key, b or {})
            else:
                sub_fields, sub_objects = _struct(a, b, frozenset(), EDITED)
                objects.extend(_wrap(key, sub_fields, sub_objects, a is None, b is None))
        elif isinstance(a, list) or isinstance(b, list):
            objects.extend(_list_objects(key, a or [], b or []))
    return _fields(old_flat, new_flat, kind), objects


def _list_objects(key: str, old: list[Any], new: list[Any]) -> list[JSON]:
    if all(_is_primitive(v) for v in [*old, *new]):
        # A list of strings (Datacenters, Tags) is a set: one object named after the field.
        gone = [v for v in old if v not in new]
        came = [v for v in new if v not in old]
        if not gone and not came:
            return []
        fields = [_field(DELETED, key, _text(v), "") for v in gone] + [_field(ADDED, key, "", _text(v)) for v in came]
        return [
            {
                "Type": EDITED if old and new else (ADDED if new else DELETED),
                "Name": key,
                "Fields": fields,
                "Objects": [],
            }
        ]
    name = _SINGULAR.get(key, key)
    by_name = all(isinstance(v, dict) and v.get("Name") for v in [*old, *new])
    out: list[JSON] = []
    if by_name:
        olds = {v["Name"]: v for v in old}
        news = {v["Name"]: v for v in new}
        for item_name, item in olds.items():
            sub_fields, sub_objects = _struct(item, news.get(item_name), frozenset(), EDITED)
            out.extend(_wrap(name, sub_fields, sub_objects, False, item_name not in news))
        for item_name, item in news.items():
            if item_name not in olds:
                sub_fields, sub_objects = _struct(None, item, frozenset(), ADDED)
                out.extend(_wrap(name, sub_fields, sub_objects, True, False))
        return out
    for item in old:
        if item not in new:
            sub_fields, sub_objects = _struct(item, None, frozenset(), DELETED)
            out.extend(_wrap(name, sub_fields, sub_objects, False, True))
    for item in new:
        if item not in old:
            sub_fields, sub_objects = _struct(None, item, frozenset(), ADDED)
            out.extend(_wrap(name, sub_fields, sub_objects, True, False))
    return out


def _wrap(name: str, fields: list[JSON], objects: list[JSON], added: bool, deleted: bool) -> list[JSON]:
    """An object diff, or nothing when the object did not change (Nomad leaves equal objects out)."""
    kind = ADDED if added else DELETED if deleted else EDITED
    if kind == ADDED:
        fields = [dict(f, Type=ADDED, Old="") for f in fields]
    elif kind == DELETED:
        fields = [dict(f, Type=DELETED, New="") for f in fields]
    elif not _changed(fields, objects):
        return []
    return [{"Type": kind, "Name": name, "Fields": fields, "Objects": objects}]


def _object(
    name: str, old: dict[str, str], new: dict[str, str], objects: list[JSON], added: bool, deleted: bool
) -> list[JSON]:
    kind = ADDED if added else DELETED if deleted else EDITED
    return _wrap(name, _fields(old, new, kind), objects, added, deleted)


def _fields(old: dict[str, str], new: dict[str, str], kind: str) -> list[JSON]:
    """Field diffs, sorted by name as Nomad sorts them; unchanged ones as context."""
    out = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if kind == ADDED:
            out.append(_field(ADDED, name, "", b or ""))
        elif kind == DELETED:
            out.append(_field(DELETED, name, a or "", ""))
        elif a is None:
            out.append(_field(ADDED, name, "", b or ""))
        elif b is None:
            out.append(_field(DELETED, name, a, ""))
        else:
            out.append(_field(EDITED if a != b else NONE, name, a, b))
    return out


def _field(kind: str, name: str, old: str, new: str) -> JSON:
    return {"Type": kind, "Name": name, "Old": old, "New": new, "Annotations": None}


def _keys(old: JSON, new: JSON) -> list[str]:
    return list(dict.fromkeys([*old, *new]))


def _is_primitive(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def _flatten_into(out: dict[str, str], key: str, value: Any) -> None:
    """Go's flatmap: `Key`, `Key[sub]`, `Key[0]`; empty and null values leave no field."""
    if isinstance(value, dict):
        for sub, item in value.items():
            _flatten_into(out, f"{key}[{sub}]", item)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _flatten_into(out, f"{key}[{i}]", item)
    elif value is not None and value != "":
        out[key] = _text(value)


def _flatten(value: JSON) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, item in value.items():
        _flatten_into(out, key, item)
    return out
