"""An HTTP double of HashiCorp Nomad's API for the project's tests (there is no Nomad binary to test against).

    from tests.support.nomad_double import NomadDouble, scenarios

Modules: `server` (NomadDouble), `http_api` (routing, blocking queries, streams), `cluster` (register / plan /
deregister and the runs), `context` (what a run may change), `scenarios` (scripted job lives), `client_mode`
(local raw_exec processes + Consul), `state` / `mutations` / `objects` / `queries` (store, changes, wire shapes,
reads), `strict` + `api_structs` (+ `api_structs.txt`) (strict decoding), `validation`, `jobspec`, `events`,
`faults`, `goduration`.
"""

from . import scenarios
from .client_mode import LocalClient
from .http_api import RecordedRequest
from .server import UNSET, NomadDouble, ScenarioError

__all__ = ["UNSET", "LocalClient", "NomadDouble", "RecordedRequest", "ScenarioError", "scenarios"]
