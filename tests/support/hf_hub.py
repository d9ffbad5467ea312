"""A local stand-in of the Hugging Face Hub for tests: an HTTP server on 127.0.0.1 serving given model repos, with
what `huggingface_hub` (`hf download`, `hf_hub_download`, `snapshot_download`) and plain range readers need.

    with HubStandIn({"org/model-GGUF": {"model.gguf": Path(...), "README.md": b"..."}}, token="hf_x") as hub:
        env = {"HF_ENDPOINT": hub.endpoint}   # point huggingface_hub at it

Served, as the Hub serves them:
* `HEAD|GET /{repo}/resolve/{revision}/{file}`: `X-Repo-Commit`, `ETag` (and `X-Linked-Etag`, `X-Linked-Size`
  for LFS-sized files: the sha256 of the content, as the Hub's LFS ETag), `Content-Length`, `Accept-Ranges`;
  `Range: bytes=a-b` / `bytes=a-` / `bytes=-n` answered with 206 and `Content-Range` (416 when unsatisfiable).
  No redirects (the Hub redirects LFS files to a CDN; clients do not need it).
* `GET /api/models/{repo}` and `/api/models/{repo}/revision/{revision}`: id, sha, siblings (with sizes).
* `GET /api/models/{repo}/tree/{revision}[/{path}]`: the file list (`list_repo_tree`).
`revision` is `main` or the repo's commit sha. Unknown repos and files get the Hub's 404 with `X-Error-Code`
(`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`). With `token` (every repo) or `gated` (a token per repo),
a request without `Authorization: Bearer <token>` gets 401 (`X-Error-Code: GatedRepo`), so a test can prove
the token arrived. Every answer is recorded with the body bytes it sent (the token itself is not recorded:
only whether it was right), so tests can show what was read, and that a second run made no request at all.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub stores bigger files in LFS and adds the X-Linked-* headers
CHUNK = 1024 * 1024

Content = bytes | Path


def go_online(monkeypatch: Any) -> None:
    """Lift the session's HF_HUB_OFFLINE (tests/conftest.py) for a test that talks to a stand-in: in the
    environment, and in huggingface_hub's constants, which it reads once at import (an earlier import may have
    seen the offline setting)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@dataclass
class HubRequest:
    method: str
    path: str
    range: str | None
    authorized: bool  # the expected token was sent (or none is required)
    status: int
    sent: int = 0  # body bytes sent


@dataclass
class _File:
    content: Content
    _sha256: str | None = None
    _git_oid: str | None = None

    @property
    def size(self) -> int:
        return self.content.stat().st_size if isinstance(self.content, Path) else len(self.content)

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            digest = hashlib.sha256()
            if isinstance(self.content, Path):
                with self.content.open("rb") as f:
                    while block := f.read(CHUNK):
                        digest.update(block)
            else:
                digest.update(self.content)
            self._sha256 = digest.hexdigest()
        return self._sha256

    @property
    def git_oid(self) -> str:
        """The git blob id, the Hub's ETag for files kept in git (not LFS)."""
        if self._git_oid is None:
            self._git_oid = hashlib.sha1(b"blob %d\0" % self.size + self.read(0, self.size)).hexdigest()
        return self._git_oid

    def read(self, start: int, length: int) -> bytes:
        if isinstance(self.content, Path):
            with self.content.open("rb") as f:
                f.seek(start)
                return f.read(length)
        return self.content[start : start + length]


@dataclass
class _Repo:
    id: str
    files: dict[str, _File]
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        listing = "\n".join(f"{name}:{f.size}" for name, f in sorted(self.files.items()))
        self.sha = hashlib.sha1(f"{self.id}\n{listing}".encode()).hexdigest()


class HubStandIn:
    """The server; use as a context manager (or `start()` / `stop()`)."""

    def __init__(
        self,
        repos: Mapping[str, Mapping[str, Content]],
        token: str | None = None,
        gated: Mapping[str, str] | None = None,
    ) -> None:
        self.repos = {rid: _Repo(rid, {n: _File(c) for n, c in files.items()}) for rid, files in repos.items()}
        self.token = token
        self.gated = dict(gated or {})  # repo -> the token it needs
        self.requests: list[HubRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("the hub stand-in is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def commit(self, repo_id: str) -> str:
        return self.repos[repo_id].sha

    def start(self) -> HubStandIn:
        hub = self

        class Handler(_Handler):
            stand_in = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="hf-hub-stand-in", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HubStandIn:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def sent(self) -> int:
        """Body bytes sent so far, over every request."""
        with self._lock:
            return sum(r.sent for r in self.requests)

    def token_for(self, repo_id: str) -> str | None:
        return self.gated.get(repo_id, self.token)

    def downloads(self, filename: str) -> list[HubRequest]:
        """Successful GETs of a file's content (whole or ranged)."""
        with self._lock:
            return [
                r
                for r in self.requests
                if r.method == "GET" and "/resolve/" in r.path and r.path.endswith(f"/{filename}") and r.status < 300
            ]

    def _record(self, request: HubRequest) -> None:
        with self._lock:
            self.requests.append(request)


_RESOLVE = re.compile(r"/(?:models/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)")
_INFO = re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?")
_TREE = re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class _Handler(BaseHTTPRequestHandler):
    stand_in: HubStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: `requests` is the log."""

    def do_HEAD(self) -> None:
        self._handle(body=False)

    def do_GET(self) -> None:
        self._handle(body=True)

    _authorized = False
    _answer: HubRequest | None = None  # the answer being sent, to count its body bytes

    def _handle(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        repo = next((m["repo"] for pattern in (_TREE, _INFO, _RESOLVE) if (m := pattern.fullmatch(path))), None)
        token = self.stand_in.token_for(repo) if repo else self.stand_in.token
        self._authorized = token is None or self.headers.get("Authorization", "") == f"Bearer {token}"
        self._route(path, self._authorized, body)

    def send_response(self, code: int, message: str | None = None) -> None:
        """Every answer is recorded before it goes out, so a client never sees one that is not recorded yet."""
        path = unquote(urlsplit(self.path).path)
        self._answer = HubRequest(self.command, path, self.headers.get("Range"), self._authorized, code)
        self.stand_in._record(self._answer)
        super().send_response(code, message)

    def _send_body(self, data: bytes) -> None:
        if self._answer is not None:
            self._answer.sent += len(data)  # before the write: the client may look as soon as it has the body
        self.wfile.write(data)

    def _route(self, path: str, authorized: bool, body: bool) -> int:
        if m := _TREE.fullmatch(path):
            return self._tree(m["repo"], m["rev"], m["path"] or "", authorized, body)
        if m := _INFO.fullmatch(path):
            return self._info(m["repo"], m["rev"], authorized, body)
        if m := _RESOLVE.fullmatch(path):
            return self._resolve(m["repo"], m["rev"], m["file"], authorized, body)
        return self._error(404, "EntryNotFound", f"no route for {path}", body)

    def _repo(self, repo_id: str, revision: str | None, authorized: bool, body: bool) -> _Repo | int:
        repo = self.stand_in.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", f"Repository Not Found for url: {self.path}", body)
        if revision not in (None, "main", repo.sha):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", body)
        if not authorized:
            return self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted.", body)
        return repo

    def _info(self, repo_id: str, revision: str | None, authorized: bool, body: bool) -> int:
        repo = self._repo(repo_id, revision, authorized, body)
        if isinstance(repo, int):
            return repo
        siblings = [{"rfilename": name, "size": f.size} for name, f in sorted(repo.files.items())]
        info = {
            "_id": repo.sha[:24],
            "id": repo.id,
            "modelId": repo.id,
            "sha": repo.sha,
            "private": False,
            "gated": "manual" if self.stand_in.token_for(repo.id) else False,
            "disabled": False,
            "tags": ["gguf"],
            "siblings": siblings,
            "lastModified": "2026-11-01T00:00:00.000Z",
            "createdAt": "2026-11-01T00:00:00.000Z",
        }
        return self._json(info, body, repo.sha)

    def _tree(self, repo_id: str, revision: str, prefix: str, authorized: bool, body: bool) -> int:
        repo = self._repo(repo_id, revision, authorized, body)
        if isinstance(repo, int):
            return repo
        entries = []
        for name, f in sorted(repo.files.items()):
            if prefix and not name.startswith(prefix.rstrip("/") + "/"):
                continue
            entry: dict[str, Any] = {"type": "file", "size": f.size, "path": name}
            if f.size >= LFS_THRESHOLD:
                entry["oid"] = hashlib.sha1(f"lfs-pointer {f.sha256}".encode()).hexdigest()  # the pointer's blob
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
            else:
                entry["oid"] = f.git_oid
            entries.append(entry)
        return self._json(entries, body, repo.sha)

    def _resolve(self, repo_id: str, revision: str, name: str, authorized: bool, body: bool) -> int:
        repo = self._repo(repo_id, revision, authorized, body)
        if isinstance(repo, int):
            return repo
        f = repo.files.get(name)
        if f is None:
            return self._error(404, "EntryNotFound", f"{name} does not exist on {revision}", body, repo.sha)
        size = f.size
        start, end = 0, size - 1
        status = 200
        wanted = self.headers.get("Range")
        if wanted:
            m = _RANGE.fullmatch(wanted.strip())
            if m is None or (not m[1] and not m[2]):
                return self._error(416, "RangeNotSatisfiable", f"bad range {wanted!r}", body, repo.sha)
            if m[1]:
                start, end = int(m[1]), min(int(m[2]) if m[2] else size - 1, size - 1)
            else:
                start, end = max(size - int(m[2]), 0), size - 1
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return 416
            status = 206
        self.send_response(status)
        self.send_header("X-Repo-Commit", repo.sha)
        if f.size >= LFS_THRESHOLD:
            self.send_header("ETag", f'"{f.sha256}"')
            self.send_header("X-Linked-Etag", f'"{f.sha256}"')
            self.send_header("X-Linked-Size", str(size))
        else:
            self.send_header("ETag", f'"{f.git_oid}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if body:
            position = start
            while position <= end:
                block = f.read(position, min(CHUNK, end - position + 1))
                if not block:
                    break
                self._send_body(block)
                position += len(block)
        return status

    def _json(self, payload: Any, body: bool, commit: str) -> int:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Repo-Commit", commit)
        self.end_headers()
        if body:
            self._send_body(data)
        return 200

    def _error(self, status: int, code: str, message: str, body: bool, commit: str | None = None) -> int:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.end_headers()
        if body:
            self._send_body(data)
        return status
