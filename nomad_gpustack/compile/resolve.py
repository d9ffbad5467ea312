"""Resolve a deployment against the catalog: pick backend, version and framework, build argv and env.

The result, `Resolved`, holds every decision in plain values, so the Nomad compiler only translates.
GPUStack's rules are followed where it has them (version fallback, placeholders, env precedence, default
backend); where it is silent or lenient we refuse ambiguous input with a message that says how to fix it.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from ..durations import SECOND, format_duration
from ..errors import InputError, suggestion
from ..sizes import GIB, human_size, parse_size, to_mib
from ..spec.backend import Backend, NomadExtras, TemplateFile, VersionConfig
from ..spec.base import AUTO, MAX_MEMORY
from ..spec.catalog import CUSTOM, Catalog
from ..spec.deployment import Deployment
from ..spec.specfile import Sourced
from ..spec.yamlsource import Path
from . import hazards
from .drivers import LOCKED_DOWN_MODES, MOUNTS_VOLUMES
from .frameworks import FRAMEWORKS, Framework
from .parameters import apply_format, is_flag, split_words, tokenize
from .templating import PLACEHOLDERS, PlaceholderError, expand, placeholders_in, prepare

if TYPE_CHECKING:
    from ..estimate.facts import ModelLookup

MAIN_PORT = "http"
DEFAULT_HEALTH_CHECK_PATH = "/v1/models"  # GPUStack's documented default
DEFAULT_SHM_SIZE = 10 * GIB  # GPUStack's default (GPUSTACK_MODEL_RUNTIME_SHM_SIZE_GIB)
MIN_MEMORY_MIB = 10  # Nomad's MinResources: a task below it is refused
UPDATE_MIN_HEALTHY = 10 * SECOND  # how long a new replica must stay healthy (the job's Update.MinHealthyTime)
_GLOB = re.compile(r"[*?\[]")

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
class Lifecycle:
    """Deadlines and restart behaviour of a replica (durations in nanoseconds)."""

    startup_timeout: int  # until a new replica must be healthy: check grace and healthy deadline
    image_pull_timeout: int
    restart_on_error: bool


@dataclass(frozen=True)
class Sizing:
    """What the memory estimate said about the replica's GPUs (see nomad_gpustack.estimate)."""

    need: str  # "vLLM needs 17.2 GiB per GPU at --max-model-len 32768 (weights 14.2, KV 2.0, overhead 1.0)"
    gpu_need: int  # bytes each GPU must have for the engine to start
    auto: str | None = None  # why `auto` chose the values it did


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
    extras: NomadExtras
    templates: tuple[TemplateFile, ...] = ()
    description: str | None = None
    categories: tuple[str, ...] = ()
    meta: dict[str, str] = field(default_factory=dict)  # the deployment's own job meta, as text
    warnings: tuple[str, ...] = field(default=())
    sizing: Sizing | None = None  # None: no estimate was made (no model metadata given, or no GPUs)


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


class _Resolver:
    def __init__(self, deployment: Sourced[Deployment], catalog: Catalog, model: ModelLookup | None) -> None:
        self.sourced = deployment
        self.d = deployment.spec
        self.catalog = catalog
        self.model = model
        self.warnings: list[str] = []

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

    def version(self, backend: Sourced[Backend]) -> tuple[str, VersionConfig]:
        spec = backend.spec
        if not spec.versions:
            raise backend.error(("version_configs",), f"backend '{spec.backend_name}' defines no versions")
        chosen = resolve_version(spec, self.d.backend_version)
        if chosen is None and not self.d.backend_version:
            raise self.fail(
                ("backend",),
                f"every version of backend '{spec.backend_name}' is in its disabled_versions",
                "name one with backend_version to use it anyway, or enable one in the backend file",
            )
        if chosen is not None and spec.disabled(chosen):
            self.warnings.append(
                f"backend_version '{chosen}' is one of {spec.backend_name}'s disabled_versions (hidden from "
                "GPUStack's deploy list, e.g. its image is not synced here); it is used as asked"
            )
        if chosen is None:
            requested = self.d.backend_version or ""
            hint = suggestion(requested, spec.versions)
            raise self.fail(
                ("backend_version",),
                f"backend '{spec.backend_name}' has no version '{requested}'",
                hint or "versions: " + ", ".join(spec.versions),
            )
        return chosen, spec.versions[chosen]

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

    # --- GPU memory: the estimate --------------------------------------------------------------------------

    def sizing(
        self, framework: Framework, backend_name: str, env: dict[str, str], gpus: int | None
    ) -> tuple[int, int | None, Sizing | None]:
        """GPUs and GPU memory per replica: `auto` filled in from the estimate, explicit values checked by it."""
        nomad = self.d.nomad
        memory = nomad.gpu_memory
        auto_gpus, auto_memory = gpus is None, memory == AUTO
        stated = memory if isinstance(memory, int) else None
        if not framework.uses_gpus:
            return 0, stated, None
        if not (auto_gpus or auto_memory) and self.model is None:
            return gpus or 1, stated, None  # nothing asked of the estimate, nothing to make one with
        # Imported here: rendering explicit values without model metadata never loads the estimate.
        from ..estimate.engine import engine_settings
        from ..estimate.gpus import KNOWN_GPUS_MIB, known_gpu_memory
        from ..estimate.lookup import NO_METADATA_HINT
        from ..estimate.plan import GpuSize, NoFit, check, choose, estimate

        field_path: Path = ("nomad", "gpus") if auto_gpus else ("nomad", "gpu_memory")
        known = known_gpu_memory(nomad.gpu_model)
        gpu = (
            GpuSize(known, f"nomad.gpu_model {nomad.gpu_model}")
            if known
            else GpuSize(stated, "nomad.gpu_memory")
            if stated
            else None
        )
        if auto_gpus and gpu is None:
            if nomad.gpu_model:
                raise self.fail(
                    ("nomad", "gpu_model"),
                    f"gpus: auto cannot tell the memory of a '{nomad.gpu_model}'",
                    "set nomad.gpu_memory (e.g. 24 GiB), or use a known model: " + ", ".join(KNOWN_GPUS_MIB),
                )
            raise self.fail(
                field_path,
                "gpus: auto needs the GPUs' memory",
                "set nomad.gpu_memory (e.g. 24 GiB) or a nomad.gpu_model with known memory (see `nomadgs estimate`)",
            )
        lookup = self.model
        if lookup is None or lookup.facts is None:
            reason = lookup.reason if lookup is not None and lookup.reason else "no model metadata was looked up"
            if auto_gpus or auto_memory:
                raise self.fail(
                    field_path,
                    f"auto needs the model's metadata, and there is none: {reason}",
                    "give --model PATH (a GGUF file, or a folder with config.json), or set the value yourself",
                )
            if lookup is not None and gpu is not None:
                self.warnings.append(f"cannot check that the model fits its GPUs: {reason} ({NO_METADATA_HINT})")
            return gpus or 1, stated, None
        parameters = [t for element in self.d.backend_parameters or [] for t in _tokens_or_nothing(element)]
        settings = engine_settings(backend_name, parameters, env, self.d.categories or ())
        est = estimate(lookup.facts, settings, gpu)
        if auto_gpus or auto_memory:
            try:
                chosen = choose(est, gpus, auto_gpus, auto_memory)
            except NoFit as exc:
                raise self.fail(
                    field_path, str(exc), "use bigger GPUs, a shorter context, or a smaller model"
                ) from None
            if not auto_gpus and gpu is not None:
                verdict = check(est, chosen.gpus)
                if verdict.refusal:
                    raise self.fail(("nomad", "gpu_model"), verdict.refusal)
            self.warnings.extend(est.warnings)
            memory_out = chosen.gpu_memory if auto_memory else stated
            return chosen.gpus, memory_out, Sizing(est.need(chosen.row), chosen.row.min_gpu_memory, chosen.reason)
        count = gpus or 1
        if gpu is None:
            row = est.row(count)
            self.warnings.extend(est.warnings)
            return count, stated, Sizing(est.need(row), row.min_gpu_memory)
        verdict = check(est, count)
        if verdict.refusal:
            raise self.fail(("nomad", "gpus"), verdict.refusal)
        self.warnings.extend(verdict.warnings)
        return count, stated, Sizing(est.need(verdict.row), verdict.row.min_gpu_memory)

    # --- model weights ---------------------------------------------------------------------------------

    def weights(self, driver: str) -> Weights:
        d = self.d
        mount = d.nomad.models_mount
        source = d.model_source
        needed = {
            "huggingface": "huggingface_repo_id",
            "model_scope": "model_scope_model_id",
            "local_path": "local_path",
        }
        if source is not None and not getattr(d, needed[source]):
            raise self.fail(("source",), f"source '{source}' needs {needed[source]}")
        if source is None:
            return Weights(source=None)
        if source == "local_path":
            assert d.local_path is not None
            if driver not in MOUNTS_VOLUMES:
                if not d.local_path.startswith("/"):
                    raise self.fail(("local_path",), f"the {driver} driver needs an absolute local_path on the node")
                return Weights(source, path=d.local_path, ref=d.local_path)
            path = posixpath.normpath(posixpath.join(mount, d.local_path))
            if path != mount and not path.startswith(mount.rstrip("/") + "/"):
                # An absolute path names the host's folder, a fair example of models_mount; `..` names none.
                hint = (
                    f"give a path relative to the volume, or set nomad.models_mount to the volume's host path "
                    f"(e.g. {posixpath.dirname(d.local_path)}) so paths stay the same inside the task"
                    if d.local_path.startswith("/")
                    else "a relative local_path is read inside the volume: leave out the '..' that leads out of it"
                )
                raise self.fail(
                    ("local_path",), f"'{d.local_path}' is outside the models volume, which is mounted at {mount}", hint
                )
            return Weights(source, path=path, ref=d.local_path, mount=mount, volume=d.nomad.models_volume)
        repo = d.huggingface_repo_id if source == "huggingface" else d.model_scope_model_id
        assert repo is not None
        file_field = "huggingface_filename" if source == "huggingface" else "model_scope_file_path"
        file = d.model_file
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*", repo):
            raise self.fail((needed[source],), f"'{repo}' is not a repository id", "write it as owner/name")
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
        parameters = d.backend_parameters or []
        fmt = backend.spec.parameter_format if backend is not None else None
        out: list[str] = []
        for index, element in enumerate(parameters):
            try:
                element = prepare(element, values, env)
            except PlaceholderError as exc:
                raise self.fail(("backend_parameters", index), str(exc), exc.hint) from None
            try:
                tokens = tokenize(element)
            except ValueError as exc:
                raise self.fail(
                    ("backend_parameters", index), f"cannot split the parameter: {exc}", "check the quotes"
                ) from None
            out.extend(expand(t.replace("{data_dir}", d.nomad.models_mount), values, env) for t in tokens)
        return apply_format(out, fmt)

    def nomad_rules(self) -> None:
        """Nomad's own job validation, for the values the deployment sets: refused here, not at submit time."""
        nomad = self.d.nomad
        if nomad.check_timeout > nomad.check_interval:
            raise self.fail(("nomad", "check_timeout"), "check_timeout must not be longer than check_interval")
        for key in ("check_interval", "check_timeout"):
            if getattr(nomad, key) < SECOND:
                raise self.fail(("nomad", key), f"{key} must be at least 1s (Nomad's minimum)")
        if nomad.startup_timeout <= UPDATE_MIN_HEALTHY:
            raise self.fail(
                ("nomad", "startup_timeout"),
                f"startup_timeout must be longer than {format_duration(UPDATE_MIN_HEALTHY)}, the time a replica "
                "must stay healthy (Nomad needs min_healthy_time < healthy_deadline)",
                "loading a model takes minutes: the default is 30m",
            )
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

    def run(self) -> Resolved:
        d = self.d
        backend = self.backend()
        version: str | None = None
        config = VersionConfig()
        if backend is not None:
            version, config = self.version(backend)
        base_extras = backend.spec.nomad if backend is not None else None
        extras = config.nomad.merged_over(base_extras) if config.nomad else (base_extras or NomadExtras())
        driver = extras.driver or "docker"
        if extras.docker and driver != "docker":
            assert backend is not None
            raise backend.error(("nomad", "docker"), f"docker options are set but the driver is {driver}")
        framework = self.framework(backend, version, config)
        weights = self.weights(driver)

        env: dict[str, str] = {}
        if backend is not None:
            env.update(backend.spec.default_env or {})
        env.update(config.env or {})
        env.update(d.env or {})
        if weights.download is not None and weights.source is not None:
            wanted = (*DOWNLOAD_ENV.get(weights.source, ()), *DOWNLOAD_ENV_ANY_SOURCE)
            download_env = {name: env[name] for name in wanted if name in env}
            weights = replace(weights, download=replace(weights.download, env=download_env))
        self.warnings.extend(hazards.secrets_in(env, download=weights.download is not None))
        backend_name = backend.spec.backend_name if backend is not None else CUSTOM
        gpus, gpu_memory, sizing = self.sizing(framework, backend_name, env, self.gpus(framework))

        values = {
            "model_path": weights.path,
            "port": f"${{NOMAD_PORT_{MAIN_PORT}}}",
            "worker_ip": f"${{NOMAD_IP_{MAIN_PORT}}}",
            "model_name": d.name,
            "gpu_count": str(gpus),
            # Inside the container the reserved accelerators are numbered from 0.
            "gpu_ids": ",".join(str(i) for i in range(gpus)),
        }
        assert tuple(values) == PLACEHOLDERS

        # Run command: the deployment's override, else the version's, else the backend's default.
        command_origin: Sourced[Deployment] | Sourced[Backend] = self.sourced
        command_path: Path = ("run_command",)
        template = d.run_command
        if template is None and backend is not None:
            command_origin = backend
            if config.run_command:
                template, command_path = config.run_command, ("version_configs", version or "", "run_command")
            else:
                template, command_path = backend.spec.default_run_command, ("default_run_command",)
        template = template or ""
        if "model_path" in placeholders_in(template) and weights.source is None:
            raise self.fail(
                ("source",),
                "the run command uses {{model_path}} but the deployment names no model",
                "set huggingface_repo_id, model_scope_model_id or local_path",
            )
        args = self.argv(template, command_origin, command_path, values, env)

        entrypoint: list[str] = []
        if backend is not None:
            if config.entrypoint:
                entrypoint = self.argv(
                    config.entrypoint, backend, ("version_configs", version or "", "entrypoint"), values, env
                )
            elif backend.spec.default_entrypoint:
                entrypoint = self.argv(backend.spec.default_entrypoint, backend, ("default_entrypoint",), values, env)

        program = args[0] if args and not is_flag(args[0]) else None  # exec drivers: the run command's first word
        params = self.parameters(backend, values, env)
        self.warnings.extend(hazards.repeated_flags([*entrypoint, *args], params, model=d.name, gpus=gpus))
        args.extend(params)

        image = d.image_name or config.image_name
        command: str | None = None
        if driver == "docker":
            if not image:
                if backend is None:
                    raise self.fail(("image_name",), "the Custom backend needs image_name in the deployment")
                raise backend.error(
                    ("version_configs", version or ""),
                    f"version '{version}' of {backend.spec.backend_name} has no image_name",
                    hint="add image_name to the version, or set image_name in the deployment",
                )
        else:
            assert backend is not None
            if extras.command:
                command = self.argv(extras.command, backend, ("nomad", "command"), values, env)[0]
            elif entrypoint:
                command, entrypoint = entrypoint[0], entrypoint[1:]
            elif program is not None:
                command, args = program, args[1:]  # run_command: /opt/llama/llama-server -m {{model_path}} ...
            else:
                origin: Sourced[Deployment] | Sourced[Backend] = command_origin if template else backend
                raise origin.error(
                    command_path if template else ("nomad",),
                    f"the {driver} driver needs the program to run",
                    hint="start the run command with it (e.g. /opt/llama/llama-server --port {{port}}), "
                    "or set the backend's entrypoint or nomad.command",
                )
            args = [*entrypoint, *args]
            entrypoint = []
            image = None

        argv = [command, *args] if command else [*entrypoint, *args]
        if shell_warning := hazards.shell_drops_arguments(argv, model_path=weights.path):
            self.warnings.append(shell_warning)

        health_path: str | None = (d.env or {}).get("GPUSTACK_MODEL_HEALTH_CHECK_PATH") or (
            backend.spec.health_check_path if backend is not None else None
        )
        health_path = health_path or DEFAULT_HEALTH_CHECK_PATH
        enabled = d.nomad.health_check if d.nomad.health_check is not None else extras.health_check
        if enabled is False:
            health_path = None
        elif not health_path.startswith("/"):
            raise self.fail(("env", "GPUSTACK_MODEL_HEALTH_CHECK_PATH"), "the health check path must start with '/'")

        template_values = {
            **values,
            "port": f'{{{{ env "NOMAD_PORT_{MAIN_PORT}" }}}}',
            "worker_ip": f'{{{{ env "NOMAD_IP_{MAIN_PORT}" }}}}',
        }
        templates = [
            t.model_copy(update={"data": expand(t.data, template_values, env, strict=False)})
            for t in extras.templates or []
        ]

        port_warning = hazards.port_unused(
            [*args, *entrypoint, command or "", *(t.data for t in templates), *env.values()],
            health_check=health_path is not None,
        )
        if port_warning:
            self.warnings.append(port_warning)

        shm_size = d.nomad.shm_size
        if shm_size is None and driver == "docker":
            gib = (d.env or {}).get("GPUSTACK_MODEL_RUNTIME_SHM_SIZE_GIB")
            try:
                shm_size = parse_size(f"{gib} GiB") if gib else DEFAULT_SHM_SIZE
            except ValueError:
                raise self.fail(
                    ("env", "GPUSTACK_MODEL_RUNTIME_SHM_SIZE_GIB"), f"'{gib}' is not a number of GiB"
                ) from None
            if shm_size > MAX_MEMORY:  # the bound of nomad.shm_size: Docker's shm_size is int64 bytes
                raise self.fail(
                    ("env", "GPUSTACK_MODEL_RUNTIME_SHM_SIZE_GIB"),
                    f"{gib} GiB is more than any node has",
                    "write a number of GiB up to 1048576 (1 PiB), e.g. 16",
                )

        nomad = d.nomad
        self.nomad_rules()
        for mode in sorted(LOCKED_DOWN_MODES & set(extras.docker or {})):
            self.warnings.append(
                f"docker option {mode} fails on Nomad >= 2.0.4 unless the client's docker plugin allows it "
                "(allowed_modes); prefer shm_size over ipc_mode"
            )
        for key in ("gpu_memory", "gpu_model"):
            if getattr(nomad, key) and not framework.device_plugin:
                self.warnings.append(
                    f"nomad.{key} is only enforced for frameworks with a Nomad device plugin (cuda), "
                    f"not {framework.name}: the job does not use it"
                )

        return Resolved(
            model_name=d.name,
            job_id=nomad.job_id or nomad_name(d.name),
            service_name=nomad.service_name or nomad_name(d.name),
            backend_name=backend_name,
            version=version,
            framework=framework,
            driver=driver,
            image=image,
            command=command,
            entrypoint=tuple(entrypoint),
            args=tuple(args),
            env=env,
            weights=weights,
            resources=Resources(
                cpu=nomad.cpu,
                memory_mib=to_mib(nomad.memory),
                memory_max_mib=to_mib(nomad.memory_max) if nomad.memory_max else None,
                gpus=gpus,
                gpu_memory=gpu_memory,
                gpu_model=nomad.gpu_model,
                shm_size=shm_size if driver == "docker" else None,
            ),
            placement=Placement(
                replicas=d.replicas,
                strategy=d.placement_strategy,
                datacenters=tuple(nomad.datacenters or ()),
                namespace=nomad.namespace,
                region=nomad.region,
                node_pool=nomad.node_pool,
                priority=nomad.priority,
                worker_selector=dict(d.worker_selector or {}),
                platform=extras.platform or (_platform_from_image(image) if driver == "docker" else None),
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
                restart_on_error=d.restart_on_error,
            ),
            extras=extras,
            templates=tuple(templates),
            description=d.description or (backend.spec.description if backend is not None else None),
            categories=tuple(d.categories or ()),
            meta={str(key): _meta_text(value) for key, value in (d.meta or {}).items()},
            warnings=tuple(self.warnings),
            sizing=sizing,
        )


def backend_and_env(deployment: Sourced[Deployment], catalog: Catalog) -> tuple[str, dict[str, str]]:
    """The backend's name and the task's environment as `resolve` decides them (what the estimate reads)."""
    r = _Resolver(deployment, catalog, None)
    backend = r.backend()
    env: dict[str, str] = {}
    if backend is None:
        return CUSTOM, dict(r.d.env or {})
    _, config = r.version(backend)
    env.update(backend.spec.default_env or {})
    env.update(config.env or {})
    env.update(r.d.env or {})
    return backend.spec.backend_name, env


def _tokens_or_nothing(element: str) -> list[str]:
    try:
        return tokenize(element)
    except ValueError:
        return []  # reported where the parameters become argv


def resolve(deployment: Sourced[Deployment], catalog: Catalog, model: ModelLookup | None = None) -> Resolved:
    """Resolve one deployment. Raises InputError pointing at the deployment or backend file.

    `model` is the model's metadata, looked up by the caller (the compiler does no I/O): needed for
    `gpus: auto` and `gpu_memory: auto`, and used to refuse explicit values the engine would not start with.
    None: no lookup was made, and explicit values are taken as they are.
    """
    return _Resolver(deployment, catalog, model).run()
