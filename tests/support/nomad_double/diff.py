"""The plan diff: Nomad's `structs.Job.Diff(other, contextual=true)` (nomad/structs/diff.go) and the scheduler's
annotations of it (scheduler/annotate.go), over the double's stored and submitted job JSON.

What it keeps of Nomad's rules:
- Each level (job, group, task) diffs its primitive fields (`flatmap.Flatten(obj, filter, primitiveOnly)`:
  scalars and maps of scalars as `Meta[key]`; zero values count, so a missing key equals its zero value) and
  lists only the changed ones; nested structs are objects.
- Objects are contextual: an edited object lists its unchanged fields too (Type None); an unchanged one is
  left out. Sets (constraints, affinities, artifacts) are matched by content, services by name, port label and
  position, checks by name, devices by name, ports by label; string sets (Tags, Datacenters) field by field.
- A task's `Config` is flattened whole (`args[3]`, `labels[team]`). Sorting: fields by name, objects by name.
- Annotations: a group gets its update counts (`create`, `create/destroy update`, ...) and its Count field
  `forces create` / `forces destroy`; an edited task `forces create/destroy update`, or `forces in-place
  update` when only KillTimeout, services, constraints, affinities or spreads changed.
The server's pointer fields and the Consul Connect tree are left out: nomadgs jobs do not use them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from .api_structs import load
from .jobspec import JSON

NONE, ADDED, DELETED, EDITED = "None", "Added", "Deleted", "Edited"

# Job.Diff's filter: fields the server sets or that the groups carry (Update is merged into each group).
JOB_FILTER = frozenset(
    {"ID", "Status", "StatusDescription", "Version", "Stable", "CreateIndex", "ModifyIndex", "JobModifyIndex",
     "Update", "SubmitTime", "NomadTokenID", "VaultToken", "VersionTag"}
)  # fmt: skip
# TaskGroup.Diff writes these pointer durations as "" when unset.
GROUP_DURATIONS = ("ShutdownDelay", "StopAfterClientDisconnect", "MaxClientDisconnect")
ZERO = {"string": "", "bool": "false", "dur(ns)": "0"}  # every integer kind: "0"


def _scalar(value: Any) -> str:
    """A value as Go's flatmap prints it (`%v`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nil"
    return str(value)


def primitives(struct: str, obj: JSON | None, skip: frozenset[str] = frozenset()) -> dict[str, str] | None:
    """`flatmap.Flatten(obj, skip, true)` of an api struct: its scalar fields (zero values included) and its
    maps of scalars (`Meta[key]`); None for a nil object."""
    if obj is None:
        return None
    flat: dict[str, str] = {}
    for name, spec in load()[struct].items():
        if name in skip:
            continue
        value = obj.get(name)
        if spec.spec.kind == "scalar" and spec.type not in ("any", "bytes"):
            flat[name] = _scalar(value) if value is not None else ZERO.get(spec.type, "0")
        elif spec.spec.kind == "map" and spec.spec.item is not None and spec.spec.item.kind == "scalar":
            for key, item in (value or {}).items():
                flat[f"{name}[{key}]"] = _scalar(item)
    return flat


def flatten_all(value: Any, prefix: str = "") -> dict[str, str]:
    """`flatmap.Flatten(v, nil, false)`: every leaf of a free-form map (a task's Config), `a[0]`, `a[k]`."""
    flat: dict[str, str] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            flat.update(flatten_all(item, f"{prefix}[{key}]" if prefix else key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            flat.update(flatten_all(item, f"{prefix}[{index}]"))
    else:
        flat[prefix] = _scalar(value)
    return flat


# --- fields --------------------------------------------------------------------------------------------------


def field(old: str, new: str, name: str, contextual: bool) -> JSON | None:
    """fieldDiff: "" on one side is an addition or deletion."""
    if old == new:
        return {"Type": NONE, "Name": name, "Old": old, "New": new, "Annotations": None} if contextual else None
    if old == "":
        return {"Type": ADDED, "Name": name, "Old": "", "New": new, "Annotations": None}
    if new == "":
        return {"Type": DELETED, "Name": name, "Old": old, "New": "", "Annotations": None}
    return {"Type": EDITED, "Name": name, "Old": old, "New": new, "Annotations": None}


def fields(old: Mapping[str, str] | None, new: Mapping[str, str] | None, contextual: bool) -> list[JSON]:
    """fieldDiffs, sorted by name."""
    old, new = old or {}, new or {}
    found = [field(old.get(k, ""), new.get(k, ""), k, contextual) for k in old.keys() | new.keys()]
    return sorted((f for f in found if f is not None), key=lambda f: (f["Name"], f["Old"], f["New"]))


def _object(name: str, kind: str, flat_fields: list[JSON], objects: list[JSON] | None = None) -> JSON:
    return {"Type": kind, "Name": name, "Fields": flat_fields or None, "Objects": _sorted(objects) or None}


def _sorted(objects: list[JSON] | None) -> list[JSON]:
    order = {EDITED: 0, ADDED: 1, DELETED: 2, NONE: 3}
    return sorted(objects or [], key=lambda o: (o["Name"], order[o["Type"]], len(o["Fields"] or [])))


def _kind_of(old: Any, new: Any) -> str:
    return ADDED if old is None else DELETED if new is None else EDITED


def primitive_object(
    struct: str, old: JSON | None, new: JSON | None, name: str, contextual: bool, skip: frozenset[str] = frozenset()
) -> JSON | None:
    """primitiveObjectDiff: the object's type follows from its fields; None when nothing changed."""
    found = fields(primitives(struct, old, skip), primitives(struct, new, skip), contextual)
    kinds = {f["Type"] for f in found}
    if EDITED in kinds or {ADDED, DELETED} <= kinds:
        kind = EDITED
    elif ADDED in kinds:
        kind = ADDED
    elif DELETED in kinds:
        kind = DELETED
    else:
        return None
    return _object(name, kind, found)


def struct_object(
    struct: str,
    old: JSON | None,
    new: JSON | None,
    name: str,
    contextual: bool,
    nested: Callable[[JSON, JSON], list[JSON]] | None = None,
    extra: Callable[[JSON | None], dict[str, str]] | None = None,
) -> JSON | None:
    """The common shape of serviceDiff, Resources.Diff, templateDiff ...: equal → None; else Added, Deleted or
    Edited with contextual fields, plus the `nested` objects."""
    if old == new:
        return None
    flat_old, flat_new = primitives(struct, old), primitives(struct, new)
    if extra is not None:
        if flat_old is not None:
            flat_old.update(extra(old))
        if flat_new is not None:
            flat_new.update(extra(new))
    objects = nested(old or {}, new or {}) if nested is not None else []
    return _object(name, _kind_of(old, new), fields(flat_old, flat_new, contextual), objects)


def string_set(old: list[str] | None, new: list[str] | None, name: str, contextual: bool) -> JSON | None:
    """stringSetDiff: one field per element, named after the set."""
    a, b = set(old or []), set(new or [])
    if a == b and not contextual:
        return None
    found = [f for f in (field(v, "", name, contextual) for v in a - b) if f]
    found += [f for f in (field("", v, name, contextual) for v in b - a) if f]
    if contextual:
        found += [f for f in (field(v, v, name, contextual) for v in a & b) if f]
    found.sort(key=lambda f: (f["Name"], f["Old"], f["New"]))
    added, removed = bool(b - a), bool(a - b)
    if added and removed:
        kind = EDITED
    elif added:
        kind = ADDED
    elif removed:
        kind = DELETED
    elif not found:
        return None
    else:
        kind = NONE
    return _object(name, kind, found)


def object_set(struct: str, old: list[JSON] | None, new: list[JSON] | None, name: str, contextual: bool) -> list[JSON]:
    """primitiveObjectSetDiff: elements matched by their whole content (Nomad hashes them)."""

    def key(obj: JSON) -> str:
        return json.dumps(obj, sort_keys=True)

    a = {key(o): o for o in old or []}
    b = {key(o): o for o in new or []}
    found = [primitive_object(struct, a[k], b.get(k), name, contextual) for k in a]
    found += [primitive_object(struct, None, b[k], name, contextual) for k in b.keys() - a.keys()]
    return _sorted([o for o in found if o is not None])


Differ = Callable[[JSON | None, JSON | None], JSON | None]


def keyed(old: list[JSON], new: list[JSON], key: str, diff: Differ) -> list[JSON]:
    """Elements matched by one field (a check's Name, a device's Name, a port's Label)."""
    a = {o.get(key): o for o in old}
    b = {o.get(key): o for o in new}
    found = [diff(a[k], b.get(k)) for k in a] + [diff(None, b[k]) for k in b.keys() - a.keys()]
    return _sorted([o for o in found if o is not None])


# --- objects of a job ------------------------------------------------------------------------------------------


def _check(old: JSON | None, new: JSON | None) -> JSON | None:
    def nested(o: JSON, n: JSON) -> list[JSON]:
        found = []
        if o.get("Header") != n.get("Header"):
            flat_o = flatten_all(o.get("Header") or {})
            flat_n = flatten_all(n.get("Header") or {})
            kind = ADDED if not o.get("Header") else DELETED if not n.get("Header") else EDITED
            found.append(_object("Header", kind, fields(flat_o, flat_n, True)))
        restart = struct_object("CheckRestart", o.get("CheckRestart"), n.get("CheckRestart"), "CheckRestart", True)
        return found + ([restart] if restart else [])

    return struct_object("ServiceCheck", old, new, "Check", True, nested)


def _service(old: JSON | None, new: JSON | None) -> JSON | None:
    def nested(o: JSON, n: JSON) -> list[JSON]:
        found = [string_set(o.get(k), n.get(k), k, True) for k in ("CanaryTags", "Tags")]
        found += keyed(o.get("Checks") or [], n.get("Checks") or [], "Name", _check)
        return [f for f in found if f is not None]

    return struct_object("Service", old, new, "Service", True, nested)


def services(old: list[JSON] | None, new: list[JSON] | None) -> list[JSON]:
    """serviceDiffs: a service matches the unmatched one scoring highest on name (3), port label (2) and
    position (1), when that score is above 2."""
    old, new = old or [], new or []
    if len(old) == 1 and len(new) == 1:
        single = _service(old[0], new[0])
        return [single] if single else []
    taken: set[int] = set()
    found: list[JSON | None] = []
    for index, service in enumerate(old):
        best, match = 2, -1
        for j, other in enumerate(new):
            if j in taken:
                continue
            score = (j == index) + 2 * (service.get("PortLabel") == other.get("PortLabel"))
            score += 3 * (service.get("Name") == other.get("Name"))
            if score > best:
                best, match = score, j
        if match < 0:
            found.append(_service(service, None))
        else:
            taken.add(match)
            found.append(_service(service, new[match]))
    found += [_service(None, s) for j, s in enumerate(new) if j not in taken]
    return _sorted([o for o in found if o is not None])


def _network(old: JSON | None, new: JSON | None) -> JSON | None:
    skip = frozenset({"Device", "CIDR", "IP"})

    def port(kind: str, dynamic: bool) -> Differ:
        port_skip = frozenset({"Value"}) if dynamic else frozenset()
        return lambda a, b: primitive_object("Port", a, b, kind, True, port_skip)

    found = fields(primitives("NetworkResource", old, skip), primitives("NetworkResource", new, skip), True)
    o, n = old or {}, new or {}
    objects = keyed(o.get("ReservedPorts") or [], n.get("ReservedPorts") or [], "Label", port("Static Port", False))
    objects += keyed(o.get("DynamicPorts") or [], n.get("DynamicPorts") or [], "Label", port("Dynamic Port", True))
    return _object("Network", _kind_of(old, new), found, objects) if old != new else None


def networks(old: list[JSON] | None, new: list[JSON] | None) -> list[JSON]:
    """networkResourceDiffs: networks matched by content; a changed one is a deletion and an addition."""
    a = {json.dumps(n, sort_keys=True): n for n in old or []}
    b = {json.dumps(n, sort_keys=True): n for n in new or []}
    found = [_network(a[k], None) for k in a.keys() - b.keys()] + [_network(None, b[k]) for k in b.keys() - a.keys()]
    return _sorted([o for o in found if o is not None])


def _resources(old: JSON | None, new: JSON | None) -> JSON | None:
    def nested(o: JSON, n: JSON) -> list[JSON]:
        device = lambda a, b: struct_object("RequestedDevice", a, b, "Device", True)  # noqa: E731
        return networks(o.get("Networks"), n.get("Networks")) + keyed(
            o.get("Devices") or [], n.get("Devices") or [], "Name", device
        )

    return struct_object("Resources", old, new, "Resources", True, nested)


def _config(old: JSON | None, new: JSON | None) -> JSON | None:
    """configDiff: the whole free-form map, flattened."""
    if old == new:
        return None
    kind = ADDED if not old else DELETED if not new else EDITED
    return _object("Config", kind, fields(flatten_all(old or {}), flatten_all(new or {}), True))


def _template(old: JSON | None, new: JSON | None) -> JSON | None:
    def ids(template: JSON | None) -> dict[str, str]:
        return {k: _scalar(template[k]) for k in ("Uid", "Gid") if template and template.get(k) is not None}

    return struct_object("Template", old, new, "Template", True, extra=ids)


def templates(old: list[JSON] | None, new: list[JSON] | None) -> list[JSON]:
    """templateDiffs: a lone template on each side is edited; otherwise templates match by destination."""
    old, new = old or [], new or []
    if len(old) == 1 and len(new) == 1:
        single = _template(old[0], new[0])
        return [single] if single else []
    return keyed(old, new, "DestPath", _template)


# --- task, group, job ------------------------------------------------------------------------------------------


def task_diff(old: JSON | None, new: JSON | None) -> JSON:
    """Task.Diff."""
    skip = frozenset({"Name", "Config"})
    kind = _kind_of(old, new) if old is None or new is None else (NONE if old == new else EDITED)
    o, n = old or {}, new or {}
    objects = object_set("Constraint", o.get("Constraints"), n.get("Constraints"), "Constraint", True)
    objects += object_set("Affinity", o.get("Affinities"), n.get("Affinities"), "Affinity", True)
    single: list[JSON | None] = [
        _config(o.get("Config"), n.get("Config")),
        _resources(o.get("Resources"), n.get("Resources")),
        primitive_object("LogConfig", o.get("LogConfig"), n.get("LogConfig"), "LogConfig", True),
        primitive_object(
            "DispatchPayloadConfig", o.get("DispatchPayload"), n.get("DispatchPayload"), "DispatchPayload", True
        ),
        struct_object("Vault", o.get("Vault"), n.get("Vault"), "Vault", True),
        struct_object("WorkloadIdentity", o.get("Identity"), n.get("Identity"), "Identity", True),
    ]
    objects += object_set("TaskArtifact", o.get("Artifacts"), n.get("Artifacts"), "Artifact", True)
    objects += services(o.get("Services"), n.get("Services"))
    objects += templates(o.get("Templates"), n.get("Templates"))
    objects += [s for s in single if s is not None]
    return {
        "Type": kind,
        "Name": (new or old or {}).get("Name", ""),
        "Fields": fields(primitives("Task", old, skip), primitives("Task", new, skip), False) or None,
        "Objects": _sorted(objects) or None,
        "Annotations": None,
    }


def _group_primitives(group: JSON | None) -> dict[str, str] | None:
    flat = primitives("TaskGroup", group, frozenset({"Name", *GROUP_DURATIONS, "MaxRunDuration"}))
    if flat is not None and group is not None:
        for name in GROUP_DURATIONS:
            flat[name] = "" if group.get(name) is None else _scalar(group[name])
    return flat


def group_diff(old: JSON | None, new: JSON | None) -> JSON:
    """TaskGroup.Diff."""
    kind = _kind_of(old, new) if old is None or new is None else (NONE if old == new else EDITED)
    o, n = old or {}, new or {}
    objects = object_set("Constraint", o.get("Constraints"), n.get("Constraints"), "Constraint", True)
    objects += object_set("Affinity", o.get("Affinities"), n.get("Affinities"), "Affinity", True)
    for struct, key in (
        ("RestartPolicy", "RestartPolicy"),
        ("ReschedulePolicy", "ReschedulePolicy"),
        ("EphemeralDisk", "EphemeralDisk"),
        ("Consul", "Consul"),
    ):
        found = primitive_object(struct, o.get(key), n.get(key), key, True)
        if found is not None:
            objects.append(found)
    update = primitive_object(
        "UpdateStrategy", o.get("Update"), n.get("Update"), "Update", True, frozenset({"Stagger"})
    )
    objects += [update] if update is not None else []
    objects += networks(o.get("Networks"), n.get("Networks"))
    scaling = struct_object("ScalingPolicy", o.get("Scaling"), n.get("Scaling"), "Scaling", True)
    objects += [scaling] if scaling is not None else []
    objects += services(o.get("Services"), n.get("Services"))
    volumes_old, volumes_new = o.get("Volumes") or {}, n.get("Volumes") or {}
    for name in sorted(volumes_old.keys() | volumes_new.keys()):
        volume = struct_object("VolumeRequest", volumes_old.get(name), volumes_new.get(name), "Volume", True)
        objects += [volume] if volume is not None else []
    old_tasks = {t["Name"]: t for t in o.get("Tasks") or []}
    new_tasks = {t["Name"]: t for t in n.get("Tasks") or []}
    tasks = [task_diff(old_tasks.get(k), new_tasks.get(k)) for k in sorted(old_tasks.keys() | new_tasks.keys())]
    return {
        "Type": kind,
        "Name": (new or old or {}).get("Name", ""),
        "Fields": fields(_group_primitives(old), _group_primitives(new), False) or None,
        "Objects": _sorted(objects) or None,
        "Tasks": tasks or None,
        "Updates": None,
    }


def job_diff(old: JSON | None, new: JSON) -> JSON:
    """Job.Diff(new, contextual=true): `old` None is a new job."""
    fields_found = fields(primitives("Job", old, JOB_FILTER), primitives("Job", new, JOB_FILTER), False)
    o = old or {}
    objects: list[JSON] = []
    datacenters = string_set(o.get("Datacenters"), new.get("Datacenters"), "Datacenters", True)
    if datacenters is not None and datacenters["Type"] != NONE:
        objects.append(datacenters)
    objects += object_set("Constraint", o.get("Constraints"), new.get("Constraints"), "Constraint", True)
    objects += object_set("Affinity", o.get("Affinities"), new.get("Affinities"), "Affinity", True)
    for struct, key in (("PeriodicConfig", "Periodic"), ("ParameterizedJobConfig", "ParameterizedJob")):
        found = primitive_object(struct, o.get(key), new.get(key), key, True)
        objects += [found] if found is not None else []
    old_groups = {g["Name"]: g for g in o.get("TaskGroups") or []}
    new_groups = {g["Name"]: g for g in new.get("TaskGroups") or []}
    groups = [group_diff(old_groups.get(k), new_groups.get(k)) for k in sorted(old_groups.keys() | new_groups.keys())]
    if old is None:
        kind = ADDED
    elif any(f["Type"] != NONE for f in fields_found) or any(x["Type"] != NONE for x in objects + groups):
        kind = EDITED
    else:
        kind = NONE
    return {
        "Type": kind,
        "ID": new["ID"],
        "Fields": fields_found or None,
        "Objects": _sorted(objects) or None,
        "TaskGroups": groups or None,
    }


# --- scheduler annotations ---------------------------------------------------------------------------------------

UPDATE_TYPES = {  # DesiredTGUpdates field → TaskGroupDiff.Updates key (scheduler/annotate.go)
    "Ignore": "ignore",
    "Place": "create",
    "Stop": "destroy",
    "Migrate": "migrate",
    "Canary": "canary",
    "InPlaceUpdate": "in-place update",
    "DestructiveUpdate": "create/destroy update",
}
IN_PLACE_OBJECTS = frozenset({"Service", "Constraint", "Affinity", "Spread"})


def annotate(diff: JSON, desired: Mapping[str, JSON]) -> JSON:
    """scheduler.Annotate: update counts on the groups, `forces ...` on Count and on the tasks."""
    for group in diff.get("TaskGroups") or []:
        counts = desired.get(group["Name"])
        if counts is not None:
            group["Updates"] = {UPDATE_TYPES[k]: n for k, n in counts.items() if k in UPDATE_TYPES and n} or None
        for count in (f for f in group.get("Fields") or [] if f["Name"] == "Count"):
            before, after = int(count["Old"] or 0), int(count["New"] or 0)
            if before != after:
                count["Annotations"] = ["forces create" if before < after else "forces destroy"]
        for task in group.get("Tasks") or []:
            task["Annotations"] = _task_annotation(task, group)
    return diff


def _task_annotation(task: JSON, group: JSON) -> list[str] | None:
    if task["Type"] == NONE:
        return None
    if group["Type"] in (ADDED, DELETED) and task["Type"] in (ADDED, DELETED):
        return ["forces create" if task["Type"] == ADDED else "forces destroy"]
    destructive = any(f["Name"] != "KillTimeout" for f in task.get("Fields") or [])
    for obj in task.get("Objects") or []:
        if obj["Name"] == "LogConfig":
            destructive |= any(f["Name"] == "Disabled" for f in obj.get("Fields") or [])
        elif obj["Name"] not in IN_PLACE_OBJECTS:
            destructive = True
    return ["forces create/destroy update" if destructive else "forces in-place update"]
