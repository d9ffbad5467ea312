"""API keys: where the accepted keys come from, and the check of a request's `Authorization` header."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence

from ...errors import InputError, Problem
from .errors import ApiError

API_KEYS_ENV = "NOMADGS_GATEWAY_API_KEYS"

_KEY = re.compile(r"[\x21-\x7e]+")  # visible ASCII: a key must fit in an Authorization header as it is


def load_api_keys(flags: Sequence[str], keys_file: str | None, env: Mapping[str, str]) -> list[str]:
    """The accepted API keys: `--api-key` flags, one key per line of `--api-keys-file` (blank lines and `#`
    comments ignored), and the comma- or space-separated NOMADGS_GATEWAY_API_KEYS. Messages never show a key.
    """
    keys: list[str] = []
    for number, key in enumerate(flags, 1):
        if not _KEY.fullmatch(key):
            raise InputError(Problem(f"--api-key number {number} is empty or has spaces or control characters"))
        keys.append(key)
    if keys_file:
        try:
            with open(keys_file, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise InputError(Problem(f"cannot read the API keys file: {exc.strerror}", keys_file)) from None
        except UnicodeDecodeError:
            raise InputError(Problem("the API keys file is not UTF-8 text", keys_file)) from None
        found = 0
        for line_number, line in enumerate(lines, 1):
            key = line.strip()
            if not key or key.startswith("#"):
                continue
            if not _KEY.fullmatch(key):
                raise InputError(Problem("the key has spaces or control characters", keys_file, line_number))
            keys.append(key)
            found += 1
        if not found:
            raise InputError(Problem("the API keys file holds no key", keys_file))
    keys += [k for k in re.split(r"[,\s]+", env.get(API_KEYS_ENV, "")) if k]
    return keys


class ApiKeys:
    """Accepted keys, kept as SHA-256 digests and compared in constant time."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._digests = tuple({hashlib.sha256(k.encode()).digest() for k in keys})

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"ApiKeys({len(self._digests)} keys)"  # never the keys

    def check(self, authorization: bytes | None) -> None:
        """Raise ApiError 401 unless `authorization` is `Bearer <an accepted key>`."""
        scheme, _, token = (authorization or b"").strip().partition(b" ")
        if not token or scheme.lower() != b"bearer":
            raise ApiError(
                401,
                "You didn't provide an API key. Send it in an Authorization header: 'Bearer YOUR_KEY'.",
                "invalid_request_error",
                "invalid_api_key",
            )
        digest = hashlib.sha256(token.strip()).digest()
        # Compare with every key, not stopping at a match, so timing tells nothing about which one matched.
        matched = False
        for accepted in self._digests:
            matched |= hmac.compare_digest(digest, accepted)
        if not matched:
            raise ApiError(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
