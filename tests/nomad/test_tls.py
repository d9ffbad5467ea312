"""TLS to Nomad: verification on by default, a CA file, a server name, and skip-verify with one notice of ours.

The double serves HTTPS with certificates made here by the `openssl` command; both clients are checked:
python-nomad (one-shot calls) and httpx (blocking queries).
"""

from __future__ import annotations

import asyncio
import ssl
import warnings

import httpx
import pytest

from nomad_gpustack.errors import EXIT_CONNECTION
from nomad_gpustack.nomad.client import NomadAPI, NomadUnavailable
from nomad_gpustack.settings import TLS, NomadSettings

from ..support.nomad_double import NomadDouble
from ..support.tls import Certs


def reads(settings: NomadSettings) -> None:
    """One python-nomad call and one httpx call."""
    api = NomadAPI(settings)
    assert api.job("missing") is None

    async def watch_read() -> None:
        async with api.async_client() as http:
            await api.allocations(http, "missing")

    asyncio.run(watch_read())


def test_verification_is_on_by_default(tls_nomad: NomadDouble) -> None:
    api = NomadAPI(NomadSettings(address=tls_nomad.address))
    with pytest.raises(NomadUnavailable) as caught:
        api.job("missing")
    assert caught.value.exit_code == EXIT_CONNECTION
    assert "TLS certificate verification failed" in str(caught.value)

    async def watch_read() -> None:
        async with api.async_client() as http:
            await api.allocations(http, "missing")

    with pytest.raises(NomadUnavailable):
        asyncio.run(watch_read())


def test_a_ca_file_and_the_server_name_make_it_verify(tls_nomad: NomadDouble, tls_certs: Certs) -> None:
    tls = TLS(ca_cert=str(tls_certs.ca), server_name="nomad.test")
    reads(NomadSettings(address=tls_nomad.address, tls=tls))
    # Without the server name the certificate (for nomad.test) does not match 127.0.0.1: refused.
    with pytest.raises(NomadUnavailable):
        NomadAPI(NomadSettings(address=tls_nomad.address, tls=TLS(ca_cert=str(tls_certs.ca)))).job("missing")


def test_skip_verify_works_and_warns_once_in_our_words(tls_nomad: NomadDouble) -> None:
    settings = NomadSettings.from_env({"NOMAD_ADDR": tls_nomad.address, "NOMAD_SKIP_VERIFY": "true"})
    notice = settings.insecure_notice()
    assert notice is not None and tls_nomad.address in notice and "not verified" in notice
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reads(settings)
        reads(settings)
    assert not [w for w in caught if "Unverified HTTPS request" in str(w.message)], "no urllib3 warning per request"


def test_no_notice_when_verifying_or_on_plain_http() -> None:
    assert NomadSettings(address="https://n:4646").insecure_notice() is None
    assert NomadSettings(address="http://n:4646", tls=TLS(skip_verify=True)).insecure_notice() is None


def test_a_plain_http_client_loads_no_ca_and_still_refuses_unverified_tls(
    tls_nomad: NomadDouble, tls_certs: Certs
) -> None:
    """A client for an http:// address loads no CA bundle (the fixed cost of every command), and its context
    fails closed: sent to an HTTPS address all the same, even one whose CA the settings name, it verifies
    against nothing and refuses."""
    settings = NomadSettings(address="http://127.0.0.1:1", tls=TLS(ca_cert=str(tls_certs.ca), server_name="nomad.test"))
    client = settings.httpx_client(timeout=5.0, asynchronous=False)
    with client:
        context = client._transport._pool._ssl_context  # httpx keeps the context it was given
        assert context.cert_store_stats()["x509_ca"] == 0
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            client.get(f"{tls_nomad.address}/v1/jobs")
