"""Model metadata from the Hugging Face Hub, headers only, kept in a cache so a second run makes no request.

What is fetched: `config.json`; `model.safetensors.index.json` (its `total_size`), else the header of
`model.safetensors` (two range requests: the length, then the JSON); for a GGUF file, its header in ranges
that grow from `GGUF_CHUNK` bytes, so at most the last one reaches past the header. Requests go through
`huggingface_hub` (its HTTP session, URLs and headers), so `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE`
work as everywhere else; it is imported only when a request is needed. The cache holds what the readers
extracted (JSON under `<cache>/models/<host>/<repo>/`), never weights.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import EstimateError, UnreachableError
from .facts import ModelFacts, ModelFactsError, from_config, from_gguf
from .gguf import GGUFError, GGUFHeader, TensorInfo, read_header
from .safetensors import INDEX_FILE, SINGLE_FILE, SafetensorsError, header_length, index_total_size, parse_header

GGUF_CHUNK = 256 * 1024  # the first range request of a GGUF header; each next one doubles (a vocabulary
GGUF_CHUNK_MAX = 8 << 20  # of 150k tokens makes a header of a few MiB), up to this
DEFAULT_ENDPOINT = "https://huggingface.co"
REVISION = "main"
TIMEOUT = 10.0  # seconds, as huggingface_hub's own default
CACHE_VERSION = 1


class HubUnavailable(EstimateError):
    """The metadata could not be had from the Hub; the message says why, in words for the user."""


class HubUnreachable(UnreachableError, HubUnavailable):
    """No answer from the Hub (connection refused, DNS, timeout)."""


class NotFound(HubUnavailable):
    """The Hub answered 404 for a file."""


def endpoint() -> str:
    """The Hub's base URL: HF_ENDPOINT, else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cache_file(cache_dir: Path, repo: str, filename: str | None) -> Path:
    """Where the extracted metadata of a repo (or one file of it) is kept."""
    host = re.sub(r"[^A-Za-z0-9._-]+", "_", endpoint().split("://", 1)[-1])
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", filename or "repo")
    return cache_dir / "models" / host / repo / REVISION / f"{name}.json"


# --- the cache's documents ------------------------------------------------------------------------------


def _gguf_document(header: GGUFHeader) -> dict[str, Any]:
    return {
        "kind": "gguf",
        "version": header.version,
        "metadata": header.metadata,
        "array_lengths": header.array_lengths,
        "tensors": [[t.name, list(t.dims), t.type_id, t.offset] for t in header.tensors],
        "data_offset": header.data_offset,
    }


def facts_from_document(doc: dict[str, Any], source: str) -> ModelFacts:
    """Facts from a cached document. Raises ValueError (KeyError, TypeError) when it is not one of ours."""
    if doc.get("cache_version") != CACHE_VERSION:
        raise ValueError("an old cache entry")
    if doc["kind"] == "gguf":
        header = GGUFHeader(
            version=int(doc["version"]),
            metadata=dict(doc["metadata"]),
            array_lengths={k: int(v) for k, v in doc["array_lengths"].items()},
            tensors=tuple(
                TensorInfo(str(n), tuple(int(d) for d in dims), int(t), int(o)) for n, dims, t, o in doc["tensors"]
            ),
            data_offset=int(doc["data_offset"]),
        )
        return from_gguf(header, source)
    return from_config(doc["config"], int(doc["weight_bytes"]), source)


# --- requests -----------------------------------------------------------------------------------------


class _Hub:
    """The few requests we make, through huggingface_hub's session (imported here, on first use)."""

    def __init__(self, repo: str, timeout: float) -> None:
        # ~200 ms of start-up (measured): only when a request goes out, never for a read of the cache.
        from huggingface_hub import get_session, hf_hub_url
        from huggingface_hub.utils._headers import build_hf_headers

        self.repo = repo
        self.timeout = timeout
        self.session = get_session()
        self.url: Callable[[str], str] = lambda name: hf_hub_url(repo, name, revision=REVISION, endpoint=endpoint())
        self.headers = build_hf_headers()  # HF_TOKEN, when set
        self.requests = 0

    def get(self, name: str, first: int | None = None, last: int | None = None) -> bytes:
        # huggingface_hub's session is httpx's Client (1.x) or httpx2's (2.x): catch that library's errors.
        transport = sys.modules[type(self.session).__module__.split(".")[0]]
        headers = dict(self.headers)
        if first is not None:
            headers["Range"] = f"bytes={first}-{last if last is not None else ''}"
        self.requests += 1
        try:
            response = self.session.get(self.url(name), headers=headers, timeout=self.timeout, follow_redirects=True)
        except transport.HTTPError as exc:
            raise HubUnreachable(f"the Hugging Face Hub at {endpoint()} is unreachable: {exc}") from None
        if response.status_code == 404:
            raise NotFound(f"{self.repo} has no {name} on {endpoint()}")
        if response.status_code in (401, 403):
            hint = "set HF_TOKEN to a token with access" if "HF_TOKEN" not in os.environ else "HF_TOKEN has no access"
            raise HubUnavailable(f"{endpoint()} refused {self.repo}/{name} ({response.status_code}): {hint}")
        if response.status_code >= 400:
            raise HubUnavailable(f"{endpoint()} answered {response.status_code} for {self.repo}/{name}")
        return bytes(response.content)


class _RangeSource:
    """A `ByteSource` over ranges of a file on the Hub: `GGUF_CHUNK` bytes first, twice as many each time after."""

    def __init__(self, fetch: Callable[[int, int], bytes]) -> None:
        self.fetch = fetch
        self.buffer = b""
        self.start = 0  # file offset of buffer[0]
        self.position = 0
        self.chunk = GGUF_CHUNK

    def read(self, n: int) -> bytes:
        end = self.position + n
        if self.position < self.start or end > self.start + len(self.buffer):
            begin = self.position
            if self.start <= begin <= self.start + len(self.buffer):  # keep what is already here
                kept = self.buffer[begin - self.start :]
                more = self.fetch(self.start + len(self.buffer), max(end, begin + self.chunk) - 1)
                self.buffer, self.start = kept + more, begin
            else:
                more = self.fetch(begin, max(end, begin + self.chunk) - 1)
                self.buffer, self.start = more, begin
            self.chunk = min(2 * self.chunk, GGUF_CHUNK_MAX)
        data = self.buffer[self.position - self.start : end - self.start]
        self.position += len(data)
        return data

    def skip(self, n: int) -> None:
        self.position += n


def _fetch(repo: str, filename: str | None, timeout: float) -> tuple[dict[str, Any], int]:
    """The document to cache for a repo (or one of its GGUF files), and the number of requests it took."""
    hub = _Hub(repo, timeout)
    try:
        if filename and filename.lower().endswith(".gguf"):
            source = _RangeSource(lambda first, last: hub.get(filename, first, last))
            return _gguf_document(read_header(source)), hub.requests
        config = json.loads(hub.get("config.json"))
        try:
            weights, _ = index_total_size(hub.get(INDEX_FILE))
        except NotFound:
            n = header_length(hub.get(SINGLE_FILE, 0, 7))
            weights = parse_header(hub.get(SINGLE_FILE, 8, 8 + n - 1)).data_bytes
        return {"kind": "safetensors", "config": config, "weight_bytes": weights}, hub.requests
    except (GGUFError, SafetensorsError, ValueError) as exc:
        raise HubUnavailable(f"{repo}: {exc}") from None


def hub_model(
    repo: str, filename: str | None, *, cache_dir: Path | None, network: bool = True, timeout: float = TIMEOUT
) -> ModelFacts:
    """The facts of a model on the Hub: from the cache, else fetched (headers only) and cached.

    Raises HubUnavailable with the reason when neither the cache nor the Hub has them.
    """
    source = f"{repo}/{filename}" if filename else repo
    where = f"{source} on {endpoint()}"
    path = cache_file(cache_dir, repo, filename) if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            return facts_from_document(json.loads(path.read_text()), f"{where} (cached)")
        except (OSError, ValueError, KeyError, TypeError, EstimateError):
            pass  # an unreadable or old entry is fetched again
    if offline():
        raise HubUnavailable(f"HF_HUB_OFFLINE is set and {source} is not in the cache")
    if not network:
        raise HubUnavailable(f"{source} is not in the cache (the Hub is not asked here)")
    doc, _ = _fetch(repo, filename, timeout)
    doc["cache_version"] = CACHE_VERSION
    try:
        facts = facts_from_document(doc, where)
    except (ModelFactsError, ValueError) as exc:  # the headers lack what the estimate needs, or hold a wrong value
        raise HubUnavailable(f"{source}: {exc}") from None
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc))
            tmp.replace(path)
        except OSError:
            pass  # a cache that cannot be written only costs a request next time
    return facts
