"""The HTTP layer: routing, request recording, injected faults, ACL checks, blocking queries and the streaming
endpoints (event stream, task logs), on a stdlib `ThreadingHTTPServer` bound to 127.0.0.1.

Errors are plain-text bodies with Nomad's status codes: 400 bad request, 403 permission, 404 not found, 500
otherwise (nomad-api.md §3.1).
"""

from __future__ import annotations

import base64
import bisect
import functools
import json
import random
import re
import select
import socket
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import acl, queries
from .cluster import Cluster, NomadError
from .events import Subscription
from .faults import Fault, Faults
from .goduration import SECOND, parse_duration
from .jobspec import JSON, canonicalize
from .jsoncopy import clone
from .objects import ZERO_TIME, new_node, node_stub
from .strict import PLAN_KEYS, REGISTER_KEYS, VALIDATE_KEYS, StrictDecodeError, check_request
from .validation import multierror, validate

DEFAULT_WAIT = 300.0  # Nomad's default and maximum blocking time (MaxBlockingRPCQueryTime)
STREAM_POLL = 0.2  # how often a streaming handler looks whether its client went away


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the double received it (recorded before faults and ACL checks apply)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    time: float  # time.monotonic() at arrival


@dataclass
class Backend:
    """Everything the handlers need from the double."""

    cluster: Cluster
    faults: Faults
    acl_tokens: dict[str, str] | None  # secret → "management" | "submit-job" | "read-job"
    heartbeat_interval: float
    max_wait: float
    node_devices: list[JSON] = field(default_factory=list)  # the one node's device groups (NodeResources)
    nodes: list[JSON] | None = None  # full client nodes to list instead of the one node (objects.new_node)
    requests: list[RecordedRequest] = field(default_factory=list)
    requests_lock: threading.Lock = field(default_factory=threading.Lock)
    # The requests waiting for a change right now (blocking queries, event streams, log followers), as (path,
    # state index when it began to wait), so that a test can wait until one waits before it makes the change
    # (`NomadDouble.wait_for_held`).
    held: list[tuple[str, int]] = field(default_factory=list)
    held_cond: threading.Condition = field(default_factory=threading.Condition)


class DoubleHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # blocked streams must not keep the test process alive

    def __init__(self, backend: Backend, tls: ssl.SSLContext | None = None) -> None:
        self.backend = backend
        self.tls = tls
        super().__init__(("127.0.0.1", 0), Handler)

    # Open client connections now, and the most there were at once since `peak` was last reset: what a client
    # that bounds its connections is held to (a blocking query holds its connection while it waits).
    connections: int = 0
    peak_connections: int = 0
    _connections_lock = threading.Lock()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self.connections += 1
            self.peak_connections = max(self.peak_connections, self.connections)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self.connections -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that refuses our certificate (the point of the TLS tests) breaks the handshake: not news.
        if isinstance(sys.exc_info()[1], ssl.SSLError | ConnectionError):
            return
        super().handle_error(request, client_address)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            # The handshake runs in the handler's thread, so one client that never finishes it blocks nobody.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    q: queries.Query
    headers: dict[str, str]
    body: bytes


_ID = "(?P<id>[^/]+)"
READ_JOB = ("read-job",)
# (path pattern, query, capabilities: any one of them), the blocking reads; the first matching pattern wins.
_READS: list[tuple[str, Callable[..., queries.Result], tuple[str, ...]]] = [
    ("/v1/jobs", queries.list_jobs, ("list-jobs",)),
    ("/v1/allocations", queries.list_allocations, READ_JOB),
    ("/v1/deployments", queries.list_deployments, READ_JOB),
    ("/v1/evaluations", queries.list_evaluations, READ_JOB),
    (f"/v1/job/{_ID}/allocations", queries.job_allocations, READ_JOB),
    (f"/v1/job/{_ID}/evaluations", queries.job_evaluations, READ_JOB),
    (f"/v1/job/{_ID}/deployments", queries.job_deployments, READ_JOB),
    (f"/v1/job/{_ID}/deployment", queries.job_latest_deployment, READ_JOB),
    (f"/v1/job/{_ID}/summary", queries.job_summary, READ_JOB),
    (f"/v1/job/{_ID}/services", queries.job_services, READ_JOB),
    (f"/v1/job/{_ID}/versions", queries.job_versions, READ_JOB),
    (f"/v1/job/{_ID}/scale", queries.job_scale_status, ("read-job", "read-job-scaling")),
    (f"/v1/job/{_ID}", queries.read_job, READ_JOB),
    (f"/v1/evaluation/{_ID}/allocations", queries.evaluation_allocations, READ_JOB),
    (f"/v1/evaluation/{_ID}", queries.evaluation, READ_JOB),
    (f"/v1/allocation/{_ID}/services", queries.allocation_services, READ_JOB),
    (f"/v1/allocation/{_ID}", queries.allocation, READ_JOB),
    (f"/v1/deployment/allocations/{_ID}", queries.deployment_allocations, READ_JOB),
    (f"/v1/deployment/{_ID}", queries.deployment, READ_JOB),
    ("/v1/services", queries.list_services, READ_JOB),
    (f"/v1/service/{_ID}", queries.service, READ_JOB),
    (f"/v1/client/allocation/{_ID}/checks", queries.allocation_checks, READ_JOB),
]


# (methods, path pattern, handler method name or blocking query); the first route matching path and method wins.
_ROUTES: list[tuple[tuple[str, ...], str, str | tuple[Callable[..., queries.Result], tuple[str, ...]]]] = [
    (("GET",), "/v1/status/leader", "_leader"),
    (("GET",), "/v1/nodes", "_nodes"),
    (("GET",), f"/v1/node/{_ID}", "_node"),
    (("GET",), "/v1/event/stream", "_event_stream"),
    (("GET",), "/v1/client/fs/logs/(?P<id>[^/]*)", "_logs"),
    (("GET",), "/v1/vars", "_list_variables"),
    (("GET",), "/v1/var/(?P<path>.+)", "_read_variable"),
    (("PUT", "POST"), "/v1/var/(?P<path>.+)", "_write_variable"),
    (("DELETE",), "/v1/var/(?P<path>.+)", "_delete_variable"),
    (("PUT", "POST"), "/v1/jobs", "_register"),
    (("PUT", "POST"), "/v1/validate/job", "_validate"),
    (("PUT", "POST"), f"/v1/job/{_ID}/plan", "_plan"),
    (("PUT", "POST"), f"/v1/job/{_ID}/revert", "_revert"),
    (("PUT", "POST"), f"/v1/job/{_ID}/stable", "_stable"),
    (("PUT", "POST"), f"/v1/job/{_ID}/scale", "_scale"),
    (("PUT", "POST"), f"/v1/deployment/promote/{_ID}", "_promote"),
    (("PUT", "POST"), f"/v1/deployment/fail/{_ID}", "_fail_deployment"),
    (("PUT", "POST"), f"/v1/deployment/pause/{_ID}", "_pause_deployment"),
    (("PUT", "POST"), f"/v1/deployment/allocation-health/{_ID}", "_alloc_health"),
    (("PUT", "POST"), f"/v1/job/{_ID}", "_register"),
    (("DELETE",), f"/v1/job/{_ID}", "_deregister"),
    *((("GET",), pattern, (query, capabilities)) for pattern, query, capabilities in _READS),
]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and chunked streams like Nomad's
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's algorithm and the client's
    # delayed ACK add ~40 ms to every answer on keep-alive connections (Go's net/http sets it, too).
    disable_nagle_algorithm = True
    server: DoubleHTTPServer
    _action: Fault | None = None

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: `nomad.requests` is the log."""

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    @property
    def backend(self) -> Backend:
        return self.server.backend

    # --- dispatch -----------------------------------------------------------------------------------------

    def _handle(self) -> None:
        split = urlsplit(self.path)
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        params = parse_qs(split.query, keep_blank_values=True)
        with self.backend.requests_lock:
            self.backend.requests.append(
                RecordedRequest(self.command, split.path, params, headers, body, time.monotonic())
            )
        self._action = self.backend.faults.take(self.command, split.path, actions=True)
        fault = self.backend.faults.take(self.command, split.path)
        if fault is not None and fault.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None:
            self._send_fault(fault.status, fault.body)
            return
        request = Request(self.command, split.path, queries.Query(params), headers, body)
        try:
            self._route(request)
        except NomadError as exc:
            self._send_text(exc.status, exc.message)
        except StrictDecodeError as exc:
            self._send_text(400, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug in the double: answer 500 and fail the test at exit
            traceback.print_exc(file=sys.stderr)
            self.backend.cluster.errors.append(exc)
            self._send_text(500, f"nomad double internal error: {exc!r}")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
            self.rfile.readline()  # the CRLF after the last (empty) chunk; trailers are not supported
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _route(self, req: Request) -> None:
        allowed = False
        for methods, pattern, endpoint in _ROUTES:
            m = re.fullmatch(pattern, req.path)
            if m is None:
                continue
            allowed = True
            if req.method in methods:
                args = [unquote(v) for v in m.groups()]
                if isinstance(endpoint, str):
                    getattr(self, endpoint)(req, *args)
                else:
                    query, capabilities = endpoint
                    self._authorize(req, *capabilities)
                    self._blocking(req, functools.partial(query, self.backend.cluster.state, req.q, *args))
                return
        raise NomadError(405, "Invalid method") if allowed else NomadError(404, "Invalid URL")

    def _authorize(self, req: Request, *capabilities: str) -> None:
        """The token must grant one of `capabilities` (none: management only). Nomad answers every failure,
        an unknown or malformed token included, with 403 `Permission denied` (nomad/auth/auth.go Authenticate,
        as the endpoints wrap it)."""
        tokens = self.backend.acl_tokens
        if tokens is None:
            return
        secret = req.headers.get("x-nomad-token", "")
        bearer = req.headers.get("authorization", "")
        if not secret and bearer.lower().startswith("bearer "):
            secret = bearer[7:].strip()
        token = acl.resolve(tokens, secret)
        if token is None or not (token.allows(*capabilities) if capabilities else token.management):
            raise NomadError(403, acl.DENIED)

    # --- responses ----------------------------------------------------------------------------------------

    def send_response(self, code: int, message: str | None = None) -> None:
        """Every answer starts here: a pending `after_request` action runs first (see Faults.after)."""
        action, self._action = self._action, None
        if action is not None and action.action is not None:
            action.action()
        super().send_response(code, message)

    def _send_fault(self, status: int, body: str) -> None:
        """An injected answer: JSON when the body is JSON (a faked 200), else plain text like Nomad's errors."""
        try:
            json.loads(body)
        except ValueError:
            self._send_text(status, body)
            return
        self._send_json(body, index=None, status=status, raw=True)

    def _send_json(self, payload: Any, index: int | None, status: int = 200, raw: bool = False) -> None:
        pretty = "pretty" in self.path
        text = payload if raw else json.dumps(payload, indent=4 if pretty else None)
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if index is not None:
            self.send_header("X-Nomad-Index", str(index))
        if self.command == "GET":
            self.send_header("X-Nomad-KnownLeader", "true")
            self.send_header("X-Nomad-LastContact", "0")
        self.end_headers()
        self.wfile.write(data)

    def _send_text(self, status: int, text: str, index: int | None = None) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if index is not None:
            self.send_header("X-Nomad-Index", str(index))
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def _client_gone(self) -> bool:
        """True when the peer closed its side (readable with nothing to read)."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            peeked: bytes = self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True
        return peeked == b""

    # --- blocking queries ---------------------------------------------------------------------------------

    def _wait_for_change(self, path: str, timeout: float) -> None:
        """Wait on the state's condition variable (its lock held), counted in `held` meanwhile: a change made
        after a test saw the count can only come after this request started waiting, and wakes it."""
        backend = self.backend
        state = backend.cluster.state
        entry = (path, state.index)
        with backend.held_cond:
            backend.held.append(entry)
            backend.held_cond.notify_all()
        try:
            state.cond.wait(timeout)
        finally:
            with backend.held_cond:
                backend.held.remove(entry)

    def _blocking(self, req: Request, run: Callable[[], queries.Result]) -> None:
        """`?index=X&wait=D`: while the result's index is ≤ X, wait on the state's condition variable (woken by
        every change) until it moves or `wait` (capped, plus up to wait/16 jitter like Nomad) runs out."""
        try:
            min_index = int(req.q.get("index") or 0)
        except ValueError:
            raise NomadError(400, "Invalid index") from None
        try:
            wait = parse_duration(req.q.get("wait")) / SECOND if req.q.get("wait") else DEFAULT_WAIT
        except ValueError:
            raise NomadError(400, "Invalid wait time") from None
        wait = min(wait, self.backend.max_wait)
        deadline = time.monotonic() + wait + random.uniform(0, wait / 16)
        state = self.backend.cluster.state
        with state.cond:
            while True:
                index, payload = run()
                remaining = deadline - time.monotonic()
                if min_index == 0 or index > min_index or remaining <= 0 or state.closed:
                    break
                self._wait_for_change(req.path, remaining)
            if isinstance(payload, queries.NotFound):  # Nomad sets the query meta before answering 404
                self._send_text(404, payload.message, index)
                return
            # Encoded under the lock (the payload holds the state's own objects); a state holds no cycles, so the
            # encoder's check for them, a set of every object encoded, is work spent for nothing on a large list.
            text = json.dumps(payload, indent=4 if "pretty" in self.path else None, check_circular=False)
        self._send_json(text, index=index, raw=True)

    # --- jobs ---------------------------------------------------------------------------------------------

    def _json_body(self, req: Request) -> Any:
        try:
            return json.loads(req.body or b"null")
        except ValueError as exc:
            raise NomadError(400, f"Failed to decode request body: {exc}") from None

    def _job_body(self, req: Request, keys: dict[str, str]) -> JSON:
        """The `{"Job": ...}` wrapper: Nomad answers a missing Job with 400 `Job must be specified`."""
        body = self._json_body(req)
        if not isinstance(body, dict) or body.get("Job") is None:
            raise NomadError(400, "Job must be specified")
        check_request(body, keys)
        return body

    def _namespace(self, req: Request, body: JSON) -> str:
        """`?namespace=` > body Namespace > Job.Namespace > "default" (namespaceForJob)."""
        return req.q.get("namespace") or body.get("Namespace") or body["Job"].get("Namespace") or "default"

    def _leader(self, req: Request) -> None:
        self._send_json("127.0.0.1:4647", index=None)

    def _all_nodes(self) -> list[JSON]:
        backend = self.backend
        if backend.nodes is not None:
            return backend.nodes
        return [
            new_node(node_name, node_id=node_id, devices=backend.node_devices)
            for node_id, node_name in backend.cluster.nodes
        ]

    def _nodes(self, req: Request) -> None:
        """`/v1/nodes`: node list stubs; `?resources=true` adds NodeResources (its Devices), as Nomad >= 1.6,
        `?os=true` the `os.name` attribute; `?prefix=` filters by ID prefix. It needs the node policy's read
        (nomad/node_endpoint.go List: AllowNodeRead), not a namespace capability."""
        self._authorize(req, acl.NODE_READ)
        prefix = req.q.get("prefix") or ""
        stubs = [
            node_stub(n, resources=req.q.get("resources") == "true", os=req.q.get("os") == "true")
            for n in self._all_nodes()
            if n["ID"].startswith(prefix)
        ]
        self._send_json(stubs, index=1)

    def _node(self, req: Request, node_id: str) -> None:
        """`/v1/node/:id`: the full node."""
        self._authorize(req, acl.NODE_READ)
        for node in self._all_nodes():
            if node["ID"] == node_id:
                self._send_json(node, index=node["ModifyIndex"])
                return
        raise NomadError(404, "node not found")

    def _register(self, req: Request, path_id: str | None = None) -> None:
        self._authorize(req, "submit-job", "register-job")
        body = self._job_body(req, REGISTER_KEYS)
        job = body["Job"]
        if not job.get("ID"):
            raise NomadError(400, "Job ID hasn't been provided")
        if path_id is not None and job["ID"] != path_id:
            raise NomadError(400, "Job ID does not match name")
        result = self.backend.cluster.register(
            self._namespace(req, body),
            job,
            bool(body.get("EnforceIndex")),
            int(body.get("JobModifyIndex") or 0),
            preserve_counts=bool(body.get("PreserveCounts")),
            eval_priority=int(body.get("EvalPriority") or 0),
        )
        self._send_json(result, index=result["Index"])

    def _deregister(self, req: Request, job_id: str) -> None:
        """`DELETE /v1/job/:id`: submit-job, purge-job, or (without purge) deregister-job."""
        purge = _parse_bool(req.q, "purge")
        self._authorize(req, "submit-job", "purge-job", *(() if purge else ("deregister-job",)))
        result = self.backend.cluster.deregister(req.q.namespace, job_id, purge)
        self._send_json(result, index=result["Index"])

    def _revert(self, req: Request, path_id: str) -> None:
        """`PUT /v1/job/:id/revert` (command/agent/job_endpoint.go jobRevert, nomad/job_endpoint.go Revert)."""
        body = self._json_body(req)
        if not isinstance(body, dict):
            raise NomadError(400, "Request body is empty" if body is None else "Invalid request body")
        if not body.get("JobID"):
            raise NomadError(400, "JobID must be specified")
        if body["JobID"] != path_id:
            raise NomadError(400, "Job ID does not match")
        self._authorize(req, "submit-job", "revert-job")
        prior = body.get("EnforcePriorVersion")
        result = self.backend.cluster.revert(
            req.q.get("namespace") or body.get("Namespace") or "default",
            path_id,
            int(body.get("JobVersion") or 0),
            int(prior) if prior is not None else None,
        )
        self._send_json(result, index=result["Index"])

    def _stable(self, req: Request, path_id: str) -> None:
        """`PUT /v1/job/:id/stable` (nomad/job_endpoint.go Stable)."""
        body = self._json_body(req)
        if not isinstance(body, dict) or not body.get("JobID"):
            raise NomadError(400, "JobID must be specified")
        if body["JobID"] != path_id:
            raise NomadError(400, "Job ID does not match")
        self._authorize(req, "submit-job", "stable-job")
        namespace = req.q.get("namespace") or body.get("Namespace") or "default"
        result = self.backend.cluster.set_stable(
            namespace, path_id, int(body.get("JobVersion") or 0), bool(body.get("Stable"))
        )
        self._send_json(result, index=result["Index"])

    def _scale(self, req: Request, path_id: str) -> None:
        """`POST /v1/job/:id/scale` (command/agent/job_endpoint.go jobScaleAction, nomad/job_endpoint.go
        Scale): the `scale-job` or `submit-job` capability."""
        body = self._json_body(req)
        if not isinstance(body, dict):
            raise NomadError(400, "Request body is empty" if body is None else "Invalid request body")
        _check_scale_request(body)
        target = body.get("Target") or {}
        if target.get("Job") and target["Job"] != path_id:
            raise NomadError(400, "job ID in payload did not match URL")
        self._authorize(req, "scale-job", "submit-job")
        result = self.backend.cluster.scale(req.q.namespace, path_id, body)
        self._send_json(result, index=result["Index"])

    # --- deployments --------------------------------------------------------------------------------------

    def _deployment_body(self, req: Request, path_id: str) -> JSON:
        """The deployment endpoints' body checks (command/agent/deployment_endpoint.go)."""
        if not req.body:
            raise NomadError(400, "Request body is empty")
        body = self._json_body(req)
        if not isinstance(body, dict):
            raise NomadError(400, "Invalid request body")
        if not body.get("DeploymentID"):
            raise NomadError(400, "DeploymentID must be specified")
        if body["DeploymentID"] != path_id:
            raise NomadError(400, "Deployment ID does not match")
        return body

    def _deployment_namespace_check(self, req: Request, deployment_id: str, *capabilities: str) -> None:
        """Nomad looks the deployment up before the ACL check: a missing one is a 500 `deployment not found`."""
        state = self.backend.cluster.state
        with state.cond:
            if deployment_id not in state.deployments:
                raise NomadError(500, "deployment not found")
        self._authorize(req, *capabilities)

    def _promote(self, req: Request, deployment_id: str) -> None:
        """`PUT /v1/deployment/promote/:id` with `{"DeploymentID", "All"}` or `{"DeploymentID", "Groups"}`."""
        body = self._deployment_body(req, deployment_id)
        self._deployment_namespace_check(req, deployment_id, "submit-job", "promote-deployment")
        with self.backend.cluster.state.cond:
            result = self.backend.cluster.watchers.promote(
                deployment_id, bool(body.get("All")), list(body.get("Groups") or [])
            )
        self._send_json(result, index=result["Index"])

    def _fail_deployment(self, req: Request, deployment_id: str) -> None:
        """`PUT /v1/deployment/fail/:id` (no body)."""
        self._deployment_namespace_check(req, deployment_id, "submit-job", "fail-deployment")
        with self.backend.cluster.state.cond:
            result = self.backend.cluster.watchers.fail(deployment_id)
        self._send_json(result, index=result["Index"])

    def _pause_deployment(self, req: Request, deployment_id: str) -> None:
        """`PUT /v1/deployment/pause/:id` with `{"DeploymentID", "Pause"}`."""
        body = self._deployment_body(req, deployment_id)
        self._deployment_namespace_check(req, deployment_id, "submit-job", "pause-deployment")
        with self.backend.cluster.state.cond:
            result = self.backend.cluster.watchers.pause(deployment_id, bool(body.get("Pause")))
        self._send_json(result, index=result["Index"])

    def _alloc_health(self, req: Request, deployment_id: str) -> None:
        """`PUT /v1/deployment/allocation-health/:id` with the healthy and unhealthy allocation IDs."""
        body = self._deployment_body(req, deployment_id)
        self._deployment_namespace_check(req, deployment_id, "submit-job", "set-alloc-health-deployment")
        with self.backend.cluster.state.cond:
            result = self.backend.cluster.watchers.set_alloc_health(
                deployment_id,
                list(body.get("HealthyAllocationIDs") or []),
                list(body.get("UnhealthyAllocationIDs") or []),
            )
        self._send_json(result, index=result["Index"])

    def _plan(self, req: Request, path_id: str) -> None:
        self._authorize(req, "submit-job", "plan-job")
        body = self._job_body(req, PLAN_KEYS)
        job = body["Job"]
        if not job.get("ID"):
            raise NomadError(400, "Job ID hasn't been provided")
        if job["ID"] != path_id:
            raise NomadError(400, "Job ID does not match")
        result = self.backend.cluster.plan(self._namespace(req, body), job, bool(body.get("Diff")))
        self._send_json(result, index=result["Index"])

    def _validate(self, req: Request) -> None:
        self._authorize(req, "read-job")
        body = self._job_body(req, VALIDATE_KEYS)
        job = canonicalize(body["Job"], self._namespace(req, body))
        errors = validate(job, job_max_count=self.backend.cluster.job_max_count)
        reply = {
            "DriverConfigValidated": True,
            "ValidationErrors": errors or None,
            "Error": multierror(errors) if errors else "",
            "Warnings": "",
        }
        self._send_json(reply, index=None)

    # --- variables ----------------------------------------------------------------------------------------

    def _list_variables(self, req: Request) -> None:
        """`/v1/vars?prefix=`: metadata only, never the items."""
        self._authorize(req, "read-job")
        state = self.backend.cluster.state
        prefix = req.q.get("prefix")
        with state.cond:
            found = [
                {k: v for k, v in variable.items() if k != "Items"}
                for (namespace, path), variable in sorted(state.variables.items())
                if (req.q.namespace in ("*", namespace)) and path.startswith(prefix)
            ]
            index = state.table_index["variables"] or 1
        self._send_json(found, index=index)

    def _read_variable(self, req: Request, path: str) -> None:
        self._authorize(req)
        state = self.backend.cluster.state
        with state.cond:
            variable = clone(state.variables.get((req.q.namespace, path)))
            index = state.table_index["variables"] or 1
        if variable is None:
            self._send_text(404, "variable not found", index)
            return
        self._send_json(variable, index=variable["ModifyIndex"])

    def _write_variable(self, req: Request, path: str) -> None:
        """`PUT /v1/var/:path` with `{"Namespace", "Path", "Items"}`; `?cas=N` is a check-and-set (409 on a
        mismatch, with the current variable as the body, as Nomad answers)."""
        self._authorize(req)
        body = self._json_body(req)
        if not isinstance(body, dict) or not isinstance(body.get("Items"), dict) or not body["Items"]:
            raise NomadError(400, "variable missing Items")
        if any(not isinstance(v, str) for v in body["Items"].values()):
            raise NomadError(400, "variable items must be strings")
        namespace = req.q.get("namespace") or body.get("Namespace") or "default"
        state = self.backend.cluster.state
        with state.cond:
            current = state.variables.get((namespace, path))
            cas = req.q.get("cas")
            if cas and int(cas) != (current["ModifyIndex"] if current else 0):
                self._send_json(clone(current), index=state.index, status=409)
                return
            with state.transaction() as tx:
                variable = {
                    "Namespace": namespace,
                    "Path": path,
                    "Items": {str(k): str(v) for k, v in body["Items"].items()},
                    "CreateIndex": current["CreateIndex"] if current else 0,
                    "ModifyIndex": 0,
                    "CreateTime": current["CreateTime"] if current else 0,
                    "ModifyTime": 0,
                }
                tx.put_variable(variable)
            answer = clone(variable)
        self._send_json(answer, index=answer["ModifyIndex"])

    def _delete_variable(self, req: Request, path: str) -> None:
        self._authorize(req)
        state = self.backend.cluster.state
        with state.cond:
            if (req.q.namespace, path) not in state.variables:
                self._send_text(404, "variable not found")
                return
            with state.transaction() as tx:
                tx.delete_variable(req.q.namespace, path)
                index = tx.index
        self._send_text(200, "", index)

    # --- event stream -------------------------------------------------------------------------------------

    def _event_stream(self, req: Request) -> None:
        """ndjson frames from `?index=` on (the frame at that index included), then live ones, with a `{}`
        heartbeat every `heartbeat_interval`; until the client goes away or the double stops."""
        subscription = Subscription.parse(req.q.params.get("topic", []), req.q.namespace)
        self._authorize(req, *(() if subscription.wants_everything else ("read-job",)))
        try:
            start = int(req.q.get("index") or 0)
        except ValueError:
            raise NomadError(400, "Invalid index") from None
        state = self.backend.cluster.state
        interval = self.backend.heartbeat_interval
        with state.cond:
            position = bisect.bisect_left([f.index for f in state.frames], start)
        self._start_stream("application/json")
        next_heartbeat = time.monotonic() + interval
        while True:
            with state.cond:
                while position >= len(state.frames) and not state.closed:
                    remaining = next_heartbeat - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wait_for_change(req.path, min(remaining, STREAM_POLL))
                    if self._client_gone():
                        return
                frames = state.frames[position:]
                position = len(state.frames)
                closed = state.closed
            for frame in frames:
                self._chunk(subscription.render(frame) or b"")
            if time.monotonic() >= next_heartbeat:
                self._chunk(b"{}\n")
                next_heartbeat = time.monotonic() + interval
            if closed:
                self._end_stream()
                return

    # --- task logs ----------------------------------------------------------------------------------------

    def _logs(self, req: Request, alloc_id: str) -> None:
        """`/v1/client/fs/logs/:alloc`: `plain=true` sends raw text, otherwise JSON StreamFrames with base64
        `Data`; `origin=end&offset=N` starts N bytes before the end; `follow=true` keeps streaming new output
        until the client goes away, the task is dead (and drained), or the double stops."""
        q = req.q
        task, kind = q.get("task"), q.get("type")
        # The agent checks the query first, in this order, with these texts (command/agent/fs_endpoint.go Logs).
        if not alloc_id:
            raise NomadError(400, "must provide a valid alloc id")
        if not task:
            raise NomadError(400, "must provide task name")
        flags = {}
        for name in ("follow", "plain"):
            try:
                flags[name] = queries.parse_bool(q, name)
            except NomadError:
                reason = f'strconv.ParseBool: parsing "{q.get(name)}": invalid syntax'
                raise NomadError(400, f"failed to parse {name} field to boolean: {reason}") from None
        if kind not in ("stdout", "stderr"):
            raise NomadError(400, "must provide log type (stdout/stderr)")
        text = q.get("offset") or "0"
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise NomadError(400, f'error parsing offset: strconv.ParseInt: parsing "{text}": invalid syntax')
        offset = int(text)
        if q.get("origin") not in (None, "", "start", "end"):
            raise NomadError(400, "origin must be start or end")
        state = self.backend.cluster.state
        key = (alloc_id, task, kind)
        with state.cond:
            if alloc_id not in state.allocs:
                raise NomadError(404, f'Unknown allocation "{alloc_id}"')
            task_state = (state.allocs[alloc_id].get("TaskStates") or {}).get(task)
            size = len(state.logs.get(key, b""))
        self._authorize(req, "read-logs", "read-fs")
        # Then the client, after the allocation and the ACL check: a task the allocation has no state for is
        # 400, a task that never started 404 (client/fs_endpoint.go, FileSystem.logs).
        if task_state is None:
            raise NomadError(400, f"unknown task name {_go_quote(task)}")
        if task_state.get("StartedAt", ZERO_TIME) == ZERO_TIME:
            raise NomadError(404, f"task {_go_quote(task)} not started yet. No logs available")
        position = max(0, size - offset) if q.get("origin") == "end" else min(offset, size)
        plain = flags["plain"]
        file_name = f"alloc/logs/{task}.{kind}.0"

        def encode(data: bytes, at: int) -> bytes:
            if plain:
                return data
            frame = {"Offset": at + len(data), "Data": base64.b64encode(data).decode(), "File": file_name}
            return json.dumps(frame).encode()

        content_type = "text/plain; charset=utf-8" if plain else "application/json"
        if not flags["follow"]:
            with state.cond:
                data = bytes(state.logs.get(key, b""))[position:]
            body = encode(data, position) if data or plain else b""
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self._start_stream(content_type)
        while True:
            with state.cond:
                data = bytes(state.logs.get(key, b""))[position:]
                finished = state.closed or _task_dead(state.allocs[alloc_id], task)
                if not data and not finished:
                    self._wait_for_change(req.path, STREAM_POLL)
                    if self._client_gone():
                        return
                    continue
            if data:
                self._chunk(encode(data, position))
                position += len(data)
            elif finished:
                self._end_stream()
                return


# api.ScalingRequest, with the WriteRequest fields Go clients send along
_SCALE_FIELDS = {"Count", "Target", "Error", "Message", "Meta", "PolicyOverride", "JobModifyIndex"}
_SCALE_FIELDS |= {"Region", "Namespace", "SecretID", "IdempotencyToken"}


def _check_scale_request(body: JSON) -> None:
    """The strict decoder's rules (see strict.py) for a scaling request."""
    for key, value in body.items():
        if key not in _SCALE_FIELDS:
            raise StrictDecodeError(f'unknown field "{key}" in the request body')
        if key in ("Count", "JobModifyIndex") and value is not None and type(value) is not int:
            raise StrictDecodeError(f'field "{key}" must be a JSON integer, got {value!r}')
        if key in ("Target", "Meta") and value is not None and not isinstance(value, dict):
            raise StrictDecodeError(f'field "{key}" must be a JSON object, got {value!r}')


def _parse_bool(q: queries.Query, name: str) -> bool:
    """strconv.ParseBool of a query parameter, with the agent's message for a bad value (500)."""
    return queries.parse_bool(q, name)


def _go_quote(text: str) -> str:
    """Go's `%q` of a string, as Nomad's messages quote names (close enough: JSON's escapes)."""
    return json.dumps(text, ensure_ascii=False)


def _task_dead(alloc: JSON, task: str) -> bool:
    states = alloc.get("TaskStates") or {}
    return task in states and states[task]["State"] == "dead"
