"""The register's answer tells the version it wrote only when Nomad's indexes pin it (runner.written_version)."""

from __future__ import annotations

from nomad_gpustack.nomad.responses import JobStub, PlanResponse, RegisterResponse
from nomad_gpustack.nomad.runner import Preview, written_version

EXISTING = JobStub(ID="m", Version=4, Stable=True, CreateIndex=10, JobModifyIndex=50, ModifyIndex=60)


def written(found: Preview, **answer: object) -> tuple[int, int] | None:
    return written_version(found, RegisterResponse.model_validate({"EvalID": "e1", **answer}))


def test_a_new_job_is_version_0_created_at_the_writes_index() -> None:
    assert written(Preview(None, None), JobModifyIndex=70, EvalCreateIndex=70) == (0, 70)
    planned_new = Preview(None, PlanResponse(JobModifyIndex=0))
    assert written(planned_new, JobModifyIndex=70, EvalCreateIndex=70) == (0, 70)


def test_a_changed_job_is_the_version_read_plus_one_with_its_create_index() -> None:
    found = Preview(EXISTING, PlanResponse(JobModifyIndex=50))
    assert written(found, JobModifyIndex=71, EvalCreateIndex=71) == (5, 10)


def test_an_answer_that_wrote_no_version_is_read_back() -> None:
    """Nomad found the spec unchanged: the job's old ModifyIndex beside a later evaluation's index."""
    found = Preview(EXISTING, PlanResponse(JobModifyIndex=50))
    assert written(found, JobModifyIndex=60, EvalCreateIndex=72) is None


def test_a_job_that_changed_between_the_read_and_the_plan_is_read_back() -> None:
    found = Preview(EXISTING, PlanResponse(JobModifyIndex=55))
    assert written(found, JobModifyIndex=71, EvalCreateIndex=71) is None


def test_a_lost_answer_found_by_its_evaluation_is_read_back() -> None:
    assert written(Preview(None, None)) is None  # runner.register: only the evaluation's ID is known
    assert written_version(Preview(None, None), RegisterResponse(EvalID="", JobModifyIndex=70)) is None
