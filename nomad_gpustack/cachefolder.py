"""Where nomad-gpustack keeps what it can reuse between runs: the validated built-in catalog, and the model
headers read from the Hugging Face Hub. The command line, the Ansible module and the filters use this one
folder, so what one of them looked up the others find.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_folder() -> Path:
    """$XDG_CACHE_HOME/nomadgs, else ~/.cache/nomadgs (created when first written)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nomadgs"
