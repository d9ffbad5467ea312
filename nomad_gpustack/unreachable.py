"""Why a server could not be reached, in plain words: the one table of causes for Nomad and Consul alike.

requests and httpx word the same failure differently (`Connection refused` inside a urllib3 message; httpx's
`All connection attempts failed`, whose real cause is an exception further down the chain): the causes are
looked for in the failure and every exception it was raised from.
"""

from __future__ import annotations

# (marker in a failure's type name or text, the cause in plain words); the first marker found wins.
_CAUSES = (
    ("CERTIFICATE_VERIFY_FAILED", "TLS certificate verification failed"),
    ("ConnectionRefusedError", "connection refused"),
    ("Connection refused", "connection refused"),
    ("RemoteDisconnected", "the connection closed without an answer"),
    ("Connection aborted", "the connection closed without an answer"),
    ("Server disconnected without sending a response", "the connection closed without an answer"),
    ("Name or service not known", "unknown host name"),
    ("nodename nor servname provided", "unknown host name"),
    ("Temporary failure in name resolution", "the host name could not be resolved"),
    ("timed out", "timed out"),
    ("Timeout", "timed out"),
)

# Causes that waiting rarely cures: an address that fails with one of them at first is not retried.
_LASTING = ("CERTIFICATE_VERIFY_FAILED", "ConnectionRefusedError", "Connection refused", "Name or service not known",
            "nodename nor servname provided", "name resolution")  # fmt: skip


def _chain_text(exc: BaseException) -> str:
    """The type names and texts of a failure and of every exception it was raised from."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


def cause(exc: BaseException, *, tls_hint: str, otherwise: str) -> str:
    """The cause of a failed connection in plain words (`connection refused`), or `otherwise` when it is none
    of the known causes. `tls_hint` says how to fix a certificate that does not verify."""
    text = _chain_text(exc)
    words = next((words for marker, words in _CAUSES if marker in text), None)
    if words is None:
        return otherwise
    if words.startswith("TLS"):
        return f"{words} ({tls_hint})"
    return words


def lasting(exc: BaseException) -> bool:
    """Whether the cause is one that waiting rarely cures (refused, unknown host, a certificate)."""
    text = _chain_text(exc)
    return any(marker in text for marker in _LASTING)
