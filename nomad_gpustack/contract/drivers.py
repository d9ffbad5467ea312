"""What each Nomad task driver accepts in its `config` block (Task.Config is a map, not a Go struct).

Nomad decodes `config` with the driver's own spec on the client, long after the job was accepted; a typo
there surfaces as a failed allocation. We check the keys of extra docker options up front against the spec
in `drivers/docker/config.go`.
"""

from __future__ import annotations

DOCKER_KEYS = frozenset(
    [
        "image",
        "args",
        "entrypoint",
        "command",
        "ports",
        "port_map",
        "shm_size",
        "ipc_mode",
        "pid_mode",
        "userns_mode",
        "uts_mode",
        "runtime",
        "devices",
        "privileged",
        "force_pull",
        "image_pull_timeout",
        "auth",
        "auth_soft_fail",
        "volumes",
        "mount",
        "mounts",
        "work_dir",
        "hostname",
        "network_mode",
        "network_aliases",
        "dns_servers",
        "dns_search_domains",
        "dns_options",
        "extra_hosts",
        "labels",
        "sysctl",
        "ulimit",
        "logging",
        "healthchecks",
        "cap_add",
        "cap_drop",
        "security_opt",
        "group_add",
        "advertise_ipv6_address",
        "cpu_hard_limit",
        "init",
        "interactive",
        "readonly_rootfs",
        "tty",
        "cgroupns",
        "cpuset_cpus",
        "ipv4_address",
        "ipv6_address",
        "isolation",
        "load",
        "mac_address",
        "volume_driver",
        "container_exists_attempts",
        "cpu_cfs_period",
        "memory_hard_limit",
        "oom_score_adj",
        "pids_limit",
        "storage_opt",
    ]
)
# Keys the compiler owns; setting them through `nomad.docker` would silently fight the compiler.
COMPILER_OWNED = frozenset({"image", "args", "entrypoint", "command"})

# Namespace modes fail on Nomad >= 2.0.4 unless the client allows them (CVE-2026-14891).
LOCKED_DOWN_MODES = frozenset({"ipc_mode", "pid_mode", "userns_mode", "uts_mode"})

# Drivers that can mount a Nomad host volume into the task (raw_exec runs on the host's own paths).
MOUNTS_VOLUMES = frozenset({"docker", "exec"})
