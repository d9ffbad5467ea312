"""Setups that compile but will not work as meant: each check returns warnings, in words that name the cause.

Pure functions over the resolved command line and env; `resolve` adds what they return to `Resolved.warnings`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from .parameters import is_flag

HUB_TOKENS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MODELSCOPE_API_TOKEN")
_SECRET_NAME = re.compile(r"(?:^|_)(?:TOKEN|API_?KEY|SECRET(?:_KEY)?|PASSWORD|ACCESS_KEY)$", re.IGNORECASE)
_SWITCH = frozenset({"", "0", "1", "true", "false", "yes", "no", "on", "off"})
_PORT_REFERENCE = re.compile(r"NOMAD_(?:HOST_)?(?:PORT|ADDR)_http\b")

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
