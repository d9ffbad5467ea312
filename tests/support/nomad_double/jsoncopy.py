"""A deep copy of the double's JSON objects (jobs, allocations, deployments, variables ...).

The state is JSON: dicts, lists and scalars. `copy.deepcopy` spends most of its time on its memo and its dispatch
by type, which such a tree does not need; at a few copies of a job per registration and per placement, that was a
good part of the double's time with a fleet of jobs.
"""

from __future__ import annotations

import copy
from typing import TypeVar

T = TypeVar("T")

_SCALARS = (str, int, float, bool, type(None))


def clone(value: T) -> T:
    """A deep copy of `value`: dicts and lists copied all the way down, scalars shared (they are immutable);
    anything else (a tuple, a set) is left to `copy.deepcopy`."""
    kind = type(value)
    if kind is dict:
        return {key: clone(item) for key, item in value.items()}  # type: ignore[attr-defined,return-value]
    if kind is list:
        return [clone(item) for item in value]  # type: ignore[attr-defined,return-value]
    if kind in _SCALARS:
        return value
    return copy.deepcopy(value)
