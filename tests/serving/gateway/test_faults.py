"""The gateway under faults: a hung instance, a quiet stream, instances that refuse connections."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import httpx
import pytest

from nomad_gpustack.serving.consul import ConsulWatcher
from nomad_gpustack.serving.gateway import StaticSource
from nomad_gpustack.settings import ConsulSettings

from ...support.components import ConsulAgent
from ..fakes import FakeBackend, ProcessBackend, chat, dead_endpoint, gateway
from ..test_discovery import ConsulServices, unique, wait_until


def test_hung_instance_times_out_with_504_and_stays_out_until_its_health_changes(
    backends: Callable[..., FakeBackend],
    process_backends: Callable[..., ProcessBackend],
    caplog: pytest.LogCaptureFixture,
) -> None:
    hung, live = process_backends("hung"), backends("live")
    hung_endpoint, live_endpoint = hung.endpoint("m", service_id="a-hung"), live.endpoint("m", service_id="b-live")
    source = StaticSource([hung_endpoint, live_endpoint])
    # No soft ejection, so that round robin sends every other request to the hung instance until it is out.
    options = {"upstream_timeout": 1.0, "eject_after": 2, "eject_seconds": 0.0}
    with caplog.at_level(logging.INFO, "nomadgs.gateway"), gateway(source, **options) as (client, gw):
        assert {chat(client, "m").json()["served_by"] for _ in range(2)} == {"hung", "live"}
        hung.hang()  # its port still accepts connections, and Consul would still call it passing
        answers = [chat(client, "m") for _ in range(8)]
        assert sorted(r.status_code for r in answers) == [200] * 6 + [504] * 2
        for timed_out in (r for r in answers if r.status_code == 504):
            assert timed_out.headers["content-type"] == "application/json"
            error = timed_out.json()["error"]
            assert error["code"] == "upstream_timeout" and error["type"] == "server_error"
            assert error["message"] == "The instance of 'm' did not answer within 1s."
        assert {r.json()["served_by"] for r in answers if r.status_code == 200} == {"live"}
        assert gw.balancer.out == [hung_endpoint]
        assert any("out of rotation after 2 timeouts or failed connections in a row" in r.getMessage()
                   for r in caplog.records)  # fmt: skip

        hung.resume()  # it answers again, but the table still shows the same state: it stays out
        assert {chat(client, "m").json()["served_by"] for _ in range(4)} == {"live"}

        source.set([hung.endpoint("m", service_id="a-hung", health="critical"), live_endpoint])
        wait_until(lambda: gw.balancer.out == [], 10, "the table change seen without a request")
        source.set([hung_endpoint, live_endpoint])  # its check passes again: back in rotation
        assert {chat(client, "m").json()["served_by"] for _ in range(4)} == {"hung", "live"}


def test_quiet_stream_is_cut_after_the_idle_timeout(
    backends: Callable[..., FakeBackend], caplog: pytest.LogCaptureFixture
) -> None:
    gate = threading.Event()  # never set: after its first chunk the backend sends nothing for 10 s
    quiet = backends("quiet", gate=gate)
    body = {"model": "m", "stream": True, "messages": []}
    source = StaticSource([quiet.endpoint("m")])
    options = {"stream_idle_timeout": 0.5, "eject_after": 1}
    with caplog.at_level(logging.WARNING, "nomadgs.gateway"), gateway(source, **options) as (client, gw):
        with client.stream("POST", "/v1/chat/completions", json=body, timeout=30) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")
            with pytest.raises(httpx.RemoteProtocolError):  # the answer is cut: the client can tell
                list(lines)
        wait_until(quiet.stream_closed.is_set, 10, "upstream stream closed")
        assert not quiet.stream_finished.is_set()
        assert gw.balancer.out == [quiet.endpoint("m")]  # a quiet stream counts as a timeout
    assert any(f"127.0.0.1:{quiet.port} stopped in the middle of its answer, which is cut: nothing sent for 500ms"
               in r.getMessage() for r in caplog.records)  # fmt: skip


def test_instance_refusing_connections_in_a_row_is_out_of_rotation(
    backends: Callable[..., FakeBackend], caplog: pytest.LogCaptureFixture
) -> None:
    live = backends("live")
    dead = dead_endpoint("m", "a-dead")
    source = StaticSource([dead, live.endpoint("m", service_id="b-live")])
    options = {"eject_after": 2, "eject_seconds": 0.0}
    with caplog.at_level(logging.WARNING, "nomadgs.gateway"), gateway(source, **options) as (client, gw):
        responses = [chat(client, "m") for _ in range(8)]
        assert [r.status_code for r in responses] == [200] * 8
        assert gw.balancer.out == [dead]
    retried = [r for r in caplog.records if "trying the next instance" in r.getMessage()]
    assert len(retried) == 2  # then out: not tried again


def test_only_instance_unreachable_then_out_of_rotation_is_503_both_times() -> None:
    source = StaticSource([dead_endpoint("m", "dead")])
    with gateway(source, eject_after=1) as (client, gw):
        unreachable, held_out = chat(client, "m"), chat(client, "m")
        assert len(gw.balancer.out) == 1
    for response in (unreachable, held_out):
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        assert response.json()["error"]["code"] == "no_healthy_instance"
    assert "out of rotation" in held_out.json()["error"]["message"]


def test_instance_dying_in_the_middle_of_a_stream_is_one_warning_of_ours(
    process_backends: Callable[..., ProcessBackend], caplog: pytest.LogCaptureFixture
) -> None:
    dying = process_backends("dying", hold=True)
    body = {"model": "m", "stream": True, "messages": []}
    with (
        caplog.at_level(logging.INFO),
        gateway(StaticSource([dying.endpoint("m")])) as (client, _),
        client.stream("POST", "/v1/chat/completions", json=body, timeout=30) as response,
    ):
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        dying.kill()
        with pytest.raises(httpx.RemoteProtocolError):  # the client's answer is cut too
            list(lines)
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.levelname) for r in problems] == [("nomadgs.gateway", "WARNING")]  # no uvicorn ERROR
    message = problems[0].getMessage()
    assert f"model m: 127.0.0.1:{dying.port} stopped in the middle of its answer, which is cut: " in message


def test_instance_dying_before_its_answer_is_502_with_the_cause(
    process_backends: Callable[..., ProcessBackend], caplog: pytest.LogCaptureFixture
) -> None:
    dying = process_backends("dying")
    source = StaticSource([dying.endpoint("m")])
    with caplog.at_level(logging.WARNING, "nomadgs.gateway"), gateway(source) as (client, _):
        dying.hang()
        answer: list[httpx.Response] = []
        asking = threading.Thread(target=lambda: answer.append(chat(client, "m")))
        asking.start()
        # Killed with the request unread in its socket: the kernel resets the connection.
        wait_until(lambda: unread_bytes(dying.port) > 0, 10, "request waiting in the instance's socket")
        dying.kill()
        asking.join(30)
    [response] = answer
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_error"
    assert error["message"] == (
        "The instance of 'm' failed before answering: the connection broke while reading (Connection reset by peer)."
    )
    assert any(f"127.0.0.1:{dying.port} failed before answering: the connection broke while reading" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def unread_bytes(port: int) -> int:
    """Bytes waiting to be read in the sockets listening or accepted on 127.0.0.1:`port` (/proc/net/tcp)."""
    total = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port:
                total += int(fields[4].split(":")[1], 16)  # tx_queue:rx_queue
    return total


def test_hung_instance_returns_once_consul_saw_its_check_fail_and_pass(
    consul: ConsulAgent,
    backends: Callable[..., FakeBackend],
    process_backends: Callable[..., ProcessBackend],
) -> None:
    model = unique("hangs")
    hung, live = process_backends("hung"), backends("live")
    registry = ConsulServices(consul)
    try:
        for backend in (hung, live):
            registry.register(model, backend.port, http_check=f"http://127.0.0.1:{backend.port}/health")
        watcher = ConsulWatcher(ConsulSettings(address=consul.address), wait=30)
        options = {"upstream_timeout": 0.5, "eject_after": 1, "eject_seconds": 0.0}
        with gateway(watcher, **options) as (client, gw):

            def routed() -> set[int]:
                return {e.port for e in gw.source.table.routes.get(model, ())}

            wait_until(lambda: routed() == {hung.port, live.port}, 10, "both instances passing")
            hung.hang()
            # Consul's check (every second, 1 s timeout) has not failed yet: the gateway finds out first.
            statuses = [chat(client, model).status_code for _ in range(2)]
            assert sorted(statuses) == [200, 504]
            assert [e.port for e in gw.balancer.out] == [hung.port]
            wait_until(lambda: routed() == {live.port}, 10, "Consul calls it critical")
            wait_until(lambda: gw.balancer.out == [], 10, "no longer held out: its state changed")
            hung.resume()
            wait_until(lambda: routed() == {hung.port, live.port}, 10, "its check passes again")
            served = {chat(client, model).json()["served_by"] for _ in range(4)}
            assert served == {"hung", "live"}
    finally:
        registry.close()


def test_timeout_seen_after_the_table_changed_does_not_hold_the_instance_out(
    process_backends: Callable[..., ProcessBackend],
) -> None:
    """Consul may call a hung instance critical before its requests time out: then that change, not a later
    one, is the fresh state the instance comes back from."""
    hung = process_backends("hung")
    source = StaticSource([hung.endpoint("m")])
    with gateway(source, upstream_timeout=2.0, eject_after=1) as (client, gw):
        hung.hang()
        answer: list[httpx.Response] = []
        asking = threading.Thread(target=lambda: answer.append(chat(client, "m")))
        asking.start()
        wait_until(lambda: unread_bytes(hung.port) > 0, 10, "request waiting in the instance's socket")
        source.set([hung.endpoint("m", health="critical")])  # Consul noticed first
        asking.join(30)
        assert answer[0].status_code == 504
        assert gw.balancer.out == []
        hung.resume()
        source.set([hung.endpoint("m")])  # its check passes again
        assert chat(client, "m").json()["served_by"] == "hung"
