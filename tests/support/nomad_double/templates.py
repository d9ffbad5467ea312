"""Nomad's `template` blocks, rendered the way the client's template hook does before a task starts, for the
subset of consul-template the project's jobs use: plain text, `{{-`/`-}}` trimming, `{{ with }}`, `{{ if }}`,
`{{ range [$i,] [$x :=] }}` (each with `{{ else }}`), `$variables`, `.Field` chains, `{{ . }}`, string and number
literals, parenthesized calls, and the functions `env`, `nomadVar`, `service`, `key`, `loop`, `printf`, `index`.

Anything else is a render error (the task fails with "Template failed: ..."), never silently kept.
A dependency that does not exist blocks, as consul-template's does: `Missing` is raised with the dependency
Nomad names in its "Missing: ..." event, and the caller retries later. `nomadVar` of an absent variable and
`key` of an absent Consul key block (consul-template's blocking KVGetQuery: `kv.block(path)`); `service`
never blocks: it is the passing instances of the service, possibly none (dependency/health_service.go: no
status filter means `passing=1`; sorted by node, then ID).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .jobspec import JSON

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
_TOKEN = re.compile(
    r'\s*("(?:[^"\\]|\\.)*"|`[^`]*`|\(|\)|\$[A-Za-z0-9_]*|\.[A-Za-z0-9_.]*|-?\d+|[A-Za-z_][A-Za-z0-9_]*)'
)
_RANGE = re.compile(r"^(\$[A-Za-z0-9_]*)(?:\s*,\s*(\$[A-Za-z0-9_]*))?\s*:=\s*(.*)$", re.S)
# consul-template's service query: tag.name@datacenter (dependency/health_service.go ParseHealthServices).
_SERVICE = re.compile(r"\A((?P<tag>[\w\-.]+)\.)?(?P<name>[\w\-/]+)(@(?P<dc>[\w.\-]+))?(:(?P<port>[0-9]+))?\Z")

VariableReader = Callable[[str], Mapping[str, str] | None]  # path -> the variable's Items, None if absent


class ConsulReader(Protocol):
    """What `service` and `key` read from the Consul agent the client uses."""

    def health_service(self, name: str, tag: str) -> list[JSON]:
        """`/v1/health/service/:name?passing=1[&tag=]`: the entries (Node, Service, Checks)."""
        ...

    def key(self, path: str) -> str | None:
        """The value of a KV key, None when it does not exist."""
        ...


class TemplateError(Exception):
    """The template cannot be rendered: Nomad fails the task with `Template failed: <this>`."""


class Missing(Exception):
    """A dependency (a Nomad variable, a Consul key) does not exist yet; rendering waits for it."""

    def __init__(self, dependency: str) -> None:
        super().__init__(dependency)
        self.dependency = dependency


@dataclass
class _Node:
    kind: str  # text | output | with | if | range
    text: str = ""
    expr: str = ""
    names: tuple[str, ...] = ()  # range: the variables it declares
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
        if word in ("with", "if", "range"):
            node = _Node(word, expr=rest.strip(), body=[], orelse=[])
            if word == "range" and (declared := _RANGE.match(node.expr)):
                node.names = tuple(n for n in declared.groups()[:2] if n)
                node.expr = declared[3].strip()
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
    consul: ConsulReader | None
    scopes: list[dict[str, Any]] = field(default_factory=list)
    watched: bool = False  # a Consul dependency was read: the template is watched for changes


def _tokens(expr: str) -> list[str]:
    found: list[str] = []
    position = 0
    while position < len(expr):
        if not expr[position:].strip():
            break
        match = _TOKEN.match(expr, position)
        if match is None:
            raise TemplateError(f"cannot parse {{{{ {expr} }}}} at {expr[position:]!r}")
        found.append(match[1])
        position = match.end()
    return found


def _evaluate(expr: str, dot: Any, ctx: _Context) -> Any:
    tokens = _tokens(expr)
    if not tokens:
        raise TemplateError("empty action")
    value, rest = _command(tokens, dot, ctx)
    if rest:
        raise TemplateError(f"cannot parse {{{{ {expr} }}}}: unexpected {rest[0]!r}")
    return value


def _command(tokens: list[str], dot: Any, ctx: _Context) -> tuple[Any, list[str]]:
    """A function call with its arguments up to the end or a `)`, or a single operand."""
    head = tokens[0]
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", head) and head not in ("true", "false", "nil"):
        args: list[Any] = []
        rest = tokens[1:]
        while rest and rest[0] != ")":
            value, rest = _operand(rest, dot, ctx)
            args.append(value)
        return _call(head, args, ctx), rest
    value, rest = _operand(tokens, dot, ctx)
    if rest and rest[0] != ")":
        raise TemplateError(f"can't give argument to non-function {head}")
    return value, rest


def _operand(tokens: list[str], dot: Any, ctx: _Context) -> tuple[Any, list[str]]:
    token, rest = tokens[0], tokens[1:]
    if token == "(":
        value, rest = _command(rest, dot, ctx)
        if not rest or rest[0] != ")":
            raise TemplateError("unclosed (")
        return value, rest[1:]
    if token.startswith('"'):
        return bytes(token[1:-1], "utf-8").decode("unicode_escape"), rest
    if token.startswith("`"):
        return token[1:-1], rest
    if re.fullmatch(r"-?\d+", token):
        return int(token), rest
    if token in ("true", "false"):
        return token == "true", rest
    if token.startswith("$"):
        for scope in reversed(ctx.scopes):
            if token in scope:
                return scope[token], rest
        raise TemplateError(f'undefined variable "{token}"')
    if token.startswith("."):
        value = dot
        for name in [n for n in token.split(".") if n]:
            if not isinstance(value, Mapping):
                raise TemplateError(f"can't evaluate field {name} in type {type(value).__name__}")
            value = value.get(name)
        return value, rest
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", token):  # a function without arguments, as an argument
        return _call(token, [], ctx), rest
    raise TemplateError(f"unexpected {token!r}")


def _call(name: str, args: list[Any], ctx: _Context) -> Any:
    if name == "env" and len(args) == 1:
        return ctx.env.get(str(args[0]), "")
    if name == "nomadVar" and len(args) == 1:
        items = ctx.variables(str(args[0]))
        if items is None:
            raise Missing(f"nomad.var.block({args[0]}@{ctx.namespace}.global)")
        return dict(items)
    if name == "loop" and len(args) in (1, 2) and all(isinstance(a, int) for a in args):
        return list(range(*args))  # consul-template's loop: [0, n) or [start, stop)
    if name == "printf" and args:
        # Go's verbs the templates use: %s, %d, %v.
        return str(args[0]).replace("%v", "%s") % tuple(args[1:])
    if name == "index" and len(args) == 2:
        collection, at = args
        try:
            return collection[at]
        except (IndexError, KeyError, TypeError):
            raise TemplateError(f"error calling index: index out of range: {at}") from None
    if name in ("service", "key"):
        if ctx.consul is None:
            raise TemplateError(f'function "{name}": no Consul is configured for the nomad double\'s client')
        ctx.watched = True
        if name == "key" and len(args) == 1:
            value = ctx.consul.key(str(args[0]))
            if value is None:
                raise Missing(f"kv.block({args[0]})")
            return value
        if name == "service" and len(args) == 1:
            return _service(ctx.consul, str(args[0]))
    raise TemplateError(f'function "{name}" not defined (the nomad double renders a subset of consul-template)')


def _service(consul: ConsulReader, query: str) -> list[JSON]:
    """consul-template's `service`: the passing instances as HealthService values, sorted by node then ID."""
    match = _SERVICE.match(query)
    if match is None:
        raise TemplateError(f"service: invalid health service dependency format {query!r}")
    found = []
    for entry in consul.health_service(match["name"], match["tag"] or ""):
        service, node = entry["Service"], entry["Node"]
        found.append(
            {
                "Node": node["Node"],
                "NodeAddress": node["Address"],
                "Address": service.get("Address") or node["Address"],
                "ID": service["ID"],
                "Name": service["Service"],
                "Tags": sorted(service.get("Tags") or []),
                "Status": "passing",
                "Port": service["Port"],
            }
        )
    return sorted(found, key=lambda s: (s["Node"], s["ID"]))


def _truthy(value: Any) -> bool:
    return value not in (None, "", 0, False) and not (isinstance(value, Mapping | list) and not value)


def _render(nodes: list[_Node], dot: Any, ctx: _Context, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "output":
            value = _evaluate(node.expr, dot, ctx)
            out.append("" if value is None else str(value))
        elif node.kind == "range":
            _range(node, dot, ctx, out)
        else:
            value = _evaluate(node.expr, dot, ctx)
            assert node.body is not None and node.orelse is not None
            if _truthy(value):
                _render(node.body, value if node.kind == "with" else dot, ctx, out)
            else:
                _render(node.orelse, dot, ctx, out)


def _range(node: _Node, dot: Any, ctx: _Context, out: list[str]) -> None:
    assert node.body is not None and node.orelse is not None
    value = _evaluate(node.expr, dot, ctx)
    items = list(value.items()) if isinstance(value, Mapping) else list(enumerate(value or []))
    if not items:
        _render(node.orelse, dot, ctx, out)
        return
    for key, item in items:
        scope: dict[str, Any] = {}
        if len(node.names) == 2:
            scope = {node.names[0]: key, node.names[1]: item}
        elif node.names:
            scope = {node.names[0]: item}
        ctx.scopes.append(scope)
        try:
            _render(node.body, item, ctx, out)
        finally:
            ctx.scopes.pop()


@dataclass(frozen=True)
class Rendered:
    """One template's text, and whether it read Consul (then Nomad's template runner watches it)."""

    text: str
    watched: bool


def render_one(
    source: str,
    env: Mapping[str, str],
    variables: VariableReader,
    namespace: str,
    consul: ConsulReader | None = None,
) -> Rendered:
    """The rendered text of one template. Raises TemplateError or Missing."""
    out: list[str] = []
    ctx = _Context(env, variables, namespace, consul, scopes=[{"$": {}}])
    _render(_parse(source), {}, ctx, out)
    return Rendered("".join(out), ctx.watched)


def render(
    source: str,
    env: Mapping[str, str],
    variables: VariableReader,
    namespace: str,
    consul: ConsulReader | None = None,
) -> str:
    """The rendered text of one template. Raises TemplateError or Missing."""
    return render_one(source, env, variables, namespace, consul).text


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


@dataclass(frozen=True)
class TaskTemplates:
    """What a task's templates rendered: each one's text by destination, the `env = true` variables, and the
    destinations Nomad's template runner keeps watching (those that read Consul)."""

    texts: dict[str, str]
    env: dict[str, str]
    watched: frozenset[str]


def render_task_templates(
    task: JSON,
    task_root: Path,
    env: Mapping[str, str],
    variables: VariableReader,
    namespace: str,
    consul: ConsulReader | None = None,
) -> TaskTemplates:
    """Render every template of `task` into its directory (`DestPath` is relative to the task dir). Raises
    TemplateError or Missing before writing anything."""
    rendered = []
    for template in task.get("Templates") or []:
        if template.get("SourcePath"):
            raise TemplateError("source templates are not supported by the nomad double")
        result = render_one(template.get("EmbeddedTmpl") or "", env, variables, namespace, consul)
        destination = (task_root / template["DestPath"]).resolve()
        if not destination.is_relative_to(task_root.resolve()):
            raise TemplateError(f"destination {template['DestPath']!r} escapes the task directory")
        rendered.append((template, destination, result))
    extra: dict[str, str] = {}
    for template, destination, result in rendered:
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(result.text)
        destination.chmod(int(str(template.get("Perms") or "0644"), 8))
        if template.get("Envvars"):
            extra.update(parse_env_file(result.text))
    texts = {template["DestPath"]: result.text for template, _, result in rendered}
    watched = frozenset(template["DestPath"] for template, _, result in rendered if result.watched)
    return TaskTemplates(texts, extra, watched)
