"""Accelerator frameworks (GPUStack's `custom_framework` values) and how each one reaches a Nomad task.

Only NVIDIA has a Nomad device plugin (`nomad-device-nvidia`), so `cuda` is the one framework the scheduler
can count. The others get their device files and a node constraint on `${meta.gpu_vendor}` (set that meta
on the client), plus `distinct_hosts` so two replicas never share a node's accelerators unknowingly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Framework:
    name: str
    vendor: str  # GPUStack manufacturer, also the expected `${meta.gpu_vendor}` of the node
    device_plugin: str | None = None  # Nomad device name, when a device plugin counts these accelerators
    device_files: tuple[str, ...] = ()  # host device files handed to the container
    per_device_files: tuple[str, ...] = ()  # "{i}" is the device index, one per requested accelerator
    group_add: tuple[str, ...] = ()
    runtime_visible_env: str | None = None  # env the vendor's container runtime reads
    backend_visible_env: tuple[str, ...] = ()  # env the inference engine reads
    driver_mounts: tuple[str, ...] = ()  # host paths the container needs read-only (driver libraries)

    @property
    def uses_gpus(self) -> bool:
        return self.name != "cpu"


# Table from GPUStack's runtime (gpustack_runtime/detector and envs.py) and the Nomad reference.
FRAMEWORKS: dict[str, Framework] = {
    f.name: f
    for f in (
        Framework("cpu", vendor="cpu"),
        Framework(
            "cuda",
            vendor="nvidia",
            device_plugin="nvidia/gpu",
            # The plugin sets NVIDIA_VISIBLE_DEVICES to the reserved GPUs; the container sees them as 0..n-1.
            backend_visible_env=(),
        ),
        Framework(
            "rocm",
            vendor="amd",
            device_files=("/dev/kfd", "/dev/dri"),
            group_add=("video", "render"),
            backend_visible_env=("HIP_VISIBLE_DEVICES",),
        ),
        Framework(
            "dtk",
            vendor="hygon",
            device_files=("/dev/kfd", "/dev/dri"),
            group_add=("video",),
            backend_visible_env=("HIP_VISIBLE_DEVICES",),
        ),
        Framework(
            "cann",
            vendor="ascend",
            device_files=("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"),
            per_device_files=("/dev/davinci{i}",),
            backend_visible_env=("ASCEND_RT_VISIBLE_DEVICES",),
            driver_mounts=(
                "/usr/local/Ascend/driver/lib64",
                "/usr/local/Ascend/driver/include",
                "/usr/local/Ascend/driver/topo",
                "/usr/local/dcmi",
                "/usr/local/bin/npu-smi",
            ),
        ),
        Framework(
            "musa",
            vendor="mthreads",
            runtime_visible_env="METHERDS_VISIBLE_DEVICES",  # sic: the name Moore Threads' runtime reads
            backend_visible_env=("MUSA_VISIBLE_DEVICES",),
        ),
        Framework(
            "corex",
            vendor="iluvatar",
            runtime_visible_env="IX_VISIBLE_DEVICES",
            backend_visible_env=("CUDA_VISIBLE_DEVICES",),
        ),
        Framework("maca", vendor="metax", runtime_visible_env="CUDA_VISIBLE_DEVICES"),
        Framework(
            "neuware",
            vendor="cambricon",
            runtime_visible_env="CAMBRICON_VISIBLE_DEVICES",
            backend_visible_env=("MLU_VISIBLE_DEVICES",),
        ),
        Framework(
            "hggc",
            vendor="thead",
            runtime_visible_env="NVIDIA_VISIBLE_DEVICES",
            backend_visible_env=("CUDA_VISIBLE_DEVICES",),
        ),
    )
}
