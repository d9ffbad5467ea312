"""Passing a request through: reading the client's body and its model, the headers that go on, and the
instance's answer relayed chunk by chunk, so server-sent events reach the client as the model writes them."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import anyio
import httpx

from .errors import ApiError, bad_request

if TYPE_CHECKING:
    from starlette.types import Message, Receive, Scope, Send

log = logging.getLogger("nomadgs.gateway")

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


async def relay(response: httpx.Response, send: Send, model: str) -> None:
    """Pass the instance's answer on as it comes: status, headers, then each chunk as soon as it arrives."""
    headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in _DROP_RESPONSE]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    try:
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except httpx.TransportError as exc:
        # Too late for an error answer; leaving the response incomplete makes the server cut the connection,
        # which tells the client that the answer is truncated.
        log.warning("model %s: the instance failed in the middle of its answer: %s", model, reason(exc))
        return
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    """Cancel `scope` when the client disconnects (run beside the exchange)."""
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


def reason(exc: Exception) -> str:
    """An exception as a short cause for messages: its text, else its type's name."""
    return str(exc) or type(exc).__name__
