"""Passing a request through: reading the client's body and its model, the headers that go on, and the
instance's answer relayed chunk by chunk, so server-sent events reach the client as the model writes them."""

from __future__ import annotations

import json
import re
from contextvars import ContextVar
from time import perf_counter
from typing import TYPE_CHECKING, NamedTuple

from ...durations import SECOND, format_duration
from .errors import RETRY_AFTER, ApiError, bad_request
from .pool import Connection, UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

# Headers that belong to one connection, not to the request (RFC 9110 §7.6.1), plus those the gateway and
# uvicorn set themselves (host, length, server, date).
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
     b"transfer-encoding", b"upgrade", b"expect"}
)  # fmt: skip
_DROP_REQUEST = _HOP_BY_HOP | {b"host", b"content-length"}
_DROP_REQUEST_AUTH = _DROP_REQUEST | {b"authorization"}
_DROP_RESPONSE = _HOP_BY_HOP | {b"server", b"date"}

# Set in the request's context when its answer is cut on purpose, for the filter that keeps uvicorn from
# logging that as an error of the application (see server.py): the gateway logs its own line.
RESPONSE_CUT: ContextVar[bool] = ContextVar("nomadgs_response_cut", default=False)


def model_of(body: bytes) -> str:
    """The `model` field of a whole JSON request body; ApiError 400 when the body is not JSON or has no model."""
    scan = ModelScan()
    model = scan.feed(body)
    return model if model is not None else scan.finish()


# One JSON token after any white space: an opening, a closing, the start of a string, a separator, or a bare
# value (number, true, false, null).
_TOKEN = re.compile(rb'[ \t\r\n]*(?:([{\[])|([}\]])|(")|([,:])|([^ \t\r\n{}\[\],:"]+))')
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*')  # a string's characters up to its closing quote
_START, _KEY, _COLON, _VALUE, _AFTER, _END = range(6)


class ModelScan:
    """Finds the top-level `model` of a JSON object in a body read piece by piece, without building anything
    of the rest: a bounded scan that skips over values (strings in C, by regular expression) and stops at the
    model's value, so the rest of the body can go on to the instance unread. Checks the object's structure at
    its top level only: the instance reads the body in full, and answers for what is inside.

    `feed` takes the body read so far (the same buffer, grown) and resumes where it stopped."""

    def __init__(self) -> None:
        self._pos = 0
        self._depth = 0
        self._state = _START
        self._string = -1  # where the string being read starts, while one is cut by the end of the buffer
        self._is_model = False  # the value being read is the model's

    def feed(self, buffer: bytes | bytearray) -> str | None:
        """The model once found in `buffer` (the body so far), else None: more is needed. ApiError 400 when
        what was read cannot be a JSON object, or its model is not a name."""
        pos, end = self._pos, len(buffer)
        while True:
            if self._string >= 0:  # inside a string: find its closing quote
                rest = _STRING_REST.match(buffer, pos)
                assert rest is not None  # it matches the empty string
                pos = rest.end()
                if pos >= end or buffer[pos] != 0x22:  # cut by the end of what was read (perhaps in an escape)
                    self._pos = pos
                    return None
                token, self._string, pos = bytes(buffer[self._string : pos + 1]), -1, pos + 1
                model = self._string_token(token)
                if model is not None:
                    return model
                continue
            match = _TOKEN.match(buffer, pos)
            if match is None or (match.end() == end and match.lastindex == 5):
                self._pos = pos  # only white space left, or a bare value that may go on
                if match is None and buffer[pos:end].strip():
                    raise _invalid()
                return None
            pos = match.end()
            kind = match.lastindex or 0  # always a group: each alternative is one
            if kind == 3:
                self._string = pos - 1
                continue
            self._token(kind, match.group(kind))

    def finish(self) -> str:
        """The end of the body, with no model found: ApiError 400."""
        if self._state == _END:
            raise bad_request("You must provide a model parameter.", "missing_model", "model")
        raise _invalid()

    def _string_token(self, token: bytes) -> str | None:
        state = self._state
        if self._depth == 0:
            raise bad_request("The request body must be a JSON object.", "invalid_json")
        if self._depth > 1:
            return None
        if state == _KEY:
            self._is_model = token == b'"model"' or (b"\\" in token and _decode(token) == "model")
            self._state = _COLON
            return None
        if state == _VALUE:
            self._state = _AFTER
            if self._is_model:
                model = _decode(token)
                if not isinstance(model, str) or not model:
                    raise bad_request("You must provide a model parameter.", "missing_model", "model")
                return model
            return None
        raise _invalid()

    def _token(self, kind: int, text: bytes) -> None:
        depth, state = self._depth, self._state
        if kind == 1:  # { or [
            if depth == 0:
                if state != _START:
                    raise _invalid()
                if text != b"{":
                    raise bad_request("The request body must be a JSON object.", "invalid_json")
                self._state = _KEY
            elif depth == 1:
                self._value()
            self._depth = depth + 1
        elif kind == 2:  # } or ]
            if depth == 0:
                raise _invalid()
            if depth == 1:
                if state not in (_KEY, _AFTER) or text != b"}":
                    raise _invalid()
                self._state = _END
            elif depth == 2:
                self._state = _AFTER
            self._depth = depth - 1
        elif kind == 4:  # , or :
            if depth == 1:
                if text == b":" and state == _COLON:
                    self._state = _VALUE
                elif text == b"," and state == _AFTER:
                    self._state = _KEY
                else:
                    raise _invalid()
        elif depth == 0:  # a bare value outside the object
            raise bad_request("The request body must be a JSON object.", "invalid_json")
        elif depth == 1:
            self._value()
            self._state = _AFTER

    def _value(self) -> None:
        """A value other than a string starts at the top level: the model's must be a string."""
        if self._state != _VALUE:
            raise _invalid()
        if self._is_model:
            raise bad_request("You must provide a model parameter.", "missing_model", "model")


def _decode(token: bytes) -> object:
    try:
        return json.loads(token)
    except ValueError:
        raise _invalid() from None


def _invalid() -> ApiError:
    return bad_request("We could not parse the JSON body of your request.", "invalid_json")


def header(scope: Scope, name: bytes) -> bytes | None:
    """The value of the request header `name` (lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:  # ASGI servers give header names in lower case
            return bytes(value)
    return None


def request_head(scope: Scope, target: bytes, host: bytes, framing: bytes, *, drop_authorization: bool) -> bytes:
    """The head of the request to the instance: POST `target` to `host`, with the client's headers but the
    hop-by-hop ones and the gateway's own key, and `framing` (the body's Content-Length or chunked line)."""
    drop = _DROP_REQUEST_AUTH if drop_authorization else _DROP_REQUEST
    lines = [b"POST ", target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
    for key, value in scope["headers"]:
        if key not in drop:
            lines += (key, b": ", value, b"\r\n")
    lines += (framing, b"\r\n")
    return b"".join(lines)


class BodyBudget:
    """What the bodies read to find their model may hold, all requests together: bytes taken as a body is
    read, given back once it went on to the instance (or the request ended)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        """Hold `size` more bytes, if the budget allows."""
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


class Body:
    """A request's body as far as it was read to find its model: `head` (held in memory, `held` bytes taken
    from the budget), and whether that is the whole body (`complete`); the rest is still with the client."""

    __slots__ = ("complete", "head", "held", "model")

    def __init__(self, model: str, head: bytes | bytearray, complete: bool, held: int) -> None:
        self.model = model
        self.head = head
        self.complete = complete
        self.held = held


async def read_model(receive: Receive, budget: BodyBudget, limit: int, declared: int | None) -> Body:
    """Read a request body until its `model` is found (ApiError 400 when it cannot be), holding what was read.
    ApiError 413 when the body is above `limit` bytes (`declared`: its Content-Length, refused before any is
    read), 503 when holding more would take the bodies read by all requests past the budget, 400 when the
    client leaves first."""
    if declared is not None and declared > limit:
        raise too_large(limit)
    scan = ModelScan()
    buffer: bytes | bytearray = b""
    held = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ApiError(400, "The client went away.", "invalid_request_error", "client_disconnected")
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            if held + len(chunk) > limit:
                raise too_large(limit)
            if not budget.take(len(chunk)):
                raise busy()
            held += len(chunk)
            if not buffer:
                buffer = chunk
            else:
                if isinstance(buffer, bytes):
                    buffer = bytearray(buffer)
                buffer += chunk
            model = scan.feed(buffer)
            if model is None and not more:
                model = scan.finish()
            if model is not None:
                return Body(model, buffer, not more, held)
    except BaseException:
        budget.give(held)
        raise


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"The request body is above {limit} bytes.", "invalid_request_error", "too_large")


def busy() -> ApiError:
    """The 503 for a request whose body would take the gateway past what all bodies may hold together."""
    return ApiError(
        503,
        "The gateway is holding as many request bodies as it may; try again shortly.",
        "server_error",
        "gateway_busy",
        retry_after=RETRY_AFTER,
    )


class StreamCut(Exception):
    """The instance failed, or went quiet for too long, after the head of its answer was passed on: too late
    for an error answer. The client's answer is cut as well, which tells it that the answer is truncated."""

    def __init__(self, cause: str, *, timed_out: bool) -> None:
        super().__init__(cause)
        self.timed_out = timed_out


class Relayed(NamedTuple):
    """What passed: when the first chunk of the body did (perf_counter), and the last chunks (for `usage`)."""

    first_chunk: float | None
    tail: tuple[bytes, ...]


def response_headers(connection: Connection) -> list[tuple[bytes, bytes]]:
    """The instance's answer headers that go on to the client: not the hop-by-hop ones, nor the instance's
    server and date (uvicorn sets its own)."""
    return [(k, v) for k, v in connection.headers if k.lower() not in _DROP_RESPONSE]


async def relay(connection: Connection, send: Send, idle_timeout: float | None = None) -> Relayed:
    """Pass the instance's answer on as it comes: status, headers, then what is read of the body, as bytes and
    as soon as it arrives (what arrived together goes together). StreamCut when the instance fails, or sends
    nothing for `idle_timeout` seconds, in the middle."""
    await send({"type": "http.response.start", "status": connection.status, "headers": response_headers(connection)})
    first: float | None = None
    # The last three chunks: an answer's `usage` is at its end (a stream's, in its last event before [DONE]),
    # perhaps split across reads.
    third = second = last = b""
    while True:
        try:
            chunk = await connection.read(idle_timeout)
        except UpstreamTimeout:
            RESPONSE_CUT.set(True)
            raise StreamCut(f"nothing sent for {seconds_text(idle_timeout)}", timed_out=True) from None
        except UpstreamError as exc:
            RESPONSE_CUT.set(True)
            raise StreamCut(str(exc), timed_out=False) from None
        if chunk is None:
            break
        if first is None:
            first = perf_counter()
        third, second, last = second, last, chunk
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return Relayed(first, (third, second, last))


def seconds_text(seconds: float | None) -> str:
    """Seconds as a short duration for messages: 600.0 -> "10m"."""
    return format_duration(round((seconds or 0) * SECOND))
