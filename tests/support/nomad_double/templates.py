"""Nomad's `template` blocks, rendered the way the client's template hook does before a task starts, for the
subset of consul-template the project's jobs use: plain text, `{{ env "NAME" }}`, `{{ with nomadVar "path" }}`,
`{{ with .KEY }}`, `{{ if ... }}`/`{{ else }}`, `{{ . }}`, string literals, and `{{-`/`-}}` trimming.

Anything else is a render error (the task fails with "Template failed: ..."), never silently kept.
A `nomadVar` whose variable does not exist blocks, as consul-template's does: `Missing` is raised with the
dependency Nomad names in its "Missing: ..." event, and the caller retries later.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .jobspec import JSON

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)

VariableReader = Callable[[str], Mapping[str, str] | None]  # path -> the variable's Items, None if absent


class TemplateError(Exception):
    """The template cannot be rendered: Nomad fails the task with `Template failed: <this>`."""


class Missing(Exception):
    """A dependency (a Nomad variable) does not exist yet; rendering waits for it."""

    def __init__(self, dependency: str) -> None:
        super().__init__(dependency)
        self.dependency = dependency


@dataclass
class _Node:
    kind: str  # text | output | with | if
    text: str = ""
    expr: str = ""
    body: list[_Node] | None = None
    orelse: list[_Node] | None = None


def _parse(source: str) -> list[_Node]:
    pieces: list[tuple[str, str]] = []  # ("text", s) | ("action", s)
    position = 0
    for match in _ACTION.finditer(source):
        text = source[position : match.start()]
        if match[1]:
            text = text.rstrip()
        if pieces and pieces[-1][0] == "trim-next":
            pieces.pop()
            text = text.lstrip()
        pieces.append(("text", text))
        pieces.append(("action", match[2]))
        if match[3]:
            pieces.append(("trim-next", ""))
        position = match.end()
    tail = source[position:]
    if pieces and pieces[-1][0] == "trim-next":
        pieces.pop()
        tail = tail.lstrip()
    pieces.append(("text", tail))

    root: list[_Node] = []
    stack: list[tuple[_Node, list[_Node]]] = []  # open blocks and the list they append to now
    current = root
    for kind, content in pieces:
        if kind == "text":
            if content:
                current.append(_Node("text", text=content))
            continue
        word, _, rest = content.partition(" ")
        if word in ("with", "if"):
            node = _Node(word, expr=rest.strip(), body=[], orelse=[])
            current.append(node)
            stack.append((node, current))
            assert node.body is not None
            current = node.body
        elif word == "else":
            if not stack or rest.strip():
                raise TemplateError(f"unexpected {{{{ {content} }}}}")
            node = stack[-1][0]
            assert node.orelse is not None
            current = node.orelse
        elif word == "end":
            if not stack:
                raise TemplateError("unexpected {{ end }}")
            current = stack.pop()[1]
        elif content.startswith("/*"):
            continue  # a comment
        else:
            current.append(_Node("output", expr=content))
    if stack:
        raise TemplateError(f"unclosed {{{{ {stack[-1][0].kind} }}}}")
    return root


@dataclass
class _Context:
    env: Mapping[str, str]
    variables: VariableReader
    namespace: str


def _evaluate(expr: str, dot: Any, ctx: _Context) -> Any:
    try:
        words = shlex.split(expr)
    except ValueError as exc:
        raise TemplateError(f"cannot parse {{{{ {expr} }}}}: {exc}") from None
    if not words:
        raise TemplateError("empty action")
    head, args = words[0], words[1:]
    if expr.startswith('"'):
        return head
    if head == "." and not args:
        return dot
    if head.startswith(".") and not args:
        if isinstance(dot, Mapping):
            return dot.get(head[1:])
        raise TemplateError(f"can't evaluate field {head[1:]} in type {type(dot).__name__}")
    if head == "env" and len(args) == 1:
        return ctx.env.get(args[0], "")
    if head == "nomadVar" and len(args) == 1:
        items = ctx.variables(args[0])
        if items is None:
            raise Missing(f"nomad.var.block({args[0]}@{ctx.namespace}.global)")
        return dict(items)
    raise TemplateError(f'function "{head}" not defined (the nomad double renders a subset of consul-template)')


def _truthy(value: Any) -> bool:
    return value not in (None, "", 0, False) and not (isinstance(value, Mapping | list) and not value)


def _render(nodes: list[_Node], dot: Any, ctx: _Context, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "output":
            value = _evaluate(node.expr, dot, ctx)
            out.append("" if value is None else str(value))
        else:
            value = _evaluate(node.expr, dot, ctx)
            assert node.body is not None and node.orelse is not None
            if _truthy(value):
                _render(node.body, value if node.kind == "with" else dot, ctx, out)
            else:
                _render(node.orelse, dot, ctx, out)


def render(source: str, env: Mapping[str, str], variables: VariableReader, namespace: str) -> str:
    """The rendered text of one template. Raises TemplateError or Missing."""
    out: list[str] = []
    _render(_parse(source), {}, _Context(env, variables, namespace), out)
    return "".join(out)


def parse_env_file(text: str) -> dict[str, str]:
    """An `env = true` template's output as variables: `KEY=VALUE` lines, `#` comments, optional quotes."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        found[key] = value
    return found


def render_task_templates(
    task: JSON, task_root: Path, env: Mapping[str, str], variables: VariableReader, namespace: str
) -> dict[str, str]:
    """Render every template of `task` into its directory (`DestPath` is relative to the task dir); returns the
    variables of the `env = true` ones. Raises TemplateError or Missing before writing anything."""
    rendered = []
    for template in task.get("Templates") or []:
        if template.get("SourcePath"):
            raise TemplateError("source templates are not supported by the nomad double")
        text = render(template.get("EmbeddedTmpl") or "", env, variables, namespace)
        destination = (task_root / template["DestPath"]).resolve()
        if not destination.is_relative_to(task_root.resolve()):
            raise TemplateError(f"destination {template['DestPath']!r} escapes the task directory")
        rendered.append((template, destination, text))
    extra: dict[str, str] = {}
    for template, destination, text in rendered:
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(text)
        destination.chmod(int(str(template.get("Perms") or "0644"), 8))
        if template.get("Envvars"):
            extra.update(parse_env_file(text))
    return extra
