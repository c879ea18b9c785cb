"""The validated workflow spec: what Gantry executes, with the source path of each part."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.spec.errors import Path

__all__ = ("FileSpec", "GroupSpec", "InputSpec", "Resources", "TaskSpec", "WorkflowSpec")


@dataclass(frozen=True, slots=True)
class Resources:
    """A resource spec; ``None`` fields were not given."""

    cpu: float | None = None
    gpu: int | None = None
    memory: int | None = None
    storage: int | None = None
    platform: str | None = None


@dataclass(frozen=True, slots=True)
class FileSpec:
    """A file placed at ``path`` in the task's filesystem."""

    path: str
    contents: str
    base64: bool = False


@dataclass(frozen=True, slots=True)
class InputSpec:
    """An input: the output directory of an upstream task (its group becomes a dependency)."""

    task: str
    source: Path = ()


@dataclass(slots=True)
class TaskSpec:
    name: str
    image: str
    command: list[str]
    args: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    files: list[FileSpec] = field(default_factory=list)
    inputs: list[InputSpec] = field(default_factory=list)
    lead: bool = False
    resource: str | None = None
    resources: Resources | None = None
    source: Path = ()


@dataclass(slots=True)
class GroupSpec:
    name: str
    tasks: list[TaskSpec]
    barrier: bool = True
    ignore_nonlead: bool = True
    source: Path = ()


@dataclass(slots=True)
class WorkflowSpec:
    name: str
    groups: list[GroupSpec]
    pool: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    resources: dict[str, Resources] = field(default_factory=dict)
    exec_timeout: int | None = None
    queue_timeout: int | None = None
