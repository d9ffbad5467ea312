"""The job models against Nomad's API struct table (the reference's field list, parsed by the double)."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from typing_extensions import is_typeddict

from nomad_gpustack.contract import jobspec
from nomad_gpustack.contract.jobspec import fields_of

from ..support.nomad_double import api_structs

# Fields of the table we do not model, and why. Anything else missing is a bug.
NOT_MODELLED = {
    # Set by the server on read; a client never sends them.
    ("Job", f)
    for f in ("Stop", "ParentID", "Dispatched", "Payload", "NomadTokenID", "Status", "StatusDescription", "Stable",
              "Version", "SubmitTime", "CreateIndex", "ModifyIndex", "JobModifyIndex", "DispatchIdempotencyToken")
} | {
    ("Service", "Connect"),  # the Consul service-mesh tree: model endpoints do not use it
}  # fmt: skip
# HCL names the table cannot tell: jobspec2 takes these from block labels (`job "id"`, `group "name"`,
# `task "name"`), and it reads static ports from `port "x" { static = N }` into ReservedPorts.
HCL_EXCEPTIONS = {
    ("Job", "ID"): ("id", True),
    ("TaskGroup", "Name"): ("name", True),
    ("Task", "Name"): ("name", True),
    ("NetworkResource", "ReservedPorts"): ("port", False),
    ("NetworkResource", "MBits"): ("mbits", False),  # the table has no `=`; Nomad's jobspec writes `mbits`
}


def structs() -> dict[str, type]:
    return {
        name: value
        for name, value in vars(jobspec).items()
        if isinstance(value, type) and is_typeddict(value) and value.__module__ == jobspec.__name__
    }


def kind_of(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is list:
        return f"list<{kind_of(typing.get_args(annotation)[0])}>"
    if origin is dict:
        return f"map<{kind_of(typing.get_args(annotation)[1])}>"
    if isinstance(annotation, type) and is_typeddict(annotation):
        return annotation.__name__
    return {str: "string", int: "int", bool: "bool", Any: "any"}.get(annotation, repr(annotation))


def table_kind(spec: api_structs.TypeSpec) -> str:
    if spec.kind in ("list", "map"):
        assert spec.item is not None
        return f"{spec.kind}<{table_kind(spec.item)}>"
    if spec.kind == "scalar":
        return {"uint": "int", "int8": "int", "uint8": "int", "dur(ns)": "int", "bytes": "string"}.get(
            spec.name, spec.name
        )
    return spec.name


TABLE = api_structs.load()
MODELS = structs()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_field_is_nomads_with_its_hcl_name_and_type(name: str) -> None:
    assert name in TABLE, f"{name} is not a Nomad api struct"
    table = TABLE[name]
    for field, info in fields_of(MODELS[name]).items():
        assert field in table, f"{name}.{field} is not a field of Nomad's {name}"
        spec = table[field]
        hcl, label = HCL_EXCEPTIONS.get((name, field), (spec.hcl_name, spec.label))
        assert info.hcl == hcl, f"{name}.{field}: HCL name {info.hcl!r}, Nomad's is {hcl!r}"
        assert info.label == label, f"{name}.{field}: label mismatch"
        assert info.duration == (spec.type == "dur(ns)"), f"{name}.{field}: duration mismatch"
        assert kind_of(info.annotation) == table_kind(spec.spec), f"{name}.{field}: type mismatch"


def test_every_nomad_field_of_the_job_tree_is_modelled() -> None:
    missing = []
    seen: set[str] = set()
    todo = ["Job"]
    while todo:
        name = todo.pop()
        if name in seen or name not in TABLE:
            continue
        seen.add(name)
        assert name in MODELS, f"struct {name} is reachable from Job but not modelled"
        model_fields = fields_of(MODELS[name])
        for field, spec in TABLE[name].items():
            if field not in model_fields and (name, field) not in NOT_MODELLED:
                missing.append(f"{name}.{field}")
            for part in [spec.spec, spec.spec.item, spec.spec.item.item if spec.spec.item else None]:
                if part is not None and part.kind == "struct" and (name, field) not in NOT_MODELLED:
                    todo.append(part.name)
    assert not missing, f"Nomad fields not modelled: {missing}"
