"""The double's API error: an HTTP status with Nomad's plain-text message."""

from __future__ import annotations


class NomadError(Exception):
    """An API error: the HTTP status and Nomad's plain-text message (command/agent/http.go wrap)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
