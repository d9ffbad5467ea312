"""Serving the gateway: the listen address, the bound socket, uvicorn's settings, a server on a thread, and
several worker processes on one socket (`serve_workers`)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import select
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn

from ...errors import InputError, Problem
from ...urls import origin
from .errors import GatewayError
from .metrics import MULTIPROCESS_ENV, worker_gone
from .relay import RESPONSE_CUT

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from .app import Gateway

DEFAULT_LISTEN = "127.0.0.1:8080"
DRAIN_TIMEOUT = 30.0  # seconds a stopped gateway lets its requests and streams run to their end
BACKLOG = 2048  # connections the kernel queues before a worker accepts them (uvicorn's default)
RESTART_FIRST = 0.5  # seconds before a dead worker is started again, doubled each time it dies again soon
RESTART_MAX = 30.0
STEADY = 60.0  # a worker that ran this long before it died is started again after RESTART_FIRST
log = logging.getLogger("nomadgs.gateway")
# A worker process's work: serve on the listening socket, call the second argument once serving; its exit code.
Worker = Callable[[socket.socket, Callable[[], None]], int]


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


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening socket bound by us, so that a taken port is a plain error and port 0 tells its number.
    `reuse_port`: other sockets may bind the same address with SO_REUSEPORT too (the workers')."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say TCP, and
    # with Nagle on, a reused keep-alive connection waits for a delayed ACK: about 40 ms per answer.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
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


def uvicorn_config(
    app: ASGIApp,
    *,
    log_level: str = "warning",
    access_log: bool = False,
    quiet: bool = False,
    drain_timeout: float = 5.0,
) -> Any:
    """The uvicorn settings of the gateway and of the servers tests start; `drain_timeout`: how long requests
    and streams in flight may run once the server is told to stop (0: no limit)."""
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level=log_level,
        access_log=access_log,
        log_config=None if quiet else uvicorn.config.LOGGING_CONFIG,
        proxy_headers=False,  # X-Forwarded-* mean nothing here, and the middleware costs time per request
        # Typed int, used as asyncio.timeout's delay (a float; None: no limit).
        timeout_graceful_shutdown=drain_timeout or None,  # type: ignore[arg-type]
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


class _Server(uvicorn.Server):
    """uvicorn's server, stopped alike by SIGTERM (how Nomad, Docker and systemd stop a service) and SIGINT:
    it stops accepting, lets the requests and streams in flight end (`drain_timeout`), and returns. uvicorn's
    own handling raises the signal again once done, so SIGTERM would end the process as killed, not exit 0.
    A second signal cuts the drain short."""

    def __init__(self, config: Any, on_started: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop(self, sig: int, frame: object) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_started is not None:
            self._on_started()


async def serve(
    gateway: Gateway,
    sock: socket.socket,
    *,
    log_level: str = "info",
    access_log: bool = False,
    drain_timeout: float = DRAIN_TIMEOUT,
    on_started: Callable[[], None] | None = None,
) -> None:
    """Run the gateway until SIGINT/SIGTERM, then let what is in flight end (at most `drain_timeout` seconds)
    and return. The source starts first, so an unreachable Consul is an error before anything listens.
    `on_started` is called once the gateway accepts connections."""
    await gateway.start()
    config = uvicorn_config(gateway.asgi(), log_level=log_level, access_log=access_log, drain_timeout=drain_timeout)
    server = _Server(config, on_started)
    try:
        await server.serve(sockets=[sock])
    finally:
        await gateway.aclose()


def worker_count(text: str) -> int:
    """`--workers`: a number from 1, or `auto`: the CPUs this process may run on (its affinity, which a
    container's cpuset or `taskset` narrows, not the machine's count)."""
    if text.strip().lower() == "auto":
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            return os.cpu_count() or 1
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise InputError(Problem(f"--workers '{text}' is not a number of processes", hint="a number from 1, or auto"))
    return count


@dataclass
class _Slot:
    """One worker's place: its process while it runs, when to start it again while it does not."""

    number: int
    pid: int = 0
    started: float = 0.0
    delay: float = 0.0  # the pause before its next start, after a death
    due: float | None = None  # when to start it again


def serve_workers(worker: Worker, sock: socket.socket, count: int) -> int:
    """Run `worker(listening, ready)` in `count` processes forked from this one. `sock` is bound here (with
    `bind(..., reuse_port=True)`), so that a taken port is one error before any worker starts and port 0 gets
    its number, and never listens: each worker binds a socket of its own to the same address with SO_REUSEPORT
    and listens on it (`listening`), and the kernel spreads new connections evenly over them. One socket
    inherited by all spreads them by who wakes first: 16 connections opened one after the other all went to
    one of 2 workers (bench/gateway_bench.py), and a gateway behind a proxy gets few, long-lived connections.
    The price: connections still queued (not yet accepted) on a worker that dies are reset, and another
    program of the same user could bind the port too. `worker` calls `ready()` once it accepts connections and
    returns its exit code.

    What the workers must share is their Prometheus metrics: this process makes a private directory for
    prometheus_client's multiprocess mode (0700, removed at the end) and says so in PROMETHEUS_MULTIPROC_DIR.
    A worker that dies is started again, after a pause that grows while it keeps dying soon after its start
    (logged). SIGTERM or SIGINT is passed on to the workers, which drain; the exit code is 0 when all of them
    ended so. A worker that fails before any has ever accepted (Consul unreachable, ...) ends them all, with
    its exit code: it has said what is wrong.
    """
    directory = tempfile.mkdtemp(prefix="nomadgs-gateway-metrics-")  # mode 0700
    os.environ[MULTIPROCESS_ENV] = directory
    wake_r, wake_w = os.pipe()
    ready_r, ready_w = os.pipe()
    for fd in (wake_r, wake_w, ready_r):
        os.set_blocking(fd, False)
    stopping: list[int] = []

    def on_signal(sig: int, frame: object) -> None:
        stopping.append(sig)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    # A handler of its own, so that a worker's end wakes the loop up (through the wakeup fd) and is no stop.
    previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda sig, frame: None)
    previous_wakeup = signal.set_wakeup_fd(wake_w)
    slots = [_Slot(n) for n in range(1, count + 1)]
    code = 0
    try:
        for slot in slots:
            _start(slot, worker, sock, ready_w, (wake_r, wake_w, ready_r))
        code = _supervise(slots, worker, sock, (wake_r, wake_w, ready_r, ready_w), stopping, directory)
    finally:
        signal.set_wakeup_fd(previous_wakeup)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for fd in (wake_r, wake_w, ready_r, ready_w):
            os.close(fd)
        os.environ.pop(MULTIPROCESS_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)
    return code


def _start(slot: _Slot, worker: Worker, sock: socket.socket, ready_w: int, close: tuple[int, ...]) -> None:
    pid = os.fork()
    if pid == 0:  # the worker: never returns into the parent's code (its `finally` would remove the directory)
        code = 1
        try:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            for fd in close:
                os.close(fd)

            def ready() -> None:
                with contextlib.suppress(OSError):
                    os.write(ready_w, b"r")

            host, port = sock.getsockname()[:2]
            listening = bind(host, port, reuse_port=True)
            sock.close()  # the parent's: bound, never listening, no connection goes to it
            listening.listen(BACKLOG)
            code = worker(listening, ready)
        except BaseException:
            log.exception("gateway worker %d failed", slot.number)
        finally:
            logging.shutdown()
            os._exit(code)
    slot.pid = pid
    slot.started = time.monotonic()
    slot.due = None


def _supervise(
    slots: list[_Slot],
    worker: Worker,
    sock: socket.socket,
    fds: tuple[int, int, int, int],
    stopping: list[int],
    directory: str,
) -> int:
    """Follow the workers until a signal stops them (then the code they drained with) or one fails before any
    was ready (its code)."""
    wake_r, wake_w, ready_r, ready_w = fds
    ever_ready = False
    while not stopping:
        now = time.monotonic()
        dues = [slot.due for slot in slots if slot.due is not None]
        timeout = max(0.0, min(dues) - now) if dues else None
        readable, _, _ = select.select([wake_r, ready_r], [], [], timeout)
        for fd in readable:
            with contextlib.suppress(BlockingIOError):
                data = os.read(fd, 4096)
                if fd == ready_r and data:
                    ever_ready = True
        for slot, status in _reap(slots):
            worker_gone(slot.pid, directory)
            pid, slot.pid = slot.pid, 0
            code = os.waitstatus_to_exitcode(status)
            if not ever_ready and code != 0 and not stopping:
                _stop_all(slots, signal.SIGTERM)
                _wait_all(slots, directory, wake_r, stopping)
                return code if code > 0 else 1
            lived = time.monotonic() - slot.started
            slot.delay = RESTART_FIRST if lived >= STEADY or not slot.delay else min(slot.delay * 2, RESTART_MAX)
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            log.warning("gateway worker %d (pid %d) %s after %.0fs; started again in %.1fs",
                        slot.number, pid, how, lived, slot.delay)  # fmt: skip
            slot.due = time.monotonic() + slot.delay
        if stopping:
            break
        now = time.monotonic()
        for slot in slots:
            if slot.due is not None and slot.due <= now:
                _start(slot, worker, sock, ready_w, (wake_r, wake_w, ready_r))
    # Stopped: no worker is started again; new connections are refused once every worker has closed its socket.
    log.info("gateway stopping: %d worker(s) finish what is in flight", sum(1 for s in slots if s.pid))
    _stop_all(slots, signal.SIGTERM)
    return _wait_all(slots, directory, wake_r, stopping)


def _reap(slots: list[_Slot]) -> Iterator[tuple[_Slot, int]]:
    """The workers that have ended, with their wait status."""
    by_pid = {slot.pid: slot for slot in slots if slot.pid}
    while by_pid:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        slot = by_pid.pop(pid, None)
        if slot is not None:
            yield slot, status


def _stop_all(slots: list[_Slot], sig: int) -> None:
    for slot in slots:
        if slot.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.pid, sig)


def _wait_all(slots: list[_Slot], directory: str, wake_r: int, stopping: list[int]) -> int:
    """Wait for every worker to end; the first non-zero exit code, else 0. A signal received meanwhile is
    passed on (a second one cuts the workers' drain short)."""
    code = 0
    passed = len(stopping)
    while True:
        for slot, status in _reap(slots):
            worker_gone(slot.pid, directory)
            slot.pid = 0
            exit_code = os.waitstatus_to_exitcode(status)
            # Ended by our SIGTERM before its server handled it (still starting): it had nothing in flight.
            if exit_code and exit_code != -signal.SIGTERM and not code:
                code = exit_code if exit_code > 0 else 1
        if not any(slot.pid for slot in slots):
            return code
        select.select([wake_r], [], [])  # a signal: SIGCHLD, or one more SIGINT/SIGTERM
        with contextlib.suppress(BlockingIOError):
            os.read(wake_r, 4096)
        if len(stopping) > passed:
            passed = len(stopping)
            _stop_all(slots, signal.SIGTERM)


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
