"""`nomad.scaling`: the group's Count and Scaling block (compile.scaling), refusals located at the key to change."""

from __future__ import annotations

from typing import Any

import pytest

from nomad_gpustack.contract.metadata import META_IDLE_AFTER, META_SCALE_GROUP
from nomad_gpustack.errors import InputError
from nomad_gpustack.nomad.hcl import render_hcl

from ..support.hcl_reader import job_from_hcl, parse
from ..support.helpers import compile_yaml
from ..support.nomad_double.jobspec import canonicalize
from ..support.nomad_double.strict import check_job
from ..support.nomad_double.validation import validate

LLAMA: dict[str, Any] = {"name": "m", "local_path": "m.gguf", "backend": "llama.cpp", "backend_version": "cpu"}
VLLM: dict[str, Any] = {"name": "m", "huggingface_repo_id": "o/r", "backend": "vLLM"}


def compiled(scaling: dict[str, Any], base: dict[str, Any] = LLAMA, **top: Any) -> Any:
    job = compile_yaml({**base, **top, "nomad": {"scaling": scaling}}).job
    check_job(job)  # Nomad's api structs, strictly
    assert validate(canonicalize(dict(job), "default")) == [], "Nomad accepts the job"
    assert job_from_hcl(parse(render_hcl(job))) == job, "the HCL says the same"
    return job


def group(scaling: dict[str, Any], base: dict[str, Any] = LLAMA, **top: Any) -> Any:
    return compiled(scaling, base, **top)["TaskGroups"][0]


def refusal(scaling: dict[str, Any], base: dict[str, Any] = LLAMA, **top: Any) -> str:
    with pytest.raises(InputError) as info:
        compile_yaml({**base, **top, "nomad": {"scaling": scaling}})
    (problem,) = info.value.problems
    return str(problem)


def checks(g: Any) -> dict[str, Any]:
    return {label: body for check in g["Scaling"]["Policy"]["check"] for label, (body,) in check.items()}


def test_a_target_value_check_on_the_gateways_requests_per_replica() -> None:
    g = group({"max": 4, "cooldown": "10m", "evaluation_interval": "30s"}, replicas=2)
    scaling = g["Scaling"]
    assert (g["Count"], scaling["Min"], scaling["Max"], scaling["Enabled"], scaling["Type"]) == (
        2,
        1,
        4,
        True,
        "horizontal",
    )
    policy = scaling["Policy"]
    assert (policy["cooldown"], policy["evaluation_interval"]) == ("10m", "30s")
    (check,) = checks(g).values()
    assert (check["source"], check["query_window"]) == ("prometheus", "1m")
    assert check["strategy"] == [{"target-value": [{"target": 4}]}]  # llama.cpp's --parallel auto: 4 slots
    assert 'nomadgs_gateway_requests_in_flight{model="m"}[1m]' in check["query"]


@pytest.mark.parametrize(
    ("base", "params", "target"),
    [
        (LLAMA, ["--parallel 8"], 8),
        (LLAMA, ["-np=2"], 2),
        (LLAMA, ["--parallel -1"], 4),  # auto
        (VLLM, [], 256),
        (VLLM, ["--max-num-seqs 64"], 64),
    ],
)
def test_the_default_target_is_the_engines_concurrency(base: dict[str, Any], params: list[str], target: int) -> None:
    (check,) = checks(group({"max": 2}, base, backend_parameters=params)).values()
    assert check["strategy"] == [{"target-value": [{"target": target}]}]


def test_an_engine_of_unknown_concurrency_needs_target_in_flight() -> None:
    sglang = {"name": "m", "huggingface_repo_id": "o/r", "backend": "SGLang"}
    assert "nomadgs cannot tell how many requests SGLang serves at once" in refusal({"max": 2}, sglang)
    (check,) = checks(group({"max": 2, "target_in_flight": 2.5}, sglang)).values()
    assert check["strategy"] == [{"target-value": [{"target": 2.5}]}]


def test_the_queue_metric_is_the_engines_own() -> None:
    (check,) = checks(group({"max": 2, "metric": "queue", "target_queue": 3}, VLLM)).values()
    assert "vllm:num_requests_waiting" in check["query"]
    assert check["strategy"] == [{"target-value": [{"target": 3}]}]
    message = refusal({"max": 2, "metric": "queue"}, {**LLAMA, "nomad": {}}, backend="Custom", image_name="x:1",
                      run_command="serve --port {{port}}")  # fmt: skip
    assert "nomadgs knows no queue metric of Custom" in message


def test_a_schedule_is_a_fixed_value_check_per_window_and_one_for_the_baseline() -> None:
    schedule = {"baseline_replicas": 1, "rules": [
        {"name": "day", "start_cron": "0 8 * * MON-FRI", "duration_seconds": 36000, "replicas": 3},
        {"start_cron": "0 20 * * *", "duration": "2h", "replicas": 2},
    ]}  # fmt: skip
    found = checks(group({"max": 4, "metric": "none", "schedule": schedule}))
    assert found == {
        "schedule-baseline": {"strategy": [{"fixed-value": [{"value": 1}]}]},
        "schedule-day": {"schedule": [{"start": "0 8 * * MON-FRI", "duration": "10h"}],
                         "strategy": [{"fixed-value": [{"value": 3}]}]},
        "schedule-2": {"schedule": [{"start": "0 20 * * *", "duration": "2h"}],
                       "strategy": [{"fixed-value": [{"value": 2}]}]},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("scaling", "top", "says"),
    [
        ({"min": 3, "max": 2}, {}, "nomad.scaling.min: min (3) is more than max (2)"),
        ({"max": 2}, {"replicas": 3}, "replicas: replicas (3) is outside nomad.scaling's min 1 and max 2"),
        ({"max": 2, "idle_after": "15m"}, {}, "nomad.scaling.idle_after: idle_after scales the model to zero"),
        ({"min": 0, "max": 2}, {}, "nomad.scaling.min: min: 0 needs idle_after"),
        ({"min": 0, "max": 2, "idle_after": "1m"}, {}, "idle_after (1m) is shorter than 2m"),
        ({"max": 2, "metric": "queue", "target_in_flight": 3}, {}, "metric: queue does not read target_in_flight"),
        ({"max": 2, "metric": "none"}, {}, "metric: none without a schedule leaves nothing to scale by"),
        ({"max": 2, "query_window": "4h"}, {}, "query_window (4h) is longer than 3h"),
        ({"max": 0}, {}, "max: 0 never runs the model"),
        (
            {"min": 0, "max": 2, "idle_after": "15m", "metric": "queue"},
            {},
            "the engine's queue vanishes with its last replica",
        ),
        (
            {
                "min": 0,
                "max": 2,
                "idle_after": "15m",
                "schedule": {
                    "baseline_replicas": 0,
                    "rules": [{"start_cron": "0 8 * * *", "duration": "1h", "replicas": 1}],
                },
            },
            {},
            "a schedule keeps replicas running that idle_after would scale to zero",
        ),
        (
            {
                "max": 4,
                "schedule": {
                    "baseline_replicas": 2,
                    "rules": [{"start_cron": "0 8 * * *", "duration": "1h", "replicas": 1}],
                },
            },
            {},
            "nomad.scaling.schedule.rules[0].replicas: a window of 1 replicas, below baseline_replicas (2)",
        ),
        (
            {
                "max": 4,
                "schedule": {
                    "baseline_replicas": 1,
                    "rules": [{"start_cron": "0 8 * * *", "duration": "1h", "replicas": 5}],
                },
            },
            {},
            "rules[0].replicas: 5 replicas is outside min 1 and max 4",
        ),
        (
            {"max": 4, "schedule": {"baseline_replicas": 1, "rules": [{"start_cron": "0 8 * * *", "replicas": 2}]}},
            {},
            "a window needs its length",
        ),
    ],
)
def test_what_nomad_or_the_autoscaler_would_refuse_is_refused_at_its_key(
    scaling: dict[str, Any], top: dict[str, Any], says: str
) -> None:
    message = refusal(scaling, **top)
    assert message.startswith("deploy.yaml:"), message
    assert says in message


def test_the_refusal_names_the_line_of_the_key() -> None:
    text = "name: m\nlocal_path: m.gguf\nbackend: llama.cpp\nnomad:\n  scaling:\n    min: 3\n    max: 2\n"
    with pytest.raises(InputError) as info:
        compile_yaml(text)
    assert str(info.value.problems[0]).startswith("deploy.yaml:6:10: nomad.scaling.min: min (3) is more than max")


def test_scale_to_zero_writes_the_gateways_meta_and_may_start_at_zero() -> None:
    job = compiled({"min": 0, "max": 2, "idle_after": "15m"}, replicas=0)
    g = job["TaskGroups"][0]
    assert (g["Count"], g["Scaling"]["Min"]) == (0, 0)
    assert (job["Meta"][META_IDLE_AFTER], job["Meta"][META_SCALE_GROUP]) == ("15m", g["Name"])
    (check,) = checks(g).values()
    assert 'nomadgs_gateway_requests_total{model="m"}[14m]' in check["query"]  # idle_after less the margin
    # Not written: the deployment's default of one replica, which the gateway scales to zero when idle.
    assert compiled({"min": 0, "max": 2, "idle_after": "15m"})["TaskGroups"][0]["Count"] == 1


def test_scale_to_zero_alone_needs_no_autoscaler() -> None:
    g = group({"min": 0, "max": 1, "idle_after": "30m", "metric": "none"})
    assert g["Scaling"] == {"Min": 0, "Max": 1, "Enabled": False, "Type": "horizontal"}
    assert "enabled" in refusal({"min": 0, "max": 1, "idle_after": "30m", "metric": "none", "enabled": True})


def test_without_scaling_no_scale_meta_and_no_block() -> None:
    job = compile_yaml(LLAMA).job
    assert "Scaling" not in job["TaskGroups"][0]
    assert META_IDLE_AFTER not in job["Meta"] and META_SCALE_GROUP not in job["Meta"]


def test_spread_follows_the_most_replicas_the_autoscaler_may_run() -> None:
    assert compiled({"max": 3})["Spreads"], "one replica now, three later: spread over nodes"


def test_the_default_target_is_said_in_the_notes() -> None:
    notes = compile_yaml({**VLLM, "nomad": {"scaling": {"max": 2}}}).resolved.notes
    assert any("256 requests in flight per replica" in note for note in notes)


def test_the_double_refuses_what_nomad_refuses_of_a_scaling_block() -> None:
    job = dict(compile_yaml({**LLAMA, "nomad": {"scaling": {"max": 2}}}).job)
    job["TaskGroups"][0]["Scaling"] = {**job["TaskGroups"][0]["Scaling"], "Max": 0}
    (error,) = validate(canonicalize(job, "default"))
    assert "maximum count must not be less than minimum count" in error
    assert "task group count must not be greater than maximum count in scaling policy" in error
