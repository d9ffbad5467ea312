"""The groups of a distributed replica's worker ranks: named by the compiler, read by `status`."""

from __future__ import annotations

import re

_WORKER_GROUP = re.compile(r"worker-(\d+)-(\d+)")


def worker_group(replica: int, rank: int) -> str:
    """The group of one worker rank of one replica (rank 0, the leader, is the `inference` group)."""
    return f"worker-{replica}-{rank}"


def worker_of(group: str) -> tuple[int, int] | None:
    """(replica, rank) of a worker rank's group; None for any other group."""
    match = _WORKER_GROUP.fullmatch(group)
    return (int(match[1]), int(match[2])) if match else None
