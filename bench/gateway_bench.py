"""What the gateway costs: the same requests sent to a backend directly and through `nomadgs gateway`, and what
its Prometheus metrics cost: the same gateway with them and without them (`--no-metrics`), in the same run.

    .venv/bin/python bench/gateway_bench.py [--seconds 3] [--concurrency 16] [--requests 1500]
    .venv/bin/python bench/gateway_bench.py --hung [--concurrency 16]
    .venv/bin/python bench/gateway_bench.py --workers-only [--seconds 6] [--concurrency 16]

A minimal raw-asyncio backend answers a tiny chat completion (JSON) and a streamed one (SSE: the first event at
once, the others 2 ms apart). The backend and the gateway each run in a process of their own on 127.0.0.1; the
load comes from a raw-asyncio HTTP/1.1 client in this process, so the client's own cost is small and the same on
both paths. Latency is measured one request at a time, alternating direct and gateway blocks so that drift
hits both alike; throughput with a number of keep-alive connections in parallel, in alternating rounds over
the three paths (direct, gateway, gateway without metrics) so that drift hits all three alike. Prints figures,
asserts nothing.

With --data-path, the gateway's data path beside nginx (a plain reverse proxy, `proxy_buffering off`, one worker)
when nginx is installed, and beside another checkout's gateway with --baseline DIR (say, main's, from `git
worktree add` or `git archive`), in alternating rounds of one run: JSON requests per second at --concurrency
clients, stream events relayed per second (--streams concurrent streams of 2,000 small events each, written by
the backend one by one), and each proxy's CPU time per request and per event (from /proc), whose inverse is what
one core would do: the steadier ratio on a shared machine.

With --hung, three backends behind the gateway take a steady load while one of them is stopped (SIGSTOP: its
port still accepts connections) for 5 s: how many requests got a 504 and how long they waited, and the
throughput before, during and after the hang.

The last table (alone with --workers-only) is `--workers`: the throughput of the gateway with 2 worker
processes on one socket (`serve_workers`, metrics in multiprocess mode) against 1, in alternating rounds of the
same run, their ratio, and how the connections spread over the workers. The backend and the load client run on
the same machine: on 2 cores they take CPU the workers would use, so the ratio is a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

MODEL = "bench-model"
JSON_BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}).encode()
STREAM_BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": True}
).encode()
COMPLETION = json.dumps(
    {"id": "chatcmpl-1", "object": "chat.completion", "model": MODEL,
     "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
     "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
).encode()  # fmt: skip
STREAM_EVENTS = [
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"content":"lo"}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"content":"!"},"finish_reason":"stop"}]}\n\n',
    b"data: [DONE]\n\n",
]
STREAM_GAP = 0.002  # seconds between streamed events after the first
# Streams of many small events, as fast as the fake engine can write them: what a gateway relaying tokens does.
BURST_EVENTS = 2000
BURST_BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True, "burst": True}
).encode()
BURST_EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"tok"}}]}\n\n'


# ---------------------------------------------------------------------------------------------------------------
# The backend: just enough HTTP/1.1 (keep-alive, Content-Length bodies, chunked streaming)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class BackendProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body, self.buffer = self.buffer[end + 4 : total], self.buffer[total:]
            if b'"burst": true' in body:
                self._burst()
            elif b'"stream": true' in body or b'"stream":true' in body:
                self._stream()
            else:
                self._json()

    def _json(self) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(COMPLETION), COMPLETION)
        )

    def _stream(self) -> None:
        transport = self.transport
        assert transport is not None
        transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            + _chunk(STREAM_EVENTS[0])
        )
        loop = asyncio.get_running_loop()
        for n, event in enumerate(STREAM_EVENTS[1:], 1):
            loop.call_later(STREAM_GAP * n, transport.write, _chunk(event))
        loop.call_later(STREAM_GAP * len(STREAM_EVENTS), transport.write, b"0\r\n\r\n")

    def _burst(self) -> None:
        """BURST_EVENTS events, each written on its own (one per turn of the loop), then [DONE]."""
        transport = self.transport
        assert transport is not None
        transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        loop = asyncio.get_running_loop()
        event = _chunk(BURST_EVENT)

        def write(left: int) -> None:
            if transport.is_closing():
                return
            if left:
                transport.write(event)
                loop.call_soon(write, left - 1)
            else:
                transport.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

        write(BURST_EVENTS)


def run_backend(sock: socket.socket) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(BackendProtocol, sock=sock, backlog=1024)
        await server.serve_forever()

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(main())


def run_gateway(sock: socket.socket, backend_ports: list[int], options: dict[str, Any] | None = None) -> None:
    """A gateway in front of the backends; `options` go to Gateway (metrics=False: the gateway without them)."""
    import logging

    options = dict(options or {})
    code = options.pop("code", None)
    if code:  # another checkout's gateway (--baseline): its modules, not this one's
        for name in [n for n in sys.modules if n.split(".")[0] == "nomad_gpustack"]:
            del sys.modules[name]
        sys.path.insert(0, code)
    from nomad_gpustack.serving.discovery import Endpoint
    from nomad_gpustack.serving.gateway import Gateway, StaticSource, run, serve

    logging.getLogger("nomadgs").setLevel(logging.ERROR)  # the hung case would print a warning per timeout
    endpoints = [Endpoint(model=MODEL, service=MODEL, service_id=f"bench-{n}", address="127.0.0.1", port=port,
                          health="passing") for n, port in enumerate(backend_ports)]  # fmt: skip
    # As `nomadgs gateway` runs it: on uvloop when installed.
    run(serve(Gateway(StaticSource(endpoints), **options), sock, log_level="warning"))


def run_gateway_workers(sock: socket.socket, backend_ports: list[int], count: int) -> None:
    """The gateway in `count` worker processes on `sock`, as `nomadgs gateway --workers` runs it."""
    import logging

    from nomad_gpustack.serving.discovery import Endpoint
    from nomad_gpustack.serving.gateway import Gateway, StaticSource, run, serve, serve_workers

    logging.getLogger("nomadgs").setLevel(logging.ERROR)
    endpoints = [Endpoint(model=MODEL, service=MODEL, service_id=f"bench-{n}", address="127.0.0.1", port=port,
                          health="passing") for n, port in enumerate(backend_ports)]  # fmt: skip

    def worker(listening: socket.socket, ready: Callable[[], None]) -> int:
        run(serve(Gateway(StaticSource(endpoints)), listening, log_level="warning", on_started=ready))
        return 0

    sys.exit(serve_workers(worker, sock, count))


# ---------------------------------------------------------------------------------------------------------------
# The client: one keep-alive connection per worker, timing each request


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def request(self, body: bytes) -> tuple[float, float]:
        """(seconds to the whole answer, seconds to the first body bytes)."""
        assert self.reader is not None and self.writer is not None
        head = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        start = time.perf_counter()
        self.writer.write(head + body)
        headers = await self.reader.readuntil(b"\r\n\r\n")
        if not headers.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {headers[:100]!r}")
        length = None
        chunked = False
        for line in headers.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if length is not None:
            await self.reader.readexactly(length)
            end = time.perf_counter()
            return end - start, end - start
        assert chunked
        first = 0.0
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return time.perf_counter() - start, first
            await self.reader.readexactly(size + 2)
            if not first:
                first = time.perf_counter() - start


async def sequential(port: int, body: bytes, count: int, pick: Callable[[tuple[float, float]], float]) -> list[float]:
    connection = await Connection(port).open()
    try:
        for _ in range(20):  # warm-up: connections, caches
            await connection.request(body)
        return [pick(await connection.request(body)) for _ in range(count)]
    finally:
        connection.close()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (/proc/PID/stat, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def throughput(port: int, concurrency: int, seconds: float, pid: int | None = None) -> tuple[float, float]:
    """(requests per second with `concurrency` keep-alive connections sending back to back, CPU seconds the
    server process `pid` used per request); the CPU time does not depend on what else the machine runs."""
    connections = [await Connection(port).open() for _ in range(concurrency)]
    cpu = cpu_seconds(pid) if pid else 0.0
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(connection: Connection) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await connection.request(JSON_BODY)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(pid) - cpu if pid else 0.0
    for connection in connections:
        connection.close()
    return done / elapsed, cpu / done


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


THROUGHPUT_ROUNDS = 10  # alternating rounds per path: each with/without pair runs back to back


async def measure(
    direct: int, gateway: int, bare: int, args: argparse.Namespace, pids: dict[str, int]
) -> dict[str, Any]:
    """Latency and throughput of the three paths: `gateway` keeps metrics, `bare` is the same without them."""
    rounds = 5
    per_round = max(args.requests // rounds, 1)
    paths = (("direct", direct), ("gateway", gateway), ("bare", bare))
    results: dict[str, dict[str, list[float]]] = {"latency": {name: [] for name, _ in paths},
                                                  "ttfb": {name: [] for name, _ in paths}}  # fmt: skip
    for _ in range(rounds):  # alternate, so that drift (frequency scaling, other load) hits every path
        for name, port in paths:
            results["latency"][name] += await sequential(port, JSON_BODY, per_round, lambda r: r[0])
            results["ttfb"][name] += await sequential(port, STREAM_BODY, per_round // 3 or 1, lambda r: r[1])
    rps: dict[str, list[float]] = {name: [] for name, _ in paths}
    cpu: dict[str, list[float]] = {name: [] for name, _ in paths}
    for n in range(THROUGHPUT_ROUNDS):
        # The two gateways swap places every round, so that neither always runs right after the same path. An
        # A/A run (both with metrics) still differs by up to ~10 % from one run to the next on a shared 2-core
        # VM: the in-process figure printed below is the precise one.
        order = paths if n % 2 == 0 else (paths[0], paths[2], paths[1])
        for name, port in order:
            rate, used = await throughput(port, args.concurrency, args.seconds / THROUGHPUT_ROUNDS, pids.get(name))
            rps[name].append(rate)
            cpu[name].append(used)
    return {"results": results, "rps": {k: statistics.median(v) for k, v in rps.items()}, "rounds": rps, "cpu": cpu}


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # so asyncio sets TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def wait_listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def server_stack() -> str:
    import importlib.util

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"uvicorn {http}/{loop}"


def metrics_work() -> float:
    """Seconds of the metrics' own work for one JSON answer, as the gateway does it (an instance's children,
    in flight up and down, the status, the duration, the usage read from the answer's tail), best of 7."""
    import timeit

    from nomad_gpustack.serving.discovery import Endpoint
    from nomad_gpustack.serving.gateway.metrics import GatewayMetrics

    metrics = GatewayMetrics()
    endpoint = Endpoint(model=MODEL, service=MODEL, service_id="b", address="127.0.0.1", port=1, health="passing")
    tail = (b"", b"", COMPLETION)

    def one() -> None:
        start = time.perf_counter()
        upstream = metrics.upstream(endpoint)
        upstream.in_flight.inc()
        upstream.usage(tail)
        upstream.answered(200)
        upstream.duration.observe(time.perf_counter() - start)
        upstream.in_flight.dec()

    count = 20000
    return min(timeit.repeat(one, number=count, repeat=7)) / count


def children(pid: int) -> list[int]:
    """The child processes of `pid` (the gateway's workers)."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat_file.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat_file.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def accepted_by(pids: list[int], port: int) -> list[int]:
    """How many established connections to `port` each process holds (from /proc/PID/net/tcp and its fds)."""
    counts = []
    for pid in pids:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        count = 0
        for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
        counts.append(count)
    return counts


def workers_comparison(args: argparse.Namespace) -> None:
    """Throughput of the gateway with 2 workers against 1, alternating rounds, same backend and client."""
    context = multiprocessing.get_context("fork")
    from nomad_gpustack.serving.gateway import bind

    backend_sock, one_sock = bound_socket(), bound_socket()
    two_sock = bind("127.0.0.1", 0, reuse_port=True)  # as `--workers` binds it: the workers bind their own
    backend_port, one_port, two_port = (s.getsockname()[1] for s in (backend_sock, one_sock, two_sock))
    backend_sock.listen(1024)
    processes = [
        context.Process(target=run_backend, args=(backend_sock,), daemon=False),
        context.Process(target=run_gateway, args=(one_sock, [backend_port]), daemon=False),
        context.Process(target=run_gateway_workers, args=(two_sock, [backend_port], 2), daemon=False),
    ]
    for process in processes:
        process.start()
    spread: list[int] = []

    async def rounds() -> dict[str, list[float]]:
        rps: dict[str, list[float]] = {"1": [], "2": []}
        for _ in range(THROUGHPUT_ROUNDS):
            for name, port in (("1", one_port), ("2", two_port)):
                connections = [await Connection(port).open() for _ in range(args.concurrency)]
                if name == "2" and not spread:
                    assert processes[2].pid is not None
                    spread.extend(accepted_by(children(processes[2].pid), port))
                for connection in connections:
                    connection.close()
                rate, _ = await throughput(port, args.concurrency, args.seconds / THROUGHPUT_ROUNDS)
                rps[name].append(rate)
        return rps

    try:
        for port in (backend_port, one_port, two_port):
            wait_listening(port)
        rps = asyncio.run(rounds())
    finally:
        for process in processes:
            process.terminate()
            process.join(15)
    one, two = statistics.median(rps["1"]), statistics.median(rps["2"])
    paired = sorted(b / a for a, b in zip(rps["1"], rps["2"], strict=True))
    print(f"--workers: the gateway with 2 worker processes against 1, {os.cpu_count()} CPUs (backend and client "
          f"on the same machine), c={args.concurrency}, {THROUGHPUT_ROUNDS} alternating rounds, medians")  # fmt: skip
    print(f"{'':30}{'1 worker':>10}{'2 workers':>10}{'ratio':>10}")
    print(f"{'throughput (req/s)':30}{one:10.0f}{two:10.0f}{two / one:10.2f}")
    print(f"ratio per round: median {statistics.median(paired):.2f} (from {paired[0]:.2f} to {paired[-1]:.2f}); "
          f"{args.concurrency} connections spread over the workers: {spread}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="throughput time per path (default 6)")
    parser.add_argument("--concurrency", type=int, default=16, help="parallel connections for throughput")
    parser.add_argument("--requests", type=int, default=1500, help="sequential requests per path for latency")
    parser.add_argument("--hung", action="store_true", help="measure the hung-instance case instead")
    parser.add_argument(
        "--data-path",
        action="store_true",
        help="measure the data path instead: JSON requests and streams, beside nginx when installed",
    )
    parser.add_argument(
        "--baseline", metavar="DIR", help="with --data-path: also a gateway from another checkout (its nomad_gpustack/)"
    )
    parser.add_argument("--streams", type=int, default=8, help="concurrent streams for --data-path")
    parser.add_argument("--workers-only", action="store_true", help="only the 2 workers against 1 comparison")
    args = parser.parse_args()
    if args.hung:
        hung_instance(args.concurrency)
        return
    if args.data_path:
        data_path_main(args)
        return
    if args.workers_only:
        workers_comparison(args)
        return

    context = multiprocessing.get_context("fork")  # the bound sockets pass to the children as they are
    backend_sock, gateway_sock, bare_sock = bound_socket(), bound_socket(), bound_socket()
    backend_port, gateway_port, bare_port = (s.getsockname()[1] for s in (backend_sock, gateway_sock, bare_sock))
    backend_sock.listen(1024)
    processes = [
        context.Process(target=run_backend, args=(backend_sock,), daemon=True),
        context.Process(target=run_gateway, args=(gateway_sock, [backend_port]), daemon=True),
        context.Process(target=run_gateway, args=(bare_sock, [backend_port], {"metrics": False}), daemon=True),
    ]
    for process in processes:
        process.start()
    try:
        for port in (backend_port, gateway_port, bare_port):
            wait_listening(port)
        started = time.perf_counter()
        pids = {"gateway": processes[1].pid, "bare": processes[2].pid}
        figures = asyncio.run(measure(backend_port, gateway_port, bare_port, args, pids))  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
    finally:
        for process in processes:
            process.terminate()
            process.join(5)

    latency, ttfb, rps = figures["results"]["latency"], figures["results"]["ttfb"], figures["rps"]
    ms = 1000.0
    c = args.concurrency
    rows = [
        ("chat completion p50 (ms)", percentile(latency["direct"], 50) * ms, percentile(latency["gateway"], 50) * ms),
        ("chat completion p99 (ms)", percentile(latency["direct"], 99) * ms, percentile(latency["gateway"], 99) * ms),
        ("stream first chunk p50 (ms)", percentile(ttfb["direct"], 50) * ms, percentile(ttfb["gateway"], 50) * ms),
        ("stream first chunk p99 (ms)", percentile(ttfb["direct"], 99) * ms, percentile(ttfb["gateway"], 99) * ms),
    ]
    print(f"nomadgs gateway vs direct, loopback, {os.cpu_count()} CPUs, gateway on {server_stack()}, "
          f"{len(latency['direct'])} sequential requests per path, {elapsed:.0f}s")  # fmt: skip
    print(f"{'':30}{'direct':>10}{'gateway':>10}{'added':>10}")
    for label, direct, via in rows:
        print(f"{label:30}{direct:10.3f}{via:10.3f}{via - direct:+10.3f}")
    print(f"{'throughput c=' + str(c) + ' (req/s)':30}{rps['direct']:10.0f}{rps['gateway']:10.0f}"
          f"{rps['gateway'] / rps['direct'] - 1:+10.0%}")  # fmt: skip
    print()
    print(f"metrics: the gateway with them and without them (--no-metrics), {THROUGHPUT_ROUNDS} alternating "
          f"rounds of {args.seconds / THROUGHPUT_ROUNDS:.1f}s each, medians")  # fmt: skip
    print(f"{'':30}{'without':>10}{'with':>10}{'ratio':>10}")
    bare_rows = [
        ("chat completion p50 (ms)", percentile(latency["bare"], 50) * ms, percentile(latency["gateway"], 50) * ms),
        ("stream first chunk p50 (ms)", percentile(ttfb["bare"], 50) * ms, percentile(ttfb["gateway"], 50) * ms),
        (f"throughput c={c} (req/s)", rps["bare"], rps["gateway"]),
    ]
    for label, without, with_ in bare_rows:
        print(f"{label:30}{without:10.3f}{with_:10.3f}{with_ / without:10.3f}")
    rounds = figures["rounds"]
    # Each round's pair ran one after the other: their ratio is less exposed to the machine's drift.
    paired = sorted(w / b for w, b in zip(rounds["gateway"], rounds["bare"], strict=True))
    print(f"throughput with/without, per round: median {statistics.median(paired):.3f} (from {paired[0]:.3f} "
          f"to {paired[-1]:.3f} over {len(paired)} rounds)")  # fmt: skip
    # The gateway's own CPU time per request does not depend on what else the machine runs: the steadier
    # measure of what the metrics cost (the most requests a gateway process can serve is its inverse).
    cpu = figures["cpu"]
    without_cpu, with_cpu = statistics.median(cpu["bare"]) * ms, statistics.median(cpu["gateway"]) * ms
    print(f"{'gateway CPU per request (ms)':30}{without_cpu:10.3f}{with_cpu:10.3f}{with_cpu / without_cpu:10.3f}")
    print(f"max throughput with/without (inverse of the CPU ratio): {without_cpu / with_cpu:.3f}")
    work = metrics_work()
    print(f"the metrics' own work per answered request, in-process (best of 7): {work * 1e6:.1f} us, "
          f"{work / (without_cpu / ms):.1%} of the CPU time of a request without them")  # fmt: skip
    print("(streams run one at a time and each ends in ~8 ms of idle waiting; on this VM every step of the\n"
          " next request then runs about twice as slow, which weighs on the gateway's longer path most)")  # fmt: skip
    print()
    workers_comparison(args)


# ---------------------------------------------------------------------------------------------------------------
# The data path: this gateway, another checkout's (--baseline), and nginx, in alternating rounds of one run

NGINX_CONF = """
worker_processes 1;
daemon off;
error_log {prefix}/error.log error;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy; fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def start_nginx(backend: int, prefix: Path) -> tuple[Any, int, int] | None:
    """nginx as a plain reverse proxy to `backend` (one worker: one core), or None when it is not installed:
    (process, port, the worker's pid)."""
    import shutil
    import subprocess

    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        return None
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, backend=backend, port=port))
    process = subprocess.Popen([binary, "-c", str(conf), "-p", str(prefix)], stderr=subprocess.DEVNULL)
    wait_listening(port)
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    return process, port, int(children[0])


async def streams(port: int, concurrency: int, seconds: float, pid: int | None) -> tuple[float, float]:
    """(stream events relayed per second with `concurrency` streams of BURST_EVENTS events back to back, CPU
    seconds the proxy `pid` used per event)."""
    connections = [await Connection(port).open() for _ in range(concurrency)]
    cpu = cpu_seconds(pid) if pid else 0.0
    done = 0
    stop = time.perf_counter() + seconds
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(BURST_BODY), BURST_BODY))  # fmt: skip

    async def worker(connection: Connection) -> None:
        nonlocal done
        assert connection.reader is not None and connection.writer is not None
        while time.perf_counter() < stop:
            connection.writer.write(head)
            # Raw reads to the last chunk: the client's own cost stays small beside the proxy's.
            tail = b""
            while not tail.endswith(b"\r\n0\r\n\r\n"):
                data = await connection.reader.read(262144)
                if not data:
                    raise RuntimeError("the stream broke")
                tail = (tail + data)[-16:]
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(pid) - cpu if pid else 0.0
    for connection in connections:
        connection.close()
    events = done * BURST_EVENTS
    return events / elapsed, cpu / max(events, 1)


DATA_ROUNDS = 5


async def data_path(paths: list[tuple[str, int, int | None]], args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, dict[str, list[float]]] = {
        name: {"rps": [], "cpu": [], "events": [], "event_cpu": []} for name, _, _ in paths
    }
    per_round = args.seconds / DATA_ROUNDS
    for _ in range(DATA_ROUNDS):  # alternating: drift and other people's load hit every path alike
        for name, port, pid in paths:
            rate, cpu = await throughput(port, args.concurrency, per_round, pid)
            figures[name]["rps"].append(rate)
            figures[name]["cpu"].append(cpu)
            events, event_cpu = await streams(port, args.streams, per_round, pid)
            figures[name]["events"].append(events)
            figures[name]["event_cpu"].append(event_cpu)
    return figures


def data_path_main(args: argparse.Namespace) -> None:
    import tempfile

    context = multiprocessing.get_context("fork")
    backend_sock = bound_socket()
    backend_sock.listen(1024)
    backend_port = backend_sock.getsockname()[1]
    gateways = [("gateway", {})] + ([("baseline", {"code": args.baseline})] if args.baseline else [])
    socks = {name: bound_socket() for name, _ in gateways}
    processes = [context.Process(target=run_backend, args=(backend_sock,), daemon=True)]
    processes += [context.Process(target=run_gateway, args=(socks[name], [backend_port], options), daemon=True)
                  for name, options in gateways]  # fmt: skip
    for process in processes:
        process.start()
    nginx = None
    with tempfile.TemporaryDirectory(prefix="gateway-bench-nginx-") as prefix:
        try:
            paths: list[tuple[str, int, int | None]] = []
            for (name, _), process in zip(gateways, processes[1:], strict=True):
                port = socks[name].getsockname()[1]
                wait_listening(port)
                paths.append((name, port, process.pid))
            wait_listening(backend_port)
            nginx = start_nginx(backend_port, Path(prefix))
            if nginx is not None:
                paths.append(("nginx", nginx[1], nginx[2]))
            started = time.perf_counter()
            figures = asyncio.run(data_path(paths, args))
            elapsed = time.perf_counter() - started
        finally:
            for process in processes:
                process.terminate()
                process.join(5)
            if nginx is not None:
                nginx[0].terminate()
                nginx[0].wait(5)
    names = [name for name, _, _ in paths]
    ms, us = 1000.0, 1e6
    print(f"data path, one process each (nginx: 1 worker), loopback, {os.cpu_count()} CPUs shared, {DATA_ROUNDS} "
          f"alternating rounds, medians, {elapsed:.0f}s; gateway: this checkout"
          + (f", baseline: {args.baseline}" if args.baseline else ""))  # fmt: skip
    print(f"{'':38}" + "".join(f"{name:>12}" for name in names))

    def row(label: str, key: str, scale: float, fmt: str) -> None:
        print(f"{label:38}" + "".join(f"{statistics.median(figures[n][key]) * scale:{fmt}}" for n in names))

    row(f"JSON req/s, c={args.concurrency}", "rps", 1, "12.0f")
    row("JSON CPU per request (ms)", "cpu", ms, "12.3f")
    row(f"stream events/s, {args.streams} streams", "events", 1, "12.0f")
    row("stream CPU per event (us)", "event_cpu", us, "12.2f")

    def per_core(name: str, key: str) -> float:
        return 1 / statistics.median(figures[name][key])  # what one fully used core would do

    print("per core (the inverse of CPU time per request or event; other load on the machine does not change it):")
    for other in names[1:]:
        print(f"  gateway / {other}: JSON x{per_core('gateway', 'cpu') / per_core(other, 'cpu'):.2f}, "
              f"stream events x{per_core('gateway', 'event_cpu') / per_core(other, 'event_cpu'):.2f}")  # fmt: skip
    rps = {n: statistics.median(figures[n]["rps"]) for n in names}
    events = {n: statistics.median(figures[n]["events"]) for n in names}
    for other in names[1:]:
        print(f"  gateway / {other}, as measured: JSON req/s x{rps['gateway'] / rps[other]:.2f}, "
              f"stream events/s x{events['gateway'] / events[other]:.2f}")  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# One instance of three hung for 5 s under load

HUNG_OPTIONS = {"upstream_timeout": 1.0}  # short, so that the run is short; the default is 10m
BEFORE, HANG, AFTER = 2.0, 5.0, 3.0


async def steady_load(port: int, concurrency: int, hung_pid: int) -> list[tuple[float, int, float]]:
    """(start since the beginning, status, seconds) of each request; one backend is stopped BEFORE seconds in,
    resumed HANG seconds later."""
    import httpx

    results: list[tuple[float, int, float]] = []
    begin = time.perf_counter()
    end = begin + BEFORE + HANG + AFTER

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < end:
            start = time.perf_counter()
            response = await client.post("/v1/chat/completions", content=JSON_BODY)
            results.append((start - begin, response.status_code, time.perf_counter() - start))

    async def conductor() -> None:
        await asyncio.sleep(BEFORE)
        os.kill(hung_pid, signal.SIGSTOP)
        await asyncio.sleep(HANG)
        os.kill(hung_pid, signal.SIGCONT)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60, limits=limits) as client:
        await asyncio.gather(conductor(), *(worker(client) for _ in range(concurrency)))
    return results


def hung_instance(concurrency: int) -> None:
    context = multiprocessing.get_context("fork")
    backend_socks = [bound_socket() for _ in range(3)]
    for sock in backend_socks:
        sock.listen(1024)
    ports = [sock.getsockname()[1] for sock in backend_socks]
    gateway_sock = bound_socket()
    gateway_port = gateway_sock.getsockname()[1]
    processes = [context.Process(target=run_backend, args=(sock,), daemon=True) for sock in backend_socks]
    processes.append(context.Process(target=run_gateway, args=(gateway_sock, ports, HUNG_OPTIONS), daemon=True))
    for process in processes:
        process.start()
    try:
        for port in (*ports, gateway_port):
            wait_listening(port)
        assert processes[0].pid is not None
        results = asyncio.run(steady_load(gateway_port, concurrency, processes[0].pid))
    finally:
        for process in processes:
            if process.pid is not None:
                os.kill(process.pid, signal.SIGCONT)
            process.terminate()
            process.join(5)

    def rate(start: float, stop: float) -> float:
        return sum(1 for t, status, _ in results if start <= t < stop and status == 200) / (stop - start)

    timed_out = [seconds for _, status, seconds in results if status == 504]
    others = sorted({status for _, status, _ in results} - {200, 504})
    print(f"one of 3 instances stopped for {HANG:.0f}s under c={concurrency} load, upstream timeout "
          f"{HUNG_OPTIONS['upstream_timeout']:.0f}s, ejected after 3 timeouts in a row")  # fmt: skip
    print(f"{'answered 200 per second':30}{'before':>10}{'hung':>10}{'after':>10}")
    print(f"{'':30}{rate(0, BEFORE):10.0f}{rate(BEFORE, BEFORE + HANG):10.0f}"
          f"{rate(BEFORE + HANG, BEFORE + HANG + AFTER):10.0f}")  # fmt: skip
    print(f"504 answers: {len(timed_out)}, after {statistics.mean(timed_out) if timed_out else 0:.2f}s on average"
          + (f"; other statuses: {others}" if others else ""))  # fmt: skip
    slowest = max((seconds for _, status, seconds in results if status == 200), default=0.0)
    print(
        f"slowest 200: {slowest * 1000:.0f} ms (the hung instance stays out once resumed, for its ejection time: 30s)"
    )


if __name__ == "__main__":
    main()
