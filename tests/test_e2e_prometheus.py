"""End to end with a real Prometheus: it finds the gateway and a real llama.cpp engine through the gateway's HTTP
service discovery (which follows the real Consul), scrapes both, and PromQL on what it scraped gives the numbers
the test caused. The engine is registered in Consul with the service the compiled job declares (its tags, meta and
check), as Nomad would register it; Prometheus runs with examples/prometheus/prometheus-http-sd.yml, only its
addresses and intervals changed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from nomad_gpustack.contract.metadata import META_METRICS_PATH, TAG_METRICS

from .support.components import ROOT, ConsulAgent
from .support.helpers import compile_yaml, http_json, main_task, running_gateway, wait_until
from .support.prometheus import PrometheusServer

pytestmark = pytest.mark.e2e

MODEL = "smollm2-135m"  # the alias the llama_server fixtures serve under
EXAMPLE = ROOT / "examples" / "prometheus" / "prometheus-http-sd.yml"
REQUESTS = 7


def compiled_service() -> dict[str, Any]:
    """The service of the job nomadgs compiles for this model on the built-in llama.cpp backend."""
    compiled = compile_yaml({"name": MODEL, "local_path": "smollm2.gguf", "backend": "llama.cpp"})
    assert "--metrics" in main_task(compiled)["Config"]["args"], "the engine is started as the job starts it"
    (service,) = main_task(compiled)["Services"]
    return dict(service)


@pytest.fixture
def engine_in_consul(consul: ConsulAgent, llama_server_metrics: str) -> Iterator[str]:
    """The llama.cpp engine registered in Consul as a Nomad client registers the compiled job's service."""
    service = compiled_service()
    port = int(llama_server_metrics.rsplit(":", 1)[1])
    (check,) = service["Checks"]
    registration = {
        "ID": f"_nomad-task-test-{port}", "Name": service["Name"], "Address": "127.0.0.1", "Port": port,
        "Tags": service["Tags"], "Meta": service["Meta"],
        "Check": {"HTTP": f"{llama_server_metrics}{check['Path']}", "Interval": "1s", "Timeout": "1s"},
    }  # fmt: skip
    with httpx.Client(base_url=consul.address, timeout=5) as client:
        client.put("/v1/agent/service/register", json=registration).raise_for_status()
        yield llama_server_metrics
        client.put(f"/v1/agent/service/deregister/{registration['ID']}").raise_for_status()


def example_config(gateway: str) -> dict[str, Any]:
    """The example configuration, pointed at this gateway, scraping every second."""
    config = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    for job in config["scrape_configs"]:
        for sd in job["http_sd_configs"]:
            sd["url"] = f"{gateway}/metrics/targets"
            sd["refresh_interval"] = "1s"
    return config


def test_prometheus_finds_and_scrapes_the_gateway_and_the_engine(
    consul: ConsulAgent, engine_in_consul: str, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    service = compiled_service()
    assert TAG_METRICS in service["Tags"] and service["Meta"][META_METRICS_PATH] == "/metrics"
    engine_metrics = httpx.get(f"{engine_in_consul}/metrics", timeout=10)
    assert engine_metrics.status_code == 200 and "llamacpp:prompt_tokens_total" in engine_metrics.text

    env = {"CONSUL_HTTP_ADDR": consul.address}
    with running_gateway(env, MODEL) as base_url:
        gateway = base_url.removesuffix("/v1")
        prometheus.start(example_config(gateway))

        def targets_up() -> bool:
            return {t["labels"]["job"]: t["health"] for t in prometheus.targets()} == {
                "nomadgs-gateway": "up", "nomadgs-engines": "up"
            }  # fmt: skip

        wait_until(targets_up, 60, "Prometheus scraping the gateway and the engine (targets up)")
        by_job = {t["labels"]["job"]: t for t in prometheus.targets()}
        engine, own = by_job["nomadgs-engines"], by_job["nomadgs-gateway"]
        assert engine["scrapeUrl"] == f"{engine_in_consul}/metrics"
        assert engine["labels"]["model"] == MODEL and engine["labels"]["backend"] == "llama.cpp"
        assert engine["labels"]["nomad_job"] == service["Meta"]["nomadgs_job"]
        assert own["scrapeUrl"] == f"{gateway}/metrics"
        wait_until(lambda: prometheus.value('up{job="nomadgs-gateway"}') == 1.0, 30, "up of the gateway")
        wait_until(lambda: prometheus.value('up{job="nomadgs-engines"}') == 1.0, 30, "up of the engine")

        predicted = f'sum(llamacpp:tokens_predicted_total{{model="{MODEL}"}})'
        prompt = f'sum(llamacpp:prompt_tokens_total{{model="{MODEL}"}})'
        predicted_before = prometheus.value(predicted)
        prompt_before = prometheus.value(prompt)
        assert predicted_before is not None and prompt_before is not None, "the engine's counters are scraped"

        completion_tokens = prompt_tokens = 0
        for n in range(REQUESTS):
            body = {"model": MODEL, "max_tokens": 8, "temperature": 0,
                    "messages": [{"role": "user", "content": f"Count to {n + 3}."}]}  # fmt: skip
            status, answer = http_json("POST", f"{base_url}/chat/completions", body)
            assert status == 200, answer
            completion_tokens += answer["usage"]["completion_tokens"]
            prompt_tokens += answer["usage"]["prompt_tokens"]

        requests = f'sum(nomadgs_gateway_requests_total{{job="nomadgs-gateway", model="{MODEL}", code="200"}})'
        wait_until(lambda: prometheus.value(requests) == REQUESTS, 30, f"{REQUESTS} requests in Prometheus")
        tokens = f'sum(nomadgs_gateway_completion_tokens_total{{model="{MODEL}"}})'
        wait_until(lambda: prometheus.value(tokens) == completion_tokens, 30, "the answers' tokens in Prometheus")
        assert prometheus.value(f'sum(nomadgs_gateway_prompt_tokens_total{{model="{MODEL}"}})') == prompt_tokens
        durations = f'sum(nomadgs_gateway_request_duration_seconds_count{{model="{MODEL}"}})'
        assert prometheus.value(durations) == REQUESTS
        assert prometheus.value(f'sum(nomadgs_gateway_requests_in_flight{{model="{MODEL}"}})') == 0
        assert prometheus.value(f'nomadgs_gateway_instances{{model="{MODEL}"}}') == 1

        # The engine's own counters moved by what it generated for these requests.
        wait_until(
            lambda: (prometheus.value(predicted) or 0) - predicted_before == completion_tokens,
            30,
            "the engine's predicted tokens in Prometheus",
        )
        assert (prometheus.value(prompt) or 0) > prompt_before


def test_a_metrics_port_of_its_own_keeps_the_targets_host(
    consul: ConsulAgent, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    """`metrics_port` moves the scrape to that port of the same host: an IPv6 service address stays bracketed,
    and a service registered without an address is scraped on its node's (Prometheus' __address__)."""
    model = "metrics-port-probe"
    service = compiled_service()
    meta = {**service["Meta"], "gpustack_model": model, "metrics_port": "9464"}
    tags = [t for t in service["Tags"] if not t.startswith("model=")] + [f"model={model}"]
    registrations = [
        {"ID": "probe-v6", "Name": model, "Address": "::1", "Port": 18081, "Tags": tags, "Meta": meta},
        {"ID": "probe-node", "Name": model, "Port": 18082, "Tags": tags, "Meta": meta},
    ]  # fmt: skip
    with httpx.Client(base_url=consul.address, timeout=5) as client:
        node_address = client.get("/v1/agent/self").json()["Member"]["Addr"]
        for registration in registrations:
            client.put("/v1/agent/service/register", json=registration).raise_for_status()
        try:
            with running_gateway({"CONSUL_HTTP_ADDR": consul.address}, model) as base_url:
                prometheus.start(example_config(base_url.removesuffix("/v1")))

                def scrape_urls() -> set[str]:
                    return {t["scrapeUrl"] for t in prometheus.targets() if t["labels"].get("model") == model}

                expected = {"http://[::1]:9464/metrics", f"http://{node_address}:9464/metrics"}
                wait_until(lambda: scrape_urls() == expected, 60, f"Prometheus to target {sorted(expected)}")
        finally:
            for registration in registrations:
                client.put(f"/v1/agent/service/deregister/{registration['ID']}").raise_for_status()
