"""From a validated spec to a plan: groups in order, their dependencies, each task's resources.

Checks what needs the whole workflow: duplicate names, inputs naming unknown tasks or tasks of
the same group, dependency cycles, unknown resource names, and tokens that point nowhere.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from app.spec.errors import Path, SpecError, SpecIssue, format_path
from app.spec.model import GroupSpec, Resources, TaskSpec, WorkflowSpec
from app.spec.source import Loaded
from app.spec.template import TOKEN_RE
from app.spec.validate import normalise_name

__all__ = (
    "INPUT_ROOT",
    "OUTPUT_DIR",
    "Plan",
    "PlannedGroup",
    "PlannedTask",
    "make_plan",
    "substitute_tokens",
)

OUTPUT_DIR = "/gantry/output"
INPUT_ROOT = "/gantry/input"


@dataclass(slots=True)
class PlannedTask:
    name: str
    lead: bool
    image: str
    command: list[str]
    args: list[str]
    environment: dict[str, str]
    files: list[dict[str, Any]]
    inputs: list[str]  # upstream task names; index i is {{input:i}}
    resources: Resources | None  # None: the pool's defaults apply
    resource_source: str

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as constructor arguments: several times faster than the generated
        # __getstate__/__setstate__ for the 10,000 tasks a spec worker sends back.
        return (
            PlannedTask,
            (
                self.name, self.lead, self.image, self.command, self.args, self.environment,
                self.files, self.inputs, self.resources, self.resource_source,
            ),
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        r = self.resources
        return {
            "name": self.name,
            "lead": self.lead,
            "image": self.image,
            "command": self.command,
            "args": self.args,
            "environment": self.environment,
            "files": [{"path": f["path"], "bytes": len(f["contents"])} for f in self.files],
            "inputs": [{"index": i, "task": t} for i, t in enumerate(self.inputs)],
            "resources": None
            if r is None
            else {
                "cpu": r.cpu,
                "gpu": r.gpu,
                "memory": r.memory,
                "storage": r.storage,
                "platform": r.platform,
            },
            "resource_source": self.resource_source,
        }


@dataclass(slots=True)
class PlannedGroup:
    name: str
    position: int
    upstream: list[int]
    lead_task: str
    barrier: bool
    ignore_nonlead: bool
    tasks: list[PlannedTask] = field(default_factory=list)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            PlannedGroup,
            (
                self.name, self.position, self.upstream, self.lead_task, self.barrier,
                self.ignore_nonlead, self.tasks,
            ),
        )  # fmt: skip


@dataclass(slots=True)
class Plan:
    name: str
    pool: str | None
    labels: dict[str, str]
    exec_timeout: int | None
    queue_timeout: int | None
    groups: list[PlannedGroup]

    @property
    def task_count(self) -> int:
        return sum(len(g.tasks) for g in self.groups)


def make_plan(spec: WorkflowSpec, loaded: Loaded) -> Plan:
    """Resolve names across the workflow; raise ``SpecError`` listing every problem."""
    issues: list[SpecIssue] = []

    def fail(path: Path, message: str) -> None:
        issues.append(SpecIssue(format_path(path), loaded.line(path), message))

    group_of: dict[str, int] = {}  # normalised task name -> group position
    task_by_norm: dict[str, TaskSpec] = {}
    seen_groups: dict[str, GroupSpec] = {}
    for pos, group in enumerate(spec.groups):
        gnorm = normalise_name(group.name)
        if gnorm in seen_groups and group.source != group.tasks[0].source:
            fail(
                (*group.source, "name"),
                f"group name '{group.name}' is used twice (names are compared ignoring case "
                "and treating '-' and '_' alike)",
            )
        seen_groups.setdefault(gnorm, group)
        for task in group.tasks:
            norm = normalise_name(task.name)
            if norm in task_by_norm:
                fail(
                    (*task.source, "name"),
                    f"task name '{task.name}' is used twice (names are compared ignoring case "
                    "and treating '-' and '_' alike); rename one",
                )
                continue
            task_by_norm[norm] = task
            group_of[norm] = pos

    upstream: list[set[int]] = [set() for _ in spec.groups]
    for pos, group in enumerate(spec.groups):
        for task in group.tasks:
            for inp in task.inputs:
                norm = normalise_name(inp.task)
                if norm not in group_of:
                    fail(
                        inp.source,
                        f"input task '{inp.task}' does not exist; tasks are: "
                        + ", ".join(t.name for t in task_by_norm.values()),
                    )
                elif group_of[norm] == pos:
                    fail(
                        inp.source,
                        f"task '{task.name}' takes input from '{inp.task}' in its own group; "
                        "inputs must come from tasks of an earlier group",
                    )
                else:
                    upstream[pos].add(group_of[norm])
            _check_tokens(task, group, task_by_norm, fail)

    cycle = _find_cycle(upstream)
    if cycle:
        names = " → ".join(spec.groups[i].name for i in cycle)
        fail(
            (*spec.groups[cycle[0]].source, "name"),
            f"the dependencies form a cycle ({names}); a task cannot depend, directly or "
            "not, on its own output",
        )

    groups: list[PlannedGroup] = []
    for pos, group in enumerate(spec.groups):
        lead = next((t.name for t in group.tasks if t.lead), group.tasks[0].name)
        planned = PlannedGroup(
            name=group.name,
            position=pos,
            upstream=sorted(upstream[pos]),
            lead_task=lead,
            barrier=group.barrier,
            ignore_nonlead=group.ignore_nonlead,
        )
        for task in group.tasks:
            resources, source = _resolve_resources(task, spec, fail)
            planned.tasks.append(
                PlannedTask(
                    name=task.name,
                    lead=task.name == lead,
                    image=task.image,
                    command=task.command,
                    args=task.args,
                    environment=task.environment,
                    files=[
                        {"path": f.path, "contents": f.contents, "base64": f.base64}
                        for f in task.files
                    ],
                    inputs=[
                        task_by_norm[norm].name
                        for norm in (normalise_name(i.task) for i in task.inputs)
                        if norm in task_by_norm
                    ],
                    resources=resources,
                    resource_source=source,
                )
            )
        groups.append(planned)
    if issues:
        raise SpecError(issues)
    return Plan(
        name=spec.name,
        pool=spec.pool,
        labels=spec.labels,
        exec_timeout=spec.exec_timeout,
        queue_timeout=spec.queue_timeout,
        groups=groups,
    )


def _resolve_resources(
    task: TaskSpec, spec: WorkflowSpec, fail: Any
) -> tuple[Resources | None, str]:
    if task.resources is not None:
        return task.resources, "inline"
    if task.resource is not None:
        if task.resource == "default" and "default" not in spec.resources:
            return None, "pool"  # OSMO: an undeclared `default` is the pool's default resource
        if task.resource not in spec.resources:
            known = ", ".join(sorted(spec.resources)) or "none are declared"
            fail(
                (*task.source, "resource"),
                f"resource '{task.resource}' is not declared under workflow.resources "
                f"(declared: {known})",
            )
            return None, "pool"
        return spec.resources[task.resource], task.resource
    if "default" in spec.resources:
        return spec.resources["default"], "default"
    return None, "pool"


def _strings_of(task: TaskSpec) -> list[tuple[Path, str]]:
    out: list[tuple[Path, str]] = []
    out += [((*task.source, "command", i), s) for i, s in enumerate(task.command)]
    out += [((*task.source, "args", i), s) for i, s in enumerate(task.args)]
    out += [((*task.source, "environment", k), v) for k, v in task.environment.items()]
    out += [((*task.source, "files", i, "contents"), f.contents) for i, f in enumerate(task.files)]
    return out


def _check_tokens(task: TaskSpec, group: GroupSpec, tasks: dict[str, TaskSpec], fail: Any) -> None:
    siblings = {normalise_name(t.name) for t in group.tasks}
    for path, text in _strings_of(task):
        for m in TOKEN_RE.finditer(text):
            if m.group(2) is not None:
                index = int(m.group(2))
                if index >= len(task.inputs):
                    have = (
                        f"it has {len(task.inputs)} input(s), so use {{{{input:0}}}} to "
                        f"{{{{input:{len(task.inputs) - 1}}}}}"
                        if task.inputs
                        else "it has no `inputs`; add `inputs: [{task: <upstream task>}]`"
                    )
                    fail(path, f"task '{task.name}' uses {{{{input:{index}}}}} but {have}")
            elif m.group(3) is not None:
                target = normalise_name(m.group(3))
                if target not in siblings:
                    where = "a task of another group" if target in tasks else "no task"
                    fail(
                        path,
                        f"{{{{host:{m.group(3)}}}}} names {where}; hosts resolve only between "
                        f"tasks of the same group ({', '.join(t.name for t in group.tasks)})",
                    )


def _find_cycle(upstream: list[set[int]]) -> list[int] | None:
    state = [0] * len(upstream)  # 0 new, 1 on the stack, 2 done
    stack: list[int] = []

    def visit(n: int) -> list[int] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(upstream[n]):
            if state[m] == 1:
                return [*stack[stack.index(m) :], m]
            if state[m] == 0 and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in range(len(upstream)):
        if state[n] == 0 and (found := visit(n)):
            return list(reversed(found))
    return None


_TOKEN_VALUES = re.compile(r"\{\{(output|workflow_id|uuid|input:([0-9]+))\}\}")


def substitute_tokens(value: str, workflow_id: str, task_uuid: str | None = None) -> str:
    """Replace the canonical tokens; ``{{host:<task>}}`` is left for the runner's executor."""
    if "{{" not in value:
        return value

    def repl(m: re.Match[str]) -> str:
        key = m.group(1)
        if key == "output":
            return OUTPUT_DIR
        if key == "workflow_id":
            return workflow_id
        if key == "uuid":
            return task_uuid or str(uuid.uuid4())
        return f"{INPUT_ROOT}/{int(m.group(2))}"

    return _TOKEN_VALUES.sub(repl, value)
