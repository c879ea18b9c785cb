"""Property tests: generated specs (valid, mutated, hostile) never crash the spec pipeline.

Through ``parse_spec``, through the capped spec workers, and through ``POST
/api/v1/workflows`` with ``dry_run``: a spec is accepted, or refused with issues that each
name a path and a line. The rule for lines: an issue's line is None only for a refusal of
the whole spec (path ``spec``: its size, the time or memory it took, a template error Jinja
cannot place) or of the body's ``set`` values (path ``set…``), which are not in the spec text.

Bounded: few examples each, no deadlines (the workers' CPU limit is what bounds time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.spec.errors import SpecError
from app.spec.parse import parse_spec
from app.spec.template import TemplateRenderer
from tests.support import ADMIN_TOKEN, InProcessServer

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def assert_names_path_and_line(issues: list[dict[str, Any]], text: str) -> None:
    """The rule every refusal follows (see the module docstring)."""
    assert issues, "a refusal must list what is wrong"
    last_line = text.count("\n") + 1
    for issue in issues:
        path, line, message = issue["path"], issue["line"], issue["message"]
        assert isinstance(path, str) and path, issue
        assert isinstance(message, str) and message, issue
        if line is None:
            assert path == "spec" or path.startswith("set"), issue
        else:
            assert isinstance(line, int) and 1 <= line <= last_line, (issue, last_line)


def check(text: str, call: Any) -> Any:
    try:
        return call()
    except SpecError as err:
        assert_names_path_and_line([i.as_dict() for i in err.issues], text)
        return None


# -- strategies ----------------------------------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)
# Text a valid spec may hold (no control characters), and any text at all for hostile input.
# No "{": "{{", "{%" and "{#" would make a valid spec a template, which this parser (without
# spec workers) refuses; templates have tests of their own.
words = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"], exclude_characters="{"),
    max_size=12,
)
any_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
quantities = st.sampled_from(["1", "500m", "0.5", "2", "64Mi", "1Gi", "1.5Gi", "10G", "4"])


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 5))
    tasks = []
    for i in range(count):
        task: dict[str, Any] = {
            "name": f"{draw(names)}-{i}",
            "image": draw(st.sampled_from(["ubuntu:24.04", "alpine", "python:3.12"])),
            "command": [draw(st.sampled_from(["echo", "sh", "true"]))],
        }
        if draw(st.booleans()):
            task["args"] = draw(st.lists(words, max_size=3))
        if draw(st.booleans()):
            task["environment"] = draw(
                st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,6}", fullmatch=True), words)
            )
        if draw(st.booleans()):
            task["resources"] = {
                "cpu": draw(st.sampled_from(["1", "500m", 2, 0.25])),
                "memory": draw(st.sampled_from(["64Mi", "1Gi", "512M"])),
                "gpu": draw(st.integers(0, 8)),
            }
        if i and draw(st.booleans()):
            task["inputs"] = [{"task": tasks[draw(st.integers(0, i - 1))]["name"]}]
        tasks.append(task)
    workflow: dict[str, Any] = {"name": draw(names), "tasks": tasks}
    if draw(st.booleans()):
        workflow["timeout"] = {"exec_timeout": draw(st.sampled_from(["10m", "2h", "1d", 60]))}
    return {"workflow": workflow}


def dump(spec: dict[str, Any]) -> str:
    return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)


HOSTILE_SCALARS = [
    ".nan", ".inf", "-.inf", "2147483648", "99999999999999999999Ei", "25000d", "1e999999",
    '"\\0"', '"a\\0b"', "*nowhere", "&a [*a]", "!!python/object:os.system x", "!custom x",
    "2001-13-45", "1" + "0" * 5000, "[" * 40 + "]" * 40, "{{", "{% for %}", "{{ 1/0 }}",
    "{{ ''.__class__ }}", "{{input:99}}", "{{host:nowhere}}", "<<: *nowhere", "? [a]\n: b",
    "'", '"', "- - - x", "\t", "~", "", "{a: 1, a: 2}", "0x1F", "0o17", "1_000", "-1",
]  # fmt: skip

ALIAS_GROWTH = "".join(
    f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else ', '.join(['x'] * 9)}]\n"
    for i in range(7)
)


@st.composite
def mutated_specs(draw: st.DrawFn) -> str:
    """A valid spec with one to three edits: lines dropped, doubled or broken, values replaced."""
    lines = dump(draw(valid_specs())).splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.sampled_from(["drop", "double", "value", "insert", "indent"]))
        if edit == "drop" and len(lines) > 1:
            del lines[i]
        elif edit == "double":
            lines.insert(i, lines[i])
        elif edit == "value" and ":" in lines[i]:
            key = lines[i].split(":", 1)[0]
            lines[i] = f"{key}: {draw(st.sampled_from(HOSTILE_SCALARS))}\n"
        elif edit == "insert":
            lines.insert(i, draw(st.text(max_size=20)) + "\n")
        else:
            lines[i] = " " * draw(st.integers(0, 6)) + lines[i].lstrip()
    text = "".join(lines)
    if draw(st.integers(0, 9)) == 0:
        text += "default-values:\n" + ALIAS_GROWTH
    return text


@st.composite
def hostile_specs(draw: st.DrawFn) -> str:
    """A valid spec with a hostile value in one field of one task."""
    spec = draw(valid_specs())
    task = spec["workflow"]["tasks"][0]
    field = draw(st.sampled_from(["environment", "args", "resources", "name", "command"]))
    text = dump(spec)
    marker = "HOSTILEVALUE"
    if field == "environment":
        task["environment"] = {"A": marker}
    elif field == "args":
        task["args"] = [marker]
    elif field == "resources":
        task["resources"] = {draw(st.sampled_from(["cpu", "gpu", "memory", "storage"])): marker}
    elif field == "name":
        task["name"] = marker
    else:
        task["command"] = [marker]
    text = dump(spec).replace(marker, draw(st.sampled_from(HOSTILE_SCALARS)).replace("\n", " "))
    return text


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    any_text,
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=12,
)


def deep(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


set_values = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["v", "name", "n"]), json_values, max_size=2),
    st.integers(30, 40).map(lambda d: {"v": deep(d)}),
)
TEMPLATED = (
    "workflow:\n  name: t\n  tasks:\n  - name: a\n    image: x\n    command: [echo, '{{ v }}']\n"
)

any_spec = st.one_of(valid_specs().map(dump), mutated_specs(), hostile_specs())


# -- through the parser, in process and in the workers -------------------------------------


@pytest.fixture(scope="module")
def workers() -> Iterator[TemplateRenderer]:
    r = TemplateRenderer(max_tasks=10_000)
    yield r
    r.close()


@SETTINGS
@given(spec=valid_specs())
def test_valid_specs_are_accepted_with_every_task(spec: dict[str, Any]) -> None:
    plan = parse_spec(dump(spec), None, None).plan
    assert plan.task_count == len(spec["workflow"]["tasks"])


@SETTINGS
@given(text=any_spec)
def test_any_spec_is_accepted_or_refused_naming_path_and_line(text: str) -> None:
    check(text, lambda: parse_spec(text, None, None, max_tasks=10_000))


@settings(SETTINGS, max_examples=30)
@given(text=any_spec, values=set_values)
def test_the_workers_accept_or_refuse_naming_path_and_line(
    workers: TemplateRenderer, text: str, values: dict[str, Any] | None
) -> None:
    check(text, lambda: workers.parse(text, values))
    check(TEMPLATED, lambda: workers.parse(TEMPLATED, values))


# -- through the API -----------------------------------------------------------------------


# The in-process server shares this process and uses `random` while examples are drawn.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
async def test_the_api_never_answers_5xx_and_names_path_and_line(server: InProcessServer) -> None:
    """Hypothesis runs in a thread with a blocking client; the server keeps this loop."""

    @settings(SETTINGS, max_examples=25)
    @given(text=any_spec, values=set_values)
    def post(text: str, values: dict[str, Any] | None) -> None:
        body: dict[str, Any] = {"spec": text, "dry_run": True}
        if values is not None:
            body["set"] = values
        r = client.post("/api/v1/workflows", json=body)
        assert r.status_code < 500, r.text[:500]
        if r.status_code == 422:
            assert r.headers["content-type"].startswith("application/problem+json")
            assert_names_path_and_line(r.json()["errors"], text)
        else:
            assert r.status_code in (200, 400), r.text[:500]

    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=server.base, headers=headers, timeout=60) as client:
        await asyncio.to_thread(post)
