"""Passing a request through: reading the client's body and its model, the headers that go on, and the
instance's answer relayed chunk by chunk, so server-sent events reach the client as the model writes them."""

from __future__ import annotations

import json
from contextvars import ContextVar
from time import perf_counter
from typing import TYPE_CHECKING, NamedTuple

import anyio
import httpx

from ...durations import SECOND, format_duration
from .errors import ApiError, bad_request

if TYPE_CHECKING:
    from starlette.types import Message, Receive, Scope, Send

# Headers that belong to one connection, not to the request (RFC 9110 §7.6.1), plus those httpx and uvicorn
# set themselves (host, length, server, date).
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
     b"transfer-encoding", b"upgrade", b"expect"}
)  # fmt: skip
_DROP_REQUEST = _HOP_BY_HOP | {b"host", b"content-length"}
_DROP_REQUEST_AUTH = _DROP_REQUEST | {b"authorization"}
_DROP_RESPONSE = _HOP_BY_HOP | {b"server", b"date"}
_IDENTITY = (b"accept-encoding", b"identity")
_WHAT = (
    (httpx.ReadError, "the connection broke while reading"),
    (httpx.WriteError, "the connection broke while sending"),
    (httpx.ConnectError, "cannot connect"),
)

# Set in the request's context when its answer is cut on purpose, for the filter that keeps uvicorn from
# logging that as an error of the application (see server.py): the gateway logs its own line.
RESPONSE_CUT: ContextVar[bool] = ContextVar("nomadgs_response_cut", default=False)


def model_of(body: bytes) -> str:
    """The `model` field of a JSON request body; ApiError 400 when the body is not JSON or has no model."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("We could not parse the JSON body of your request.", "invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.", "invalid_json")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("You must provide a model parameter.", "missing_model", "model")
    return model


def header(scope: Scope, name: bytes) -> bytes | None:
    """The value of the request header `name` (lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:  # ASGI servers give header names in lower case
            return bytes(value)
    return None


def upstream_headers(scope: Scope, *, drop_authorization: bool) -> list[tuple[bytes, bytes]]:
    """The client's headers that go on to the instance: not the hop-by-hop ones, nor the gateway's own key."""
    drop = _DROP_REQUEST_AUTH if drop_authorization else _DROP_REQUEST
    headers = [(k, v) for k, v in scope["headers"] if k not in drop]
    if header(scope, b"accept-encoding") is None:
        headers.append(_IDENTITY)  # else httpx asks for gzip, and the client would get bytes it cannot read
    return headers


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; ApiError 413 above `limit` bytes, 400 when the client leaves first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "The client went away.", "invalid_request_error", "client_disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"The request body is above {limit} bytes.", "invalid_request_error", "too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


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


async def relay(response: httpx.Response, send: Send, idle_timeout: float | None = None) -> Relayed:
    """Pass the instance's answer on as it comes: status, headers, then each chunk as soon as it arrives.
    StreamCut when the instance fails, or sends nothing for `idle_timeout` seconds, in the middle."""
    headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in _DROP_RESPONSE]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    chunks = response.aiter_raw()
    first: float | None = None
    # The last three chunks: an answer's `usage` is at its end (a stream's, in its last event before [DONE]),
    # perhaps split across reads.
    third = second = last = b""
    while True:
        try:
            with anyio.fail_after(idle_timeout):
                chunk = await anext(chunks, None)
        except TimeoutError:
            RESPONSE_CUT.set(True)
            raise StreamCut(f"nothing sent for {seconds_text(idle_timeout)}", timed_out=True) from None
        except httpx.TransportError as exc:
            RESPONSE_CUT.set(True)
            raise StreamCut(reason(exc), timed_out=False) from None
        if chunk is None:
            break
        if first is None:
            first = perf_counter()
        third, second, last = second, last, chunk
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return Relayed(first, (third, second, last))


async def cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    """Cancel `scope` when the client disconnects (run beside the exchange)."""
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


def seconds_text(seconds: float | None) -> str:
    """Seconds as a short duration for messages: 600.0 -> "10m"."""
    return format_duration(round((seconds or 0) * SECOND))


def reason(exc: Exception) -> str:
    """An exception as a short cause for messages: what failed, and the error's own text when it has one."""
    detail = str(exc)
    for cls, what in _WHAT:
        if isinstance(exc, cls):
            return f"{what} ({detail})" if detail else what
    return detail or type(exc).__name__
