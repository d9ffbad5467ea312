"""`nomadgs chat`: the SSE parsing core, and one-shot mode against a fake OpenAI server, through Consul, and
against the real llama.cpp server."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from nomad_gpustack.cli import main
from nomad_gpustack.serving.chat import (
    ChatError,
    ChatOptions,
    Conversation,
    deltas,
    error_message,
    request_body,
    sse_data,
)
from nomad_gpustack.serving.gateway import BackgroundServer, StaticSource, create_app
from nomad_gpustack.urls import normalise_base_url

from ..support.components import ConsulAgent, free_port
from .fakes import FakeBackend
from .test_discovery import ConsulServices, unique

# ----------------------------------------------------------------------------------------------------
# The core


def test_sse_data_follows_the_event_stream_rules() -> None:
    lines = [": keep-alive comment", "data: one", "", "event: x", "data:two", "data:  three", "", "", "data: last"]
    assert list(sse_data(lines)) == ["one", "two\n three", "last"]


def test_deltas_stop_at_done_and_raise_on_errors() -> None:
    events = [
        '{"choices": [{"delta": {"role": "assistant", "content": null}}]}',
        '{"choices": [{"delta": {"content": "Hel"}}]}',
        '{"choices": []}',
        '{"choices": [{"delta": {"content": "lo"}}]}',
        "[DONE]",
        '{"choices": [{"delta": {"content": "after the end"}}]}',
    ]
    assert "".join(deltas(events)) == "Hello"
    with pytest.raises(ChatError, match="the model failed: context too long"):
        list(deltas(['{"error": {"message": "context too long"}}']))
    with pytest.raises(ChatError, match="not JSON"):
        list(deltas(["{broken"]))


def test_conversation_and_request_body() -> None:
    conversation = Conversation("be brief")
    conversation.ask("hi")
    conversation.answer("hello")
    messages = conversation.ask("and?")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    conversation.drop_last_question()
    conversation.reset()
    assert conversation.messages == [{"role": "system", "content": "be brief"}]
    assert request_body(ChatOptions("m", max_tokens=5, temperature=0.0), messages) == {
        "model": "m", "messages": messages, "stream": True, "max_tokens": 5, "temperature": 0.0
    }  # fmt: skip
    assert request_body(ChatOptions("m"), [], stream=False) == {"model": "m", "messages": [], "stream": False}


def test_base_urls_and_error_messages() -> None:
    assert normalise_base_url("127.0.0.1:8080") == "http://127.0.0.1:8080/v1"
    assert normalise_base_url("https://gw.example/v1/") == "https://gw.example/v1"
    assert error_message({"error": {"message": "bad key", "type": "x"}}) == "bad key"
    assert error_message({"detail": "x"}) == '{"detail": "x"}'
    assert error_message("   ") == "(empty answer)"


# ----------------------------------------------------------------------------------------------------
# One-shot mode


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_one_shot_prints_only_the_streamed_answer(
    backends: Callable[..., FakeBackend],
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = backends("fake", answer="Paris is the capital.")
    argv = ["chat", "geo", "--url", f"127.0.0.1:{fake.port}", "-p", "Capital of France?",
            "--system", "Answer in one sentence.", "--max-tokens", "32", "--temperature", "0.2"]  # fmt: skip
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert out == "hello Paris is the capital. \n"
    [request] = fake.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["body"] == {
        "model": "geo",
        "messages": [{"role": "system", "content": "Answer in one sentence."},
                     {"role": "user", "content": "Capital of France?"}],
        "stream": True, "max_tokens": 32, "temperature": 0.2,
    }  # fmt: skip


def test_one_shot_reads_the_prompt_from_stdin_through_a_gateway_with_a_key(
    backends: Callable[..., FakeBackend],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    fake = backends("fake", answer="fine")
    key_file = tmp_path / "key"
    key_file.write_text("chat-key\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("How are you?\n"))
    with BackgroundServer(create_app(StaticSource([fake.endpoint("m")]), api_keys=["chat-key"])) as gw:
        code, out, err = run(["chat", "m", "--url", gw.url, "--api-key-file", str(key_file)], capsys)
        assert code == 0, err
        assert out == "hello fine \n"
        assert fake.requests[0]["body"]["messages"] == [{"role": "user", "content": "How are you?\n"}]
        # Without the key the gateway's 401 comes back as a plain error.
        monkeypatch.setattr("sys.stdin", io.StringIO("again"))
        code, out, err = run(["chat", "m", "--url", gw.url], capsys)
    assert code == 1 and out == ""
    assert "answered 401: You didn't provide an API key" in err and "chat-key" not in err


def test_one_shot_failures_are_plain_errors(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    code, out, err = run(["chat", "m", "--url", f"http://127.0.0.1:{port}", "-p", "hi"], capsys)
    assert code == 1 and out == ""
    assert f"cannot reach http://127.0.0.1:{port}/v1/chat/completions" in err and "Traceback" not in err
    assert run(["chat", "m", "--url", "x", "-p", "  "], capsys)[0] == 2
    assert run(["chat", "m", "--url", "x", "-p", "hi", "--temperature", "3"], capsys)[0] == 2
    assert run(["chat", "m", "--url", "x", "-p", "hi", "--max-tokens", "0"], capsys)[0] == 2


def test_one_shot_finds_a_healthy_instance_in_consul(
    consul: ConsulAgent,
    backends: Callable[..., FakeBackend],
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = unique("chatty")
    fake = backends("fake", answer="from consul")
    registry = ConsulServices(consul)
    try:
        registry.register(model, free_port(), status="critical")  # never chosen: its check is critical
        registry.register(model, fake.port, status="passing")
        for _ in range(5):  # the instance is picked at random
            code, out, err = run(["chat", model, "-p", "hi", "--consul-address", consul.address], capsys)
            assert code == 0, err
            assert out == "hello from consul \n"
        code, out, err = run(["chat", model + "-x", "-p", "hi", "--consul-address", consul.address], capsys)
        assert code == 1 and f"no instance of model '{model}-x' is registered in Consul" in err
    finally:
        registry.close()


@pytest.mark.e2e
def test_one_shot_against_llama_cpp(llama_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["chat", "smollm2-135m", "--url", llama_server, "-p", "What is the capital of France?",
            "--max-tokens", "24", "--temperature", "0"]  # fmt: skip
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert out.endswith("\n") and out.strip()
