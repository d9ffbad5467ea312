"""Serving the gateway: the listen address, the bound socket, uvicorn's settings, and a server on a thread."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import threading
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import uvicorn

from ...errors import InputError, Problem
from ...urls import origin
from .errors import GatewayError
from .relay import RESPONSE_CUT

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from .app import Gateway

DEFAULT_LISTEN = "127.0.0.1:8080"


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPV6]:PORT` to (host, port); InputError otherwise."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]\s]+):(\d{1,5})", text.strip())
    if not match:
        raise InputError(Problem(f"--listen '{text}' is not HOST:PORT", hint="like 127.0.0.1:8080 or [::1]:8080"))
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise InputError(Problem(f"--listen '{text}': port {port} is above 65535"))
    return host, port


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket bound by us, so that a taken port is a plain error and port 0 tells its number."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say TCP, and
    # with Nagle on, a reused keep-alive connection waits for a delayed ACK: about 40 ms per answer.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise GatewayError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class _CutResponseFilter(logging.Filter):
    """Drops uvicorn's error about an incomplete answer when the gateway cut it on purpose: an instance that
    dies in the middle of a stream is an expected event, and the gateway logs its own line about it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (RESPONSE_CUT.get() and record.getMessage() == _INCOMPLETE)


_INCOMPLETE = "ASGI callable returned without completing response."
_CUT_FILTER = _CutResponseFilter()


def uvicorn_config(app: ASGIApp, *, log_level: str = "warning", access_log: bool = False, quiet: bool = False) -> Any:
    """The uvicorn settings of the gateway and of the servers tests start."""
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level=log_level,
        access_log=access_log,
        log_config=None if quiet else uvicorn.config.LOGGING_CONFIG,
        proxy_headers=False,  # X-Forwarded-* mean nothing here, and the middleware costs time per request
        timeout_graceful_shutdown=5,
    )
    error_log = logging.getLogger("uvicorn.error")  # after Config(): it sets uvicorn's logging up
    if _CUT_FILTER not in error_log.filters:
        error_log.addFilter(_CUT_FILTER)
    return config


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine on uvloop when it is installed (it takes about a quarter off the gateway's added
    latency), else on asyncio's own loop."""
    try:
        import uvloop  # optional: not installed on Windows or PyPy
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


async def serve(gateway: Gateway, sock: socket.socket, *, log_level: str = "info", access_log: bool = False) -> None:
    """Run the gateway until SIGINT/SIGTERM. The source starts first, so an unreachable Consul is an error
    before anything listens."""
    await gateway.start()
    server = uvicorn.Server(uvicorn_config(gateway.asgi(), log_level=log_level, access_log=access_log))
    try:
        await server.serve(sockets=[sock])
    finally:
        await gateway.aclose()


class BackgroundServer:
    """An ASGI application served by uvicorn on a thread of its own, on 127.0.0.1 and a free port by default:
    for embedding the gateway in another program, for tests and benchmarks."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = bind(host, port)
        self.host = host
        self.port = int(self._sock.getsockname()[1])
        self.server = uvicorn.Server(uvicorn_config(app, quiet=True))
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{self.port}", daemon=True)
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return origin(self.host, self.port)

    def _run(self) -> None:
        try:
            run(self.server.serve(sockets=[self._sock]))
        except BaseException as exc:  # reported by start()
            self._error = exc

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start: {self._error}")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
