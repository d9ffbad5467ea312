"""Connection flags shared by the commands that talk to Nomad or Consul; they override NOMAD_* / CONSUL_*."""

from __future__ import annotations

import argparse

from ..settings import ConsulSettings, NomadSettings

NOMAD_ENV_HELP = """\
environment (flags win over these):
  NOMAD_ADDR             Nomad HTTP address (default http://127.0.0.1:4646)
  NOMAD_TOKEN            ACL token, sent as X-Nomad-Token (never printed)
  NOMAD_NAMESPACE        namespace of the job (default: the job's own, else "default")
  NOMAD_REGION           region to send requests to
  NOMAD_CACERT / NOMAD_CAPATH             CA file / folder to verify Nomad's certificate
  NOMAD_CLIENT_CERT / NOMAD_CLIENT_KEY    client certificate and key for mutual TLS
  NOMAD_TLS_SERVER_NAME  server name to verify instead of the address's host
  NOMAD_SKIP_VERIFY      true/1: do not verify Nomad's certificate (unsafe)
  NOMAD_HTTP_AUTH        user:password for HTTP basic auth in front of Nomad
"""

CONSUL_ENV_HELP = """\
  CONSUL_HTTP_ADDR       Consul HTTP address (default 127.0.0.1:8500)
  CONSUL_HTTP_TOKEN      ACL token (never printed)
  CONSUL_HTTP_SSL        true: use https
  CONSUL_CACERT / CONSUL_CAPATH / CONSUL_CLIENT_CERT / CONSUL_CLIENT_KEY / CONSUL_TLS_SERVER_NAME
  CONSUL_HTTP_SSL_VERIFY false: do not verify Consul's certificate (unsafe)
"""


def add_nomad_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Nomad connection (overrides NOMAD_* variables)")
    group.add_argument("--address", metavar="URL", help="Nomad HTTP address [NOMAD_ADDR]")
    group.add_argument("--namespace", metavar="NS", help="Nomad namespace [NOMAD_NAMESPACE]")
    group.add_argument("--region", metavar="REGION", help="Nomad region [NOMAD_REGION]")
    group.add_argument("--token-file", metavar="FILE", help="read the ACL token from FILE [NOMAD_TOKEN]")
    group.add_argument("--ca-cert", metavar="FILE", help="CA certificate file [NOMAD_CACERT]")
    group.add_argument("--ca-path", metavar="DIR", help="CA certificate folder [NOMAD_CAPATH]")
    group.add_argument("--client-cert", metavar="FILE", help="client certificate [NOMAD_CLIENT_CERT]")
    group.add_argument("--client-key", metavar="FILE", help="client key [NOMAD_CLIENT_KEY]")
    group.add_argument("--tls-server-name", metavar="NAME", help="server name to verify [NOMAD_TLS_SERVER_NAME]")
    group.add_argument(
        "--tls-skip-verify", action="store_true", default=None, help="skip TLS verification [NOMAD_SKIP_VERIFY]"
    )


def read_secret(path: str, what: str = "token") -> str:
    """A token or key from a file: secrets come from files or the environment, never from argv (`ps` shows it)."""
    from ..errors import InputError, Problem

    try:
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
    except OSError as exc:
        raise InputError(Problem(f"cannot read the {what} file: {exc.strerror}", path)) from None
    if not value:
        raise InputError(Problem(f"the {what} file is empty", path))
    return value


def nomad_settings(args: argparse.Namespace) -> NomadSettings:
    """NOMAD_* variables with this command's flags on top."""
    return NomadSettings.from_env(
        address=getattr(args, "address", None),
        namespace=getattr(args, "namespace", None),
        region=getattr(args, "region", None),
        token=read_secret(args.token_file) if getattr(args, "token_file", None) else None,
        ca_cert=getattr(args, "ca_cert", None),
        ca_path=getattr(args, "ca_path", None),
        client_cert=getattr(args, "client_cert", None),
        client_key=getattr(args, "client_key", None),
        server_name=getattr(args, "tls_server_name", None),
        skip_verify=getattr(args, "tls_skip_verify", None),
    )


def add_consul_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Consul connection (overrides CONSUL_* variables)")
    group.add_argument("--consul-address", metavar="ADDR", help="Consul HTTP address [CONSUL_HTTP_ADDR]")


def consul_settings(args: argparse.Namespace) -> ConsulSettings:
    return ConsulSettings.from_env(address=getattr(args, "consul_address", None))
