"""`nomadgs endpoints`, `nomadgs chat` and `nomadgs gateway`: using the models that run."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import EXIT_FAILURE, EXIT_OK, InputError, NomadgsError, Problem, suggestion
from . import output as say
from .base import F, apply, command, preformatted
from .connection import (
    CONSUL_ENV,
    NOMAD_ENV,
    consul_options,
    consul_settings,
    nomad_options,
    nomad_settings,
    read_secret,
)
from .options import Choice, duration_seconds, format_option, size_bytes
from .root import exit_code

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

    from ..serving.chat import ChatClient, ChatOptions, Conversation
    from ..serving.discovery import Endpoint, RoutingTable

PROVIDERS = ("consul", "nomad", "all")
# serving.chat.API_KEY_ENV (tested), written out: the command list imports no client
CHAT_ENV = (("NOMADGS_API_KEY", "API key for --url (or use --api-key-file)"),)
GATEWAY_ENV = (("NOMADGS_GATEWAY_API_KEYS", "accepted API keys, comma- or space-separated (never printed)"),)
MIN_BUFFERED = 1024 * 1024  # --max-buffered: below it a body's first chunks would not fit


def discovery_options(f: F) -> F:
    """--provider and the Consul and Nomad connection flags of `endpoints` and `chat`."""
    provider = click.option(
        "--provider",
        type=Choice(PROVIDERS),
        default="consul",
        help="service catalog to read: Consul, Nomad's own, or both (default: consul)",
    )
    return apply([provider, consul_options, nomad_options], f)


def _check_model_name(name: str) -> None:
    from ..spec.deployment import MODEL_NAME

    if not MODEL_NAME.fullmatch(name):
        raise InputError(Problem(f"'{name}' is not a model name", hint="1-63 letters, digits, '.', '_' or '-'"))


def _discover(provider: str, connection: Mapping[str, Any]) -> RoutingTable:
    from ..serving.discovery import build_table
    from ..serving.lookup import discover

    consul = consul_settings(connection) if provider in ("consul", "all") else None
    nomad = nomad_settings(connection) if provider in ("nomad", "all") else None
    return build_table(discover(consul=consul, nomad=nomad))


def _no_instance(model: str, table: RoutingTable, provider: str) -> Exception:
    from ..serving.discovery import NoInstanceError

    where = {"consul": "in Consul", "nomad": "in Nomad", "all": "in Consul or Nomad"}[provider]
    if table.knows(model):
        return NoInstanceError(f"model '{model}' has no healthy instance")
    hint = suggestion(model, table.models)
    return NoInstanceError(f"no instance of model '{model}' is registered {where}" + (f"; {hint}" if hint else ""))


# ----------------------------------------------------------------------------------------------------
# nomadgs endpoints


SCALED_TO_ZERO = "idle (scaled to zero)"


def endpoint_lines(endpoints: Sequence[Endpoint], asleep: Sequence[str] = ()) -> list[str]:
    """The text table of `nomadgs endpoints`, one line per instance, and one per model scaled to zero (`asleep`:
    0 instances, which a request through the gateway wakes)."""
    rows = [("MODEL", "HEALTH", "BASE URL", "BACKEND", "NODE")]
    for e in endpoints:
        backend = " ".join(part for part in (e.backend, e.version) if part) or "-"
        rows.append((e.model, e.health, e.base_url, backend, e.node or "-"))
    rows += [(model, SCALED_TO_ZERO, "- (0 instances)", "-", "-") for model in asleep]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in rows]


def endpoints_json(table: RoutingTable, models: Sequence[str], asleep: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON document of `nomadgs endpoints --output json`: models with their instances (`asleep`: models
    scaled to zero, with none)."""
    out = []
    for model in models:
        instances = table.instances(model)
        out.append(
            {"model": model, "healthy": sum(1 for e in instances if e.passing),
             "instances": [e.to_json() for e in instances], "scaled_to_zero": model in asleep}
        )  # fmt: skip
    return {"models": out}


def _asleep(provider: str, connection: Mapping[str, Any], table: RoutingTable) -> list[str]:
    """The models scaled to zero with no instance in `table`, when Nomad is known (--provider nomad/all, or a
    Nomad address set); when that read fails, a warning says so and the instances are listed."""
    if provider == "consul" and not (connection.get("address") or os.environ.get("NOMAD_ADDR")):
        return []
    from ..serving.lookup import scaled_to_zero

    try:
        models = scaled_to_zero(nomad_settings(connection))
    except NomadgsError as exc:  # the instances were read: say what is missing, and list them
        say.warning(f"the models scaled to zero are not listed: {exc}")
        return []
    return [m for m in models if not table.instances(m)]


@command(
    "endpoints",
    short_help="list the models that run, with their OpenAI base URLs and health",
    help=(
        "List every instance of the models nomadgs deployed, healthy or not, read from Consul (or from "
        "Nomad's own service catalog with --provider nomad), and, when Nomad is known (NOMAD_ADDR, --address "
        "or --provider nomad/all), the models scaled to zero, with 0 instances. With MODEL, exit 1 unless it "
        "has a healthy instance."
    ),
    environment=CONSUL_ENV + NOMAD_ENV,
)
@click.argument("model", metavar="[MODEL]", required=False)
@format_option()
@discovery_options
def endpoints(model: str | None, fmt: str, provider: str, **connection: Any) -> int:
    if model is not None:
        _check_model_name(model)
    table = _discover(provider, connection)
    asleep = _asleep(provider, connection, table)
    if model is not None:
        asleep = [m for m in asleep if m == model]
    models = [model] if model is not None else sorted({*table.models, *asleep})
    if model is not None and not table.knows(model) and not asleep:
        raise _no_instance(model, table, provider)
    if fmt == "json":
        say.emit_json(endpoints_json(table, models, asleep))
    elif not models:
        say.note("no models found: no service tagged 'nomadgs' is registered")
    else:
        instances = [e for m in models for e in table.instances(m)]
        for line in endpoint_lines(instances, asleep):
            print(line)
    if asleep and model is not None:
        say.error(f"model '{model}' is scaled to zero: a request for it through `nomadgs gateway` wakes it")
        return EXIT_FAILURE
    if model is not None and model not in table.routes:
        say.error(str(_no_instance(model, table, provider)))
        return EXIT_FAILURE
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------
# nomadgs chat


def _chat_target(
    model: str, url: str | None, api_key_file: str | None, provider: str, connection: Mapping[str, Any]
) -> tuple[str, str | None]:
    """(base URL, API key): --url as given, or a healthy instance of the model picked at random."""
    import random

    if url:
        from ..serving.chat import API_KEY_ENV
        from ..settings import clean_secret

        if api_key_file:
            return url, read_secret(api_key_file, "API key")
        return url, clean_secret(os.environ.get(API_KEY_ENV), API_KEY_ENV)
    table = _discover(provider, connection)
    healthy = table.routes.get(model)
    if not healthy:
        raise _no_instance(model, table, provider)
    return random.choice(healthy).base_url, None


CHAT_HELP = preformatted("""\
Chat with a healthy instance of MODEL, the answer streamed as it is written. In a terminal it
keeps the conversation (/reset forgets it, /exit or Ctrl-D leaves). With --prompt, or with a
prompt on stdin, it prints only the answer, for scripts:
  echo 'Summarise: ...' | nomadgs chat qwen3-8b --max-tokens 200
""")


@command(
    "chat",
    short_help="chat with a model in the terminal, or answer one prompt (-p, or stdin) for scripts",
    help=CHAT_HELP,
    environment=CHAT_ENV + CONSUL_ENV + NOMAD_ENV,
)
@click.argument("model", metavar="MODEL")
@click.option("-p", "--prompt", metavar="TEXT", help="answer this one prompt and exit")
@click.option("--system", metavar="TEXT", help="system prompt")
@click.option("--max-tokens", metavar="N", type=int, help="longest answer, in tokens")
@click.option("--temperature", metavar="T", type=float, help="sampling temperature (0-2)")
@click.option(
    "--url", metavar="BASE", help="talk to this OpenAI base URL (a gateway, ...) instead of discovering MODEL"
)
@click.option("--api-key-file", metavar="FILE", help="read the API key for --url from FILE [NOMADGS_API_KEY]")
@discovery_options
def chat(
    model: str,
    prompt: str | None,
    system: str | None,
    max_tokens: int | None,
    temperature: float | None,
    url: str | None,
    api_key_file: str | None,
    provider: str,
    **connection: Any,
) -> int:
    from ..serving.chat import ChatClient, ChatOptions, Conversation

    _check_model_name(model)
    if max_tokens is not None and max_tokens < 1:
        raise InputError(Problem("--max-tokens must be 1 or more"))
    if temperature is not None and not 0 <= temperature <= 2:
        raise InputError(Problem("--temperature must be between 0 and 2"))
    one_shot = prompt is not None or not sys.stdin.isatty()
    if one_shot:
        prompt = prompt if prompt is not None else sys.stdin.read()
        if not prompt.strip():
            raise InputError(Problem("the prompt is empty", hint="pass it with -p TEXT or on stdin"))
    if url:
        from ..urls import normalise_base_url

        url = normalise_base_url(url)
    base_url, api_key = _chat_target(model, url, api_key_file, provider, connection)
    options = ChatOptions(model, max_tokens, temperature)
    conversation = Conversation(system)
    with ChatClient(base_url, api_key=api_key) as client:
        if prompt is not None:
            for piece in client.stream(options, conversation.ask(prompt)):
                sys.stdout.write(piece)
                sys.stdout.flush()
                if say.reader_left():  # `nomadgs chat m -p ... | head -1`: the rest of the answer is not wanted
                    break
            sys.stdout.write("\n")
            return EXIT_OK
        return _chat_loop(client, options, conversation)


def _chat_loop(client: ChatClient, options: ChatOptions, conversation: Conversation) -> int:
    """The terminal playground: one question per line, the answer streamed below it."""
    from ..serving.chat import ChatError

    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    say.info(f"chatting with {options.model} at {client.base_url}; /reset forgets, /exit or Ctrl-D leaves")
    while True:
        try:
            question = input("> ")
        except EOFError:
            print()
            return EXIT_OK
        command = question.strip()
        if not command:
            continue
        if command in ("/exit", "/quit"):
            return EXIT_OK
        if command == "/reset":
            conversation.reset()
            say.info("(conversation forgotten)")
            continue
        pieces: list[str] = []
        try:
            for piece in client.stream(options, conversation.ask(question)):
                pieces.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
        except ChatError as exc:
            conversation.drop_last_question()
            print()
            say.error(str(exc))
            continue
        except KeyboardInterrupt:
            # Ctrl-C stops this answer, not the chat; the part already written is kept.
            say.info("\n(interrupted)")
        print()
        if pieces:
            conversation.answer("".join(pieces))
        else:
            conversation.drop_last_question()


# ----------------------------------------------------------------------------------------------------
# nomadgs gateway


def _log_changes() -> Callable[[RoutingTable], None]:
    """A watcher callback that logs each model whose number of healthy instances changed."""
    import logging

    log = logging.getLogger("nomadgs.gateway")
    seen: dict[str, tuple[int, int]] = {}

    def on_change(table: RoutingTable) -> None:
        now = {m: (len(table.routes.get(m, ())), len(table.instances(m))) for m in table.models}
        for model in sorted(set(now) | set(seen)):
            healthy, total = now.get(model, (0, 0))
            if seen.get(model) != (healthy, total):
                log.info("model %s: %d healthy instance(s) of %d", model, healthy, total)
        seen.clear()
        seen.update(now)

    return on_change


GATEWAY_HELP = preformatted("""\
One OpenAI-compatible /v1 for every model: requests go to a healthy instance of the model
named in their body, balanced across replicas, following Consul as instances come and go.
  GET /v1/models; POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/rerank,
  /v1/audio/speech
For Prometheus: GET /metrics (the gateway's own), GET /metrics/targets (HTTP service
discovery: the gateway and every engine that serves metrics, labelled as Consul discovery does).
Scale to zero (on when a Nomad address is set, NOMAD_ADDR or --address): models whose job
says so (nomad.scaling.min: 0 with idle_after) are scaled to 0 in Nomad after that long
without a request; a request for a model at 0 is held while the gateway scales it to 1 and
its instance passes its check. The token needs list-jobs, read-job and scale-job on the
namespace (examples/acl/nomadgs-gateway.policy.hcl).
""")


@command(
    "gateway",
    short_help="serve every model behind one OpenAI-compatible address",
    help=GATEWAY_HELP,
    environment=GATEWAY_ENV + CONSUL_ENV + NOMAD_ENV,
)
@click.option(
    "--listen", metavar="HOST:PORT", default="127.0.0.1:8080", help="address to serve on (default: 127.0.0.1:8080)"
)
@click.option(
    "--api-key",
    metavar="KEY",
    multiple=True,
    help="accept this key as 'Authorization: Bearer KEY' (repeatable; `ps` shows it: prefer the file)",
)
@click.option("--api-keys-file", metavar="FILE", help="accept the keys in FILE, one per line")
@click.option("--log-level", type=Choice(("debug", "info", "warning", "error")), default="info", help="default: info")
@click.option(
    "--upstream-timeout",
    metavar="DURATION",
    default="10m",  # the Gateway's UPSTREAM_TIMEOUT (tested); not imported: the command list stays light
    help="longest wait for an instance to start its answer, then 504; 0: no limit (default: 10m)",
)
@click.option(
    "--stream-idle-timeout",
    metavar="DURATION",
    default="2m",  # the Gateway's STREAM_IDLE_TIMEOUT (tested)
    help="longest pause in the middle of an answer, then it is cut; 0: no limit (default: 2m)",
)
@click.option(
    "--eject-for",
    metavar="DURATION",
    default="30s",  # the OutlierDetector's EJECT_FOR (tested)
    help="take an instance out of rotation for this long after 3 timeouts or refused connections in a row, N "
    "times as long at its Nth ejection in a row (at most 10); a busy instance (answering others) and a model's "
    "last instance in rotation stay in; 0: never (default: 30s)",
)
@click.option(
    "--canary-weight",
    type=click.FloatRange(0, 1),
    metavar="FRACTION",
    help="while a canary deployment is unpromoted, the share of a model's requests its canary instances (Consul "
    "tag 'canary') get, from 0 to 1; an unhealthy canary gets none (default: their share of the instances)",
)
@click.option("--access-log", is_flag=True, help="log every request (costs some throughput)")
@click.option("--no-metrics", is_flag=True, help="count nothing for Prometheus: no GET /metrics")
@click.option(
    "--scale-to-zero/--no-scale-to-zero",
    default=None,
    help="scale idle models to 0 and wake them on a request, through Nomad (default: on when NOMAD_ADDR or "
    "--address is set)",
)
@click.option(
    "--hold-timeout",
    metavar="DURATION",
    default="10m",  # the Waker's HOLD_TIMEOUT (tested)
    help="longest wait of a request for a model at 0 instances to start, then 503; 0: no limit (default: 10m)",
)
@click.option(
    "--max-held",
    metavar="N",
    type=click.IntRange(1),
    default=100,  # the Waker's MAX_HELD (tested)
    help="requests held per model while it starts; more are answered 429 (default: 100)",
)
@click.option(
    "--max-buffered",
    metavar="SIZE",
    default="128MiB",  # the Gateway's MAX_BUFFERED (tested)
    help="what the request bodies read to find their model may hold together; past it, 503 gateway_busy with "
    "Retry-After (default: 128MiB)",
)
@click.option(
    "--workers",
    metavar="N|auto",
    default="1",
    help="processes serving on the one address, each following Consul; auto: one per CPU this process may use "
    "(default: 1)",
)
@click.option(
    "--drain-timeout",
    metavar="DURATION",
    default="30s",  # server.DRAIN_TIMEOUT (tested)
    help="on SIGTERM or Ctrl-C, how long requests and streams in flight may run before they are cut; 0: no limit "
    "(default: 30s)",
)
@consul_options
@nomad_options
def gateway(
    listen: str,
    api_key: tuple[str, ...],
    api_keys_file: str | None,
    log_level: str,
    upstream_timeout: str,
    stream_idle_timeout: str,
    eject_for: str,
    canary_weight: float | None,
    access_log: bool,
    no_metrics: bool,
    scale_to_zero: bool | None,
    hold_timeout: str,
    max_held: int,
    max_buffered: str,
    workers: str,
    drain_timeout: str,
    **connection: Any,
) -> int:
    import logging

    from ..serving import gateway as package
    from ..serving.consul import ConsulWatcher
    from ..serving.gateway import ApiKeys, Gateway, bind, is_loopback, load_api_keys, parse_listen, run, worker_count
    from ..urls import openai_base_url

    host, port = parse_listen(listen)
    # 0 means no limit
    upstream = duration_seconds(upstream_timeout, "--upstream-timeout") or None
    stream_idle = duration_seconds(stream_idle_timeout, "--stream-idle-timeout") or None
    ejection = duration_seconds(eject_for, "--eject-for")
    hold = duration_seconds(hold_timeout, "--hold-timeout")
    drain = duration_seconds(drain_timeout, "--drain-timeout")
    buffered = size_bytes(max_buffered, "--max-buffered")
    if buffered < MIN_BUFFERED:  # a body's first chunks must fit, or every request would be refused
        raise InputError(Problem(f"{max_buffered} is too small", field="--max-buffered", hint="at least 1MiB"))
    processes = worker_count(workers)
    if scale_to_zero is None:  # on when this gateway is told where Nomad is
        scale_to_zero = bool(connection.get("address") or os.environ.get("NOMAD_ADDR"))
    keys = load_api_keys(list(api_key), api_keys_file, os.environ)
    settings = consul_settings(connection)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))  # aligned with uvicorn's lines
    logger = logging.getLogger("nomadgs")
    logger.addHandler(handler)
    logger.setLevel(log_level.upper())
    if not keys and not is_loopback(host):
        say.warning(f"the gateway listens on {host} without API keys: anyone who reaches it can use the models")
    nomad = None
    if scale_to_zero:
        from ..serving.gateway.waker import Waker

        nomad = nomad_settings(connection)
    sock = bind(host, port, reuse_port=processes > 1)

    def make_gateway() -> Gateway:
        # Each worker process makes its own: its own watch of Consul, pool, ejections and waker.
        return Gateway(
            ConsulWatcher(settings, on_change=_log_changes()),
            api_keys=keys,
            upstream_timeout=upstream,
            stream_idle_timeout=stream_idle,
            eject_for=ejection,
            metrics=not no_metrics,
            canary_weight=canary_weight,
            max_buffered=buffered,
            waker=Waker(nomad, hold_timeout=hold, max_held=max_held) if nomad is not None else None,
        )

    def worker(listening: socket.socket, ready: Callable[[], None]) -> int:
        try:
            serving = package.serve(make_gateway(), listening, log_level=log_level, access_log=access_log,
                                    drain_timeout=drain, on_started=ready)  # fmt: skip
            run(serving)
        except (Exception, KeyboardInterrupt) as exc:  # in a worker process: said here, with its code
            return exit_code(exc)
        return EXIT_OK

    zero = f"; scale to zero through Nomad at {nomad.address}" if nomad is not None else ""
    several = f"; {processes} worker processes" if processes > 1 else ""
    say.info(
        f"gateway: {openai_base_url(host, port)} for the models in Consul at {settings.address}{zero}; "
        + (f"{len(ApiKeys(keys))} API key(s) accepted" if keys else "no API key required")
        + several
    )
    try:
        if processes > 1:
            code = package.serve_workers(worker, sock, processes)
        else:
            gateway = make_gateway()
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C before it listens: stopped all the same
                run(package.serve(gateway, sock, log_level=log_level, access_log=access_log, drain_timeout=drain))
            code = EXIT_OK
    finally:
        sock.close()
    if code == EXIT_OK:
        say.info("gateway stopped")
    return code


@command(
    "gateway-job",
    short_help="the gateway as a Nomad service job (JSON or HCL)",
    help=preformatted("""\
The gateway as a Nomad service job: --replicas allocations on distinct nodes, each
`nomadgs gateway --workers auto` in the image --image (build it with
docker/build-local-images.sh), registered in Consul as nomadgs-gateway with a /health
check, tagged for Prometheus. The API keys and the Nomad token are never in the job: the
task reads them from the Nomad Variable nomad/jobs/nomadgs-gateway (items api_keys,
nomad_token), e.g.
  nomad var put nomad/jobs/nomadgs-gateway api_keys=KEY1,KEY2 nomad_token=TOKEN
jobs/nomadgs-gateway.nomad.json and .hcl are this command's defaults.
"""),
)
@click.option("--replicas", type=click.IntRange(1), default=2, metavar="N", help="gateways, one per node (default: 2)")
@click.option("--image", metavar="IMAGE", help="the nomadgs image (default: local/nomadgs:VERSION)")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, metavar="PORT",
    help="static port on every node; 0: one Nomad chooses (default: 8080)",
)  # fmt: skip
@click.option("--datacenter", "datacenters", multiple=True, metavar="DC", help="datacenters (repeatable)")
@click.option(
    "--consul-address", metavar="URL",
    help="Consul's address from the task (default: the node's agent, http://127.0.0.1:8500)",
)  # fmt: skip
@click.option(
    "--nomad-address", metavar="URL",
    help="Nomad's address from the task, for scale to zero (with the variable's nomad_token); default: off",
)  # fmt: skip
@click.option("--format", "output_format", type=Choice(("json", "hcl")), default="json", help="default: json")
@click.option("-o", "--output", metavar="DIR", help="write DIR/nomadgs-gateway.nomad.json (or .hcl) instead of stdout")
def gateway_job(
    replicas: int,
    image: str | None,
    port: int,
    datacenters: tuple[str, ...],
    consul_address: str | None,
    nomad_address: str | None,
    output_format: str,
    output: str | None,
) -> int:
    from ..compile.gateway_job import IMAGE, JOB_ID, GatewayJobOptions
    from ..compile.gateway_job import gateway_job as build
    from ..nomad.render import SUFFIXES, Format, render_text
    from ..settings import DEFAULT_CONSUL_ADDR, DEFAULT_NOMAD_ADDR, task_address
    from .atomicfile import write_all_atomic

    # Written into the job for the task: checked here as NOMAD_ADDR and CONSUL_HTTP_ADDR are, not at run time.
    if consul_address:
        consul_address = task_address(consul_address, "Consul address", "--consul-address", DEFAULT_CONSUL_ADDR)
    if nomad_address:
        nomad_address = task_address(nomad_address, "Nomad address", "--nomad-address", DEFAULT_NOMAD_ADDR)
    options = GatewayJobOptions(
        replicas=replicas,
        image=image or IMAGE,
        port=port,
        datacenters=datacenters,
        consul_address=consul_address or GatewayJobOptions.consul_address,
        nomad_address=nomad_address,
    )
    fmt: Format = "hcl" if output_format == "hcl" else "json"
    text = render_text(build(options), fmt)
    if output is None:
        sys.stdout.write(text)
        return EXIT_OK
    path = Path(output) / f"{JOB_ID}{SUFFIXES[fmt]}"
    write_all_atomic({path: text})
    say.info(f"wrote {path}")
    return EXIT_OK
