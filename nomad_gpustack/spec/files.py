"""Where input files are and how messages name them. Light on purpose: no parser, no model, no validator."""

from __future__ import annotations

from pathlib import Path

YAML_SUFFIXES = (".yaml", ".yml")


def display_path(path: Path) -> str:
    """Paths in messages, as the user wrote them: an absolute path stays absolute, a relative one relative to
    where the user is (a file of a folder is the folder as written, then the file's name). Never rewritten
    relative to the working directory: `../x` for `/abs/x` would name a file the user never typed."""
    return str(path)


def yaml_files(path: Path) -> list[Path]:
    """The path itself, or the YAML files of a folder (sorted, not recursive)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())
    return [path]


def builtin_catalog_dir() -> Path:
    """The built-in catalog: inside the installed package, or `backends/` of a source checkout."""
    here = Path(__file__).resolve().parent.parent  # the package root
    packaged = here / "_catalog"
    return packaged if packaged.is_dir() else here.parent / "backends"
