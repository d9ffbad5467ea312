"""`nomadgs chat`: talk to a model through its OpenAI chat-completions API, streaming the answer.

The functional core builds request bodies, parses server-sent events and keeps the conversation; `ChatClient`
is the only part that does I/O. The terminal loop itself lives in the CLI module.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..errors import ServiceError
from ..urls import normalise_base_url

API_KEY_ENV = "NOMADGS_API_KEY"


class ChatError(ServiceError):
    """The model endpoint could not be reached or answered with an error."""


@dataclass(frozen=True)
class ChatOptions:
    """What every request of a conversation carries besides the messages."""

    model: str
    max_tokens: int | None = None
    temperature: float | None = None


@dataclass
class Conversation:
    """The messages so far; the system prompt, when there is one, stays first across resets."""

    system: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def ask(self, text: str) -> list[dict[str, str]]:
        """Add a user turn; returns the messages to send."""
        self.messages.append({"role": "user", "content": text})
        return list(self.messages)

    def answer(self, text: str) -> None:
        self.messages.append({"role": "assistant", "content": text})

    def drop_last_question(self) -> None:
        """Forget a user turn that got no answer, so the next question does not follow a dangling one."""
        if self.messages and self.messages[-1]["role"] == "user":
            self.messages.pop()


def request_body(options: ChatOptions, messages: list[dict[str, str]], *, stream: bool = True) -> dict[str, Any]:
    """The JSON body of a chat-completions request; unset options are left to the server's defaults."""
    body: dict[str, Any] = {"model": options.model, "messages": messages, "stream": stream}
    if options.max_tokens is not None:
        body["max_tokens"] = options.max_tokens
    if options.temperature is not None:
        body["temperature"] = options.temperature
    return body


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The `data` of each server-sent event, from the lines of the stream (WHATWG rules: multi-line data is
    joined with newlines, comments and other fields are skipped, an event ends at a blank line)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def deltas(events: Iterable[str]) -> Iterator[str]:
    """The text pieces of a streamed chat completion, up to `[DONE]`; ChatError on an error event."""
    for event in events:
        if event.strip() == "[DONE]":
            return
        try:
            chunk = json.loads(event)
        except ValueError:
            raise ChatError(f"the model sent an event that is not JSON: {event[:200]}") from None
        if not isinstance(chunk, dict):
            continue
        if "error" in chunk:
            raise ChatError(f"the model failed: {error_message(chunk)}")
        text = _choice_text(chunk, "delta")
        if text:
            yield text


def message_text(answer: Any) -> str:
    """The text of a non-streamed chat completion."""
    return _choice_text(answer, "message") if isinstance(answer, dict) else ""


def _choice_text(chunk: dict[str, Any], key: str) -> str:
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    part = choices[0].get(key)
    content = part.get("content") if isinstance(part, dict) else None
    return content if isinstance(content, str) else ""


def error_message(body: Any) -> str:
    """The message of an OpenAI-style error body, else the body itself, shortened."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("message"):
            return str(body["message"])
    text = body if isinstance(body, str) else json.dumps(body)
    return text.strip()[:300] or "(empty answer)"


class ChatClient:
    """Streams chat completions from one OpenAI base URL."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 300.0) -> None:
        self.base_url = normalise_base_url(base_url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            trust_env=False,  # an ambient proxy must not receive the API key
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stream(self, options: ChatOptions, messages: list[dict[str, str]]) -> Iterator[str]:
        """The answer's text pieces as the model writes them; ChatError when the request fails."""
        url = f"{self.base_url}/chat/completions"
        try:
            with self._client.stream("POST", url, json=request_body(options, messages)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ChatError(f"{url} answered {response.status_code}: {error_message(_json_or_text(response))}")
                if "text/event-stream" in response.headers.get("content-type", ""):
                    yield from deltas(sse_data(response.iter_lines()))
                else:
                    # A server that ignores `stream` answers in one piece.
                    response.read()
                    yield message_text(_json_or_text(response))
        except httpx.TimeoutException:
            raise ChatError(f"{url} did not answer in time") from None
        except httpx.TransportError as exc:
            raise ChatError(f"cannot reach {url}: {exc or type(exc).__name__}") from None


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text
