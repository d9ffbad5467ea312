"""Setups that compile but will not work as meant: each check returns warnings, in words that name the cause.

Pure functions over the resolved command line and env; `resolve` adds what they return to `Resolved.warnings`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence

from .parameters import is_flag

HUB_TOKENS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MODELSCOPE_API_TOKEN")
_SECRET_NAME = re.compile(r"(?:^|_)(?:TOKEN|API_?KEY|SECRET(?:_KEY)?|PASSWORD|ACCESS_KEY)$", re.IGNORECASE)
_SWITCH = frozenset({"", "0", "1", "true", "false", "yes", "no", "on", "off"})
_PORT_REFERENCE = re.compile(r"NOMAD_(?:HOST_)?(?:PORT|ADDR)_http\b")
_SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh", "ksh", "mksh"})
_SHORT_OPTIONS_WITH_C = re.compile(r"-[A-Za-z]*c[A-Za-z]*")  # -c, -ec, -lc: the options sh -c takes
_POSITIONAL = re.compile(r"\$(?:[@*#]|\{?[0-9])")  # "$@", "$1", "${1}": a script that reads its arguments

# Flags that mean the same to the engines that take them, and what repeating one does behind nomadgs' back.
_SAME_FLAG = {
    "-tp": "--tensor-parallel-size",
    "--tp-size": "--tensor-parallel-size",
    "-a": "--alias",
    "-m": "--model",
}
_CONSEQUENCE = {
    "--served-model-name": "the engine serves the model under another name than '{model}', the name clients "
    "and `nomadgs gateway` ask for",
    "--alias": "the engine serves the model under another name than '{model}', the name clients and "
    "`nomadgs gateway` ask for",
    "--tensor-parallel-size": "the engine splits the model over another number of GPUs than the {gpus} Nomad "
    "reserves for it (set nomad.gpus instead)",
    "--port": "the engine listens on another port than the one Nomad allocated, where the health check looks",
    "--host": "the engine listens on another address than the one Nomad allocated, where the health check looks",
    "--model": "the engine loads another model than the one the deployment names",
}


def secrets_in(env: Mapping[str, str], *, download: bool) -> list[str]:
    """Env variables named like secrets: the job file holds them in clear text. Values are never quoted."""
    out: list[str] = []
    for name, value in env.items():
        if not _SECRET_NAME.search(name) or value.strip().lower() in _SWITCH:
            continue
        if name.upper() in HUB_TOKENS:
            also = ", and the download task does not get it" if download else ""
            out.append(
                f"env {name} is written into the job in clear text{also}: "
                "put the token in a Nomad Variable and set nomad.token_variable"
            )
        else:
            out.append(
                f"env {name} looks like a secret and is written into the job in clear text: keep it in a "
                "Nomad Variable and read it with a template (the backend's nomad.templates, env: true)"
            )
    return out


def _flag_name(token: str) -> str | None:
    if not is_flag(token):
        return None
    name = token.split("=", 1)[0]
    return _SAME_FLAG.get(name, name)


def repeated_flags(command: Sequence[str], parameters: Sequence[str], *, model: str, gpus: int) -> list[str]:
    """Flags of backend_parameters that the run command (or entrypoint) already sets, and what the repeat changes."""
    set_by_command = {name for name in map(_flag_name, command) if name}
    out: list[str] = []
    seen: set[str] = set()
    for token in parameters:
        name = _flag_name(token)
        if name is None or name not in set_by_command or name in seen:
            continue
        seen.add(name)
        written = token.split("=", 1)[0]
        consequence = _CONSEQUENCE.get(name, "most engines take the last value, so it replaces the backend's")
        out.append(
            f"backend_parameters sets {written}, which the run command already sets: "
            + consequence.format(model=model, gpus=gpus)
        )
    return out


def port_unused(texts: Iterable[str], *, health_check: bool) -> str | None:
    """A warning when nothing the task runs or reads refers to the allocated port ({{port}})."""
    if any(_PORT_REFERENCE.search(text) for text in texts):
        return None
    effect = (
        "so the health check targets a port nothing listens on and the model never becomes healthy"
        if health_check
        else "so the service points at a port nothing listens on"
    )
    return (
        f"the command never uses {{{{port}}}}: the engine does not listen on the port Nomad allocated, {effect} "
        "(pass it with the engine's port flag, e.g. --port {{port}})"
    )


def shell_drops_arguments(argv: Sequence[str], *, model_path: str | None) -> str | None:
    """A warning when the task runs `sh -c` with arguments after the command string: sh runs only that one
    argument as its script and makes the rest its $0, $1, ... (GPUStack's UI template pairs `entrypoint:
    /bin/sh -c` with a run command of many words, so sh runs the model path alone)."""
    if not argv or posixpath.basename(argv[0]) not in _SHELLS:
        return None
    i = 1
    while i < len(argv) and argv[i].startswith(("-", "+")) and not _SHORT_OPTIONS_WITH_C.fullmatch(argv[i]):
        i += 2 if argv[i] in ("-o", "+o") else 1  # -o pipefail takes the next word
    if i + 2 > len(argv) or not _SHORT_OPTIONS_WITH_C.fullmatch(argv[i]):
        return None  # no -c, or nothing after its script
    script, rest = argv[i + 1], argv[i + 2 :]
    if not rest or _POSITIONAL.search(script):
        return None  # a script that reads "$@" is given its arguments on purpose
    shell = " ".join(argv[: i + 1])
    what = " (the model's path)" if script == model_path else ""
    return (
        f"the task runs `{shell}` with {len(rest) + 1} arguments after it: the shell runs only the first, "
        f"'{script}'{what}, as its command, and hands the other {len(rest)} ('{rest[0]}', ...) to it as $0, $1, "
        "...; put the whole command in one argument (quote the run command as one word), or drop the shell "
        "(make the entrypoint the program itself)"
    )
