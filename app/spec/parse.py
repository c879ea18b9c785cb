"""The one entry point: submitted text and ``set`` values in, a checked plan out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.spec.errors import SpecError, SpecIssue
from app.spec.model import WorkflowSpec
from app.spec.plan import Plan, make_plan
from app.spec.source import LineMap, Loaded, load_yaml, split_sections
from app.spec.template import RenderFailure, Shielded, TemplateRenderer, has_jinja, shield
from app.spec.validate import validate

__all__ = ("MAX_SPEC_BYTES", "ParsedSpec", "parse_spec")

MAX_SPEC_BYTES = 1024 * 1024


@dataclass(slots=True)
class ParsedSpec:
    spec: WorkflowSpec
    plan: Plan
    rendered: str  # the rendered workflow text, Gantry's tokens in canonical form
    loaded: Loaded  # the parsed YAML with a line per path, for later refusals


def parse_spec(
    text: str, set_values: dict[str, Any] | None, renderer: TemplateRenderer | None
) -> ParsedSpec:
    """Render, parse, validate and plan a spec; raise ``SpecError`` naming every issue.

    ``renderer`` runs Jinja in capped child processes; it is only used when the text has
    template syntax, and may be None where no spec with templates is expected.
    """
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise SpecError([SpecIssue("spec", None, "the spec is larger than 1 MiB")])
    if not text.strip():
        raise SpecError(
            [SpecIssue("spec", None, "the spec is empty; it needs a `workflow` section")]
        )
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
    loaded = load_yaml(rendered, line_map)
    loaded.data = _restore(loaded.data, shielded)
    spec = validate(loaded)
    plan = make_plan(spec, loaded)
    return ParsedSpec(spec=spec, plan=plan, rendered=shielded.restore(rendered), loaded=loaded)


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
