"""Strict decoding of submitted jobs against the api struct table.

Nomad itself decodes request bodies with a plain `encoding/json` decoder: field names match case-insensitively
and unknown keys are silently dropped (nomad#1376). The double is deliberately stricter, so that a typo or a
wrong type in the project's own job compiler fails a test instead of silently getting a Nomad default:

* an unknown key (including a key in the wrong case) is an error;
* a value of the wrong JSON type is an error; durations (`dur(ns)`) must be JSON integers, never `"10s"`
  or `1.5e9` (this one Nomad also rejects, with a 400).

`null` is accepted everywhere, as Go leaves the field unset.
"""

from __future__ import annotations

from typing import Any

from .api_structs import StructTable, TypeSpec, table

# Keys of the request wrappers (api.JobRegisterRequest, api.JobPlanRequest, api.JobValidateRequest), including
# the embedded WriteRequest fields that Go clients send along.
_WRITE_REQUEST = {
    "Region": "string",
    "Namespace": "string",
    "SecretID": "string",
    "IdempotencyToken": "string",
}
REGISTER_KEYS = {
    "Job": "Job",
    "Submission": "JobSubmission",
    "EnforceIndex": "bool",
    "JobModifyIndex": "uint",
    "PolicyOverride": "bool",
    "PreserveCounts": "bool",
    "PreserveResources": "bool",
    "EvalPriority": "int",
    **_WRITE_REQUEST,
}
PLAN_KEYS = {"Job": "Job", "Diff": "bool", "PolicyOverride": "bool", **_WRITE_REQUEST}
VALIDATE_KEYS = {"Job": "Job", **_WRITE_REQUEST}

_INT_RANGES: dict[str, tuple[int, int]] = {
    "int": (-(2**63), 2**63 - 1),
    "dur(ns)": (-(2**63), 2**63 - 1),
    "uint": (0, 2**64 - 1),
    "int8": (-128, 127),
    "uint8": (0, 255),
}


class StrictDecodeError(ValueError):
    """The submitted JSON does not match Nomad's api structs; the message names the offending path."""


def check_request(body: Any, keys: dict[str, str]) -> None:
    """Check a request wrapper (`{"Job": ..., "EnforceIndex": ...}`) and the job inside it."""
    if not isinstance(body, dict):
        raise StrictDecodeError(f"the request body must be a JSON object, got {_describe(body)}")
    for key, value in body.items():
        if key not in keys:
            raise StrictDecodeError(f'unknown field "{key}" in the request body')
        if key == "Job":
            continue  # checked below, with paths relative to the job
        _check(value, _parse(keys[key]), key, table())
    if body.get("Job") is not None:
        check_job(body["Job"])


def check_job(job: Any) -> None:
    """Check a job object; paths in messages are relative to the job, e.g. `TaskGroups[0].Tasks[1].Driver`."""
    _check(job, TypeSpec("struct", "Job"), "", table())


def _parse(type_text: str) -> TypeSpec:
    return TypeSpec("struct", type_text) if type_text[0].isupper() else TypeSpec("scalar", type_text)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    kind = {dict: "object", list: "array", str: "string", bool: "boolean"}.get(type(value), "number")
    return f"{kind} {text[:40]}"


def _fail(path: str, expected: str, value: Any) -> StrictDecodeError:
    return StrictDecodeError(f'field "{path or "Job"}" must be {expected}, got {_describe(value)}')


def _check(value: Any, spec: TypeSpec, path: str, structs: StructTable) -> None:
    if value is None:
        return
    if spec.kind == "list":
        if not isinstance(value, list):
            raise _fail(path, f"a JSON array ({spec})", value)
        assert spec.item is not None
        for i, item in enumerate(value):
            _check(item, spec.item, f"{path}[{i}]", structs)
    elif spec.kind == "map":
        if not isinstance(value, dict):
            raise _fail(path, f"a JSON object ({spec})", value)
        assert spec.item is not None
        for key, item in value.items():
            _check(item, spec.item, f"{path}[{key!r}]", structs)
    elif spec.kind == "struct":
        if not isinstance(value, dict):
            raise _fail(path, f"a JSON object ({spec.name})", value)
        if spec.name in structs.opaque:
            return  # the reference names these structs (Consul Connect tree) without listing their fields
        fields = structs.structs[spec.name]
        for key, item in value.items():
            field = fields.get(key)
            if field is None:
                # Nomad would drop this key silently (case-insensitive match, unknown keys ignored).
                raise StrictDecodeError(f'unknown field "{_join(path, key)}"')
            _check(item, field.spec, _join(path, key), structs)
    else:
        _check_scalar(value, spec.name, path)


def _check_scalar(value: Any, name: str, path: str) -> None:
    if name == "any":
        return
    if name in ("string", "bytes"):  # bytes: Go encodes []byte as a base64 string
        if not isinstance(value, str):
            raise _fail(path, "a JSON string", value)
    elif name == "bool":
        if not isinstance(value, bool):
            raise _fail(path, "a JSON boolean", value)
    else:
        expected = f"a JSON integer ({name})"
        if name == "dur(ns)":
            expected = "a JSON integer of nanoseconds (dur(ns))"
        # bool is an int subclass in Python, and floats like 1.5e9 fail Go's integer decoding too.
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, expected, value)
        low, high = _INT_RANGES[name]
        if not low <= value <= high:
            raise _fail(path, f"{expected} in [{low}, {high}]", value)
