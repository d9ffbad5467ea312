"""The upstream connection pool: reuse, a restarted instance, concurrent requests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Container
from typing import Any

import httpx

from nomad_gpustack.serving.discovery import Endpoint
from nomad_gpustack.serving.gateway import BackgroundServer, StaticSource

from ..fakes import FakeBackend, ProcessBackend, chat, gateway
from ..test_discovery import wait_until


def test_pool_reuses_connections_and_survives_a_restarted_instance(backends: Callable[..., FakeBackend]) -> None:
    a = backends("A")
    with gateway(StaticSource([a.endpoint("m")])) as (client, gw):
        for _ in range(5):
            assert chat(client, "m").status_code == 200
        assert len({r["client"] for r in a.requests}) == 1  # one kept-alive connection for all five
        assert gw.pool.connections == 1
        # The instance restarts on the same port: the idle connection is dead and must not be used.
        assert a.server is not None
        port = a.port
        a.server.stop()
        restarted = FakeBackend("A2")
        with BackgroundServer(restarted.app(), port=port):
            response = chat(client, "m")
            assert response.status_code == 200 and response.json()["served_by"] == "A2"
            # Counted while A2 still runs: once it stops, it closes the idle connection and a prune may drop it.
            assert gw.pool.connections == 1
    assert gw.pool.connections == 0  # closed with the gateway


def test_concurrent_requests_each_get_a_connection(backends: Callable[..., FakeBackend]) -> None:
    a, b = backends("A"), backends("B")
    with gateway(StaticSource([a.endpoint("m"), b.endpoint("m")])) as (client, gw):

        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=str(client.base_url), timeout=10) as parallel:
                body = {"model": "m", "stream": True, "messages": []}
                responses = await asyncio.gather(*(parallel.post("/v1/chat/completions", json=body) for _ in range(40)))
            return [r.status_code for r in responses if r.text.endswith("data: [DONE]\n\n")]

        assert asyncio.run(burst()) == [200] * 40
        assert len(a.requests) + len(b.requests) == 40 and abs(len(a.requests) - len(b.requests)) <= 10
        assert gw.balancer.inflight == {}
        assert 2 <= gw.pool.connections <= 40


def test_connections_to_an_instance_are_closed_when_it_leaves_the_table(backends: Callable[..., FakeBackend]) -> None:
    gate = threading.Event()
    a, b = backends("A", gate=gate), backends("B")
    for backend in (a, b):
        assert backend.server is not None
        backend.server.server.config.timeout_keep_alive = 600  # the backends keep idle connections open
    source = StaticSource([a.endpoint("m"), b.endpoint("m")])
    origin_a, origin_b = f"http://127.0.0.1:{a.port}", f"http://127.0.0.1:{b.port}"
    body = {"model": "m", "stream": True, "messages": []}
    with gateway(source) as (client, gw):
        gw.pool.keepalive_expiry = 600  # so that only leaving the table closes them
        prune = gw.pool.prune
        passes: list[object] = []

        async def counted_prune(keep: Container[tuple[bytes, int]]) -> None:
            passes.append(keep)
            await prune(keep)

        gw.pool.prune = counted_prune  # type: ignore[method-assign]
        assert {chat(client, "m").json()["served_by"] for _ in range(4)} == {"A", "B"}
        assert gw.pool.connections_to(origin_a) == gw.pool.connections_to(origin_b) == 1
        source.set([a.endpoint("m"), b.endpoint("m", health="critical")])  # B leaves the rotation
        wait_until(lambda: gw.pool.connections_to(origin_b) == 0, 10, "connection to B closed")
        assert gw.pool.connections_to(origin_a) == 1
        # A leaves too while it streams an answer: that connection is busy, it is not cut; it closes after.
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = response.iter_lines()
            next(lines)
            source.set([b.endpoint("m")])
            seen = len(passes)
            wait_until(lambda: len(passes) > seen + 1, 10, "two upkeep passes")
            assert gw.pool.connections_to(origin_a) == 1
            gate.set()
            assert [line for line in lines if line][-1] == "data: [DONE]"
        wait_until(lambda: gw.pool.connections_to(origin_a) == 0, 10, "connection to A closed")
        assert gw.pool.connections == 0


def test_no_socket_stays_in_close_wait_after_an_instance_dies(
    process_backends: Callable[..., ProcessBackend],
) -> None:
    doomed = process_backends("doomed")
    origin = f"http://127.0.0.1:{doomed.port}"
    with gateway(StaticSource([doomed.endpoint("m")])) as (client, gw):

        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=str(client.base_url), timeout=10) as parallel:
                body = {"model": "m", "stream": True, "messages": []}
                responses = await asyncio.gather(*(parallel.post("/v1/chat/completions", json=body) for _ in range(8)))
            return [r.status_code for r in responses]

        assert asyncio.run(burst()) == [200] * 8
        assert gw.pool.connections_to(origin) >= 2
        doomed.kill()  # while its connections are idle; Consul has not noticed: it stays in the table
        wait_until(lambda: close_wait_sockets(doomed.port) == 0, 10, "no socket in CLOSE-WAIT")
        assert gw.pool.connections_to(origin) == 0


def close_wait_sockets(port: int) -> int:
    """Sockets of this process connected to 127.0.0.1:`port` in CLOSE-WAIT (the peer closed, we did not)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if remote_port == port and fields[3] == "08" and fields[9] in inodes:  # 08: CLOSE_WAIT
                count += 1
    return count


class ClosesKeptAliveConnections:
    """A raw HTTP/1.1 upstream that answers the first request of each connection with keep-alive, then closes
    the connection when the next request arrives, unread: an instance whose idle timeout closes a connection
    just as the gateway sends a request on it. `fresh_only`: also close a new connection unanswered."""

    def __init__(self, fresh_only: bool = False) -> None:
        import socket

        self.fresh_only = fresh_only
        self.answered = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: Any) -> None:
        with connection:
            for turn in range(2):
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                if turn == 1 or self.fresh_only:
                    return  # closed without an answer
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                while len(body) < length:
                    body += connection.recv(65536)
                answer = b'{"choices": [{"message": {"content": "ok"}}]}'
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )
                self.answered += 1

    def endpoint(self, model: str) -> Endpoint:
        return Endpoint(model=model, service=model, service_id=f"raw-{model}", address="127.0.0.1", port=self.port,
                        health="passing", backend="fake")  # fmt: skip

    def close(self) -> None:
        self.listener.close()


def test_a_kept_alive_connection_the_instance_closes_unanswered_is_retried_on_a_new_one() -> None:
    upstream = ClosesKeptAliveConnections()
    try:
        with gateway(StaticSource([upstream.endpoint("m")])) as (client, _):
            assert chat(client, "m").status_code == 200
            # The next request goes out on the kept-alive connection, which the instance closes unread.
            response = chat(client, "m")
            assert response.status_code == 200, response.text
            assert upstream.answered == 2
    finally:
        upstream.close()


def test_a_new_connection_closed_unanswered_is_not_sent_again() -> None:
    upstream = ClosesKeptAliveConnections(fresh_only=True)
    try:
        with gateway(StaticSource([upstream.endpoint("m")])) as (client, _):
            response = chat(client, "m")
            assert response.status_code == 502 and "without sending a response" in response.text
            assert upstream.answered == 0
    finally:
        upstream.close()
