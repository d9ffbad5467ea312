"""The one place that reads connection settings: NOMAD_* and CONSUL_* variables and their flags.

Nomad variables are read as the `nomad` CLI reads them (`api/api.go` DefaultConfig); Consul variables as
the `consul` CLI does. TLS verification is on unless skip-verify is asked for. Tokens are kept out of
`repr()` and never printed.
"""

from __future__ import annotations

import os
import re
import ssl
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import InputError, Problem

if TYPE_CHECKING:
    import httpx
    import requests

# The HTTP libraries are imported inside the functions that build their clients: a command uses one or the
# other (`status`, `stop`: python-nomad with requests; `logs`, `endpoints`: httpx), and each costs the other
# 30-80 ms of start-up (measured; ARCHITECTURE.md, "Imports inside functions").

DEFAULT_NOMAD_ADDR = "http://127.0.0.1:4646"
DEFAULT_CONSUL_ADDR = "127.0.0.1:8500"

TRUE = frozenset({"1", "t", "true", "y", "yes", "on"})
FALSE = frozenset({"0", "f", "false", "n", "no", "off"})


def parse_bool(value: str | None) -> bool | None:
    """Go's strconv.ParseBool, which the nomad CLI uses for NOMAD_SKIP_VERIFY; None when unset or invalid."""
    if value is None or value == "":
        return None
    lowered = value.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    return None


def env_bool(env: Mapping[str, str], name: str) -> bool | None:
    """A boolean variable (true/false, 1/0, yes/no, on/off); None when unset; InputError for anything else.

    The nomad CLI ignores a NOMAD_SKIP_VERIFY it cannot parse, so `maybe` silently means "verify": a setting
    about security must not be guessed, so it is refused.
    """
    value = env.get(name)
    parsed = parse_bool(value)
    if parsed is None and value:
        raise InputError(
            Problem(f"{name}='{value}' is not a boolean", hint="use true or false, 1 or 0, yes or no, on or off")
        )
    return parsed


def _normalise_address(address: str, default_scheme: str, what: str, source: str, example: str) -> str:
    """An http(s) URL, or `host:port` (taken with `default_scheme`), as a URL without a trailing slash;
    InputError naming `source` and showing the expected form (`example`) otherwise.

    Nomad's CLI parses NOMAD_ADDR with Go's `url.Parse` (`NewClient` in api/api.go) and sends requests to
    its scheme and host: a value without `http://` fails there, as `unsupported protocol scheme`. Consul's
    (`NewClient` in its api/api.go) takes a value without `://` as `host:port`, its documented form. Both
    forms are taken here; a value with neither a scheme nor a port (`garbage`, `localhost`) is refused, not
    guessed at: a request to port 80 of a host named so would only fail later, and less clearly.
    """
    hint = f"set {source} to http(s)://host:port or host:port, as {example}"
    given = address
    if "://" not in address:
        address = f"{default_scheme}://{address}"
    try:
        parts = urlsplit(address)
        port = parts.port  # parsed lazily: an out-of-range or non-numeric port raises here
    except ValueError as exc:
        raise InputError(Problem(f"{what} '{address}' is not a URL ({exc})", hint=hint)) from None
    if parts.scheme not in ("http", "https"):
        raise InputError(
            Problem(
                f"{what} '{address}' must be an http:// or https:// address",
                hint=f"set {source} to one; unix sockets are not supported",
            )
        )
    if not parts.hostname:
        raise InputError(Problem(f"{what} '{address}' has no host name", hint=hint))
    if "://" not in given and port is None:
        raise InputError(Problem(f"{what} '{given}' is neither a URL nor host:port", hint=hint))
    return address.rstrip("/")


def task_address(address: str, what: str, source: str, example: str) -> str:
    """An address another machine will use (written into a job for its task), checked and normalised as
    NOMAD_ADDR and CONSUL_HTTP_ADDR are: an http(s) URL or host:port; InputError naming `source` otherwise."""
    return _normalise_address(address, "http", what, source, example)


# What an HTTP header value may hold here: visible ASCII, no whitespace (tokens are UUIDs or keys).
_HEADER_SAFE = re.compile(r"[!-~]+")


def clean_secret(value: str | None, source: str) -> str | None:
    """A token or key as it is sent in a header: surrounding whitespace stripped (`export NOMAD_TOKEN=$(cat
    file)` can keep a newline), None when empty. InputError naming `source` (a variable, flag, option or
    file), never the value, when what remains holds whitespace or a character a header cannot carry."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if not _HEADER_SAFE.fullmatch(value):
        raise InputError(
            Problem(
                f"{source} holds whitespace or a character that cannot be sent in an HTTP header",
                hint="set it to the token alone; its value is not shown",
            )
        )
    return value


def _http_auth(value: str | None) -> str | None:
    """NOMAD_HTTP_AUTH (`user:password`, sent as basic auth, encoded) with surrounding whitespace stripped."""
    return (value or "").strip() or None


@dataclass(frozen=True)
class TLS:
    """TLS settings shared by the Nomad and Consul clients."""

    ca_cert: str | None = None
    ca_path: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    server_name: str | None = None
    skip_verify: bool = False

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying context (system CAs unless a CA file or folder is given)."""
        for path, what in ((self.ca_cert, "CA certificate"), (self.client_cert, "client certificate"),
                           (self.client_key, "client key"), (self.ca_path, "CA folder")):  # fmt: skip
            if path and not os.path.exists(path):
                raise InputError(Problem(f"{what} {path} does not exist"))
        if (self.client_cert and not self.client_key) or (self.client_key and not self.client_cert):
            raise InputError(Problem("a client certificate needs its key, and a key its certificate"))
        context = ssl.create_default_context(cafile=self.ca_cert, capath=self.ca_path)
        if self.skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert and self.client_key:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str, *, skip_verify: bool) -> TLS:
        """`<PREFIX>_CACERT`, `_CAPATH`, `_CLIENT_CERT`, `_CLIENT_KEY`, `_TLS_SERVER_NAME`, as both CLIs name them."""
        return cls(
            ca_cert=env.get(f"{prefix}_CACERT") or None,
            ca_path=env.get(f"{prefix}_CAPATH") or None,
            client_cert=env.get(f"{prefix}_CLIENT_CERT") or None,
            client_key=env.get(f"{prefix}_CLIENT_KEY") or None,
            server_name=env.get(f"{prefix}_TLS_SERVER_NAME") or None,
            skip_verify=skip_verify,
        )

    def httpx_client(
        self, base_url: str, headers: dict[str, str], *, timeout: float, asynchronous: bool, auth: Any = None
    ) -> Any:
        """An httpx client that verifies as these settings say (and sends SNI for the server name)."""
        import httpx  # an HTTP library: see the note at the top

        # A plain-HTTP address speaks no TLS: httpx's default (`True`) would load the system's CA bundle for each
        # client all the same (about 50 ms, the largest fixed cost of `nomadgs status`). A context that trusts no
        # CA costs nothing and fails closed should anything ever ask it for TLS.
        verify: Any = self.ssl_context() if base_url.startswith("https://") else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        kwargs: dict[str, Any] = {
            "base_url": base_url,
            "headers": headers,
            "timeout": httpx.Timeout(timeout, connect=10.0),
            "auth": auth,
            "trust_env": False,  # our settings decide; ambient proxy variables must not redirect a token
        }
        if asynchronous:
            return httpx.AsyncClient(transport=_async_transport(verify, self.server_name), **kwargs)
        return httpx.Client(transport=_sync_transport(verify, self.server_name), **kwargs)

    def requests_verify(self) -> bool | str:
        if self.skip_verify:
            return False
        return self.ca_cert or self.ca_path or True

    def requests_cert(self) -> tuple[str, str] | None:
        return (self.client_cert, self.client_key) if self.client_cert and self.client_key else None


@dataclass(frozen=True)
class NomadSettings:
    """How to reach Nomad."""

    address: str = DEFAULT_NOMAD_ADDR
    token: str | None = field(default=None, repr=False)
    namespace: str | None = None
    region: str | None = None
    tls: TLS = field(default_factory=TLS)
    http_auth: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> NomadSettings:
        """Settings from NOMAD_* variables; `overrides` (command-line flags) win when not None."""
        env = os.environ if env is None else env
        tls = TLS.from_env(env, "NOMAD", skip_verify=bool(env_bool(env, "NOMAD_SKIP_VERIFY")))
        tls_overrides = {k: overrides.pop(k) for k in list(overrides) if k in TLS.__dataclass_fields__}
        tls = replace(tls, **{k: v for k, v in tls_overrides.items() if v is not None})
        token_source = overrides.pop("token_source", None) or "the token"
        settings = cls(
            address=env.get("NOMAD_ADDR") or DEFAULT_NOMAD_ADDR,
            token=clean_secret(env.get("NOMAD_TOKEN"), "NOMAD_TOKEN"),
            namespace=env.get("NOMAD_NAMESPACE") or None,
            region=env.get("NOMAD_REGION") or None,
            tls=tls,
            http_auth=_http_auth(env.get("NOMAD_HTTP_AUTH")),
        )
        if overrides.get("token") is not None:
            overrides["token"] = clean_secret(overrides["token"], token_source)
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
        address = _normalise_address(
            settings.address, "http", "Nomad address", "NOMAD_ADDR or --address", DEFAULT_NOMAD_ADDR
        )
        return replace(settings, address=address)

    @property
    def secure(self) -> bool:
        return self.address.startswith("https://")

    def insecure_notice(self) -> str | None:
        """The one warning to show when certificates go unchecked; None when they are checked."""
        return _insecure_notice("Nomad", self.address, self.tls, "NOMAD_SKIP_VERIFY or --tls-skip-verify")

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": "nomadgs"}
        if self.token:
            headers["X-Nomad-Token"] = self.token
        return headers

    def params(self) -> dict[str, str]:
        """Query parameters every request carries (namespace, region)."""
        out: dict[str, str] = {}
        if self.namespace:
            out["namespace"] = self.namespace
        if self.region:
            out["region"] = self.region
        return out

    def _auth(self) -> tuple[str, str] | None:
        if not self.http_auth:
            return None
        user, _, password = self.http_auth.partition(":")
        return (user, password)

    def httpx_client(self, *, timeout: float = 30.0, asynchronous: bool = False) -> Any:
        """An httpx client for the calls python-nomad cannot make (blocking queries, streams, logs)."""
        return self.tls.httpx_client(
            self.address, self.headers(), timeout=timeout, asynchronous=asynchronous, auth=self._auth()
        )

    def requests_session(self) -> requests.Session:
        import requests  # an HTTP library: see the note at the top
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        session.trust_env = False
        session.verify = self.tls.requests_verify()
        if self.tls.skip_verify:
            # urllib3 warns on every request; the caller says it once (`insecure_notice`).
            from urllib3.exceptions import InsecureRequestWarning  # an HTTP library: see the note at the top

            warnings.filterwarnings("ignore", category=InsecureRequestWarning)
        cert = self.tls.requests_cert()
        if cert:
            session.cert = cert
        if self.http_auth:
            session.auth = self._auth()
        if self.tls.server_name:
            name = self.tls.server_name

            class _ServerName(HTTPAdapter):
                def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
                    kwargs["server_hostname"] = name
                    kwargs["assert_hostname"] = name
                    super().init_poolmanager(*args, **kwargs)

            session.mount("https://", _ServerName())
        return session

    def python_nomad(self, *, timeout: float = 30.0, on_response: Any = None) -> Any:
        """A python-nomad client for one-shot calls (validate, plan, register, stop, read); `on_response` is a
        requests hook that sees every answer."""
        import nomad  # an HTTP library: see the note at the top

        session = self.requests_session()
        if on_response is not None:
            session.hooks["response"].append(on_response)
        parts = urlsplit(self.address)
        return nomad.Nomad(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (443 if self.secure else 80),
            secure=self.secure,
            address=self.address,
            token=self.token,
            namespace=self.namespace,
            region=self.region,
            timeout=int(timeout),
            verify=self.tls.requests_verify(),
            cert=self.tls.requests_cert() or (),
            session=session,
        )


def _insecure_notice(what: str, address: str, tls: TLS, cause: str) -> str | None:
    if not tls.skip_verify or not address.startswith("https://"):
        return None
    return f"TLS certificates of {what} at {address} are not verified ({cause}): the connection can be intercepted"


def _sync_transport(verify: Any, server_name: str | None) -> Any:
    import httpx  # an HTTP library: see the note at the top

    class Transport(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if server_name:
                request.extensions["sni_hostname"] = server_name
            return super().handle_request(request)

    return Transport(verify=verify, retries=0)


def _async_transport(verify: Any, server_name: str | None) -> Any:
    import httpx  # an HTTP library: see the note at the top

    class Transport(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if server_name:
                request.extensions["sni_hostname"] = server_name
            return await super().handle_async_request(request)

    return Transport(verify=verify, retries=0)


@dataclass(frozen=True)
class ConsulSettings:
    """How to reach Consul, from CONSUL_HTTP_ADDR and friends."""

    address: str = f"http://{DEFAULT_CONSUL_ADDR}"
    token: str | None = field(default=None, repr=False)
    datacenter: str | None = None
    tls: TLS = field(default_factory=TLS)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ConsulSettings:
        env = os.environ if env is None else env
        ssl_on = env_bool(env, "CONSUL_HTTP_SSL")
        verify = env_bool(env, "CONSUL_HTTP_SSL_VERIFY")
        address = overrides.pop("address", None) or env.get("CONSUL_HTTP_ADDR") or DEFAULT_CONSUL_ADDR
        address = _normalise_address(
            address,
            "https" if ssl_on else "http",
            "Consul address",
            "CONSUL_HTTP_ADDR or --consul-address",
            DEFAULT_CONSUL_ADDR,
        )
        tls = TLS.from_env(env, "CONSUL", skip_verify=verify is False)
        token = clean_secret(env.get("CONSUL_HTTP_TOKEN"), "CONSUL_HTTP_TOKEN")
        settings = cls(address=address, token=token, tls=tls)
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})

    def headers(self) -> dict[str, str]:
        return {"X-Consul-Token": self.token} if self.token else {}

    def insecure_notice(self) -> str | None:
        """The one warning to show when certificates go unchecked; None when they are checked."""
        return _insecure_notice("Consul", self.address, self.tls, "CONSUL_HTTP_SSL_VERIFY=false")

    def httpx_client(self, *, timeout: float = 30.0, asynchronous: bool = False) -> Any:
        """An httpx client for Consul's HTTP API (blocking queries from async code)."""
        return self.tls.httpx_client(self.address, self.headers(), timeout=timeout, asynchronous=asynchronous)
