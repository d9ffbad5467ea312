"""The Hugging Face Hub stand-in (tests/support/hf_hub.py) against the real `huggingface_hub` client and plain
HTTP range reads (what a safetensors header read does)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.hf_hub import LFS_THRESHOLD, HubStandIn, go_online

REPO = "test-org/tiny-GGUF"
TOKEN = "hf_standin_token_0123456789"


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "weights.gguf"
    path.write_bytes(os.urandom(LFS_THRESHOLD + 12345))
    return path


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, big_file: Path) -> Iterator[HubStandIn]:
    go_online(monkeypatch)
    files = {"weights.gguf": big_file, "config.json": b'{"architectures": ["LlamaForCausalLM"]}', "sub/a.txt": b"a"}
    with HubStandIn({REPO: files}, token=TOKEN) as stand_in:
        yield stand_in


def test_huggingface_hub_downloads_from_the_stand_in(hub: HubStandIn, big_file: Path, tmp_path: Path) -> None:
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    local = tmp_path / "local"
    cache = tmp_path / "cache"
    path = hf_hub_download(REPO, "weights.gguf", local_dir=local, endpoint=hub.endpoint, token=TOKEN, cache_dir=cache)
    assert Path(path).read_bytes() == big_file.read_bytes()
    assert len(hub.downloads("weights.gguf")) == 1

    snapshot = snapshot_download(REPO, local_dir=tmp_path / "snap", endpoint=hub.endpoint, token=TOKEN, cache_dir=cache)
    assert (Path(snapshot) / "sub" / "a.txt").read_bytes() == b"a"
    assert (Path(snapshot) / "config.json").exists()

    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    info = api.model_info(REPO)
    assert info.sha == hub.commit(REPO)
    assert sorted(s.rfilename for s in info.siblings or []) == ["config.json", "sub/a.txt", "weights.gguf"]
    files = {f.path: f for f in api.list_repo_tree(REPO, recursive=True) if hasattr(f, "size")}
    assert files["weights.gguf"].size == big_file.stat().st_size

    with pytest.raises(GatedRepoError):
        hf_hub_download(REPO, "config.json", local_dir=tmp_path / "x", endpoint=hub.endpoint, token=False)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("test-org/nope", "a", local_dir=tmp_path / "y", endpoint=hub.endpoint, token=TOKEN)
    assert all(TOKEN not in str(r) for r in hub.requests)


def test_headers_and_range_reads(hub: HubStandIn, big_file: Path) -> None:
    url = f"{hub.endpoint}/{REPO}/resolve/main/weights.gguf"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    head = httpx.head(url, headers=auth)
    data = big_file.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    assert head.status_code == 200 and head.headers["X-Repo-Commit"] == hub.commit(REPO)
    assert head.headers["ETag"] == f'"{sha256}"' and head.headers["X-Linked-Size"] == str(len(data))
    assert head.headers["Content-Length"] == str(len(data)) and head.content == b""

    first = httpx.get(url, headers={**auth, "Range": "bytes=0-7"})
    assert (first.status_code, first.content) == (206, data[:8])
    assert first.headers["Content-Range"] == f"bytes 0-7/{len(data)}"
    assert httpx.get(url, headers={**auth, "Range": "bytes=-5"}).content == data[-5:]
    assert httpx.get(url, headers={**auth, "Range": f"bytes={len(data) - 3}-"}).content == data[-3:]
    assert httpx.get(url, headers={**auth, "Range": f"bytes={len(data)}-"}).status_code == 416

    small = httpx.head(f"{hub.endpoint}/{REPO}/resolve/{hub.commit(REPO)}/config.json", headers=auth)
    assert small.status_code == 200 and "X-Linked-Etag" not in small.headers
    missing = httpx.head(f"{hub.endpoint}/{REPO}/resolve/main/nope.bin", headers=auth)
    assert (missing.status_code, missing.headers["X-Error-Code"]) == (404, "EntryNotFound")
    assert httpx.head(url).status_code == 401
