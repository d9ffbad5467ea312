"""Resolve a deployment against the catalog: pick backend, version and framework, build argv and env.

The result, `Resolved`, holds every decision in plain values, so the Nomad compiler only translates.
GPUStack's rules are followed where it has them (version fallback, placeholders, env precedence, default
backend); where it is silent or lenient we refuse ambiguous input with a message that says how to fix it.

`_Resolver.run` is a row of named stages, each returning a small value: the backend and its version
(`BackendChoice`), how the task runs (`Runtime`), the weights (`Weights`), the env (`merged_env`), the GPUs
(`sizing.plan_gpus`: `GpuPlan`), the command line (`CommandLine`), the health check, the template files, the
shared memory, Nomad's own rules, the warnings (`collect_warnings`); `_assemble` makes them one `Resolved`.
The stages run in this order, which is the order their errors and warnings are reported in.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from ..contract.drivers import LOCKED_DOWN_MODES, MOUNTS_VOLUMES
from ..contract.frameworks import FRAMEWORKS, Framework
from ..durations import SECOND
from ..errors import InputError, suggestion
from ..sizes import GIB, human_size, parse_size, to_mib
from ..spec.backend import Backend, NomadExtras, TemplateFile, VersionConfig
from ..spec.base import AUTO, MAX_MEMORY
from ..spec.catalog import CUSTOM, Catalog
from ..spec.deployment import Deployment, DeploymentNomad
from ..spec.specfile import Sourced
from ..spec.yamlsource import Path
from . import hazards
from .distributed import Distribution, leader_values, worker_values
from .parameters import apply_format, is_flag, split_parameter, split_words
from .scaling import ScalingPlan, plan_scaling
from .sizing import GpuPlan, Sizing, plan_gpus
from .templating import PLACEHOLDERS, PlaceholderError, expand, placeholders_in, prepare
from .upgrade import UpdatePolicy, plan_update

if TYPE_CHECKING:
    from ..estimate.facts import ModelLookup

MAIN_PORT = "http"
DEFAULT_HEALTH_CHECK_PATH = "/v1/models"  # GPUStack's documented default
DEFAULT_SHM_SIZE = 10 * GIB  # GPUStack's default (GPUSTACK_MODEL_RUNTIME_SHM_SIZE_GIB)
MIN_MEMORY_MIB = 10  # Nomad's MinResources: a task below it is refused
_GLOB = re.compile(r"[*?\[]")
_SOURCE_FIELD = {  # the field each source needs
    "huggingface": "huggingface_repo_id",
    "model_scope": "model_scope_model_id",
    "local_path": "local_path",
}

# What the download task takes from the merged env: the hub's address and timeouts, proxies, pip's index.
# Nothing else: HF_HUB_OFFLINE=1 is meant for the engine and would stop the download, and a hub token only
# reaches the download through nomad.token_variable, never from env (which is written into the job).
_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")
DOWNLOAD_ENV = {
    "huggingface": ("HF_ENDPOINT", "HF_HUB_DOWNLOAD_TIMEOUT", "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DISABLE_XET"),
    "model_scope": ("MODELSCOPE_DOMAIN",),
}
DOWNLOAD_ENV_ANY_SOURCE = (
    *_PROXY_ENV, *(name.lower() for name in _PROXY_ENV), "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST",
)  # fmt: skip


@dataclass(frozen=True)
class Download:
    """The prestart task that fetches the weights from a hub into the models volume."""

    directory: str  # where the repository goes, inside the task
    image: str  # the downloader's image
    token_variable: str | None  # the Nomad Variable that holds the hub token; None: download anonymously
    env: dict[str, str] = field(default_factory=dict)  # what the download needs of the merged env (DOWNLOAD_ENV)


@dataclass(frozen=True)
class Weights:
    """Where the model comes from and where the task finds it."""

    source: str | None  # huggingface | model_scope | local_path | None (image brings its own model)
    repo: str | None = None
    file: str | None = None
    path: str = ""  # the value of {{model_path}} inside the task
    ref: str = ""  # what the model is, for labels: repo[/file], or local_path as written; "" for none
    mount: str | None = None  # where the models host volume is mounted; None when the driver cannot mount one
    volume: str | None = None  # the Nomad host volume mounted at `mount`
    download: Download | None = None  # None: nothing to download (local path, or the image's own model)


@dataclass(frozen=True)
class Resources:
    """What each replica's main task reserves on its node, in the units Nomad takes."""

    cpu: int  # MHz
    memory_mib: int
    memory_max_mib: int | None  # None: no memory oversubscription
    gpus: int  # accelerators per replica; 0 runs on the CPU
    gpu_memory: int | None  # bytes each accelerator must have at least; None: any
    gpu_model: str | None
    shm_size: int | None  # bytes of /dev/shm; None for drivers other than docker


@dataclass(frozen=True)
class Placement:
    """How many replicas run, and where the scheduler may put them."""

    replicas: int
    strategy: Literal["spread", "binpack"]
    datacenters: tuple[str, ...]  # empty: leave Nomad's default (every datacenter)
    namespace: str | None
    region: str | None
    node_pool: str | None
    priority: int | None  # None: Nomad's default
    worker_selector: dict[str, str]  # node meta that must match
    platform: str | None  # CPU architecture the image is built for; None: any


@dataclass(frozen=True)
class ServiceSettings:
    """How the model's endpoint is registered and health-checked (durations in nanoseconds)."""

    provider: Literal["consul", "nomad"]
    tags: tuple[str, ...]  # the deployment's own tags, added after those nomadgs writes
    health_check_path: str | None  # None: no HTTP check
    check_interval: int
    check_timeout: int


@dataclass(frozen=True)
class MetricsPlan:
    """Where the engine serves its Prometheus metrics: the service says so in its tags and meta."""

    path: str
    port: str  # the port label: MAIN_PORT, or one of the backend's nomad.ports
    flag_added: str | None  # the switch nomadgs added to the command to turn them on; None: none was needed


@dataclass(frozen=True)
class Lifecycle:
    """Deadlines and restart behaviour of a replica (durations in nanoseconds)."""

    startup_timeout: int  # until a new replica must be healthy: check grace and healthy deadline
    image_pull_timeout: int
    shutdown_delay: int  # between leaving Consul and the engine's stop: in-flight requests finish
    restart_on_error: bool


@dataclass(frozen=True)
class Resolved:
    """Everything decided about one deployment, ready to become a Nomad job.

    The compiler reads only this: every default is applied and every value is in its final unit.
    """

    model_name: str  # the deployment's name, as GPUStack knows the model
    job_id: str
    service_name: str
    backend_name: str
    version: str | None
    framework: Framework
    driver: str
    image: str | None
    command: str | None  # exec/raw_exec program
    entrypoint: tuple[str, ...]
    args: tuple[str, ...]
    env: dict[str, str]
    weights: Weights
    resources: Resources
    placement: Placement
    service: ServiceSettings
    lifecycle: Lifecycle
    update: UpdatePolicy  # how a changed deployment replaces its replicas (compile.upgrade)
    extras: NomadExtras
    templates: tuple[TemplateFile, ...] = ()
    description: str | None = None
    categories: tuple[str, ...] = ()
    meta: dict[str, str] = field(default_factory=dict)  # the deployment's own job meta, as text
    warnings: tuple[str, ...] = field(default=())
    sizing: Sizing | None = None  # None: no estimate was made (no model metadata given, or no GPUs)
    metrics: MetricsPlan | None = None  # None: the engine serves no Prometheus metrics that nomadgs knows of
    notes: tuple[str, ...] = ()  # what nomadgs did that the files do not say (a flag it added), for render/validate
    distribution: Distribution | None = None  # None: each replica on one node (nomad.nodes: 1)
    scaling: ScalingPlan | None = None  # None: no nomad.scaling (the count is replicas, nothing scales it)


def nomad_name(name: str) -> str:
    """A model name made valid as a Nomad job ID and a Consul/Nomad service name (RFC 1123, <= 63)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower())
    slug = re.sub(r"-{2,}", "-", slug).strip("-")
    return slug[:63].rstrip("-")


def version_sort_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order of version keys: 0.10.0 > 0.9.1, v1-cuda > v1-cpu; numbers sort below words."""
    parts = re.findall(r"\d+|[A-Za-z]+", version)
    return tuple((1, int(p)) if p.isdigit() else (0, p.lower()) for p in parts)


def resolve_version(backend: Backend, requested: str | None) -> str | None:
    """GPUStack's rule: the requested version (None or "" is GPUStack's "Auto"), else `default_version`, else
    the newest version key; the choice skips `disabled_versions`, as GPUStack's deploy dropdown does."""
    versions = backend.versions
    if requested:
        return requested if requested in versions else None
    if backend.default_version in versions and not backend.disabled(backend.default_version or ""):
        return backend.default_version
    enabled = [v for v in versions if not backend.disabled(v)]
    return max(enabled, key=version_sort_key) if enabled else None


def _platform_from_image(image: str | None) -> str | None:
    """Images tagged for one architecture (`...-aarch64`, `...-arm64`) only run there."""
    if not image or ":" not in image.rsplit("/", 1)[-1]:
        return None
    tag = image.rsplit(":", 1)[-1].lower()
    if re.search(r"(^|[-_.])(aarch64|arm64)($|[-_.])", tag):
        return "arm64"
    if re.search(r"(^|[-_.])(x86_64|amd64)($|[-_.])", tag):
        return "amd64"
    return None


def _meta_text(value: Any) -> str:
    """Nomad meta values are strings: other YAML values (numbers, lists, ...) are kept as JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


# --- the stages of `resolve`: each returns a small value, `_assemble` makes them one `Resolved` --------------
# (NamedTuples: one of each is made on every compile, and a tuple is cheaper to make than a frozen dataclass)


class BackendChoice(NamedTuple):
    """The backend, its version and that version's settings."""

    backend: Sourced[Backend] | None  # None: the built-in Custom backend, which has no catalog entry
    name: str  # the backend's name as the catalog spells it (CUSTOM for the built-in)
    version: str | None
    config: VersionConfig
    warnings: tuple[str, ...] = ()


class Runtime(NamedTuple):
    """How the task runs: the Nomad extras of backend and version, the task driver, the framework."""

    extras: NomadExtras
    driver: str
    framework: Framework


class RunCommand(NamedTuple):
    """The run command's text and where it is written (the deployment's override, the version's, the backend's)."""

    template: str
    origin: Sourced[Deployment] | Sourced[Backend]
    path: Path


class CommandLine(NamedTuple):
    """What the task runs: an image (docker) or a program (exec drivers), its entrypoint and arguments."""

    image: str | None
    command: str | None  # exec/raw_exec program
    entrypoint: tuple[str, ...]
    args: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def merged_env(choice: BackendChoice, deployment: Deployment) -> dict[str, str]:
    """The task's env as GPUStack merges it: the backend's default_env, the version's env, the deployment's."""
    env: dict[str, str] = {}
    if choice.backend is not None:
        env.update(choice.backend.spec.default_env or {})
    env.update(choice.config.env or {})
    env.update(deployment.env or {})
    return env


def with_download_env(weights: Weights, env: dict[str, str]) -> Weights:
    """The weights, their download given what it needs of the merged env (`DOWNLOAD_ENV`), nothing else."""
    if weights.download is None or weights.source is None:
        return weights
    wanted = (*DOWNLOAD_ENV.get(weights.source, ()), *DOWNLOAD_ENV_ANY_SOURCE)
    download = replace(weights.download, env={name: env[name] for name in wanted if name in env})
    return replace(weights, download=download)


def placeholder_values(weights: Weights, model_name: str, gpus: int) -> dict[str, str]:
    """What GPUStack's placeholders stand for in the task's command line."""
    values = {
        "model_path": weights.path,
        "port": f"${{NOMAD_PORT_{MAIN_PORT}}}",
        "worker_ip": f"${{NOMAD_IP_{MAIN_PORT}}}",
        "model_name": model_name,
        "gpu_count": str(gpus),
        # Inside the container the reserved accelerators are numbered from 0.
        "gpu_ids": ",".join(str(i) for i in range(gpus)),
    }
    assert tuple(values) == PLACEHOLDERS
    return values


def expand_templates(extras: NomadExtras, values: dict[str, str], env: dict[str, str]) -> tuple[TemplateFile, ...]:
    """The backend's template files with the placeholders filled; the port and address are read by Nomad's
    template engine when it renders the file, everything else between double braces is left to it."""
    template_values = {
        **values,
        "port": f'{{{{ env "NOMAD_PORT_{MAIN_PORT}" }}}}',
        "worker_ip": f'{{{{ env "NOMAD_IP_{MAIN_PORT}" }}}}',
    }
    return tuple(
        t.model_copy(update={"data": expand(t.data, template_values, env, strict=False)})
        for t in extras.templates or []
    )


def _setup_warnings(runtime: Runtime, nomad: DeploymentNomad) -> list[str]:
    """Options that compile but that the cluster ignores or refuses."""
    warnings = [
        f"docker option {mode} fails on Nomad >= 2.0.4 unless the client's docker plugin allows it "
        "(allowed_modes); prefer shm_size over ipc_mode"
        for mode in sorted(LOCKED_DOWN_MODES & set(runtime.extras.docker or {}))
    ]
    framework = runtime.framework
    for key in ("gpu_memory", "gpu_model"):
        if getattr(nomad, key) and not framework.device_plugin:
            warnings.append(
                f"nomad.{key} is only enforced for frameworks with a Nomad device plugin (cuda), "
                f"not {framework.name}: the job does not use it"
            )
    return warnings


def collect_warnings(
    d: Deployment,
    choice: BackendChoice,
    runtime: Runtime,
    env: dict[str, str],
    weights: Weights,
    gpus: GpuPlan,
    command: CommandLine,
    health_path: str | None,
    templates: tuple[TemplateFile, ...],
) -> tuple[str, ...]:
    """Every stage's warnings, in the order the stages run, and those about the whole (the port, the setup)."""
    port = hazards.port_unused(
        [*command.args, *command.entrypoint, command.command or "", *(t.data for t in templates), *env.values()],
        health_check=health_path is not None,
    )
    return (
        *choice.warnings,
        *hazards.secrets_in(env, download=weights.download is not None),
        *gpus.warnings,
        *command.warnings,
        *((port,) if port else ()),
        *_setup_warnings(runtime, d.nomad),
    )


class _Resolver:
    def __init__(self, deployment: Sourced[Deployment], catalog: Catalog, model: ModelLookup | None) -> None:
        self.sourced = deployment
        self.d = deployment.spec
        self.catalog = catalog
        self.model = model

    def fail(self, path: Path, message: str, hint: str | None = None) -> InputError:
        return self.sourced.error(path, message, hint=hint)

    # --- backend, version, framework --------------------------------------------------------------

    def backend(self) -> Sourced[Backend] | None:
        d = self.d
        name = d.backend
        if name is None:
            # GPUStack: no backend means Custom for GGUF files, vLLM otherwise.
            name = CUSTOM if (d.model_file or d.local_path or "").lower().endswith(".gguf") else "vLLM"
        if name.lower() == CUSTOM.lower() and self.catalog.find(name) is None:
            return None
        found = self.catalog.find(name)
        if found is None:
            guess = self.catalog.closest(name)
            hint = f"did you mean '{guess}'?" if guess else "known backends: " + ", ".join(self.catalog.names)
            raise self.fail(("backend",), f"unknown backend '{name}'", hint + " (see `nomadgs backends list`)")
        return found

    def version(self, backend: Sourced[Backend]) -> tuple[str, tuple[str, ...]]:
        """The version to run, and the warning when it is one of the backend's disabled versions."""
        spec = backend.spec
        if not spec.versions:
            raise backend.error(("version_configs",), f"backend '{spec.backend_name}' defines no versions")
        requested = self.d.backend_version
        chosen = resolve_version(spec, requested)
        if chosen is None and not requested:
            raise self.fail(
                ("backend",),
                f"every version of backend '{spec.backend_name}' is in its disabled_versions",
                "name one with backend_version to use it anyway, or enable one in the backend file",
            )
        if chosen is None:
            hint = suggestion(requested or "", spec.versions)
            raise self.fail(
                ("backend_version",),
                f"backend '{spec.backend_name}' has no version '{requested or ''}'",
                hint or "versions: " + ", ".join(spec.versions),
            )
        if not spec.disabled(chosen):
            return chosen, ()
        return chosen, (
            f"backend_version '{chosen}' is one of {spec.backend_name}'s disabled_versions (hidden from "
            "GPUStack's deploy list, e.g. its image is not synced here); it is used as asked",
        )

    def choice(self) -> BackendChoice:
        """The backend and its version."""
        backend = self.backend()
        if backend is None:
            return BackendChoice(None, CUSTOM, None, VersionConfig())
        version, warnings = self.version(backend)
        return BackendChoice(backend, backend.spec.backend_name, version, backend.spec.versions[version], warnings)

    def framework(self, backend: Sourced[Backend] | None, version: str | None, config: VersionConfig) -> Framework:
        wanted = self.d.nomad.framework
        if wanted is not None and wanted.lower() not in FRAMEWORKS:
            raise self.fail(("nomad", "framework"), f"unknown framework '{wanted}'", suggestion(wanted, FRAMEWORKS))
        if backend is None:  # Custom: the deployment says, or GPUs imply CUDA
            name = wanted or ("cuda" if self.d.nomad.gpus else "cpu")  # "auto" asks for GPUs too
            return FRAMEWORKS[name.lower()]
        available = config.frameworks
        if not available:
            raise backend.error(
                ("version_configs", version or ""),
                f"version '{version}' has no custom_framework",
                hint="add custom_framework: one of " + ", ".join(FRAMEWORKS),
            )
        if wanted is not None:
            if wanted.lower() not in available:
                raise self.fail(
                    ("nomad", "framework"),
                    f"version '{version}' of {backend.spec.backend_name} runs on {', '.join(available)}, not {wanted}",
                    "pick a backend_version built for this framework",
                )
            return FRAMEWORKS[wanted.lower()]
        return FRAMEWORKS[available[0]]

    def gpus(self, framework: Framework) -> int | None:
        """The GPUs per replica; None: `auto`, left to the estimate."""
        requested = self.d.nomad.gpus
        if requested == AUTO:
            return None if framework.uses_gpus else 0
        if not framework.uses_gpus:
            if requested:
                raise self.fail(
                    ("nomad", "gpus"),
                    f"this version runs on the CPU but {requested} GPU(s) were requested",
                    "remove nomad.gpus, or choose a GPU version with backend_version",
                )
            return 0
        if requested == 0:
            raise self.fail(
                ("nomad", "gpus"),
                f"framework {framework.name} needs at least one accelerator",
                "choose a CPU version with backend_version to run without GPUs",
            )
        return requested if isinstance(requested, int) else 1

    def nodes(self, choice: BackendChoice, runtime: Runtime) -> int | None:
        """The nodes per replica; None: `auto`, left to the estimate, which it can decide only with the GPUs
        (`gpus: auto`) and a backend that starts its engine across nodes."""
        nodes = self.d.nomad.nodes
        if nodes != AUTO:
            return nodes if isinstance(nodes, int) else 1
        if self.d.nomad.gpus != AUTO:
            raise self.fail(
                ("nomad", "nodes"),
                "nodes: auto chooses the nodes and the GPUs on each together, and gpus is not auto",
                "set gpus: auto as well, or write the number of nodes (nodes: 2)",
            )
        if runtime.extras.distributed is None or choice.backend is None:
            raise self.fail(
                ("nomad", "nodes"),
                f"nodes: auto may spread a replica over several nodes, and {choice.name} does not say how its engine "
                "starts across nodes: its backend has no nomad.distributed block",
                "use nodes: 1, a backend with one (the built-in vLLM, SGLang, llama.cpp), or add nomad.distributed "
                "to the backend file",
            )
        return None

    def runtime(self, choice: BackendChoice) -> Runtime:
        """The Nomad extras (the version's over the backend's), the driver, the framework."""
        backend, config = choice.backend, choice.config
        base_extras = backend.spec.nomad if backend is not None else None
        extras = config.nomad.merged_over(base_extras) if config.nomad else (base_extras or NomadExtras())
        driver = extras.driver or "docker"
        if extras.docker and driver != "docker":
            assert backend is not None
            raise backend.error(("nomad", "docker"), f"docker options are set but the driver is {driver}")
        return Runtime(extras, driver, self.framework(backend, choice.version, config))

    # --- model weights ---------------------------------------------------------------------------------

    def weights(self, driver: str) -> Weights:
        """Where the model comes from, and where the task finds it."""
        d = self.d
        source = d.model_source
        if source is not None and not getattr(d, _SOURCE_FIELD[source]):
            raise self.fail(("source",), f"source '{source}' needs {_SOURCE_FIELD[source]}")
        if source is None:
            return Weights(source=None)
        if source == "local_path":
            return self.local_weights(driver)
        return self.hub_weights(source, driver)

    def local_weights(self, driver: str) -> Weights:
        d = self.d
        mount = d.nomad.models_mount
        local_path = d.local_path
        assert local_path is not None
        if driver not in MOUNTS_VOLUMES:
            if not local_path.startswith("/"):
                raise self.fail(("local_path",), f"the {driver} driver needs an absolute local_path on the node")
            return Weights("local_path", path=local_path, ref=local_path)
        path = posixpath.normpath(posixpath.join(mount, local_path))
        if path != mount and not path.startswith(mount.rstrip("/") + "/"):
            # An absolute path names the host's folder, a fair example of models_mount; `..` names none.
            hint = (
                f"give a path relative to the volume, or set nomad.models_mount to the volume's host path "
                f"(e.g. {posixpath.dirname(local_path)}) so paths stay the same inside the task"
                if local_path.startswith("/")
                else "a relative local_path is read inside the volume: leave out the '..' that leads out of it"
            )
            raise self.fail(
                ("local_path",), f"'{local_path}' is outside the models volume, which is mounted at {mount}", hint
            )
        return Weights("local_path", path=path, ref=local_path, mount=mount, volume=d.nomad.models_volume)

    def hub_weights(self, source: str, driver: str) -> Weights:
        d = self.d
        mount = d.nomad.models_mount
        repo = d.huggingface_repo_id if source == "huggingface" else d.model_scope_model_id
        assert repo is not None
        file_field = "huggingface_filename" if source == "huggingface" else "model_scope_file_path"
        file = d.model_file
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*", repo):
            raise self.fail((_SOURCE_FIELD[source],), f"'{repo}' is not a repository id", "write it as owner/name")
        if file is not None and (_GLOB.search(file) or file.startswith("/") or ".." in file.split("/")):
            raise self.fail(
                (file_field,),
                f"'{file}' must name one file of the repository exactly",
                "patterns are not supported: write the full file name, e.g. model-Q4_K_M.gguf",
            )
        if driver not in ("docker",):
            raise self.fail(
                ("source",),
                f"downloading from {source} needs the docker driver; this backend uses {driver}",
                "download the model beforehand and use source: local_path",
            )
        directory = posixpath.join(mount, source, repo)
        return Weights(
            source,
            repo=repo,
            file=file,
            path=posixpath.join(directory, file) if file else directory,
            ref=f"{repo}/{file}" if file else repo,
            mount=mount,
            volume=d.nomad.models_volume,
            download=Download(directory, d.nomad.downloader_image, d.nomad.token_variable),
        )

    # --- command line ----------------------------------------------------------------------------------

    def argv(
        self,
        text: str,
        origin: Sourced[Deployment] | Sourced[Backend],
        path: Path,
        values: dict[str, str],
        env: dict[str, str],
    ) -> list[str]:
        try:
            text = prepare(text, values, env)
        except PlaceholderError as exc:
            raise origin.error(path, str(exc), hint=exc.hint) from None
        try:
            tokens = split_words(text)
        except ValueError as exc:
            raise origin.error(path, f"cannot split the command: {exc}", hint="check the quotes") from None
        # Split first, then fill in: a value with spaces (a path) stays one argument.
        return [expand(token, values, env) for token in tokens]

    def parameters(self, backend: Sourced[Backend] | None, values: dict[str, str], env: dict[str, str]) -> list[str]:
        """The deployment's backend_parameters as argv, placeholders filled, in the backend's parameter_format."""
        d = self.d
        fmt = backend.spec.parameter_format if backend is not None else None
        out: list[str] = []
        for index, element in enumerate(d.backend_parameters or []):
            try:
                element = prepare(element, values, env)
            except PlaceholderError as exc:
                raise self.fail(("backend_parameters", index), str(exc), exc.hint) from None
            tokens = split_parameter(self.sourced, index, element)
            out.extend(expand(t.replace("{data_dir}", d.nomad.models_mount), values, env) for t in tokens)
        return apply_format(out, fmt)

    def run_command(self, choice: BackendChoice, leader: RunCommand | None = None) -> RunCommand:
        """The deployment's run command, else the distributed leader's (`leader`), else the version's, else
        the backend's default."""
        backend = choice.backend
        if self.d.run_command is not None or backend is None:
            return RunCommand(self.d.run_command or "", self.sourced, ("run_command",))
        if leader is not None:
            return leader
        if choice.config.run_command:
            path: Path = ("version_configs", choice.version or "", "run_command")
            return RunCommand(choice.config.run_command, backend, path)
        return RunCommand(backend.spec.default_run_command or "", backend, ("default_run_command",))

    def entrypoint(self, choice: BackendChoice, values: dict[str, str], env: dict[str, str]) -> list[str]:
        """The version's entrypoint, else the backend's default; none for the built-in Custom backend."""
        backend, config = choice.backend, choice.config
        if backend is None:
            return []
        if config.entrypoint:
            path: Path = ("version_configs", choice.version or "", "entrypoint")
            return self.argv(config.entrypoint, backend, path, values, env)
        if backend.spec.default_entrypoint:
            return self.argv(backend.spec.default_entrypoint, backend, ("default_entrypoint",), values, env)
        return []

    def check_image(self, choice: BackendChoice, image: str | None) -> None:
        """The docker driver needs an image: the deployment's image_name, else the version's."""
        if image:
            return
        if choice.backend is None:
            raise self.fail(("image_name",), "the Custom backend needs image_name in the deployment")
        raise choice.backend.error(
            ("version_configs", choice.version or ""),
            f"version '{choice.version}' of {choice.backend.spec.backend_name} has no image_name",
            hint="add image_name to the version, or set image_name in the deployment",
        )

    def program(
        self,
        choice: BackendChoice,
        runtime: Runtime,
        run: RunCommand,
        entrypoint: list[str],
        args: list[str],
        program: str | None,
        values: dict[str, str],
        env: dict[str, str],
    ) -> tuple[str, list[str]]:
        """What an exec driver runs, and its arguments: nomad.command, else the entrypoint's first word, else the
        run command's (`program`: /opt/llama/llama-server -m {{model_path}} ...)."""
        backend = choice.backend
        assert backend is not None  # the built-in Custom backend runs on docker
        if runtime.extras.command:
            command = self.argv(runtime.extras.command, backend, ("nomad", "command"), values, env)[0]
            return command, [*entrypoint, *args]
        if entrypoint:
            return entrypoint[0], [*entrypoint[1:], *args]
        if program is not None:
            return program, args[1:]
        origin: Sourced[Deployment] | Sourced[Backend] = run.origin if run.template else backend
        raise origin.error(
            run.path if run.template else ("nomad",),
            f"the {runtime.driver} driver needs the program to run",
            hint="start the run command with it (e.g. /opt/llama/llama-server --port {{port}}), "
            "or set the backend's entrypoint or nomad.command",
        )

    def command_line(
        self,
        choice: BackendChoice,
        runtime: Runtime,
        weights: Weights,
        gpus: int,
        values: dict[str, str],
        env: dict[str, str],
        leader: RunCommand | None = None,
    ) -> CommandLine:
        """The image or program, the entrypoint and the arguments, placeholders filled (`values`)."""
        run = self.run_command(choice, leader)
        if "model_path" in placeholders_in(run.template) and weights.source is None:
            raise self.fail(
                ("source",),
                "the run command uses {{model_path}} but the deployment names no model",
                "set huggingface_repo_id, model_scope_model_id or local_path",
            )
        args = self.argv(run.template, run.origin, run.path, values, env)
        entrypoint = self.entrypoint(choice, values, env)
        program = args[0] if args and not is_flag(args[0]) else None  # exec drivers: the run command's first word
        params = self.parameters(choice.backend, values, env)
        warnings = hazards.repeated_flags([*entrypoint, *args], params, model=self.d.name, gpus=gpus)
        args.extend(params)
        image = self.d.image_name or choice.config.image_name
        command: str | None = None
        if runtime.driver == "docker":
            self.check_image(choice, image)
        else:
            command, args = self.program(choice, runtime, run, entrypoint, args, program, values, env)
            entrypoint, image = [], None
        argv = [command, *args] if command else [*entrypoint, *args]
        if shell_warning := hazards.shell_drops_arguments(argv, model_path=weights.path):
            warnings.append(shell_warning)
        return CommandLine(image, command, tuple(entrypoint), tuple(args), tuple(warnings))

    # --- Prometheus metrics -------------------------------------------------------------------------------

    def metrics(
        self, choice: BackendChoice, runtime: Runtime, command: CommandLine
    ) -> tuple[MetricsPlan | None, CommandLine]:
        """Where the engine serves Prometheus metrics (the deployment's nomad.metrics, else the version's or the
        backend's), and the command line with the switch that turns them on, when the engine needs one."""
        setting = self.d.nomad.metrics
        origin: Sourced[Deployment] | Sourced[Backend] = self.sourced
        path: Path = ("nomad", "metrics")
        if setting is None:
            setting = runtime.extras.metrics
            backend = choice.backend
            if setting is None or backend is None:
                return None, command
            origin = backend
            version_nomad = choice.config.nomad
            if version_nomad is not None and version_nomad.metrics is not None:
                path = ("version_configs", choice.version or "", "nomad", "metrics")
        if setting is False:
            return None, command
        port = setting.port or MAIN_PORT
        if port != MAIN_PORT and port not in (runtime.extras.ports or ()):
            ports = ", ".join([MAIN_PORT, *(runtime.extras.ports or ())])
            raise origin.error(
                (*path, "port"),
                f"metrics are on port '{port}', which the backend does not declare",
                hint=f"name one of {ports}, or add '{port}' to the backend's nomad.ports",
            )
        flag = setting.flag
        if flag is None or _has_flag([*command.entrypoint, *command.args], flag):
            return MetricsPlan(setting.path, port, None), command
        argv = [command.command] if command.command else list(command.entrypoint)
        if hazards.shell_drops_arguments([*argv, *command.args, flag], model_path=None):
            warning = (
                f"the engine serves Prometheus metrics only with {flag}, which nomadgs cannot add: the command "
                f"runs through a shell that would not pass it on; add {flag} inside the shell's command (the "
                "service then gets its metrics tag), or set nomad.metrics: false"
            )
            return None, command._replace(warnings=(*command.warnings, warning))
        return MetricsPlan(setting.path, port, flag), command._replace(args=(*command.args, flag))

    # --- health check, shared memory, Nomad's rules ------------------------------------------------------

    def health_path(self, choice: BackendChoice, extras: NomadExtras) -> str | None:
        """The path the service's HTTP check asks; None when the check is switched off."""
        d = self.d
        backend_path = choice.backend.spec.health_check_path if choice.backend is not None else None
        path = (d.env or {}).get("GPUSTACK_MODEL_HEALTH_CHECK_PATH") or backend_path or DEFAULT_HEALTH_CHECK_PATH
        enabled = d.nomad.health_check if d.nomad.health_check is not None else extras.health_check
        if enabled is False:
            return None
        if not path.startswith("/"):
            raise self.fail(("env", "GPUSTACK_MODEL_HEALTH_CHECK_PATH"), "the health check path must start with '/'")
        return path

    def shm_size(self, driver: str) -> int | None:
        """Bytes of /dev/shm: nomad.shm_size, else GPUStack's env or default; None for drivers other than docker."""
        if driver != "docker":
            return None
        d = self.d
        if d.nomad.shm_size is not None:
            return d.nomad.shm_size
        gib = (d.env or {}).get("GPUSTACK_MODEL_RUNTIME_SHM_SIZE_GIB")
        try:
            shm_size = parse_size(f"{gib} GiB") if gib else DEFAULT_SHM_SIZE
        except ValueError:
            raise self.fail(("env", "GPUSTACK_MODEL_RUNTIME_SHM_SIZE_GIB"), f"'{gib}' is not a number of GiB") from None
        if shm_size > MAX_MEMORY:  # the bound of nomad.shm_size: Docker's shm_size is int64 bytes
            raise self.fail(
                ("env", "GPUSTACK_MODEL_RUNTIME_SHM_SIZE_GIB"),
                f"{gib} GiB is more than any node has",
                "write a number of GiB up to 1048576 (1 PiB), e.g. 16",
            )
        return shm_size

    def nomad_rules(self) -> UpdatePolicy:
        """Nomad's own job validation, for the values the deployment sets: refused here, not at submit time.
        Returns the update policy, whose deadlines are among those rules."""
        nomad = self.d.nomad
        if nomad.check_timeout > nomad.check_interval:
            raise self.fail(("nomad", "check_timeout"), "check_timeout must not be longer than check_interval")
        for key in ("check_interval", "check_timeout"):
            if getattr(nomad, key) < SECOND:
                raise self.fail(("nomad", key), f"{key} must be at least 1s (Nomad's minimum)")
        update = plan_update(self.sourced)
        memory = to_mib(nomad.memory)
        if memory < MIN_MEMORY_MIB:
            raise self.fail(
                ("nomad", "memory"),
                f"{human_size(nomad.memory)} is below Nomad's minimum of {MIN_MEMORY_MIB} MiB",
                "a model server needs GiBs: write e.g. '16 GiB'",
            )
        if nomad.memory_max is not None and to_mib(nomad.memory_max) < memory:
            raise self.fail(
                ("nomad", "memory_max"),
                f"memory_max ({human_size(nomad.memory_max)}) is below memory ({human_size(nomad.memory)}); "
                "Nomad refuses such a job",
                "memory_max is the limit a replica may grow to: make it at least memory, or leave it out",
            )
        for index, datacenter in enumerate(nomad.datacenters or []):
            if not datacenter.strip():
                raise self.fail(("nomad", "datacenters", index), "a datacenter name cannot be empty")
        return update

    def run(self) -> Resolved:
        choice = self.choice()
        runtime = self.runtime(choice)
        weights = self.weights(runtime.driver)
        env = merged_env(choice, self.d)
        weights = with_download_env(weights, env)
        nodes = self.nodes(choice, runtime)
        gpus = plan_gpus(
            self.sourced, runtime.framework, self.gpus(runtime.framework), self.model, choice.name, env, nodes
        )
        values = placeholder_values(weights, self.d.name, gpus.gpus)
        distribution, leader = self.distribution(choice, runtime, weights, values, env, gpus.nodes)
        if distribution is not None:
            values = {**values, **leader_values(distribution.nodes, MAIN_PORT)}
        command = self.command_line(choice, runtime, weights, gpus.gpus, values, env, leader)
        metrics, command = self.metrics(choice, runtime, command)
        health_path = self.health_path(choice, runtime.extras)
        templates = expand_templates(runtime.extras, values, env)
        shm_size = self.shm_size(runtime.driver)
        update = self.nomad_rules()
        argv = [*command.entrypoint, *command.args]
        scaling = plan_scaling(self.sourced, choice.name, argv, metrics=metrics is not None)
        if scaling is not None and distribution is not None:
            raise self.fail(
                ("nomad", "scaling"),
                "a replica over several nodes cannot be scaled by count: each replica's worker groups are written "
                "into the job, and the Autoscaler and the gateway change the leaders' count only",
                "leave out nomad.scaling and set replicas, or use nodes: 1",
            )
        warnings = collect_warnings(self.d, choice, runtime, env, weights, gpus, command, health_path, templates)
        return _assemble(
            self.d,
            choice,
            runtime,
            env=env,
            weights=weights,
            gpus=gpus,
            command=command,
            health_path=health_path,
            templates=templates,
            shm_size=shm_size,
            update=update,
            warnings=warnings,
            metrics=metrics,
            distribution=distribution,
            scaling=scaling,
        )

    # --- several nodes per replica ------------------------------------------------------------------------

    def distribution(
        self,
        choice: BackendChoice,
        runtime: Runtime,
        weights: Weights,
        values: dict[str, str],
        env: dict[str, str],
        nodes: int,
    ) -> tuple[Distribution | None, RunCommand | None]:
        """For `nodes` > 1 (nomad.nodes, or what `auto` chose): the workers' command line and the leader's run
        command (None: the usual one)."""
        if nodes == 1:
            return None, None
        block = runtime.extras.distributed
        backend = choice.backend
        if block is None or backend is None:
            raise self.fail(
                ("nomad", "nodes"),
                f"{choice.name} does not say how its engine starts across nodes: its backend has no "
                "nomad.distributed block",
                "use nodes: 1, a backend with one (the built-in vLLM, SGLang, llama.cpp), or add nomad.distributed "
                "to the backend file",
            )
        if self.d.nomad.service_provider != "consul":
            raise self.fail(
                ("nomad", "service_provider"),
                "the ranks of a replica over several nodes find each other through Consul",
                "use service_provider: consul (the default), or nodes: 1",
            )
        on_version = choice.config.nomad is not None and choice.config.nomad.distributed is not None
        where: Path = ("version_configs", choice.version or "", "nomad", "distributed") if on_version else (
            "nomad", "distributed")  # fmt: skip
        mine = {**values, **worker_values(nodes)}
        args = self.argv(block.worker_command, backend, (*where, "worker_command"), mine, env)
        if block.worker_parameters:
            args.extend(self.parameters(backend, mine, env))
        if block.worker_entrypoint:
            entrypoint = self.argv(block.worker_entrypoint, backend, (*where, "worker_entrypoint"), mine, env)
        else:
            entrypoint = self.entrypoint(choice, mine, env)
        command: str | None = None
        if runtime.driver != "docker":
            words = [*entrypoint, *args]
            command, args, entrypoint = words[0], words[1:], []
        leader = None
        if block.leader_command:
            leader = RunCommand(block.leader_command, backend, (*where, "leader_command"))
        distribution = Distribution(
            nodes=nodes,
            worker_entrypoint=tuple(entrypoint),
            worker_command=command,
            worker_args=tuple(args),
            worker_check=block.worker_check == "tcp",
            worker_weights=bool(weights.path) and any(weights.path in word for word in [*entrypoint, *args]),
        )
        return distribution, leader


def _has_flag(argv: list[str], flag: str) -> bool:
    """Whether `flag` is on the command line already: a word of its own, `flag=value`, or a word of a shell's
    script (`sh -c "llama-server ... --metrics"`)."""
    word = re.compile(rf"(?:^|\s){re.escape(flag)}(?:=|\s|$)")
    return any(word.search(token) for token in argv)


def _nodes_note(d: Deployment, gpus: GpuPlan) -> tuple[str, ...]:
    """What `render` and `validate` say about the nodes `nodes: auto` chose, and why."""
    if d.nomad.nodes != AUTO or gpus.sizing is None or gpus.sizing.auto is None:
        return ()
    return (f"auto: {gpus.nodes} node{'s' if gpus.nodes != 1 else ''} × {gpus.gpus} GPUs: {gpus.sizing.need}",)


def metrics_notes(metrics: MetricsPlan | None, backend: str) -> tuple[str, ...]:
    """What `render` and `validate` say about the metrics switch nomadgs added."""
    if metrics is None or metrics.flag_added is None:
        return ()
    return (
        f"{metrics.flag_added} was added to the command: {backend} serves Prometheus metrics at {metrics.path} "
        "only with it (nomad.metrics: false leaves it out)",
    )


def _assemble(
    d: Deployment,
    choice: BackendChoice,
    runtime: Runtime,
    *,
    env: dict[str, str],
    weights: Weights,
    gpus: GpuPlan,
    command: CommandLine,
    health_path: str | None,
    templates: tuple[TemplateFile, ...],
    shm_size: int | None,
    update: UpdatePolicy,
    warnings: tuple[str, ...],
    metrics: MetricsPlan | None,
    distribution: Distribution | None = None,
    scaling: ScalingPlan | None = None,
) -> Resolved:
    """The stages' values as one `Resolved`, every default applied and every value in its final unit."""
    nomad = d.nomad
    backend = choice.backend
    image = command.image
    return Resolved(
        model_name=d.name,
        job_id=nomad.job_id or nomad_name(d.name),
        service_name=nomad.service_name or nomad_name(d.name),
        backend_name=choice.name,
        version=choice.version,
        framework=runtime.framework,
        driver=runtime.driver,
        image=image,
        command=command.command,
        entrypoint=command.entrypoint,
        args=command.args,
        env=env,
        weights=weights,
        resources=Resources(
            cpu=nomad.cpu,
            memory_mib=to_mib(nomad.memory),
            memory_max_mib=to_mib(nomad.memory_max) if nomad.memory_max else None,
            gpus=gpus.gpus,
            gpu_memory=gpus.gpu_memory,
            gpu_model=nomad.gpu_model,
            shm_size=shm_size,
        ),
        placement=Placement(
            replicas=scaling.count if scaling else d.replicas,
            strategy=d.placement_strategy,
            datacenters=tuple(nomad.datacenters or ()),
            namespace=nomad.namespace,
            region=nomad.region,
            node_pool=nomad.node_pool,
            priority=nomad.priority,
            worker_selector=dict(d.worker_selector or {}),
            platform=runtime.extras.platform or (_platform_from_image(image) if runtime.driver == "docker" else None),
        ),
        service=ServiceSettings(
            provider=nomad.service_provider,
            tags=tuple(nomad.tags or ()),
            health_check_path=health_path,
            check_interval=nomad.check_interval,
            check_timeout=nomad.check_timeout,
        ),
        lifecycle=Lifecycle(
            startup_timeout=nomad.startup_timeout,
            image_pull_timeout=nomad.image_pull_timeout,
            shutdown_delay=nomad.shutdown_delay,
            restart_on_error=d.restart_on_error,
        ),
        update=update,
        extras=runtime.extras,
        templates=templates,
        description=d.description or (backend.spec.description if backend is not None else None),
        categories=tuple(d.categories or ()),
        meta={str(key): _meta_text(value) for key, value in (d.meta or {}).items()},
        warnings=warnings,
        sizing=gpus.sizing,
        metrics=metrics,
        notes=metrics_notes(metrics, choice.name) + (scaling.notes if scaling else ()) + _nodes_note(d, gpus),
        distribution=distribution,
        scaling=scaling,
    )


def backend_and_env(deployment: Sourced[Deployment], catalog: Catalog) -> tuple[str, dict[str, str]]:
    """The backend's name and the task's environment as `resolve` decides them (what the estimate reads)."""
    choice = _Resolver(deployment, catalog, None).choice()
    return choice.name, merged_env(choice, deployment.spec)


def resolve(deployment: Sourced[Deployment], catalog: Catalog, model: ModelLookup | None = None) -> Resolved:
    """Resolve one deployment. Raises InputError pointing at the deployment or backend file.

    `model` is the model's metadata, looked up by the caller (the compiler does no I/O): needed for
    `gpus: auto` and `gpu_memory: auto`, and used to refuse explicit values the engine would not start with.
    None: no lookup was made, and explicit values are taken as they are.
    """
    return _Resolver(deployment, catalog, model).run()
