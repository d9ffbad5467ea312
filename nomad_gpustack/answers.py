"""Whether an HTTP answer can come from the API that was asked (Nomad's, Consul's), or from something else at that
address: a web server, a login page, another service. Pure: status, content type and path in, a reason out;
a decoded answer and the shape the API answers with in, typed data or what does not fit out.

A wrong `NOMAD_ADDR` that reaches some other server must say so in one line, not print that server's page.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from pydantic import TypeAdapter, ValidationError


def content_kind(content_type: str) -> str:
    """The media type of a Content-Type header, lower-case and without parameters (`text/html`)."""
    return content_type.split(";", 1)[0].strip().lower()


def is_html(content_type: str) -> bool:
    return content_kind(content_type) in ("text/html", "application/xhtml+xml")


def foreign_answer(
    status: int,
    content_type: str,
    path: str,
    *,
    json_expected: bool = True,
    never_missing: Callable[[str], bool] = lambda path: False,
) -> str | None:
    """Why this answer cannot come from the API (`404 on /v1/jobs`), or None when it can.

    Neither Nomad nor Consul answers with an HTML page; neither answers 404 on a path that always exists
    (`never_missing`); a successful answer where JSON is expected is JSON, and never a redirect. Neither
    answers 501 (a plain web server that knows no PUT or POST) or 405 (a method not allowed: both APIs take the
    methods their clients here send). Other 5xx answers are left alone: a proxy's error page while the API
    behind it restarts is an outage, not a wrong address.
    """
    if status in (405, 501):
        return f"{status} {content_kind(content_type) or 'without a content type'} on {path}"
    if status >= 500:
        return None
    kind = content_kind(content_type)
    if is_html(content_type):
        return f"{status} {kind} on {path}"
    if status == 404 and never_missing(path):
        return f"404 on {path}"
    if status < 400 and json_expected and kind != "application/json":
        return f"{status} {kind or 'without a content type'} on {path}"
    return None


def html_page(content_type: str, body: str) -> bool:
    """Whether an answer is a web page (a proxy's error page), whose text must not be printed as a message."""
    return is_html(content_type) or body.lstrip()[:15].lower().startswith(("<!doctype html", "<html"))


class WrongShape(ValueError):
    """An answer that is JSON, but not of the shape the API answers with; the text says what does not fit."""


T = TypeVar("T")

# The kind of value each pydantic type error expected, in plain words.
_EXPECTED = {
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}


def shaped(shape: type[T], data: Any, path: str) -> T:
    """`data` (an answer to `path`, decoded, or its raw JSON bytes) as `shape`: a response model, or a type such
    as `list[Model]`.

    The one place an answer becomes typed data: WrongShape says in plain words what does not fit (`the answer
    to /v1/jobs is not a list`, `... is not JSON`), for the caller to report that the server is not the API it
    expected. Raw bytes are read by pydantic's own JSON parser straight into `shape`, without the dicts and
    lists of `json.loads` in between: a large answer (a fleet's allocations) costs about half.
    """
    adapter = _adapter(cast(Hashable, shape))
    try:
        with _collector_paused():
            result: T = adapter.validate_json(data) if isinstance(data, bytes) else adapter.validate_python(data)
    except ValidationError as exc:
        raise WrongShape(_what_does_not_fit(exc, path)) from None
    return result


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while pydantic builds an answer's objects, on again after (if it was on).

    The objects of an answer are a tree and hold no cycle, so a collection then finds nothing; yet the collector
    runs every 700 new objects, every tenth time through the older ones too, and now and then through every
    object of the process: the answers of a fleet of 1,000 (30,000 to 60,000 objects) set it off some fifty
    times, a third of reading them. Cycles other threads leave meanwhile wait as long as one validation."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@functools.cache
def _adapter(shape: Hashable) -> Any:
    return TypeAdapter(cast(Any, shape))


def _what_does_not_fit(exc: Any, path: str) -> str:
    error = exc.errors()[0]
    loc, kind = tuple(error["loc"]), error["type"]
    if kind == "json_invalid":
        return f"the answer to {path} is not JSON"
    if kind == "missing" and loc:
        return f"{_subject(loc[:-1], path)} has no '{loc[-1]}'"
    expected = _EXPECTED.get(kind)
    if expected is None:
        return f"{_subject(loc, path)}: {error['msg'][:1].lower()}{error['msg'][1:]}"
    return f"{_subject(loc, path)} is not {expected}"


def _subject(loc: tuple[Any, ...], path: str) -> str:
    """`'ID' of item 2 in the answer to /v1/jobs`: where in an answer a value is."""
    answer = f"the answer to {path}"
    if not loc:
        return answer
    parts = [f"item {p + 1}" if isinstance(p, int) else f"'{p}'" for p in reversed(loc)]
    return f"{' of '.join(parts)} in {answer}"
