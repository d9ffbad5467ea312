"""A real Prometheus server for the tests: started on 127.0.0.1 with a configuration the test writes, its data in
a temporary folder, asked through its HTTP API, and stopped by its pid."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from .components import ComponentUnavailable, free_port


class PrometheusServer:
    """`start(config)` runs Prometheus with that configuration (a dict, as prometheus.yml holds it)."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "prometheus.log"

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, config: dict[str, Any], timeout: float = 60.0) -> PrometheusServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        config_file = self.folder / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [self.binary, f"--config.file={config_file}", f"--storage.tsdb.path={self.folder / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ComponentUnavailable(f"prometheus exited at start: {self.log.read_text()[-800:]}")
            try:
                if httpx.get(f"{self.address}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise ComponentUnavailable(f"prometheus was not ready within {timeout}s: {self.log.read_text()[-800:]}")

    def api(self, path: str, **params: str) -> Any:
        """The `data` of an answer of Prometheus' HTTP API (`/api/v1/...`)."""
        answer = httpx.get(f"{self.address}/api/v1/{path}", params=params, timeout=10).json()
        assert answer["status"] == "success", answer
        return answer["data"]

    def targets(self) -> list[dict[str, Any]]:
        """The active targets: their labels, scrape URL, health (`up`, `down`, `unknown`) and last error."""
        return list(self.api("targets", state="active")["activeTargets"])

    def query(self, expression: str) -> list[tuple[dict[str, str], float]]:
        """An instant query's samples: (labels, value)."""
        data = self.api("query", query=expression)
        assert data["resultType"] == "vector", data
        return [(sample["metric"], float(sample["value"][1])) for sample in data["result"]]

    def value(self, expression: str) -> float | None:
        """The one value of an instant query, None when it has none."""
        samples = self.query(expression)
        assert len(samples) <= 1, samples
        return samples[0][1] if samples else None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
