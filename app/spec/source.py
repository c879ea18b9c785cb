"""Spec source text: top-level sections split textually, and YAML loaded with a line per path.

Templating comes before YAML parsing (a spec may be invalid YAML until rendered), so the
`default-values` section is found by its top-level key line and blanked out of the text that
is rendered; blanking rather than cutting keeps every other line at its submitted number.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from app.spec.errors import Path, SpecError, SpecIssue, format_path

__all__ = ("LineMap", "Loaded", "Sections", "load_yaml", "split_sections")

_TOP_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:")
_KNOWN_SECTIONS = ("version", "workflow", "default-values")

try:  # the C loader is much faster on large specs
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - PyYAML without libyaml
    _Loader = yaml.SafeLoader


@dataclass(slots=True)
class Sections:
    """``template`` is the text to render; ``default_values`` the parsed defaults."""

    template: str
    default_values: dict[str, Any]
    default_values_line: int | None


def split_sections(text: str) -> Sections:
    """Find `default-values` by its top-level key line and blank it out of the template."""
    lines = text.splitlines(keepends=True)
    starts: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        m = _TOP_KEY.match(line)
        if m:
            starts.append((i, m.group(1)))
    issues = []
    for i, key in starts:
        if key not in _KNOWN_SECTIONS:
            issues.append(
                SpecIssue(
                    key,
                    i + 1,
                    f"unknown top-level section '{key}'; a spec has `workflow`, "
                    "optionally `version: 2` and optionally `default-values`",
                )
            )
    dv = [(n, i) for n, (i, key) in enumerate(starts) if key == "default-values"]
    if len(dv) > 1:
        issues.append(
            SpecIssue(
                "default-values",
                starts[dv[1][0]][0] + 1,
                "`default-values` appears more than once; merge them into one section",
            )
        )
    if issues:
        raise SpecError(issues)
    if not dv:
        return Sections(text, {}, None)
    n, begin = dv[0]
    end = starts[n + 1][0] if n + 1 < len(starts) else len(lines)
    section = "".join(lines[begin:end])
    # Blank the section's lines, keeping line breaks so later lines keep their numbers.
    template = "".join(lines[:begin]) + "\n" * (end - begin) + "".join(lines[end:])
    loaded = load_yaml("\n" * begin + section)
    values = loaded.data.get("default-values") if isinstance(loaded.data, dict) else None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise SpecError(
            [
                SpecIssue(
                    "default-values",
                    begin + 1,
                    "`default-values` must be a mapping of variable names to values",
                )
            ]
        )
    return Sections(template, values, begin + 1)


@dataclass(slots=True)
class LineMap:
    """Maps lines of the rendered text back to lines of the submitted text."""

    mapping: list[int] | None = None  # index: rendered line - 1; value: submitted line

    @classmethod
    def between(cls, submitted: str, rendered: str) -> LineMap:
        a = submitted.splitlines()
        b = rendered.splitlines()
        if len(a) == len(b):
            return cls(None)  # inline substitutions only: lines did not move
        mapping = [0] * (len(b) + 1)
        matcher = difflib.SequenceMatcher(
            None, [s.strip() for s in a], [s.strip() for s in b], autojunk=False
        )
        last = 1
        filled = [False] * (len(b) + 1)
        for block in matcher.get_matching_blocks():
            for k in range(block.size):
                mapping[block.b + k] = block.a + k + 1
                filled[block.b + k] = True
        for j in range(len(mapping)):
            if filled[j]:
                last = mapping[j]
            else:
                mapping[j] = last
        return cls(mapping)

    def __call__(self, rendered_line: int | None) -> int | None:
        if rendered_line is None or self.mapping is None:
            return rendered_line
        idx = rendered_line - 1
        if 0 <= idx < len(self.mapping):
            return self.mapping[idx]
        return self.mapping[-1] if self.mapping else rendered_line


@dataclass(slots=True)
class Loaded:
    """Parsed YAML, the line of each path, and the source text of non-string scalars."""

    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    raw: dict[Path, str] = field(default_factory=dict)

    def line(self, path: Path) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)


def load_yaml(text: str, line_map: LineMap | None = None) -> Loaded:
    """Parse one YAML document, recording lines; differing duplicate keys are refused."""
    lm = line_map or LineMap()
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = lm(mark.line + 1) if mark else None
        problem = exc.problem or "invalid YAML"
        context = f" {exc.context}" if exc.context else ""
        raise SpecError(
            [SpecIssue("", line, f"the spec is not valid YAML: {problem}{context}")],
            title="The workflow spec is not valid YAML",
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError([SpecIssue("", None, f"the spec is not valid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    out = Loaded(None)
    issues: list[SpecIssue] = []
    if node is not None:
        out.data = _build(loader, node, (), out, issues, lm)
    if issues:
        raise SpecError(issues)
    return out


def _build(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: Path,
    out: Loaded,
    issues: list[SpecIssue],
    lm: LineMap,
) -> Any:
    line = lm(node.start_mark.line + 1)
    out.lines.setdefault(path, line or 0)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # YAML merge keys (<<)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool):
                issues.append(
                    SpecIssue(
                        format_path(path), line, "mapping keys must be plain names, not structures"
                    )
                )
                continue
            if isinstance(key, str):
                child: Path = (*path, key)
            else:
                child = (*path, str(key))
            out.lines[child] = lm(key_node.start_mark.line + 1) or 0
            value = _build(loader, value_node, child, out, issues, lm)
            if key in result and result[key] != value:
                issues.append(
                    SpecIssue(
                        format_path(child),
                        lm(key_node.start_mark.line + 1),
                        f"'{key}' is given twice with different values; keep one",
                    )
                )
            result[key] = value
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(loader, item, (*path, i), out, issues, lm) for i, item in enumerate(node.value)
        ]
    value = loader.construct_object(node, deep=True)
    if not isinstance(value, str) and isinstance(node, yaml.ScalarNode):
        out.raw[path] = node.value
    return value
