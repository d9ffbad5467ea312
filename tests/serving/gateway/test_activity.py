"""The gateways' shared last activity: which records count, when the others are idle, and the shipped Consul
ACL policy against a real Consul with ACLs on (a 403 explained in words)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from nomad_gpustack.serving.consul import KVEntry
from nomad_gpustack.serving.gateway.activity import (
    CONSUL_ACL_POLICY,
    Activity,
    ActivityUnknown,
    Record,
    margin,
    others_idle_in,
    records,
)
from nomad_gpustack.settings import ConsulSettings

from ...support.components import ROOT, ConsulAgent


def test_records_are_the_keys_of_one_model_with_a_time() -> None:
    entries = [
        KVEntry("nomadgs/activity/m/gw-1", b"100.5", 7),
        KVEntry("nomadgs/activity/m/b/gw-2", b"200", 8),  # model "m/b", not "m"
        KVEntry("nomadgs/activity/mm/gw-3", b"300", 9),  # model "mm"
        KVEntry("nomadgs/activity/m/gw-4", b"soon", 10),  # not a time
        KVEntry("nomadgs/activity/m/gw-5", b"nan", 11),
    ]
    assert records("m", entries) == [Record("gw-1", 100.5, "nomadgs/activity/m/gw-1", 7)]


def test_the_others_are_idle_when_their_newest_record_is_idle_after_and_the_margin_old() -> None:
    found = [Record("me", 990.0, "k1", 1), Record("a", 900.0, "k2", 2), Record("b", 950.0, "k3", 3)]
    assert margin(60) == 30  # two intervals of 15 s
    assert others_idle_in(found, "me", 1000.0, 60) == 950 + 60 + 30 - 1000  # b's; my own record does not count
    assert others_idle_in(found, "me", 1040.0, 60) == 0
    assert others_idle_in([Record("me", 999.0, "k", 1)], "me", 1000.0, 60) < 0  # alone: only my own requests


ACL = 'acl { enabled = true, default_policy = "deny", tokens { master = "root" } }'


async def share(settings: ConsulSettings) -> list[Record]:
    activity = Activity(settings)
    try:
        return await activity.survey("m", 1234.5)
    finally:
        await activity.close()


def test_the_shipped_consul_policy_lets_gateways_share_their_activity_and_a_403_is_explained(
    consul_binary: str, caplog: pytest.LogCaptureFixture
) -> None:
    agent = ConsulAgent(consul_binary, extra=("-hcl", ACL)).start()
    try:
        admin = httpx.Client(base_url=agent.address, headers={"X-Consul-Token": "root"})
        rules = (ROOT / CONSUL_ACL_POLICY).read_text()
        assert admin.put("/v1/acl/policy", json={"Name": "nomadgs-gateway", "Rules": rules}).status_code == 200
        answer = admin.put("/v1/acl/token", json={"Policies": [{"Name": "nomadgs-gateway"}]})
        assert answer.status_code == 200
        token = answer.json()["SecretID"]
        # The policy's token writes and reads the records.
        found = asyncio.run(share(ConsulSettings(address=agent.address, token=token)))
        assert [(r.gateway.count("-") >= 2, r.at) for r in found] == [(True, 1234.5)]
        # Without a token, Consul refuses: never idle (ActivityUnknown), and the log says what to grant.
        with caplog.at_level("ERROR", "nomadgs.gateway"), pytest.raises(ActivityUnknown):
            asyncio.run(share(ConsulSettings(address=agent.address)))
        assert "403" in caplog.text and "no token (set CONSUL_HTTP_TOKEN)" in caplog.text
        assert 'key_prefix "nomadgs/activity/" { policy = "write" }' in caplog.text
        assert CONSUL_ACL_POLICY in caplog.text and "no model is scaled to zero" in caplog.text
    finally:
        agent.stop()
