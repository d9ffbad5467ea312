"""The Click command tree in-process (CliRunner): help on every command, usage errors, the one mapping of errors
to exit codes, and the connection flags."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from nomad_gpustack.cli import main
from nomad_gpustack.cli.connection import consul_settings, nomad_settings
from nomad_gpustack.cli.root import COMMANDS, exit_code, nomadgs
from nomad_gpustack.errors import InputError, NomadgsError, Problem, ServiceError, UnreachableError

from ..support.components import ROOT

EXAMPLE = ROOT / "examples" / "vllm-qwen2.5-7b-instruct.yaml"


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(nomadgs, [str(a) for a in args])


def command_paths(cmd: click.Command, ctx: click.Context, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and subcommand, lazily loaded ones included, as the words that name it."""
    yield path
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None, name
            yield from command_paths(sub, click.Context(sub, info_name=name, parent=ctx), (*path, name))


def all_commands() -> list[tuple[str, ...]]:
    return list(command_paths(nomadgs, click.Context(nomadgs, info_name="nomadgs")))


def test_the_tree_holds_every_command_and_subcommand() -> None:
    paths = all_commands()
    assert {p[0] for p in paths if p} == set(COMMANDS)
    assert {p for p in paths if p[:1] == ("backends",)} == {
        ("backends",),
        ("backends", "list"),
        ("backends", "show"),
        ("backends", "validate"),
    }


@pytest.mark.parametrize("path", all_commands(), ids=lambda p: " ".join(p) or "nomadgs")
def test_help_on_every_command(path: tuple[str, ...]) -> None:
    for flag in ("--help", "-h"):
        result = invoke(*path, flag)
        assert result.exit_code == 0, result.output
        usage = result.stdout.splitlines()[0]
        assert usage.startswith(" ".join(("usage: nomadgs", *path)) + " "), usage
        assert result.stderr == ""


def test_help_texts_keep_their_tables() -> None:
    root = invoke("--help").stdout
    assert "exit codes:\n    0    success\n" in root and "130  interrupted (Ctrl-C)" in root
    assert "_NOMADGS_COMPLETE=bash_source nomadgs" in root
    submit = invoke("submit", "--help").stdout
    for line in (
        "replica states (as in GPUStack):",
        "  downloading  pulling the image or downloading the model weights",
        "  4    --timeout passed; the job keeps running (follow it with `nomadgs status NAME`)",
        "  NOMAD_TOKEN            ACL token, sent as X-Nomad-Token (never printed)\n",
        "Nomad connection (overrides NOMAD_* variables):",
        "  --token-file FILE",
    ):
        assert line in submit, line
    assert "255 error" in invoke("plan", "--help").stdout
    endpoints = invoke("endpoints", "--help").stdout
    assert "CONSUL_HTTP_TOKEN" in endpoints and "--provider [consul|nomad|all]" in endpoints
    gateway = invoke("gateway", "--help").stdout
    assert "NOMADGS_GATEWAY_API_KEYS" in gateway and "--consul-address ADDR" in gateway


def test_chat_help_names_the_api_key_variable_the_client_reads() -> None:
    from nomad_gpustack.serving.chat import API_KEY_ENV

    assert f"  {API_KEY_ENV}  " in invoke("chat", "--help").stdout


def test_version_is_the_same_with_and_without_the_shortcut(capsys: pytest.CaptureFixture[str]) -> None:
    from nomad_gpustack import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"nomadgs {__version__}\n"
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout == f"nomadgs {__version__}\n"


USAGE_ERRORS = {
    "unknown flag": (["render", str(EXAMPLE), "--bogus"], "No such option '--bogus'"),
    "missing argument": (["render"], "Missing argument 'DEPLOYMENT...'"),
    "bad choice": (["validate", str(EXAMPLE), "--format", "yaml"], "invalid choice: 'yaml' (choose from text, json)"),
    "bad choice, older spelling": (["status", "--output", "yaml"], "'--format': invalid choice: 'yaml'"),
    "not a number": (["logs", "x", "--tail", "many"], "'many' is not a valid integer"),
    "negative lines": (["logs", "x", "--tail", "-1"], "-1 is not in the range x>=0"),
    "missing file": (["status", "--ca-cert", "/nonexistent/ca.pem"], "'/nonexistent/ca.pem' does not exist"),
    "unknown command": (["rendr"], "No such command 'rendr' (did you mean 'render'?)"),
    "unknown subcommand": (["backends", "lst"], "No such command 'lst' (did you mean 'list'?)"),
    "unknown and unlike any": (["xyzzy"], "No such command 'xyzzy'"),
}


@pytest.mark.parametrize("case", list(USAGE_ERRORS), ids=list(USAGE_ERRORS))
def test_usage_errors_exit_2_with_one_message(case: str) -> None:
    args, message = USAGE_ERRORS[case]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("usage: nomadgs")
    assert lines[1].startswith("Try 'nomadgs") and lines[1].endswith(" --help' for help.")
    assert len(lines) == 3 and lines[2].startswith("error: ") and message in lines[2], lines


def test_plan_answers_255_for_every_error() -> None:
    from nomad_gpustack.errors import PLAN_ERROR

    for args in (["plan"], ["plan", str(EXAMPLE), "--bogus"], ["plan", "missing.yaml"]):
        result = invoke(*args)
        assert result.exit_code == PLAN_ERROR, (args, result.output)
        assert "Traceback" not in result.stderr


def test_one_mapping_of_errors_to_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    two = InputError([Problem("first", "a.yaml", 1), Problem("second", "a.yaml", 2, 3, "name")])
    assert exit_code(two) == 2
    assert capsys.readouterr().err == "error: a.yaml:1: first\nerror: a.yaml:2:3: name: second\n"
    assert exit_code(UnreachableError("cannot reach Nomad at http://x")) == 5
    assert exit_code(ServiceError("Nomad said no\nand why")) == 1
    assert capsys.readouterr().err == "error: cannot reach Nomad at http://x\nerror: Nomad said no\nerror: and why\n"
    assert exit_code(NomadgsError("failed")) == 1
    assert exit_code(KeyboardInterrupt()) == 130
    assert exit_code(RecursionError()) == 2
    assert (
        capsys.readouterr().err == "error: failed\nerror: interrupted\nerror: the input nests too deeply to process\n"
    )
    with pytest.raises(ZeroDivisionError):  # a bug is not hidden behind a tidy message
        exit_code(ZeroDivisionError())


def test_commands_run_in_process_with_the_same_results() -> None:
    result = invoke("render", EXAMPLE)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["Job"]["ID"] == "qwen2-5-7b-instruct"
    result = invoke("validate", EXAMPLE, "--output", "json")
    assert result.exit_code == 0 and json.loads(result.stdout)["deployments"][0]["job"] == "qwen2-5-7b-instruct"
    result = invoke("backends", "show", "vlm")
    assert result.exit_code == 2 and result.stderr == "error: unknown backend 'vlm' (did you mean 'vLLM'?)\n"


def connection_of(command: str, *args: str) -> dict[str, object]:
    cmd = nomadgs.get_command(click.Context(nomadgs), command)
    assert cmd is not None
    return cmd.make_context(command, [*(["m"] if command == "chat" else []), *args]).params


def test_connection_flags_win_over_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOMAD_ADDR", "http://env:4646")
    monkeypatch.setenv("NOMAD_NAMESPACE", "from-env")
    monkeypatch.setenv("NOMAD_SKIP_VERIFY", "true")
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "env:8500")
    from_env = nomad_settings(connection_of("status"))
    assert from_env.address == "http://env:4646" and from_env.namespace == "from-env" and from_env.tls.skip_verify
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    flags = connection_of(
        "status", "--address", "https://flag:4646", "--namespace", "ml", "--region", "eu",
        "--token-file", str(token), "--ca-cert", str(ca), "--tls-server-name", "nomad.local",
    )  # fmt: skip
    settings = nomad_settings(flags)
    assert (settings.address, settings.namespace, settings.region, settings.token) == (
        "https://flag:4646", "ml", "eu", "s3cret",
    )  # fmt: skip
    assert settings.tls.ca_cert == str(ca) and settings.tls.server_name == "nomad.local"
    assert settings.tls.skip_verify, "no --tls-skip-verify flag leaves NOMAD_SKIP_VERIFY in charge"
    monkeypatch.delenv("NOMAD_SKIP_VERIFY")
    assert nomad_settings(connection_of("status", "--tls-skip-verify")).tls.skip_verify
    assert not nomad_settings(connection_of("status")).tls.skip_verify
    assert consul_settings(connection_of("gateway")).address == "http://env:8500"
    assert consul_settings(connection_of("endpoints", "--consul-address", "c:1")).address == "http://c:1"
    chat = connection_of("chat", "--provider", "all", "--address", "http://n:1", "--consul-address", "c:2")
    assert nomad_settings(chat).address == "http://n:1" and consul_settings(chat).address == "http://c:2"


def test_token_file_problems_are_input_errors(tmp_path: Path) -> None:
    result = invoke("status", "--token-file", tmp_path / "missing", "--address", "http://127.0.0.1:9")
    assert result.exit_code == 2 and "cannot read the token file" in result.stderr
    empty = tmp_path / "empty"
    empty.write_text("\n")
    result = invoke("stop", "x", "--token-file", empty)
    assert result.exit_code == 2 and "the token file is empty" in result.stderr


@pytest.mark.parametrize("path", [(), ("backends",)], ids=["nomadgs", "backends"])
def test_a_group_without_a_command_prints_its_help(path: tuple[str, ...]) -> None:
    result = invoke(*path)
    assert result.exit_code == 0, result.output
    assert result.stdout == invoke(*path, "--help").stdout and result.stderr == ""
    assert "commands:" in result.stdout


def help_sections(text: str) -> list[tuple[str, list[str]]]:
    """The help's sections (a heading at the start of a line, ending in ':') with their lines."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            sections.append((line, []))
        elif line.strip():
            sections[-1][1].append(line)
    return sections


@pytest.mark.parametrize("path", all_commands(), ids=lambda p: " ".join(p) or "nomadgs")
def test_the_environment_section_ends_the_help_aligned(path: tuple[str, ...]) -> None:
    text = invoke(*path, "--help").stdout
    sections = help_sections(text)
    headings = [heading for heading, _ in sections]
    reads_nomad, reads_consul = "--address URL" in text, "--consul-address ADDR" in text
    if not (reads_nomad or reads_consul or "environment:" in headings):
        return
    heading, rows = sections[-1]
    assert heading == "environment:" and headings.count("environment:") == 1, headings
    names = [row.split()[0] for row in rows if row.startswith("  ") and not row.startswith("   ")]
    columns = {row.index(row.split()[1], len(row.split()[0]) + 2) for row in rows if row.split()[0] in names}
    assert len(columns) == 1, f"the descriptions start in one column: {rows}"
    assert ("NOMAD_ADDR" in names) == reads_nomad and ("CONSUL_HTTP_ADDR" in names) == reads_consul, names
