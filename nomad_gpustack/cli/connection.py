"""Connection flags shared by the commands that talk to Nomad or Consul; they override NOMAD_* / CONSUL_*.

`nomad_options` and `consul_options` add the flags to a command; the command takes them as `**connection`
and hands that to `nomad_settings` / `consul_settings`, which read the environment through settings.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import InputError, Problem
from . import output
from .base import SectionOption, apply

if TYPE_CHECKING:
    from ..settings import ConsulSettings, NomadSettings

F = TypeVar("F", bound=Callable[..., Any])

# The variables each kind of connection reads, as rows of the `environment:` block of a command's help
# (base.environment_help); the connection flags win over them.
NOMAD_ENV = (
    ("NOMAD_ADDR", "Nomad HTTP address (default http://127.0.0.1:4646)"),
    ("NOMAD_TOKEN", "ACL token, sent as X-Nomad-Token (never printed)"),
    ("NOMAD_NAMESPACE", 'namespace of the job (default: the job\'s own, else "default")'),
    ("NOMAD_REGION", "region to send requests to"),
    ("NOMAD_CACERT", "CA file to verify Nomad's certificate"),
    ("NOMAD_CAPATH", "CA folder to verify Nomad's certificate"),
    ("NOMAD_CLIENT_CERT", "client certificate for mutual TLS"),
    ("NOMAD_CLIENT_KEY", "client key for mutual TLS"),
    ("NOMAD_TLS_SERVER_NAME", "server name to verify instead of the address's host"),
    ("NOMAD_SKIP_VERIFY", "true/1: do not verify Nomad's certificate (unsafe)"),
    ("NOMAD_HTTP_AUTH", "user:password for HTTP basic auth in front of Nomad"),
)

CONSUL_ENV = (
    ("CONSUL_HTTP_ADDR", "Consul HTTP address (default 127.0.0.1:8500)"),
    ("CONSUL_HTTP_TOKEN", "ACL token (never printed)"),
    ("CONSUL_HTTP_SSL", "true: use https"),
    ("CONSUL_CACERT", "CA file to verify Consul's certificate"),
    ("CONSUL_CAPATH", "CA folder to verify Consul's certificate"),
    ("CONSUL_CLIENT_CERT", "client certificate for mutual TLS"),
    ("CONSUL_CLIENT_KEY", "client key for mutual TLS"),
    ("CONSUL_TLS_SERVER_NAME", "server name to verify instead of the address's host"),
    ("CONSUL_HTTP_SSL_VERIFY", "false: do not verify Consul's certificate (unsafe)"),
)

_nomad = partial(click.option, cls=SectionOption, section="Nomad connection (overrides NOMAD_* variables)")
_consul = partial(click.option, cls=SectionOption, section="Consul connection (overrides CONSUL_* variables)")

# Certificate files are checked when the flags are parsed: a typo is a usage error before anything connects.
_FILE = click.Path(exists=True, dir_okay=False)
_DIR = click.Path(exists=True, file_okay=False)

NOMAD_OPTIONS = (
    _nomad("--address", metavar="URL", help="Nomad HTTP address [NOMAD_ADDR]"),
    _nomad("--namespace", metavar="NS", help="Nomad namespace [NOMAD_NAMESPACE]"),
    _nomad("--region", metavar="REGION", help="Nomad region [NOMAD_REGION]"),
    _nomad("--token-file", metavar="FILE", help="read the ACL token from FILE [NOMAD_TOKEN]"),
    _nomad("--ca-cert", metavar="FILE", type=_FILE, help="CA certificate file [NOMAD_CACERT]"),
    _nomad("--ca-path", metavar="DIR", type=_DIR, help="CA certificate folder [NOMAD_CAPATH]"),
    _nomad("--client-cert", metavar="FILE", type=_FILE, help="client certificate [NOMAD_CLIENT_CERT]"),
    _nomad("--client-key", metavar="FILE", type=_FILE, help="client key [NOMAD_CLIENT_KEY]"),
    _nomad("--tls-server-name", metavar="NAME", help="server name to verify [NOMAD_TLS_SERVER_NAME]"),
    # No flag leaves NOMAD_SKIP_VERIFY in charge: the value stays None unless the flag is given.
    _nomad("--tls-skip-verify", is_flag=True, flag_value=True, default=None,
           help="skip TLS verification [NOMAD_SKIP_VERIFY]"),
)  # fmt: skip

CONSUL_OPTIONS = (_consul("--consul-address", metavar="ADDR", help="Consul HTTP address [CONSUL_HTTP_ADDR]"),)


def nomad_options(f: F) -> F:
    """The Nomad connection flags; the command receives them in `**connection`."""
    return apply(NOMAD_OPTIONS, f)


def consul_options(f: F) -> F:
    """The Consul connection flags; the command receives them in `**connection`."""
    return apply(CONSUL_OPTIONS, f)


def read_secret(path: str, what: str = "token") -> str:
    """A token or key from a file: secrets come from files or the environment, never from argv (`ps` shows it).
    Surrounding whitespace is dropped; whitespace inside (or a character no header carries) is bad input."""
    from ..settings import clean_secret

    try:
        with open(path, encoding="utf-8") as f:
            value = clean_secret(f.read(), f"the {what} file {path}")
    except OSError as exc:
        raise InputError(Problem(f"cannot read the {what} file: {exc.strerror}", path)) from None
    except UnicodeDecodeError:
        raise InputError(Problem(f"the {what} file is not text", path)) from None
    if not value:
        raise InputError(Problem(f"the {what} file is empty", path))
    return value


def nomad_settings(connection: Mapping[str, Any]) -> NomadSettings:
    """NOMAD_* variables with this command's flags on top."""
    from ..settings import NomadSettings

    token_file = connection.get("token_file")
    settings = NomadSettings.from_env(
        address=connection.get("address"),
        namespace=connection.get("namespace"),
        region=connection.get("region"),
        token=read_secret(token_file) if token_file else None,
        ca_cert=connection.get("ca_cert"),
        ca_path=connection.get("ca_path"),
        client_cert=connection.get("client_cert"),
        client_key=connection.get("client_key"),
        server_name=connection.get("tls_server_name"),
        skip_verify=connection.get("tls_skip_verify"),
    )
    _warn_once(settings.insecure_notice())
    return settings


def consul_settings(connection: Mapping[str, Any]) -> ConsulSettings:
    """CONSUL_* variables with this command's flags on top."""
    from ..settings import ConsulSettings

    settings = ConsulSettings.from_env(address=connection.get("consul_address"))
    _warn_once(settings.insecure_notice())
    return settings


_warned: set[str] = set()


def _warn_once(notice: str | None) -> None:
    """Unverified TLS is said once per run, however many clients the command builds."""
    if notice and notice not in _warned:
        _warned.add(notice)
        output.warning(notice)
