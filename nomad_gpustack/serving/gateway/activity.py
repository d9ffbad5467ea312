"""The last activity of every gateway in front of a model, shared through Consul's key/value store, so that a
gateway that sees no traffic does not scale a model to zero while another serves it.

Each gateway process has an ID of its own, made when its waker starts (so the worker processes of one gateway
have one each). For each model that may be scaled to zero it writes `nomadgs/activity/<model>/<id>` = the unix
time of its latest request (a plain number: `consul kv get -recurse nomadgs/activity/`): at once when a request
arrives and its record is older than `interval`, and once per interval while requests are in flight. That is at
most one write per model and interval, whatever the traffic, and a record lags its gateway's last request by
at most `margin` (one interval, plus one pass of the idle check, which refreshes the records of busy models).

Before scaling a model to zero a gateway writes its own record, reads the model's (`?recurse`; its own must be
among them: Consul answers a list the token may not read as empty) and goes on only when every other gateway's
is at least `idle_after + margin` old; otherwise it looks again when the newest would be. Clocks
of the gateways' hosts need to agree only to well within `idle_after`: a record of a busy gateway is never
older than `margin`, so a host whose clock is behind by less than `idle_after` cannot make it look idle. The
records of gateways that are gone hold old times, which count as idle; a gateway deletes its own when it stops,
and after a scale to zero the records read are deleted as a check-and-set (one written meanwhile stays).
Consul unreachable, or refusing: the model is not scaled to zero (idle is never guessed).
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..consul import ConsulDenied, KVEntry, consul_kv_delete, consul_kv_list, consul_kv_put
from ..discovery import DiscoveryError

if TYPE_CHECKING:
    from ...settings import ConsulSettings

log = logging.getLogger("nomadgs.gateway")

PREFIX = "nomadgs/activity/"
CONSUL_ACL_POLICY = "examples/acl/nomadgs-gateway.consul.hcl"
MAX_INTERVAL = 30.0  # seconds between two writes of one record at most, while requests keep coming


class ActivityUnknown(Exception):
    """The other gateways' activity could not be read; the words say why."""


def interval(idle_after: float) -> float:
    """Seconds between two writes of a model's record while it is in use: a quarter of its idle time, at most
    MAX_INTERVAL, at least 0.1 (as the idle check's pass)."""
    return min(MAX_INTERVAL, max(0.1, idle_after / 4))


def margin(idle_after: float) -> float:
    """How much a record may lag its gateway's last request: one interval until the next write, and one pass of
    the idle check (at most an interval) for a request still in flight."""
    return 2 * interval(idle_after)


@dataclass(frozen=True)
class Record:
    """One gateway's last activity for one model."""

    gateway: str
    at: float  # unix seconds
    key: str
    modify_index: int


def records(model: str, entries: Iterable[KVEntry]) -> list[Record]:
    """The gateways' records of `model` among the keys under its prefix; keys of other shapes (a model whose
    name continues with a slash, a value that is not a time) are not records of it."""
    prefix = model_prefix(model)
    found = []
    for entry in entries:
        gateway = entry.key[len(prefix) :] if entry.key.startswith(prefix) else ""
        if not gateway or "/" in gateway:
            continue
        try:
            at = float(entry.value.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            continue
        if math.isfinite(at):
            found.append(Record(gateway, at, entry.key, entry.modify_index))
    return found


def others_idle_in(found: Iterable[Record], own: str, now: float, idle_after: float) -> float:
    """Seconds until every other gateway's record is `idle_after + margin` old (0 or less: they all are)."""
    newest = max((r.at for r in found if r.gateway != own), default=-math.inf)
    return newest + idle_after + margin(idle_after) - now


def model_prefix(model: str) -> str:
    return f"{PREFIX}{model}/"


def gateway_id() -> str:
    """A new ID for this process: host, pid and a random part (a restarted gateway is a new one)."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()) or "gateway"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


class Activity:
    """This gateway's records in Consul, and the reading of the others'."""

    def __init__(self, settings: ConsulSettings, *, timeout: float = 10.0) -> None:
        """`settings`: how to reach Consul; `timeout` bounds each request (seconds)."""
        self.settings = settings
        self.id = gateway_id()
        self._http: Any = settings.httpx_client(timeout=timeout, asynchronous=True)
        self._written: set[str] = set()  # models with a record of ours
        self._told: set[str] = set()  # failures already explained in the log, by kind

    async def write(self, model: str, at: float) -> bool:
        """Record `at` (unix seconds) as this gateway's last activity for `model`; False (logged) when Consul
        could not be written."""
        key = model_prefix(model) + self.id
        try:
            await consul_kv_put(self._http, self.settings, key, repr(round(at, 3)).encode())
        except DiscoveryError as exc:
            self._explain("write", exc, model)
            return False
        self._written.add(model)
        return True

    async def survey(self, model: str, last: float) -> list[Record]:
        """Every gateway's record of `model`, after writing this one's (`last`, unix seconds); ActivityUnknown
        when Consul cannot be written or read.

        A list of keys the token may not read is answered as if they did not exist (Consul filters it), which
        would look like no other gateway: this gateway's own record, just written, must be in the answer."""
        if not await self.write(model, last):
            raise ActivityUnknown("Consul cannot be written")
        try:
            entries = await consul_kv_list(self._http, self.settings, model_prefix(model))
        except DiscoveryError as exc:
            self._explain("read", exc, model)
            raise ActivityUnknown(str(exc)) from None
        found = records(model, entries)
        if not any(r.gateway == self.id for r in found):
            why = "its answer lacks this gateway's own record, just written: the token may not read the others'"
            self._explain("read", ConsulDenied(why), model, why)
            raise ActivityUnknown(why)
        return found

    async def forget(self, found: Iterable[Record]) -> None:
        """Delete these records unless written since they were read (a model scaled to zero needs none)."""
        for record in found:
            try:
                await consul_kv_delete(self._http, self.settings, record.key, cas=record.modify_index)
            except DiscoveryError as exc:
                log.debug("activity record %s not deleted: %s", record.key, exc)
                return

    async def close(self) -> None:
        """Delete this gateway's records (best effort: the old times of a gateway gone count as idle)."""
        try:
            for model in sorted(self._written):
                await consul_kv_delete(self._http, self.settings, model_prefix(model) + self.id)
        except DiscoveryError as exc:
            log.debug("activity records of gateway %s not deleted: %s", self.id, exc)
        finally:
            await self._http.aclose()

    def _explain(self, what: str, exc: DiscoveryError, model: str, why: str = "403 Permission denied") -> None:
        """Log a failure once per kind: a refusal in words (which token, which policy), or Consul's failure."""
        kind = f"{what}:{type(exc).__name__}"
        if kind in self._told:
            log.debug("model %s: cannot %s the activity of the gateways in Consul: %s", model, what, exc)
            return
        self._told.add(kind)
        if isinstance(exc, ConsulDenied):
            log.error("model %s: %s", model, self.denied(what, why))
        else:
            log.warning("model %s: cannot %s the activity of the gateways in Consul: %s; until it can, no model is "
                        "scaled to zero", model, what, exc)  # fmt: skip

    def denied(self, what: str, why: str = "403 Permission denied") -> str:
        """A refusal of Consul's key/value store in words: which token, which rule on which prefix."""
        token = "the token of CONSUL_HTTP_TOKEN" if self.settings.token else "no token (set CONSUL_HTTP_TOKEN)"
        return (
            f"Consul refused to {what} the gateways' last activity under {PREFIX} ({why}): the "
            f"gateway sent {token}, and scaling to zero with several gateways needs a Consul token whose policy "
            f'grants key_prefix "{PREFIX}" {{ policy = "write" }} (see {CONSUL_ACL_POLICY}); until then no '
            "model is scaled to zero (waking them still works)"
        )
