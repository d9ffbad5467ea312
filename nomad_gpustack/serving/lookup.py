"""One look at where the models run, across the service catalogs asked for (what `nomadgs endpoints` shows)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..contract.metadata import is_managed, model_name, scale_to_zero
from ..errors import suggestion
from .consul import consul_endpoints
from .discovery import Endpoint, NoInstanceError, build_table

if TYPE_CHECKING:
    from ..settings import ConsulSettings, NomadSettings


def discover(*, consul: ConsulSettings | None = None, nomad: NomadSettings | None = None) -> list[Endpoint]:
    """Every instance of our services from the providers given, in table order (model, service, id)."""

    async def gather() -> list[Endpoint]:
        found: list[Endpoint] = []
        if consul is not None:
            found += await consul_endpoints(consul)
        if nomad is not None:
            # Nomad's client and its answer models load only when Nomad is asked: a Consul lookup (endpoints,
            # the Ansible lookup) must not pay for them (~90 ms of start-up, measured).
            from .nomad_services import nomad_endpoints

            found += await nomad_endpoints(nomad)
        return found

    return list(build_table(asyncio.run(gather())).endpoints)


def scaled_to_zero(nomad: NomadSettings) -> list[str]:
    """The models whose job the gateway scales to zero and back (the scale-to-zero meta), from Nomad's job
    list: they may have no instance in any catalog, and still answer (a request wakes them)."""
    from ..nomad.client import NomadAPI  # only when Nomad is asked, as in discover()

    found = set()
    for job in NomadAPI(nomad).jobs():
        model = model_name(job.Meta)
        if model and not job.Stop and is_managed(job.Meta) and scale_to_zero(job.Meta) is not None:
            found.add(model)
    return sorted(found)


def healthy_base_urls(model: str, *, consul: ConsulSettings) -> list[str]:
    """OpenAI base URLs of the healthy instances of `model` registered in Consul (sorted; empty if none is).

    NoInstanceError when no instance of the model is registered at all, with the closest model name: a typo
    must not look like a model that is merely down.
    """
    table = build_table(asyncio.run(consul_endpoints(consul)))
    if not table.knows(model):
        hint = suggestion(model, table.models)
        raise NoInstanceError(f"no instance of model '{model}' is registered in Consul" + (f"; {hint}" if hint else ""))
    return sorted({e.base_url for e in table.routes.get(model, ())})
