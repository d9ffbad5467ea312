"""One flag scheme (`--format FORMAT` for how, `-o/--output PATH` for where) and one JSON document for every
outcome of `--format json`, failures included, on stdout and nothing else there."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from nomad_gpustack.cli.base import AliasedOption
from nomad_gpustack.cli.root import nomadgs

from ..support.components import ROOT
from ..support.helpers import nomadgs as run_nomadgs
from .test_commands import all_commands
from .test_completion import complete

VLLM = ROOT / "examples" / "vllm-qwen2.5-7b-instruct.yaml"
NOWHERE = "http://127.0.0.1:9"  # nothing listens: connection refused at once


def command_at(path: tuple[str, ...]) -> click.Command:
    cmd: click.Command = nomadgs
    ctx = click.Context(nomadgs, info_name="nomadgs")
    for name in path:
        assert isinstance(cmd, click.Group)
        found = cmd.get_command(ctx, name)
        assert found is not None
        cmd, ctx = found, click.Context(found, info_name=name, parent=ctx)
    return cmd


def result_format(cmd: click.Command) -> AliasedOption | None:
    return next((p for p in cmd.params if isinstance(p, AliasedOption) and p.result_format), None)


FORMATTED = [p for p in all_commands() if p and result_format(command_at(p)) is not None]


def test_the_commands_that_print_results_take_format() -> None:
    assert {" ".join(p) for p in FORMATTED} == {
        "validate", "estimate", "backends list", "backends show", "backends validate",
        "submit", "plan", "status", "endpoints", "promote", "revert", "history",
    }  # fmt: skip


@pytest.mark.parametrize("path", all_commands(), ids=lambda p: " ".join(p) or "nomadgs")
def test_format_is_how_and_output_is_where(path: tuple[str, ...]) -> None:
    text = CliRunner().invoke(nomadgs, [*path, "--help"]).stdout
    option_lines = [line.strip() for line in text.splitlines() if line.strip().startswith("-")]
    if path in (("render",), ("gateway-job",)):  # they write job files: -o is where, --format how
        assert any(line.startswith(("-o, --output PATH", "-o, --output DIR")) for line in option_lines), option_lines
        assert any(line.startswith("--format [json|hcl]") for line in option_lines), option_lines
        return
    assert not any("--output" in line.split("  ")[0] for line in option_lines), "--output is a path, not shown here"
    if path in FORMATTED:
        assert any(line.startswith("--format [") for line in option_lines), option_lines


@pytest.mark.parametrize("path", FORMATTED, ids=" ".join)
def test_the_older_spelling_still_works_unseen(path: tuple[str, ...]) -> None:
    cmd = command_at(path)
    option = result_format(cmd)
    assert option is not None and option.aliases == ("--output",)
    args = {"backends show": ["vLLM"], "backends validate": ["x.yaml"]}.get(" ".join(path), [])
    if cmd.params and isinstance(cmd.params[0], click.Argument) and cmd.params[0].required and not args:
        args = [str(VLLM)]
    for spelling in (["--output", "json"], ["--output=json"], ["--format", "json"]):
        params = cmd.make_context(path[-1], [*args, *spelling]).params
        assert params["fmt"] == "json", spelling
    offered = [value for value, _ in complete(*path, *args, incomplete="--")]
    assert "--format" in offered and "--output" not in offered


def json_failure(run_out: str, run_err: str, code: int) -> dict[str, object]:
    """The one JSON document on stdout (json.loads refuses anything after it), checked against stderr."""
    document = json.loads(run_out)
    assert isinstance(document, dict)
    assert document["ok"] is False and document["exit_code"] == code
    errors = document["errors"]
    assert isinstance(errors, list) and errors
    assert [f"error: {line}" for line in errors] == [
        line for line in run_err.splitlines() if line.startswith("error: ")
    ], "the same lines as on stderr"
    return document


FAILURES: dict[str, tuple[list[str], dict[str, str], int]] = {
    "validate: no such file": (["validate", "missing.yaml", "--format", "json"], {}, 2),
    "validate: a usage error": (["validate", "--format", "json", "--bogus", str(VLLM)], {}, 2),
    "validate: older spelling": (["validate", "missing.yaml", "--output", "json"], {}, 2),
    "estimate: no such file": (["estimate", "missing.yaml", "--format", "json"], {}, 2),
    "backends list: no such backend file": (["backends", "list", "--backends", "nope.yaml", "--format", "json"], {}, 2),
    "backends show: unknown backend": (["backends", "show", "vlm", "--format", "json"], {}, 2),
    "backends validate: no file given": (["backends", "validate", "--format", "json"], {}, 2),
    "submit: bad input": (["submit", "missing.yaml", "--format", "json"], {"NOMAD_ADDR": NOWHERE}, 2),
    "submit: Nomad unreachable": (["submit", str(VLLM), "--format", "json"], {"NOMAD_ADDR": NOWHERE}, 5),
    "plan: Nomad unreachable": (["plan", str(VLLM), "--format", "json"], {"NOMAD_ADDR": NOWHERE}, 255),
    "status: Nomad unreachable": (["status", "--format", "json"], {"NOMAD_ADDR": NOWHERE}, 5),
    "status NAME: Nomad unreachable": (["status", "qwen", "--output", "json"], {"NOMAD_ADDR": NOWHERE}, 5),
    "promote: Nomad unreachable": (["promote", "qwen", "--format", "json"], {"NOMAD_ADDR": NOWHERE}, 5),
    "revert: bad --to": (["revert", "qwen", "--to", "-1", "--format", "json"], {"NOMAD_ADDR": NOWHERE}, 2),
    "history: Nomad unreachable": (["history", "qwen", "--format", "json"], {"NOMAD_ADDR": NOWHERE}, 5),
    "endpoints: Consul unreachable": (["endpoints", "--format", "json"], {"CONSUL_HTTP_ADDR": "127.0.0.1:9"}, 5),
}


def test_every_formatted_command_has_a_failure_case() -> None:
    covered = {tuple(w for w in args[:2] if not w.startswith("-") and "/" not in w and "." not in w)
               for args, _, _ in FAILURES.values()}  # fmt: skip
    for path in FORMATTED:
        assert any(c[: len(path)] == path for c in covered), path


@pytest.mark.parametrize("case", list(FAILURES), ids=list(FAILURES))
def test_a_failure_is_one_json_document(case: str) -> None:
    args, env, code = FAILURES[case]
    run = run_nomadgs(*args, env=env)
    assert run.code == code, run.err
    json_failure(run.out, run.err, code)


def test_text_failures_print_nothing_on_stdout(tmp_path: Path) -> None:
    run = run_nomadgs("validate", "missing.yaml")
    assert (run.code, run.out) == (2, "") and run.err == "error: missing.yaml: no such file\n"
