"""Compile a resolved deployment into a typed Nomad job. Pure: no I/O, same input, same job."""

from __future__ import annotations

from typing import Any

from ..contract.jobspec import (
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
    ScalingPolicy,
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
from ..contract.metadata import DOWNLOAD_TASK, TAG_CANARY, JobLabels, job_meta, service_meta, service_tags
from ..contract.request import requested_device
from ..durations import MINUTE, SECOND, format_duration
from ..sizes import nomad_size
from .resolve import MAIN_PORT, Resolved, nomad_name

GROUP = "inference"
MODELS_VOLUME = "models"

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


def task_name(resolved: Resolved) -> str:
    """The main task's name: the backend's, readable in the Nomad UI (`vllm`, `llama-cpp`)."""
    name = nomad_name(resolved.backend_name) or "server"
    # Nomad refuses a task named "alloc", and two tasks of one name.
    return f"{name}-server" if name in ("alloc", DOWNLOAD_TASK) else name


def job_labels(r: Resolved) -> JobLabels:
    """What the job and its service say about the model (see metadata.py for how it is written and read)."""
    return JobLabels(
        model=r.model_name,
        backend=r.backend_name,
        version=r.version,
        framework=r.framework.name,
        source=r.weights.source,
        model_ref=r.weights.ref,
        gpus=r.resources.gpus,
        job_id=r.job_id,
        service=r.service_name,
        categories=r.categories,
        estimate=r.sizing.need if r.sizing else None,
        gpu_need=nomad_size(r.sizing.gpu_need) if r.sizing else None,
        auto=r.sizing.auto if r.sizing else None,
        metrics_path=r.metrics.path if r.metrics else None,
        # Nomad fills in the allocated port when it registers the service (client/taskenv/services.go).
        metrics_port=f"${{NOMAD_PORT_{r.metrics.port}}}" if r.metrics and r.metrics.port != MAIN_PORT else None,
        idle_after=format_duration(r.scaling.idle_after) if r.scaling and r.scaling.idle_after else None,
        scale_group=GROUP if r.scaling and r.scaling.idle_after else None,
    )


def _most_replicas(r: Resolved) -> int:
    """The most replicas the group may have: the count, or the Autoscaler's max."""
    return r.scaling.max if r.scaling else r.placement.replicas


def _scaling(r: Resolved) -> ScalingPolicy | None:
    """The group's scaling block (Nomad's api.ScalingPolicy; compile.scaling made its policy)."""
    plan = r.scaling
    if plan is None:
        return None
    scaling = ScalingPolicy(Min=plan.min, Max=plan.max)
    if plan.policy is not None:
        scaling["Policy"] = plan.policy
    scaling["Enabled"] = plan.enabled
    scaling["Type"] = "horizontal"  # what jobspec2 sets for a group's scaling block
    return scaling


def _constraints(r: Resolved) -> list[Constraint]:
    placement = r.placement
    out: list[Constraint] = []
    if placement.platform:
        out.append(Constraint(LTarget="${attr.cpu.arch}", Operand="=", RTarget=placement.platform))
    for key, value in placement.worker_selector.items():
        out.append(Constraint(LTarget=f"${{meta.{key}}}", Operand="=", RTarget=value))
    fw = r.framework
    if fw.device_plugin and r.driver == "docker":
        # Without the nvidia runtime the allocation fails at start; as a constraint it fails at placement,
        # where `nomadgs submit` can explain it.
        out.append(Constraint(LTarget="${attr.driver.docker.runtimes}", Operand="set_contains", RTarget="nvidia"))
    if fw.uses_gpus and not fw.device_plugin:
        # No device plugin counts these accelerators: place by node meta, one replica per node.
        out.append(Constraint(LTarget="${meta.gpu_vendor}", Operand="=", RTarget=fw.vendor))
        if _most_replicas(r) > 1:
            out.append(Constraint(Operand="distinct_hosts", RTarget="true"))
    return out


def _devices(r: Resolved) -> list[RequestedDevice]:
    fw = r.framework
    res = r.resources
    if not fw.device_plugin or res.gpus == 0:
        return []
    return [requested_device(fw.device_plugin, res.gpus, res.gpu_memory, res.gpu_model)]


def _service(r: Resolved) -> Service:
    settings = r.service
    labels = job_labels(r)
    tags = service_tags(labels, settings.tags)
    service = Service(Name=r.service_name, Tags=tags)
    if r.update.canary:
        # Consul (and Nomad's own catalog) shows an unpromoted canary with these; promoted, it gets `Tags`.
        service["CanaryTags"] = [*tags, TAG_CANARY]
    service["PortLabel"] = MAIN_PORT
    service["AddressMode"] = "host"
    service["Provider"] = settings.provider
    if settings.health_check_path:
        service["Checks"] = [
            ServiceCheck(
                Name=f"{r.model_name} health",
                Type="http",
                Path=settings.health_check_path,
                Method="GET",
                Interval=settings.check_interval,
                Timeout=settings.check_timeout,
                # Loading weights can take many minutes: no restarts until the deadline for startup has passed.
                CheckRestart=CheckRestart(Limit=3, Grace=r.lifecycle.startup_timeout, IgnoreWarnings=False),
            )
        ]
    if settings.provider == "consul":  # Nomad's native services have no meta; tags carry the same facts
        service["Meta"] = service_meta(labels)
    return service


def _task_env(r: Resolved) -> dict[str, str]:
    env = dict(r.env)
    fw = r.framework
    gpus = r.resources.gpus
    ids = ",".join(str(i) for i in range(gpus))
    if fw.uses_gpus and not fw.device_plugin:
        for name in (fw.runtime_visible_env, *fw.backend_visible_env):
            if name:
                env.setdefault(name, ids)
    if fw.name == "cuda" and gpus > 1:
        env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # as GPUStack sets it for several GPUs
    return env


def _docker_config(r: Resolved) -> dict[str, Any]:
    config: dict[str, Any] = {"image": r.image}
    if r.entrypoint:
        config["entrypoint"] = list(r.entrypoint)
    if r.args:
        config["args"] = list(r.args)
    config["network_mode"] = "host"  # as GPUStack runs backends: the engine binds the allocated port itself
    config["image_pull_timeout"] = format_duration(r.lifecycle.image_pull_timeout)  # a string: driver config
    if r.resources.shm_size:
        config["shm_size"] = r.resources.shm_size  # instead of ipc_mode=host, refused since Nomad 2.0.4
    fw = r.framework
    devices = [{"host_path": p} for p in fw.device_files]
    devices += [{"host_path": p.format(i=i)} for p in fw.per_device_files for i in range(r.resources.gpus)]
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
    if r.driver == "docker":
        config = _docker_config(r)
    else:
        config = {"command": r.command}
        if r.args:
            config["args"] = list(r.args)
    res = r.resources
    resources = Resources(CPU=res.cpu, MemoryMB=res.memory_mib)
    if res.memory_max_mib:
        resources["MemoryMaxMB"] = res.memory_max_mib
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
    # Nomad deregisters the task's services, then waits this long before the stop signal
    # (taskrunner/task_runner.go handleKill): the gateway and other balancers following Consul stop sending
    # requests to a replica being replaced, and the requests it is answering finish instead of being cut.
    task["ShutdownDelay"] = r.lifecycle.shutdown_delay
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
    download = w.download
    if download is None or not w.source or not w.mount:
        return None
    env = {
        "NOMADGS_MODEL_SOURCE": w.source,
        "NOMADGS_MODEL_REPO": w.repo or "",
        "NOMADGS_MODEL_FILE": w.file or "",
        "NOMADGS_MODEL_DIR": download.directory,
    }
    env.update(download.env)
    templates = [Template(DestPath="local/download.sh", EmbeddedTmpl=DOWNLOAD_SCRIPT, Perms="0755", ChangeMode="noop")]
    if download.token_variable:
        key = TOKEN_KEYS[w.source]
        # The token stays in Nomad Variables: the template reads it on the client, never the job file.
        templates.append(
            Template(
                DestPath="secrets/model-token.env",
                EmbeddedTmpl=(
                    f'{{{{ with nomadVar "{download.token_variable}" }}}}'
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
        Config={"image": download.image, "entrypoint": ["/bin/sh"], "args": ["/local/download.sh"]},
        Env=env,
        Resources=Resources(CPU=1000, MemoryMB=2048),
        VolumeMounts=[VolumeMount(Volume=MODELS_VOLUME, Destination=w.mount, ReadOnly=False)],
        Templates=templates,
    )


def _ui(r: Resolved) -> JobUIConfig:
    what = r.weights.ref or "its image's built-in model"
    gpus = f"{r.resources.gpus}× {r.framework.name}" if r.resources.gpus else "CPU"
    summary = f"{r.model_name}: {what} served by {r.backend_name} {r.version or ''}".rstrip() + f" on {gpus}."
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


def _update(r: Resolved) -> UpdateStrategy:
    """The group's update block, as `compile.upgrade` decided it."""
    u = r.update
    update = UpdateStrategy(
        MaxParallel=u.max_parallel,
        HealthCheck="checks" if r.service.health_check_path else "task_states",
        MinHealthyTime=u.min_healthy_time,
        HealthyDeadline=u.healthy_deadline,
        ProgressDeadline=u.progress_deadline,
        AutoRevert=u.auto_revert,
    )
    if u.canary:
        update["Canary"] = u.canary
        update["AutoPromote"] = u.auto_promote
    if u.stagger is not None:
        update["Stagger"] = u.stagger
    return update


def compile_job(r: Resolved) -> Job:
    """The Nomad job for one resolved deployment."""
    placement = r.placement
    ports = [Port(Label=MAIN_PORT)] + [Port(Label=label) for label in r.extras.ports or []]
    tasks = [t for t in (_download_task(r), _main_task(r)) if t is not None]
    if r.lifecycle.restart_on_error:
        restart = RestartPolicy(Attempts=2, Interval=30 * MINUTE, Delay=30 * SECOND, Mode="fail")
        reschedule = ReschedulePolicy(
            Delay=30 * SECOND, DelayFunction="exponential", MaxDelay=60 * MINUTE, Unlimited=True
        )
    else:
        restart = RestartPolicy(Attempts=0, Interval=30 * MINUTE, Delay=30 * SECOND, Mode="fail")
        reschedule = ReschedulePolicy(Attempts=0, Unlimited=False)
    group = TaskGroup(
        Name=GROUP,
        Count=placement.replicas,
        Tasks=tasks,
        RestartPolicy=restart,
        ReschedulePolicy=reschedule,
        Update=_update(r),
        Networks=[NetworkResource(Mode="host", DynamicPorts=ports)],
    )
    scaling = _scaling(r)
    if scaling is not None:
        group["Scaling"] = scaling
    if r.weights.mount and r.weights.volume:
        group["Volumes"] = {
            MODELS_VOLUME: VolumeRequest(Name=MODELS_VOLUME, Type="host", Source=r.weights.volume, ReadOnly=False)
        }
    job = Job(ID=r.job_id, Name=r.model_name, Type="service", TaskGroups=[group])
    if placement.namespace:
        job["Namespace"] = placement.namespace
    if placement.region:
        job["Region"] = placement.region
    if placement.datacenters:
        job["Datacenters"] = list(placement.datacenters)
    if placement.node_pool:
        job["NodePool"] = placement.node_pool
    if placement.priority:
        job["Priority"] = placement.priority
    constraints = _constraints(r)
    if constraints:
        job["Constraints"] = constraints
    if placement.strategy == "spread" and _most_replicas(r) > 1:
        job["Spreads"] = [Spread(Attribute="${node.unique.id}", Weight=100)]
    job["Meta"] = job_meta(job_labels(r), r.meta)
    job["UI"] = _ui(r)
    return job
