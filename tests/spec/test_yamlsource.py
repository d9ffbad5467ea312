"""Safe YAML parsing: located values, and one clear error for each kind of bad file."""

from __future__ import annotations

import pytest

from nomad_gpustack.errors import InputError
from nomad_gpustack.spec.yamlsource import MAX_FILE_BYTES, decode_text, parse_yaml


def problem_of(text: str) -> str:
    with pytest.raises(InputError) as info:
        parse_yaml(text, "f.yaml")
    assert len(info.value.problems) == 1
    return str(info.value.problems[0])


def test_values_keep_their_lines_and_keys_stay_text() -> None:
    data, source = parse_yaml("a: 1\nversions:\n  1.9:\n    image: x\n", "f.yaml")
    assert data == {"a": 1, "versions": {"1.9": {"image": "x"}}}
    mark = source.locate(("versions", "1.9", "image"))
    assert mark is not None and (mark.line, mark.column) == (4, 12)
    key = source.locate_key(("versions", "1.9"))
    assert key is not None and key.line == 3


def test_duplicate_key_names_both_lines() -> None:
    message = problem_of("name: a\nreplicas: 1\nname: b\n")
    assert message.startswith("f.yaml:3:1: name: duplicate key 'name' (first defined on line 1)")


def test_syntax_error_has_line() -> None:
    message = problem_of("a: [1, 2\nb: 3\n")
    assert message.startswith("f.yaml:2:")
    assert "YAML syntax error" in message


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for i, name in enumerate("bcdefghij"):
        prev = "abcdefghij"[i]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]")
    message = problem_of("\n".join(lines) + "\n")
    assert "alias bomb" in message


def test_recursive_alias_is_refused() -> None:
    assert "recursive alias" in problem_of("a: &a [1, *a]\n")


def test_python_tags_are_refused() -> None:
    assert "not allowed" in problem_of("x: !!python/object/apply:os.system ['true']\n")
    assert "not allowed" in problem_of("x: !!python/object:os.system {}\n")


def test_merge_keys_work_and_explicit_keys_win() -> None:
    data, _ = parse_yaml("base: &b {x: 1, y: 1}\nd:\n  <<: *b\n  y: 2\n", "f.yaml")
    assert data["d"] == {"x": 1, "y": 2}


def test_several_documents_and_empty_file() -> None:
    assert "more than one YAML document" in problem_of("a: 1\n---\nb: 2\n")
    assert "the file is empty" in problem_of("# only a comment\n")


def test_huge_and_binary_files() -> None:
    with pytest.raises(InputError, match="the limit is"):
        decode_text(b"a" * (MAX_FILE_BYTES + 1), "big.yaml")
    with pytest.raises(InputError, match="not valid UTF-8") as info:
        decode_text(b"a: 1\n\xff\xfe\n", "bin.yaml")
    assert info.value.problems[0].line == 2


def test_non_scalar_keys_are_refused() -> None:
    assert "a key must be a plain value" in problem_of("? [a, b]\n: 1\n")
