"""Domain errors raised by services; ``app/asgi.py`` turns them into HTTP answers in one place."""

from __future__ import annotations

from app.spec.errors import SpecIssue

__all__ = ("Conflict", "DomainError", "Forbidden", "Invalid", "NotFound")


class DomainError(Exception):
    status_code = 400
    title = "Bad request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(DomainError):
    status_code = 404
    title = "Not found"


class Conflict(DomainError):
    status_code = 409
    title = "Conflict"


class Forbidden(DomainError):
    status_code = 403
    title = "Forbidden"


class Invalid(DomainError):
    """422 with the issues that name what was wrong and where."""

    status_code = 422
    title = "Invalid request"

    def __init__(
        self, detail: str, issues: list[SpecIssue] | None = None, title: str | None = None
    ):
        super().__init__(detail)
        self.issues = issues or []
        if title:
            self.title = title
