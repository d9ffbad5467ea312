"""A stand-in for the Hugging Face Hub on 127.0.0.1, for tests that point `HF_ENDPOINT` at it.

It serves the files it is given at `/<repo>/resolve/<revision>/<path>` as the Hub does: HEAD and GET, byte
ranges (206 with Content-Range), the headers huggingface_hub reads (`ETag`, `X-Repo-Commit`,
`Content-Length`, `Accept-Ranges`), 404 with `X-Error-Code: EntryNotFound` for a missing file, and 401 for a
gated repo without the right token. Every request is recorded (method, path, range, bytes sent), so tests can
show what was read and that a second run made no request at all.

Kept small and separate from the download tests' stand-in (tests/support/hf_hub.py, another branch): both
serve the same routes, so they can become one.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None
    sent: int  # body bytes sent


@dataclass
class HubStandIn:
    """The stand-in server: `repos` maps "owner/name" to {file path: content}."""

    repos: dict[str, dict[str, bytes]]
    gated: dict[str, str] = field(default_factory=dict)  # repo -> the token it needs
    requests: list[Request] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> HubStandIn:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self.answer(body=False)

            def do_GET(self) -> None:
                self.answer(body=True)

            def answer(self, body: bool) -> None:
                record = Request(
                    self.command, self.path, self.headers.get("Range"), self.headers.get("Authorization"), 0
                )
                hub.requests.append(record)
                match = _RESOLVE.match(self.path.split("?", 1)[0])
                files = hub.repos.get(match["repo"]) if match else None
                if match is None or files is None:
                    return self.status(404, {"X-Error-Code": "RepoNotFound"})
                needed = hub.gated.get(match["repo"])
                if needed and record.authorization != f"Bearer {needed}":
                    return self.status(401, {"X-Error-Code": "GatedRepo"})
                data = files.get(match["path"])
                if data is None:
                    return self.status(404, {"X-Error-Code": "EntryNotFound"})
                headers = {
                    "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                    "X-Repo-Commit": COMMIT,
                    "Accept-Ranges": "bytes",
                }
                status, part = 200, data
                wanted = _RANGE.match(record.range or "")
                if wanted:
                    first = int(wanted[1])
                    last = min(int(wanted[2]) if wanted[2] else len(data) - 1, len(data) - 1)
                    if first >= len(data):
                        return self.status(416, {"Content-Range": f"bytes */{len(data)}"})
                    status, part = 206, data[first : last + 1]
                    headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
                headers["Content-Length"] = str(len(part))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    record.sent = len(part)  # before the write: the client may look as soon as it has the body
                    self.wfile.write(part)

            def status(self, code: int, headers: dict[str, str]) -> None:
                self.send_response(code)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def sent(self) -> int:
        """Body bytes sent so far, over every request."""
        return sum(r.sent for r in self.requests)
