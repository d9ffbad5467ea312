"""The one table of exit codes (`errors.EXIT_CODES`): every error class of the package has its row, the row is
what `exit_code_for` answers, and the README, `nomadgs --help` and errors.py's docstring say the same."""

from __future__ import annotations

import importlib
import pkgutil
import re

import click

import nomad_gpustack
from nomad_gpustack import errors
from nomad_gpustack.errors import (
    EXIT_CODES,
    EXIT_CONNECTION,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    PLAN_ERROR,
    NomadgsError,
    ServiceError,
    exit_code_for,
)

from .support.components import ROOT


def full_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def package_errors() -> list[type[NomadgsError]]:
    """Every NomadgsError subclass defined in the package (each module imported first)."""
    for module in pkgutil.walk_packages(nomad_gpustack.__path__, "nomad_gpustack."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found: list[type[NomadgsError]] = []
    todo: list[type[NomadgsError]] = [NomadgsError]
    while todo:
        cls = todo.pop()
        if cls not in found and cls.__module__.startswith("nomad_gpustack."):
            found.append(cls)
            todo.extend(cls.__subclasses__())
    return sorted(found, key=full_name)


def test_every_error_class_has_its_row_and_decides_nothing_itself() -> None:
    classes = package_errors()
    assert len(classes) >= 18
    missing = [full_name(c) for c in classes if full_name(c) not in EXIT_CODES]
    assert missing == [], "add a row to errors.EXIT_CODES for each"
    for cls in classes:
        # No class sets its own code: the table is the one place, whatever the order of the bases.
        assert "exit_code" not in vars(cls) or cls is NomadgsError, full_name(cls)
        error = cls.__new__(cls)
        expected = EXIT_CODES[full_name(cls)]
        if expected is not None:
            assert exit_code_for(error) == error.exit_code == expected, full_name(cls)


def test_every_row_names_a_class_that_exists() -> None:
    for name in EXIT_CODES:
        module, _, attribute = name.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), attribute), type), name


def test_classes_with_two_kinds_of_base_exit_by_their_own_row() -> None:
    from nomad_gpustack.nomad.client import NomadDenied, NomadError, NomadUnavailable, NotNomad

    # Each is a NomadError (a ServiceError: 1) and an UnreachableError (5): its own row says 5, so the order of
    # its bases decides nothing.
    for cls in (NomadDenied, NomadUnavailable, NotNomad):
        assert issubclass(cls, NomadError) and full_name(cls) in EXIT_CODES
        assert exit_code_for(cls("x")) == EXIT_CONNECTION


def test_a_failure_after_registration_exits_with_the_code_of_its_cause() -> None:
    from nomad_gpustack.nomad.client import NomadUnavailable
    from nomad_gpustack.nomad.runner import AfterRegistration

    assert exit_code_for(AfterRegistration("job", NomadUnavailable("gone"), "watching its rollout")) == EXIT_CONNECTION
    assert exit_code_for(AfterRegistration("job", ServiceError("no"), "reading it back")) == EXIT_FAILURE


def test_what_is_not_ours_and_what_the_table_does_not_know() -> None:
    assert exit_code_for(KeyboardInterrupt()) == exit_code_for(click.Abort()) == EXIT_INTERRUPTED
    assert exit_code_for(click.BadParameter("x")) == 2  # a UsageError: the nearest row
    assert exit_code_for(ZeroDivisionError()) is None  # a bug: no exit code hides it


def readme_exit_codes() -> dict[int, str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Exit codes") :]
    section = section[: section.index("\n\n", section.index("| code |"))]
    return {int(code): meaning for code, meaning in re.findall(r"^\| (\d+) \| (.+) \|$", section, re.M)}


def documented_codes() -> set[int]:
    return {value for name, value in vars(errors).items() if name.startswith("EXIT_") and isinstance(value, int)}


def test_the_readme_and_the_help_list_the_codes_of_the_table() -> None:
    readme = readme_exit_codes()
    assert set(readme) == documented_codes()
    assert {code for code in EXIT_CODES.values() if code is not None} <= set(readme)
    text = (ROOT / "README.md").read_text()
    assert f"`nomadgs plan` follows `nomad job plan` instead: 0 no changes, 1 changes, {PLAN_ERROR} error" in text
    from nomad_gpustack.cli.root import EPILOG

    shown = {int(code) for code in re.findall(r"^  (\d+) ", EPILOG, re.M)}
    assert shown == set(readme)


def test_the_docstring_tree_names_real_classes_with_their_parents_and_codes() -> None:
    assert errors.__doc__ is not None
    tree = [line for line in errors.__doc__.splitlines() if re.match(r"    (NomadgsError|[│├└])", line)]
    names = {full_name(c): c for c in package_errors()}
    parents: list[tuple[int, type]] = []  # (column of the name, class) of the lines above, outermost first
    listed = set()
    for line in tree:
        match = re.match(r"([\s│├└─]*)([\w.]+)\s+(\d+|-)  ", line)
        assert match, line
        lead, word, code = match.groups()
        (name,) = [n for n in names if n.endswith("." + word)]  # exactly one class of that name
        listed.add(name)
        assert EXIT_CODES[name] == (None if code == "-" else int(code)), line
        while parents and parents[-1][0] >= len(lead):
            parents.pop()
        if parents:
            assert issubclass(names[name], parents[-1][1]), line
        parents.append((len(lead), names[name]))
    assert listed == set(names), "the tree shows every error class"
