"""Prometheus scrape targets from Consul's answers, labelled exactly as Prometheus' own Consul discovery labels
them, for the gateway's HTTP service discovery (`GET /metrics/targets`, Prometheus' `http_sd_configs`).

Why: distribution builds of Prometheus may lack `consul_sd_configs` (Debian's 2.42 has it compiled out), and
`http_sd_configs` is in every build. With the same `__meta_consul_*` labels, one set of relabel rules serves
both ways (examples/prometheus/). The labels follow Prometheus v2.42.0 `discovery/consul/consul.go`
(`consulService.watch` and `Discovery.watchService`); the health is Consul's `HealthChecks.AggregatedStatus`
(hashicorp/consul `api/health.go`), which Prometheus calls. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..contract.metadata import GATEWAY_SERVICE, META_METRICS_PATH, TAG_METRICS, serves_metrics
from ..urls import host_port

META = "__meta_consul_"
TAG_SEPARATOR = ","  # Prometheus' default `tag_separator`
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")  # util/strutil SanitizeLabelName
_NODE_MAINTENANCE = "_node_maintenance"
_SERVICE_MAINTENANCE = "_service_maintenance:"


@dataclass(frozen=True)
class ScrapeTarget:
    """One address Prometheus scrapes, and the labels discovery gives it (before relabelling)."""

    address: str  # host:port, Prometheus' __address__
    labels: Mapping[str, str]

    def group(self) -> dict[str, Any]:
        """The target as one group of Prometheus' HTTP SD answer."""
        return {"targets": [self.address], "labels": dict(self.labels)}


def aggregated_status(checks: Iterable[Any]) -> str:
    """Consul's one word for an instance's checks: maintenance > critical > warning > passing; passing for none;
    "" for a status it does not know (hashicorp/consul api/health.go `AggregatedStatus`)."""
    warning = critical = maintenance = False
    for check in checks:
        if not isinstance(check, dict):
            continue
        check_id = str(check.get("CheckID") or "")
        if check_id == _NODE_MAINTENANCE or check_id.startswith(_SERVICE_MAINTENANCE):
            maintenance = True
            continue
        status = check.get("Status")
        if status == "passing":
            continue
        if status == "warning":
            warning = True
        elif status == "critical":
            critical = True
        else:
            return ""
    if maintenance:
        return "maintenance"
    if critical:
        return "critical"
    if warning:
        return "warning"
    return "passing"  # passing checks, or none at all


def sanitized(name: str) -> str:
    """A meta key as part of a label name: anything but letters, digits and _ becomes _ (strutil)."""
    return _INVALID_LABEL_CHARS.sub("_", name)


def consul_targets(service: str, entries: Any, datacenter: str) -> list[ScrapeTarget]:
    """The instances of one service (a `GET /v1/health/service/:name` answer) that serve Prometheus metrics (tag
    TAG_METRICS), as consul_sd_configs with `tags: [nomadgs-metrics]` finds them, healthy or not: relabelling
    keeps the passing ones (`__meta_consul_health`). `datacenter`: the agent's, Prometheus' group label."""
    if not isinstance(entries, list):
        return []
    targets = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        node = entry.get("Node") or {}
        svc = entry.get("Service") or {}
        tags = svc.get("Tags") or []
        port = svc.get("Port")
        if not serves_metrics(tags) or not isinstance(port, int) or isinstance(port, bool):
            continue
        service_address = str(svc.get("Address") or "")
        node_address = str(node.get("Address") or "")
        # The service's address when it has one: "the service may be registered remotely through a different node".
        address = host_port(service_address or node_address, port)
        labels = {
            "__meta_consul_service": service,
            "__meta_consul_dc": datacenter,
            META + "address": node_address,
            META + "node": str(node.get("Node") or ""),
            META + "namespace": str(svc.get("Namespace") or ""),
            META + "partition": str(svc.get("Partition") or ""),
            META + "tags": TAG_SEPARATOR + TAG_SEPARATOR.join(str(t) for t in tags) + TAG_SEPARATOR,
            META + "service_address": service_address,
            META + "service_port": str(port),
            META + "service_id": str(svc.get("ID") or ""),
            META + "health": aggregated_status(entry.get("Checks") or []),
        }
        for prefix, values in (
            ("metadata_", node.get("Meta")),
            ("service_metadata_", svc.get("Meta")),
            ("tagged_address_", node.get("TaggedAddresses")),
        ):
            for key, value in (values or {}).items():
                labels[META + prefix + sanitized(str(key))] = str(value)
        targets.append(ScrapeTarget(address, labels))
    return targets


def gateway_target(host: str, port: int, *, node: str, datacenter: str, metrics_path: str) -> ScrapeTarget:
    """The gateway itself, labelled as if registered in Consul as `nomadgs-gateway`, tagged TAG_METRICS with
    `metrics_path` in its meta (as a Nomad job running the gateway would register it)."""
    return ScrapeTarget(
        host_port(host, port),
        {
            "__meta_consul_service": GATEWAY_SERVICE,
            "__meta_consul_dc": datacenter,
            META + "address": host,
            META + "node": node,
            META + "namespace": "",
            META + "partition": "",
            META + "tags": TAG_SEPARATOR + TAG_SEPARATOR.join((GATEWAY_SERVICE, TAG_METRICS)) + TAG_SEPARATOR,
            META + "service_address": host,
            META + "service_port": str(port),
            META + "service_id": GATEWAY_SERVICE,
            META + "health": "passing",  # it answers: it is the one asked
            META + "service_metadata_" + META_METRICS_PATH: metrics_path,
        },
    )
