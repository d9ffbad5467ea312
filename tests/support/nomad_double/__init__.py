"""An HTTP double of HashiCorp Nomad's API for the project's tests (there is no Nomad binary to test against).

    from tests.support.nomad_double import NomadDouble, scenarios

Modules: `server` (NomadDouble), `http_api` (routing, blocking queries, streams, variables), `acl` (tokens and
capabilities), `bexpr` (the lists' `filter` expressions), `cluster`
(register / plan / revert / scale / deregister, the eval broker, the hooks every write goes through), the
server's rules over time, the same for every mode: `scheduler` + `reconciler` (placements, rolling and in-place
updates, canaries, deployments), `reschedule` (reschedule policies), `watcher` (the deployment watcher: health,
progress deadline, auto-revert, promotion), `leader` (the server's thread and timers), `clock` (Nomad's time,
`time_scale` times faster than the wall clock); the client half: `context` (what a runnable may do with an
allocation), `scenarios` (scripted allocation lives), `client_mode` (the local client node: services in Consul,
checks, health), `docker_driver`
(tasks as containers on the local Docker engine) + `task_runner` (a docker task's life: templates, restarts,
events) + `restarts` (the restart tracker) + `templates` (template blocks) + `taskenv` (task environment,
interpolation), raw_exec processes in `client_mode`, `state` / `mutations` / `objects` / `queries` (store,
changes, wire shapes, reads), `strict` + `api_structs` (+ `api_structs.txt`) (strict decoding), `validation`,
`jobspec`, `events`, `faults`, `goduration`.
"""

from . import scenarios
from .client_mode import LocalClient
from .docker_driver import DockerDriver, HostVolume
from .http_api import RecordedRequest
from .server import UNSET, NomadDouble, ScenarioError

__all__ = [
    "UNSET",
    "DockerDriver",
    "HostVolume",
    "LocalClient",
    "NomadDouble",
    "RecordedRequest",
    "ScenarioError",
    "scenarios",
]
