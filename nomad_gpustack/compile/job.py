"""Compile a resolved deployment into a typed Nomad job. Pure: no I/O, same input, same job."""

from __future__ import annotations

from typing import Any

from ..durations import MINUTE, SECOND, format_duration
from ..nomad.jobspec import (
    CheckRestart,
    Constraint,
    Job,
    JobUIConfig,
    JobUILink,
    NetworkResource,
    Port,
    RequestedDevice,
    ReschedulePolicy,
    Resources,
    RestartPolicy,
    Service,
    ServiceCheck,
    Spread,
    Task,
    TaskGroup,
    TaskLifecycle,
    Template,
    UpdateStrategy,
    VolumeMount,
    VolumeRequest,
)
from ..sizes import nomad_size, to_mib
from .metadata import (
    DOWNLOAD_TASK,
    META_API,
    META_BACKEND,
    META_CATEGORIES,
    META_FRAMEWORK,
    META_GPUS,
    META_JOB,
    META_MANAGED,
    META_MODEL,
    META_MODEL_REF,
    META_SERVICE,
    META_SOURCE,
    META_VERSION,
    RESERVED_META,
    TAG_BACKEND,
    TAG_MARKER,
    TAG_MODEL,
    TAG_VERSION,
)
from .resolve import MAIN_PORT, Resolved, nomad_name

GROUP = "inference"
MODELS_VOLUME = "models"

UPDATE_MIN_HEALTHY = 10 * SECOND
PROGRESS_MARGIN = 10 * MINUTE  # ProgressDeadline must stay strictly greater than HealthyDeadline
KILL_TIMEOUT = 30 * SECOND  # engines flush and free GPU memory on SIGTERM

# Runs in the prestart task. Values come from env, never from string interpolation, and the script
# avoids `${`, which HCL would read as an interpolation.
DOWNLOAD_SCRIPT = """#!/bin/sh
# Download the model into the models host volume once; allocations that find it there skip this.
set -e
dir="$NOMADGS_MODEL_DIR"
if [ -f "$dir/.nomadgs-complete" ]; then
  echo "model already present in $dir"
  exit 0
fi
mkdir -p "$dir"
echo "downloading $NOMADGS_MODEL_REPO $NOMADGS_MODEL_FILE from $NOMADGS_MODEL_SOURCE into $dir"
case "$NOMADGS_MODEL_SOURCE" in
  huggingface)
    # a prepared downloader image already has the tool: no install, no network beyond the hub
    command -v hf >/dev/null 2>&1 ||
      pip install --quiet --no-cache-dir --disable-pip-version-check "huggingface_hub[hf_xet]>=0.34"
    if [ -n "$NOMADGS_MODEL_FILE" ]; then
      hf download "$NOMADGS_MODEL_REPO" "$NOMADGS_MODEL_FILE" --local-dir "$dir"
    else
      hf download "$NOMADGS_MODEL_REPO" --local-dir "$dir"
    fi
    ;;
  model_scope)
    command -v modelscope >/dev/null 2>&1 ||
      pip install --quiet --no-cache-dir --disable-pip-version-check modelscope
    if [ -n "$NOMADGS_MODEL_FILE" ]; then
      modelscope download --model "$NOMADGS_MODEL_REPO" "$NOMADGS_MODEL_FILE" --local_dir "$dir"
    else
      modelscope download --model "$NOMADGS_MODEL_REPO" --local_dir "$dir"
    fi
    ;;
esac
touch "$dir/.nomadgs-complete"
echo "model downloaded to $dir"
"""
TOKEN_KEYS = {"huggingface": "HF_TOKEN", "model_scope": "MODELSCOPE_API_TOKEN"}
_PASS_TO_DOWNLOADER = ("HF_", "HUGGING_FACE_", "MODELSCOPE_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "PIP_")


def task_name(resolved: Resolved) -> str:
    """The main task's name: the backend's, readable in the Nomad UI (`vllm`, `llama-cpp`)."""
    return nomad_name(resolved.backend_name) or "server"


def _model_ref(r: Resolved) -> str:
    w = r.weights
    if w.repo:
        return f"{w.repo}/{w.file}" if w.file else w.repo
    return r.deployment.local_path or ""


def job_meta(r: Resolved) -> dict[str, str]:
    d = r.deployment
    meta = {
        META_MODEL: d.name,
        META_BACKEND: r.backend_name,
        META_VERSION: r.version or "",
        META_FRAMEWORK: r.framework.name,
        META_SOURCE: r.weights.source or "image",
        META_MODEL_REF: _model_ref(r),
        META_GPUS: str(r.gpus),
        META_SERVICE: r.service_name,
        META_MANAGED: "true",
    }
    if d.categories:
        meta[META_CATEGORIES] = ",".join(d.categories)
    for key, value in (d.meta or {}).items():
        if key in RESERVED_META:
            continue  # the deployment model refuses these keys; never let user meta hide ours
        meta[str(key)] = value if isinstance(value, str) else _json(value)
    return meta


def _json(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, default=str)


def _constraints(r: Resolved) -> list[Constraint]:
    d = r.deployment
    out: list[Constraint] = []
    if r.platform:
        out.append(Constraint(LTarget="${attr.cpu.arch}", Operand="=", RTarget=r.platform))
    for key, value in (d.worker_selector or {}).items():
        out.append(Constraint(LTarget=f"${{meta.{key}}}", Operand="=", RTarget=value))
    fw = r.framework
    if fw.device_plugin and r.driver == "docker":
        # Without the nvidia runtime the allocation fails at start; as a constraint it fails at placement,
        # where `nomadgs submit` can explain it.
        out.append(Constraint(LTarget="${attr.driver.docker.runtimes}", Operand="set_contains", RTarget="nvidia"))
    if fw.uses_gpus and not fw.device_plugin:
        # No device plugin counts these accelerators: place by node meta, one replica per node.
        out.append(Constraint(LTarget="${meta.gpu_vendor}", Operand="=", RTarget=fw.vendor))
        if d.replicas > 1:
            out.append(Constraint(Operand="distinct_hosts", RTarget="true"))
    return out


def _devices(r: Resolved) -> list[RequestedDevice]:
    fw = r.framework
    if not fw.device_plugin or r.gpus == 0:
        return []
    nomad = r.deployment.nomad
    device = RequestedDevice(Name=fw.device_plugin, Count=r.gpus)
    constraints: list[Constraint] = []
    if nomad.gpu_memory:
        # Nomad compares ${device.attr.memory} (MiB) only with a value that carries a unit.
        constraints.append(
            Constraint(LTarget="${device.attr.memory}", Operand=">=", RTarget=nomad_size(nomad.gpu_memory))
        )
    if nomad.gpu_model:
        constraints.append(Constraint(LTarget="${device.model}", Operand="=", RTarget=nomad.gpu_model))
    if constraints:
        device["Constraints"] = constraints
    return [device]


def _service(r: Resolved) -> Service:
    d = r.deployment
    nomad = d.nomad
    tags = [TAG_MARKER, "openai", f"{TAG_MODEL}{d.name}", f"{TAG_BACKEND}{r.backend_name}"]
    if r.version:
        tags.append(f"{TAG_VERSION}{r.version}")
    tags.extend(d.categories or [])
    tags.extend(nomad.tags or [])
    service = Service(
        Name=r.service_name, Tags=tags, PortLabel=MAIN_PORT, AddressMode="host", Provider=nomad.service_provider
    )
    if r.health_check_path:
        service["Checks"] = [
            ServiceCheck(
                Name=f"{d.name} health",
                Type="http",
                Path=r.health_check_path,
                Method="GET",
                Interval=nomad.check_interval,
                Timeout=nomad.check_timeout,
                # Loading weights can take many minutes: no restarts until the deadline for startup has passed.
                CheckRestart=CheckRestart(Limit=3, Grace=nomad.startup_timeout, IgnoreWarnings=False),
            )
        ]
    if nomad.service_provider == "consul":  # Nomad's native services have no meta; tags carry the same facts
        meta = {
            META_MODEL: d.name,
            META_BACKEND: r.backend_name,
            META_VERSION: r.version or "",
            META_FRAMEWORK: r.framework.name,
            META_API: "openai",
            META_JOB: r.job_id,
        }
        if d.categories:
            meta[META_CATEGORIES] = ",".join(d.categories)
        service["Meta"] = meta
    return service


def _task_env(r: Resolved) -> dict[str, str]:
    env = dict(r.env)
    fw = r.framework
    ids = ",".join(str(i) for i in range(r.gpus))
    if fw.uses_gpus and not fw.device_plugin:
        for name in (fw.runtime_visible_env, *fw.backend_visible_env):
            if name:
                env.setdefault(name, ids)
    if fw.name == "cuda" and r.gpus > 1:
        env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # as GPUStack sets it for several GPUs
    return env


def _docker_config(r: Resolved) -> dict[str, Any]:
    nomad = r.deployment.nomad
    config: dict[str, Any] = {"image": r.image}
    if r.entrypoint:
        config["entrypoint"] = list(r.entrypoint)
    if r.args:
        config["args"] = list(r.args)
    config["network_mode"] = "host"  # as GPUStack runs backends: the engine binds the allocated port itself
    config["image_pull_timeout"] = format_duration(nomad.image_pull_timeout)  # a string: driver config
    if r.shm_size:
        config["shm_size"] = r.shm_size  # instead of ipc_mode=host, refused since Nomad 2.0.4
    fw = r.framework
    devices = [{"host_path": p} for p in fw.device_files]
    devices += [{"host_path": p.format(i=i)} for p in fw.per_device_files for i in range(r.gpus)]
    for device in r.extras.devices or []:
        devices.append(device.model_dump(exclude_none=True))
    if devices:
        config["devices"] = devices
    if fw.group_add:
        config["group_add"] = list(fw.group_add)
    if fw.driver_mounts:
        config["mount"] = [{"type": "bind", "source": p, "target": p, "readonly": True} for p in fw.driver_mounts]
    for key, value in (r.extras.docker or {}).items():
        config[key] = value
    return config


def _main_task(r: Resolved) -> Task:
    nomad = r.deployment.nomad
    if r.driver == "docker":
        config = _docker_config(r)
    else:
        config = {"command": r.command}
        if r.args:
            config["args"] = list(r.args)
    resources = Resources(CPU=nomad.cpu, MemoryMB=to_mib(nomad.memory))
    if nomad.memory_max:
        resources["MemoryMaxMB"] = to_mib(nomad.memory_max)
    devices = _devices(r)
    if devices:
        resources["Devices"] = devices
    task = Task(Name=task_name(r), Driver=r.driver, Config=config)
    env = _task_env(r)
    if env:
        task["Env"] = env
    task["Services"] = [_service(r)]
    task["Resources"] = resources
    task["KillTimeout"] = KILL_TIMEOUT
    if r.templates:
        task["Templates"] = [
            Template(DestPath=t.destination, EmbeddedTmpl=t.data, Envvars=t.env, ChangeMode="restart")
            for t in r.templates
        ]
    if r.weights.mount:
        task["VolumeMounts"] = [VolumeMount(Volume=MODELS_VOLUME, Destination=r.weights.mount, ReadOnly=False)]
    return task


def _download_task(r: Resolved) -> Task | None:
    w = r.weights
    if not w.download_dir or not w.source or not w.mount:
        return None
    d = r.deployment
    env = {
        "NOMADGS_MODEL_SOURCE": w.source,
        "NOMADGS_MODEL_REPO": w.repo or "",
        "NOMADGS_MODEL_FILE": w.file or "",
        "NOMADGS_MODEL_DIR": w.download_dir,
    }
    env.update({k: v for k, v in r.env.items() if k.startswith(_PASS_TO_DOWNLOADER)})
    templates = [Template(DestPath="local/download.sh", EmbeddedTmpl=DOWNLOAD_SCRIPT, Perms="0755", ChangeMode="noop")]
    if d.nomad.token_variable:
        key = TOKEN_KEYS[w.source]
        # The token stays in Nomad Variables: the template reads it on the client, never the job file.
        templates.append(
            Template(
                DestPath="secrets/model-token.env",
                EmbeddedTmpl=(
                    f'{{{{ with nomadVar "{d.nomad.token_variable}" }}}}'
                    f"{{{{ with .{key} }}}}{key}={{{{ . }}}}{{{{ end }}}}{{{{ end }}}}\n"
                ),
                Envvars=True,
                ChangeMode="noop",
            )
        )
    return Task(
        Name=DOWNLOAD_TASK,
        Driver="docker",
        Lifecycle=TaskLifecycle(Hook="prestart", Sidecar=False),
        Config={"image": d.nomad.downloader_image, "entrypoint": ["/bin/sh"], "args": ["/local/download.sh"]},
        Env=env,
        Resources=Resources(CPU=1000, MemoryMB=2048),
        VolumeMounts=[VolumeMount(Volume=MODELS_VOLUME, Destination=w.mount, ReadOnly=False)],
        Templates=templates,
    )


def _ui(r: Resolved) -> JobUIConfig:
    d = r.deployment
    what = _model_ref(r) or "its image's built-in model"
    gpus = f"{r.gpus}× {r.framework.name}" if r.gpus else "CPU"
    summary = f"{d.name}: {what} served by {r.backend_name} {r.version or ''}".rstrip() + f" on {gpus}."
    if r.description:
        first = r.description.strip().split("\n", 1)[0].strip()
        if first:
            summary += " " + (first if len(first) <= 200 else first[:197] + "...")
    ui = JobUIConfig(Description=summary)
    if r.weights.source == "huggingface" and r.weights.repo:
        ui["Links"] = [JobUILink(Label="Hugging Face", URL=f"https://huggingface.co/{r.weights.repo}")]
    if r.weights.source == "model_scope" and r.weights.repo:
        ui["Links"] = [JobUILink(Label="ModelScope", URL=f"https://modelscope.cn/models/{r.weights.repo}")]
    return ui


def compile_job(r: Resolved) -> Job:
    """The Nomad job for one resolved deployment."""
    d = r.deployment
    nomad = d.nomad
    healthy_deadline = nomad.startup_timeout
    ports = [Port(Label=MAIN_PORT)] + [Port(Label=label) for label in r.extras.ports or []]
    tasks = [t for t in (_download_task(r), _main_task(r)) if t is not None]
    if d.restart_on_error:
        restart = RestartPolicy(Attempts=2, Interval=30 * MINUTE, Delay=30 * SECOND, Mode="fail")
        reschedule = ReschedulePolicy(
            Delay=30 * SECOND, DelayFunction="exponential", MaxDelay=60 * MINUTE, Unlimited=True
        )
    else:
        restart = RestartPolicy(Attempts=0, Interval=30 * MINUTE, Delay=30 * SECOND, Mode="fail")
        reschedule = ReschedulePolicy(Attempts=0, Unlimited=False)
    group = TaskGroup(
        Name=GROUP,
        Count=d.replicas,
        Tasks=tasks,
        RestartPolicy=restart,
        ReschedulePolicy=reschedule,
        Update=UpdateStrategy(
            MaxParallel=1,
            HealthCheck="checks" if r.health_check_path else "task_states",
            MinHealthyTime=UPDATE_MIN_HEALTHY,
            HealthyDeadline=healthy_deadline,
            ProgressDeadline=healthy_deadline + PROGRESS_MARGIN,
            AutoRevert=True,
        ),
        Networks=[NetworkResource(Mode="host", DynamicPorts=ports)],
    )
    if r.weights.mount:
        group["Volumes"] = {
            MODELS_VOLUME: VolumeRequest(Name=MODELS_VOLUME, Type="host", Source=nomad.models_volume, ReadOnly=False)
        }
    job = Job(ID=r.job_id, Name=d.name, Type="service", TaskGroups=[group])
    if nomad.namespace:
        job["Namespace"] = nomad.namespace
    if nomad.region:
        job["Region"] = nomad.region
    if nomad.datacenters:
        job["Datacenters"] = nomad.datacenters
    if nomad.node_pool:
        job["NodePool"] = nomad.node_pool
    if nomad.priority:
        job["Priority"] = nomad.priority
    constraints = _constraints(r)
    if constraints:
        job["Constraints"] = constraints
    if d.placement_strategy == "spread" and d.replicas > 1:
        job["Spreads"] = [Spread(Attribute="${node.unique.id}", Weight=100)]
    job["Meta"] = job_meta(r)
    job["UI"] = _ui(r)
    return job
