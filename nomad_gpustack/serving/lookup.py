"""One look at where the models run, across the service catalogs asked for (what `nomadgs endpoints` shows)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .consul import consul_endpoints
from .discovery import Endpoint, build_table
from .nomad_services import nomad_endpoints

if TYPE_CHECKING:
    from ..settings import ConsulSettings, NomadSettings


def discover(*, consul: ConsulSettings | None = None, nomad: NomadSettings | None = None) -> list[Endpoint]:
    """Every instance of our services from the providers given, in table order (model, service, id)."""

    async def gather() -> list[Endpoint]:
        found: list[Endpoint] = []
        if consul is not None:
            found += await consul_endpoints(consul)
        if nomad is not None:
            found += await nomad_endpoints(nomad)
        return found

    return list(build_table(asyncio.run(gather())).endpoints)
