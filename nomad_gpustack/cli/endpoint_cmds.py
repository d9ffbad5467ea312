"""Placeholder registration; the commands arrive with their issues."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    return None
