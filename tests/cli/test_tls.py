"""TLS from the command line: verification failures are exit 5 in one line; skip-verify warns once, in our words."""

from __future__ import annotations

from ..support.helpers import nomadgs
from ..support.nomad_double import NomadDouble
from ..support.tls import Certs


def test_an_unverifiable_certificate_is_exit_5_without_a_traceback(tls_nomad: NomadDouble) -> None:
    run = nomadgs("status", env={"NOMAD_ADDR": tls_nomad.address})
    assert run.code == 5, run.err
    assert "TLS certificate verification failed" in run.err and "Traceback" not in run.err


def test_a_ca_file_and_server_name_from_flags(tls_nomad: NomadDouble, tls_certs: Certs) -> None:
    run = nomadgs(
        "status", "--ca-cert", tls_certs.ca, "--tls-server-name", "nomad.test", env={"NOMAD_ADDR": tls_nomad.address}
    )
    assert run.code == 0, run.err
    assert "no models deployed" in run.out and "warning" not in run.err


def test_skip_verify_gives_one_warning_of_ours(tls_nomad: NomadDouble) -> None:
    run = nomadgs("status", "--tls-skip-verify", env={"NOMAD_ADDR": tls_nomad.address})
    assert run.code == 0, run.err
    warnings = [line for line in run.err.splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1 and "not verified" in warnings[0], run.err
    assert "InsecureRequestWarning" not in run.err and "Unverified HTTPS request" not in run.err
