"""`nomad.scaling:` as read from a deployment file: its values refused where they are written, with the fix."""

from __future__ import annotations

import pytest

from nomad_gpustack.errors import InputError
from nomad_gpustack.spec.scaling import CRON_HINT

from ..support.helpers import deployment

HEAD = "name: m\nnomad:\n  scaling:\n    max: 3\n"


def problems(text: str) -> list[str]:
    with pytest.raises(InputError) as info:
        deployment(text)
    return [str(p) for p in info.value.problems]


def rule(cron: str) -> str:
    return (
        HEAD + f"    schedule:\n      baseline_replicas: 1\n      rules:\n        - start_cron: '{cron}'\n"
        "          duration_seconds: 3600\n          replicas: 2\n"
    )


def test_gpustacks_scaling_schedule_is_read_with_its_own_keys() -> None:
    spec = deployment(rule("0 8 * * MON-FRI")).spec.nomad.scaling
    assert spec is not None and spec.schedule is not None
    (window,) = spec.schedule.rules
    assert (spec.schedule.baseline_replicas, window.start_cron, window.duration_seconds, window.replicas) == (
        1, "0 8 * * MON-FRI", 3600, 2,
    )  # fmt: skip


def test_a_six_field_cron_is_refused_with_why_and_the_five_field_form() -> None:
    (message,) = problems(rule("0 0 8 * * *"))
    assert message == (
        "deploy.yaml:8:23: nomad.scaling.schedule.rules[0].start_cron: '0 0 8 * * *' has 6 fields: the Nomad "
        "Autoscaler takes 5 (no seconds), and GPUStack, which accepts 6, never opens such a window "
        f"({CRON_HINT})"
    )


@pytest.mark.parametrize(
    ("cron", "says"),
    [
        ("61 8 * * *", "'61' is not a minute (0-59)"),
        ("0 24 * * *", "'24' is not a hour (0-23)"),
        ("0 8 * FOO *", "'FOO' is not a month (1-12)"),
        ("0 8 * * FRI-MON", "the range 'FRI-MON' runs backwards"),
        ("0 8 ? * *", None),  # '?' is a day: accepted
        ("*/15 8-18 1,15 JAN-JUN 1-5/2", None),
        ("@daily", "'@daily' has 1 fields, not 5"),
    ],
)
def test_cron_fields_are_checked_as_the_autoscaler_parses_them(cron: str, says: str | None) -> None:
    if says is None:
        deployment(rule(cron))
        return
    (message,) = problems(rule(cron))
    assert f"start_cron: {says} ({CRON_HINT})" in message


def test_a_misspelled_scaling_key_gets_the_right_name() -> None:
    (message,) = problems(HEAD + "    idle_afer: 15m\n")
    assert message == "deploy.yaml:5:5: nomad.scaling.idle_afer: unknown key 'idle_afer' (did you mean 'idle_after'?)"


def test_max_is_required_and_targets_must_be_positive() -> None:
    assert problems("name: m\nnomad:\n  scaling:\n    min: 1\n") == [
        "deploy.yaml:3:3: nomad.scaling: required key 'max' is missing"
    ]
    (message,) = problems(HEAD + "    target_in_flight: 0\n")
    assert message.startswith("deploy.yaml:5:23: nomad.scaling.target_in_flight: expected a number greater than 0")


def test_two_windows_of_one_name_are_refused() -> None:
    text = rule("0 8 * * *").replace("        - start_cron", "        - name: day\n          start_cron")
    text += "        - name: day\n          start_cron: '0 20 * * *'\n"
    text += "          duration_seconds: 60\n          replicas: 2\n"
    (message,) = problems(text)
    assert "two rules are named 'day' (give each rule a name of its own)" in message


def test_the_top_level_scaling_schedule_points_at_nomad_scaling() -> None:
    (message,) = problems("name: m\nscaling_schedule: {enabled: true}\n")
    assert "nomad.scaling.schedule" in message
