"""Nomad's own service catalog (`service_provider: nomad`): our services and the health of their checks.

Nomad's errors are the shared client's (`nomad.client`): unreachable or refused is exit code 5.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..nomad.client import NomadAPI, NomadDenied, NomadError, NomadUnavailable, NotNomad
from .discovery import Endpoint, parse_nomad_registrations, parse_nomad_services

if TYPE_CHECKING:
    import httpx

    from ..settings import NomadSettings

log = logging.getLogger("nomadgs.discovery")

# The shapes of Nomad's answers, as `NomadAPI.get` checks them; `serving.discovery` reads the values.
_LISTING = list[dict[str, Any]]  # GET /v1/services: one {Namespace, Services} per namespace
_REGISTRATIONS = list[dict[str, Any]]  # GET /v1/service/:name: one registration per instance
_CHECKS = dict[str, dict[str, Any]]  # GET /v1/client/allocation/:id/checks: check ID -> its latest result


async def nomad_endpoints(settings: NomadSettings) -> list[Endpoint]:
    """Every instance of our services registered with Nomad's own service provider, healthy or not."""
    api = NomadAPI(settings)
    async with api.async_client() as http:
        listing, _ = await api.get(http, "/v1/services", _LISTING)
        services = parse_nomad_services(listing)
        answers = await asyncio.gather(
            *(api.get(http, f"/v1/service/{quote(name, safe='')}", _REGISTRATIONS, params={"namespace": ns})
              for ns, name in services)
        )  # fmt: skip
        registrations = [regs for regs, _ in answers]
        alloc_ids = sorted({str(reg["AllocID"]) for regs in registrations for reg in regs if reg.get("AllocID")})
        checks = await asyncio.gather(*(_alloc_checks(api, http, alloc) for alloc in alloc_ids))
    by_alloc = dict(zip(alloc_ids, checks, strict=True))
    return [e for regs in registrations for e in parse_nomad_registrations(regs, by_alloc)]


async def _alloc_checks(api: NomadAPI, http: httpx.AsyncClient, alloc_id: str) -> Any:
    """The checks of one allocation, or None (so: unhealthy) when its Nomad client cannot tell."""
    try:
        checks, _ = await api.get(http, f"/v1/client/allocation/{alloc_id}/checks", _CHECKS)
    except (NomadUnavailable, NomadDenied, NotNomad):
        raise  # Nomad itself is out of reach, refuses us or is not Nomad: not a matter of one allocation
    except NomadError as exc:
        log.debug("no checks for allocation %s: %s", alloc_id, exc)
        return None
    return checks
