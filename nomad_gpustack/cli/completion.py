"""Shell completion callbacks (Click's mechanism: `_NOMADGS_COMPLETE=bash_source nomadgs`, zsh, fish).

They run on every Tab press, so they are quick and never fail: a broken backend file, an unreadable folder or
anything else that goes wrong completes nothing rather than printing an error into the user's prompt.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

DEPLOYMENT_SUFFIXES = (".yaml", ".yml")


def complete_deployment_files(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """`*.yaml` / `*.yml` files starting with `incomplete`, and folders to descend into.

    When only folders match, the shell completes the folder itself (type "dir"), so it adds no space after it.
    """
    from click.shell_completion import CompletionItem

    try:
        folder, sep, prefix = incomplete.rpartition("/")
        where = Path(os.path.expanduser(folder or "/")) if sep else Path(".")
        files: list[str] = []
        folders: list[str] = []
        with os.scandir(where) as entries:
            for entry in entries:
                name = entry.name
                if not name.startswith(prefix) or (name.startswith(".") and not prefix.startswith(".")):
                    continue
                shown = f"{folder}{sep}{name}"
                if entry.is_dir():
                    folders.append(shown + "/")
                elif name.endswith(DEPLOYMENT_SUFFIXES):
                    files.append(shown)
    except Exception:
        return []
    if not files:
        return [CompletionItem(incomplete, type="dir")] if folders else []
    return [CompletionItem(path) for path in sorted(files) + sorted(folders)]


def complete_backend_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Backend names of the catalog (built-in plus `--backends` given before), case-insensitively."""
    from click.shell_completion import CompletionItem

    try:
        catalog = _catalog(ctx)
        return [
            CompletionItem(name, help=_versions_help(catalog.find(name)))
            for name in catalog.names
            if name.lower().startswith(incomplete.lower())
        ]
    except Exception:
        return []


def _catalog(ctx: click.Context) -> Any:
    from ..spec.loader import load_catalog

    return load_catalog(tuple(ctx.params.get("backends") or ()))


def _versions_help(backend: Any) -> str | None:
    versions = list(backend.spec.versions) if backend is not None else []
    return f"versions: {', '.join(versions)}" if versions else None
