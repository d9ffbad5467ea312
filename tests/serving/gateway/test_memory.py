"""What request bodies may hold of the gateway's memory: the model found without holding the body, the rest
streamed to the instance, a budget for all bodies together, and the API key checked before any body is read."""

from __future__ import annotations

import json
import select
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from nomad_gpustack.serving.gateway import StaticSource

from ...support.components import ROOT
from ..fakes import FakeBackend, chat, gateway

BIG = 60 * 1000 * 1000  # bytes per body
CLIENTS = 20


class _Sink(socketserver.BaseRequestHandler):
    """Reads each request's body to its end without keeping it, and answers it."""

    def handle(self) -> None:
        connection: socket.socket = self.request
        buffer = memoryview(bytearray(1 << 20))
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))  # fmt: skip
            left = length - len(data)
            data = data[length:] if left < 0 else b""
            while left > 0:
                got = connection.recv_into(buffer, min(left, len(buffer)))
                if not got:
                    return
                left -= got
            answer = json.dumps({"received": length}).encode()
            connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                               % (len(answer), answer))  # fmt: skip


@pytest.fixture
def sink() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Sink)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


_GATEWAY = """
import sys
from nomad_gpustack.serving.discovery import Endpoint
from nomad_gpustack.serving.gateway import Gateway, StaticSource, bind, run, serve
sock = bind("127.0.0.1", 0)
sock.listen(128)  # connections wait in the backlog until uvicorn takes the socket over
print("listening on", sock.getsockname()[1], flush=True)
endpoint = Endpoint(model="m", service="m", service_id="sink", address="127.0.0.1", port=int(sys.argv[1]),
                    health="passing")
run(serve(Gateway(StaticSource([endpoint]), metrics=False), sock, log_level="warning"))
"""


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory so far, in bytes (VmHWM: the kernel keeps it, no sampling)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _send_big(port: int, halfway: threading.Barrier, go: threading.Event) -> int:
    """A 60 MB chat request: half its body, then (once all are halfway and `go` is set) the rest; its status."""
    prefix = b'{"model": "m", "messages": [{"role": "user", "content": "'
    suffix = b'"}]}'
    filler = b"x" * (1 << 20)
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
                           b"content-length: %d\r\n\r\n%s" % (BIG, prefix))  # fmt: skip
        left = BIG - len(prefix) - len(suffix)
        while left > BIG // 2:
            connection.sendall(filler[: min(left, len(filler))])
            left -= min(left, len(filler))
        halfway.wait(60)
        go.wait(60)
        while left:
            connection.sendall(filler[: min(left, len(filler))])
            left -= min(left, len(filler))
        connection.sendall(suffix)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
        return int(answer.split(b" ", 2)[1])


def test_twenty_concurrent_60_mb_bodies_keep_the_gateway_small_and_a_small_request_is_served_meanwhile(
    sink: int,
) -> None:
    process = subprocess.Popen([sys.executable, "-c", _GATEWAY, str(sink)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30)
        line = process.stdout.readline() if ready else ""
        assert line.startswith("listening on "), "the gateway did not start"
        port = int(line.split()[-1])
        halfway, go = threading.Barrier(CLIENTS + 1), threading.Event()
        with ThreadPoolExecutor(CLIENTS) as pool:
            big = [pool.submit(_send_big, port, halfway, go) for _ in range(CLIENTS)]
            try:
                halfway.wait(120)  # every big request is halfway through its body, and waits
                small = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30,
                                   json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
                assert small.status_code == 200 and small.json() == {"received": len(small.request.content)}
                assert not any(f.done() for f in big)  # served while the big ones are still in progress
            finally:
                go.set()
            statuses = [f.result(timeout=300) for f in big]
        assert statuses == [200] * CLIENTS
        peak = _peak_rss(process.pid)
        assert peak < 400 * 1000 * 1000, f"the gateway's resident memory peaked at {peak / 1e6:.0f} MB"
    finally:
        process.terminate()
        process.wait(10)


def test_bodies_past_the_budget_are_503_with_retry_after_and_the_budget_comes_back(
    backends: Callable[..., FakeBackend],
) -> None:
    a = backends("A")
    # The model after a large value: all of it is held until the model is read.
    late = b'{"messages": [{"role": "user", "content": "' + b"x" * 300_000 + b'"}], "model": "m"}'
    with gateway(StaticSource([a.endpoint("m")]), max_buffered=200_000) as (client, gw):
        refused = client.post("/v1/chat/completions", content=late)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        assert refused.json()["error"]["code"] == "gateway_busy"
        assert gw.budget.held == 0
        assert chat(client, "m").status_code == 200  # a small body fits
        gw.budget.limit = 1_000_000
        served = client.post("/v1/chat/completions", content=late)
        assert served.status_code == 200 and served.json()["served_by"] == "A"
        assert (
            a.requests[-1]["body"]["model"] == "m" and len(a.requests[-1]["body"]["messages"][0]["content"]) == 300_000
        )
        assert gw.budget.held == 0


def test_a_body_streamed_on_reaches_the_instance_whole(backends: Callable[..., FakeBackend]) -> None:
    """The model first, then a body too large to hold: what reaches the instance is what the client sent, with
    or without a Content-Length."""
    a = backends("A")
    body = {"model": "m", "messages": [{"role": "user", "content": "y" * 3_000_000}]}
    data = json.dumps(body).encode()

    def pieces() -> Iterator[bytes]:  # no length: sent chunked
        for start in range(0, len(data), 100_000):
            yield data[start : start + 100_000]

    with gateway(StaticSource([a.endpoint("m")]), max_buffered=1_000_000) as (client, gw):
        assert client.post("/v1/chat/completions", content=data).status_code == 200
        assert client.post("/v1/chat/completions", content=pieces()).status_code == 200
        assert gw.budget.held == 0
    assert [r["body"] for r in a.requests] == [body, body]


def test_a_streamed_body_above_the_limit_is_413(backends: Callable[..., FakeBackend]) -> None:
    a = backends("A")
    data = json.dumps({"model": "m", "messages": [{"role": "user", "content": "z" * 500_000}]}).encode()

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(data), 50_000):
            yield data[start : start + 50_000]

    with gateway(StaticSource([a.endpoint("m")]), max_body=200_000) as (client, gw):
        declared = client.post("/v1/chat/completions", content=data)
        chunked = client.post("/v1/chat/completions", content=pieces())
        assert gw.budget.held == 0
    for response in (declared, chunked):
        assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
    assert a.requests == []


def test_the_api_key_is_checked_before_any_body_is_read(backends: Callable[..., FakeBackend]) -> None:
    a = backends("A")
    with gateway(StaticSource([a.endpoint("m")]), api_keys=["k"]) as (client, _):
        port = client.base_url.port
        assert port is not None
        with socket.create_connection(("127.0.0.1", port)) as connection:
            # A 60 MB body announced, none of it sent: the answer comes anyway.
            connection.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer wrong\r\n"
                               b"content-length: %d\r\n\r\n" % BIG)  # fmt: skip
            connection.settimeout(10)
            assert connection.recv(65536).startswith(b"HTTP/1.1 401 ")
