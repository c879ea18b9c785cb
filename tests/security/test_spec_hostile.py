"""Hostile specs (issue 7, findings 2, 4 and 7): refused with 422 naming the field and line.

Each was reproduced on `make dev`: an alias bomb took 30 s and 480 MB, NUL bytes and huge
numbers were 500s, `cpu: .nan` was accepted, deep values were RecursionErrors, and `POST
/submit` parsed `default-values` on the event loop. The spec pipeline now runs in capped
worker processes; these tests check the refusals there and through the API.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.spec.errors import SpecError
from app.spec.parse import parse_spec
from app.spec.template import TemplateRenderer

TASK = """\
workflow:
  name: demo
  tasks:
  - name: a
    image: ubuntu
    command: [echo, hi]
"""

# 474 bytes; 9^7 values once expanded. Line 13 holds the alias that crosses the budget.
ALIAS_BOMB = (
    TASK
    + """\
default-values:
  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""
)

# The same growth inside the workflow section, through a task's fields.
WORKFLOW_BOMB = """\
workflow:
  name: demo
  tasks:
  - name: a
    image: ubuntu
    command: [echo, hi]
    args: &a [x, x, x, x, x, x, x, x, x, x]
  - name: b
    image: ubuntu
    command: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
  - name: c
    image: ubuntu
    command: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
    args: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
    environment: {A: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d]}
"""


def nested_environment(depth: int) -> str:
    value = "x"
    for _ in range(depth):
        value = "{k: " + value + "}"
    return TASK + f"    environment:\n      A: {value}\n"


def deep_value(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"k": value}
    return value


def wide(tasks: int) -> str:
    """A short template that renders to ``tasks`` tasks."""
    return (
        "workflow:\n  name: wide\n  tasks:\n"
        f"{{% for i in range({tasks}) %}}\n"
        "  - {name: t{{i}}, image: x, command: [echo, '{{i}}']}\n"
        "{% endfor %}\n"
    )


def refused(text: str, set_values: dict[str, Any] | None = None) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_spec(text, set_values, None)
    return info.value


def only(err: SpecError) -> tuple[str, int | None, str]:
    assert len(err.issues) == 1, err.issues
    issue = err.issues[0]
    return issue.path, issue.line, issue.message


@pytest.fixture(scope="module")
def workers() -> Iterator[TemplateRenderer]:
    r = TemplateRenderer(max_tasks=10_000)
    yield r
    r.close()


# -- the alias bomb ------------------------------------------------------------------------


def test_alias_bomb_in_default_values_is_refused_at_the_alias_line() -> None:
    path, line, message = only(refused(ALIAS_BOMB))
    assert (path, line) == ("default-values.f[1]", 13)
    assert "aliases expand" in message and "200,000" in message


def test_alias_bomb_in_the_workflow_section_is_refused_at_the_alias_line() -> None:
    path, line, message = only(refused(WORKFLOW_BOMB))
    assert (path, line) == ("workflow.tasks[2].environment.A[16]", 15)
    assert "aliases expand" in message


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    path, line, message = only(refused("workflow: &w\n  name: x\n  tasks: [*w]\n"))
    assert (path, line) == ("workflow.tasks[0]", 3) and "contains it" in message


def test_a_merge_key_bomb_is_refused() -> None:
    lines = ["  m0: &m0 {x: 1, y: 2}\n"]
    lines += [f"  m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}]}}\n" for i in range(1, 30)]
    path, line, message = only(refused(TASK + "default-values:\n" + "".join(lines)))
    assert path.startswith("default-values.m") and line is not None and "aliases" in message


def test_modest_aliases_and_merge_keys_still_work() -> None:
    spec = """\
workflow:
  name: demo
  tasks:
  - &base {name: a, image: ubuntu, command: [echo, hi], environment: {A: "1"}}
  - {<<: *base, name: b}
"""
    plan = parse_spec(spec, None, None).plan
    assert [g.tasks[0].environment for g in plan.groups] == [{"A": "1"}, {"A": "1"}]


def test_alias_bomb_is_refused_by_the_worker_and_its_defaults_are_empty(
    workers: TemplateRenderer,
) -> None:
    with pytest.raises(SpecError) as info:
        workers.parse(ALIAS_BOMB, None)
    assert (info.value.issues[0].path, info.value.issues[0].line) == ("default-values.f[1]", 13)
    assert workers.default_values(ALIAS_BOMB) == []
    assert workers.default_values(TASK + "default-values:\n  a: 1\n  b: [1]\n") == [("a", "1")]


# -- NUL, numbers, nesting -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "path", "line"),
    [
        (TASK + '    environment: {A: "x\\0y"}\n', "workflow.tasks[0].environment.A", 7),
        (TASK + '    args: ["\\0"]\n', "workflow.tasks[0].args[0]", 7),
        (TASK.replace("[echo, hi]", '[echo, "h\\0i"]'), "workflow.tasks[0].command[1]", 6),
        (TASK.replace("name: a", 'name: "a\\0"'), "workflow.tasks[0].name", 4),
        (
            TASK + '    files:\n    - {path: /tmp/x, contents: "\\0"}\n',
            "workflow.tasks[0].files[0].contents",
            8,
        ),
        (TASK + '    environment: {"A\\0": x}\n', "workflow.tasks[0].environment", 7),
    ],
)
def test_nul_bytes_are_refused_naming_the_field(spec: str, path: str, line: int) -> None:
    got_path, got_line, message = only(refused(spec))
    assert (got_path, got_line) == (path, line) and "NUL" in message


def test_a_raw_nul_in_the_text_is_refused_at_its_line() -> None:
    _, line, message = only(refused(TASK + "    args: [a\x00b]\n"))
    assert line == 7 and "NUL" in message


@pytest.mark.parametrize(
    ("resources", "field", "word"),
    [
        ("{gpu: 2147483648}", "gpu", "at most 1024"),
        ("{memory: 99999999999999999999Ei}", "memory", "at most 64Ti"),
        ("{storage: 1e30}", "storage", "at most 1Pi"),
        ("{cpu: .nan}", "cpu", "finite"),
        ("{cpu: .inf}", "cpu", "finite"),
        ("{memory: .inf}", "memory", "finite"),
        ("{cpu: 100000}", "cpu", "at most 1024"),
        ("{memory: 1e999999999Ei}", "memory", "not a number"),
    ],
)
def test_out_of_range_resources_are_refused(resources: str, field: str, word: str) -> None:
    path, line, message = only(refused(TASK + f"    resources: {resources}\n"))
    assert (path, line) == (f"workflow.tasks[0].resources.{field}", 7)
    assert word in message


@pytest.mark.parametrize("key", ["exec_timeout", "queue_timeout"])
def test_timeouts_over_a_year_are_refused(key: str) -> None:
    spec = TASK.replace("  tasks:", f"  timeout: {{{key}: 25000d}}\n  tasks:")
    path, line, message = only(refused(spec))
    assert (path, line) == (f"workflow.timeout.{key}", 3) and "365d" in message
    assert parse_spec(spec.replace("25000d", "365d"), None, None).plan is not None


@pytest.mark.parametrize(
    "value", ["1" + "0" * 5000, "2001-13-45", "!!python/object:os.system x", "!custom x"]
)
def test_scalars_yaml_cannot_build_are_refused_at_their_line(value: str) -> None:
    path, line, message = only(refused(TASK + f"    lead: {value}\n"))
    assert (path, line) == ("workflow.tasks[0].lead", 7) and "cannot be read" in message


@pytest.mark.parametrize("depth", [33, 600, 900])
def test_a_deep_environment_value_is_refused_with_path_and_line(depth: int) -> None:
    path, line, message = only(refused(nested_environment(depth)))
    assert path.startswith("workflow.tasks[0].environment.A.k") and line == 8
    assert "32 deep" in message


def test_nesting_past_libyaml_own_limit_is_refused_at_its_line() -> None:
    path, line, message = only(refused(nested_environment(5000)))
    assert (path, line) == ("spec", 8) and "nesting depth" in message


def test_a_deep_set_value_is_refused_naming_it(workers: TemplateRenderer) -> None:
    spec = TASK.replace("name: demo", "name: '{{ v }}'")
    path, line, message = only(refused(spec, {"v": deep_value(3000)}))
    assert (path, line) == ("set.v", None) and "32 deep" in message
    with pytest.raises(SpecError) as info:
        workers.parse(spec, {"v": deep_value(3000)})
    assert info.value.issues[0].path == "set.v"
    with pytest.raises(SpecError) as info:
        workers.parse(spec, {"v": "a\x00b"})
    assert info.value.issues[0].path == "set.v" and "NUL" in info.value.issues[0].message


# -- size and task limits, in the worker ---------------------------------------------------


def test_the_task_limit_is_inclusive(workers: TemplateRenderer) -> None:
    assert workers.parse(wide(10_000), None).plan.task_count == 10_000
    with pytest.raises(SpecError) as info:
        workers.parse(wide(10_001), None)
    issue = info.value.issues[0]
    assert (issue.path, issue.line) == ("workflow.tasks", 3)
    assert "10,001" in issue.message and "GANTRY_MAX_TASKS_PER_WORKFLOW" in issue.message


def test_groups_count_all_their_tasks(workers: TemplateRenderer) -> None:
    spec = (
        "workflow:\n  name: g\n  groups:\n{% for g in range(3) %}\n"
        "  - name: g{{g}}\n    tasks:\n{% for i in range(3400) %}\n"
        "    - {name: t{{g}}-{{i}}, image: x, command: [a], lead: {{ 'true' if i == 0 else 'false' }}}\n"
        "{% endfor %}{% endfor %}\n"
    )
    with pytest.raises(SpecError) as info:
        workers.parse(spec, None)
    assert info.value.issues[0].path == "workflow.groups"
    assert "10,200 tasks" in info.value.issues[0].message


def test_a_render_over_4_mib_is_refused(workers: TemplateRenderer) -> None:
    with pytest.raises(SpecError) as info:
        workers.parse(wide(100_000), None)
    assert "4 MiB" in info.value.issues[0].message


def test_a_template_burning_cpu_is_stopped_by_the_cpu_limit(workers: TemplateRenderer) -> None:
    spec = TASK.replace(
        "[echo, hi]",
        '["{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"]',
    )
    with pytest.raises(SpecError) as info:
        workers.parse(spec, None)
    issue = info.value.issues[0]
    assert issue.path == "spec" and "s of CPU time" in issue.message
    assert workers.parse(TASK, None).plan.name == "demo"  # a fresh worker took over


def test_a_template_exhausting_memory_is_refused(workers: TemplateRenderer) -> None:
    spec = TASK.replace("[echo, hi]", "[\"{{ 'x' * 400000000 }}\"]")
    with pytest.raises(SpecError) as info:
        workers.parse(spec, None)
    assert "MiB" in info.value.issues[0].message
    assert workers.parse(TASK, None).plan.name == "demo"


# -- through the API: 422, never 500 -------------------------------------------------------


# 200 levels: deeper than a spec may nest, shallow enough for the body decoder (msgspec
# gives up near 1,000 levels, before the handler runs: the API edge's concern). The
# 3,000-deep `set` of the finding is refused by the pipeline above, without recursion.
DEEP_SET_JSON = '{"v": ' + '{"k": ' * 200 + '"x"' + "}" * 200 + "}"


def body_text(body: dict[str, Any]) -> bytes:
    """JSON for ``body``, with a `set` given as JSON text kept as it is."""
    if isinstance(body.get("set"), str):
        rest = json.dumps({k: v for k, v in body.items() if k != "set"})
        return (rest[:-1] + ', "set": ' + body["set"] + "}").encode()
    return json.dumps(body).encode()


HOSTILE_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("alias bomb", {"spec": ALIAS_BOMB}, "default-values.f[1]"),
    ("workflow bomb", {"spec": WORKFLOW_BOMB}, "workflow.tasks[2].environment.A[16]"),
    (
        "NUL in env",
        {"spec": TASK + '    environment: {A: "x\\0y"}\n'},
        "workflow.tasks[0].environment.A",
    ),
    ("NUL in args", {"spec": TASK + '    args: ["\\0"]\n'}, "workflow.tasks[0].args[0]"),
    ("raw NUL", {"spec": TASK + "    args: [a\x00b]\n"}, "spec"),
    (
        "gpu",
        {"spec": TASK + "    resources: {gpu: 2147483648}\n"},
        "workflow.tasks[0].resources.gpu",
    ),
    (
        "memory",
        {"spec": TASK + "    resources: {memory: 99999999999999999999Ei}\n"},
        "workflow.tasks[0].resources.memory",
    ),
    (
        "exec_timeout",
        {"spec": TASK.replace("  tasks:", "  timeout: {exec_timeout: 25000d}\n  tasks:")},
        "workflow.timeout.exec_timeout",
    ),
    ("nan", {"spec": TASK + "    resources: {cpu: .nan}\n"}, "workflow.tasks[0].resources.cpu"),
    ("deep env", {"spec": nested_environment(600)}, "workflow.tasks[0].environment.A.k"),
    (
        "deep set",
        {"spec": TASK.replace("name: demo", "name: '{{ v }}'"), "set": DEEP_SET_JSON},
        "set.v",
    ),
    (
        "NUL in set",
        {"spec": TASK.replace("name: demo", "name: '{{ v }}'"), "set": {"v": "a\x00"}},
        "set.v",
    ),
    ("10,001 tasks", {"spec": wide(10_001)}, "workflow.tasks"),
    ("100,000 tasks", {"spec": wide(100_000)}, "spec"),
]


async def test_hostile_submissions_and_dry_runs_are_422_naming_field_and_line(
    api: httpx.AsyncClient,
) -> None:
    for name, body, path in HOSTILE_BODIES:
        for dry_run in (True, False):
            r = await api.post(
                "/api/v1/workflows",
                content=body_text({**body, "dry_run": dry_run}),
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 422, (name, r.status_code, r.text[:500])
            assert r.headers["content-type"].startswith("application/problem+json")
            errors = r.json()["errors"]
            assert errors and errors[0]["path"].startswith(path), (name, errors)
            if not (path == "spec" and "MiB" in errors[0]["message"]) and path != "set.v":
                assert errors[0]["line"] is not None, (name, errors)
    assert (await api.get("/api/v1/workflows")).json()["items"] == []


async def test_a_dry_run_of_10000_tasks_is_accepted(api: httpx.AsyncClient) -> None:
    r = await api.post("/api/v1/workflows", json={"spec": wide(10_000), "dry_run": True})
    assert r.status_code == 200, r.text[:500]
    assert sum(len(g["tasks"]) for g in r.json()["groups"]) == 10_000


# -- the event loop stays free -------------------------------------------------------------

# About 1 MiB of default values: reading them costs the spec worker a second or more of CPU
# (on the old code the submit page did it on the event loop, and every request waited).
HEAVY_DEFAULTS = TASK + "default-values:\n  big: [" + "1," * 450_000 + "1]\n"


async def test_healthz_answers_while_a_hostile_submit_page_post_is_parsed(
    api: httpx.AsyncClient,
) -> None:
    assert len(HEAVY_DEFAULTS.encode()) < 1024 * 1024
    hostile = asyncio.create_task(
        api.post("/submit", files={"spec": (None, HEAVY_DEFAULTS), "action": (None, "validate")})
    )
    await asyncio.sleep(0.3)  # the form is uploaded and its spec is being read
    assert not hostile.done()
    health = await api.get("/healthz")
    assert health.status_code == 200
    assert not hostile.done(), "the hostile submission finished before /healthz was answered"
    page = await hostile
    assert page.status_code in (200, 422), page.text[:300]


async def test_healthz_answers_while_a_hostile_api_submission_is_parsed(
    api: httpx.AsyncClient,
) -> None:
    hostile = asyncio.create_task(
        api.post("/api/v1/workflows", json={"spec": HEAVY_DEFAULTS, "dry_run": True})
    )
    await asyncio.sleep(0.3)
    assert not hostile.done()
    assert (await api.get("/healthz")).status_code == 200
    assert not hostile.done(), "the hostile submission finished before /healthz was answered"
    assert (await hostile).status_code in (200, 422)


async def test_the_submit_page_refuses_the_alias_bomb_and_still_shows_defaults(
    api: httpx.AsyncClient,
) -> None:
    page = await api.post(
        "/submit", files={"spec": (None, ALIAS_BOMB), "action": (None, "validate")}
    )
    assert page.status_code == 422 and "default-values.f[1]" in page.text
    assert 'data-error-lines="13"' in page.text
    spec = (
        TASK.replace("[echo, hi]", "[echo, '{{ message }}']") + "default-values:\n  message: hi\n"
    )
    page = await api.post("/submit", files={"spec": (None, spec), "action": (None, "validate")})
    assert page.status_code == 200, page.text[:300]
    assert 'name="var.message" value="hi"' in page.text


def test_requests_waiting_for_a_worker_are_served_after_limits_end_workers() -> None:
    """Three CPU-burning specs on two workers: each worker exits at its limit, and the
    request that waited for one is served by its successor instead of waiting for ever."""
    spin = TASK.replace(
        "[echo, hi]",
        '["{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"]',
    )
    workers = TemplateRenderer(size=2)

    def one() -> str:
        with pytest.raises(SpecError) as info:
            workers.parse(spin, None)
        return info.value.issues[0].message

    async def all_three() -> list[str]:
        return list(await asyncio.gather(*(asyncio.to_thread(one) for _ in range(3))))

    try:
        messages = asyncio.run(asyncio.wait_for(all_three(), 60))
        assert all("CPU time" in m for m in messages), messages
        assert workers.parse(TASK, None).plan.name == "demo"
    finally:
        workers.close()
