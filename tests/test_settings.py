"""Connection settings: read as the nomad and consul CLIs read them, flags on top, tokens kept secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from nomad_gpustack.errors import InputError
from nomad_gpustack.settings import ConsulSettings, NomadSettings

from .support.helpers import nomadgs, web_page
from .support.nomad_double import NomadDouble, scenarios


def test_nomad_variables_and_flags() -> None:
    env = {
        "NOMAD_ADDR": "nomad.example:4646",
        "NOMAD_TOKEN": "s3cret",
        "NOMAD_NAMESPACE": "ml",
        "NOMAD_REGION": "eu",
        "NOMAD_SKIP_VERIFY": "true",
        "NOMAD_TLS_SERVER_NAME": "server.global.nomad",
    }
    settings = NomadSettings.from_env(env)
    assert settings.address == "http://nomad.example:4646"
    assert (settings.namespace, settings.region, settings.tls.skip_verify) == ("ml", "eu", True)
    assert settings.tls.server_name == "server.global.nomad"
    assert settings.headers()["X-Nomad-Token"] == "s3cret"
    assert settings.params() == {"namespace": "ml", "region": "eu"}
    assert "s3cret" not in repr(settings)
    flagged = NomadSettings.from_env(env, address="https://other:4646", namespace="prod", skip_verify=False)
    assert (flagged.address, flagged.namespace, flagged.tls.skip_verify) == ("https://other:4646", "prod", False)
    assert NomadSettings.from_env({}).address == "http://127.0.0.1:4646"


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("TRUE", True), ("0", False), ("", False)])
def test_skip_verify_is_a_go_bool(value: str, expected: bool) -> None:
    assert NomadSettings.from_env({"NOMAD_SKIP_VERIFY": value}).tls.skip_verify is expected


@pytest.mark.parametrize(
    "env", [{"NOMAD_SKIP_VERIFY": "maybe"}, {"CONSUL_HTTP_SSL_VERIFY": "nope"}, {"CONSUL_HTTP_SSL": "yes please"}]
)
def test_a_boolean_setting_that_is_not_one_is_refused(env: dict[str, str]) -> None:
    ((name, value),) = env.items()
    command = "status" if name.startswith("NOMAD") else "endpoints"
    run = nomadgs(command, env=env)
    assert run.code == 2, run.err
    assert run.err == f"error: {name}='{value}' is not a boolean (use true or false, 1 or 0, yes or no, on or off)\n"


def test_verification_stays_on_and_bad_tls_files_are_bad_input() -> None:
    settings = NomadSettings.from_env({"NOMAD_ADDR": "https://n:4646"})
    assert settings.tls.requests_verify() is True
    assert settings.tls.ssl_context().check_hostname is True
    with pytest.raises(InputError, match=r"CA certificate /nope\.pem does not exist"):
        NomadSettings.from_env({"NOMAD_ADDR": "https://n:4646", "NOMAD_CACERT": "/nope.pem"}).tls.ssl_context()
    with pytest.raises(InputError, match="unix sockets are not supported"):
        NomadSettings.from_env({"NOMAD_ADDR": "unix:///var/run/nomad.sock"})


def test_consul_variables() -> None:
    settings = ConsulSettings.from_env(
        {
            "CONSUL_HTTP_ADDR": "consul:8501",
            "CONSUL_HTTP_SSL": "true",
            "CONSUL_HTTP_TOKEN": "t0k",
            "CONSUL_HTTP_SSL_VERIFY": "false",
        }
    )
    assert settings.address == "https://consul:8501" and settings.tls.skip_verify is True
    assert settings.headers() == {"X-Consul-Token": "t0k"} and "t0k" not in repr(settings)
    assert ConsulSettings.from_env({}).address == "http://127.0.0.1:8500"


def test_the_token_reaches_nomad_from_the_environment_or_a_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    with NomadDouble(acl_tokens={"env-token": "management", "file-token": "management"}) as nomad:
        nomad.default_scenario = scenarios.rollout()
        run = nomadgs("status", env={"NOMAD_ADDR": nomad.address, "NOMAD_TOKEN": "env-token"})
        assert run.code == 0, run.err
        run = nomadgs("status", "--token-file", token_file, env={"NOMAD_ADDR": nomad.address})
        assert run.code == 0, run.err
        sent = {r.headers.get("x-nomad-token") for r in nomad.requests}
        assert sent == {"env-token", "file-token"}
        run = nomadgs("status", "--token-file", tmp_path / "missing", env={"NOMAD_ADDR": nomad.address})
        assert run.code == 2 and "cannot read the token file" in run.err


@pytest.mark.parametrize("address", ["http://[::1", "http://127.0.0.1:99999", "nomad.example:46x6"])
def test_an_address_that_is_not_a_url_is_one_line_of_bad_input(address: str) -> None:
    run = nomadgs("status", env={"NOMAD_ADDR": address})
    assert run.code == 2 and "Traceback" not in run.err, run.err
    (line,) = run.err.splitlines()
    assert line.startswith("error: Nomad address") and "is not a URL" in line and "NOMAD_ADDR" in line
    run = nomadgs("endpoints", env={"CONSUL_HTTP_ADDR": address})
    assert run.code == 2 and "Traceback" not in run.err, run.err
    (line,) = run.err.splitlines()
    assert line.startswith("error: Consul address") and "CONSUL_HTTP_ADDR" in line


@pytest.mark.parametrize("status", [404, 200])
def test_an_address_that_is_not_nomad_or_consul_says_so(status: int) -> None:
    with web_page(status) as address:
        run = nomadgs("status", env={"NOMAD_ADDR": address})
        assert run.code == 5, run.err
        (line,) = run.err.splitlines()
        assert f"error: {address} is not a Nomad HTTP API ({status} text/html on /v1/jobs)" in line
        run = nomadgs("endpoints", env={"CONSUL_HTTP_ADDR": address})
        assert run.code == 5, run.err
        (line,) = run.err.splitlines()
        assert f"{address} is not a Consul HTTP API ({status} text/html on /v1/catalog/services)" in line


def test_a_token_with_a_trailing_newline_is_sent_without_it(tmp_path: Path) -> None:
    """`export NOMAD_TOKEN=$(cat file)` can keep the newline: stripped, as --token-file strips it."""
    with NomadDouble(acl_tokens={"env-token": "management"}) as nomad:
        nomad.default_scenario = scenarios.rollout()
        run = nomadgs("status", env={"NOMAD_ADDR": nomad.address, "NOMAD_TOKEN": "env-token\n"})
        assert run.code == 0, run.err
        assert {r.headers.get("x-nomad-token") for r in nomad.requests} == {"env-token"}
    env = {"NOMAD_TOKEN": " n0mad \n", "CONSUL_HTTP_TOKEN": "c0nsul\r\n", "NOMAD_HTTP_AUTH": "user:pass\n"}
    assert NomadSettings.from_env(env).headers()["X-Nomad-Token"] == "n0mad"
    assert NomadSettings.from_env(env).http_auth == "user:pass"
    assert ConsulSettings.from_env(env).headers() == {"X-Consul-Token": "c0nsul"}


@pytest.mark.parametrize(
    ("command", "env", "source"),
    [
        ("status", {"NOMAD_TOKEN": "s3cret tok3n"}, "NOMAD_TOKEN"),
        ("status", {"NOMAD_TOKEN": "s3cret\ntok3n\n"}, "NOMAD_TOKEN"),
        ("endpoints", {"CONSUL_HTTP_TOKEN": "s3cret\ttok3n"}, "CONSUL_HTTP_TOKEN"),
        ("status", {"NOMAD_TOKEN": "s3cret-tök3n"}, "NOMAD_TOKEN"),
    ],
)
def test_a_token_that_no_header_can_carry_is_bad_input_naming_its_variable(
    command: str, env: dict[str, str], source: str
) -> None:
    run = nomadgs(command, env={"NOMAD_ADDR": "http://127.0.0.1:9", "CONSUL_HTTP_ADDR": "127.0.0.1:9", **env})
    assert run.code == 2, run.err
    assert run.err == (
        f"error: {source} holds whitespace or a character that cannot be sent in an HTTP header "
        "(set it to the token alone; its value is not shown)\n"
    )
    assert "s3cret" not in run.err + run.out


def test_a_token_file_or_key_that_no_header_can_carry_is_bad_input(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret tok3n\n")
    run = nomadgs("status", "--token-file", token_file, env={"NOMAD_ADDR": "http://127.0.0.1:9"})
    assert run.code == 2 and f"error: the token file {token_file} holds whitespace" in run.err, run.err
    run = nomadgs("chat", "m", "--url", "http://127.0.0.1:9/v1", "-p", "hi", env={"NOMADGS_API_KEY": "s3cret key"})
    assert run.code == 2 and "error: NOMADGS_API_KEY holds whitespace" in run.err, run.err
    assert "s3cret" not in run.err
    with pytest.raises(InputError, match=r"^the token option \(or NOMAD_TOKEN\) holds whitespace"):
        NomadSettings.from_env({}, token="s3cret tok3n", token_source="the token option (or NOMAD_TOKEN)")


@pytest.mark.parametrize("address", ["garbage", "localhost", "nomad.example", "nomad.example:"])
def test_an_address_with_neither_scheme_nor_port_is_refused(address: str) -> None:
    """Nomad's CLI refuses a NOMAD_ADDR without a scheme; `garbage` is not taken as http://garbage (port 80)."""
    run = nomadgs("status", env={"NOMAD_ADDR": address})
    assert run.code == 2, run.err
    assert run.err == (
        f"error: Nomad address '{address}' is neither a URL nor host:port "
        "(set NOMAD_ADDR or --address to http(s)://host:port or host:port, as http://127.0.0.1:4646)\n"
    )
    run = nomadgs("status", "--address", address)
    assert run.code == 2 and "--address" in run.err, run.err
    run = nomadgs("endpoints", env={"CONSUL_HTTP_ADDR": address})
    assert run.code == 2, run.err
    assert run.err == (
        f"error: Consul address '{address}' is neither a URL nor host:port "
        "(set CONSUL_HTTP_ADDR or --consul-address to http(s)://host:port or host:port, as 127.0.0.1:8500)\n"
    )


def test_host_and_port_or_a_url_are_addresses() -> None:
    assert NomadSettings.from_env({"NOMAD_ADDR": "nomad.example:4646"}).address == "http://nomad.example:4646"
    assert NomadSettings.from_env({"NOMAD_ADDR": "[fd00::5]:4646"}).address == "http://[fd00::5]:4646"
    assert NomadSettings.from_env({"NOMAD_ADDR": "https://nomad.example/"}).address == "https://nomad.example"
    assert NomadSettings.from_env({"NOMAD_ADDR": "http://localhost"}).address == "http://localhost"
    assert ConsulSettings.from_env({"CONSUL_HTTP_ADDR": "consul:8500"}).address == "http://consul:8500"
