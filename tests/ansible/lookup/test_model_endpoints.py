"""The `model_endpoints` lookup against a real Consul agent."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ...support.components import ConsulAgent
from ..conftest import run_playbook


@pytest.fixture
def consul_client(consul: ConsulAgent) -> Iterator[httpx.Client]:
    client = httpx.Client(base_url=consul.address, timeout=5)
    registered: list[str] = []

    def register(model: str, port: int, status: str) -> None:
        service_id = f"{model}-{port}"
        body = {
            "ID": service_id, "Name": model.lower(), "Address": "127.0.0.1", "Port": port,
            "Tags": ["nomadgs", "openai", f"model={model}", "backend=llama.cpp"],
            "Meta": {"gpustack_model": model, "gpustack_backend": "llama.cpp"},
            "Check": {"CheckID": f"check-{service_id}", "Name": "health", "TTL": "10m", "Status": status},
        }  # fmt: skip
        client.put("/v1/agent/service/register", json=body).raise_for_status()
        registered.append(service_id)

    client.register = register  # type: ignore[attr-defined]
    yield client
    for service_id in registered:
        client.put(f"/v1/agent/service/deregister/{service_id}")
    client.close()


def test_lookup_returns_the_healthy_base_urls(consul: ConsulAgent, consul_client: httpx.Client, tmp_path: Path) -> None:
    model = f"Qwen-{uuid.uuid4().hex[:6]}"
    consul_client.register(model, 18001, "passing")  # type: ignore[attr-defined]
    consul_client.register(model, 18002, "passing")  # type: ignore[attr-defined]
    consul_client.register(model, 18003, "critical")  # type: ignore[attr-defined]
    down = f"down-{uuid.uuid4().hex[:6]}"
    consul_client.register(down, 18004, "critical")  # type: ignore[attr-defined]
    book = tmp_path / "lookup.yml"
    book.write_text(
        f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - name: query
      ansible.builtin.debug:
        msg: "{{{{ query('nomad_gpustack.nomad.model_endpoints', '{model}') }}}}"
    - name: lookup with the address as an option
      ansible.builtin.debug:
        msg: "{{{{ lookup('nomad_gpustack.nomad.model_endpoints', '{model}', consul_addr='{consul.address}') }}}}"
    - name: none healthy
      ansible.builtin.debug:
        msg: "{{{{ query('nomad_gpustack.nomad.model_endpoints', '{down}') }}}}"
    - name: typo
      ansible.builtin.debug:
        msg: "{{{{ query('nomad_gpustack.nomad.model_endpoints', '{model}x') }}}}"
      ignore_errors: true
"""
    )
    play = run_playbook(book, env={"CONSUL_HTTP_ADDR": consul.address}, record=True)
    assert play.code == 0, play.text
    r = play.results()
    urls = ["http://127.0.0.1:18001/v1", "http://127.0.0.1:18002/v1"]
    assert r["query"]["msg"] == urls
    assert r["lookup with the address as an option"]["msg"] == ",".join(urls)
    assert r["none healthy"]["msg"] == []
    typo = r["typo"]
    assert typo["failed"] is True
    assert f"no instance of model '{model}x' is registered in Consul; did you mean '{model}'?" in typo["msg"]
    assert "Traceback" not in play.text
