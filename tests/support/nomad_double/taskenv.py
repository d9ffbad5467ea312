"""A task's environment as a Nomad client builds it (client/taskenv), and the `${...}` interpolation of its
driver config.

raw_exec tasks see the host paths of their task directory and the agent's own environment; docker tasks see
the paths Nomad mounts them at (`/alloc`, `/local`, `/secrets`) and nothing of the agent's environment.
"""

from __future__ import annotations

import os
import platform
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .jobspec import JSON

# `${name}`, `${attr.cpu.arch}`, `${meta.rack}`, `${env["HOME"]}`: Nomad's own pattern plus the `env[...]` form.
_INTERPOLATION = re.compile(r"\$\{([A-Za-z0-9_\-.]+|env\[\"[^\"]+\"\])\}")

# Where the docker driver mounts the task directories (taskenv.AllocDir, TaskLocalDir, SecretsDir).
CONTAINER_ALLOC_DIR = "/alloc"
CONTAINER_LOCAL_DIR = "/local"
CONTAINER_SECRETS_DIR = "/secrets"


def env_name(label: str) -> str:
    """Nomad cleans env var names: anything but letters, digits and `_` becomes `_`."""
    return re.sub(r"[^A-Za-z0-9_]", "_", label)


@dataclass(frozen=True)
class Node:
    """What interpolation may read about the client node: `${attr.*}`, `${meta.*}`, `${node.*}`."""

    id: str
    name: str
    meta: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)

    def variables(self) -> dict[str, str]:
        found = {
            "node.unique.id": self.id,
            "node.unique.name": self.name,
            "node.datacenter": "dc1",
            "node.region": "global",
            "node.class": "",
            "node.pool": "default",
        }
        found.update({f"attr.{k}": v for k, v in self.attributes.items()})
        found.update({f"meta.{k}": v for k, v in self.meta.items()})
        found.update({f"node.meta.{k}": v for k, v in self.meta.items()})
        return found


def default_attributes(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Node attributes the fingerprinters of a Linux client report, for this machine."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    attributes = {
        "kernel.name": platform.system().lower(),
        "kernel.version": platform.release(),
        "cpu.arch": arch,
        "cpu.numcores": str(os.cpu_count() or 1),
        "os.name": "debian",
        "unique.hostname": socket.gethostname(),
        "unique.network.ip-address": "127.0.0.1",
        "driver.raw_exec": "1",
    }
    attributes.update(extra or {})
    return attributes


def interpolate(text: str, env: Mapping[str, str], node: Node | None = None) -> str:
    """`${NAME}` → the task env's value; `${env["NAME"]}` the same; `${attr.*}`, `${meta.*}`, `${node.*}` →
    the node's. Unknown names stay as written, as Nomad's ReplaceEnv leaves them."""
    node_vars = node.variables() if node is not None else {}

    def replace(match: re.Match[str]) -> str:
        name = match[1]
        if name.startswith('env["'):
            return env.get(name[5:-2], match[0])
        if name in env:
            return env[name]
        return node_vars.get(name, match[0])

    return _INTERPOLATION.sub(replace, text)


def interpolate_value(value: Any, env: Mapping[str, str], node: Node | None = None) -> Any:
    """Interpolate every string inside a driver config value (lists and maps included)."""
    if isinstance(value, str):
        return interpolate(value, env, node)
    if isinstance(value, list):
        return [interpolate_value(v, env, node) for v in value]
    if isinstance(value, dict):
        return {k: interpolate_value(v, env, node) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class TaskDirs:
    """A task's directories: on the host, and as the task sees them."""

    alloc: Path  # <alloc>/alloc: shared by the group's tasks (logs/, data/, tmp/)
    local: Path  # <alloc>/<task>/local
    secrets: Path  # <alloc>/<task>/secrets

    @classmethod
    def of(cls, alloc_root: Path, task: str) -> TaskDirs:
        return cls(alloc_root / "alloc", alloc_root / task / "local", alloc_root / task / "secrets")


def task_env(
    alloc: JSON,
    task: JSON,
    dirs: TaskDirs,
    *,
    in_container: bool,
    node: Node | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The task's environment: (raw_exec only) the agent's own, the NOMAD_* variables, the port variables, the
    task's Env interpolated over those, then `extra` (variables of `env = true` templates, which win)."""
    job = alloc["Job"]
    resources = task.get("Resources") or {}
    if in_container:
        alloc_dir, local_dir, secrets_dir = CONTAINER_ALLOC_DIR, CONTAINER_LOCAL_DIR, CONTAINER_SECRETS_DIR
    else:
        alloc_dir, local_dir, secrets_dir = str(dirs.alloc), str(dirs.local), str(dirs.secrets)
    nomad = {
        "NOMAD_ALLOC_DIR": alloc_dir,
        "NOMAD_TASK_DIR": local_dir,
        "NOMAD_SECRETS_DIR": secrets_dir,
        "NOMAD_ALLOC_ID": alloc["ID"],
        "NOMAD_SHORT_ALLOC_ID": alloc["ID"][:8],
        "NOMAD_ALLOC_NAME": alloc["Name"],
        "NOMAD_ALLOC_INDEX": alloc["Name"].rsplit("[", 1)[-1].rstrip("]"),
        "NOMAD_TASK_NAME": task["Name"],
        "NOMAD_GROUP_NAME": alloc["TaskGroup"],
        "NOMAD_JOB_ID": job["ID"],
        "NOMAD_JOB_NAME": job["Name"],
        "NOMAD_JOB_PARENT_ID": job.get("ParentID") or "",
        "NOMAD_NAMESPACE": job["Namespace"],
        "NOMAD_REGION": job["Region"],
        "NOMAD_DC": "dc1",
        "NOMAD_CPU_LIMIT": str(resources.get("CPU", 100)),
        "NOMAD_MEMORY_LIMIT": str(resources.get("MemoryMB", 300)),
    }
    if resources.get("MemoryMaxMB"):
        nomad["NOMAD_MEMORY_MAX_LIMIT"] = str(resources["MemoryMaxMB"])
    for port in alloc["AllocatedResources"]["Shared"]["Ports"] or []:
        label, value = env_name(port["Label"]), str(port["Value"])
        nomad[f"NOMAD_PORT_{label}"] = value
        nomad[f"NOMAD_HOST_PORT_{label}"] = value
        nomad[f"NOMAD_IP_{label}"] = "127.0.0.1"
        nomad[f"NOMAD_ADDR_{label}"] = f"127.0.0.1:{value}"
        nomad[f"NOMAD_HOST_ADDR_{label}"] = f"127.0.0.1:{value}"
        nomad[f"NOMAD_HOST_IP_{label}"] = "127.0.0.1"
    for key, value in {**(job.get("Meta") or {}), **(task.get("Meta") or {})}.items():
        nomad[f"NOMAD_META_{env_name(key)}"] = str(value)
    env = {} if in_container else dict(os.environ)
    env.update(nomad)
    env.update({k: interpolate(str(v), env, node) for k, v in (task.get("Env") or {}).items()})
    env.update(extra or {})
    return env
