"""The folders of GPUStack backend files the tests read: the project's own, and GPUStack's published ones.

The project's files (tests/data/backends) are tested always. GPUStack's published files sit beside the
checkout (../shared/gpustack-backends, or where NOMADGS_SHARED_BACKENDS says): tested in addition when they
are present, skipped loudly when not, and required in CI (NOMADGS_REQUIRE_COMPONENTS=1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .components import ROOT

SHARED_BACKENDS = Path(os.environ.get("NOMADGS_SHARED_BACKENDS") or ROOT.parent / "shared" / "gpustack-backends")
PROJECT_BACKENDS = ROOT / "tests" / "data" / "backends"


@dataclass(frozen=True)
class BackendCorpus:
    """A folder of GPUStack backend files, and what it must at least hold (so a lost file is noticed)."""

    folder: Path
    min_files: int
    min_versions: int
    names: frozenset[str]  # some backends it defines

    def files(self) -> list[Path]:
        found = sorted(self.folder.rglob("*.yaml"))
        assert len(found) >= self.min_files, f"{self.folder} lost files"
        return found


CORPORA = {
    "project": BackendCorpus(
        PROJECT_BACKENDS,
        8,
        27,
        frozenset({"textgen-custom", "Whisper-Server", "served-custom", "sglang-custom", "Sourced-Server"}),
    ),
    "shared": BackendCorpus(
        SHARED_BACKENDS,
        22,
        55,
        frozenset({"llama.cpp", "TokenSpeed", "Kokoro-FastAPI", "vllm-custom", "advanced-backend-custom"}),
    ),
}
