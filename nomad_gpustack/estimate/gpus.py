"""GPU models whose memory is known, keyed by the name Nomad's nvidia device plugin reports as `${device.model}`.

The plugin takes the name and the total memory from NVML (`nvmlDeviceGetName`, `nvmlDeviceGetMemoryInfo`),
the same figures `nvidia-smi --query-gpu=name,memory.total` prints; the values below are those totals in
MiB as nvidia-smi shows them on these boards (a little under the datasheet's GB: the driver keeps a part).
Where boards of one name differ, the smaller figure is kept. `nomadgs estimate` uses them for `gpu_model`;
a model missing here can be given as `gpu_memory`.
"""

from __future__ import annotations

from ..sizes import MIB

KNOWN_GPUS_MIB: dict[str, int] = {
    "Tesla T4": 15360,  # 16 GB GDDR6
    "Tesla V100-SXM2-16GB": 16160,  # 16 GB HBM2
    "Tesla V100-SXM2-32GB": 32510,  # 32 GB HBM2
    "NVIDIA A10": 23028,  # 24 GB GDDR6
    "NVIDIA A10G": 22731,  # 24 GB GDDR6 (AWS g5)
    "NVIDIA L4": 23034,  # 24 GB GDDR6
    "NVIDIA GeForce RTX 3090": 24576,  # 24 GB GDDR6X
    "NVIDIA GeForce RTX 4090": 24564,  # 24 GB GDDR6X
    "NVIDIA GeForce RTX 5090": 32607,  # 32 GB GDDR7
    "NVIDIA A100-PCIE-40GB": 40960,  # 40 GB HBM2
    "NVIDIA A100-SXM4-40GB": 40960,  # 40 GB HBM2
    "NVIDIA L40": 46068,  # 48 GB GDDR6
    "NVIDIA L40S": 46068,  # 48 GB GDDR6
    "NVIDIA RTX A6000": 49140,  # 48 GB GDDR6
    "NVIDIA A100 80GB PCIe": 81920,  # 80 GB HBM2e
    "NVIDIA A100-SXM4-80GB": 81920,  # 80 GB HBM2e
    "NVIDIA H100 PCIe": 81559,  # 80 GB HBM2e
    "NVIDIA H100 80GB HBM3": 81559,  # 80 GB HBM3 (SXM5)
    "NVIDIA H100 NVL": 95830,  # 94 GB HBM3
    "NVIDIA H200": 143771,  # 141 GB HBM3e
}


def known_gpu_memory(model: str | None) -> int | None:
    """Bytes of memory of a GPU model by its NVML name (case and spacing forgiven); None when unknown."""
    if not model:
        return None
    wanted = " ".join(model.split()).lower()
    for name, mib in KNOWN_GPUS_MIB.items():
        if name.lower() == wanted:
            return mib * MIB
    return None
