"""Fake OpenAI backends, and a gateway in front of them, for the serving tests. Every server runs on 127.0.0.1
with uvicorn on a thread of its own."""

from __future__ import annotations

import asyncio
import json
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from nomad_gpustack.serving.discovery import Endpoint
from nomad_gpustack.serving.gateway import ROUTED_PATHS, BackgroundServer, Gateway, create_app

from ..support.components import ROOT, free_port


def sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def delta(text: str) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]}


class FakeBackend:
    """An OpenAI-like server that says who it is. When streaming it sends "hello ", then waits for `gate`
    (when set up with one) before the rest, so a test can tell relayed chunks from a buffered answer. A request
    with `"hold": true` in its body waits until `release` is set (`holding` says one arrived), as one waiting
    for a busy server's slot, while the others are answered. With `usage`, answers report it as OpenAI's do (a
    stream in its last event); a request with `"status": N` in its body is answered with that status."""

    def __init__(
        self,
        name: str,
        *,
        gate: threading.Event | None = None,
        answer: str | None = None,
        usage: dict[str, int] | None = None,
    ) -> None:
        self.name = name
        self.gate = gate
        self.usage = usage
        self.answer = answer or f"from {name}"
        self.healthy = True
        self.requests: list[dict[str, Any]] = []
        self.stream_finished = threading.Event()  # the generator ran to its end
        self.stream_closed = threading.Event()  # the generator stopped, finished or cancelled
        self.holding = threading.Event()
        self.release = threading.Event()
        self.server: BackgroundServer | None = None

    def app(self) -> Starlette:
        routes = [Route(path, self._handle, methods=["POST"]) for path in ROUTED_PATHS]
        routes.append(Route("/health", self._health))
        return Starlette(routes=routes)

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok" if self.healthy else "sick"}, 200 if self.healthy else 500)

    async def _handle(self, request: Request) -> Response:
        body = await request.json()
        client = request.client.port if request.client else None
        self.requests.append(
            {"path": request.url.path, "headers": dict(request.headers), "body": body, "client": client}
        )
        if body.get("hold"):
            self.holding.set()
            deadline = time.monotonic() + 10
            while not self.release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
        if body.get("status"):
            return JSONResponse({"error": {"message": "as asked", "code": body["status"]}}, body["status"])
        if body.get("stream"):
            return StreamingResponse(self._stream(), media_type="text/event-stream")
        message = {"role": "assistant", "content": self.answer}
        answer = {
            "object": "chat.completion",
            "served_by": self.name,
            "path": request.url.path,
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }
        if self.usage is not None:
            answer["usage"] = self.usage
        return JSONResponse(answer)

    async def _stream(self) -> AsyncIterator[str]:
        try:
            yield sse(delta("hello "))
            if self.gate is not None:
                deadline = time.monotonic() + 10
                while not self.gate.is_set() and time.monotonic() < deadline:
                    await asyncio.sleep(0.005)
            for word in self.answer.split(" "):
                yield sse(delta(word + " ") | ({"usage": None} if self.usage is not None else {}))
            if self.usage is not None:
                yield sse({"object": "chat.completion.chunk", "choices": [], "usage": self.usage})
            yield sse("[DONE]")
            self.stream_finished.set()
        finally:
            self.stream_closed.set()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def endpoint(self, model: str, *, health: str = "passing", service_id: str | None = None) -> Endpoint:
        return Endpoint(model=model, service=model, service_id=service_id or f"{self.name}-{model}",
                        address="127.0.0.1", port=self.port, health=health, backend="fake")  # type: ignore[arg-type]  # fmt: skip


@contextmanager
def gateway(source: Any, **options: Any) -> Iterator[tuple[httpx.Client, Gateway]]:
    """A gateway served by uvicorn, and a client for it."""
    app = create_app(source, **options)
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield client, app.state.gateway


class ProcessBackend:
    """A FakeBackend in a process of its own, which a test can stop (SIGSTOP: its port still accepts connections
    but nothing answers, as with a hung GPU server), resume or kill."""

    def __init__(self, name: str, *, hold: bool = False) -> None:
        """With `hold`, a streamed answer stops for 10 s after its first chunk."""
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.serving.fakes", name, *(["--hold"] if hold else [])],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith("listening on "):
            self.close()
            raise RuntimeError(f"the backend process {name} did not start")
        self.port = int(line.split()[-1])

    def endpoint(self, model: str, *, health: str = "passing", service_id: str | None = None) -> Endpoint:
        return Endpoint(model=model, service=model, service_id=service_id or f"{self.name}-{model}",
                        address="127.0.0.1", port=self.port, health=health, backend="fake")  # type: ignore[arg-type]  # fmt: skip

    def hang(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def close(self) -> None:
        if self.process.poll() is None:
            self.resume()
            self.kill()


def dead_endpoint(model: str, service_id: str) -> Endpoint:
    """An instance whose port refuses connections."""
    return Endpoint(model=model, service=model, service_id=service_id, address="127.0.0.1", port=free_port(),
                    health="passing")  # fmt: skip


def chat(client: httpx.Client, model: str, path: str = "/v1/chat/completions", **headers: str) -> httpx.Response:
    return client.post(path, json={"model": model, "messages": [{"role": "user", "content": "hi"}]}, headers=headers)


def answers(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.TransportError:
        return False


def main() -> None:
    """`python -m tests.serving.fakes NAME [--hold]`: serve a FakeBackend on a free port of 127.0.0.1 until
    killed; the first line of output is `listening on PORT`, written once connections are accepted. With
    --hold, streamed answers wait (for a gate never opened) after their first chunk."""
    import uvicorn

    from nomad_gpustack.serving.gateway import bind, run, uvicorn_config

    backend = FakeBackend(sys.argv[1], gate=threading.Event() if "--hold" in sys.argv[2:] else None)
    sock = bind("127.0.0.1", 0)
    sock.listen(128)  # connections wait in the backlog until uvicorn takes the socket over
    print(f"listening on {sock.getsockname()[1]}", flush=True)
    run(uvicorn.Server(uvicorn_config(backend.app(), quiet=True)).serve(sockets=[sock]))


if __name__ == "__main__":
    main()
