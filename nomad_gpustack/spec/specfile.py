"""Turning parsed YAML into validated spec models, with every error pointing at its file, line and field."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import HintedValueError, InputError, Problem, in_line_order, suggestion
from .base import AsWritten
from .yamlsource import Path, SourceMap, format_path

M = TypeVar("M", bound=BaseModel)
MAX_PROBLEMS = 10  # per document; past that, the rest is counted

_KIND_NAMES = {
    "str": "text",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "dict": "a mapping (key: value)",
    "list": "a list",
    "NoneType": "nothing",
    "Decimal": "a number",
    "datetime": "a date",
    "date": "a date",
}


@dataclass(frozen=True)
class Sourced(Generic[M]):
    """A validated spec plus where it came from, so later stages can point back at the file."""

    spec: M
    source: SourceMap
    prefix: Path = ()

    @property
    def filename(self) -> str:
        return self.source.filename

    def problem(self, path: Path, message: str, *, hint: str | None = None) -> Problem:
        return self.source.problem((*self.prefix, *path), message, hint=hint)

    def error(self, path: Path, message: str, *, hint: str | None = None) -> InputError:
        return InputError(self.problem(path, message, hint=hint))


def _shown(value: Any, written: str | None = None) -> str:
    """A value as the file wrote it (else in YAML's words: true, not Python's True), cut short."""
    if written is not None:
        text = written
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = repr(value)
    else:
        text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _describe(value: Any, written: str | None = None) -> str:
    """What a value is, for messages: its kind, and the value as the file wrote it."""
    kind = _KIND_NAMES.get(type(value).__name__, "a value of another kind")
    if value is None or isinstance(value, dict | list):
        return kind  # "nothing", "a list": the value itself says no more
    return f"{kind} ({_shown(value, written)})"


def _bounds(model: type[BaseModel], loc: tuple[str | int, ...]) -> tuple[Any, Any]:
    """The least and the most a number field accepts (its `Field(ge=..., le=...)`), where declared."""
    parent = _model_at(model, loc[:-1]) if loc else None
    field = parent.model_fields.get(str(loc[-1])) if parent is not None else None
    metadata = list(field.metadata) if field is not None else []
    annotation = field.annotation if field is not None else None
    for arg in (annotation, *typing.get_args(annotation)):  # `Annotated[int, Field(...)] | None` too
        if typing.get_origin(arg) is typing.Annotated:
            for item in arg.__metadata__:
                metadata.extend(getattr(item, "metadata", [item]))  # a Field(...) holds its Ge and Le
    low = high = None
    for item in metadata:
        low = getattr(item, "ge", low)
        high = getattr(item, "le", high)
    return low, high


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class that holds the last element of `loc`, following fields, lists and dicts."""
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            if not isinstance(part, str) or part not in current.model_fields:
                return None
            current = current.model_fields[part].annotation
        else:
            current = _unwrap(current)
            origin = typing.get_origin(current)
            if origin is list or origin is dict:
                current = typing.get_args(current)[-1]
            else:
                return None
        current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if origin in (typing.Union, types.UnionType) and len(args) == 1:
            annotation = args[0]
            continue
        if origin in (typing.Union, types.UnionType):
            # A mapping or a plain value (`metrics: {path: ...}` or `false`): the mapping's model holds the keys.
            models = [a for a in map(_unwrap, args) if isinstance(a, type) and issubclass(a, BaseModel)]
            if len(models) == 1:
                return models[0]
        return annotation


def _marked(annotation: Any, metadata: Iterable[Any] = ()) -> bool:
    """Whether an annotation (or a field's metadata) carries AS_WRITTEN, through Optional."""
    if any(isinstance(m, AsWritten) for m in metadata):
        return True
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            if any(isinstance(m, AsWritten) for m in annotation.__metadata__):
                return True
            annotation = typing.get_args(annotation)[0]
            continue
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
            annotation = args[0]
            continue
        return False


def as_written(annotation: Any, value: Any, source: SourceMap, path: Path, metadata: Iterable[Any] = ()) -> Any:
    """`value` with the file's own text put back wherever the model marks a field AS_WRITTEN."""
    if _marked(annotation, metadata):
        if value is not None and not isinstance(value, str | list | dict):
            return source.texts.get(path, value)
        return value
    inner = _unwrap(annotation)
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        if not isinstance(value, dict):
            return value
        fields = inner.model_fields
        return {
            key: as_written(fields[key].annotation, item, source, (*path, key), fields[key].metadata)
            if key in fields
            else item
            for key, item in value.items()
        }
    origin = typing.get_origin(inner)
    if origin is list and isinstance(value, list):
        (item_type,) = typing.get_args(inner)
        return [as_written(item_type, item, source, (*path, i)) for i, item in enumerate(value)]
    if origin is dict and isinstance(value, dict):
        item_type = typing.get_args(inner)[-1]
        return {key: as_written(item_type, item, source, (*path, key)) for key, item in value.items()}
    return value


def _clean_loc(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    # pydantic adds validator names ("function-after[...]"), union branches and "[key]" (the error is about a
    # mapping's key, not its value) to some locations.
    return tuple(p for p in loc if isinstance(p, int) or not ("[" in str(p) and "]" in str(p)))


# The pydantic error types the spec models can raise, each worded below in the project's voice
# (tests/spec/test_specfile.py sweeps every field of every model with wrong values to find them).
WORDED = frozenset(
    {
        "extra_forbidden", "missing", "string_type", "int_type", "int_parsing", "int_from_float", "float_type",
        "bool_type", "bool_parsing", "dict_type", "model_type", "model_attributes_type", "list_type",
        "literal_error", "value_error", "assertion_error", "greater_than_equal", "less_than_equal",
        "greater_than", "less_than",
    }
)  # fmt: skip


def problems_from(exc: ValidationError, model: type[BaseModel], source: SourceMap, prefix: Path = ()) -> list[Problem]:
    """Plain-words problems, one per pydantic error, located in the YAML file."""
    problems: list[Problem] = []
    for error in exc.errors(include_url=False):
        loc = _clean_loc(error["loc"])
        path = (*prefix, *loc)
        kind = error["type"]
        value = error.get("input")
        written = source.texts.get(path)
        hint: str | None = None
        key = "[key]" in error["loc"]  # a mapping's key is wrong: point at the key's own line
        if kind == "extra_forbidden":
            name = str(loc[-1])
            parent = _model_at(model, loc[:-1])
            known = list(parent.model_fields) if parent else []
            message = f"unknown key '{_short(name)}'"
            # A model may explain keys it knows but refuses (GPUStack fields with no Nomad meaning).
            hint = getattr(parent, "refused_keys", {}).get(name) or suggestion(name, known)
            if hint is None and known:
                hint = "known keys: " + ", ".join(known)
            key = True
        elif kind == "missing":
            message = f"required key '{loc[-1]}' is missing"
            path = (*prefix, *loc[:-1])
            key = False
        elif kind in ("string_type",):
            message = f"expected text, got {_describe(value, written)}"
            if written is not None:
                hint = f"quote it: '{written}'"  # as written: YAML made 1.10 the number 1.1
            elif isinstance(value, int | float) and not isinstance(value, bool):
                hint = f"quote it: '{value}'"
            elif value is None:
                hint = "write '' for empty text"
        elif kind in ("int_type", "int_parsing", "int_from_float"):
            message = f"expected a whole number, got {_describe(value, written)}"
            if isinstance(value, str) and value.strip().isdigit():
                hint = f"write {value.strip()} without quotes"
        elif kind == "float_type":
            message = f"expected a number, got {_describe(value, written)}"
        elif kind in ("bool_type", "bool_parsing"):
            message = f"expected true or false, got {_describe(value, written)}"
        elif kind in ("dict_type", "model_type", "model_attributes_type"):
            message = f"expected a mapping (key: value), got {_describe(value, written)}"
        elif kind == "list_type":
            message = f"expected a list, got {_describe(value, written)}"
        elif kind == "literal_error":
            expected = error.get("ctx", {}).get("expected", "")
            if isinstance(value, str):
                message = f"'{_shown(value)[1:-1]}' is not allowed here; expected {expected}"
                options = [o.strip().strip("'") for o in str(expected).replace(" or ", ",").split(",")]
                hint = suggestion(value, [o for o in options if o])
            else:
                message = f"expected {expected}, got {_describe(value, written)}"
        elif kind in ("value_error", "assertion_error"):
            message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
            cause = error.get("ctx", {}).get("error")
            if isinstance(cause, HintedValueError):
                message, hint = str(cause), cause.hint
        elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            ctx = error.get("ctx", {})
            shown = _shown(value, written)
            message = {
                "greater_than_equal": f"{shown} is less than {ctx.get('ge')}, the least this accepts",
                "less_than_equal": f"{shown} is more than {ctx.get('le')}, the most this accepts",
                "greater_than": f"{shown} is too small: it must be more than {ctx.get('gt')}",
                "less_than": f"{shown} is too large: it must be less than {ctx.get('lt')}",
            }[kind]
            low, high = _bounds(model, loc)
            if low is not None and high is not None:
                hint = f"write a whole number from {low} to {high}"
        else:  # a type no spec model raises today (WORDED lists those that do): still no pydantic words
            message = f"{_describe(value, written)} is not allowed here"
        mark = source.locate_key(path) if key else source.locate_for_message(path)
        problems.append(
            Problem(
                message,
                source.filename,
                mark.line if mark else None,
                mark.column if mark else None,
                _format(path),
                hint,
            )
        )
    return problems


def _short(text: str, limit: int = 40) -> str:
    """Keys echoed in messages are cut short: the file may not be what the user meant to pass."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format(path: Path) -> str | None:
    return format_path(path) or None


def validate(model: type[M], data: Any, source: SourceMap, prefix: Path = ()) -> Sourced[M]:
    """Validate parsed YAML against a spec model; raise InputError with located problems."""
    if not isinstance(data, dict):
        kind = _KIND_NAMES.get(type(data).__name__, "a value of another kind")  # the value itself is not echoed
        raise InputError(source.problem(prefix, f"expected a mapping (key: value), got {kind}"))
    known = set(model.model_fields) | set(getattr(model, "refused_keys", {})) | set(getattr(model, "ignored_keys", ()))
    if data and not known & set(data):
        # Not one familiar key: the wrong file, not a file with typos. One message, not one per line.
        what = getattr(model, "kind", model.__name__.lower())
        raise InputError(
            source.problem(
                prefix,
                f"this is not a {what} file: none of its keys is a {what} key",
                hint=f"see the {what} keys in the README",
            )
        )
    data = as_written(model, data, source, prefix)
    try:
        spec = model.model_validate(data)
    except ValidationError as exc:
        problems = list(in_line_order(problems_from(exc, model, source, prefix)))  # the first ten from the top
        if len(problems) > MAX_PROBLEMS:
            rest = len(problems) - MAX_PROBLEMS
            problems = [*problems[:MAX_PROBLEMS], Problem(f"... and {rest} more problems", source.filename)]
        raise InputError(problems) from None
    return Sourced(spec, source, prefix)
