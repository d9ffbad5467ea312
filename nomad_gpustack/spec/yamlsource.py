"""Safe YAML parsing that remembers where every value came from.

PyYAML's own loaders accept duplicate keys (the last one silently wins) and expand aliases without limit
("billion laughs"). We compose the node graph ourselves and build plain Python values from it, so that we can
reject duplicates, bound the work an alias can cause, and keep the line of every key and value for messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import InputError, Problem

Path = tuple[str | int, ...]

MAX_FILE_BYTES = 4 * 1024 * 1024  # community catalogs with inline icons stay far below this
MAX_NODES = 100_000  # values built, counting every alias expansion
MAX_DEPTH = 64

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # C composer when available


_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"})


@dataclass(frozen=True)
class Mark:
    line: int  # 1-based
    column: int  # 1-based


@dataclass
class SourceMap:
    """Where each value of one parsed document sits in its file."""

    filename: str
    marks: dict[Path, Mark] = field(default_factory=dict)
    key_marks: dict[Path, Mark] = field(default_factory=dict)
    # The text of plain scalars that YAML 1.1 typed as something else (017 -> 15, 1.10 -> 1.1, yes -> True).
    texts: dict[Path, str] = field(default_factory=dict)

    def locate(self, path: Path) -> Mark | None:
        """The mark of the value at `path`, or of its nearest parent we know of."""
        for end in range(len(path), -1, -1):
            mark = self.marks.get(path[:end])
            if mark is not None:
                return mark
        return None

    def locate_key(self, path: Path) -> Mark | None:
        """The mark of the key that holds `path` (best for "unknown key" messages)."""
        return self.key_marks.get(path) or self.locate(path)

    def locate_for_message(self, path: Path) -> Mark | None:
        """The value's mark, unless the value is a block that starts on a later line than its key."""
        value = self.locate(path)
        key = self.key_marks.get(path)
        if key is not None and value is not None and value.line != key.line:
            return key
        return value

    def problem(self, path: Path, message: str, *, hint: str | None = None, key: bool = False) -> Problem:
        mark = self.locate_key(path) if key else self.locate_for_message(path)
        return Problem(
            message=message,
            file=self.filename,
            line=mark.line if mark else None,
            column=mark.column if mark else None,
            field=format_path(path) or None,
            hint=hint,
        )


def format_path(path: Path) -> str:
    """`("version_configs", "cuda", "env", 0)` -> `version_configs.cuda.env[0]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, filename: str) -> None:
        self.source = SourceMap(filename)
        self.count = 0
        self.active: set[int] = set()
        self.constructor = yaml.constructor.SafeConstructor()

    def fail(self, node: yaml.Node, path: Path, message: str, hint: str | None = None) -> InputError:
        mark = _mark(node)
        return InputError(
            Problem(message, self.source.filename, mark.line, mark.column, format_path(path) or None, hint)
        )

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.fail(
                node,
                path,
                f"the document expands to more than {MAX_NODES:,} values",
                "this looks like an alias bomb; write the values out instead of nesting aliases",
            )
        if len(path) > MAX_DEPTH:
            raise self.fail(node, path, f"the document nests deeper than {MAX_DEPTH} levels")
        self.source.marks.setdefault(path, _mark(node))
        if isinstance(node, yaml.ScalarNode):
            try:
                value = self.constructor.construct_object(node, deep=True)
            except yaml.constructor.ConstructorError as exc:
                raise self.fail(node, path, f"cannot read this value: {exc.problem}") from None
            if value is not None and not isinstance(value, str):
                self.source.texts[path] = node.value
            return value
        if id(node) in self.active:
            raise self.fail(node, path, "an alias refers to the value that contains it (recursive alias)")
        if node.tag not in _PLAIN_TAGS:
            raise self.fail(node, path, f"the tag {node.tag} is not allowed", "remove the tag; plain YAML is enough")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
            if isinstance(node, yaml.MappingNode):
                return self.build_mapping(node, path)
        finally:
            self.active.discard(id(node))
        raise self.fail(node, path, "unsupported YAML node")  # pragma: no cover - PyYAML has only three kinds

    def key_text(self, node: yaml.Node, path: Path) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, path, "a key must be a plain value, not a list or a mapping")
        # Keys are names (version keys such as `1.9`, env names): keep the text as written, never a float.
        return str(node.value)

    def build_mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        seen: dict[str, yaml.Node] = {}
        merges: list[tuple[yaml.Node, Any]] = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merges.append((value_node, self.build(value_node, path)))
                continue
            key = self.key_text(key_node, path)
            if key in seen:
                first = _mark(seen[key])
                raise self.fail(
                    key_node,
                    (*path, key),
                    f"duplicate key '{key}' (first defined on line {first.line})",
                    "keep only one of them; YAML would silently use the last",
                )
            seen[key] = key_node
            self.source.key_marks[(*path, key)] = _mark(key_node)
            result[key] = self.build(value_node, (*path, key))
        # `<<: *anchor` merge keys: explicit keys win over merged ones.
        for merge_node, merged in merges:
            sources = merged if isinstance(merged, list) else [merged]
            for source in sources:
                if not isinstance(source, dict):
                    raise self.fail(merge_node, path, "a merge key (<<) must refer to a mapping")
                for key, value in source.items():
                    result.setdefault(key, value)
        return result


def parse_yaml(text: str, filename: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document into plain values plus a map of where each value came from."""
    try:
        documents = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        where = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        context = f" {exc.context}" if exc.context else ""
        raise InputError(
            Problem(
                f"YAML syntax error: {problem}{context}",
                filename,
                where.line + 1 if where else None,
                where.column + 1 if where else None,
                hint="check the indentation and quoting around this line",
            )
        ) from None
    except yaml.YAMLError as exc:
        raise InputError(Problem(f"YAML error: {exc}", filename)) from None
    documents = [d for d in documents if d is not None]
    if not documents:
        raise InputError(Problem("the file is empty", filename, hint="it should hold a YAML mapping"))
    if len(documents) > 1:
        raise InputError(
            Problem(
                "the file holds more than one YAML document (---)",
                filename,
                _mark(documents[1]).line,
                hint="put one document per file, or a list in one document",
            )
        )
    builder = _Builder(filename)
    value = builder.build(documents[0], ())
    return value, builder.source


def too_large(size: int, filename: str, *, limit: int = MAX_FILE_BYTES) -> InputError:
    """The error for a file of `size` bytes, more than `limit`: its real size, as the file system says."""
    return InputError(
        Problem(
            f"the file is {size:,} bytes; the limit is {limit:,} bytes",
            filename,
            hint="backend and deployment files are small YAML documents; is this the right file?",
        )
    )


def decode_text(data: bytes, filename: str, *, limit: int = MAX_FILE_BYTES) -> str:
    """Check the size and encoding of a file's bytes before parsing."""
    if len(data) > limit:
        raise too_large(len(data), filename, limit=limit)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(Problem("the file is not valid UTF-8 text", filename, line)) from None
