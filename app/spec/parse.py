"""The one entry point: submitted text and ``set`` values in, a checked plan out."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import yaml

from app.spec.errors import Path, SpecError, SpecIssue, format_path
from app.spec.model import GroupSpec, TaskSpec, WorkflowSpec
from app.spec.plan import Plan, make_plan
from app.spec.source import (
    MAX_DEPTH,
    LineMap,
    Loaded,
    compose_yaml,
    construct_yaml,
    split_sections,
)
from app.spec.template import MAX_RENDERED, RenderFailure, Shielded, has_jinja, shield
from app.spec.validate import validate

__all__ = ("MAX_SPEC_BYTES", "ParsedSpec", "Renderer", "check_set_values", "parse_spec")

MAX_SPEC_BYTES = 1024 * 1024


class Renderer(Protocol):
    """Renders a shielded template; raises ``RenderFailure``."""

    def render(self, template: str, variables: dict[str, Any]) -> str: ...


@dataclass(slots=True)
class ParsedSpec:
    spec: WorkflowSpec
    plan: Plan
    rendered: str  # the rendered workflow text, Gantry's tokens in canonical form
    loaded: Loaded  # the parsed YAML with a line per path, for later refusals

    def to_chunks(self, groups_per_chunk: int = 100) -> list[bytes]:
        """Pickled in pieces, keeping only what the service reads, for ``from_chunks``.

        The service needs the plan, the spec's groups and the lines of groups, tasks and
        their resources; not the parsed values nor the other two thirds of a 10,000-task
        spec's 100,000 lines. Of the spec's tasks it reads only the names, sources and
        resources (the plan has the rest), so the copy it gets has no commands or files. Pieces let the server unpickle a big plan a little at a time,
        so the thread doing it never holds the interpreter for long.
        """
        lines = self.loaded.lines
        head_lines = {p: n for p, n in lines.items() if len(p) <= 2}
        head = (
            dataclasses.replace(self.spec, groups=[]),
            dataclasses.replace(self.plan, groups=[]),
            self.rendered,
            head_lines,
        )
        chunks = [pickle.dumps(head, protocol=pickle.HIGHEST_PROTOCOL)]
        for start in range(0, len(self.spec.groups), groups_per_chunk):
            spec_groups = [_slim(g) for g in self.spec.groups[start : start + groups_per_chunk]]
            kept: dict[Path, int] = {}
            for group in spec_groups:
                wanted = [group.source]
                for task in group.tasks:
                    wanted += [task.source, (*task.source, "resource"), (*task.source, "resources")]
                for path in wanted:
                    while len(path) > 2 and path not in kept:
                        if path in lines:
                            kept[path] = lines[path]
                        path = path[:-1]
            piece = (spec_groups, self.plan.groups[start : start + groups_per_chunk], kept)
            chunks.append(pickle.dumps(piece, protocol=pickle.HIGHEST_PROTOCOL))
        return chunks

    @classmethod
    def from_chunks(cls, chunks: list[bytes], between: Callable[[], None]) -> ParsedSpec:
        """The inverse of ``to_chunks``; ``between`` runs after each piece (to yield)."""
        spec, plan, rendered, lines = pickle.loads(chunks[0])  # noqa: S301 - our own worker
        for chunk in chunks[1:]:
            between()
            spec_groups, plan_groups, kept = pickle.loads(chunk)  # noqa: S301
            spec.groups += spec_groups
            plan.groups += plan_groups
            lines.update(kept)
        return cls(spec, plan, rendered, Loaded(None, lines))


def _slim(group: GroupSpec) -> GroupSpec:
    """``group`` with only the names, sources and resources of its tasks (see to_chunks)."""
    tasks = [
        TaskSpec(
            t.name, t.image, [], lead=t.lead, resource=t.resource, resources=t.resources,
            source=t.source,
        )
        for t in group.tasks
    ]  # fmt: skip
    return GroupSpec(group.name, tasks, group.barrier, group.ignore_nonlead, group.source)


def parse_spec(
    text: str,
    set_values: dict[str, Any] | None,
    renderer: Renderer | None,
    *,
    max_tasks: int | None = None,
) -> ParsedSpec:
    """Render, parse, validate and plan a spec; raise ``SpecError`` naming every issue.

    This runs in the calling process: the server calls it only inside a capped spec worker
    (``TemplateRenderer.parse``). ``renderer`` is used only when the text has template
    syntax, and may be None where no spec with templates is expected. ``max_tasks`` refuses
    a workflow of more tasks (``GANTRY_MAX_TASKS_PER_WORKFLOW``).
    """
    if len(text) > MAX_SPEC_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise SpecError([SpecIssue("spec", None, "the spec is larger than 1 MiB")])
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate from a JSON \ud800 escape
        line = text.count("\n", 0, exc.start) + 1
        raise SpecError(
            [SpecIssue("spec", line, "the spec contains a character that is not valid text")]
        ) from None
    if not text.strip():
        raise SpecError(
            [SpecIssue("spec", None, "the spec is empty; it needs a `workflow` section")]
        )
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise SpecError(
            [SpecIssue("spec", line, "the spec contains a NUL character (\\0); remove it")]
        )
    check_set_values(set_values)
    sections = split_sections(text)
    variables = dict(sections.default_values)
    variables.update(set_values or {})
    shielded = shield(sections.template)
    if has_jinja(shielded.text):
        if renderer is None:
            raise SpecError([SpecIssue("spec", None, "templates are not available here")])
        _check_set_names(shielded, set_values, sections.default_values)
        try:
            rendered = renderer.render(shielded.text, variables)
        except RenderFailure as exc:
            raise SpecError(
                [SpecIssue("spec", exc.line, exc.message)],
                title="The workflow spec's template could not be rendered",
            ) from None
        line_map = LineMap.between(shielded.text, rendered)
    else:
        if set_values:
            names = ", ".join(sorted(set_values))
            raise SpecError(
                [
                    SpecIssue(
                        "set",
                        None,
                        f"the spec has no template variables, so `set` ({names}) "
                        "would change nothing; remove it",
                    )
                ]
            )
        rendered, line_map = shielded.text, LineMap()
    if (
        len(rendered) > MAX_RENDERED
        or len(rendered.encode("utf-8", "surrogatepass")) > MAX_RENDERED
    ):
        raise SpecError([SpecIssue("spec", None, "the rendered spec is larger than 4 MiB")])
    node = compose_yaml(rendered, line_map)
    if max_tasks is not None and node is not None:
        _check_task_count(_count_tasks(node), max_tasks, line_map)
    loaded = construct_yaml(node, line_map)
    if shielded.tokens:  # nothing to put back otherwise: skip a walk over every value
        loaded.data = _restore(loaded.data, shielded)
    spec = validate(loaded)
    plan = make_plan(spec, loaded)
    if max_tasks is not None:  # exact, whatever merge keys did to the count above
        where = ("workflow", "groups" if "groups" in loaded.data["workflow"] else "tasks")
        _check_task_count((plan.task_count, where, loaded.line(where)), max_tasks, LineMap())
    return ParsedSpec(spec=spec, plan=plan, rendered=shielded.restore(rendered), loaded=loaded)


def _count_tasks(root: yaml.Node) -> tuple[int, Path, int | None]:
    """The tasks the node graph lists, before anything is built: refuse 100,000 tasks cheaply."""
    workflow = _value_of(root, "workflow")
    for key in ("tasks", "groups"):
        found = _key_and_value(workflow, key)
        if found is None or not isinstance(found[1], yaml.SequenceNode):
            continue
        key_node, items = found
        if key == "tasks":
            count = len(items.value)
        else:
            count = 0
            for group in items.value:
                tasks = _value_of(group, "tasks")
                count += len(tasks.value) if isinstance(tasks, yaml.SequenceNode) else 0
        return count, ("workflow", key), key_node.start_mark.line + 1
    return 0, ("workflow",), None


def _key_and_value(node: yaml.Node | None, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    found = None
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            found = (key_node, value_node)
    return found


def _value_of(node: yaml.Node | None, key: str) -> yaml.Node | None:
    found = _key_and_value(node, key)
    return found[1] if found else None


def _check_task_count(
    counted: tuple[int, Path, int | None], max_tasks: int, line_map: LineMap
) -> None:
    count, path, line = counted
    if count > max_tasks:
        raise SpecError(
            [
                SpecIssue(
                    format_path(path),
                    line_map(line),
                    f"the workflow has {count:,} tasks; a workflow may have at most "
                    f"{max_tasks:,} (GANTRY_MAX_TASKS_PER_WORKFLOW)",
                )
            ],
            title="The workflow has too many tasks",
        )


def check_set_values(values: dict[str, Any] | None) -> None:
    """Refuse `set` values nested over MAX_DEPTH deep or holding NUL, before anything uses them.

    They come from the JSON body, not the spec, so they have no line. Iterative: a 3,000-deep
    value must not exhaust the recursion limit here, in Jinja or in pickle.
    """
    if not values:
        return
    issues: list[SpecIssue] = []
    stack: list[tuple[Any, Path]] = [(values, ("set",))]
    while stack and len(issues) < 20:
        value, path = stack.pop()
        if len(path) - 1 > MAX_DEPTH:
            issues.append(
                SpecIssue(
                    format_path(path[:2]),
                    None,
                    f"this value nests more than {MAX_DEPTH} deep; flatten it",
                )
            )
            continue
        if isinstance(value, str):
            if "\x00" in value:
                issues.append(
                    SpecIssue(format_path(path), None, "this value contains a NUL character")
                )
        elif isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in str(key):
                    issues.append(
                        SpecIssue(format_path(path), None, "a name here contains a NUL character")
                    )
                    continue
                stack.append((item, (*path, str(key))))
        elif isinstance(value, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
    if issues:
        raise SpecError(issues, title="The submission's `set` values are invalid")


def _check_set_names(
    shielded: Shielded, set_values: dict[str, Any] | None, defaults: dict[str, Any]
) -> None:
    """Refuse `set` names the template never uses: a typo must not pass silently."""
    if not set_values:
        return
    from jinja2 import TemplateSyntaxError, meta
    from jinja2.sandbox import SandboxedEnvironment

    try:
        used = meta.find_undeclared_variables(SandboxedEnvironment().parse(shielded.text))
    except TemplateSyntaxError:
        return  # the render reports the syntax error with its line
    unused = sorted(k for k in set_values if k not in used)
    if unused:
        raise SpecError(
            [
                SpecIssue(
                    f"set.{name}",
                    None,
                    f"the spec does not use template variable '{name}'"
                    + (f"; it uses: {', '.join(sorted(used))}" if used else ""),
                )
                for name in unused
            ]
        )


def _restore(value: Any, shielded: Shielded) -> Any:
    if isinstance(value, str):
        return shielded.restore(value)
    if isinstance(value, list):
        return [_restore(v, shielded) for v in value]
    if isinstance(value, dict):
        return {k: _restore(v, shielded) for k, v in value.items()}
    return value
