"""What a command can end with, as exit codes scripts rely on (DESIGN.md §9)."""

from __future__ import annotations

__all__ = ("DONE", "FAILED", "NOT_FOUND", "NOT_SIGNED_IN", "USAGE", "CliError")

DONE = 0
FAILED = 1  # the workflow failed, or the server refused (403, 422, 429, 5xx)
USAGE = 2
NOT_SIGNED_IN = 3  # no credentials, or the server refused them (401)
NOT_FOUND = 4


class CliError(Exception):
    """Ends the command: ``message`` on stderr in one line, then exit with ``code``."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
