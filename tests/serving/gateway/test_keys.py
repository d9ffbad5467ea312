"""API keys: their sources, and the check of each request."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from nomad_gpustack.errors import InputError
from nomad_gpustack.serving.gateway import StaticSource, load_api_keys

from ..fakes import FakeBackend, chat, gateway


def test_api_keys(backends: Callable[..., FakeBackend]) -> None:
    a = backends("A")
    with gateway(StaticSource([a.endpoint("m")]), api_keys=["key-one", "key-two"]) as (client, _):
        missing = chat(client, "m")
        wrong = chat(client, "m", Authorization="Bearer key-three")
        not_bearer = chat(client, "m", Authorization="Basic key-one")
        accepted = [chat(client, "m", Authorization=f"Bearer {k}") for k in ("key-one", "key-two")]
        models_without_key = client.get("/v1/models")
        models_with_key = client.get("/v1/models", headers={"Authorization": "Bearer key-two"})
    for refused in (missing, wrong, not_bearer, models_without_key):
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "key-one" not in refused.text and "key-three" not in refused.text
    assert [r.status_code for r in accepted] == [200, 200] and models_with_key.status_code == 200
    assert len(a.requests) == 2
    # The gateway's key is the gateway's: it is not passed on to the instance.
    assert all("authorization" not in r["headers"] for r in a.requests)


def test_api_key_sources(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# gateway keys\nfile-key-1\n\n  file-key-2  \n")
    env = {"NOMADGS_GATEWAY_API_KEYS": "env-a, env-b env-c"}
    assert load_api_keys(["flag-key"], str(keys_file), env) == [
        "flag-key", "file-key-1", "file-key-2", "env-a", "env-b", "env-c"
    ]  # fmt: skip
    (tmp_path / "empty").write_text("# nothing\n")
    for flags, path in (([""], None), (["two words"], None), ([], str(tmp_path / "empty")), ([], "/nonexistent")):
        with pytest.raises(InputError) as caught:
            load_api_keys(flags, path, {})
        assert "two words" not in str(caught.value)
