"""Job meta, service tags and service meta: what the compiler writes, the readers get back (compile/metadata.py)."""

from __future__ import annotations

import pytest

from nomad_gpustack.contract.metadata import (
    JobLabels,
    ModelLabels,
    is_managed,
    is_ours,
    job_meta,
    model_labels,
    model_name,
    service_job,
    service_meta,
    service_tags,
)

from ..support.helpers import compile_yaml, main_task

LABELS = JobLabels(
    model="Qwen2.5-7B-Instruct",
    backend="vLLM",
    version="0.19.0",
    framework="cuda",
    source="huggingface",
    model_ref="Qwen/Qwen2.5-7B-Instruct",
    gpus=1,
    job_id="qwen-job",
    service="qwen",
    categories=("llm", "chat"),
)
UNVERSIONED = JobLabels(
    model="tgi", backend="Custom", version=None, framework="cpu", source=None, model_ref="", gpus=0,
    job_id="tgi", service="tgi",
)  # fmt: skip


@pytest.mark.parametrize("labels", [LABELS, UNVERSIONED])
def test_job_meta_round_trips(labels: JobLabels) -> None:
    meta = job_meta(labels, {"team": "search"})
    assert is_managed(meta)
    assert model_name(meta) == labels.model
    assert model_labels("job-name", (), meta) == ModelLabels(labels.model, labels.backend, labels.version)


@pytest.mark.parametrize("labels", [LABELS, UNVERSIONED])
def test_service_tags_round_trip_for_nomad_services(labels: JobLabels) -> None:
    tags = service_tags(labels, ["extra"])
    assert is_ours(tags)
    assert model_labels(labels.service, tags, {}) == ModelLabels(labels.model, labels.backend, labels.version)
    assert tags[-1] == "extra" and set(labels.categories) <= set(tags)


@pytest.mark.parametrize("labels", [LABELS, UNVERSIONED])
def test_service_meta_round_trips_for_consul_services(labels: JobLabels) -> None:
    meta = service_meta(labels)
    assert model_labels(labels.service, [], meta) == ModelLabels(labels.model, labels.backend, labels.version)
    assert service_job(meta) == labels.job_id


def test_meta_wins_over_tags_and_the_name_stands_in_for_the_model() -> None:
    tags = ["nomadgs", "model=from-tag", "backend=tag-backend"]
    assert model_labels("svc", tags, {"gpustack_model": "from-meta"}) == ModelLabels("from-meta", "tag-backend", None)
    assert model_labels("svc", ["nomadgs", "model="], {}) == ModelLabels("svc", None, None)


def test_user_meta_never_hides_ours() -> None:
    meta = job_meta(LABELS, {"gpustack_model": "spoof", "nomadgs_managed": "false", "team": "search"})
    assert model_name(meta) == LABELS.model and is_managed(meta) and meta["team"] == "search"


def test_foreign_jobs_and_services_are_not_ours() -> None:
    assert not is_managed({}) and not is_managed({"nomadgs_managed": "false"})
    assert model_name({"other": "x"}) is None
    assert not is_ours(["web", "model=x"]) and not is_ours(None) and not is_ours("nomadgs")
    assert service_job({}) is None


def test_a_compiled_job_reads_back_through_the_readers() -> None:
    compiled = compile_yaml(
        {
            "name": "Qwen2.5-7B-Instruct",
            "huggingface_repo_id": "Qwen/Qwen2.5-7B-Instruct",
            "backend": "vLLM",
            "categories": ["llm"],
            "meta": {"team": "search", "cost": 3},
        }
    )
    r = compiled.resolved
    expected = ModelLabels(r.model_name, r.backend_name, r.version)
    job = compiled.job
    (service,) = main_task(compiled)["Services"]
    assert is_managed(job["Meta"]) and model_name(job["Meta"]) == "Qwen2.5-7B-Instruct"
    assert model_labels(job["Name"], (), job["Meta"]) == expected
    assert model_labels(service["Name"], service["Tags"], service["Meta"]) == expected
    assert model_labels(service["Name"], service["Tags"], {}) == expected
    assert service_job(service["Meta"]) == job["ID"]
    assert job["Meta"]["team"] == "search" and job["Meta"]["cost"] == "3"
