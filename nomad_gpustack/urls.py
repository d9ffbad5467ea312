"""The one base-URL builder: `http://host:port` and OpenAI base URLs, with IPv6 addresses in brackets."""

from __future__ import annotations


def url_host(host: str) -> str:
    """A host as it stands in a URL: an IPv6 address goes in brackets (RFC 3986)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def host_port(host: str, port: int) -> str:
    """`host:port`, an IPv6 address in brackets (Go's net.JoinHostPort, as Prometheus writes addresses)."""
    return f"{url_host(host)}:{port}"


def origin(host: str, port: int, scheme: str = "http") -> str:
    """`http://host:port`."""
    return f"{scheme}://{url_host(host)}:{port}"


def openai_base_url(host: str, port: int, scheme: str = "http") -> str:
    """The OpenAI base URL of a model server: `http://host:port/v1`."""
    return f"{origin(host, port, scheme)}/v1"


def normalise_base_url(url: str) -> str:
    """`host:port`, `http://host:port` or `http://host:port/v1` to the OpenAI base URL (`.../v1`)."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    if not url.endswith("/v1"):
        url += "/v1"
    return url
