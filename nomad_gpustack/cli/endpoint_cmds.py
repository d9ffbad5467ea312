"""`nomadgs endpoints`, `nomadgs chat` and `nomadgs gateway`: using the models that run."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_FAILURE, InputError, Problem, suggestion
from . import output
from .connection import (
    CONSUL_ENV_HELP,
    NOMAD_ENV_HELP,
    add_consul_options,
    add_nomad_options,
    consul_settings,
    nomad_settings,
    read_secret,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..serving.chat import ChatClient, ChatOptions, Conversation
    from ..serving.discovery import Endpoint, RoutingTable

PROVIDERS = ("consul", "nomad", "all")
GATEWAY_ENV_HELP = """\
environment:
  NOMADGS_GATEWAY_API_KEYS  accepted API keys, comma- or space-separated (never printed)
"""


def register(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    endpoints = sub.add_parser(
        "endpoints",
        help="list the models that run, with their OpenAI base URLs and health",
        description=(
            "List every instance of the models nomadgs deployed, healthy or not, read from Consul (or from\n"
            "Nomad's own service catalog with --provider nomad). With MODEL, exit 1 unless it has a healthy\n"
            "instance."
        ),
        epilog=NOMAD_ENV_HELP + CONSUL_ENV_HELP,
        formatter_class=formatter,
    )
    endpoints.add_argument("model", metavar="MODEL", nargs="?", help="only this model")
    endpoints.add_argument("--output", choices=("text", "json"), default="text", help="result format")
    _add_discovery_options(endpoints)
    endpoints.set_defaults(handler=cmd_endpoints)

    chat = sub.add_parser(
        "chat",
        help="chat with a model in the terminal, or answer one prompt (-p, or stdin) for scripts",
        description=(
            "Chat with a healthy instance of MODEL, the answer streamed as it is written. In a terminal it\n"
            "keeps the conversation (/reset forgets it, /exit or Ctrl-D leaves). With --prompt, or with a\n"
            "prompt on stdin, it prints only the answer, for scripts:\n"
            "  echo 'Summarise: ...' | nomadgs chat qwen3-8b --max-tokens 200"
        ),
        epilog=f"environment:\n  {_api_key_env()}      API key for --url (or use --api-key-file)\n" + CONSUL_ENV_HELP,
        formatter_class=formatter,
    )
    chat.add_argument("model", metavar="MODEL", help="model name, as `nomadgs endpoints` lists it")
    chat.add_argument("-p", "--prompt", metavar="TEXT", help="answer this one prompt and exit")
    chat.add_argument("--system", metavar="TEXT", help="system prompt")
    chat.add_argument("--max-tokens", metavar="N", type=int, help="longest answer, in tokens")
    chat.add_argument("--temperature", metavar="T", type=float, help="sampling temperature (0-2)")
    chat.add_argument(
        "--url",
        metavar="BASE",
        help="talk to this OpenAI base URL (a gateway, ...) instead of discovering MODEL",
    )
    chat.add_argument("--api-key-file", metavar="FILE", help=f"read the API key for --url from FILE [{_api_key_env()}]")
    _add_discovery_options(chat)
    chat.set_defaults(handler=cmd_chat)

    gateway = sub.add_parser(
        "gateway",
        help="serve every model behind one OpenAI-compatible address",
        description=(
            "One OpenAI-compatible /v1 for every model: requests go to a healthy instance of the model\n"
            "named in their body, balanced across replicas, following Consul as instances come and go.\n"
            "  GET /v1/models; POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/rerank,\n"
            "  /v1/audio/speech"
        ),
        epilog=GATEWAY_ENV_HELP + CONSUL_ENV_HELP,
        formatter_class=formatter,
    )
    gateway.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default="127.0.0.1:8080",
        help="address to serve on (default: %(default)s)",
    )
    gateway.add_argument(
        "--api-key",
        metavar="KEY",
        action="append",
        default=[],
        help="accept this key as 'Authorization: Bearer KEY' (repeatable; `ps` shows it: prefer the file)",
    )
    gateway.add_argument("--api-keys-file", metavar="FILE", help="accept the keys in FILE, one per line")
    gateway.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="default: %(default)s",
    )
    gateway.add_argument(
        "--upstream-timeout",
        metavar="DURATION",
        default="10m",  # the Gateway's UPSTREAM_TIMEOUT (tested); not imported: the command list stays light
        help="longest wait for an instance to start its answer, then 504; 0: no limit (default: %(default)s)",
    )
    gateway.add_argument(
        "--stream-idle-timeout",
        metavar="DURATION",
        default="2m",  # the Gateway's STREAM_IDLE_TIMEOUT (tested)
        help="longest pause in the middle of an answer, then it is cut; 0: no limit (default: %(default)s)",
    )
    gateway.add_argument("--access-log", action="store_true", help="log every request (costs some throughput)")
    add_consul_options(gateway)
    gateway.set_defaults(handler=cmd_gateway)


def _api_key_env() -> str:
    from ..serving.chat import API_KEY_ENV

    return API_KEY_ENV


def _add_discovery_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--provider",
        choices=PROVIDERS,
        default="consul",
        help="service catalog to read: Consul, Nomad's own, or both (default: %(default)s)",
    )
    add_consul_options(parser)
    add_nomad_options(parser)


def _check_model_name(name: str) -> None:
    from ..spec.deployment import MODEL_NAME

    if not MODEL_NAME.fullmatch(name):
        raise InputError(Problem(f"'{name}' is not a model name", hint="1-63 letters, digits, '.', '_' or '-'"))


def _discover(args: argparse.Namespace) -> RoutingTable:
    from ..serving.discovery import build_table
    from ..serving.lookup import discover

    consul = consul_settings(args) if args.provider in ("consul", "all") else None
    nomad = nomad_settings(args) if args.provider in ("nomad", "all") else None
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


def endpoint_lines(endpoints: Sequence[Endpoint]) -> list[str]:
    """The text table of `nomadgs endpoints`, one line per instance."""
    rows = [("MODEL", "HEALTH", "BASE URL", "BACKEND", "NODE")]
    for e in endpoints:
        backend = " ".join(part for part in (e.backend, e.version) if part) or "-"
        rows.append((e.model, e.health, e.base_url, backend, e.node or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in rows]


def endpoints_json(table: RoutingTable, models: Sequence[str]) -> dict[str, Any]:
    """The JSON document of `nomadgs endpoints --output json`: models with their instances."""
    out = []
    for model in models:
        instances = table.instances(model)
        out.append(
            {"model": model, "healthy": sum(1 for e in instances if e.passing),
             "instances": [e.to_json() for e in instances]}
        )  # fmt: skip
    return {"models": out}


def cmd_endpoints(args: argparse.Namespace) -> int:
    if args.model is not None:
        _check_model_name(args.model)
    table = _discover(args)
    models = [args.model] if args.model is not None else table.models
    if args.model is not None and not table.knows(args.model):
        raise _no_instance(args.model, table, args.provider)
    if args.output == "json":
        output.emit_json(endpoints_json(table, models))
    elif not models:
        output.note("no models found: no service tagged 'nomadgs' is registered")
    else:
        for line in endpoint_lines([e for m in models for e in table.instances(m)]):
            print(line)
    if args.model is not None and args.model not in table.routes:
        output.error(str(_no_instance(args.model, table, args.provider)))
        return EXIT_FAILURE
    return 0


# ----------------------------------------------------------------------------------------------------
# nomadgs chat


def _chat_target(args: argparse.Namespace) -> tuple[str, str | None]:
    """(base URL, API key): --url as given, or a healthy instance of the model picked at random."""
    import random

    if args.url:
        from ..serving.chat import API_KEY_ENV

        key = read_secret(args.api_key_file, "API key") if args.api_key_file else os.environ.get(API_KEY_ENV)
        return args.url, key or None
    table = _discover(args)
    healthy = table.routes.get(args.model)
    if not healthy:
        raise _no_instance(args.model, table, args.provider)
    return random.choice(healthy).base_url, None


def cmd_chat(args: argparse.Namespace) -> int:
    from ..serving.chat import ChatClient, ChatOptions, Conversation

    _check_model_name(args.model)
    if args.max_tokens is not None and args.max_tokens < 1:
        raise InputError(Problem("--max-tokens must be 1 or more"))
    if args.temperature is not None and not 0 <= args.temperature <= 2:
        raise InputError(Problem("--temperature must be between 0 and 2"))
    one_shot = args.prompt is not None or not sys.stdin.isatty()
    prompt = None
    if one_shot:
        prompt = args.prompt if args.prompt is not None else sys.stdin.read()
        if not prompt.strip():
            raise InputError(Problem("the prompt is empty", hint="pass it with -p TEXT or on stdin"))
    if args.url:
        from ..urls import normalise_base_url

        args.url = normalise_base_url(args.url)
    base_url, api_key = _chat_target(args)
    options = ChatOptions(args.model, args.max_tokens, args.temperature)
    conversation = Conversation(args.system)
    with ChatClient(base_url, api_key=api_key) as client:
        if prompt is not None:
            for piece in client.stream(options, conversation.ask(prompt)):
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
            return 0
        return _chat_loop(client, options, conversation)


def _chat_loop(client: ChatClient, options: ChatOptions, conversation: Conversation) -> int:
    """The terminal playground: one question per line, the answer streamed below it."""
    from ..serving.chat import ChatError

    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    output.info(f"chatting with {options.model} at {client.base_url}; /reset forgets, /exit or Ctrl-D leaves")
    while True:
        try:
            question = input("> ")
        except EOFError:
            print()
            return 0
        command = question.strip()
        if not command:
            continue
        if command in ("/exit", "/quit"):
            return 0
        if command == "/reset":
            conversation.reset()
            output.info("(conversation forgotten)")
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
            output.error(str(exc))
            continue
        except KeyboardInterrupt:
            # Ctrl-C stops this answer, not the chat; the part already written is kept.
            output.info("\n(interrupted)")
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


def _seconds(text: str, flag: str) -> float | None:
    """A duration flag in seconds; None for 0 (no limit)."""
    from ..durations import SECOND, parse_duration

    try:
        return parse_duration(text) / SECOND or None
    except ValueError as exc:
        raise InputError(Problem(str(exc), field=flag)) from None


def cmd_gateway(args: argparse.Namespace) -> int:
    import logging

    from ..serving.consul import ConsulWatcher
    from ..serving.gateway import Gateway, bind, is_loopback, load_api_keys, parse_listen, run, serve

    host, port = parse_listen(args.listen)
    upstream_timeout = _seconds(args.upstream_timeout, "--upstream-timeout")
    stream_idle_timeout = _seconds(args.stream_idle_timeout, "--stream-idle-timeout")
    keys = load_api_keys(args.api_key, args.api_keys_file, os.environ)
    settings = consul_settings(args)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))  # aligned with uvicorn's lines
    logger = logging.getLogger("nomadgs")
    logger.addHandler(handler)
    logger.setLevel(args.log_level.upper())
    if not keys and not is_loopback(host):
        output.warning(f"the gateway listens on {host} without API keys: anyone who reaches it can use the models")
    sock = bind(host, port)
    gateway = Gateway(
        ConsulWatcher(settings, on_change=_log_changes()),
        api_keys=keys,
        upstream_timeout=upstream_timeout,
        stream_idle_timeout=stream_idle_timeout,
    )
    from ..urls import openai_base_url

    output.info(
        f"gateway: {openai_base_url(host, port)} for the models in Consul at {settings.address}; "
        + (f"{len(gateway.keys)} API key(s) accepted" if keys else "no API key required")
    )
    try:
        run(serve(gateway, sock, log_level=args.log_level, access_log=args.access_log))
    except KeyboardInterrupt:
        output.info("gateway stopped")
    finally:
        sock.close()
    return 0
