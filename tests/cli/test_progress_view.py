"""Progress output: a block redrawn in place on a terminal, one line per change elsewhere."""

from __future__ import annotations

import io

from nomad_gpustack.cli.progress_view import LiveView, PlainView
from nomad_gpustack.nomad.rollout import Assessment, Replica


def assessment(state: str, detail: str, phase: str = "deploying", headline: str = "0/1 healthy") -> Assessment:
    return Assessment(phase, (Replica(0, state, detail, "a0", "gpu-1"),), headline)  # type: ignore[arg-type]


def test_live_view_redraws_its_block() -> None:
    stream = io.StringIO()
    view = LiveView("qwen (job q v1)", stream)
    view.colour = False
    view.update(assessment("starting", "loading the model"), 5)
    view.update(assessment("running", "healthy", "succeeded", "the replica is healthy"), 65)
    text = stream.getvalue()
    assert "qwen (job q v1) · deploying · 0/1 healthy · 0m05s" in text
    assert "\033[2F\033[J" in text, "the second frame first erases the two lines of the first"
    assert text.rstrip().endswith("replica 0  running     healthy on gpu-1")
    assert "qwen (job q v1) · succeeded · the replica is healthy · 1m05s" in text


def test_plain_view_prints_only_changes() -> None:
    stream = io.StringIO()
    view = PlainView("qwen", stream)
    view.update(assessment("starting", "loading the model"), 1)
    view.update(assessment("starting", "loading the model"), 2)
    view.update(assessment("running", "healthy", "succeeded", "the replica is healthy"), 3)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "[0m01s] qwen: deploying: 0/1 healthy",
        "[0m01s]   replica 0: starting - loading the model [gpu-1]",
        "[0m03s] qwen: succeeded: the replica is healthy",
        "[0m03s]   replica 0: running - healthy [gpu-1]",
    ]
