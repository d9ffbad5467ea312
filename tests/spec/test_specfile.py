"""Validation errors in the project's voice (spec/specfile.py): every pydantic error a spec model can raise is
worded without pydantic's or Python's words, and points at the line of what is wrong."""

from __future__ import annotations

import copy
import itertools
import re
import typing
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from nomad_gpustack.errors import InputError
from nomad_gpustack.spec.backend import Backend
from nomad_gpustack.spec.deployment import Deployment
from nomad_gpustack.spec.specfile import WORDED, _unwrap, as_written, validate
from nomad_gpustack.spec.yamlsource import parse_yaml

from ..support.helpers import backends, deployment

Path = tuple[str | int, ...]

# Wrong values of every kind YAML can give, and numbers beyond any bound.
WRONG: list[Any] = [None, "text", "", 12345, -1, 10**30, 1.5, True, [1], {"a": 1}]
# Keys no mapping of the spec accepts as they are (env names, node meta keys, version keys, docker options).
WRONG_KEYS = ["A=B", "x y", "", "gpustack_model", "image"]
# What pydantic and Python say, and the project never does.
FOREIGN = re.compile(
    r"[Ii]nput should|Value error|Assertion failed|valid (?:dictionary|integer|string|list|boolean)|instance of|"
    r"NoneType|\bNone\b|\bTrue\b|\bFalse\b|\b(?:dict|str|int|float|bool)\b|pydantic|function-|\[type=|\[key\]|"
    r"{'|\['"
)
MODELS: list[tuple[type[BaseModel], dict[str, Any]]] = [(Deployment, {"name": "m"}), (Backend, {"backend_name": "b"})]


def field_paths(model: type[BaseModel], prefix: Path = ()) -> Iterator[Path]:
    """Every field of a model and of the models inside it; inside a list the first item, inside a mapping a key."""
    for name, info in model.model_fields.items():
        path = (*prefix, name)
        yield path
        annotation = _unwrap(info.annotation)
        origin = typing.get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from field_paths(annotation, path)
        elif origin in (list, dict):
            inner = (*path, 0 if origin is list else "v1")
            yield inner
            item = _unwrap(typing.get_args(annotation)[-1])
            if isinstance(item, type) and issubclass(item, BaseModel):
                yield from field_paths(item, inner)


def put(document: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    """A copy of `document` with `value` at `path`, making the mappings and lists on the way."""
    document = copy.deepcopy(document)
    here: Any = document
    for part, following in itertools.pairwise(path):
        if isinstance(here, list):
            here.extend([None] * (int(part) + 1 - len(here)))
        if not isinstance(here.get(part) if isinstance(here, dict) else here[part], list | dict):
            here[part] = [] if isinstance(following, int) else {}
        here = here[part]
    if isinstance(here, list):
        here.extend([None] * (int(path[-1]) + 1 - len(here)))
    here[path[-1]] = value
    return document


def documents() -> Iterator[tuple[type[BaseModel], str]]:
    """Each model's minimal document with one wrong value (or one wrong key) somewhere, as YAML text."""
    for model, base in MODELS:
        for path in field_paths(model):
            for value in WRONG:
                yield model, yaml.safe_dump(put(base, path, value))
            if isinstance(path[-1], str) and path[-1] == "v1":
                for key in WRONG_KEYS:
                    yield model, yaml.safe_dump(put(base, (*path[:-1], key), "x"))


def test_every_error_a_spec_model_raises_is_worded_in_the_projects_voice() -> None:
    types: set[str] = set()
    messages: set[str] = set()
    count = 0
    for model, text in documents():
        data, source = parse_yaml(text, "f.yaml")
        try:
            model.model_validate(as_written(model, data, source, ()))
        except ValidationError as exc:
            types.update(error["type"] for error in exc.errors())
        try:
            validate(model, data, source)
        except InputError as exc:
            count += 1
            messages.update(p.message + (f" ({p.hint})" if p.hint else "") for p in exc.problems)
    assert count > 500, "the sweep reaches every field"
    assert types <= WORDED, f"pydantic error types without words of ours: {sorted(types - WORDED)}"
    assert {"int_type", "string_type", "literal_error", "less_than_equal", "value_error"} <= types
    foreign = sorted(m for m in messages if FOREIGN.search(m))
    assert not foreign, "\n".join(foreign)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: m\nreplicas:\n", "deploy.yaml:2:10: replicas: expected a whole number, got nothing"),
        ("name: m\nreplicas: 5000\n", "deploy.yaml:2:11: replicas: 5000 is more than 1000, the most this accepts "
                                      "(write a whole number from 0 to 1000)"),
        ("name: m\nnomad:\n  priority: 0\n", "deploy.yaml:3:13: nomad.priority: 0 is less than 1, the least this "
                                             "accepts (write a whole number from 1 to 100)"),
        ("name: m\nnomad:\n  models_mount:\n", "deploy.yaml:3:16: nomad.models_mount: expected text, got nothing "
                                              "(write '' for empty text)"),
        ("name: m\nsource: yes\n", "deploy.yaml:2:9: source: expected 'huggingface', 'model_scope' or 'local_path', "
                                   "got true or false (yes)"),
        ("name: m\nplacement_strategy: {a: 1}\n", "deploy.yaml:2:21: placement_strategy: expected 'spread' or "
                                                  "'binpack', got a mapping (key: value)"),
    ],
)  # fmt: skip
def test_messages_name_values_in_yamls_words(text: str, expected: str) -> None:
    with pytest.raises(InputError) as info:
        deployment(text)
    assert [str(p) for p in info.value.problems] == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: m\nenv:\n  GOOD: x\n  A=B: y\n",
         "deploy.yaml:4:3: env.A=B: 'A=B' is not a valid environment variable name"),
        ("name: m\nworker_selector:\n  zone: a\n  'gpu type': b\n",
         "deploy.yaml:4:3: worker_selector.gpu type: 'gpu type' cannot be a node meta key"),
        ("name: m\nmeta:\n  team: a\n  gpustack_model: b\n",
         "deploy.yaml:4:3: meta.gpustack_model: 'gpustack_model' is set by nomadgs; choose another meta key"),
    ],
)  # fmt: skip
def test_a_wrong_key_points_at_the_keys_line_not_the_blocks(text: str, expected: str) -> None:
    with pytest.raises(InputError) as info:
        deployment(text)
    assert [str(p) for p in info.value.problems] == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("backend_name: b\ndefault_env:\n  A: x\n  'B=C': y\n",
         "backend.yaml:4:3: default_env.B=C: 'B=C' is not a valid environment variable name"),
        ("backend_name: b\nversion_configs:\n  v1: {}\n  'v 2': {}\n",
         "backend.yaml:4:3: version_configs.v 2: version 'v 2' may only use letters, digits, '.', '_' and '-'"),
        ("backend_name: b\nnomad:\n  docker:\n    privileged: true\n    ipc_mod: host\n",
         "backend.yaml:5:5: nomad.docker.ipc_mod: 'ipc_mod' is not a docker driver option; did you mean 'ipc_mode'?"),
        ("backend_name: b\nnomad:\n  ports:\n    - metrics\n    - http\n",
         "backend.yaml:5:7: nomad.ports[1]: 'http' cannot be a port label: use letters, digits and _ "
         "('http' is the main port)"),
    ],
)  # fmt: skip
def test_a_wrong_backend_key_points_at_its_line(text: str, expected: str) -> None:
    with pytest.raises(InputError) as info:
        backends(text)
    assert [str(p) for p in info.value.problems] == [expected]
