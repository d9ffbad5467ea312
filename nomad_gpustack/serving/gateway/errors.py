"""Errors: the one the gateway raises when it cannot start, and the ones it answers in OpenAI's shape."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ...errors import NomadgsError

if TYPE_CHECKING:
    from starlette.types import Send

log = logging.getLogger("nomadgs.gateway")

RETRY_AFTER = 5  # seconds, in the Retry-After of a 503: about the time Consul takes to notice a change


class GatewayError(NomadgsError):
    """The gateway cannot start (its address is taken, ...)."""


class ApiError(Exception):
    """An error answered to the client in OpenAI's shape: `{"error": {"message", "type", "code"}}`."""

    def __init__(
        self, status: int, message: str, type_: str, code: str, param: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.retry_after = retry_after

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.type, "code": self.code, "param": self.param}
        return json.dumps({"error": error}, ensure_ascii=False).encode()

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", b"application/json")]
        if self.status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        if self.retry_after is not None:
            headers.append((b"retry-after", str(self.retry_after).encode()))
        return headers

    def response(self) -> Response:
        return Response(self.body(), self.status, {k.decode(): v.decode() for k, v in self.headers()})


def bad_request(message: str, code: str, param: str | None = None) -> ApiError:
    """A 400 `invalid_request_error`."""
    return ApiError(400, message, "invalid_request_error", code, param)


def not_found(model: str) -> ApiError:
    """The 404 for a model nobody registered."""
    return ApiError(404, f"The model '{model}' does not exist.", "invalid_request_error", "model_not_found", "model")


def no_healthy_instance(model: str, why: str = "") -> ApiError:
    """The 503 for a model that has no instance to take a request now, for whatever reason: one outage, one
    answer, and a Retry-After for the clients that retry."""
    message = f"The model '{model}' has no healthy instance right now{': ' + why if why else ''}."
    return ApiError(503, message, "server_error", "no_healthy_instance", retry_after=RETRY_AFTER)


async def send_error(send: Send, error: ApiError) -> None:
    """Answer `error` on a raw ASGI call."""
    await send({"type": "http.response.start", "status": error.status, "headers": error.headers()})
    await send({"type": "http.response.body", "body": error.body(), "more_body": False})


async def api_error(request: Request, exc: Exception) -> Response:
    """Starlette's handler for ApiError."""
    assert isinstance(exc, ApiError)
    return exc.response()


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown path, wrong method) in OpenAI's shape."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error = ApiError(404, f"Unknown path {request.url.path}.", "invalid_request_error", "unknown_url")
    elif exc.status_code == 405:
        error = ApiError(405, f"{request.method} is not allowed here.", "invalid_request_error", "method_not_allowed")
    else:
        error = ApiError(exc.status_code, str(exc.detail), "invalid_request_error", str(exc.status_code))
    response = error.response()
    response.headers.update(exc.headers or {})
    return response


async def server_error(request: Request, exc: Exception) -> Response:
    """Any other exception: logged with its traceback, answered as a 500 that shows nothing of it."""
    log.exception("unexpected error on %s", request.url.path)
    return ApiError(500, "The gateway failed unexpectedly.", "server_error", "internal_error").response()


EXCEPTION_HANDLERS = {ApiError: api_error, HTTPException: http_error, Exception: server_error}
