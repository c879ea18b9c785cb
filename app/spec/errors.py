"""Spec refusals: every issue names the field path, the line in the submitted text, and a fix."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ("Path", "SpecError", "SpecIssue", "format_path")

Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    """``("workflow", "tasks", 0, "command")`` → ``workflow.tasks[0].command``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True, slots=True)
class SpecIssue:
    """One thing wrong with a spec."""

    path: str
    line: int | None
    message: str

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "line": self.line, "message": self.message}


class SpecError(Exception):
    """A spec was refused; ``issues`` lists everything found wrong, in source order."""

    def __init__(self, issues: Iterable[SpecIssue], title: str = "The workflow spec is invalid"):
        self.issues = sorted(issues, key=lambda i: (i.line or 0, i.path))
        self.title = title
        super().__init__(self.detail)

    @property
    def detail(self) -> str:
        first = self.issues[0] if self.issues else None
        if first is None:
            return self.title
        where = f" (line {first.line})" if first.line else ""
        more = f"; and {len(self.issues) - 1} more" if len(self.issues) > 1 else ""
        path = f"{first.path}: " if first.path else ""
        return f"{path}{first.message}{where}{more}"
