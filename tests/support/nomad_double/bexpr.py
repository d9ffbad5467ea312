"""Nomad's `filter=` expressions on list endpoints: a subset of hashicorp/go-bexpr v0.1.16 (the version Nomad
aa026cc99c uses), evaluated on the stored objects (Go field names), as nomad/state/paginator does.

Supported, with go-bexpr's semantics (grammar/grammar.peg, evaluate.go): selectors `A.B`, `A["key"]`, `A.0`;
values as quoted strings, backquoted strings, numbers or bare words; `==`, `!=`, `in`, `not in`, `contains`,
`not contains`, `matches`, `not matches`, `is empty`, `is not empty`; `and`, `or`, `not` and parentheses.
A missing map key is not an error: each operator has its disposition (`==` false, `!=` true ...,
grammar/ast.go NotPresentDisposition). A missing struct field, or a path through a nil pointer, is an error that
fails the whole request, as in Nomad. Anything else (`is nil`, `any`/`all`, JSON-pointer selectors) is refused
with Nomad's 400 prefix and a plain reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .errors import NomadError

PARSE_PREFIX = "failed to create result paginator: failed to read filter expression: "  # structs.ErrResultPag...
EVAL_PREFIX = "failed to read result page: "
# Fields that are Go maps (a missing key has a disposition) rather than structs (a missing field is an error).
MAP_FIELDS = frozenset(
    {
        "Meta", "TaskStates", "TaskGroups", "Summary", "Details", "Attributes", "Tasks", "TaskLifecycles", "Config",
        "Env", "Volumes", "DimensionExhausted", "ConstraintFiltered", "NodesAvailable", "ClassFiltered",
        "ClassExhausted", "QueuedAllocations", "FailedTGAllocs", "CanaryMeta", "Header", "Links", "Drivers",
    }
)  # fmt: skip
_IDENTIFIER = re.compile(r"[a-zA-Z][a-zA-Z0-9_/]*")
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
_SPACE = re.compile(r"[ \t\r\n]+")


class FilterError(Exception):
    """A filter that does not parse."""


class EvaluationError(Exception):
    """A filter that cannot be evaluated on some object (the whole request fails)."""


@dataclass(frozen=True)
class Match:
    selector: tuple[str, ...]
    operator: str  # ==, !=, in, not in, matches, not matches, is empty, is not empty
    value: str | None


@dataclass(frozen=True)
class Binary:
    operator: str  # and, or
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Not:
    operand: Expr


Expr = Match | Binary | Not


def compile_filter(text: str) -> Expr:
    """Parse a filter, or raise NomadError 400 with Nomad's text."""
    try:
        return _Parser(text).parse()
    except FilterError as exc:
        raise NomadError(400, f"{PARSE_PREFIX}{exc}") from None


def select(expression: Expr, objects: list[Any]) -> list[Any]:
    """The objects the filter matches, or NomadError 400 when it cannot be evaluated on one of them."""
    try:
        return [o for o in objects if evaluate(expression, o)]
    except EvaluationError as exc:
        raise NomadError(400, f"{EVAL_PREFIX}{exc}") from None


# --- parsing (grammar/grammar.peg) -----------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> FilterError:
        line = self.text.count("\n", 0, self.pos) + 1
        column = self.pos - (self.text.rfind("\n", 0, self.pos) + 1) + 1
        return FilterError(f"{line}:{column} ({self.pos}): {what}")

    def space(self) -> bool:
        m = _SPACE.match(self.text, self.pos)
        if m:
            self.pos = m.end()
        return m is not None

    def keyword(self, word: str) -> bool:
        """`word` followed by whitespace (or a parenthesis for `not`), consumed with the whitespace."""
        end = self.pos + len(word)
        if self.text[self.pos : end] != word:
            return False
        rest = self.text[end : end + 1]
        if rest and not rest.isspace() and not (word == "not" and rest == "("):
            return False
        self.pos = end
        self.space()
        return True

    def parse(self) -> Expr:
        self.space()
        expression = self.or_expression()
        self.space()
        if self.pos != len(self.text):
            raise self.fail("no match found")
        return expression

    def or_expression(self) -> Expr:
        left = self.and_expression()
        start = self.pos
        if self.space() and self.keyword("or"):
            return Binary("or", left, self.or_expression())
        self.pos = start
        return left

    def and_expression(self) -> Expr:
        left = self.not_expression()
        start = self.pos
        if self.space() and self.keyword("and"):
            return Binary("and", left, self.and_expression())
        self.pos = start
        return left

    def not_expression(self) -> Expr:
        start = self.pos
        if self.keyword("not") and not self.text.startswith(("in ", "contains ", "matches "), self.pos):
            operand = self.not_expression()
            return operand.operand if isinstance(operand, Not) else Not(operand)
        self.pos = start
        for word in ("any", "all"):
            if self.text.startswith(word + " ", self.pos):
                raise self.fail(f"the Nomad double does not support `{word}` collection expressions")
        if self.text.startswith("(", self.pos):
            self.pos += 1
            self.space()
            inner = self.or_expression()
            self.space()
            if not self.text.startswith(")", self.pos):
                raise self.fail("Unmatched parentheses")
            self.pos += 1
            return inner
        return self.match_expression()

    def match_expression(self) -> Expr:
        start = self.pos
        value = self.value()
        if value is not None:
            operator = self.in_operator()
            if operator is not None:
                selector = self.selector()
                if selector is None:
                    raise self.fail("Invalid selector")
                return Match(selector, operator, value)
        self.pos = start
        selector = self.selector()
        if selector is None:
            raise self.fail("no match found, expected a selector")
        after = self.pos
        self.space()
        for operator in ("==", "!="):
            if self.text.startswith(operator, self.pos):
                self.pos += 2
                self.space()
                value = self.value()
                if value is None:
                    raise self.fail("no match found, expected a value")
                return Match(selector, operator, value)
        self.pos = after
        if self.space():
            for words, operator in (
                (("is", "not", "empty"), "is not empty"),
                (("is", "empty"), "is empty"),
                (("not", "contains"), "not in"),
                (("contains",), "in"),
                (("not", "matches"), "not matches"),
                (("matches",), "matches"),
            ):
                mark = self.pos
                if all(self._word(w) for w in words):
                    if operator in ("is empty", "is not empty"):
                        return Match(selector, operator, None)
                    self.space()
                    value = self.value()
                    if value is None:
                        raise self.fail("no match found, expected a value")
                    return Match(selector, operator, value)
                self.pos = mark
            if self.text.startswith("is ", self.pos):
                raise self.fail("the Nomad double does not support `is nil` and `is not nil`")
        raise self.fail("no match found, expected an operator")

    def _word(self, word: str) -> bool:
        self.space()
        end = self.pos + len(word)
        if self.text[self.pos : end] == word and (end == len(self.text) or not self.text[end].isalnum()):
            self.pos = end
            return True
        return False

    def in_operator(self) -> str | None:
        start = self.pos
        if self.space():
            if self.keyword("in"):
                return "in"
            if self.keyword("not") and self.keyword("in"):
                return "not in"
        self.pos = start
        return None

    def selector(self) -> tuple[str, ...] | None:
        if self.text.startswith('"/', self.pos):
            raise self.fail("the Nomad double does not support JSON pointer selectors")
        m = _IDENTIFIER.match(self.text, self.pos)
        if m is None:
            return None
        parts = [m.group()]
        self.pos = m.end()
        while True:
            if self.text.startswith(".", self.pos):
                ident = _IDENTIFIER.match(self.text, self.pos + 1) or re.compile(r"[0-9]+").match(
                    self.text, self.pos + 1
                )
                if ident is None:
                    raise self.fail("no match found, expected a selector after '.'")
                parts.append(ident.group())
                self.pos = ident.end()
            elif self.text.startswith("[", self.pos):
                self.pos += 1
                self.space()
                literal = self.string()
                if literal is None:
                    raise self.fail("Invalid index")
                self.space()
                if not self.text.startswith("]", self.pos):
                    raise self.fail("Unclosed index expression")
                self.pos += 1
                parts.append(literal)
            else:
                return tuple(parts)

    def string(self) -> str | None:
        quote = self.text[self.pos : self.pos + 1]
        if quote not in ('"', "`"):
            return None
        end = self.text.find(quote, self.pos + 1)
        if end < 0:
            raise self.fail("Unterminated string literal")
        raw = self.text[self.pos + 1 : end]
        self.pos = end + 1
        return raw if quote == "`" else json.loads(f'"{raw}"')

    def value(self) -> str | None:
        literal = self.string()
        if literal is not None:
            return literal
        m = _NUMBER.match(self.text, self.pos)
        if m is not None and not _IDENTIFIER.match(self.text, m.end()):
            self.pos = m.end()
            return m.group()
        start = self.pos
        selector = self.selector()
        if selector is None:
            self.pos = start
            return None
        return ".".join(selector)


# --- evaluation (evaluate.go) ------------------------------------------------------------------------------------


_MISSING = object()


def evaluate(expression: Expr, datum: Any) -> bool:
    if isinstance(expression, Binary):
        left = evaluate(expression.left, datum)
        if expression.operator == "and":
            return left and evaluate(expression.right, datum)
        return left or evaluate(expression.right, datum)
    if isinstance(expression, Not):
        return not evaluate(expression.operand, datum)
    value = _get(datum, expression.selector)
    if value is _MISSING:
        return expression.operator in ("!=", "not in", "is empty", "not matches")  # NotPresentDisposition
    field = expression.selector[-1]
    op = expression.operator
    if op in ("==", "!="):
        return _equal(value, expression.value or "", field) == (op == "==")
    if op in ("in", "not in"):
        return _contains(value, expression.value or "", expression) == (op == "in")
    if op in ("matches", "not matches"):
        if not isinstance(value, str):
            raise EvaluationError(f"value of type {_kind(value, field)} is not convertible to []byte")
        return (re.search(expression.value or "", value) is not None) == (op == "matches")
    if isinstance(value, str | list) or (isinstance(value, dict) and field in MAP_FIELDS):
        return (len(value) == 0) == (op == "is empty")
    selector = ".".join(expression.selector)
    kind = _kind(value, field)
    raise EvaluationError(f'cannot perform is-empty operations on type {kind} for selector: "{selector}"')


def _get(datum: Any, path: tuple[str, ...]) -> Any:
    """pointerstructure Get, with getValue's not-present rule for a missing map key."""
    pointer = "/" + "/".join(path)
    current, name = datum, ""
    for index, part in enumerate(path):
        if isinstance(current, dict) and name in MAP_FIELDS:
            if part not in current:
                return _MISSING
            current = current[part]
        elif isinstance(current, dict):
            if part not in current and part in MAP_FIELDS:
                # A map field the double stores only when set (a job without Meta) is still a field of Nomad's
                # struct (structs.Job.Meta map[string]string ...): a nil map, whose keys are all missing.
                return {} if index == len(path) - 1 else _MISSING
            if part not in current:
                reason = f'couldn\'t find struct field with name "{part}"'
                raise EvaluationError(f"error finding value in datum: {pointer} at part {index}: {reason}")
            current = current[part]
        elif isinstance(current, list):
            if not part.isdigit() or int(part) >= len(current):
                raise EvaluationError(
                    f"error finding value in datum: {pointer} at part {index}: index {part} is out of range "
                    f"(length = {len(current)})"
                )
            current = current[int(part)]
        elif current is None and name in MAP_FIELDS:
            return _MISSING  # a nil map has no keys
        else:
            kind = "invalid" if current is None else _kind(current, name)
            reason = f"at part {index}, invalid value kind: {kind}"
            raise EvaluationError(f"error finding value in datum: {pointer}: {reason}")
        name = part
    return current


def _kind(value: Any, field: str) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "slice"
    if isinstance(value, dict):
        return "map" if field in MAP_FIELDS else "struct"
    return "invalid"


def _coerce(raw: str, like: Any) -> Any:
    """getMatchExprValue: the value converted to the field's kind (strconv's errors)."""
    if isinstance(like, bool):
        if raw in ("1", "t", "T", "TRUE", "true", "True"):
            return True
        if raw in ("0", "f", "F", "FALSE", "false", "False"):
            return False
        reason = f'strconv.ParseBool: parsing "{raw}": invalid syntax'
        raise EvaluationError(f"error getting match value in expression: {reason}")
    if isinstance(like, int):
        try:
            return int(raw)
        except ValueError:
            raise EvaluationError(
                f'error getting match value in expression: strconv.ParseInt: parsing "{raw}": invalid syntax'
            ) from None
    if isinstance(like, float):
        try:
            return float(raw)
        except ValueError:
            raise EvaluationError(
                f'error getting match value in expression: strconv.ParseFloat: parsing "{raw}": invalid syntax'
            ) from None
    return raw


def _equal(value: Any, raw: str, field: str) -> bool:
    if value is None or isinstance(value, dict | list):
        raise EvaluationError("unable to find suitable primitive comparison function for matching")
    return bool(_coerce(raw, value) == value)


def _contains(value: Any, raw: str, expression: Match) -> bool:
    field = expression.selector[-1]
    if isinstance(value, dict) and field in MAP_FIELDS:
        return raw in value
    if isinstance(value, list):
        for item in value:
            if item is None or isinstance(item, dict | list):
                raise EvaluationError('unable to find suitable primitive comparison function for "in" comparison')
            try:
                if _coerce(raw, item) == item:
                    return True
            except EvaluationError:
                continue
        return False
    if isinstance(value, str):
        return raw in value
    selector = ".".join(expression.selector)
    kind = _kind(value, field)
    raise EvaluationError(f'cannot perform in/contains operations on type {kind} for selector: "{selector}"')
