"""The gateway under faults: a hung instance, a quiet stream, instances that refuse connections, a busy one."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from nomad_gpustack.serving.consul import ConsulWatcher
from nomad_gpustack.serving.gateway import StaticSource
from nomad_gpustack.settings import ConsulSettings

from ...support.components import ConsulAgent
from ..fakes import FakeBackend, ProcessBackend, chat, dead_endpoint, gateway
from ..test_discovery import ConsulServices, unique, wait_until
from .test_outliers import Clock


def test_hung_instance_is_ejected_then_back_after_the_ejection_time_which_grows_the_second_time(
    backends: Callable[..., FakeBackend],
    process_backends: Callable[..., ProcessBackend],
    caplog: pytest.LogCaptureFixture,
) -> None:
    hung, live = process_backends("hung"), backends("live")
    hung_endpoint, live_endpoint = hung.endpoint("m", service_id="a-hung"), live.endpoint("m", service_id="b-live")
    source = StaticSource([hung_endpoint, live_endpoint])
    clock = Clock()  # the ejection's clock; the timeouts are real
    # Not tried last after a failure, so that round robin sends every other request to the hung instance.
    options = {"upstream_timeout": 1.0, "eject_after": 2, "try_last_seconds": 0.0, "eject_for": 30.0, "clock": clock}

    def served_by(count: int) -> set[str]:
        return {chat(client, "m").json()["served_by"] for _ in range(count)}

    def hang_until_ejected() -> list[httpx.Response]:
        hung.hang()  # its port still accepts connections, and Consul would still call it passing
        answers = [chat(client, "m") for _ in range(8)]
        hung.resume()  # it answers again, but it is out for the ejection time: no health check has to change
        assert sorted(r.status_code for r in answers) == [200] * 6 + [504] * 2
        assert {r.json()["served_by"] for r in answers if r.status_code == 200} == {"live"}
        assert gw.outliers.ejected() == [hung_endpoint]
        return answers

    with caplog.at_level(logging.INFO, "nomadgs.gateway"), gateway(source, **options) as (client, gw):
        assert served_by(2) == {"hung", "live"}
        for timed_out in (r for r in hang_until_ejected() if r.status_code == 504):
            assert timed_out.headers["content-type"] == "application/json"
            error = timed_out.json()["error"]
            assert error["code"] == "upstream_timeout" and error["type"] == "server_error"
            assert error["message"] == "The instance of 'm' did not answer within 1s."
        assert any(f"{hung.port} out of rotation for 30s after 2 timeouts or failed connections in a row" in
                   r.getMessage() for r in caplog.records)  # fmt: skip
        clock.advance(29.0)
        assert served_by(4) == {"live"}
        clock.advance(1.0)
        assert served_by(4) == {"hung", "live"}  # back after 30 s
        wait_until(lambda: any(f"{hung.port} back in rotation after 30s out" in r.getMessage()
                               for r in caplog.records), 10, "its return logged")  # fmt: skip

        hang_until_ejected()  # again, at once: twice as long
        assert any(f"{hung.port} out of rotation for 1m after 2 timeouts or failed connections in a row (x2: it "
                   "failed again soon after its last ejection)" in r.getMessage() for r in caplog.records)  # fmt: skip
        clock.advance(59.0)
        assert served_by(4) == {"live"}
        clock.advance(1.0)
        assert served_by(4) == {"hung", "live"}


def test_quiet_stream_is_cut_after_the_idle_timeout(
    backends: Callable[..., FakeBackend], caplog: pytest.LogCaptureFixture
) -> None:
    gate = threading.Event()  # never set: after its first chunk the backend sends nothing for 10 s
    quiet, live = backends("quiet", gate=gate), backends("live")
    quiet_endpoint = quiet.endpoint("m", service_id="a-quiet")
    body = {"model": "m", "stream": True, "messages": []}
    source = StaticSource([quiet_endpoint, live.endpoint("m", service_id="b-live")])  # the first one is tried first
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
        assert gw.outliers.ejected() == [quiet_endpoint]  # a quiet stream counts as a timeout
    assert any(f"127.0.0.1:{quiet.port} stopped in the middle of its answer, which is cut: nothing sent for 500ms"
               in r.getMessage() for r in caplog.records)  # fmt: skip


def test_instance_refusing_connections_in_a_row_is_out_of_rotation(
    backends: Callable[..., FakeBackend], caplog: pytest.LogCaptureFixture
) -> None:
    live = backends("live")
    dead = dead_endpoint("m", "a-dead")
    source = StaticSource([dead, live.endpoint("m", service_id="b-live")])
    options = {"eject_after": 2, "try_last_seconds": 0.0}
    with caplog.at_level(logging.WARNING, "nomadgs.gateway"), gateway(source, **options) as (client, gw):
        responses = [chat(client, "m") for _ in range(8)]
        assert [r.status_code for r in responses] == [200] * 8
        assert gw.outliers.ejected() == [dead]
    retried = [r for r in caplog.records if "trying the next instance" in r.getMessage()]
    assert len(retried) == 2  # then out: not tried again


def test_only_instance_unreachable_is_503_and_stays_in_rotation(caplog: pytest.LogCaptureFixture) -> None:
    """The last instance of a model is never ejected: each request tries it (it may come back before Consul
    says so), and each gets the same 503 as when Consul calls it critical."""
    dead = dead_endpoint("m", "dead")
    with (
        caplog.at_level(logging.WARNING, "nomadgs.gateway"),
        gateway(StaticSource([dead]), eject_after=1) as (
            client,
            gw,
        ),
    ):
        answers = [chat(client, "m") for _ in range(3)]
        assert gw.outliers.ejected() == []
    for response in answers:
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        error = response.json()["error"]
        assert error["code"] == "no_healthy_instance"
        assert (
            error["message"]
            == "The model 'm' has no healthy instance right now: none of its instances could be reached."
        )
    tried = [r for r in caplog.records if "trying the next instance" in r.getMessage()]
    kept = [r for r in caplog.records if "kept in rotation" in r.getMessage()]
    assert len(tried) == 3 and len(kept) == 1
    assert kept[0].getMessage().endswith("after a timeout or failed connection: it is the model's last "
                                         "instance in rotation")  # fmt: skip


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
        options = {"upstream_timeout": 0.5, "eject_after": 1, "try_last_seconds": 0.0}
        with gateway(watcher, **options) as (client, gw):

            def routed() -> set[int]:
                return {e.port for e in gw.source.table.routes.get(model, ())}

            wait_until(lambda: routed() == {hung.port, live.port}, 10, "both instances passing")
            hung.hang()
            # Consul's check (every second, 1 s timeout) has not failed yet: the gateway finds out first.
            statuses = [chat(client, model).status_code for _ in range(2)]
            assert sorted(statuses) == [200, 504]
            assert [e.port for e in gw.outliers.ejected()] == [hung.port]
            wait_until(lambda: routed() == {live.port}, 10, "Consul calls it critical")
            wait_until(lambda: gw.outliers.ejected() == [], 10, "no longer ejected: its state changed")
            hung.resume()
            wait_until(lambda: routed() == {hung.port, live.port}, 10, "its check passes again")
            served = {chat(client, model).json()["served_by"] for _ in range(4)}
            assert served == {"hung", "live"}
    finally:
        registry.close()


def test_timeout_seen_after_the_table_changed_does_not_hold_the_instance_out(
    backends: Callable[..., FakeBackend], process_backends: Callable[..., ProcessBackend]
) -> None:
    """Consul may call a hung instance critical before its requests time out: then that change, not a later
    one, is the fresh state the instance comes back from."""
    hung, live = process_backends("hung"), backends("live")
    live_endpoint = live.endpoint("m", service_id="b-live")  # a peer: the hung one is not the model's last
    source = StaticSource([hung.endpoint("m", service_id="a-hung"), live_endpoint])  # the first one is tried first
    with gateway(source, upstream_timeout=2.0, eject_after=1) as (client, gw):
        hung.hang()
        answer: list[httpx.Response] = []
        asking = threading.Thread(target=lambda: answer.append(chat(client, "m")))
        asking.start()
        wait_until(lambda: unread_bytes(hung.port) > 0, 10, "request waiting in the instance's socket")
        source.set([hung.endpoint("m", service_id="a-hung", health="critical"), live_endpoint])  # Consul noticed
        asking.join(30)
        assert answer[0].status_code == 504
        assert gw.outliers.ejected() == []
        hung.resume()
        source.set([hung.endpoint("m", service_id="a-hung"), live_endpoint])  # its check passes again
        assert {chat(client, "m").json()["served_by"] for _ in range(2)} == {"hung", "live"}


def test_timeout_while_the_instance_answers_other_requests_is_not_counted(
    backends: Callable[..., FakeBackend], caplog: pytest.LogCaptureFixture
) -> None:
    busy = backends("busy")
    endpoint = busy.endpoint("m")
    held = {"model": "m", "hold": True, "messages": []}
    with caplog.at_level(logging.WARNING, "nomadgs.gateway"), gateway(StaticSource([endpoint]), upstream_timeout=1.0,
                                                                     eject_after=1) as (client, gw):  # fmt: skip
        try:
            waiting: list[httpx.Response] = []
            asking = threading.Thread(target=lambda: waiting.append(client.post("/v1/chat/completions", json=held)))
            asking.start()
            wait_until(busy.holding.is_set, 10, "the request waiting for a slot")
            assert chat(client, "m").status_code == 200  # it answers another request meanwhile
            asking.join(30)
            assert waiting[0].status_code == 504
            assert gw.outliers.failures(endpoint) == 0
            [line] = [r.getMessage() for r in caplog.records]
            assert line.endswith("did not answer within 1s (busy: it is answering other requests; not counted as a "
                                 "failure)")  # fmt: skip

            caplog.clear()
            # Alone, and answering nobody: that timeout counts, whatever else waits on it.
            assert client.post("/v1/chat/completions", json=held).status_code == 504
            assert gw.outliers.failures(endpoint) == 1
            assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
                f"127.0.0.1:{busy.port} did not answer within 1s",
                f"127.0.0.1:{busy.port} kept in rotation after a timeout or failed connection: it is "
                "the model's last instance in rotation",
            ]
        finally:
            busy.release.set()


@pytest.mark.e2e
def test_busy_llama_cpp_instance_stays_in_the_gateway_after_a_burst_of_timeouts(
    consul: ConsulAgent, llama_server_one_slot: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One real llama.cpp server with one slot, a burst of 20 requests, an upstream timeout of 2 s: the first
    is answered, the others wait in its queue and most time out. It is busy, not dead, and the last instance
    of its model: it stays in the gateway, and the next request is answered. Before, 3 timeouts took it out
    until its Consul check changed, which a busy server's never does: every later request was a 503."""
    port = int(llama_server_one_slot.rsplit(":", 1)[1])
    model = unique("busy")
    registry = ConsulServices(consul)
    messages = [{"role": "user", "content": "Count from one to one hundred."}]
    # Streamed: llama-server sends the head as soon as a request has the slot, so the first one's answer
    # starts at once however loaded the machine is. 20 x 96 tokens (ignore_eos: none ends early) take far
    # longer than 2 s on one slot, so the queued ones time out.
    burst_body = {"model": model, "stream": True, "max_tokens": 96, "ignore_eos": True, "messages": messages}

    def ask(body: dict[str, object]) -> httpx.Response:
        return client.post("/v1/chat/completions", json=body, timeout=120)

    try:
        # The compiled job's check timeout (5s): llama-server's few HTTP threads are all taken during the burst,
        # so its /health answers late, but it answers.
        registry.register(model, port, http_check=f"{llama_server_one_slot}/health", check_timeout="5s")
        watcher = ConsulWatcher(ConsulSettings(address=consul.address), wait=30)
        with (
            caplog.at_level(logging.WARNING, "nomadgs.gateway"),
            gateway(watcher, upstream_timeout=2.0) as (client, gw),
        ):

            def passing() -> bool:
                return [e.port for e in gw.source.table.routes.get(model, ())] == [port]

            wait_until(passing, 10, "the instance passing in Consul")
            with ThreadPoolExecutor(20) as pool:
                burst = list(pool.map(ask, [burst_body] * 20))
            statuses = [r.status_code for r in burst]
            assert set(statuses) == {200, 504}, statuses
            assert all(r.text.rstrip().endswith("data: [DONE]") for r in burst if r.status_code == 200)
            assert gw.outliers.ejected() == []

            # Should Consul's check have timed out in the burst, it is routed again once it passes.
            wait_until(passing, 30, "the instance passing in Consul")
            after: list[httpx.Response] = []
            wait_until(
                lambda: after.append(ask({**burst_body, "max_tokens": 4})) or after[-1].status_code != 504,
                60,
                "an answer after the burst (its queue may still hold requests whose clients left)",
            )
            assert after[-1].status_code == 200, after[-1].text  # not 503: it was never out
            assert after[-1].text.rstrip().endswith("data: [DONE]")
    finally:
        registry.close()
