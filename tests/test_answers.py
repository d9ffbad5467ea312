"""`answers.shaped` leaves Python's cycle collector as it found it, whether the answer fits or not."""

from __future__ import annotations

import gc

import pytest

from nomad_gpustack.answers import WrongShape, shaped
from nomad_gpustack.nomad.responses import Allocation


def test_the_collector_is_on_again_after_an_answer_is_read() -> None:
    assert gc.isenabled()
    (alloc,) = shaped(list[Allocation], b'[{"ID": "a", "TaskStates": null}]', "/v1/allocations")
    assert alloc.TaskStates == {} and gc.isenabled()
    with pytest.raises(WrongShape, match="is not JSON"):
        shaped(list[Allocation], b"<html>", "/v1/allocations")
    assert gc.isenabled()


def test_a_collector_turned_off_stays_off() -> None:
    gc.disable()
    try:
        shaped(list[Allocation], [{"ID": "a"}], "/v1/allocations")
        assert not gc.isenabled()
    finally:
        gc.enable()
