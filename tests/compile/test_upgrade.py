"""`nomad.upgrade` and `nomad.update`: the group's Update block and the service's CanaryTags (compile.upgrade)."""

from __future__ import annotations

from typing import Any

import pytest

from nomad_gpustack.contract.metadata import TAG_CANARY
from nomad_gpustack.durations import HOUR, MINUTE, SECOND
from nomad_gpustack.errors import InputError

from ..support.helpers import compile_yaml, main_task
from ..support.nomad_double.jobspec import canonicalize
from ..support.nomad_double.validation import validate

LLAMA_CPU: dict[str, Any] = {
    "name": "m", "local_path": "m.gguf", "backend": "llama.cpp", "backend_version": "cpu", "replicas": 2,
}  # fmt: skip


def update_of(nomad: dict[str, Any], **deployment: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the group's Update, the main task's service) of a deployment with this `nomad:` block."""
    compiled = compile_yaml({**LLAMA_CPU, **deployment, "nomad": nomad})
    assert validate(canonicalize(dict(compiled.job), "default")) == [], "Nomad accepts the job"
    return dict(compiled.job["TaskGroups"][0]["Update"]), dict(main_task(compiled)["Services"][0])


def test_rolling_is_the_default_with_auto_revert_and_deadlines_for_slow_loads() -> None:
    update, service = update_of({"startup_timeout": "45m"})
    assert update == {
        "MaxParallel": 1,
        "HealthCheck": "checks",
        "MinHealthyTime": 10 * SECOND,
        "HealthyDeadline": 45 * MINUTE,  # nomad.startup_timeout: one setting for how long a load may take
        "ProgressDeadline": 55 * MINUTE,
        "AutoRevert": True,
    }
    assert "CanaryTags" not in service, "a rolling update starts no canary"


def test_canary_is_one_canary_promoted_when_healthy_and_tagged_in_consul() -> None:
    update, service = update_of({"upgrade": "canary"})
    assert (update["Canary"], update["AutoPromote"], update["MaxParallel"], update["AutoRevert"]) == (1, True, 1, True)
    assert service["CanaryTags"] == [*service["Tags"], TAG_CANARY]
    assert TAG_CANARY not in service["Tags"]


def test_recreate_replaces_every_replica_at_once() -> None:
    update, _ = update_of({"upgrade": "recreate"}, replicas=3)
    assert (update["MaxParallel"], update.get("Canary", 0), update["AutoRevert"]) == (3, 0, True)


def test_update_keys_with_nomads_names_override_the_strategy() -> None:
    update, _ = update_of(
        {
            "upgrade": "canary",
            "update": {
                "canary": 2,
                "auto_promote": False,
                "auto_revert": False,
                "max_parallel": 2,
                "min_healthy_time": "30s",
                "healthy_deadline": "1h",
                "progress_deadline": "2h",
                "stagger": "1m",
            },
        }
    )
    assert update == {
        "MaxParallel": 2,
        "HealthCheck": "checks",
        "MinHealthyTime": 30 * SECOND,
        "HealthyDeadline": HOUR,
        "ProgressDeadline": 2 * HOUR,
        "AutoRevert": False,
        "Canary": 2,
        "AutoPromote": False,
        "Stagger": MINUTE,
    }


def test_a_canary_count_alone_is_the_canary_strategy() -> None:
    update, service = update_of({"update": {"canary": 1}})
    assert (update["Canary"], update["AutoPromote"]) == (1, True)
    assert service["CanaryTags"][-1] == TAG_CANARY


@pytest.mark.parametrize(
    ("nomad", "expected"),
    [
        ({"upgrade": "canery"}, "3:12: nomad.upgrade: 'canery' is not allowed here; expected 'canary', "
                                "'rolling' or 'recreate' (did you mean 'canary'?)"),
        ({"update": {"max_paralel": 2}}, "4:5: nomad.update.max_paralel: unknown key 'max_paralel' "
                                         "(did you mean 'max_parallel'?)"),
        ({"upgrade": "rolling", "update": {"canary": 1}},
         "5:13: nomad.update.canary: canary: 1 contradicts nomad.upgrade: rolling, which starts no canary "
         "(write nomad.upgrade: canary, or leave canary out)"),
        ({"upgrade": "canary", "update": {"canary": 0}}, "5:13: nomad.update.canary: canary: 0 contradicts"),
        ({"upgrade": "recreate", "update": {"max_parallel": 1}},
         "5:19: nomad.update.max_parallel: max_parallel: 1 contradicts nomad.upgrade: recreate, which replaces all "
         "2 replicas at once"),
        ({"update": {"max_parallel": 0}}, "4:19: nomad.update.max_parallel: max_parallel: 0 turns Nomad's "
                                          "deployments off"),
        ({"update": {"auto_promote": True}}, "4:19: nomad.update.auto_promote: auto_promote needs a canary"),
        ({"update": {"healthy_deadline": "1h", "progress_deadline": "1h"}},
         "5:24: nomad.update.progress_deadline: progress_deadline (1h) must be longer than the healthy deadline "
         "(1h); Nomad refuses it otherwise"),
        ({"update": {"min_healthy_time": "30m"}},
         "4:23: nomad.update.min_healthy_time: min_healthy_time (30m) must be shorter than the healthy deadline "
         "(30m, nomad.startup_timeout)"),
        ({"update": {"stagger": "soon"}}, "4:14: nomad.update.stagger: 'soon' is not a duration"),
    ],
)  # fmt: skip
def test_update_keys_nomad_or_the_strategy_refuse_are_located_errors(nomad: dict[str, Any], expected: str) -> None:
    with pytest.raises(InputError) as info:
        compile_yaml({"name": "m", "nomad": nomad, "local_path": "m.gguf", "backend": "llama.cpp", "replicas": 2})
    (problem,) = info.value.problems
    assert str(problem).startswith(f"deploy.yaml:{expected}"), str(problem)
