"""examples/prometheus/: promtool accepts the configurations this Prometheus can parse, and the Consul one and
the HTTP service discovery one relabel alike (one set of rules for both ways of finding the targets)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from .support.components import ROOT

FOLDER = ROOT / "examples" / "prometheus"
CONSUL = FOLDER / "prometheus.yml"
HTTP_SD = FOLDER / "prometheus-http-sd.yml"
# Debian's prometheus 2.42 is built without Consul discovery ("Disable Consul SD until its Debian package is back
# in shape", its changelog for 2.33.5+ds1-4): its promtool refuses the field, and only that.
NO_CONSUL_SD = "field consul_sd_configs not found in type config.ScrapeConfig"


def check_config(promtool: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60)


def jobs(path: Path) -> dict[str, Any]:
    return {job["job_name"]: job for job in yaml.safe_load(path.read_text())["scrape_configs"]}


def test_promtool_accepts_the_http_sd_example(promtool: str) -> None:
    run = check_config(promtool, HTTP_SD)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_promtool_accepts_the_consul_example_or_lacks_consul_discovery_only(promtool: str, tmp_path: Path) -> None:
    run = check_config(promtool, CONSUL)
    if run.returncode == 0:
        return  # a Prometheus built with Consul discovery
    output = run.stdout + run.stderr
    errors = [line for line in output.splitlines() if line.strip().startswith("line ")]
    assert errors and all(NO_CONSUL_SD in line for line in errors), output
    # What this promtool cannot parse, it can check with the discovery swapped: the rest of the file is valid.
    config = yaml.safe_load(CONSUL.read_text())
    for job in config["scrape_configs"]:
        job["http_sd_configs"] = [{"url": "http://127.0.0.1:8080/metrics/targets"}]
        del job["consul_sd_configs"]
    swapped = tmp_path / "prometheus-consul-swapped.yml"
    swapped.write_text(yaml.safe_dump(config))
    run = check_config(promtool, swapped)
    assert run.returncode == 0, run.stdout + run.stderr


def test_both_examples_have_the_same_jobs_and_relabel_rules() -> None:
    consul, http_sd = jobs(CONSUL), jobs(HTTP_SD)
    assert list(consul) == list(http_sd) == ["nomadgs-gateway", "nomadgs-engines"]
    for name in consul:
        assert consul[name]["relabel_configs"] == http_sd[name]["relabel_configs"], name
        assert set(consul[name]) - {"consul_sd_configs"} == set(http_sd[name]) - {"http_sd_configs"}
    assert consul["nomadgs-engines"]["consul_sd_configs"][0]["tags"] == ["nomadgs-metrics"]
    assert consul["nomadgs-gateway"]["consul_sd_configs"][0]["services"] == ["nomadgs-gateway"]
    for job in http_sd.values():
        assert job["http_sd_configs"][0]["url"].endswith("/metrics/targets")
