"""Spec source text: top-level sections split textually, and YAML loaded with a line per path.

Templating comes before YAML parsing (a spec may be invalid YAML until rendered), so the
`default-values` section is found by its top-level key line and blanked out of the text that
is rendered; blanking rather than cutting keeps every other line at its submitted number.
"""

from __future__ import annotations

import bisect
import difflib
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from app.spec.errors import Path, SpecError, SpecIssue, format_path

__all__ = (
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "LineMap",
    "Loaded",
    "Sections",
    "compose_yaml",
    "construct_yaml",
    "load_yaml",
    "split_sections",
)

_TOP_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:")
_KNOWN_SECTIONS = ("version", "workflow", "default-values")
_STR_TAG = "tag:yaml.org,2002:str"

# Aliases may add at most this many nodes to what the text writes out: `[*a, *a]` nested six
# deep is 474 bytes but billions of nodes once expanded. A 10,000-task spec written out needs
# no alias at all, and its own nodes are bounded by the text's size (4 MiB).
MAX_ALIAS_NODES = 200_000
# Mappings and lists nest at most this deep: a spec needs about 8 levels, structured
# default-values a few more; the builders below and pickle recurse once per level.
MAX_DEPTH = 32

try:  # the C loader is much faster on large specs
    _Base: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - PyYAML without libyaml
    _Base = yaml.SafeLoader


class _Loader(_Base):  # type: ignore[valid-type,misc]
    """SafeLoader resolving tags as it does, with its Python callbacks made cheap.

    libyaml composes in C but calls ``resolve``, ``descend_resolver`` and ``ascend_resolver``
    in Python for every node: 130,000 nodes of a 10,000-task spec. Safe loading has no path
    resolvers, so the last two have nothing to do; a scalar's tag depends only on its text
    and whether it was plain, and most scalars (keys, images, commands) repeat, so it is
    looked up once per distinct text.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._scalar_tags: dict[tuple[str, bool, bool], str] = {}

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode:
            key = (value, implicit[0], implicit[1])
            tag = self._scalar_tags.get(key)
            if tag is None:
                tag = self._scalar_tags[key] = super().resolve(kind, value, implicit)
            return tag
        return super().resolve(kind, value, implicit)


# The two no-op callbacks above are only right while safe loading has no path resolvers.
assert not _Base.yaml_path_resolvers


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
        a = [s.strip() for s in submitted.splitlines()]
        b = [s.strip() for s in rendered.splitlines()]
        if len(a) == len(b):
            return cls(None)  # inline substitutions only: lines did not move
        # Lines repeated in more than 1% of the rendered text (a loop's body, the fields every
        # task writes out) seed no match but still extend one (difflib's autojunk). Without
        # it a spec writing out 2,000 tasks before a loop took 6 s here, the matcher being
        # quadratic in how often a line repeats; now it is about linear.
        matcher = difflib.SequenceMatcher(None, a, b, autojunk=True)
        mapping = [0] * (len(b) + 1)  # one past the end: YAML may point at the end of text
        for block in matcher.get_matching_blocks():
            for k in range(block.size):
                mapping[block.b + k] = block.a + k + 1
        # Each unmatched rendered line (a loop's iterations, a line a template changed) maps
        # to the first submitted line of the same text after the matched line before it and
        # not past the one after it (the loop's body), else to the matched line before it.
        upper = [len(a)] * (len(b) + 1)
        bound = len(a)
        for j in range(len(b), -1, -1):
            if mapping[j]:
                bound = mapping[j]
            upper[j] = bound
        where: dict[str, list[int]] = {}
        for i, text in enumerate(a):
            where.setdefault(text, []).append(i + 1)
        anchor = 1
        for j in range(len(b) + 1):
            if mapping[j]:
                anchor = mapping[j]
                continue
            line = anchor
            found = where.get(b[j]) if j < len(b) else None
            if found:
                k = bisect.bisect_right(found, anchor)
                if k < len(found) and found[k] <= upper[j]:
                    line = found[k]
            mapping[j] = line
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
    return construct_yaml(compose_yaml(text, lm), lm)


def compose_yaml(text: str, lm: LineMap) -> yaml.Node | None:
    """The document's node graph (libyaml), refused when aliases or nesting go too far.

    Composing is cheap even for an alias bomb, because an alias is the same node object as
    its anchor; only constructing would expand it. So the expanded size is counted here first.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = lm(mark.line + 1) if mark else None
        problem = exc.problem or "invalid YAML"
        context = f" {exc.context}" if exc.context else ""
        raise SpecError(
            [SpecIssue("spec", line, f"the spec is not valid YAML: {problem}{context}")],
            title="The workflow spec is not valid YAML",
        ) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, such as NUL
        # libyaml counts the offset in bytes of the UTF-8 text.
        line = lm(text.encode("utf-8", "replace")[: exc.position].count(b"\n") + 1)
        raise SpecError(
            [SpecIssue("spec", line, f"the spec is not valid YAML: {exc.reason}")],
            title="The workflow spec is not valid YAML",
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError([SpecIssue("spec", None, f"the spec is not valid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    if node is not None:
        _check_shape(node, text, lm)
    return node


def _check_shape(root: yaml.Node, text: str, lm: LineMap) -> None:
    """Refuse nesting deeper than MAX_DEPTH and aliases adding over MAX_ALIAS_NODES nodes.

    Iterative, with each collection's expanded size and height memoised by identity, so it
    costs one visit per distinct node however often aliases repeat it. Scalars are counted
    but not memoised: an alias of a scalar is the same string, and costs nothing to build.
    """
    if _plain_tree(root):
        return
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    open_: set[int] = set()
    added = 0  # nodes that aliases add beyond the text
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            total, tallest = 1, 0
            for child in _children(node):
                if isinstance(child, yaml.CollectionNode):
                    total += size[id(child)]
                    tallest = max(tallest, height[id(child)])
                else:
                    total += 1
            size[key], height[key] = total, tallest + 1
            continue
        if key in size:  # a second reference: an alias
            added += size[key]
            if added > MAX_ALIAS_NODES:
                _refuse_alias(node, text, lm)
            if depth + height[key] - 1 > MAX_DEPTH:
                _refuse_depth(root, node, lm)
            continue
        if key in open_:
            _refuse_alias(node, text, lm)  # an alias inside its own anchor
        if depth > MAX_DEPTH:
            _refuse_depth(root, node, lm)
        open_.add(key)
        stack.append((node, depth, True))
        stack.extend(
            (child, depth + 1, False)
            for child in reversed(_children(node))
            if isinstance(child, yaml.CollectionNode)
        )


def _plain_tree(root: yaml.Node) -> bool:
    """Whether no collection is reached twice (no alias of one) and none nests too deep.

    The common case, checked in one quick walk; otherwise ``_check_shape`` measures what the
    aliases add and names the place it refuses.
    """
    scalar, mapping = yaml.ScalarNode, yaml.MappingNode
    if root.__class__ is scalar:
        return True
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH or id(node) in seen:
            return False
        seen.add(id(node))
        depth += 1
        if node.__class__ is mapping:
            for key, value in node.value:
                if key.__class__ is not scalar:
                    stack.append((key, depth))
                if value.__class__ is not scalar:
                    stack.append((value, depth))
        else:
            for item in node.value:
                if item.__class__ is not scalar:
                    stack.append((item, depth))
    return True


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _refuse_depth(root: yaml.Node, node: yaml.Node, lm: LineMap) -> None:
    raise SpecError(
        [
            SpecIssue(
                _path_to(root, node),
                lm(node.start_mark.line + 1),
                f"this value nests mappings and lists more than {MAX_DEPTH} deep; flatten it",
            )
        ],
        title="The workflow spec is nested too deeply",
    )


def _path_to(root: yaml.Node, target: yaml.Node) -> str:
    """The field path of ``target`` (first found), for a refusal; one walk, only then."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, Path]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if node is target:
            return format_path(path) or "spec"
        if id(node) in seen or len(path) > MAX_DEPTH + 1:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                stack.append((value_node, (*path, _key_text(key_node))))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, i)) for i, item in enumerate(node.value))
    return "spec"  # pragma: no cover - target comes from this graph


def _key_text(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else "?"


def _refuse_alias(node: yaml.Node, text: str, lm: LineMap) -> None:
    """Name the alias itself: composed nodes keep only their anchor's line."""
    line, path, recursive = _find_alias(text)
    if line is None:  # pragma: no cover - the event scan finds what the graph showed
        line = node.start_mark.line + 1
    if recursive:
        message = "this alias refers to the anchor that contains it, so it never ends"
    else:
        message = (
            f"aliases expand the spec by more than {MAX_ALIAS_NODES:,} values here; "
            "write the repeated values out, or repeat them with a template loop"
        )
    raise SpecError(
        [SpecIssue(format_path(path) or "spec", lm(line), message)],
        title="The workflow spec's aliases expand too far",
    )


class _Frame:
    """An open collection while replaying events."""

    __slots__ = ("anchor", "count", "index", "key", "mapping", "part")

    def __init__(self, anchor: str | None, mapping: bool, part: str | int | None) -> None:
        self.anchor, self.mapping, self.part = anchor, mapping, part
        self.count, self.index, self.key = 1, 0, "?"

    def child_part(self, event: yaml.Event) -> str | int | None:
        """The path part of the node that ``event`` starts here; None for a mapping key."""
        i = self.index
        self.index += 1
        if not self.mapping:
            return i
        if i % 2 == 0:
            self.key = str(event.value) if isinstance(event, yaml.ScalarEvent) else "?"
            return None
        return self.key


def _find_alias(text: str) -> tuple[int | None, Path, bool]:
    """Replay the events to find the alias that crosses MAX_ALIAS_NODES, or recurses.

    Only runs for a spec about to be refused; it counts as ``_check_shape`` does.
    """
    loader = _Loader(text)
    sizes: dict[str, int] = {}
    frames = [_Frame(None, False, None)]
    added = 0

    def path(part: str | int | None) -> Path:
        parts = [f.part for f in frames[2:]] + [part]
        return tuple(p for p in parts if p is not None)

    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.CollectionEndEvent):
                done = frames.pop()
                if done.anchor is not None:
                    sizes[done.anchor] = done.count
                frames[-1].count += done.count
                continue
            if not isinstance(event, yaml.NodeEvent):
                continue
            part = frames[-1].child_part(event)
            if isinstance(event, yaml.AliasEvent):
                line = event.start_mark.line + 1 if event.start_mark else None
                if any(f.anchor == event.anchor for f in frames):
                    return line, path(part), True
                grown = sizes.get(event.anchor or "", 1)
                added += grown
                frames[-1].count += grown
                if added > MAX_ALIAS_NODES:
                    return line, path(part), False
            elif isinstance(event, yaml.CollectionStartEvent):
                mapping = isinstance(event, yaml.MappingStartEvent)
                frames.append(_Frame(event.anchor, mapping, part))
            elif isinstance(event, yaml.ScalarEvent):
                if event.anchor is not None:
                    sizes[event.anchor] = 1
                frames[-1].count += 1
    finally:
        loader.dispose()
    return None, (), False


def construct_yaml(node: yaml.Node | None, lm: LineMap) -> Loaded:
    """Python values from a checked node graph, with the line of every path."""
    loader = _Loader("")
    out = Loaded(None)
    issues: list[SpecIssue] = []
    try:
        if node is not None:
            out.data = _build(loader, node, (), out, issues, lm)
    finally:
        loader.dispose()
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
        own = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
        loader.flatten_mapping(node)  # YAML merge keys (<<): merged pairs come first
        merged = len(node.value) - own
        result: dict[Any, Any] = {}
        from_merge: set[Any] = set()
        for index, (key_node, value_node) in enumerate(node.value):
            key = _scalar(loader, key_node, path, issues, lm)
            if key is _BAD:
                continue
            if not isinstance(key, str | int | float | bool):
                issues.append(
                    SpecIssue(
                        format_path(path) or "spec",
                        line,
                        "mapping keys must be plain names, not structures",
                    )
                )
                continue
            if isinstance(key, str):
                child: Path = (*path, key)
            else:
                child = (*path, str(key))
            out.lines[child] = lm(key_node.start_mark.line + 1) or 0
            value = _build(loader, value_node, child, out, issues, lm)
            if index < merged:
                from_merge.add(key)
            elif key in from_merge:
                from_merge.discard(key)  # a key given here overrides a merged one
            elif key in result and result[key] != value:
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
    value = _scalar(loader, node, path, issues, lm)
    if value is _BAD:
        return None
    if not isinstance(value, str):
        out.raw[path] = node.value
    return value


_BAD = object()


def _scalar(
    loader: yaml.SafeLoader, node: yaml.Node, path: Path, issues: list[SpecIssue], lm: LineMap
) -> Any:
    """One scalar (or a key), or ``_BAD`` after recording why it cannot be read."""
    if node.tag == _STR_TAG and isinstance(node, yaml.ScalarNode):
        value: Any = node.value  # most scalars: skip the generic constructor's bookkeeping
    else:
        try:
            value = loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            # `!!python/object`, a 5,000-digit integer, the 13th month of a date...
            problem = getattr(exc, "problem", None) or str(exc)
            issues.append(
                SpecIssue(
                    format_path(path) or "spec",
                    lm(node.start_mark.line + 1),
                    f"this value cannot be read: {problem}",
                )
            )
            return _BAD
    if isinstance(value, str) and "\x00" in value:
        # PostgreSQL text cannot hold NUL, and no program argument or variable can either.
        issues.append(
            SpecIssue(
                format_path(path) or "spec",
                lm(node.start_mark.line + 1),
                "this text contains a NUL character (\\0), which Gantry cannot store; remove it",
            )
        )
        return _BAD
    return value
