"""The validated workflow spec: what Gantry executes, with the source path of each part."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as constructor arguments, which is several times faster than the generated
        # __getstate__/__setstate__: a spec worker sends 10,000 tasks back (plan.py too).
        return (Resources, (self.cpu, self.gpu, self.memory, self.storage, self.platform))


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

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            TaskSpec,
            (
                self.name, self.image, self.command, self.args, self.environment, self.files,
                self.inputs, self.lead, self.resource, self.resources, self.source,
            ),
        )  # fmt: skip


@dataclass(slots=True)
class GroupSpec:
    name: str
    tasks: list[TaskSpec]
    barrier: bool = True
    ignore_nonlead: bool = True
    source: Path = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return (GroupSpec, (self.name, self.tasks, self.barrier, self.ignore_nonlead, self.source))


@dataclass(slots=True)
class WorkflowSpec:
    name: str
    groups: list[GroupSpec]
    pool: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    resources: dict[str, Resources] = field(default_factory=dict)
    exec_timeout: int | None = None
    queue_timeout: int | None = None
