"""Where the models run, as pure data: `Endpoint`s and a `RoutingTable` parsed from Consul's and Nomad's answers.

No I/O here: `serving.consul` reads and follows Consul, `serving.nomad_services` reads Nomad's own service
catalog, `serving.lookup.discover` asks both once. Our services are the ones tagged `nomadgs`; model, backend
and version come from the meta keys the compiler writes, or from the `model=`/`backend=`/`version=` tags where
there is no meta (Nomad's native services have none).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..contract.metadata import TAG_CANARY, is_ours, model_labels, service_job
from ..errors import ServiceError, UnreachableError
from ..urls import openai_base_url, origin

Health = Literal["passing", "warning", "critical"]
Provider = Literal["consul", "nomad"]

HEALTHS: tuple[Health, ...] = ("passing", "warning", "critical")  # from best to worst
HEALTH_ORDER: dict[str, int] = {name: rank for rank, name in enumerate(HEALTHS)}
# Nomad's check results (`GET /v1/client/allocation/:id/checks`) in Consul's words. A pending check has not
# run yet: like Consul, which starts every check critical, we send no traffic until it has passed once.
NOMAD_CHECK_HEALTH: dict[str, Health] = {"success": "passing", "failure": "critical", "pending": "critical"}
# Nomad registers its services in Consul as `_nomad-task-<alloc id>-<task>-<service>-<port label>`.
NOMAD_SERVICE_ID = re.compile(r"_nomad-(?:task|group)-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})-")


class DiscoveryError(UnreachableError):
    """Consul could not be reached, refused the request or answered something unusable."""


class NoInstanceError(ServiceError):
    """The model asked for has no (healthy) instance."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One running instance of a model, as a service registration says."""

    model: str
    service: str
    service_id: str
    address: str
    port: int
    health: Health
    backend: str | None = None
    version: str | None = None
    node: str | None = None
    alloc_id: str | None = None
    job_id: str | None = None
    provider: Provider = "consul"
    canary: bool = False  # an unpromoted canary: its service carries TAG_CANARY (the group's canary_tags)

    @property
    def origin(self) -> str:
        """`http://address:port`, with an IPv6 address in brackets."""
        return origin(self.address, self.port)

    @property
    def base_url(self) -> str:
        """The OpenAI base URL of this instance."""
        return openai_base_url(self.address, self.port)

    @property
    def passing(self) -> bool:
        return self.health == "passing"

    def to_json(self) -> dict[str, Any]:
        """The fields `nomadgs endpoints --output json` shows, base URL included."""
        return {
            "model": self.model,
            "base_url": self.base_url,
            "health": self.health,
            "backend": self.backend,
            "version": self.version,
            "service": self.service,
            "service_id": self.service_id,
            "address": self.address,
            "port": self.port,
            "node": self.node,
            "alloc_id": self.alloc_id,
            "job_id": self.job_id,
            "provider": self.provider,
            "canary": self.canary,
        }


@dataclass(frozen=True)
class RoutingTable:
    """A consistent view of every instance; `routes` keeps only the passing ones, per model."""

    endpoints: tuple[Endpoint, ...] = ()
    routes: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        """Every model with at least one registered instance, healthy or not, sorted."""
        return sorted({e.model for e in self.endpoints})

    def knows(self, model: str) -> bool:
        return any(e.model == model for e in self.endpoints)

    def instances(self, model: str) -> list[Endpoint]:
        """Every instance of `model`, healthy or not."""
        return [e for e in self.endpoints if e.model == model]


def build_table(endpoints: Iterable[Endpoint]) -> RoutingTable:
    """Index endpoints by model; sorted so that equal inputs give equal tables whatever the answer order."""
    ordered = tuple(sorted(endpoints, key=lambda e: (e.model, e.service, e.service_id, e.address, e.port)))
    routes: dict[str, list[Endpoint]] = {}
    for endpoint in ordered:
        if endpoint.passing:
            routes.setdefault(endpoint.model, []).append(endpoint)
    return RoutingTable(ordered, {model: tuple(items) for model, items in routes.items()})


# ----------------------------------------------------------------------------------------------------
# Parsing: API answers to endpoints, no I/O.


def worst_health(statuses: Iterable[str]) -> Health:
    """Consul's rule: an instance is as healthy as its worst check; no checks at all means passing."""
    worst = 0
    for status in statuses:
        # An unknown status is not evidence of health: count it as critical.
        worst = max(worst, HEALTH_ORDER.get(status, len(HEALTHS) - 1))
    return HEALTHS[worst]


def alloc_id_from_service_id(service_id: str) -> str | None:
    """The allocation ID inside the ID that Nomad gives the Consul services it registers."""
    match = NOMAD_SERVICE_ID.match(service_id)
    return match.group(1) if match else None


def parse_consul_health(entries: Any) -> list[Endpoint]:
    """Endpoints from a `GET /v1/health/service/:name` answer; services not tagged `nomadgs` are left out.

    Health counts every check of the entry, the node's own (serfHealth, maintenance) included, as Consul does.
    """
    if not isinstance(entries, list):
        raise DiscoveryError("Consul answered a health query with something that is not a list")
    endpoints = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        service = entry.get("Service") or {}
        node = entry.get("Node") or {}
        tags = service.get("Tags") or []
        if not is_ours(tags):
            continue
        port = service.get("Port")
        # An empty service address means "the node's address" in Consul.
        address = service.get("Address") or node.get("Address")
        if not isinstance(port, int) or port <= 0 or not address:
            continue
        name = str(service.get("Service") or "")
        service_id = str(service.get("ID") or name)
        meta = service.get("Meta") or {}
        model, backend, version = model_labels(name, tags, meta)
        checks = entry.get("Checks") or []
        endpoints.append(
            Endpoint(
                model=model,
                service=name,
                service_id=service_id,
                address=str(address),
                port=port,
                health=worst_health(str(c.get("Status", "")) for c in checks if isinstance(c, dict)),
                backend=backend,
                version=version,
                node=node.get("Node") or None,
                alloc_id=alloc_id_from_service_id(service_id),
                job_id=service_job(meta),
                provider="consul",
                canary=TAG_CANARY in tags,
            )
        )
    return endpoints


def parse_consul_services(answer: Any) -> list[str]:
    """Names of our services in a `GET /v1/catalog/services` answer (`{name: [tags]}`)."""
    return sorted(parse_consul_catalog(answer))


def parse_consul_catalog(answer: Any) -> dict[str, tuple[str, ...]]:
    """Our services and the tags their instances carry (sorted: Consul lists a service's tags in no set order
    from one answer to the next), from a `GET /v1/catalog/services` answer."""
    if not isinstance(answer, dict):
        raise DiscoveryError("Consul answered the catalog query with something that is not an object")
    return {
        str(name): tuple(sorted({str(tag) for tag in tags}))
        for name, tags in answer.items()
        if isinstance(tags, list) and is_ours(tags)
    }


# What the check list says of one instance's check: (node, service id, check id, status, tags).
CheckMark = tuple[str, str, str, str, tuple[str, ...]]


def check_marks(checks: Any) -> dict[str, frozenset[CheckMark]]:
    """For each of our services, what a `GET /v1/health/state/any` answer says of its instances: each of its
    checks (node, service id, check id, status, the service's tags) and the checks of the nodes it runs on.

    A service whose marks moved has gained or lost an instance with a check, seen one change health, moved a
    node, or changed tags (Consul rewrites a check's ServiceTags when its service is registered again): it must
    be read again. Address and port cannot change under the same service ID on Nomad (the ID names the
    allocation and its port label), so the marks leave them out.
    """
    if not isinstance(checks, list):
        raise DiscoveryError("Consul answered the check list with something that is not a list")
    node_checks: dict[str, set[CheckMark]] = {}
    service_checks: dict[str, set[CheckMark]] = {}
    for check in checks:
        if not isinstance(check, dict):
            continue
        tags = check.get("ServiceTags") or []
        node, service_id = str(check.get("Node") or ""), str(check.get("ServiceID") or "")
        words = tuple(sorted(str(tag) for tag in tags))
        mark = (node, service_id, str(check.get("CheckID") or ""), str(check.get("Status") or ""), words)
        if not service_id:
            node_checks.setdefault(node, set()).add(mark)
        elif is_ours(tags):
            service_checks.setdefault(str(check.get("ServiceName") or ""), set()).add(mark)
    marks = {}
    for service, own in service_checks.items():
        nodes = {mark[0] for mark in own}
        marks[service] = frozenset(own.union(*(node_checks.get(node, ()) for node in nodes)))
    return marks


def has_unchecked_instance(entries: Any) -> bool:
    """Whether a `GET /v1/health/service/:name` answer has an instance with no check of its own: the check list
    cannot show its changes."""
    if not isinstance(entries, list):
        return False
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        service_id = (entry.get("Service") or {}).get("ID")
        checks = entry.get("Checks") or []
        if not any(isinstance(c, dict) and c.get("ServiceID") == service_id for c in checks):
            return True
    return False


def parse_nomad_services(answer: Any) -> list[tuple[str, str]]:
    """(namespace, name) of our services in a `GET /v1/services` answer."""
    if not isinstance(answer, list):
        raise DiscoveryError("Nomad answered the service list with something that is not a list")
    found = []
    for group in answer:
        if not isinstance(group, dict):
            continue
        namespace = str(group.get("Namespace") or "default")
        for service in group.get("Services") or []:
            if isinstance(service, dict) and is_ours(service.get("Tags")):
                found.append((namespace, str(service.get("ServiceName"))))
    return sorted(found)


def nomad_check_health(checks: Any, service: str) -> Health:
    """Health of one service of an allocation from its `GET /v1/client/allocation/:id/checks` answer.

    Only healthiness checks count: readiness checks say whether to send traffic during a deployment, and Nomad
    itself leaves them out of the allocation's health.
    """
    if not isinstance(checks, dict):
        return "critical"
    statuses = [
        NOMAD_CHECK_HEALTH.get(str(c.get("Status")), "critical")
        for c in checks.values()
        if isinstance(c, dict) and c.get("Service") == service and c.get("Mode", "healthiness") == "healthiness"
    ]
    return worst_health(statuses)


def parse_nomad_registrations(registrations: Any, checks_by_alloc: Mapping[str, Any]) -> list[Endpoint]:
    """Endpoints from a `GET /v1/service/:name` answer and the checks of the allocations it names."""
    if not isinstance(registrations, list):
        raise DiscoveryError("Nomad answered a service query with something that is not a list")
    endpoints = []
    for reg in registrations:
        if not isinstance(reg, dict):
            continue
        tags = reg.get("Tags") or []
        port = reg.get("Port")
        address = reg.get("Address")
        if not is_ours(tags) or not isinstance(port, int) or port <= 0 or not address:
            continue
        name = str(reg.get("ServiceName") or "")
        alloc_id = str(reg.get("AllocID") or "") or None
        model, backend, version = model_labels(name, tags, {})
        endpoints.append(
            Endpoint(
                model=model,
                service=name,
                service_id=str(reg.get("ID") or name),
                address=str(address),
                port=port,
                health=nomad_check_health(checks_by_alloc.get(alloc_id or ""), name),
                backend=backend,
                version=version,
                node=reg.get("NodeID") or None,
                alloc_id=alloc_id,
                job_id=reg.get("JobID") or None,
                provider="nomad",
                canary=TAG_CANARY in tags,
            )
        )
    return endpoints
